"""Multiplicity adjustment of p-values within a family of hypotheses.

Adjusted p-values let a reader apply the family-wise error rate directly: reject hypothesis
``i`` when its adjusted p-value is below the family's alpha. The methods follow R's
``p.adjust`` (Holm, Bonferroni, Hochberg) and add the hierarchical fixed-sequence procedure
used in confirmatory trials.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from studykit.errors import ModelError

__all__ = ["METHODS", "adjust_pvalues"]

logger = logging.getLogger(__name__)

#: Methods accepted by :func:`adjust_pvalues`.
METHODS = ("holm", "bonferroni", "hochberg", "fixed-sequence", "none")


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
