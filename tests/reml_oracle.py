"""TEST ORACLE: closed-form REML + Satterthwaite for one or two nested random intercepts.

Not part of studykit: an independent implementation used by the tests to check
:func:`studykit.models.lmm.fit_lmm` (and, through it, the power simulation) on models
``y ~ fixed + (1 | group)`` and ``y ~ fixed + (1 | g) + (1 | g:h)``. It computes the same
estimator and inference as lme4 + lmerTest from per-group sums in closed form; it was the power
simulation's "fast" engine until studykit kept one REML engine (issue #18). Balanced and
unbalanced data (missing nights) are both handled exactly.

Notes
-----
Write ``V = sigma^2 (I + gamma Z Z')`` with ``gamma = theta^2 = sigma_b^2 / sigma^2``. With
per-group sums ``s_i = X_i' 1``, ``t_i = y_i' 1`` and ``c_i = gamma / (1 + n_i gamma)``::

    A(gamma) = X'X - sum_i c_i s_i s_i'            (= R_X' R_X in lme4)
    b(gamma) = X'y - sum_i c_i t_i s_i
    r(gamma) = y'y - sum_i c_i t_i^2 - b' A^-1 b    (penalized weighted RSS)

and the profiled REML criterion (lme4's ``REMLcrit``) is
``(N - p) (1 + log(2 pi r / (N - p))) + sum_i log(1 + n_i gamma) + log det A``. It is
minimised over ``gamma >= 0`` by a root search on its analytic derivative (a boundary
estimate ``gamma = 0`` when the derivative at 0 is non-negative). Then ``sigma^2 = r / (N - p)``
and ``vcov(beta) = sigma^2 A^-1``.

Satterthwaite's degrees of freedom for a contrast ``L beta`` follow lmerTest (Kuznetsova,
Brockhoff & Christensen 2017): ``df = 2 v^2 / (g' W g)`` with ``v = L vcov L'``, ``g`` its
gradient with respect to the variance parameters ``(theta, sigma)`` and ``W = 2 H^-1`` where
``H`` is the Hessian of the (not profiled) REML deviance in ``(theta, sigma)``. ``dvcov/dsigma
= 2 sigma A^-1`` and ``dvcov/dtheta = 2 theta sigma^2 A^-1 (sum_i c_i' s_i s_i') A^-1`` with
``c_i' = 1 / (1 + n_i gamma)^2``; ``H`` is analytic in ``sigma`` and a central difference of
the analytic gradient in ``theta``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from studykit.errors import ModelError

__all__ = ["RIFit", "fit_random_intercept", "fit_nested_intercepts"]

_LOG2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class RIFit:
    """A REML fit of ``y ~ X + (1 | group)``.

    Attributes
    ----------
    beta, vcov : numpy.ndarray
        Fixed effects and their covariance matrix.
    sigma : float
        Residual SD.
    theta : float
        Random-intercept SD relative to ``sigma`` (lme4's ``theta``).
    reml_criterion : float
        lme4's ``REMLcrit`` (``-2`` REML log-likelihood).
    singular : bool
        ``theta < 1e-4`` (lme4's ``isSingular``).
    """

    beta: np.ndarray
    vcov: np.ndarray
    sigma: float
    theta: float
    reml_criterion: float
    singular: bool
    _dvcov: np.ndarray  # (2, p, p): d vcov / d(theta, sigma)
    _avar: np.ndarray  # (2, 2): asymptotic covariance of (theta, sigma)

    def contrast_df(self, L: np.ndarray) -> np.ndarray:
        """Satterthwaite df of each row of ``L`` (contrasts of ``beta``)."""
        L = np.atleast_2d(L)
        v = np.einsum("ij,jk,ik->i", L, self.vcov, L)
        g = np.einsum("ij,ajk,ik->ia", L, self._dvcov, L)
        denom = np.einsum("ia,ab,ib->i", g, self._avar, g)
        with np.errstate(divide="ignore", invalid="ignore"):
            df = 2.0 * v**2 / denom
        return np.where(denom > 0, df, np.inf)


def _group_sums(
    y: np.ndarray, X: np.ndarray, codes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-group row counts, column sums of X, sums of y and outer products of the X sums
    (flattened p x p per group), for 0-based group codes."""
    m = int(codes.max()) + 1
    Z = np.zeros((len(codes), m))
    Z[np.arange(len(codes)), codes] = 1.0
    SX = Z.T @ X
    outer = np.einsum("ip,iq->ipq", SX, SX).reshape(m, -1)
    return np.bincount(codes, minlength=m).astype(float), SX, Z.T @ y, outer


class _Sums:
    """Sufficient statistics of one data set, grouped (numpy only: small matrices)."""

    def __init__(self, y: np.ndarray, X: np.ndarray, groups: np.ndarray) -> None:
        _, codes = np.unique(groups, return_inverse=True)
        self.N, self.p = X.shape
        self.ni, self.SX, self.sy, self.O = _group_sums(y, X, codes)
        self.sy2 = self.sy**2
        self.XtX, self.Xty, self.yty = X.T @ X, X.T @ y, float(y @ y)

    def parts(self, gamma: float) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
        """beta, r, A^-1 and c'(gamma) = 1 / (1 + n_i gamma)^2 at gamma."""
        p = self.p
        d = 1.0 / (1.0 + self.ni * gamma)
        c = gamma * d
        A = self.XtX - (c @ self.O).reshape(p, p)
        Ainv = np.linalg.inv(A)
        b = self.Xty - self.SX.T @ (c * self.sy)
        beta = Ainv @ b
        r = self.yty - float(c @ self.sy2) - float(b @ beta)
        return beta, r, Ainv, d * d

    def dterms(self, gamma: float) -> tuple[float, float, float]:
        """(d r/d gamma, sum n_i / (1 + n_i gamma) + tr(A^-1 dA/dgamma), r)."""
        beta, r, Ainv, cp = self.parts(gamma)
        resid = self.sy - self.SX @ beta
        dr = -float(cp @ resid**2)
        dA = -(cp @ self.O).reshape(self.p, self.p)
        tr = float(np.sum(Ainv * dA))
        return dr, float(np.sum(self.ni / (1.0 + self.ni * gamma))) + tr, r

    def moment_gamma(self) -> float:
        """A rough ANOVA-type estimate of gamma from OLS residuals (a starting point only)."""
        beta = np.linalg.solve(self.XtX, self.Xty)
        r0 = self.yty - float(self.Xty @ beta)
        s2 = max(r0 / (self.N - self.p), 1e-300)  # total variance
        R = self.sy - self.SX @ beta
        denom = float(self.ni @ self.ni) - self.N
        sb2 = (float(R @ R) - s2 * self.N) / denom if denom > 0 else 0.0
        sb2 = min(max(sb2, 1e-3 * s2), 0.999 * s2)
        return float(min(max(sb2 / (s2 - sb2), 1e-3), 1e6))

    def dcrit(self, gamma: float) -> float:
        """Derivative of the profiled REML criterion with respect to gamma."""
        dr, rest, r = self.dterms(gamma)
        return (self.N - self.p) * dr / r + rest

    def dev_grad_theta(self, theta: float, sigma2: float) -> tuple[float, float]:
        """(d/dtheta of the REML deviance at fixed sigma, d r / d theta)."""
        dr, rest, _ = self.dterms(theta * theta)
        return 2.0 * theta * (rest + dr / sigma2), dr * 2.0 * theta


def _root(
    f, a: float, b: float, fa: float, fb: float, *, tol: float = 1e-11, maxiter: int = 200
) -> float:
    """Root of ``f`` in ``[a, b]`` (``f(a) < 0 <= f(b)``): Illinois regula falsi, bisection guard."""
    side = 0
    for _ in range(maxiter):
        c = (a * fb - b * fa) / (fb - fa)
        if not a < c < b:
            c = 0.5 * (a + b)
        fc = f(c)
        if fc == 0.0 or (b - a) <= tol:
            return c
        if fc < 0.0:
            a, fa = c, fc
            if side == -1:
                fb *= 0.5
            side = -1
        else:
            b, fb = c, fc
            if side == 1:
                fa *= 0.5
            side = 1
    return 0.5 * (a + b)


def fit_random_intercept(y: np.ndarray, X: np.ndarray, groups: np.ndarray) -> RIFit:
    """REML fit of ``y = X beta + b_group + e`` (one random intercept), lme4's estimates.

    Parameters
    ----------
    y : numpy.ndarray
        Outcome, length ``N`` (no missing values: drop missing rows first).
    X : numpy.ndarray
        ``N x p`` fixed-effects design of full column rank.
    groups : numpy.ndarray
        Group label of each row (any hashable values).

    Returns
    -------
    RIFit

    Raises
    ------
    ModelError
        Rank-deficient ``X``, fewer rows than columns, or no residual variation.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> g = np.repeat(np.arange(30), 3)
    >>> X = np.column_stack([np.ones(90), np.tile([0.0, 1.0, 0.0], 30)])
    >>> y = X @ [10.0, 2.0] + rng.normal(0, 3, 30)[g] + rng.normal(0, 1, 90)
    >>> fit = fit_random_intercept(y, X, g)
    >>> fit.beta.round(2).tolist(), round(fit.sigma * fit.theta, 1)
    ([9.8, 1.88], 2.5)
    """
    y = np.asarray(y, dtype=float)
    X = np.asarray(X, dtype=float)
    s = _Sums(y, X, np.asarray(groups))
    N, p = s.N, s.p
    if N <= p:
        raise ModelError(
            f"Only {N} observations for {p} fixed effects: the model cannot be fitted."
        )
    try:
        if s.dcrit(0.0) >= 0.0:
            gamma = 0.0
        else:
            # bracket the root in log(gamma) around a moment estimate, then Illinois
            def f(lg: float) -> float:
                return s.dcrit(math.exp(lg))

            g = math.log(s.moment_gamma())
            fg = f(g)
            step = math.log(2.0)
            if fg < 0.0:
                lo, flo = g, fg
                hi, fhi = g + step, f(g + step)
                while fhi < 0.0:
                    lo, flo, step = hi, fhi, 2.0 * step
                    if hi > math.log(1e12):
                        raise ModelError(
                            "No residual variation within groups: REML has no optimum."
                        )
                    hi = hi + step
                    fhi = f(hi)
            else:
                hi, fhi = g, fg
                lo, flo = g - step, f(g - step)
                while flo >= 0.0 and lo > math.log(1e-12):
                    hi, fhi, step = lo, flo, 2.0 * step
                    lo = lo - step
                    flo = f(lo)
            gamma = math.exp(_root(f, lo, hi, flo, fhi)) if flo < 0.0 else 0.0
        beta, r, Ainv, cp = s.parts(gamma)
    except np.linalg.LinAlgError as exc:
        raise ModelError("The fixed-effects design is rank deficient.") from exc
    sign, logdet = np.linalg.slogdet(Ainv)
    if not r > 0 or sign <= 0:
        raise ModelError("No residual variation, or a rank-deficient fixed-effects design.")
    sigma2 = r / (N - p)
    sigma = math.sqrt(sigma2)
    theta = math.sqrt(gamma)
    crit = (N - p) * (1.0 + _LOG2PI + math.log(sigma2)) + float(np.sum(np.log1p(s.ni * gamma)))
    crit -= logdet
    vcov = sigma2 * Ainv
    # --- Satterthwaite ingredients in (theta, sigma), as lmerTest
    M = (cp @ s.O).reshape(p, p)
    dvcov = np.empty((2, p, p))
    dvcov[0] = 2.0 * theta * sigma2 * (Ainv @ M @ Ainv)
    dvcov[1] = 2.0 * sigma * Ainv
    # Hessian of D(theta, sigma) = (N-p) log sigma^2 + h(theta) + r(theta)/sigma^2 + const
    h_ss = -2.0 * (N - p) / sigma2 + 6.0 * r / sigma2**2
    _, drdtheta = s.dev_grad_theta(theta, sigma2)
    h_ts = -2.0 * drdtheta / (sigma2 * sigma)
    step = 1e-4 * max(theta, 1e-2)
    h_tt = (
        s.dev_grad_theta(theta + step, sigma2)[0] - s.dev_grad_theta(theta - step, sigma2)[0]
    ) / (2.0 * step)
    H = np.array([[h_tt, h_ts], [h_ts, h_ss]])
    try:
        avar = 2.0 * np.linalg.inv(H)
    except np.linalg.LinAlgError:
        avar = 2.0 * np.linalg.pinv(H)
    return RIFit(
        beta=beta,
        vcov=vcov,
        sigma=sigma,
        theta=theta,
        reml_criterion=crit,
        singular=theta < 1e-4,
        _dvcov=dvcov,
        _avar=avar,
    )


def _projected_newton(f, g: np.ndarray, *, maxiter: int = 100) -> np.ndarray:
    """Minimise ``f`` over ``g >= 0`` (2 parameters): finite-difference Newton, active set."""
    g = np.asarray(g, float).copy()
    fg = f(g)
    k = len(g)
    for _ in range(maxiter):
        h = 1e-5 * np.maximum(g, 1e-2)
        fwd = g < 2 * h  # near the bound: one-sided differences
        grad = np.empty(k)
        H = np.empty((k, k))
        fp = np.empty(k)
        fm = np.empty(k)
        for a in range(k):
            e = np.zeros(k)
            e[a] = h[a]
            fp[a] = f(g + e)
            if fwd[a]:
                f2 = f(g + 2 * e)
                grad[a] = (-3 * fg + 4 * fp[a] - f2) / (2 * h[a])
                H[a, a] = (fg - 2 * fp[a] + f2) / h[a] ** 2
            else:
                fm[a] = f(g - e)
                grad[a] = (fp[a] - fm[a]) / (2 * h[a])
                H[a, a] = (fp[a] - 2 * fg + fm[a]) / h[a] ** 2
        for a in range(k):
            for b in range(a + 1, k):
                ea = np.zeros(k)
                eb = np.zeros(k)
                ea[a], eb[b] = h[a], h[b]
                H[a, b] = H[b, a] = (f(g + ea + eb) - fp[a] - fp[b] + fg) / (h[a] * h[b])
        free = ~((g <= 0.0) & (grad > 0.0))
        if not free.any():
            break
        Hf = H[np.ix_(free, free)]
        step = np.zeros(k)
        try:
            if np.all(np.linalg.eigvalsh(Hf) > 0):
                step[free] = -np.linalg.solve(Hf, grad[free])
            else:
                raise np.linalg.LinAlgError
        except np.linalg.LinAlgError:
            step[free] = -grad[free] / np.maximum(np.abs(np.diag(Hf)), 1e-8)
        t = 1.0
        while True:
            new = np.maximum(g + t * step, 0.0)
            fn = f(new)
            if fn <= fg - 1e-4 * t * abs(float(grad @ (new - g))) or t < 1e-10:
                break
            t *= 0.5
        if fn > fg:
            break
        moved = np.max(np.abs(new - g) / np.maximum(g, 1e-3))
        g, fdrop, fg = new, fg - fn, fn
        if moved < 1e-9 or fdrop < 1e-13 * max(abs(fg), 1.0):
            break
    return g


class _NestedSums:
    """Per participant x period sums for ``(1 | id) + (1 | id:period)`` (periods nested in ids)."""

    def __init__(self, y: np.ndarray, X: np.ndarray, ids: np.ndarray, cells: np.ndarray) -> None:
        _, cell = np.unique(cells, return_inverse=True)
        k = int(cell.max()) + 1
        self.N, self.p = X.shape
        self.nc, self.SXc, self.syc, self.Oc = _group_sums(y, X, cell)
        # participant of each cell
        first = np.zeros(k, dtype=np.intp)
        first[cell] = np.arange(self.N)
        _, pid = np.unique(np.asarray(ids)[first], return_inverse=True)
        self.m = int(pid.max()) + 1
        self.P = np.zeros((self.m, k))
        self.P[pid, np.arange(k)] = 1.0
        self.XtX, self.Xty, self.yty = X.T @ X, X.T @ y, float(y @ y)

    def parts(self, th: np.ndarray) -> tuple[np.ndarray, float, float, np.ndarray]:
        """beta, r, log det(V / sigma^2), A^-1 at theta = (theta_id, theta_idperiod)."""
        g1, g2 = th[0] ** 2, th[1] ** 2
        p = self.p
        d = 1.0 / (1.0 + self.nc * g2)  # W^-1 1 per cell
        c2 = g2 * d
        s = self.P @ (self.nc * d)  # 1' W^-1 1 per participant
        w1 = g1 / (1.0 + g1 * s)
        T = self.P @ (d[:, None] * self.SXc)  # per participant: sum_j d_j SX_j
        ty = self.P @ (d * self.syc)
        A = self.XtX - (c2 @ self.Oc).reshape(p, p) - T.T @ (w1[:, None] * T)
        b = self.Xty - self.SXc.T @ (c2 * self.syc) - T.T @ (w1 * ty)
        q = self.yty - float(c2 @ self.syc**2) - float(w1 @ ty**2)
        Ainv = np.linalg.inv(A)
        beta = Ainv @ b
        r = q - float(b @ beta)
        logdetV = float(np.sum(np.log1p(self.nc * g2)) + np.sum(np.log1p(g1 * s)))
        return beta, r, logdetV, Ainv

    def crit(self, th: np.ndarray) -> float:
        """Profiled REML criterion (lme4's REMLcrit) at theta."""
        _, r, logdetV, Ainv = self.parts(np.abs(th))
        sign, logdetAinv = np.linalg.slogdet(Ainv)
        if not r > 0 or sign <= 0:
            return math.inf
        n_p = self.N - self.p
        return n_p * (1.0 + _LOG2PI + math.log(r / n_p)) + logdetV - logdetAinv

    def dev(self, th: np.ndarray, sigma: float) -> float:
        """REML deviance at (theta, sigma), not profiled over sigma."""
        _, r, logdetV, Ainv = self.parts(np.abs(th))
        _, logdetAinv = np.linalg.slogdet(Ainv)
        s2 = sigma * sigma
        return (self.N - self.p) * (_LOG2PI + math.log(s2)) + logdetV - logdetAinv + r / s2


def fit_nested_intercepts(
    y: np.ndarray, X: np.ndarray, ids: np.ndarray, cells: np.ndarray
) -> RIFit:
    """REML fit of ``y ~ X + (1 | id) + (1 | id:period)`` (lme4's estimates, lmerTest's df).

    ``cells`` labels the participant x period of each row (nested in ``ids``). Same
    criterion as :func:`fit_random_intercept`, with nested compound-symmetry blocks inverted
    in closed form (Sherman-Morrison); the criterion is minimised over ``gamma = theta^2 >= 0``
    by projected Newton from ``theta = (1, 1)`` (lme4's start), Satterthwaite ingredients by central
    differences of ``vcov`` and of the deviance in ``(theta_1, theta_2, sigma)``.
    ``theta`` of the result is the participant one; ``singular`` flags either on the boundary.

    Examples
    --------
    >>> rng = np.random.default_rng(2)
    >>> ids = np.repeat(np.arange(20), 6)
    >>> cells = ids * 2 + np.tile(np.repeat([0, 1], 3), 20)
    >>> X = np.column_stack([np.ones(120), np.tile([0.0, 1.0, 0.0], 40)])
    >>> y = X @ [5.0, 1.0] + rng.normal(0, 2, 20)[ids] + rng.normal(0, 1, 40)[cells] + rng.normal(0, 1, 120)
    >>> fit = fit_nested_intercepts(y, X, ids, cells)
    >>> fit.beta.round(2).tolist()
    [4.99, 0.98]
    """
    y = np.asarray(y, dtype=float)
    X = np.asarray(X, dtype=float)
    s = _NestedSums(y, X, np.asarray(ids), np.asarray(cells))
    N, p = s.N, s.p
    if N <= p:
        raise ModelError(
            f"Only {N} observations for {p} fixed effects: the model cannot be fitted."
        )
    try:
        th = np.sqrt(_projected_newton(lambda g: s.crit(np.sqrt(g)), np.array([1.0, 1.0])))
        beta, r, _, Ainv = s.parts(th)
    except np.linalg.LinAlgError as exc:
        raise ModelError("The fixed-effects design is rank deficient.") from exc
    if not (r > 0 and math.isfinite(s.crit(th))):
        raise ModelError("No residual variation, or a rank-deficient fixed-effects design.")
    sigma2 = r / (N - p)
    sigma = math.sqrt(sigma2)
    vcov = sigma2 * Ainv
    # Satterthwaite: d vcov / d(theta_1, theta_2, sigma) and the Hessian of the deviance
    dvcov = np.empty((3, p, p))
    for k in range(2):
        h = 1e-5 * max(th[k], 1e-2)
        e = np.zeros(2)
        e[k] = h
        dvcov[k] = sigma2 * (s.parts(th + e)[3] - s.parts(th - e)[3]) / (2 * h)
    dvcov[2] = 2.0 * sigma * Ainv
    x0 = np.array([th[0], th[1], sigma])
    steps = np.array([1e-4 * max(th[0], 1.0), 1e-4 * max(th[1], 1.0), 1e-4 * sigma])

    def f(x: np.ndarray) -> float:
        return s.dev(x[:2], x[2])

    H = np.empty((3, 3))
    f0 = f(x0)
    for i in range(3):
        ei = np.zeros(3)
        ei[i] = steps[i]
        H[i, i] = (f(x0 + ei) - 2 * f0 + f(x0 - ei)) / steps[i] ** 2
        for j in range(i + 1, 3):
            ej = np.zeros(3)
            ej[j] = steps[j]
            H[i, j] = H[j, i] = (
                f(x0 + ei + ej) - f(x0 + ei - ej) - f(x0 - ei + ej) + f(x0 - ei - ej)
            ) / (4 * steps[i] * steps[j])
    try:
        avar = 2.0 * np.linalg.inv(H)
    except np.linalg.LinAlgError:
        avar = 2.0 * np.linalg.pinv(H)
    return RIFit(
        beta=beta,
        vcov=vcov,
        sigma=sigma,
        theta=float(th[0]),
        reml_criterion=float(s.crit(th)),
        singular=bool((th < 1e-4).any()),
        _dvcov=dvcov,
        _avar=avar,
    )
