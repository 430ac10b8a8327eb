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

from studykit.dictionary import load_dictionary
from studykit.errors import InputError
from studykit.validate import (
    ISSUE_COLUMNS,
    empty_issues,
    hypnogram_keys,
    infer_table,
    load_study,
    read_hypnogram_file,
    validate_table,
)

__all__ = ["register", "handle"]

_SHOW_ISSUES = 15


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``validate`` subcommand."""
    p = sub.add_parser(
        "validate",
        help="check data files against the data dictionary",
        description=(
            "Parse every cell of each file against the data dictionary and check ranges, "
            "codes, unique keys and cross-field rules. A directory is read as a whole study "
            "(roster, periods, nights, diary, hypnograms/) with the cross-table rules. A "
            "hypnogram file named {participant_id}_p{period}_{night}.ext is validated as "
            "table epochs. Exit code 2 when any error is found (warnings alone: 0)."
        ),
    )
    p.add_argument(
        "files", nargs="+", metavar="FILE", help="CSV/TSV/XLSX/Parquet files or a study directory"
    )
    p.add_argument("--dictionary", metavar="PATH", help="data dictionary CSV (default: packaged)")
    p.add_argument(
        "--table",
        metavar="NAME",
        help="table of every FILE (default: from each file name: roster, periods, nights, epochs, diary)",
    )
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
    # imported here: studykit.tables loads the analysis stack, needed only with issues to mask
    from studykit.privacy import mask_identifiers, study_identifiers
    from studykit.tables.write import write_csv

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
        if path.is_dir() and args.table is None:
            try:
                study = load_study(path, dictionary=dd, decimal=args.decimal)
            except InputError as exc:
                summaries.append(_failed(str(path), "study", exc))
                issues.append(_file_issue(str(path), exc))
                continue
            if study.summary is not None:
                summaries.extend(study.summary.to_dict("records"))
            issues.append(study.issues)
            continue
        keys = hypnogram_keys(path) if args.table in (None, "epochs") else None
        table = args.table or infer_table(path, dd.tables) or ("epochs" if keys else None)
        if table is None:
            unknown = InputError(
                f"cannot tell which table {path.name} holds: name the file after its table "
                f"({', '.join(dd.tables)}, e.g. nights.csv) or pass --table."
            )
            summaries.append(_failed(str(path), "?", unknown))
            issues.append(_file_issue(str(path), unknown))
            continue
        try:
            if table == "epochs" and keys is not None:
                data = read_hypnogram_file(path)
                result = validate_table(data, "epochs", dictionary=dd, source=str(path))
            else:
                result = validate_table(path, table, dictionary=dd, decimal=args.decimal)
        except InputError as exc:
            summaries.append(_failed(str(path), table, exc))
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
