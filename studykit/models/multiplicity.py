"""Multiplicity adjustment of p-values within a family of hypotheses.

Adjusted p-values let a reader apply the family-wise error rate directly: reject hypothesis
``i`` when its adjusted p-value is below the family's alpha. The methods follow R's
``p.adjust`` (Holm, Bonferroni, Hochberg) and add the hierarchical fixed-sequence procedure
used in confirmatory trials.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from studykit.errors import ModelError
from studykit.models.inference import critical_value

__all__ = [
    "METHODS",
    "P_ADJUSTING",
    "ADJUSTED_INTERVAL_COLUMNS",
    "adjust_pvalues",
    "adjusted_intervals",
]

logger = logging.getLogger(__name__)

#: Methods accepted by :func:`adjust_pvalues`.
METHODS = ("holm", "bonferroni", "hochberg", "fixed-sequence", "none")
#: Methods whose tests run at a fraction of alpha, so that simultaneous intervals are wider.
P_ADJUSTING = ("holm", "bonferroni", "hochberg")
#: Columns of :func:`adjusted_intervals`.
ADJUSTED_INTERVAL_COLUMNS = [
    "hypothesis_id",
    "contrast",
    "conf_level_adjusted",
    "conf_low_adjusted",
    "conf_high_adjusted",
    "ci_adjustment",
]
#: Input columns :func:`adjusted_intervals` reads.
_INTERVAL_INPUT = [
    "hypothesis_id",
    "contrast",
    "multiplicity_family",
    "adjust_method",
    "scale",
    "estimate",
    "conf_low",
    "conf_high",
    "conf_level",
    "df",
]


def adjust_pvalues(p: Sequence[float] | np.ndarray, method: str = "holm") -> np.ndarray:
    """Adjust p-values for multiple testing within one family.

    Parameters
    ----------
    p : sequence of float
        Unadjusted p-values, each in [0, 1]. For ``"fixed-sequence"`` their order is the
        pre-specified testing order. Missing values (NaN) are allowed: they stay NaN and do not
        count in the family size (as R's ``p.adjust`` with its default ``n``); in a fixed
        sequence a missing p-value stops the sequence (see Notes).
    method : {"holm", "bonferroni", "hochberg", "fixed-sequence", "none"}, default "holm"
        Adjustment method.

    Returns
    -------
    numpy.ndarray
        Adjusted p-values (float64) in the input order, each in [0, 1].

    Raises
    ------
    ModelError
        Unknown method, or p-values outside [0, 1].

    Examples
    --------
    >>> adjust_pvalues([0.01, 0.04, 0.03], method="holm").round(4).tolist()
    [0.03, 0.06, 0.06]
    >>> adjust_pvalues([0.01, 0.04, 0.03], method="hochberg").round(4).tolist()
    [0.03, 0.04, 0.04]
    >>> adjust_pvalues([0.01, 0.20, 0.001], method="fixed-sequence").tolist()
    [0.01, 0.2, 0.2]

    Notes
    -----
    With ``m`` non-missing p-values sorted increasingly ``p(1) <= ... <= p(m)``:

    - Bonferroni: ``min(1, m p)``.
    - Holm (1979) step-down: ``p~(i) = max_{j <= i} min(1, (m - j + 1) p(j))``. Controls the
      family-wise error rate under any dependence; uniformly more powerful than Bonferroni.
    - Hochberg (1988) step-up: ``p~(i) = min_{j >= i} min(1, (m - j + 1) p(j))``. Valid
      under independence or positive dependence (Simes' inequality).
    - Fixed sequence (hierarchical; Maurer, Hothorn & Lehmacher 1995; Westfall & Krishen
      2001): hypotheses are tested in the given order, each at the full alpha, and testing
      stops at the first non-rejection. Adjusted ``p~_k = max_{j <= k} p_j``, so hypothesis
      ``k`` is rejected at level alpha exactly when all of ``1..k`` are. A missing p-value
      breaks the chain: it and every later hypothesis get adjusted p-value 1 (they can never
      be rejected).
    - None: the p-values unchanged (for exploratory families, stated as such).

    These equal R's ``p.adjust(p, method = "holm" | "bonferroni" | "hochberg")``.
    """
    if method not in METHODS:
        raise ModelError(
            f"Invalid multiplicity method {method!r}. Expected one of: {', '.join(METHODS)}."
        )
    arr = np.asarray(p, dtype=float)
    if arr.ndim != 1:
        raise ModelError(f"p-values must be a one-dimensional sequence; got shape {arr.shape}.")
    finite = ~np.isnan(arr)
    bad = arr[finite & ((arr < 0) | (arr > 1))]
    if bad.size:
        raise ModelError(
            f"p-values must lie in [0, 1]; got {bad[:5].tolist()}. Check the test that produced them."
        )
    out = np.full(arr.shape, np.nan)
    if method == "fixed-sequence":
        running = 0.0
        broken = False
        for i, value in enumerate(arr):
            if broken or np.isnan(value):
                broken = True
                out[i] = 1.0
                continue
            running = max(running, value)
            out[i] = running
        return out
    idx = np.flatnonzero(finite)
    q = arr[idx]
    m = q.size
    if m == 0 or method == "none":
        out[idx] = q
        return out
    if method == "bonferroni":
        adj = np.minimum(1.0, m * q)
    elif method == "holm":
        order = np.argsort(q, kind="mergesort")
        stepped = np.maximum.accumulate((m - np.arange(m)) * q[order])
        adj = np.empty(m)
        adj[order] = np.minimum(1.0, stepped)
    else:  # hochberg
        order = np.argsort(q, kind="mergesort")[::-1]  # decreasing p
        stepped = np.minimum.accumulate((np.arange(m) + 1) * q[order])
        adj = np.empty(m)
        adj[order] = np.minimum(1.0, stepped)
    out[idx] = adj
    return out


def _scale_functions(scale: str) -> tuple[str, Any, Any]:
    """(reference distribution, forward, back) of the scale a result is tested on."""
    s = scale.lower()
    if "ratio" in s:
        return "t", np.log, np.exp
    if "correlation" in s:
        # Fisher z: the interval is symmetric in atanh(r) with a normal quantile
        return "normal", np.arctanh, np.tanh
    return "t", (lambda x: x), (lambda x: x)


def adjusted_intervals(hypotheses: pd.DataFrame) -> pd.DataFrame:
    """Multiplicity-adjusted (simultaneous) confidence intervals of a results table.

    THE adjusted interval of studykit: the analysis, the result tables and the forest plot
    all call this function.

    Parameters
    ----------
    hypotheses : pandas.DataFrame
        Result rows with columns ``hypothesis_id, contrast, multiplicity_family,
        adjust_method, scale, estimate, conf_low, conf_high, conf_level, df`` (the hypothesis
        results table of :func:`studykit.analysis.run_analysis`). ``conf_level`` is the level of
        the reported interval: two-sided when both limits are finite, one-sided when one
        limit is infinite.

    Returns
    -------
    pandas.DataFrame
        :data:`ADJUSTED_INTERVAL_COLUMNS`, one row per input row, in input order.

    Raises
    ------
    ModelError
        A needed column is missing.

    Examples
    --------
    H1 of the demo protocol: a one-sided test at alpha 0.025, reported with its two-sided
    95 % interval, in a Holm family of three tests. Its simultaneous interval is the
    two-sided ``1 - 0.05 / 3 = 0.9833`` interval (each one-sided test at 0.025 / 3):

    >>> h = pd.DataFrame({"hypothesis_id": ["H1", "H2", "H3"], "contrast": ["c"] * 3,
    ...     "multiplicity_family": ["confirmatory"] * 3, "adjust_method": ["holm"] * 3,
    ...     "scale": ["difference"] * 3, "estimate": [8.35, 1.0, 2.0],
    ...     "conf_low": [8.35 - 1.959964 * 5.36, 0.0, 1.0],
    ...     "conf_high": [8.35 + 1.959964 * 5.36, 2.0, 3.0],
    ...     "conf_level": [0.95] * 3, "df": [float("inf")] * 3})
    >>> a = adjusted_intervals(h)
    >>> round(float(a.loc[0, "conf_level_adjusted"]), 4)
    0.9833
    >>> # 8.35 -/+ qnorm(1 - 0.05 / 6) * 5.36 (R)
    >>> [round(float(a.loc[0, c]), 2) for c in ("conf_low_adjusted", "conf_high_adjusted")]
    [-4.48, 21.18]

    Notes
    -----
    With ``m`` rows in a multiplicity family whose method adjusts p-values (Holm, Bonferroni,
    Hochberg; counted within each ``analysis`` when the table has that column), each row's interval becomes the Bonferroni (simultaneous) interval at level
    ``1 - (1 - conf_level) / m``: for a one-sided test at alpha reported with its two-sided
    ``1 - 2 alpha`` interval this is the two-sided ``1 - 2 alpha / m`` interval, whose limit on
    the claimed side excludes the null exactly when the Bonferroni test at ``alpha / m``
    rejects. Holm and Hochberg have no unique compatible interval; Bonferroni's is the usual,
    conservative companion (Dmitrienko & D'Agostino 2013). A fixed-sequence family tests each
    hypothesis at the full alpha, so its intervals stay unadjusted (valid for the hypotheses
    reached in the sequence); ``none`` is unadjusted.

    The interval is widened on the scale of the test, by the ratio of quantiles
    ``q(adjusted) / q(reported)`` (Student's t with the row's ``df``, normal when infinite):
    the log scale for ratios, Fisher's z (normal quantiles) for correlations, the estimate's
    scale otherwise. An infinite (one-sided) limit stays infinite.
    """
    missing = [c for c in _INTERVAL_INPUT if c not in hypotheses.columns]
    if missing:
        raise ModelError(
            f"Cannot compute adjusted confidence intervals: column(s) {missing} missing. "
            "Pass the hypothesis results table of the analysis."
        )
    h = hypotheses.reset_index(drop=True)
    method = h["adjust_method"].astype(str).str.lower()
    family = h["multiplicity_family"].astype(str)
    # rows of different analyses (primary, sensitivity analyses) are separate families
    analyses = h["analysis"] if "analysis" in h.columns else pd.Series("", index=h.index)
    key = pd.Series([f"{a}\x1f{f}" for a, f in zip(analyses, family, strict=True)], index=h.index)
    adjusting = method.isin(P_ADJUSTING).to_numpy()
    m = key.map(key[adjusting].value_counts()).fillna(1).astype(int).to_numpy()
    rows = []
    for i, r in enumerate(h.itertuples(index=False)):
        level = float(r.conf_level)
        mi = int(m[i]) if adjusting[i] else 1
        est, lo, hi = (float(x) for x in (r.estimate, r.conf_low, r.conf_high))
        new_level = 1.0 - (1.0 - level) / mi
        new_lo, new_hi = lo, hi
        if mi > 1 and not math.isnan(est):
            dist, fwd, back = _scale_functions(str(r.scale))
            df = math.inf if dist == "normal" or pd.isna(r.df) else float(r.df)
            one_sided = math.isinf(lo) or math.isinf(hi)
            if one_sided:
                factor = critical_value(df, new_level) / critical_value(df, level)
            else:
                factor = critical_value(df, 0.5 + new_level / 2) / critical_value(
                    df, 0.5 + level / 2
                )
            with np.errstate(divide="ignore", invalid="ignore"):
                c = fwd(est)
                if math.isfinite(lo):
                    new_lo = float(back(c - (c - fwd(lo)) * factor))
                if math.isfinite(hi):
                    new_hi = float(back(c + (fwd(hi) - c) * factor))
        if mi > 1:
            how = f"Bonferroni-adjusted over {mi} tests of family {family[i]!r}"
        elif method[i] == "fixed-sequence":
            how = "fixed sequence: each test at the full level (unadjusted interval)"
        else:
            how = "unadjusted"
        rows.append((r.hypothesis_id, r.contrast, new_level, new_lo, new_hi, how))
    return pd.DataFrame(rows, columns=ADJUSTED_INTERVAL_COLUMNS)
