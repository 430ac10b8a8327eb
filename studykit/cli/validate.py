"""``studykit validate``: check data files (or a study directory) against the data dictionary.

Prints a summary table (rows read / accepted / rejected, errors, warnings per file), the
issues counted by rule and the first issues; writes the full issue table with
``--report``. Exit code 2 when any error is found, 0 when there are only warnings.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import pandas as pd

from studykit.cli import options
from studykit.dictionary import load_dictionary
from studykit.errors import InputError
from studykit.io import read_table
from studykit.privacy import mask_identifiers, study_identifiers
from studykit.tables.write import write_csv
from studykit.validate import (
    ISSUE_COLUMNS,
    STUDY_TABLES,
    empty_issues,
    hypnogram_keys,
    infer_table,
    load_study,
    read_hypnogram_file,
    table_by_columns,
    validate_table,
)

__all__ = ["register", "handle"]

_SHOW_ISSUES = 15


def register(p: argparse.ArgumentParser) -> None:
    """Add the ``validate`` subcommand."""
    p.description = (
        "Parse every cell of each file against the data dictionary and check ranges, "
        "codes, unique keys and cross-field rules. A directory is read as a whole study "
        "(roster, periods, nights, diary, hypnograms/) with the cross-table rules. A "
        "hypnogram file named {participant_id}_p{period}_{night}.ext is validated as "
        "table epochs. A file not named after its table is matched by its key and "
        "columns. Exit code 2 when any error is found (warnings alone: 0)."
    )
    p.add_argument(
        "files", nargs="+", metavar="FILE", help="CSV/TSV/XLSX/Parquet files or a study directory"
    )
    options.dictionary(p)
    p.add_argument(
        "--table",
        metavar="NAME",
        help="table of every FILE (default: from each file name, else from its key and columns)",
    )
    p.add_argument(
        "--no-diary",
        action="store_true",
        help="the study has no diary table (default: a missing diary.csv is an error)",
    )
    options.outcomes(p)
    p.add_argument("--report", metavar="CSV", help="write the full issue table to this CSV file")
    p.add_argument(
        "--decimal",
        default=".",
        choices=[".", ","],
        help="decimal separator of numbers (default '.')",
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Run ``studykit validate``; return the exit code."""
    dd = load_dictionary(args.dictionary)
    if args.table is not None and args.table not in dd.tables:
        raise InputError(
            f"--table {args.table!r} is not a table of the data dictionary; use one of "
            f"{', '.join(dd.tables)}."
        )
    summaries: list[dict] = []
    issues: list[pd.DataFrame] = []
    for name in args.files:
        path = Path(name)
        if not path.exists():
            missing = _not_found(path)
            summaries.append(_failed(str(path), "?", missing))
            issues.append(_file_issue(str(path), missing))
            continue
        if path.is_dir() and args.table is None:
            try:
                study = load_study(
                    path,
                    dictionary=dd,
                    decimal=args.decimal,
                    tables=_study_tables(args),
                    outcomes=args.outcomes,
                )
            except InputError as exc:
                summaries.append(_failed(str(path), "study", exc))
                issues.append(_file_issue(str(path), exc))
                continue
            if study.summary is not None:
                summaries.extend(study.summary.to_dict("records"))
            issues.append(study.issues)
            continue
        table = args.table
        try:
            keys = hypnogram_keys(path) if table in (None, "epochs") else None
            if table is None and keys is None:
                table = infer_table(path, dd.tables)
            if table is None and keys is not None:
                table = "epochs"
            if table == "epochs" and keys is not None:
                data = read_hypnogram_file(path)
                result = validate_table(data, "epochs", dictionary=dd, source=str(path))
            else:
                frame = read_table(path)
                if table is None:
                    table = table_by_columns(list(frame.columns), dd, source=path.name)
                result = validate_table(
                    frame, table, dictionary=dd, source=str(path), decimal=args.decimal
                )
        except InputError as exc:
            summaries.append(_failed(str(path), table or "?", exc))
            issues.append(_file_issue(str(path), exc))
            continue
        summaries.append(result.summary)
        issues.append(result.issues)
    issues = [i for i in issues if len(i)]
    all_issues = pd.concat(issues, ignore_index=True) if issues else empty_issues()
    # identifier values never leave the machine: masked on screen and in --report
    identifiers = study_identifiers(args.files, dictionary=dd)
    all_issues = mask_identifiers(all_issues, identifiers, name="validation issues")
    summary = pd.DataFrame(summaries)
    _print_report(summary, all_issues, report=args.report)
    if args.report:
        write_csv(all_issues, args.report, identifiers=identifiers)
    return 2 if (all_issues["severity"] == "error").any() else 0


def _not_found(path: Path) -> InputError:
    parent = path.parent if str(path.parent) else Path(".")
    kind = "file" if path.suffix else "folder"
    near = ""
    if parent.is_dir():
        names = sorted(
            x.name
            for x in parent.iterdir()
            if x.name.lower().startswith(path.name[:3].lower()) and x.name != path.name
        )
        if names:
            near = f" Similar names there: {', '.join(names[:5])}."
    return InputError(
        f"no such {kind}: {path} (looked in {parent.resolve()}). Check the spelling and the "
        f"current directory.{near}"
    )


def _study_tables(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(t for t in STUDY_TABLES if not (t == "diary" and args.no_diary))


def _failed(file: str, table: str, exc: Exception) -> dict:
    return {
        "file": file,
        "table": table,
        "rows_read": 0,
        "rows_accepted": 0,
        "rows_rejected": 0,
        "errors": 1,
        "warnings": 0,
    }


def _file_issue(file: str, exc: Exception) -> pd.DataFrame:
    row = dict.fromkeys(ISSUE_COLUMNS, "")
    row.update(file=file, row=pd.NA, rule="file", severity="error", message=str(exc))
    frame = pd.DataFrame([row])
    frame["row"] = frame["row"].astype("Int64")
    return frame


#: Console width the issue listing is wrapped to (messages are wrapped, never cut).
_WIDTH = 100


def _cell(value: object) -> str:
    return "" if value is None or value is pd.NA or pd.isna(value) else str(value)


def _issue_text(issue: pd.Series) -> str:
    """One issue as wrapped lines: where (file, row, participant, night, column, value),
    then severity, rule and the whole message, indented."""
    where = [Path(_cell(issue["file"])).name or "?"]
    for key, label in (("row", "row"), ("participant_id", "participant"), ("night", "night")):
        if _cell(issue.get(key)):
            where.append(f"{label} {_cell(issue[key])}")
    if _cell(issue.get("column")):
        col = f"column {_cell(issue['column'])}"
        if _cell(issue.get("value")):
            col += f" = {_cell(issue['value'])!r}"
        where.append(col)
    head = f"{', '.join(where)}: {_cell(issue['severity'])} ({_cell(issue['rule'])})"
    lines = textwrap.wrap(head, width=_WIDTH, subsequent_indent="    ", break_long_words=False)
    lines += textwrap.wrap(
        _cell(issue["message"]),
        width=_WIDTH,
        initial_indent="    ",
        subsequent_indent="    ",
        break_long_words=False,
        break_on_hyphens=False,
    )
    return "\n".join(lines)


def _print_report(summary: pd.DataFrame, issues: pd.DataFrame, *, report: str | None) -> None:
    out = sys.stdout
    shown = summary.rename(
        columns={
            "rows_read": "read",
            "rows_accepted": "accepted",
            "rows_rejected": "rejected",
        }
    )
    print(shown.to_string(index=False), file=out)
    n_err = int((issues["severity"] == "error").sum())
    n_warn = int((issues["severity"] == "warning").sum())
    print(
        f"\nrows read {int(summary['rows_read'].sum())} = accepted "
        f"{int(summary['rows_accepted'].sum())} + rejected {int(summary['rows_rejected'].sum())}; "
        f"{n_err} error(s), {n_warn} warning(s)",
        file=out,
    )
    if len(issues):
        counts = (
            issues.groupby(["severity", "rule", "column"], sort=True, dropna=False)
            .size()
            .rename("count")
            .reset_index()
            .sort_values(["severity", "count"], ascending=[True, False])
        )
        print("\nissues by rule:", file=out)
        print(counts.to_string(index=False), file=out)
        first = issues.head(_SHOW_ISSUES)
        print(f"\nfirst {len(first)} of {len(issues)} issue(s):", file=out)
        for _, r in first.iterrows():
            print(_issue_text(r), file=out)
        file_issues = issues.loc[issues["rule"] == "file"]
        for severity, msg in zip(file_issues["severity"], file_issues["message"], strict=True):
            print("", file=out)
            print(
                "\n".join(
                    textwrap.wrap(
                        f"file {severity}: {msg}",
                        width=_WIDTH,
                        subsequent_indent="    ",
                        break_long_words=False,
                    )
                ),
                file=out,
            )
    if report:
        print(f"\nfull issue table: {report}", file=out)
    elif len(issues) > _SHOW_ISSUES:
        print("\n(pass --report issues.csv for the full issue table)", file=out)
