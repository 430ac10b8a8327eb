"""Computing tables: tidy, numeric result tables in a fixed, meaningful row order.

Rows come in a fixed order (reference levels first, nights in protocol order), never in the
order rows happened to arrive. Numbers stay numbers; :mod:`studykit.tables.format` makes
display strings and :mod:`studykit.tables.write` writes the files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from studykit.analysis import HYPOTHESIS_COLUMNS as _ANALYSIS_COLUMNS
from studykit.errors import InputError

__all__ = [
    "HYPOTHESIS_COLUMNS",
    "hypothesis_table",
    "baseline_characteristics",
    "descriptive_outcomes",
    "validation_summary",
]

#: Columns of ``hypotheses.csv``, in order: defined once, by the analysis that fills them.
HYPOTHESIS_COLUMNS: tuple[str, ...] = tuple(_ANALYSIS_COLUMNS)


# --------------------------------------------------------------------------------------
# hypothesis results
# --------------------------------------------------------------------------------------


def hypothesis_table(hypotheses: pd.DataFrame) -> pd.DataFrame:
    """The hypothesis results table in contract column order, rows in protocol order.

    Parameters
    ----------
    hypotheses : pandas.DataFrame
        ``AnalysisResults.hypotheses``: one row per hypothesis x contrast with (at least)
        the columns of :data:`HYPOTHESIS_COLUMNS`. Extra columns are kept, after those.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`HYPOTHESIS_COLUMNS` (+ extras). Rows keep the analysis' order (the
        protocol's order of hypotheses, then contrasts), which is fixed by the protocol, so
        exports are stable without re-sorting into an order the protocol did not choose.

    Examples
    --------
    >>> h = pd.DataFrame({c: [None, None] for c in reversed(HYPOTHESIS_COLUMNS)})
    >>> h["hypothesis_id"] = ["H1", "E1"]
    >>> t = hypothesis_table(h)
    >>> t.columns[:3].tolist(), t["hypothesis_id"].tolist()
    (['protocol_id', 'protocol_sha256', 'hypothesis_id'], ['H1', 'E1'])
    """
    missing = [c for c in HYPOTHESIS_COLUMNS if c not in hypotheses.columns]
    if missing:
        raise InputError(
            f"The hypothesis results lack column(s) {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}. The table must have every column of the "
            "contract in docs/ARCHITECTURE.md (studykit.tables.HYPOTHESIS_COLUMNS)."
        )
    extras = [c for c in hypotheses.columns if c not in HYPOTHESIS_COLUMNS]
    return hypotheses.loc[:, [*HYPOTHESIS_COLUMNS, *extras]].reset_index(drop=True)


# --------------------------------------------------------------------------------------
# Table 1: baseline characteristics (no p-values: CONSORT 2010, item 15)
# --------------------------------------------------------------------------------------

_BASELINE_COLUMNS = [
    "variable",
    "label",
    "unit",
    "type",
    "level",
    "group",
    "n",
    "n_missing",
    "mean",
    "sd",
    "median",
    "q1",
    "q3",
    "count",
    "percent",
]


def _is_categorical(s: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s))


def _order(values: Sequence[object], order: Sequence[object] | None) -> list:
    present = list(dict.fromkeys(v for v in values if pd.notna(v)))
    if order is None:
        return sorted(present, key=str)
    extra = sorted((v for v in present if v not in order), key=str)
    return [v for v in order if v in present] + extra


def baseline_characteristics(
    roster: pd.DataFrame,
    *,
    variables: Sequence[str],
    group: str = "sequence",
    group_order: Sequence[str] | None = None,
    labels: Mapping[str, str] | None = None,
    units: Mapping[str, str] | None = None,
    levels: Mapping[str, Sequence[str]] | None = None,
    overall: bool = True,
) -> pd.DataFrame:
    """Baseline characteristics by randomized group (the numbers of Table 1).

    Parameters
    ----------
    roster : pandas.DataFrame
        One row per randomized participant, with ``group`` and the ``variables``.
    variables : sequence of str
        Columns to summarize, in display order.
    group : str, default "sequence"
        Randomized sequence (crossover) or arm (parallel group).
    group_order : sequence of str, optional
        Order of groups (dictionary order of the codes); groups present but not listed
        follow alphabetically. Codes without participants (e.g. the parallel-group arms of
        a crossover) are left out.
    labels, units : mapping, optional
        Display label and unit per variable (from the data dictionary).
    levels : mapping, optional
        Levels per categorical variable in display order; a variable listed here is
        categorical. Otherwise numeric columns are continuous and the rest categorical.
    overall : bool, default True
        Add a group ``"overall"`` with all participants.

    Returns
    -------
    pandas.DataFrame
        Tidy rows, columns ``variable, label, unit, type, level, group, n, n_missing, mean,
        sd, median, q1, q3, count, percent``. Continuous variables: one row per group
        (``level`` empty). Categorical: one row per level and group with ``count`` and
        ``percent`` of the group's non-missing values. A first variable ``participants``
        gives the group sizes.

    Notes
    -----
    No p-values: CONSORT 2010 (item 15 and its explanation) advises against significance
    tests of baseline differences in randomized trials, since any difference is by chance.
    SD uses ``ddof = 1``; quartiles use linear interpolation (R's ``quantile`` type 7).

    Examples
    --------
    >>> r = pd.DataFrame({"sequence": ["KP", "KP", "PK"], "age": [30, 40, 50],
    ...                   "sex": ["F", "M", "F"]})
    >>> t = baseline_characteristics(r, variables=["age", "sex"], group_order=["KP", "PK"],
    ...                              levels={"sex": ["F", "M"]})
    >>> t.query("variable == 'age' and group == 'KP'")[["n", "mean"]].to_numpy().tolist()
    [[2.0, 35.0]]
    """
    if group not in roster.columns:
        raise InputError(
            f"Cannot build Table 1: the roster has no column {group!r} (the randomized "
            f"group). Columns are {list(roster.columns)[:20]}."
        )
    absent = [v for v in variables if v not in roster.columns]
    if absent:
        raise InputError(
            f"Cannot build Table 1: variable(s) {absent} not in the roster. "
            f"Columns are {list(roster.columns)[:20]}."
        )
    labels = labels or {}
    units = units or {}
    levels = levels or {}
    groups = _order(roster[group].tolist(), group_order)
    subsets: list[tuple[str, pd.DataFrame]] = [(str(g), roster[roster[group] == g]) for g in groups]
    if overall:
        subsets.append(("overall", roster[roster[group].notna()]))
    rows: list[dict] = []
    for g, sub in subsets:
        rows.append(
            {
                "variable": "participants",
                "label": "Participants",
                "type": "count",
                "group": g,
                "n": float(len(sub)),
                "n_missing": 0.0,
            }
        )
    for var in variables:
        col = roster[var]
        categorical = var in levels or _is_categorical(col)
        for g, sub in subsets:
            s = sub[var]
            base = {
                "variable": var,
                "label": labels.get(var, var),
                "unit": units.get(var, ""),
                "group": g,
                "n_missing": float(s.isna().sum()),
            }
            if categorical:
                present = s.dropna().astype(str)
                n = float(len(present))
                lv = [str(x) for x in levels.get(var, [])] or sorted(
                    col.dropna().astype(str).unique()
                )
                lv += sorted(set(col.dropna().astype(str)) - set(lv))
                for level in lv:
                    k = float((present == level).sum())
                    rows.append(
                        {
                            **base,
                            "type": "categorical",
                            "level": level,
                            "n": n,
                            "count": k,
                            "percent": 100.0 * k / n if n else math.nan,
                        }
                    )
            else:
                x = pd.to_numeric(s, errors="coerce").dropna().to_numpy(dtype=float)
                n = float(len(x))
                rows.append(
                    {
                        **base,
                        "type": "continuous",
                        "level": "",
                        "n": n,
                        "mean": float(np.mean(x)) if n else math.nan,
                        "sd": float(np.std(x, ddof=1)) if n > 1 else math.nan,
                        "median": float(np.median(x)) if n else math.nan,
                        "q1": float(np.quantile(x, 0.25)) if n else math.nan,
                        "q3": float(np.quantile(x, 0.75)) if n else math.nan,
                    }
                )
    out = pd.DataFrame(rows, columns=_BASELINE_COLUMNS)
    for c in ("label", "unit", "level", "type"):
        out[c] = out[c].fillna("")
    # stable order: variable order as given, then level order, then group order
    var_rank = {v: i for i, v in enumerate(["participants", *variables])}
    grp_rank = {g: i for i, (g, _) in enumerate(subsets)}
    out["_v"] = out["variable"].map(var_rank)
    out["_g"] = out["group"].map(grp_rank)
    out["_l"] = out.groupby(["variable", "group"]).cumcount()
    out = out.sort_values(["_v", "_l", "_g"], kind="mergesort").drop(columns=["_v", "_g", "_l"])
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------------------
# descriptive outcomes per arm and night (or day)
# --------------------------------------------------------------------------------------


def descriptive_outcomes(
    data: pd.DataFrame,
    *,
    outcomes: Sequence[str],
    arm: str = "treatment",
    time: str = "night",
    arm_order: Sequence[str] | None = None,
    time_order: Sequence[object] | None = None,
    labels: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Mean, SD, median, IQR and n of each outcome per arm and time point.

    Parameters
    ----------
    data : pandas.DataFrame
        Long data, one row per observation (e.g. the nights table, or the diary joined
        with the treatment of its period).
    outcomes : sequence of str
        Outcome columns, in display order.
    arm, time : str
        Grouping columns (default ``"treatment"`` and ``"night"``); the output uses these
        names as its columns.
    arm_order, time_order : sequence, optional
        Explicit orders (reference arm first, nights in protocol order); values present
        but not listed follow in sorted order.
    labels : mapping, optional
        Display label per outcome (from the data dictionary).

    Returns
    -------
    pandas.DataFrame
        Columns ``outcome, label, <arm>, <time>, n, n_missing, mean, sd, median, q1, q3,
        min, max``; rows ordered by outcome, arm, time.

    Notes
    -----
    ``n`` counts non-missing values; SD uses ``ddof = 1``; quartiles use linear
    interpolation (R's ``quantile`` type 7). Observations are pooled over periods and
    sequences; the inferential comparison is the model's job.

    Examples
    --------
    >>> d = pd.DataFrame({"treatment": ["placebo"] * 3, "night": ["post1"] * 3,
    ...                   "tst_min": [400.0, 410.0, None]})
    >>> r = descriptive_outcomes(d, outcomes=["tst_min"]).iloc[0]
    >>> int(r["n"]), int(r["n_missing"]), float(r["mean"]), float(r["median"])
    (2, 1, 405.0, 405.0)
    """
    missing = [c for c in [arm, time, *outcomes] if c not in data.columns]
    if missing:
        raise InputError(
            f"Cannot describe outcomes: column(s) {missing} not in the data. "
            f"Columns are {list(data.columns)[:25]}."
        )
    labels = labels or {}
    arms = _order(data[arm].tolist(), arm_order)
    times = _order(data[time].tolist(), time_order)
    rows = []
    for outcome in outcomes:
        values = pd.to_numeric(data[outcome], errors="coerce")
        for a in arms:
            for t in times:
                sel = (data[arm] == a) & (data[time] == t)
                if not sel.any():
                    continue
                v = values[sel]
                x = v.dropna().to_numpy(dtype=float)
                n = len(x)
                rows.append(
                    {
                        "outcome": outcome,
                        "label": labels.get(outcome, outcome),
                        arm: a,
                        time: t,
                        "n": n,
                        "n_missing": int(v.isna().sum()),
                        "mean": float(np.mean(x)) if n else math.nan,
                        "sd": float(np.std(x, ddof=1)) if n > 1 else math.nan,
                        "median": float(np.median(x)) if n else math.nan,
                        "q1": float(np.quantile(x, 0.25)) if n else math.nan,
                        "q3": float(np.quantile(x, 0.75)) if n else math.nan,
                        "min": float(np.min(x)) if n else math.nan,
                        "max": float(np.max(x)) if n else math.nan,
                    }
                )
    cols = [
        "outcome",
        "label",
        arm,
        time,
        "n",
        "n_missing",
        "mean",
        "sd",
        "median",
        "q1",
        "q3",
        "min",
        "max",
    ]
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------------------
# validation summary and participant flow
# --------------------------------------------------------------------------------------

_ISSUE_COLUMNS = ["file", "column", "rule", "severity"]
_SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


def validation_summary(issues: pd.DataFrame | None) -> pd.DataFrame:
    """Count validation issues per file, column, rule and severity (no cell values).

    Parameters
    ----------
    issues : pandas.DataFrame or None
        The issue table of ``load_study`` / ``validate_table`` (columns ``file, row,
        participant_id, night, column, value, rule, severity, message``).

    Returns
    -------
    pandas.DataFrame
        Columns ``file, column, rule, severity, n_issues, n_participants, first_row,
        example``; errors first, then by file, column and rule. Offending values are not
        copied (they may be identifiers); the full issue table stays with the data.

    Examples
    --------
    >>> iss = pd.DataFrame({"file": ["nights.csv"] * 2, "row": [3, 7],
    ...     "participant_id": ["P01", "P02"], "night": ["post1", "post2"],
    ...     "column": ["tst_min"] * 2, "value": ["-5", "9999"], "rule": ["range"] * 2,
    ...     "severity": ["error"] * 2, "message": ["below minimum 0", "above maximum 1440"]})
    >>> validation_summary(iss)[["file", "n_issues", "n_participants", "first_row"]].to_numpy().tolist()
    [['nights.csv', 2, 2, 3]]
    """
    cols = [*_ISSUE_COLUMNS, "n_issues", "n_participants", "first_row", "example"]
    if issues is None or len(issues) == 0:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    absent = [c for c in _ISSUE_COLUMNS if c not in issues.columns]
    if absent:
        raise InputError(
            f"The issue table lacks column(s) {absent}; expected the columns of "
            "studykit.errors.ValidationError.issues (file, row, column, rule, severity, ...)."
        )
    iss = issues.copy()
    for c in _ISSUE_COLUMNS:
        iss[c] = iss[c].astype("string").fillna("")
    if "participant_id" not in iss.columns:
        iss["participant_id"] = pd.NA
    if "row" not in iss.columns:
        iss["row"] = pd.NA
    if "message" not in iss.columns:
        iss["message"] = ""
    rows = []
    for key, g in iss.groupby(_ISSUE_COLUMNS, sort=False, dropna=False):
        row_nums = pd.to_numeric(g["row"], errors="coerce").dropna()
        first = g.sort_values(
            "row", key=lambda s: pd.to_numeric(s, errors="coerce"), kind="mergesort"
        )
        rows.append(
            {
                **dict(zip(_ISSUE_COLUMNS, key, strict=True)),
                "n_issues": len(g),
                "n_participants": int(g["participant_id"].dropna().nunique()),
                "first_row": int(row_nums.min()) if len(row_nums) else pd.NA,
                "example": str(first["message"].iloc[0]) if len(first) else "",
            }
        )
    out = pd.DataFrame(rows, columns=cols)
    out["first_row"] = out["first_row"].astype("Int64")
    out["_s"] = out["severity"].str.lower().map(_SEVERITY_ORDER).fillna(9)
    out = out.sort_values(["_s", "file", "column", "rule"], kind="mergesort").drop(columns="_s")
    return out.reset_index(drop=True)
