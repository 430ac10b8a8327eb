"""Formatting tables for reading: numbers become strings (Markdown, HTML, LaTeX, report).

The machine-readable CSV keeps the numbers (:mod:`studykit.tables.compute`); these functions
only turn them into display strings with labels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

__all__ = [
    "format_number",
    "format_p",
    "DEFAULT_LABELS",
    "format_display",
    "format_hypothesis_table",
    "format_baseline_table",
    "format_descriptive_table",
]

#: Display labels of common machine column names (used in Markdown / HTML / LaTeX only).
DEFAULT_LABELS: dict[str, str] = {
    "hypothesis_id": "Hypothesis",
    "outcome": "Outcome",
    "contrast": "Contrast",
    "role": "Role",
    "estimate": "Estimate",
    "std_error": "SE",
    "df": "df",
    "statistic": "Statistic",
    "p_value": "p",
    "p_adjusted": "Adjusted p",
    "conf_low": "CI low",
    "conf_high": "CI high",
    "n": "n",
    "n_missing": "Missing",
    "mean": "Mean",
    "sd": "SD",
    "median": "Median",
    "q1": "Q1",
    "q3": "Q3",
    "min": "Min",
    "max": "Max",
    "n_issues": "Issues",
    "n_participants": "Participants",
    "severity": "Severity",
    "rule": "Rule",
    "column": "Column",
    "file": "File",
    "stage": "Stage",
    "group": "Group",
    "reason": "Reason",
}

_P_COLUMNS = frozenset({"p_value", "p_adjusted"})
_RATIO_WORDS = ("ratio",)


def format_number(v: float, digits: int = 2) -> str:
    """THE number format of every table and figure: fixed decimals, infinity as the sign.

    A non-zero value that would print as zero gets two significant digits instead, so an
    interval limit of -0.003 does not read "-0.00".

    Examples
    --------
    >>> format_number(8.3507), format_number(float("inf")), format_number(1.5, 1)
    ('8.35', '∞', '1.5')
    >>> format_number(-0.0031), format_number(0.0)
    ('-0.0031', '0.00')
    """
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    text = f"{v:.{digits}f}"
    if v != 0 and float(text) == 0:
        return f"{v:.2g}"
    return text


def format_p(v: float) -> str:
    """THE p-value format of every table and figure: three decimals, ``<0.001`` below.

    Examples
    --------
    >>> format_p(0.04567), format_p(0.0002)
    ('0.046', '<0.001')
    """
    if v < 0.001:
        return "<0.001"
    return f"{v:.3f}"


def format_display(
    data: pd.DataFrame,
    *,
    digits: int = 2,
    labels: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Turn a tidy numeric table into strings for reading (Markdown, HTML, LaTeX).

    Parameters
    ----------
    data : pandas.DataFrame
        Tidy table with machine column names.
    digits : int, default 2
        Decimals of floats. Columns ``p_value`` and ``p_adjusted`` get three decimals and
        ``<0.001`` below that.
    labels : mapping, optional
        Display label per column; defaults to :data:`DEFAULT_LABELS` for known names and
        the machine name otherwise.

    Returns
    -------
    pandas.DataFrame
        Same rows, every cell a string, missing values as empty strings.

    Examples
    --------
    >>> d = pd.DataFrame({"estimate": [1.23456], "p_value": [0.00002], "n": [12]})
    >>> format_display(d).to_dict("records")
    [{'Estimate': '1.23', 'p': '<0.001', 'n': '12'}]
    """
    names = {**DEFAULT_LABELS, **(labels or {})}
    out = {}
    for col in data.columns:
        s = data[col]
        is_p = col in _P_COLUMNS
        if pd.api.types.is_bool_dtype(s):
            vals = s.map(lambda v: "yes" if v else "no")
        elif pd.api.types.is_integer_dtype(s):
            vals = s.map(lambda v: "" if pd.isna(v) else str(int(v)))
        elif pd.api.types.is_float_dtype(s):
            vals = s.map(
                lambda v, is_p=is_p: (
                    "" if pd.isna(v) else (format_p(v) if is_p else format_number(float(v), digits))
                )
            )
        else:
            vals = s.map(
                lambda v: (
                    ""
                    if (v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)))
                    else (
                        "yes"
                        if v is True
                        else "no"
                        if v is False
                        else "; ".join(map(str, v))
                        if isinstance(v, list | tuple)
                        else str(v)
                    )
                )
            )
        out[names.get(str(col), str(col))] = vals.astype(object).to_numpy()
    return pd.DataFrame(out, index=range(len(data)))


def _is_ratio(scale: object) -> bool:
    return isinstance(scale, str) and any(w in scale.lower() for w in _RATIO_WORDS)


def format_hypothesis_table(hypotheses: pd.DataFrame, *, digits: int = 2) -> pd.DataFrame:
    """A compact, readable version of the hypothesis results (for the report and papers).

    Parameters
    ----------
    hypotheses : pandas.DataFrame
        Output of :func:`hypothesis_table`.
    digits : int, default 2
        Decimals of estimates, intervals and effect sizes.

    Returns
    -------
    pandas.DataFrame
        String columns ``Hypothesis, Analysis, Outcome, Contrast, Role, n (K/P), Excluded,
        Estimate [CI], CI level, df, Test, p, Adjusted p, Effect size, Verdict, Claim
        verdict``; ``Test`` says the alternative (``one-sided, > 0``). The model,
        its warnings and the effect-size definition stay in the CSV (and the report's
        diagnostics and definitions); they are too long for a readable table.

    Examples
    --------
    >>> from studykit.tables.compute import HYPOTHESIS_COLUMNS
    >>> h = pd.DataFrame({c: [None] for c in HYPOTHESIS_COLUMNS})
    >>> h.loc[0, ["hypothesis_id", "estimate", "conf_low", "conf_high", "p_value"]] = [
    ...     "H1", 8.0, 2.5, 13.5, 0.004]
    >>> format_hypothesis_table(h).loc[0, "Estimate [CI]"]
    '8.00 [2.50, 13.50]'
    """

    def num(v: Any, d: int = digits) -> str:
        if v is None or pd.isna(v):
            return ""
        return format_number(float(v), d)

    def p(v: Any) -> str:
        return "" if v is None or pd.isna(v) else format_p(float(v))

    def txt(v: Any) -> str:
        if v is None or (not isinstance(v, list | tuple) and pd.isna(v)):
            return ""
        return "; ".join(map(str, v)) if isinstance(v, list | tuple) else str(v)

    def intn(v: Any) -> str:
        return "" if v is None or pd.isna(v) else str(int(v))

    rows = []
    for _, r in hypotheses.iterrows():
        level = r["conf_level"]
        ci = f"{num(r['conf_low'])}, {num(r['conf_high'])}"
        est = num(r["estimate"])
        if _is_ratio(r["scale"]):
            est += " (ratio)"
        adj = p(r["p_adjusted"])
        if adj and txt(r["adjust_method"]):
            adj += f" ({txt(r['adjust_method'])})"
        es = num(r["effect_size"])
        null = "1" if _is_ratio(r["scale"]) else "0"
        test = {
            "greater": f"one-sided, > {null}",
            "less": f"one-sided, < {null}",
            "two-sided": f"two-sided, != {null}",
        }.get(txt(r["alternative"]), txt(r["alternative"]))
        rows.append(
            {
                "Hypothesis": txt(r["hypothesis_id"]),
                "Analysis": txt(r.get("analysis")),
                "Outcome": txt(r["outcome"]),
                "Contrast": txt(r["contrast"]),
                "Role": txt(r["role"]),
                "n (K/P)": f"{intn(r['n_ketamine'])}/{intn(r['n_placebo'])}",
                "Excluded": intn(r["n_excluded"]),
                "Estimate [CI]": f"{est} [{ci}]",
                "CI level": "" if level is None or pd.isna(level) else f"{float(level):.0%}",
                "df": num(r["df"], 1)
                + (f" ({txt(r['df_method'])})" if txt(r["df_method"]) else ""),
                "Test": test,
                "p": p(r["p_value"]),
                "Adjusted p": adj,
                "Effect size": es,
                "Verdict": txt(r["verdict"]),
                "Claim verdict": txt(r.get("claim_verdict")),
            }
        )
    return pd.DataFrame(rows, columns=list(rows[0]) if rows else None)


def format_baseline_table(
    characteristics: pd.DataFrame,
    *,
    group_labels: Mapping[str, str] | None = None,
    digits: int = 1,
) -> pd.DataFrame:
    """Table 1 for reading: one column per group, ``mean (SD)``, ``median [Q1, Q3]``, ``n (%)``.

    Parameters
    ----------
    characteristics : pandas.DataFrame
        Output of :func:`baseline_characteristics`.
    group_labels : mapping, optional
        Display label per group code (e.g. ``{"KP": "Ketamine then placebo"}``).
    digits : int, default 1
        Decimals of means, SDs, quartiles and percentages.

    Returns
    -------
    pandas.DataFrame
        String columns ``Characteristic`` and one per group (``"label (n = N)"``).

    Examples
    --------
    >>> from studykit.tables.compute import baseline_characteristics
    >>> r = pd.DataFrame({"sequence": ["KP", "KP", "PK"], "age": [30, 40, 50]})
    >>> t = format_baseline_table(baseline_characteristics(r, variables=["age"]))
    >>> t.iloc[0].tolist()
    ['age, mean (SD)', '35.0 (7.1)', '50.0', '40.0 (10.0)']
    """
    group_labels = dict(group_labels or {})
    group_labels.setdefault("overall", "Overall")
    c = characteristics
    groups = list(dict.fromkeys(c["group"]))
    sizes = c[c["variable"] == "participants"].set_index("group")["n"]
    header = {g: f"{group_labels.get(g, g)} (n = {int(sizes.get(g, 0))})" for g in groups}

    def f(v: float) -> str:
        return "" if pd.isna(v) else f"{v:.{digits}f}"

    rows: list[dict] = []
    for var in dict.fromkeys(c["variable"]):
        if var == "participants":
            continue
        block = c[c["variable"] == var]
        label = block["label"].iloc[0] or var
        unit = block["unit"].iloc[0]
        name = f"{label} ({unit})" if unit else label
        kind = block["type"].iloc[0]
        if kind == "continuous":
            by = block.set_index("group")
            r1 = {"Characteristic": f"{name}, mean (SD)"}
            r2 = {"Characteristic": "    median [Q1, Q3]"}
            for g in groups:
                s = by.loc[g]
                r1[header[g]] = (
                    f"{f(s['mean'])} ({f(s['sd'])})" if pd.notna(s["sd"]) else f(s["mean"])
                )
                r2[header[g]] = f"{f(s['median'])} [{f(s['q1'])}, {f(s['q3'])}]" if s["n"] else ""
            rows += [r1, r2]
        else:
            rows.append({"Characteristic": f"{name}, n (%)", **{header[g]: "" for g in groups}})
            for level in dict.fromkeys(block["level"]):
                lv = block[block["level"] == level].set_index("group")
                r = {"Characteristic": f"    {level}"}
                for g in groups:
                    s = lv.loc[g]
                    r[header[g]] = f"{int(s['count'])} ({f(s['percent'])})" if s["n"] else "0"
                rows.append(r)
        miss = block.drop_duplicates("group").set_index("group")["n_missing"]
        if (miss > 0).any():
            rows.append(
                {
                    "Characteristic": "    missing, n",
                    **{header[g]: str(int(miss.get(g, 0))) for g in groups},
                }
            )
    return pd.DataFrame(rows, columns=["Characteristic", *header.values()]).fillna("")


def format_descriptive_table(summary: pd.DataFrame, *, digits: int = 1) -> pd.DataFrame:
    """Descriptive outcomes for reading: ``mean (SD)`` and ``median [Q1, Q3]``.

    Parameters
    ----------
    summary : pandas.DataFrame
        Output of :func:`descriptive_outcomes`.
    digits : int, default 1
        Decimals.

    Returns
    -------
    pandas.DataFrame
        String columns ``Outcome``, the arm and time columns, ``n``, ``Mean (SD)``,
        ``Median [Q1, Q3]``.

    Examples
    --------
    >>> from studykit.tables.compute import descriptive_outcomes
    >>> d = pd.DataFrame({"treatment": ["placebo"] * 2, "night": ["post1"] * 2,
    ...                   "tst_min": [400.0, 410.0]})
    >>> format_descriptive_table(descriptive_outcomes(d, outcomes=["tst_min"])).iloc[0].tolist()
    ['tst_min', 'placebo', 'post1', '2', '405.0 (7.1)', '405.0 [402.5, 407.5]']
    """
    arm, time = summary.columns[2], summary.columns[3]

    def f(v: float) -> str:
        return "" if pd.isna(v) else f"{v:.{digits}f}"

    out = pd.DataFrame(
        {
            "Outcome": summary["label"].astype(str).to_numpy(),
            arm.capitalize(): summary[arm].astype(str).to_numpy(),
            time.capitalize(): summary[time].astype(str).to_numpy(),
            "n": summary["n"].astype(int).astype(str).to_numpy(),
            "Mean (SD)": [
                f"{f(m)} ({f(s)})" if pd.notna(s) else f(m)
                for m, s in zip(summary["mean"], summary["sd"], strict=True)
            ],
            "Median [Q1, Q3]": [
                f"{f(m)} [{f(a)}, {f(b)}]" if pd.notna(m) else ""
                for m, a, b in zip(summary["median"], summary["q1"], summary["q3"], strict=True)
            ],
        }
    )
    return out
