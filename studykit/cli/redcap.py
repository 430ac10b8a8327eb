"""``studykit redcap``: REDCap record exports in and out.

``studykit redcap import EXPORT.csv --events EVENTS.csv --out DIR`` turns a REDCap
longitudinal export into the study tables (with ``import_report.csv``);
``studykit redcap export STUDY_DIR --out records.csv`` writes a study's tables as a REDCap
record import file. The project's data dictionary, events and instrument mapping come from
``studykit dictionary export-redcap``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from studykit.cli import options
from studykit.dictionary import load_dictionary
from studykit.errors import InputError
from studykit.io import read_table
from studykit.redcap.design import EVENT_TABLES
from studykit.redcap.records import export_records, import_records

__all__ = ["register", "handle"]


def register(p: argparse.ArgumentParser) -> None:
    """Add the ``redcap`` subcommand and its actions."""
    p.description = "Move study data between REDCap and studykit's study tables."
    p.set_defaults(handler=handle, redcap_command=None)
    rsub = p.add_subparsers(dest="redcap_command", metavar="ACTION")
    i = rsub.add_parser(
        "import",
        help="REDCap record export (CSV) -> roster/periods/nights/diary.csv + import_report.csv",
        description=(
            "Read REDCap's flat CSV export of a longitudinal project (raw, or labels with raw "
            "headers) and write the study tables that `studykit validate` reads. Every export "
            "row and form is accounted for in DIR/import_report.csv. Only forms with status "
            "Complete (2) are imported unless --include-incomplete."
        ),
    )
    i.add_argument("export", metavar="EXPORT.csv")
    i.add_argument(
        "--events",
        required=True,
        metavar="EVENTS.csv",
        help="event map: redcap_event_name, table (roster|periods|nights|diary), period, "
        "night, day (written by `studykit dictionary export-redcap`)",
    )
    i.add_argument("--out", required=True, metavar="DIR", help="folder for the study tables")
    i.add_argument(
        "--redcap-dictionary",
        metavar="DD.csv",
        help="the REDCap project's data dictionary (default: the one studykit exports)",
    )
    options.dictionary(i)
    i.add_argument(
        "--include-incomplete",
        action="store_true",
        help="also import forms whose status is Incomplete, Unverified or blank",
    )
    options.force(i, "the tables in DIR")
    e = rsub.add_parser(
        "export",
        help="study tables -> a REDCap record import file (CSV)",
        description="Write a study folder's roster/periods/nights/diary tables as a REDCap "
        "record import file for the layout of `studykit dictionary export-redcap`.",
    )
    e.add_argument("study", metavar="STUDY_DIR")
    e.add_argument("--out", required=True, metavar="records.csv")
    options.dictionary(e)
    options.force(e, "OUT if it exists")


def handle(args: argparse.Namespace) -> int:
    """Run ``studykit redcap ACTION``; return the exit code."""
    if args.redcap_command is None:
        print(
            "usage: studykit redcap {import,export} ... (studykit redcap --help)", file=sys.stderr
        )
        return 2
    dd = load_dictionary(args.dictionary)
    if args.redcap_command == "import":
        res = import_records(
            args.export,
            args.events,
            dd,
            redcap_dictionary=args.redcap_dictionary,
            include_incomplete=args.include_incomplete,
            out=args.out,
            force=args.force,
        )
        print(f"wrote {args.out}: {res.summary()}")
        skipped = res.report[~res.report["action"].isin(["imported", "empty"])]
        if len(skipped):
            print(
                f"{len(skipped)} form(s) not imported: see {Path(args.out) / 'import_report.csv'}",
                file=sys.stderr,
            )
        return 0
    out = Path(args.out)
    if out.exists() and not args.force:
        raise InputError(f"{out} exists; pass --force to overwrite it or choose another --out.")
    study = Path(args.study)
    if not study.is_dir():
        raise InputError(f"{study} is not a folder; give the study folder (with roster.csv ...).")
    tables = {}
    for t in EVENT_TABLES:
        found = sorted(
            p
            for p in study.glob(f"{t}.*")
            if p.suffix in (".csv", ".tsv", ".txt", ".xlsx", ".parquet")
        )
        if found:
            tables[t] = read_table(found[0]).reset_index(drop=True)
    if not tables:
        raise InputError(f"{study} holds none of {', '.join(t + '.csv' for t in EVENT_TABLES)}.")
    records = export_records(tables, dd)
    records.to_csv(out, index=False, encoding="utf-8", lineterminator="\n")
    print(f"wrote {out}: {len(records)} REDCap rows from {', '.join(tables)}")
    return 0
