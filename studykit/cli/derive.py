"""`studykit derive`: hypnogram files -> per-night sleep statistics (table ``nights``).

Example::

    studykit derive study/hypnograms -o nights_derived.csv --recordings study/recordings.csv
    studykit derive shhs/annotations-events-nsrr -o shhs_nights.csv --jobs 4
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from studykit.cli import options
from studykit.errors import HypnogramError, InputError, ValidationError
from studykit.hypnogram.derive import DeriveOptions, derive_nights
from studykit.hypnogram.readers import MAX_NIGHT_HOURS
from studykit.hypnogram.statistics import OUTCOMES
from studykit.validate import validate_table

logger = logging.getLogger(__name__)

__all__ = ["register", "handle"]


def register(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Read hypnogram files (.csv .tsv .txt .edf .xml, any names) and write one row of "
        "sleep statistics per recording (columns of the data dictionary's 'nights' "
        "table, plus recording_id, file, identity and lights). A file's identity comes "
        "from the recordings table (--recordings, or recordings.csv in the folder), "
        "else --pattern, else the names {participant_id}_p{period}_{night}, NSRR "
        "(shhs1-200001-nsrr.xml) and Sleep-EDF (SC4001EC-Hypnogram.edf), else its stem. "
        "Lights off / on come from the file, else the recordings table, else --lights; "
        "lights_source says which. Problems are listed on stderr and in "
        "<output stem>_problems.csv; the exit code is 2 if any file could not be read "
        "(unless --allow-problems)."
    )
    p.add_argument("paths", nargs="+", metavar="HYPNOGRAM_FILES_OR_DIR")
    p.add_argument("-o", "--output", required=True, type=Path, help="output CSV (per night)")
    p.add_argument(
        "--recordings",
        type=Path,
        help="CSV: file, participant_id, period, night [, recording_id, lights_off, lights_on]",
    )
    p.add_argument(
        "--pattern",
        help=(
            "file-name regex with named groups participant_id, period, night, recording_id, "
            r"e.g. 'subject(?P<participant_id>\d+)_night(?P<night>\d+)'"
        ),
    )
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
        "--max-night-hours",
        type=float,
        default=MAX_NIGHT_HOURS,
        help=f"longest plausible recording / stage annotation (default {MAX_NIGHT_HOURS:g} h)",
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
            "nights table with participant_id, period, night and lights_off_s / lights_on_s, "
            "or lights_off / lights_on (clock times or date-times; recording_start where the "
            "file does not give it), e.g. the study's nights.csv"
        ),
    )
    options.parallel(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--allow-problems",
        action="store_true",
        help="exit 0 even when some files could not be read (they are still reported)",
    )
    p.set_defaults(handler=handle)


def _read_lights(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(f"--lights {path}: no such file.")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False).replace("", None)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"--lights {path}: cannot be read as CSV ({exc}).") from exc


def _check_output(path: Path) -> None:
    if path.is_dir():
        raise InputError(
            f"-o {path} is a folder; give the CSV file to write, e.g. -o {path / 'nights.csv'}."
        )
    if path.suffix.lower() != ".csv":
        logger.info("-o %s: written as CSV", path)


def _validate(table: pd.DataFrame) -> None:
    """Check the derived columns against the data dictionary (table ``nights``)."""
    result = validate_table(table[[*("participant_id", "period", "night"), *OUTCOMES]], "nights")
    issues = result.issues
    if not len(issues):
        logger.info("validated against the data dictionary (table 'nights'): no issue")
        return
    ours = issues[issues["column"].isin(OUTCOMES)]
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


def _summarize(problems: pd.DataFrame, problems_path: Path) -> None:
    errors = problems[problems["severity"] == "error"]
    no_lights = problems[problems["rule"] == "no_lights"]
    others = problems[(problems["severity"] != "error") & (problems["rule"] != "no_lights")]
    for message in errors["message"].head(20):
        print(f"error: {message}", file=sys.stderr)
    if len(errors) > 20:
        print(f"... and {len(errors) - 20} more error(s)", file=sys.stderr)
    for message in no_lights["message"].head(10):
        print(f"warning: {message}", file=sys.stderr)
    if len(no_lights) > 10:
        print(f"... and {len(no_lights) - 10} more recording(s) without lights", file=sys.stderr)
    for message in others["message"].head(10):
        print(f"warning: {message}", file=sys.stderr)
    print(
        f"{len(errors)} file(s) could not be read, {len(no_lights)} without lights off/on, "
        f"{len(others)} other warning(s); details in {problems_path}",
        file=sys.stderr,
    )


def handle(args: argparse.Namespace) -> int:
    _check_output(args.output)
    lights = _read_lights(args.lights) if args.lights else None
    options = DeriveOptions(
        epoch_length=args.epoch_length,
        format=args.format,
        scheme=args.scheme,
        max_night_hours=args.max_night_hours,
        min_bout_epochs=args.min_bout_epochs,
        persistent_sleep_min=args.persistent_sleep_min,
        waso_until_lights_on=args.waso_until_lights_on,
        max_bad_fraction=args.max_bad_fraction,
    )
    derived = derive_nights(
        args.paths,
        recordings=args.recordings,
        pattern=args.pattern,
        lights=lights,
        options=options,
        jobs=args.jobs,
        scheduler=args.scheduler,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    table, problems = derived.nights, derived.problems
    errors = problems[problems["severity"] == "error"]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    problems_path = args.output.with_name(args.output.stem + "_problems.csv")
    if len(problems):
        problems.to_csv(problems_path, index=False)
        _summarize(problems, problems_path)
    if table.empty:
        raise HypnogramError(
            "no hypnogram could be read from " + ", ".join(map(str, args.paths)) + "."
        )
    _validate(table)
    # booleans as the dictionary's codes (1 yes, 0 no)
    table.assign(quality_flag=table["quality_flag"].astype(int)).to_csv(args.output, index=False)
    params = ", ".join(f"{k}={v}" for k, v in derived.parameters.items())
    print(f"wrote {len(table)} night(s) to {args.output} ({params})")
    if len(errors) and not args.allow_problems:
        return 2
    return 0
