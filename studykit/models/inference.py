"""Small-sample inference for mixed models: Satterthwaite / Kenward-Roger df, t and F tests.

Works on any fitted result exposing ``beta``, ``vcov`` and ``contrast_df(L)`` (an
:class:`~studykit.models.lmm.LMMResult`, or a GLMM result whose ``contrast_df`` returns
``inf`` so tests are z tests). Kenward-Roger needs a result with a ``kenward_roger(L)``
method (REML linear mixed models).

Every table has the columns ``term, estimate, std_error, statistic, df, p_value, conf_low,
conf_high, df_method, alternative`` so tables from different models stack.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats

from studykit.errors import ModelError

__all__ = [
    "DF_METHODS",
    "ALTERNATIVES",
    "wald_test",
    "critical_value",
    "confidence_interval",
    "correlation_test",
    "fisher_interval",
    "satterthwaite_df",
    "f_test_ddf",
    "contrast_table",
    "type3_contrasts",
    "anova_table",
    "kenward_roger",
]

logger = logging.getLogger(__name__)

DF_METHODS = ("satterthwaite", "kenward-roger", "z")
#: Clip of |r| below 1 before Fisher's z transform (atanh is infinite at +-1).
_R_CLIP = 1e-15
ALTERNATIVES = ("two-sided", "greater", "less")
TABLE_COLUMNS = [
    "term",
    "estimate",
    "std_error",
    "statistic",
    "df",
    "p_value",
    "conf_low",
    "conf_high",
    "df_method",
    "alternative",
]


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ModelError(f"Invalid {name!r}: {value!r}. Expected one of {', '.join(allowed)}.")
    return value


def satterthwaite_df(
    L: np.ndarray, vcov: np.ndarray, jac: np.ndarray, avar: np.ndarray
) -> np.ndarray:
    """Satterthwaite degrees of freedom of each row of ``L`` (lmerTest's ``contest1D``).

    Parameters
    ----------
    L : numpy.ndarray
        ``k x p`` contrast matrix, one contrast per row.
    vcov : numpy.ndarray
        ``p x p`` covariance of the fixed effects.
    jac : numpy.ndarray
        ``r x p x p`` derivatives of ``vcov`` with respect to the ``r`` variance parameters.
    avar : numpy.ndarray
        ``r x r`` asymptotic covariance of the variance parameters (twice the inverse
        Hessian of the deviance).

    Returns
    -------
    numpy.ndarray
        One df per row.

    Examples
    --------
    A single variance parameter ``s`` with ``vcov = s^2`` and var(s) = s^2 / (2 nu) gives nu:

    >>> s, nu = 2.0, 10.0
    >>> satterthwaite_df(np.array([[1.0]]), np.array([[s**2]]), np.array([[[2 * s]]]),
    ...                  np.array([[s**2 / (2 * nu)]]))
    array([10.])

    Notes
    -----
    ``df = 2 (l' V l)^2 / (g' A g)`` with ``g_i = l' (dV / d phi_i) l`` (Satterthwaite 1946;
    Kuznetsova, Brockhoff & Christensen 2017, J Stat Softw 82(13)).
    """
    L = np.atleast_2d(L)
    var = np.einsum("ip,pq,iq->i", L, vcov, L)
    grad = np.einsum("ip,rpq,iq->ir", L, jac, L)
    denom = np.einsum("ir,rs,is->i", grad, avar, grad)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, 2.0 * var**2 / denom, np.inf)


def f_test_ddf(nu: np.ndarray, tol: float = 1e-8) -> float:
    """Denominator df of a multi-df F test from the df of its eigen-contrasts (lmerTest).

    Examples
    --------
    >>> f_test_ddf(np.array([76.0, 76.0]))
    76.0
    """
    nu = np.asarray(nu, float)
    if nu.size == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < tol):
        return float(nu.mean())
    if np.any(nu <= 2):
        return 2.0
    e = float(np.sum(nu / (nu - 2.0)))
    return 2.0 * e / (e - nu.size)


def _as_float(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=float)


def wald_test(
    estimate: Any, std_error: Any, df: Any, alternative: str = "two-sided"
) -> tuple[np.ndarray, np.ndarray]:
    """Wald statistic ``estimate / std_error`` and its p-value (t with ``df``, or z).

    THE p-value of studykit: every model (LMM, GLMM, GEE), the analysis, the correlation
    hypothesis and the power simulation compute p-values here.

    Parameters
    ----------
    estimate, std_error, df : array_like
        Broadcast together. ``df = inf`` gives a z test (standard normal).
    alternative : {"two-sided", "greater", "less"}
        ``"greater"``: H1 is estimate > 0 (upper tail); ``"less"``: estimate < 0.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Statistic and p-value. A standard error that is zero, negative or missing gives a
        missing (NaN) statistic and p-value.

    Examples
    --------
    >>> t, p = wald_test(2.0, 1.0, np.inf)
    >>> float(t), round(float(p), 4)
    (2.0, 0.0455)
    >>> round(float(wald_test(2.0, 1.0, 10.0, "greater")[1]), 5)  # R: pt(2, 10, lower=FALSE)
    0.03669

    Notes
    -----
    Two-sided ``p = 2 P(T > |t|)``; greater ``P(T > t)``; less ``P(T < t)``, with ``T`` Student's
    t on ``df`` degrees of freedom (``scipy.special.stdtr``) or standard normal when ``df`` is
    infinite (``scipy.special.ndtr``).
    """
    _check_choice("alternative", alternative, ALTERNATIVES)
    est, se, dfa = np.broadcast_arrays(_as_float(estimate), _as_float(std_error), _as_float(df))
    ok = np.isfinite(se) & (se > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = np.where(ok, est / np.where(ok, se, 1.0), np.nan)
    finite = np.isfinite(dfa)
    dff = np.where(finite, dfa, 1.0)

    def lower(x: np.ndarray) -> np.ndarray:  # P(T < x)
        return np.where(finite, special.stdtr(dff, x), special.ndtr(x))

    if alternative == "two-sided":
        p = np.minimum(1.0, 2.0 * lower(-np.abs(stat)))
    elif alternative == "greater":
        p = lower(-stat)
    else:
        p = lower(stat)
    return stat, p


def critical_value(df: Any, prob: float) -> np.ndarray:
    """The ``prob`` quantile of Student's t with ``df`` degrees of freedom (normal if infinite).

    Examples
    --------
    >>> round(float(critical_value(np.inf, 0.975)), 4)
    1.96
    """
    dfa = _as_float(df)
    finite = np.isfinite(dfa)
    return np.where(finite, special.stdtrit(np.where(finite, dfa, 1.0), prob), special.ndtri(prob))


def confidence_interval(
    estimate: Any, std_error: Any, df: Any, level: float, alternative: str = "two-sided"
) -> tuple[np.ndarray, np.ndarray]:
    """Wald confidence interval ``estimate -/+ q * std_error`` (t with ``df``, or normal).

    THE interval of studykit (unadjusted and multiplicity-adjusted ones alike).

    Parameters
    ----------
    estimate, std_error, df : array_like
        On the scale of the test (the log scale for rate ratios).
    level : float
        Confidence level, e.g. 0.95.
    alternative : {"two-sided", "greater", "less"}
        ``"two-sided"``: the two-sided interval at ``level``. ``"greater"``: the one-sided
        interval ``[lower, inf)`` at ``level``; ``"less"``: ``(-inf, upper]``.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Lower and upper limits.

    Examples
    --------
    >>> lo, hi = confidence_interval(10.0, 2.0, np.inf, 0.95)
    >>> round(float(lo), 3), round(float(hi), 3)
    (6.08, 13.92)
    >>> confidence_interval(10.0, 2.0, np.inf, 0.95, "greater")[1]
    array(inf)

    Notes
    -----
    Two-sided: ``q`` is the ``(1 + level) / 2`` quantile; one-sided: the ``level`` quantile.
    A two-sided interval at ``1 - 2 alpha`` excludes 0 on one side exactly when the one-sided
    test at ``alpha`` rejects in that direction.
    """
    _check_choice("alternative", alternative, ALTERNATIVES)
    if not 0 < level < 1:
        raise ModelError(f"Confidence level must be between 0 and 1, got {level!r}.")
    est, se, dfa = np.broadcast_arrays(_as_float(estimate), _as_float(std_error), _as_float(df))
    if alternative == "two-sided":
        q = critical_value(dfa, 0.5 + level / 2)
        return est - q * se, est + q * se
    q = critical_value(dfa, level)
    if alternative == "greater":
        return est - q * se, np.full(est.shape, np.inf)
    return np.full(est.shape, -np.inf), est + q * se


def correlation_test(
    r: float, n: int, *, alternative: str = "two-sided", level: float = 0.95
) -> dict[str, float]:
    """Test and Fisher-z interval of a Pearson correlation from ``n`` pairs.

    Returns
    -------
    dict
        ``estimate, std_error, statistic, df, p_value, conf_low, conf_high`` (a two-sided
        interval at ``level``).

    Examples
    --------
    >>> out = correlation_test(0.5, 20)  # R: 2 * pt(-0.5 * sqrt(18 / 0.75), 18); tanh(atanh(.5) -/+ qnorm(.975) / sqrt(17))
    >>> round(out["p_value"], 5), round(out["conf_low"], 4), round(out["conf_high"], 4)
    (0.02477, 0.0738, 0.7718)

    Notes
    -----
    ``t = r sqrt(n - 2) / sqrt(1 - r^2)`` on ``n - 2`` df (R's ``cor.test``); the interval is
    ``tanh(atanh(r) -/+ z_{(1 + level)/2} / sqrt(n - 3))`` (Fisher 1921), as ``cor.test``.
    """
    df = n - 2
    se = math.sqrt((1 - r * r) / df) if df > 0 else math.nan
    if se == 0:  # |r| = 1: the test statistic is infinite
        stat_v = math.copysign(math.inf, r)
        agrees = {"two-sided": True, "greater": r > 0, "less": r < 0}[alternative]
        p_v = 0.0 if agrees else 1.0
    else:
        stat, p = wald_test(r, se, df, alternative)
        stat_v, p_v = float(stat), float(p)
    lo, hi = fisher_interval(r, n, level)
    return {
        "estimate": r,
        "std_error": se,
        "statistic": stat_v,
        "df": float(df),
        "p_value": p_v,
        "conf_low": lo,
        "conf_high": hi,
    }


def fisher_interval(r: float, n: int, level: float) -> tuple[float, float]:
    """Two-sided Fisher-z confidence interval of a correlation ``r`` from ``n`` pairs.

    Examples
    --------
    >>> [round(x, 4) for x in fisher_interval(0.5, 20, 0.95)]
    [0.0738, 0.7718]
    """
    if n <= 3 or math.isnan(r):
        return math.nan, math.nan
    z = math.atanh(max(min(r, 1 - _R_CLIP), -1 + _R_CLIP))
    h = float(critical_value(np.inf, 0.5 + level / 2)) / math.sqrt(n - 3)
    return math.tanh(z - h), math.tanh(z + h)


def contrast_table(
    result: Any,
    L: Any,
    *,
    names: Sequence[str] | None = None,
    df_method: str = "satterthwaite",
    alpha: float = 0.05,
    alternative: str = "two-sided",
    interval: str | None = None,
) -> pd.DataFrame:
    """t (or z) tests of linear contrasts ``L @ beta``, one row per contrast.

    Parameters
    ----------
    result : fitted model
        Exposes ``beta``, ``vcov``, ``contrast_df(L)`` (and ``kenward_roger(L)`` for KR).
    L : array_like
        ``k x p`` (or length ``p``) contrast weights over ``result.columns``.
    names : sequence of str, optional
        Contrast labels (default ``c1, c2, ...``).
    df_method : {"satterthwaite", "kenward-roger", "z"}
        Denominator df: Satterthwaite (lmerTest), Kenward-Roger (pbkrtest; REML fits; the
        standard error is then the adjusted one), or ``z`` (normal, df = inf).
    alpha : float
        1 - confidence level.
    alternative : {"two-sided", "greater", "less"}
        Alternative hypothesis relative to 0; one-sided tests get one-sided intervals.
    interval : {"two-sided", "greater", "less"}, optional
        Sidedness of the interval at level ``1 - alpha`` when it should differ from the test
        (e.g. a one-sided test at alpha reported with its two-sided ``1 - 2 alpha`` interval).

    Returns
    -------
    pandas.DataFrame
        ``term, estimate, std_error, statistic, df, p_value, conf_low, conf_high,
        df_method, alternative``.
    """
    _check_choice("df_method", df_method, DF_METHODS)
    _check_choice("alternative", alternative, ALTERNATIVES)
    interval = (
        alternative if interval is None else _check_choice("interval", interval, ALTERNATIVES)
    )
    if not 0 < alpha < 1:
        raise ModelError(f"alpha must be between 0 and 1, got {alpha!r}.")
    beta = np.asarray(result.beta, float)
    L = np.atleast_2d(np.asarray(L, float))
    if L.shape[1] != beta.size:
        raise ModelError(
            f"Contrast has {L.shape[1]} weights but the model has {beta.size} fixed effects "
            f"({list(result.columns)})."
        )
    names = [f"c{i + 1}" for i in range(L.shape[0])] if names is None else list(names)
    if len(names) != L.shape[0]:
        raise ModelError(f"{len(names)} names for {L.shape[0]} contrasts.")
    est = L @ beta
    if df_method == "kenward-roger":
        if not hasattr(result, "kenward_roger"):
            raise ModelError("Kenward-Roger df are available for linear mixed models only.")
        var, df = result.kenward_roger(L)
        se = np.sqrt(var)
    else:
        se = np.sqrt(np.einsum("ip,pq,iq->i", L, result.vcov, L))
        if df_method == "z":
            df = np.full(L.shape[0], np.inf)
        else:
            df = np.array([result.contrast_df(row) for row in L], float)
    stat, p = wald_test(est, se, df, alternative)
    lo, hi = confidence_interval(est, se, df, 1 - alpha, interval)
    return pd.DataFrame(
        {
            "term": names,
            "estimate": est,
            "std_error": se,
            "statistic": stat,
            "df": df,
            "p_value": p,
            "conf_low": lo,
            "conf_high": hi,
            "df_method": df_method,
            "alternative": alternative,
        }
    )


def _sum_coded(design: Any, grid: pd.DataFrame) -> tuple[np.ndarray, dict[str, list[int]]]:
    """Design matrix of ``grid`` with sum-to-zero (``contr.sum``) coding of every factor."""
    n = len(grid)
    coded: dict[str, np.ndarray] = {}
    for var, lv in design.levels.items():
        vals = grid[var].astype(str).to_numpy()
        k = len(lv)
        cols = np.zeros((n, k - 1))
        for j, lev in enumerate(lv):
            if j < k - 1:
                cols[vals == lev, j] = 1.0
            else:
                cols[vals == lev, :] = -1.0
        coded[var] = cols
    for var in design.numeric:
        coded[var] = grid[var].to_numpy(float)[:, None]
    blocks = [np.ones((n, 1))] if design.intercept else []
    index: dict[str, list[int]] = {}
    ncol = len(blocks)
    for label, vars_ in design.term_vars.items():
        mats = [coded[v] for v in vars_]
        out = mats[0]
        for mat in mats[1:]:  # first variable varies fastest
            out = (mat[:, :, None] * out[:, None, :]).reshape(n, -1)
        blocks.append(out)
        index[label] = list(range(ncol, ncol + out.shape[1]))
        ncol += out.shape[1]
    return np.column_stack(blocks), index


def type3_contrasts(design: Any) -> dict[str, np.ndarray]:
    """Type III hypothesis matrices for every term of a design (any factor coding).

    The hypothesis of a term is "its coefficients are zero under sum-to-zero coding of every
    factor", written in the model's own (treatment) coding, so the F tests are those of
    lmerTest's / SAS's Type III tables. Numeric covariates are not centered.

    Examples
    --------
    >>> from studykit.models.design import build_design
    >>> df = pd.DataFrame({"a": ["p", "k"] * 3, "b": ["x", "x", "y", "y", "z", "z"]})
    >>> d = build_design(df, ["a", "b", "a:b"], levels={"a": ["p", "k"], "b": ["x", "y", "z"]})
    >>> L = type3_contrasts(d)["a"]
    >>> (np.round(L / L[0, 1], 3) + 0.0).tolist()  # the arm difference averaged over b
    [[0.0, 1.0, 0.0, 0.0, 0.333, 0.333]]
    """
    cat = list(design.levels)
    num = list(design.numeric)
    combos = list(itertools.product(*[design.levels[v] for v in cat], *[[0.0, 1.0] for _ in num]))
    grid = pd.DataFrame(combos, columns=cat + num)
    X_trt = design.matrix_for(grid)
    X_sum, index = _sum_coded(design, grid)
    C, *_ = np.linalg.lstsq(X_sum, X_trt, rcond=None)
    return {term: C[cols, :] for term, cols in index.items()}


def anova_table(result: Any, *, type: int = 3, df_method: str = "satterthwaite") -> pd.DataFrame:
    """Type III F tests for every fixed term (lmerTest's ``anova(fit, type = 3)``).

    Returns
    -------
    pandas.DataFrame
        ``term, sum_sq, mean_sq, num_df, den_df, statistic, p_value, df_method``, where
        ``statistic`` is F and the sums of squares are ``F * sigma^2`` scaled as lmerTest.

    Notes
    -----
    For Satterthwaite the denominator df follow lmerTest's ``contestMD``: the contrast is
    rotated to the eigenvectors of ``L V L'``, each gets its Satterthwaite df ``nu_i`` and
    ``ddf = 2E / (E - q)`` with ``E = sum nu_i / (nu_i - 2)``. Kenward-Roger uses
    pbkrtest's scaled F statistic and df. ``z`` gives a chi-square/q statistic with
    infinite denominator df.
    """
    if type != 3:
        raise ModelError(f"Only Type III tests are available (type=3), got type={type!r}.")
    _check_choice("df_method", df_method, DF_METHODS)
    beta = np.asarray(result.beta, float)
    V = np.asarray(result.vcov, float)
    sigma2 = float(getattr(result, "sigma", 1.0)) ** 2
    rows = []
    for term, L in type3_contrasts(result.design).items():
        q = L.shape[0]
        if df_method == "kenward-roger":
            F, ddf, q = _kr_ftest(result, L)
        else:
            VL = L @ V @ L.T
            d, P = np.linalg.eigh(VL)
            order = np.argsort(d)[::-1]
            d, P = d[order], P[:, order]
            pos = d > max(np.finfo(float).eps ** 0.5 * d[0], 0)
            q = int(pos.sum())
            PtL = P[:, :q].T @ L
            F = float(np.sum((PtL @ beta) ** 2 / d[:q]) / q)
            if df_method == "z":
                ddf = np.inf
            else:
                nu = np.array([result.contrast_df(row) for row in PtL])
                ddf = f_test_ddf(nu)
        p = stats.f.sf(F, q, ddf) if np.isfinite(ddf) else stats.chi2.sf(F * q, q)
        rows.append((term, F * sigma2 * q, F * sigma2, q, ddf, F, p, df_method))
    return pd.DataFrame(
        rows,
        columns=[
            "term",
            "sum_sq",
            "mean_sq",
            "num_df",
            "den_df",
            "statistic",
            "p_value",
            "df_method",
        ],
    )


# ----------------------------------------------------------------------------------------
# Kenward-Roger
# ----------------------------------------------------------------------------------------


def kenward_roger(result: Any, L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kenward-Roger adjusted variances and df of the contrasts ``L @ beta`` (REML only).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Adjusted variance of each row's estimate and its KR df.
    """
    L = np.atleast_2d(L)
    var = np.empty(L.shape[0])
    df = np.empty(L.shape[0])
    for i, row in enumerate(L):
        F, ddf, _q, v = _kr_core(result, row[None, :])
        var[i] = v
        df[i] = ddf
    return var, df


def _kr_ftest(result: Any, L: np.ndarray) -> tuple[float, float, int]:
    F, ddf, q, _ = _kr_core(result, L)
    return F, ddf, q


def _kr_core(result: Any, L: np.ndarray) -> tuple[float, float, int, float]:
    parts = getattr(result, "_kr_parts", None)
    if parts is None or not getattr(result, "reml", False):
        raise ModelError(
            "Kenward-Roger df need a REML linear mixed model (pbkrtest refuses ML fits too)."
        )
    Phi, PhiA, P, W = parts()
    beta = np.asarray(result.beta, float)
    # rank / q
    q = int(np.linalg.matrix_rank(L))
    Theta = L.T @ np.linalg.solve(L @ Phi @ L.T, L)
    A1 = 0.0
    A2 = 0.0
    r = len(P)
    TP = [Theta @ Phi @ P[i] @ Phi for i in range(r)]
    for i in range(r):
        for j in range(r):
            A1 += W[i, j] * np.trace(TP[i]) * np.trace(TP[j])
            A2 += W[i, j] * np.trace(TP[i] @ TP[j])
    B = (A1 + 6.0 * A2) / (2.0 * q)
    g = ((q + 1.0) * A1 - (q + 4.0) * A2) / ((q + 2.0) * A2)
    c1 = g / (3.0 * q + 2.0 * (1.0 - g))
    c2 = (q - g) / (3.0 * q + 2.0 * (1.0 - g))
    c3 = (q + 2.0 - g) / (3.0 * q + 2.0 * (1.0 - g))
    EF = (1.0 - A2 / q) ** -1
    VF = (2.0 / q) * (1.0 + c1 * B) / ((1.0 - c2 * B) ** 2 * (1.0 - c3 * B))
    rho = VF / (2.0 * EF**2)
    m = 4.0 + (q + 2.0) / (q * rho - 1.0)
    lam = m / (EF * (m - 2.0))
    Lb = L @ beta
    Fstat = float(Lb @ np.linalg.solve(L @ PhiA @ L.T, Lb)) / q
    v = float((L @ PhiA @ L.T)[0, 0]) if L.shape[0] == 1 else float("nan")
    return lam * Fstat, float(m), q, v
