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
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats

from studykit.errors import ModelError

__all__ = [
    "DF_METHODS",
    "ALTERNATIVES",
    "satterthwaite_df",
    "f_test_ddf",
    "contrast_table",
    "type3_contrasts",
    "anova_table",
    "kenward_roger",
]

logger = logging.getLogger(__name__)

DF_METHODS = ("satterthwaite", "kenward-roger", "z")
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


def _pvalue_ci(
    est: np.ndarray, se: np.ndarray, df: np.ndarray, alpha: float, alternative: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    stat = est / se
    df = np.asarray(df, float)
    finite = np.isfinite(df)
    dff = np.where(finite, df, 1.0)
    # upper tail P(T > |t|): t distribution (Student) or normal when df is infinite
    sf = np.where(finite, special.stdtr(dff, -np.abs(stat)), special.ndtr(-np.abs(stat)))

    def quantile(prob: float) -> np.ndarray:
        return np.where(finite, special.stdtrit(dff, prob), special.ndtri(prob))

    if alternative == "two-sided":
        p = 2.0 * sf
        q = quantile(1 - alpha / 2)
        lo, hi = est - q * se, est + q * se
    elif alternative == "greater":
        p = np.where(stat >= 0, sf, 1 - sf)
        q = quantile(1 - alpha)
        lo, hi = est - q * se, np.full_like(est, np.inf)
    else:
        p = np.where(stat <= 0, sf, 1 - sf)
        q = quantile(1 - alpha)
        lo, hi = np.full_like(est, -np.inf), est + q * se
    return stat, np.minimum(p, 1.0), lo, hi


def contrast_table(
    result: Any,
    L: Any,
    *,
    names: Sequence[str] | None = None,
    df_method: str = "satterthwaite",
    alpha: float = 0.05,
    alternative: str = "two-sided",
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

    Returns
    -------
    pandas.DataFrame
        ``term, estimate, std_error, statistic, df, p_value, conf_low, conf_high,
        df_method, alternative``.
    """
    _check_choice("df_method", df_method, DF_METHODS)
    _check_choice("alternative", alternative, ALTERNATIVES)
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
    stat, p, lo, hi = _pvalue_ci(est, se, df, alpha, alternative)
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
