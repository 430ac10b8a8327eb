"""`studykit fit PROTOCOL --data DIR`: fit a protocol's hypotheses and print the results table."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from studykit.errors import InputError

__all__ = ["register", "handle", "format_results"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``fit`` subcommand."""
    p = sub.add_parser(
        "fit",
        help="fit a protocol's hypotheses to a study and print the results table",
        description=(
            "Load a pre-registered protocol (YAML) and a study directory, fit every hypothesis "
            "(mixed models, pre-specified contrasts, multiplicity adjustment, verdict rules) "
            "and print the results. Exit 0 on success, 2 on invalid input."
        ),
    )
    p.add_argument("protocol", help="protocol YAML file, e.g. protocols/ketamine_sleep.yaml")
    p.add_argument("--data", required=True, metavar="DIR", help="study directory (load_study)")
    p.add_argument(
        "--hypothesis",
        action="append",
        metavar="ID",
        help="only report this hypothesis (repeatable); its multiplicity family is still fitted",
    )
    p.add_argument(
        "--analysis-set",
        metavar="NAME",
        help="sensitivity analysis: use this analysis set of the protocol (e.g. per_protocol) "
        "for every hypothesis",
    )
    p.add_argument("--csv", metavar="FILE", help="also write the full results table as CSV")
    p.set_defaults(handler=handle)


def _load_protocol(path: str) -> Any:
    from studykit.protocol import load_protocol

    return load_protocol(path)


def _load_study(directory: str) -> Any:
    from studykit.validate import load_study

    return load_study(directory)


def _num(x: Any, digits: int = 3) -> str:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(f):
        return "NA"
    if math.isinf(f):
        return "inf"
    if f != 0 and abs(f) < 10 ** (-digits):
        return f"{f:.1e}"
    return f"{f:.{digits}g}" if abs(f) >= 1000 else f"{f:.{digits}f}"


def _short(contrast: str, width: int = 40) -> str:
    text = contrast.split(", change from ")[-1]
    return text if len(text) <= width else text[: width - 3] + "..."


def format_results(results: Any) -> str:
    """The results table as readable text (one line per hypothesis x contrast).

    Parameters
    ----------
    results : AnalysisResults
        From :func:`studykit.analysis.run_analysis`.

    Returns
    -------
    str
    """
    from tabulate import tabulate

    t = results.hypotheses
    proto = results.protocol
    lines = []
    if results.simulated:
        lines.append("*** SIMULATED DATA: these results describe simulated participants. ***")
    sens = [f.warnings[0] for f in results.fits.values() if f.warnings]
    if sens and sens[0].startswith("sensitivity analysis:"):
        lines.append(f"*** {sens[0]} ***")
    lines.append(f"protocol {proto.id} v{proto.version}  sha256 {proto.sha256}")
    rows = []
    for _, r in t.iterrows():
        ci = f"[{_num(r['conf_low'])}, {_num(r['conf_high'])}]"
        rows.append(
            [
                r["hypothesis_id"],
                r["role"],
                r["outcome"],
                _short(r["contrast"]),
                r["scale"],
                _num(r["estimate"]),
                ci,
                _num(r["df"], 1),
                r["alternative"],
                _num(r["p_value"], 4),
                f"{_num(r['p_adjusted'], 4)} ({r['adjust_method']})",
                f"{r['n_ketamine']}/{r['n_placebo']}",
                r["n_excluded"],
                r["verdict"],
            ]
        )
    headers = [
        "id",
        "role",
        "outcome",
        "contrast",
        "scale",
        "estimate",
        "95% CI" if (t["conf_level"] == 0.95).all() else "CI",
        "df",
        "alternative",
        "p",
        "p adjusted",
        "n ket/pla",
        "excluded",
        "verdict",
    ]
    lines.append(tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True))
    notes = []
    for _, r in t.drop_duplicates("hypothesis_id").iterrows():
        if r["excluded_reasons"]:
            notes.append(f"{r['hypothesis_id']} excluded: {r['excluded_reasons']}")
        if r["warnings"]:
            notes.append(f"{r['hypothesis_id']} warnings: {r['warnings']}")
        if r["singular"]:
            notes.append(f"{r['hypothesis_id']}: singular fit")
    if notes:
        lines.append("")
        lines.extend(notes)
    lines.append("")
    lines.append(
        "Verdict rules, estimands and sources are in the CSV (--csv) and in the protocol file. "
        "Exploratory results are hypothesis-generating."
    )
    return "\n".join(lines)


def handle(args: argparse.Namespace) -> int:
    """Run ``studykit fit``."""
    from studykit.analysis import run_analysis

    data = Path(args.data)
    if not data.is_dir():
        raise InputError(
            f"--data {str(data)!r} is not a directory. Give the study directory (with "
            "roster.csv, periods.csv, nights.csv, diary.csv), e.g. the output of "
            "'studykit simulate'."
        )
    protocol = _load_protocol(args.protocol)
    study = _load_study(str(data))
    results = run_analysis(
        protocol, study, hypotheses=args.hypothesis, analysis_set=args.analysis_set
    )
    print(format_results(results))
    if args.csv:
        results.hypotheses.to_csv(args.csv, index=False)
        print(f"\nwrote {args.csv}")
    return 0
