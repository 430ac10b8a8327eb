"""`studykit run`: the whole analysis of a protocol, from data to report and manifest."""

from __future__ import annotations

import argparse

from studykit.cli import options
from studykit.pipeline import DEFAULT_SEED, run
from studykit.validate import OUTCOME_SOURCES


def register(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Validate the data, derive per-night sleep statistics from the hypnograms, fit "
        "every pre-registered hypothesis, and write tables (CSV, Markdown, HTML, LaTeX), "
        "figures (PNG, SVG), a self-contained HTML report and manifest.json to OUT. "
        "Without --data, the simulated demo study is generated into OUT/data/ and "
        "analysed (every output is labelled simulated)."
    )
    p.epilog = "Example: studykit run protocols/ketamine_sleep.yaml --out results"
    p.add_argument("protocol", metavar="PROTOCOL", help="protocol YAML file")
    p.add_argument(
        "--data",
        metavar="DIR",
        default=None,
        help="study directory (roster.csv, periods.csv, nights.csv, diary.csv, hypnograms/); "
        "default: simulate the demo study",
    )
    p.add_argument(
        "-o",
        "--out",
        metavar="OUT",
        default="results",
        help="results folder (default: results). Written beside it first and moved into place "
        "only when the run succeeds; a previous run's results survive a failed run",
    )
    options.seed(p, DEFAULT_SEED, "the simulated demo study (without --data)")
    p.add_argument(
        "--allow-errors",
        action="store_true",
        help="analyse the accepted rows even when validation finds errors (rows with errors are "
        "left out; recorded in the manifest and the report). Default: a validation error stops "
        "the run (exit 2)",
    )
    options.outcomes(p)
    p.add_argument("--quiet", action="store_true", help="do not print per-stage progress")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    seed = args.seed
    command = ["studykit", "run", args.protocol]
    if args.data is not None:
        command += ["--data", args.data]
    command += ["--out", args.out, "--seed", str(seed)]
    if args.allow_errors:
        command.append("--allow-errors")
    if args.outcomes != OUTCOME_SOURCES[0]:
        command += ["--outcomes", args.outcomes]
    run(
        args.protocol,
        data=args.data,
        out=args.out,
        seed=seed,
        command=command,
        progress=not args.quiet,
        allow_errors=args.allow_errors,
        outcomes=args.outcomes,
    )
    return 0
