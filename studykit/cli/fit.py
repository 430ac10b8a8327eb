"""`studykit fit PROTOCOL --data DIR`: fit a protocol's hypotheses and print the results table."""

from __future__ import annotations

import argparse
import math
import textwrap
from pathlib import Path
from typing import Any

from studykit.analysis import run_analysis
from studykit.cli import options
from studykit.errors import InputError
from studykit.protocol import load_protocol
from studykit.validate import load_study

__all__ = ["register", "handle", "format_results", "WIDTH"]


def register(p: argparse.ArgumentParser) -> None:
    """Add the ``fit`` subcommand."""
    p.description = (
        "Load a pre-registered protocol (YAML) and a study directory, fit every hypothesis "
        "(mixed models, pre-specified contrasts, multiplicity adjustment, verdict rules) "
        "and print the results. Exit 0 on success, 2 on invalid input."
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
    options.outcomes(p)
    p.add_argument("--csv", metavar="FILE", help="also write the full results table as CSV")
    p.set_defaults(handler=handle)


def _outcome_source(study: Any) -> str:
    """Which outcomes are analysed, and every typed value that differs from the hypnogram."""
    diffs = study.issues[study.issues["rule"] == "derived_mismatch"]
    source = (
        "recomputed from the hypnograms"
        if study.outcomes == "hypnograms"
        else "as typed in nights.csv"
    )
    lines = textwrap.wrap(
        f"outcomes analysed: {source}; {len(diffs)} typed value(s) differ beyond tolerance",
        width=100,
    )
    for _, d in diffs.iterrows():
        lines += textwrap.wrap(
            f"{d['participant_id']} {d['night']} {d['column']}: {d['message']}",
            width=100,
            initial_indent="  ",
            subsequent_indent="      ",
        )
    return "\n".join(lines)


#: Width of the console output (columns); every line of ``fit`` fits in it.
WIDTH = 100


def _num(x: Any, digits: int = 2) -> str:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return "" if x is None else str(x)
    if math.isnan(f):
        return "NA"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return f"{f:.{digits}f}"


def _p(x: Any) -> str:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return ""
    if math.isnan(f):
        return "NA"
    return "<0.001" if f < 0.001 else f"{f:.3f}"


def _short(contrast: str, width: int = 23) -> str:
    text = str(contrast).split(", change from ")[-1]
    text = text.removeprefix("night ")  # "night baseline to post1": nights are the default
    return textwrap.shorten(text, width=width, placeholder="...")


def _cut(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, ``...`` marking a cut (one long word too)."""
    return text if len(text) <= width else text[: width - 3] + "..."


def _table(rows: list[list[str]], headers: list[str]) -> str:
    """Left-aligned columns two spaces apart, a dashed rule under the headers."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [headers, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _alternative(alternative: Any, scale: Any) -> str:
    """The alternative hypothesis against the null (0, or 1 for ratios), in 4 columns."""
    null = "1" if "ratio" in str(scale).lower() else "0"
    sign = {"greater": ">", "less": "<", "two-sided": "!="}.get(str(alternative))
    return f"{sign} {null}" if sign else str(alternative)


def _claims(t: Any) -> list[str]:
    """One line per claim: its verdict (``claim_verdict``), hypotheses and text."""
    if "claim_verdict" not in t.columns or "claim_id" not in t.columns:
        return []
    lines = []
    for claim_id, g in t.groupby(t["claim_id"].astype(str), sort=False):
        if claim_id in ("", "nan", "None"):
            continue
        ids = _ids(list(dict.fromkeys(g["hypothesis_id"].astype(str))))
        verdict = ", ".join(dict.fromkeys(g["claim_verdict"].astype(str)))
        claim = str(g["claim"].iloc[0]) if "claim" in g.columns else ""
        lines.extend(_wrapped(f"claim {claim_id} [{ids}]: {verdict}", f" - {claim}"))
    return lines


def _wrapped(prefix: str, text: str) -> list[str]:
    """``prefix text`` wrapped at :data:`WIDTH` columns, continuation lines indented."""
    return textwrap.wrap(
        f"{prefix}{text}",
        width=WIDTH,
        subsequent_indent="    ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def _ids(ids: list[str]) -> str:
    return ", ".join(ids)


def _messages(results: Any) -> list[str]:
    """Warnings and exclusion reasons, each said once with the hypotheses it concerns."""
    said: dict[tuple[str, str], list[str]] = {}
    for hid, f in results.fits.items():
        for w in f.warnings:
            said.setdefault(("warning", str(w)), []).append(hid)
        ex = f.exclusions
        if ex is not None and len(ex):
            for reason, g in ex.groupby("reason", sort=True):
                n = len(g.drop_duplicates(["participant_id", "period"]))
                text = f"{reason}: {n} participant-period{'s' if n != 1 else ''}"
                said.setdefault(("excluded", text), []).append(hid)
        if getattr(f, "error", None):
            said.setdefault(("not fitted", str(f.error)), []).append(hid)
    lines = []
    for (kind, text), ids in said.items():
        lines.extend(_wrapped(f"{kind} [{_ids(ids)}]: ", text))
    return lines


def format_results(results: Any) -> str:
    """A compact results summary that fits a 100-column terminal.

    One block per analysis (the primary, then each pre-specified sensitivity analysis) and
    multiplicity family (its adjustment method in the heading), one line per
    hypothesis x contrast: id, outcome, contrast, alternative (``> 0``, ``< 1``, ``!= 0``:
    the ``alternative`` column against the null), estimate with its confidence interval,
    p, adjusted p and verdict. Then one line per claim with its (primary) ``claim_verdict``
    and hypotheses; warnings and exclusions follow, each said once with the hypotheses it
    concerns; long messages are wrapped, never cut. The full table (df,
    model, estimand, verdict rule ...) is written with ``--csv FILE``.

    Parameters
    ----------
    results : AnalysisResults
        From :func:`studykit.analysis.run_analysis`.

    Returns
    -------
    str
        Lines of at most :data:`WIDTH` characters.
    """
    t = results.hypotheses
    proto = results.protocol
    lines = []
    if results.simulated:
        lines.append("*** SIMULATED DATA: these results describe simulated participants. ***")
    lines.append(f"protocol {proto.id} v{proto.version}")
    lines.append(f"sha256 {proto.sha256}")
    # one block per analysis (primary, then each sensitivity analysis) and multiplicity family,
    # in the table's order
    keys = list(zip(t["analysis"].astype(str), t["multiplicity_family"].astype(str), strict=True))
    blocks = list(dict.fromkeys(keys))
    for name, fam in blocks:
        sub = t[[k == (name, fam) for k in keys]]
        methods = ", ".join(dict.fromkeys(sub["adjust_method"].astype(str)))
        levels = sorted({float(v) for v in sub["conf_level"].dropna()})
        level = f"{levels[0]:.0%} CI" if len(levels) == 1 else "CI"
        rows = []
        for _, r in sub.iterrows():
            est = _num(r["estimate"])
            ratio = "ratio" in str(r["scale"]).lower()
            rows.append(
                [
                    str(r["hypothesis_id"]),
                    _cut(str(r["outcome"]), 14),
                    _short(r["contrast"]),
                    _alternative(r.get("alternative"), r["scale"]),
                    f"{est}{'x' if ratio else ''} [{_num(r['conf_low'])}, {_num(r['conf_high'])}]",
                    _p(r["p_value"]),
                    _p(r["p_adjusted"]),
                    str(r["verdict"]),
                ]
            )
        if (name, fam) != blocks[0]:
            lines.append("")
        prefix = "" if name == "primary" else f"sensitivity analysis {name}: "
        lines.append(f"{prefix}{fam} (p adjustment: {methods})")
        headers = ["id", "outcome", "contrast", "alt", f"estimate [{level}]", "p", "p adj"]
        lines.append(_table(rows, [*headers, "verdict"]))
    claims = _claims(t[t["analysis"].astype(str) == "primary"])
    if claims:
        lines.append("")
        lines.extend(claims)
    messages = _messages(results)
    if messages:
        lines.append("")
        lines.extend(messages)
    lines.append("")
    lines.extend(
        _wrapped(
            "",
            "Ratios (x) are rate ratios; alt = the alternative hypothesis of the test (> 0: "
            "one-sided, != 0: two-sided). A claim's verdict combines its hypotheses' verdicts "
            "(claim_verdict). df, models, estimands and verdict rules: write the full table with "
            "--csv FILE. Exploratory results are hypothesis-generating.",
        )
    )
    return "\n".join(lines)


def handle(args: argparse.Namespace) -> int:
    """Run ``studykit fit``."""
    data = Path(args.data)
    if not data.is_dir():
        raise InputError(
            f"--data {str(data)!r} is not a directory. Give the study directory (with "
            "roster.csv, periods.csv, nights.csv, diary.csv), e.g. the output of "
            "'studykit simulate'."
        )
    protocol = load_protocol(args.protocol)
    study = load_study(data, outcomes=args.outcomes)
    # run_analysis holds back the models' per-fit log lines; the summary below says each
    # warning once, with the hypotheses it concerns
    results = run_analysis(
        protocol, study, hypotheses=args.hypothesis, analysis_set=args.analysis_set
    )
    print(format_results(results))
    print(_outcome_source(study))
    if args.csv:
        results.hypotheses.to_csv(args.csv, index=False)
        print(f"\nwrote {args.csv}")
    return 0
