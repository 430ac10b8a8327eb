r"""Cumulative link mixed models for ordinal outcomes (R's ``ordinal::clmm``).

An ordinal rating with categories :math:`1 < 2 < \dots < J` (the Karolinska Sleepiness
Scale 1-9, dream vividness 1-5) is modelled through its cumulative probabilities

.. math::

    P(Y_{ij} \le k \mid b_i) = F(\theta_k - x_{ij}^\top \beta - b_i), \qquad
    b_i \sim N(0, \sigma^2), \qquad k = 1, \dots, J - 1,

with flexible (free, increasing) thresholds :math:`\theta_k`, no intercept in :math:`x`, a
random intercept per group (participant) and :math:`F` the logistic (``link="logit"``:
proportional odds) or standard normal (``"probit"``) distribution function. A positive
:math:`\beta` shifts ratings up. The marginal likelihood integrates each :math:`b_i` out by the
Laplace approximation (``nagq=1``, ``clmm``'s default) or adaptive Gauss-Hermite quadrature
(``nagq`` nodes; ``clmm(..., nAGQ = nagq)``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, special

from studykit.errors import ModelError
from studykit.models import fitwarn
from studykit.models.design import Design, build_design
from studykit.models.emmeans import emmeans_matrix
from studykit.models.inference import contrast_table
from studykit.models.quadrature import MODE_MAXIT, GaussHermite, check_nagq, group_modes
from studykit.models.summary import ResultDisplay
from studykit.models.wald import WaldZTests

__all__ = ["CLMMResult", "fit_clmm", "LINKS"]

logger = logging.getLogger(__name__)

LINKS = ("logit", "probit")
_SINGULAR_TOL = 1e-4
PROB_FLOOR = 1e-300  # category probabilities are floored here before the log
# finite differences of the marginal log-likelihood, steps relative to max(1, |par|):
# ~eps^(1/3) for central first differences, ~eps^(1/4) for second differences
FD_GRAD_STEP = 6e-6
FD_HESS_STEP = 1e-4
# the optimiser: BFGS on unconstrained parameters, then Newton steps on the natural ones
BFGS_OPTIONS = {"gtol": 1e-7, "maxiter": 2000}
NEWTON_POLISH_STEPS = 5  # Newton steps after BFGS
NEWTON_POLISH_TOL = 1e-8  # a polish step smaller than this (every parameter) is the last
POLISH_DECREASE_TOL = 1e-10  # a polish step may lower the log-likelihood this much (rounding)
NEWTON_STEP_TOL = 1e-4  # converged: the remaining Newton step is below this in every parameter
_BIG = 1e3  # stands in for +/- infinity in the link functions (F = 0 or 1 exactly there)


# ------------------------------------------------------------------------------------------
# the link: distribution function, density and the density's derivative
# ------------------------------------------------------------------------------------------
def _link_parts(link: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """F(x), 1 - F(x), f(x), f'(x)."""
    if link == "logit":
        F = special.expit(x)
        S = special.expit(-x)
        f = F * S
        return F, S, f, f * (S - F)
    F = special.ndtr(x)
    S = special.ndtr(-x)
    f = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return F, S, f, -x * f


class _Obs:
    """Per-observation log-likelihood pieces as functions of eta (data sorted by group)."""

    def __init__(
        self,
        y: np.ndarray,
        X: np.ndarray,
        gidx: np.ndarray,
        starts: np.ndarray,
        ncat: int,
        link: str,
    ):
        self.y = y  # category index 0..J-1
        self.X = X
        self.gidx = gidx
        self.starts = starts
        self.ncat = ncat
        self.link = link

    def gsum(self, a: np.ndarray) -> np.ndarray:
        return np.add.reduceat(a, self.starts, axis=0)

    def bounds(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ext = np.r_[-_BIG, theta, _BIG]
        return ext[self.y + 1], ext[self.y]  # upper, lower threshold per observation

    def pieces(
        self, upper: np.ndarray, lower: np.ndarray, eta: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """log p, d log p / d eta, w = -d2 log p / d eta2 (eta may have a trailing node axis)."""
        a = upper - eta
        c = lower - eta
        Fa, Sa, fa, dfa = _link_parts(self.link, a)
        Fc, Sc, fc, dfc = _link_parts(self.link, c)
        # upper-tail differences are accurate where both bounds are above the median
        p = np.where(c > 0, Sc - Sa, Fa - Fc)
        p = np.maximum(p, PROB_FLOOR)
        d1 = -(fa - fc) / p
        w = -((dfa - dfc) / p - d1 * d1)
        return np.log(p), d1, w


@dataclass
class _Problem:
    obs: _Obs
    quadrature: GaussHermite  # the adaptive rule (one node: Laplace)
    ntheta: int
    u: np.ndarray | None = None
    n_eval: int = 0
    mode_cap_hit: bool = False  # the conditional-mode iteration reached MODE_MAXIT

    @property
    def p(self) -> int:
        return self.obs.X.shape[1]

    def unpack(self, par: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        k = self.ntheta
        return par[:k], par[k : k + self.p], float(par[-1])

    def modes(self, upper: np.ndarray, lower: np.ndarray, eta0: np.ndarray, s: float) -> np.ndarray:
        """Conditional modes of the spherical random effects, all groups at once (Newton)."""
        o = self.obs

        def g(uu: np.ndarray) -> np.ndarray:
            lp, _, _ = o.pieces(upper, lower, eta0 + s * uu[o.gidx])
            return o.gsum(lp) - 0.5 * uu**2

        def derivatives(uu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            _, d1, w = o.pieces(upper, lower, eta0 + s * uu[o.gidx])
            return s * o.gsum(d1) - uu, s * s * o.gsum(w) + 1.0

        u0 = np.zeros(len(o.starts)) if self.u is None else self.u
        u, capped = group_modes(g, derivatives, u0)
        self.mode_cap_hit |= capped
        return u

    def loglik(self, par: np.ndarray) -> float:
        """Laplace / adaptive Gauss-Hermite marginal log-likelihood (-inf if thresholds disorder)."""
        self.n_eval += 1
        theta, beta, s = self.unpack(par)
        if np.any(np.diff(theta) <= 0):
            return -np.inf
        o = self.obs
        upper, lower = o.bounds(theta)
        eta0 = o.X @ beta
        u = self.modes(upper, lower, eta0, s)
        self.u = u
        lp, _, w = o.pieces(upper, lower, eta0 + s * u[o.gidx])
        H = s * s * o.gsum(w) + 1.0
        rule = self.quadrature
        if rule.laplace:
            return float(np.sum(o.gsum(lp) - 0.5 * u**2 - 0.5 * np.log(H)))
        uk, tau = rule.points(u, H)
        lpk, _, _ = o.pieces(upper[:, None], lower[:, None], eta0[:, None] + s * uk[o.gidx])
        ll_g, _ = rule.integrate(o.gsum(lpk) - 0.5 * uk**2, tau)
        return float(np.sum(ll_g))


def _fd_gradient(prob: _Problem, par: np.ndarray, f0: float) -> np.ndarray:
    """Central differences of the log-likelihood (steps ~ eps^(1/3))."""
    g = np.empty_like(par)
    u0 = None if prob.u is None else prob.u.copy()
    for j in range(len(par)):
        h = FD_GRAD_STEP * max(1.0, abs(par[j]))
        e = np.zeros_like(par)
        e[j] = h
        prob.u = u0
        fp = prob.loglik(par + e)
        prob.u = u0
        fm = prob.loglik(par - e)
        g[j] = (fp - fm) / (2.0 * h)
    prob.u = u0
    return g


def _fd_hessian(prob: _Problem, par: np.ndarray) -> np.ndarray:
    """Hessian of the log-likelihood by second differences (steps ~ eps^(1/4))."""
    n = len(par)
    u0 = None if prob.u is None else prob.u.copy()
    h = FD_HESS_STEP * np.maximum(1.0, np.abs(par))

    def f(x: np.ndarray) -> float:
        prob.u = u0
        return prob.loglik(x)

    f0 = f(par)
    H = np.empty((n, n))
    fp = np.empty(n)
    fm = np.empty(n)
    for i in range(n):
        e = np.zeros(n)
        e[i] = h[i]
        fp[i], fm[i] = f(par + e), f(par - e)
        H[i, i] = (fp[i] - 2.0 * f0 + fm[i]) / h[i] ** 2
    for i in range(n):
        for j in range(i + 1, n):
            ei = np.zeros(n)
            ej = np.zeros(n)
            ei[i], ej[j] = h[i], h[j]
            v = (f(par + ei + ej) - f(par + ei - ej) - f(par - ei + ej) + f(par - ei - ej)) / (
                4.0 * h[i] * h[j]
            )
            H[i, j] = H[j, i] = v
    prob.u = u0
    return H


# ------------------------------------------------------------------------------------------
# result
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _LatentParameters(WaldZTests):
    """Thresholds and coefficients together, for contrasts that involve both."""

    beta: np.ndarray
    vcov: np.ndarray
    columns: list[str]


@dataclass(frozen=True, eq=False, repr=False)
class CLMMResult(WaldZTests, ResultDisplay):
    """A fitted cumulative link mixed model.

    Attributes
    ----------
    columns : list of str
        Names of the regression coefficients (lme4/ordinal style, no intercept).
    design : Design
        The fixed-effects design (no intercept: the thresholds take its place).
    beta, vcov : numpy.ndarray
        Regression coefficients (latent scale; positive = higher ratings) and their covariance.
    thresholds : pandas.Series
        Threshold estimates, indexed ``"1|2", "2|3", ...``.
    vcov_all : pandas.DataFrame
        Covariance of thresholds, coefficients and ``log_sd_group`` (inverse negative Hessian;
        the SD on the log scale, as ``vcov(clmm_fit)``).
    sd_group : float
        Random-intercept SD on the latent scale.
    response_levels : list of str
        Ordered categories of the response, lowest first.
    loglik, aic, bic : float
    df_loglik : int
        Number of parameters (thresholds, coefficients, SD).
    nobs, ngroups : int
    converged, singular : bool
    warnings : list of str
    family, link : str
        ``"ordinal"`` and ``"logit"`` / ``"probit"``.
    nagq : int
        1 = Laplace, more = adaptive Gauss-Hermite nodes.
    ranef : pandas.Series
        Conditional modes of the random intercepts.
    formula : str or None
    """

    columns: list[str]
    design: Design
    beta: np.ndarray
    vcov: np.ndarray
    thresholds: pd.Series
    vcov_all: pd.DataFrame
    sd_group: float
    response_levels: list[str]
    loglik: float
    aic: float
    bic: float
    df_loglik: int
    nobs: int
    ngroups: int
    converged: bool
    singular: bool
    warnings: list[str]
    link: str
    nagq: int
    outcome: str
    group: str
    ranef: pd.Series
    covariate_means: dict[str, float] = field(default_factory=dict)
    family: str = "ordinal"
    n_excluded: int = 0
    n_eval: int = 0
    formula: str | None = None

    @property
    def method(self) -> str:
        """``"Laplace"`` or ``"AGQ(nagq)"``."""
        return "Laplace" if self.nagq == 1 else f"AGQ({self.nagq})"

    def threshold_table(self) -> pd.DataFrame:
        """Thresholds with standard errors and z values (``summary(clmm)``'s Threshold coefficients)."""
        k = len(self.thresholds)
        se = np.sqrt(np.diag(self.vcov_all.to_numpy())[:k])
        est = self.thresholds.to_numpy(float)
        return pd.DataFrame(
            {"term": list(self.thresholds.index), "estimate": est, "std_error": se,
             "statistic": est / se}
        )  # fmt: skip

    def emmeans(
        self,
        specs: str | Sequence[str],
        *,
        at: Mapping[str, Any] | None = None,
        df_method: str | None = None,
        alpha: float = 0.05,
        type: str = "link",
    ) -> pd.DataFrame:
        """Estimated marginal means on the latent scale (R: ``emmeans(clmm_fit, ~ specs)``).

        As emmeans' default ``mode = "latent"`` for ordinal models: a cell's mean is
        ``x' beta - mean(thresholds)``, averaged over the other factors with equal weights, with
        Wald z intervals (``df = inf``). Differences between cells are differences of
        ``x' beta``.

        Parameters
        ----------
        specs : str or sequence of str
            Factor(s) whose cells get a marginal mean.
        at : mapping, optional
            Values to hold variables at (see :func:`studykit.models.emmeans.reference_grid`).
        df_method : {None, "z"}
        alpha : float
            1 - confidence level.
        type : {"link", "latent"}
            Both mean the latent scale (probabilities of each category are not offered).

        Returns
        -------
        pandas.DataFrame
            The spec columns, then ``term, estimate, std_error, statistic, df, p_value,
            conf_low, conf_high, df_method, alternative, scale`` (``scale`` = ``"latent"``).
        """
        if df_method not in (None, "z") or type not in ("link", "latent"):
            raise ModelError(
                "Marginal means of an ordinal model are on the latent scale with z tests "
                f"(df_method='z', type='latent'); got df_method={df_method!r}, type={type!r}."
            )
        specs_l = [specs] if isinstance(specs, str) else list(specs)
        cells, L = emmeans_matrix(self, specs_l, at=at)
        k = len(self.thresholds)
        L_all = np.hstack([np.full((L.shape[0], k), -1.0 / k), L])
        latent = _LatentParameters(
            beta=np.r_[self.thresholds.to_numpy(float), self.beta],
            vcov=self.vcov_all.to_numpy()[:-1, :-1],
            columns=list(self.thresholds.index) + list(self.columns),
        )
        names = [
            ", ".join(f"{s}={v}" for s, v in zip(specs_l, cell, strict=True))
            for cell in cells.itertuples(index=False)
        ]
        tab = contrast_table(latent, L_all, names=names, df_method="z", alpha=alpha)
        out = pd.concat([cells.reset_index(drop=True), tab], axis=1)
        out["scale"] = "latent"
        return out

    def varcorr(self) -> pd.DataFrame:
        """The random-intercept variance as ``as.data.frame(VarCorr(fit))``."""
        return pd.DataFrame(
            [(self.group, "(Intercept)", None, self.sd_group**2, self.sd_group)],
            columns=["group", "var1", "var2", "vcov", "sdcor"],
        )


# ------------------------------------------------------------------------------------------
# fitting
# ------------------------------------------------------------------------------------------
def _response_codes(
    values: pd.Series, outcome: str, response_levels: Sequence[object] | None
) -> tuple[np.ndarray, list[str], list[str]]:
    """Category index per row, the categories used (lowest first) and the empty ones dropped."""
    if response_levels is not None:
        levels = [str(x) for x in response_levels]
        if len(set(levels)) != len(levels):
            raise ModelError(f"response_levels repeat a value: {levels}.")
        text = values.astype(str)
    elif isinstance(values.dtype, pd.CategoricalDtype):
        levels = [str(c) for c in values.cat.categories]
        text = values.astype(str)
    elif pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        nums = values.to_numpy(dtype=float)
        uniq = np.unique(nums)
        levels = [_num_label(v) for v in uniq]
        text = pd.Series([_num_label(v) for v in nums], index=values.index)
    else:
        levels = sorted({str(x) for x in values})
        text = values.astype(str)
    unknown = sorted(set(text) - set(levels))
    if unknown:
        raise ModelError(
            f"Outcome {outcome!r} has values {unknown[:5]} that are not among its ordered "
            f"categories {levels}; give response_levels= with every category, lowest first."
        )
    present = set(text)
    empty = [lv for lv in levels if lv not in present]
    used = [lv for lv in levels if lv in present]
    if len(used) < 3:
        raise ModelError(
            f"Outcome {outcome!r} has {len(used)} observed categories ({used}); a cumulative link "
            "model needs at least 3 (use a binomial GLMM for a binary outcome)."
        )
    index = {lv: i for i, lv in enumerate(used)}
    return text.map(index).to_numpy(dtype=np.int64), used, empty


def _num_label(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def fit_clmm(
    data: pd.DataFrame,
    outcome: str,
    fixed: Sequence[str],
    *,
    group: str,
    link: str = "logit",
    nagq: int = 1,
    levels: Mapping[str, Sequence[str]] | None = None,
    response_levels: Sequence[object] | None = None,
) -> CLMMResult:
    """Fit a cumulative link mixed model with flexible thresholds and a random intercept.

    Parameters
    ----------
    data : pandas.DataFrame
        One row per rating; rows with a missing value in a model variable are dropped and
        counted. Not modified.
    outcome : str
        Ordinal response column: numbers (KSS 1-9), text, or an ordered ``Categorical``.
    fixed : sequence of str
        Regression terms, e.g. ``["treatment", "day", "treatment:day"]`` (no intercept: the
        thresholds play its part).
    group : str
        Column identifying the groups (participants) that get a random intercept.
    link : {"logit", "probit"}
        Cumulative logit (proportional odds) or probit.
    nagq : int, default 1
        1 = Laplace approximation; 2-100 = adaptive Gauss-Hermite nodes.
    levels : mapping, optional
        Factor -> levels for the predictors, reference first.
    response_levels : sequence, optional
        Ordered response categories, lowest first (default: a ``Categorical``'s order, else the
        sorted values; numbers sort numerically). Categories never observed are dropped with a
        warning (their thresholds are not estimable).

    Returns
    -------
    CLMMResult

    Raises
    ------
    ModelError
        Fewer than 3 observed categories, values outside ``response_levels``, unknown link,
        invalid ``nagq``, fewer than two groups or a rank-deficient design.

    Examples
    --------
    Simulated ratings (not a real study):

    >>> rng = np.random.default_rng(4)
    >>> df = pd.DataFrame({"id": np.repeat(np.arange(40), 4), "arm": np.tile(["p", "k"], 80)})
    >>> latent = 0.9 * (df["arm"] == "k") + rng.normal(0, 1, 40)[df["id"]] + rng.logistic(size=160)
    >>> df["kss"] = np.digitize(latent, [-1.0, 0.0, 1.0, 2.0]) + 1
    >>> fit = fit_clmm(df, "kss", ["arm"], group="id", levels={"arm": ["p", "k"]})
    >>> fit.columns, list(fit.thresholds.index)
    (['armk'], ['1|2', '2|3', '3|4', '4|5'])
    >>> bool(fit.coef_table()["estimate"].iloc[0] > 0)
    True

    Notes
    -----
    The model and its parameterization are ``ordinal::clmm``'s (Christensen 2019, *Cumulative
    link models for ordinal regression with the R package ordinal*):
    :math:`P(Y \\le k) = F(\\theta_k - x^\\top\\beta - b)`. For group :math:`i` with spherical
    effect :math:`u` (:math:`b = \\sigma u`), :math:`g_i(u) = \\sum_j \\log P(y_{ij} \\mid u) -
    u^2/2`; Laplace gives :math:`\\log L_i = g_i(\\hat u_i) - \\tfrac12 \\log H_i` with
    :math:`H_i = -g_i''(\\hat u_i)` (exact second derivative), adaptive Gauss-Hermite evaluates
    :math:`\\int e^{g_i}` at :math:`\\hat u_i + \\sqrt{2/H_i}\\,x_k`. The conditional modes of all
    groups are found together by damped Newton steps; the marginal log-likelihood is maximised
    by BFGS over (thresholds as first threshold + log gaps, coefficients, SD) with central-
    difference gradients, then polished by Newton steps. Standard errors come from the inverse
    of the negative Hessian over (thresholds, coefficients, SD), by second differences (as
    ``clmm``, whose Hessian is numerical too). Tests are Wald z tests.
    """
    if not isinstance(data, pd.DataFrame):
        raise ModelError(f"data must be a pandas DataFrame; got {type(data).__name__}.")
    if link not in LINKS:
        raise ModelError(f"Invalid link {link!r}. Expected one of {list(LINKS)}.")
    nagq = check_nagq(nagq, example=10)
    fixed = [fixed] if isinstance(fixed, str) else [str(t) for t in fixed]
    variables = [outcome, group] + [v for t in fixed for v in t.split(":")]
    missing_cols = [c for c in dict.fromkeys(variables) if c not in data.columns]
    if missing_cols:
        raise ModelError(
            f"Model variables {missing_cols[:10]} are not columns of the data. Columns: "
            f"{', '.join(map(str, data.columns[:30]))}."
        )
    sub = data.loc[:, list(dict.fromkeys(variables))]
    complete = sub.notna().all(axis=1).to_numpy()
    warn: list[str] = []
    n_excluded = int((~complete).sum())
    if n_excluded:
        bad = [c for c in sub.columns if sub[c].isna().any()]
        warn.append(f"{n_excluded} of {len(sub)} rows excluded for missing values in {bad[:10]}.")
        sub = sub.loc[complete]
    if len(sub) == 0:
        raise ModelError("No complete rows to fit the model to.")
    y, cats, empty = _response_codes(sub[outcome], outcome, response_levels)
    if empty:
        warn.append(
            f"Response categories {empty} of {outcome!r} are never observed: dropped (their "
            "thresholds cannot be estimated)."
        )
    J = len(cats)
    design = build_design(sub, fixed, levels=levels, intercept=False)
    X = design.X
    n, p = X.shape
    if p and np.linalg.matrix_rank(np.column_stack([np.ones(n), X])) < p + 1:
        raise ModelError(
            f"The design is rank deficient (columns {design.columns} with the thresholds): some "
            "terms are confounded or a level combination is empty."
        )
    codes, uniques = pd.factorize(sub[group], sort=True)
    G = len(uniques)
    if G < 2:
        raise ModelError(f"Group column {group!r} has {G} distinct value(s); need at least two.")
    order = np.argsort(codes, kind="stable")
    cs = codes[order]
    starts = np.flatnonzero(np.r_[True, cs[1:] != cs[:-1]])
    obs = _Obs(y[order], X[order], cs, starts, J, link)
    prob = _Problem(obs, GaussHermite.rule(nagq), J - 1)

    # start: thresholds at the marginal cumulative proportions, beta 0, SD 1
    cum = np.cumsum(np.bincount(y, minlength=J))[:-1] / n
    q = special.logit(cum) if link == "logit" else special.ndtri(cum)
    par0 = np.r_[q, np.zeros(p), 1.0]

    def to_par(z: np.ndarray) -> np.ndarray:
        th = z[0] + np.r_[0.0, np.cumsum(np.exp(z[1 : J - 1]))]
        return np.r_[th, z[J - 1 :]]

    def to_z(par: np.ndarray) -> np.ndarray:
        th = par[: J - 1]
        return np.r_[th[0], np.log(np.diff(th)), par[J - 1 :]]

    def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
        par = to_par(z)
        f0 = prob.loglik(par)
        if not np.isfinite(f0):
            return np.inf, np.zeros_like(z)
        g_par = _fd_gradient(prob, par, f0)
        # chain rule: theta_k = z0 + sum_{m<=k} exp(z_m)
        gz = g_par.copy()
        gth = g_par[: J - 1]
        gz[0] = gth.sum()
        tail = np.cumsum(gth[::-1])[::-1]  # sum_{k>=m} g_theta_k
        gz[1 : J - 1] = tail[1:] * np.exp(z[1 : J - 1])
        return -f0, -gz

    res = optimize.minimize(fun, to_z(par0), jac=True, method="BFGS", options=BFGS_OPTIONS)
    par = to_par(res.x)
    f0 = prob.loglik(par)
    # Newton polish on the natural parameters
    H = _fd_hessian(prob, par)
    for _ in range(NEWTON_POLISH_STEPS):
        g = _fd_gradient(prob, par, f0)
        try:
            step = np.linalg.solve(-H, g)
        except np.linalg.LinAlgError:
            break
        trial = par + step
        f1 = prob.loglik(trial)
        if not (np.isfinite(f1) and f1 >= f0 - POLISH_DECREASE_TOL):
            prob.loglik(par)
            break
        par, f0 = trial, f1
        if np.max(np.abs(step)) < NEWTON_POLISH_TOL:
            break
        H = _fd_hessian(prob, par)
    prob.loglik(par)  # conditional modes at the optimum
    u = prob.u.copy() if prob.u is not None else np.zeros(G)
    if par[-1] < 0:  # the likelihood is symmetric in the SD's sign
        par[-1] = -par[-1]
        u = -u
        H = _fd_hessian(prob, par)
    grad = _fd_gradient(prob, par, f0)
    sd = float(par[-1])
    singular = sd < _SINGULAR_TOL
    info = -H
    k = J - 1 + p + 1
    try:
        np.linalg.cholesky(info)
        cov = np.linalg.inv(info)
        pd_ok = True
    except np.linalg.LinAlgError:
        pd_ok = False
        cov = np.full((k, k), np.nan)
    if singular:
        try:
            cov_fixed = np.linalg.inv(info[:-1, :-1])  # the SD at its bound: condition on it
        except np.linalg.LinAlgError:
            cov_fixed = np.full((k - 1, k - 1), np.nan)
        cov = np.full((k, k), np.nan)
        cov[:-1, :-1] = cov_fixed
    try:
        newton = np.linalg.solve(info, grad) if pd_ok else np.full(k, np.inf)
    except np.linalg.LinAlgError:
        newton = np.full(k, np.inf)
    free = newton[: k - int(singular)]
    converged = bool((pd_ok or singular) and np.max(np.abs(free)) < NEWTON_STEP_TOL)
    if not converged:
        warn.append(
            fitwarn.not_converged(
                "the gradient does not vanish or the Hessian is not negative definite "
                f"(optimizer: {res.message})"
            )
        )
    if prob.mode_cap_hit:
        warn.append(
            fitwarn.iteration_cap("The conditional-mode (inner Newton) iteration", MODE_MAXIT)
        )
    if singular:
        warn.append(
            fitwarn.singular_fit(
                f"the random-intercept SD is {sd:.2g} (< {_SINGULAR_TOL:g}); the model reduces "
                "to a cumulative link model without random effects"
            )
        )
    fitwarn.report(logger, warn)
    th_names = [f"{cats[i]}|{cats[i + 1]}" for i in range(J - 1)]
    names = th_names + list(design.columns) + ["log_sd_group"]
    if sd > 0:  # report the SD's row on the log scale, as clmm's vcov ("ST1")
        scale = np.r_[np.ones(k - 1), 1.0 / sd]
        cov = cov * np.outer(scale, scale)
    beta = par[J - 1 : J - 1 + p].copy()
    vcov = cov[J - 1 : J - 1 + p, J - 1 : J - 1 + p].copy()
    loglik = float(f0)
    return CLMMResult(
        columns=list(design.columns),
        design=design,
        beta=beta,
        vcov=0.5 * (vcov + vcov.T),
        thresholds=pd.Series(par[: J - 1], index=th_names, name="threshold"),
        vcov_all=pd.DataFrame(cov, index=names, columns=names),
        sd_group=sd,
        response_levels=cats,
        loglik=loglik,
        aic=-2.0 * loglik + 2.0 * k,
        bic=-2.0 * loglik + k * math.log(n),
        df_loglik=k,
        nobs=n,
        ngroups=G,
        converged=converged,
        singular=bool(singular),
        warnings=warn,
        link=link,
        nagq=nagq,
        outcome=outcome,
        group=group,
        ranef=pd.Series(sd * u, index=pd.Index(uniques, name=group), name="(Intercept)"),
        covariate_means={v: float(np.mean(pd.to_numeric(sub[v]))) for v in design.numeric},
        n_excluded=n_excluded,
        n_eval=prob.n_eval,
    )
