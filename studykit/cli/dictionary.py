"""``studykit dictionary``: check, convert and describe the data dictionary.

Subcommands: ``check`` (load and summarise), ``export-redcap OUT.csv``, ``import-redcap
IN.csv -o data_dictionary.csv`` and ``schema TABLE`` (Frictionless Table Schema, JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from studykit.cli import options
from studykit.dictionary import load_dictionary
from studykit.errors import InputError
from studykit.redcap.design import EVENT_TABLES, design_events
from studykit.redcap.dictionary import export_redcap, import_redcap, to_redcap
from studykit.schema import table_schema

__all__ = ["register", "handle"]


def register(p: argparse.ArgumentParser) -> None:
    """Add the ``dictionary`` subcommand and its own subcommands."""
    p.description = "Check the data dictionary and convert it to and from REDCap and Frictionless."
    p.set_defaults(handler=handle, dict_command=None)
    dsub = p.add_subparsers(dest="dict_command", metavar="ACTION")

    c = dsub.add_parser("check", help="load the dictionary, report problems, list its tables")
    c.add_argument("path", nargs="?", help="data dictionary CSV (default: packaged)")

    e = dsub.add_parser(
        "export-redcap",
        help="write a REDCap data dictionary CSV and the study's events and instrument mapping",
        description=(
            "Write OUT.csv (a REDCap data dictionary: one form per study table) and, beside it, "
            "the longitudinal layout of the study: OUT_arms.csv, OUT_events.csv, "
            "OUT_instrument_events.csv, OUT_repeating.csv (REDCap's import formats) and "
            "OUT_event_map.csv (what `studykit redcap import --events` reads)."
        ),
    )
    e.add_argument("out", metavar="OUT.csv")
    options.dictionary(e)
    e.add_argument(
        "--tables",
        nargs="+",
        metavar="TABLE",
        help="tables to export (default: the ones people enter in REDCap: "
        "roster, periods, nights, diary)",
    )
    e.add_argument(
        "--no-events",
        action="store_true",
        help="write only the data dictionary (no events, mapping or event map)",
    )

    i = dsub.add_parser("import-redcap", help="convert a REDCap data dictionary CSV")
    i.add_argument("redcap", metavar="IN.csv")
    i.add_argument(
        "-o", "--output", required=True, metavar="OUT.csv", help="data dictionary to write"
    )
    options.force(i, "OUT.csv if it exists")

    s = dsub.add_parser("schema", help="print (or write) the Frictionless Table Schema of a table")
    s.add_argument("table")
    options.dictionary(s)
    s.add_argument(
        "-o", "--output", metavar="OUT.json", help="write to this file instead of stdout"
    )


def handle(args: argparse.Namespace) -> int:
    """Run ``studykit dictionary ACTION``; return the exit code."""
    action = args.dict_command
    if action is None:
        print(
            "usage: studykit dictionary {check,export-redcap,import-redcap,schema} ...\n"
            "(studykit dictionary --help for details)",
            file=sys.stderr,
        )
        return 2
    if action == "check":
        dd = load_dictionary(args.path)
        print(f"{dd.source}: {len(dd)} variables, no problems found")
        for t in dd.tables:
            vs = dd.variables(t)
            print(
                f"  {t:<8} {len(vs):>3} variables; key: {', '.join(dd.keys(t)) or '(none)'}; "
                f"required: {sum(v.required for v in vs)}"
            )
        phi = sorted(dd.identifier_columns())
        print(f"  identifiers (PHI, never exported): {', '.join(phi) or '(none)'}")
        return 0
    if action == "export-redcap":
        dd = load_dictionary(args.dictionary)
        tables = args.tables or [t for t in EVENT_TABLES if t in dd.tables]
        path = export_redcap(dd, args.out, tables=tables)
        print(f"wrote REDCap data dictionary {path} ({len(to_redcap(dd, tables=tables))} fields)")
        if not args.no_events and set(tables) <= set(EVENT_TABLES):
            written = design_events(dd).write(path.with_suffix(""))
            print("wrote the study's REDCap layout: " + ", ".join(str(p) for p in written.values()))
        return 0
    if action == "import-redcap":
        out = Path(args.output)
        if out.exists() and not args.force:
            raise InputError(f"{out} exists; pass --force to overwrite it or choose another -o.")
        dd = import_redcap(args.redcap)
        dd.to_csv(out)
        print(f"wrote {out}: {len(dd)} variables in tables {', '.join(dd.tables)}")
        return 0
    if action == "schema":
        dd = load_dictionary(args.dictionary)
        text = json.dumps(table_schema(dd, args.table), indent=2, ensure_ascii=False)
        if args.output:
            Path(args.output).write_text(text + "\n", encoding="utf-8")
            print(f"wrote {args.output}")
        else:
            print(text)
        return 0
    raise InputError(f"unknown action {action!r}")  # argparse prevents this
