"""`studykit derive`: hypnogram files -> per-night sleep statistics (table ``nights``).

Example::

    studykit derive study/hypnograms -o nights_derived.csv --min-bout-epochs 2
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from studykit.errors import HypnogramError, ValidationError

logger = logging.getLogger(__name__)

__all__ = ["register", "handle"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "derive",
        help="derive per-night sleep statistics from hypnogram files",
        description=(
            "Read hypnograms named {participant_id}_p{period}_{night}.{csv|tsv|txt|edf|xml} "
            "and write one row of sleep statistics per night (columns of the data "
            "dictionary's 'nights' table). Problems with individual files are listed on "
            "stderr and in <output stem>_problems.csv; the exit code is 2 if any file could "
            "not be read (unless --allow-problems)."
        ),
    )
    p.add_argument("paths", nargs="+", metavar="HYPNOGRAM_FILES_OR_DIR")
    p.add_argument("-o", "--output", required=True, type=Path, help="output CSV (per night)")
    p.add_argument("--epoch-length", type=float, default=30.0, help="seconds (default 30)")
    p.add_argument(
        "--format",
        default="auto",
        choices=["auto", "text", "edf", "nsrr", "profusion"],
        help="file format (default: from the extension)",
    )
    p.add_argument(
        "--scheme",
        default="auto",
        choices=["auto", "yasa", "rk"],
        help="how integer stage codes are read (default: YASA's 0-4, -1, -2)",
    )
    p.add_argument(
        "--min-bout-epochs",
        type=int,
        default=1,
        help="minimum wake bout (epochs) counted as an awakening (default 1)",
    )
    p.add_argument(
        "--persistent-sleep-min",
        type=float,
        default=10.0,
        help="minutes of uninterrupted sleep for sol_persistent_min (default 10)",
    )
    p.add_argument(
        "--waso-until-lights-on",
        action="store_true",
        help="WASO from sleep onset to lights on (NSRR) instead of within the sleep period",
    )
    p.add_argument(
        "--max-bad-fraction",
        type=float,
        default=0.10,
        help="quality_flag when movement + artefact + unscored exceed this share of TIB",
    )
    p.add_argument(
        "--lights",
        type=Path,
        help=(
            "CSV with participant_id, period, night and lights_off_s / lights_on_s, or "
            "lights_off / lights_on with recording_start (e.g. the study's nights.csv)"
        ),
    )
    p.add_argument(
        "--allow-problems",
        action="store_true",
        help="exit 0 even when some files could not be read (they are still reported)",
    )
    p.set_defaults(handler=handle)


def _read_lights(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise HypnogramError(f"--lights {path}: no such file.")
    table = pd.read_csv(path)
    for col in ("lights_off", "lights_on", "recording_start"):
        if col in table.columns:
            table[col] = pd.to_datetime(table[col], errors="raise")
    return table


def _validate(table: pd.DataFrame) -> None:
    """Validate with the data dictionary when studykit.validate is available."""
    try:
        from studykit.validate import validate_table
    except ImportError:
        logger.info("note: studykit.validate is not available; output not validated")
        return
    result = validate_table(table, "nights")
    issues = getattr(result, "issues", None)
    if issues is None or len(issues) == 0:
        logger.info("validated against the data dictionary (table 'nights'): no issue")
        return
    derived = set(table.columns) - {"participant_id", "period", "night"}
    ours = issues[issues["column"].isin(derived)] if "column" in issues else issues
    if len(ours):
        raise ValidationError(
            f"the derived table fails the data dictionary in {len(ours)} cell(s); first: "
            f"{ours.iloc[0].to_dict()}",
            ours,
        )
    logger.info(
        "validated derived columns; %d issue(s) concern design columns this command does not "
        "write (e.g. treatment)",
        len(issues),
    )


def handle(args: argparse.Namespace) -> int:
    from studykit.hypnogram import read_hypnograms, sleep_statistics

    epochs, problems = read_hypnograms(
        args.paths, epoch_length=args.epoch_length, format=args.format, scheme=args.scheme
    )
    errors = problems[problems["severity"] == "error"]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    problems_path = args.output.with_name(args.output.stem + "_problems.csv")
    if len(problems):
        problems.to_csv(problems_path, index=False)
        print(
            f"{len(errors)} file(s) could not be read, {len(problems) - len(errors)} skipped; "
            f"details in {problems_path}",
            file=sys.stderr,
        )  # each problem was already logged by read_hypnograms
    if epochs.empty:
        raise HypnogramError(
            "no hypnogram could be read from " + ", ".join(map(str, args.paths)) + "."
        )
    nights = _read_lights(args.lights) if args.lights else None
    table = sleep_statistics(
        epochs,
        nights=nights,
        epoch_length=args.epoch_length,
        min_bout_epochs=args.min_bout_epochs,
        persistent_sleep_min=args.persistent_sleep_min,
        waso_until_lights_on=args.waso_until_lights_on,
        max_bad_fraction=args.max_bad_fraction,
    )
    _validate(table)
    # booleans as the dictionary's codes (1 yes, 0 no)
    table.assign(quality_flag=table["quality_flag"].astype(int)).to_csv(args.output, index=False)
    params = ", ".join(f"{k}={v}" for k, v in table.attrs["parameters"].items())
    print(f"wrote {len(table)} night(s) to {args.output} ({params})")
    if len(errors) and not args.allow_problems:
        return 2
    return 0
