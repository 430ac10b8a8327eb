"""Maximum-likelihood Poisson and negative-binomial mixed models with a random intercept.

Counts per night (awakenings, nightmares) are modelled as

.. math::

    y_{ij} \\mid b_i \\sim \\text{Poisson}(\\mu_{ij}) \\text{ or } \\text{NB2}(\\mu_{ij}, \\theta),
    \\qquad \\log \\mu_{ij} = x_{ij}^\\top \\beta + o_{ij} + b_i,
    \\qquad b_i \\sim N(0, \\sigma^2),

with one random intercept :math:`b_i` per group (participant). The marginal likelihood
integrates each :math:`b_i` out by the Laplace approximation (``nagq=1``, as ``glmer``'s
default and ``glmmTMB``) or by adaptive Gauss-Hermite quadrature with ``nagq`` nodes per group
(``glmer(..., nAGQ = nagq)``). Everything is vectorised over groups: the conditional modes of
all groups are found together by a damped Newton iteration on 1-D problems, and the outer
maximisation over :math:`(\\beta, \\sigma[, \\log\\theta])` uses exact analytic gradients of the
approximated marginal log-likelihood.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import linalg, optimize, special

from studykit.errors import ModelError
from studykit.models import fitwarn
from studykit.models.design import Design, build_design
from studykit.models.quadrature import (
    MODE_DECREASE_RTOL,
    MODE_HALVINGS,
    MODE_MAXIT,
    MODE_TOL,
    GaussHermite,
    check_nagq,
    group_modes,
)
from studykit.models.random_effects import (
    Factor,
    RandomEffect,
    ReStructure,
    build_terms,
    check_columns,
    group_codes,
    parse_random,
    random_columns,
    single_threaded_blas,
)
from studykit.models.summary import ResultDisplay
from studykit.models.wald import WaldZTests

__all__ = ["GLMMResult", "fit_glmm", "FAMILIES"]

logger = logging.getLogger(__name__)

FAMILIES = ("poisson", "negbin", "binomial")
VARCORR_COLUMNS = ["group", "var1", "var2", "vcov", "sdcor"]
LINKS = {"poisson": "log", "negbin": "log", "binomial": "logit"}
_SINGULAR_TOL = 1e-4  # lme4's isSingular() default tolerance on theta (here the SD)
_ETA_MAX = 700.0  # exp() overflows above ~709
# conditional modes (inner Newton iteration, per group or over all random effects): the
# tolerances of studykit.models.quadrature (MODE_TOL, MODE_MAXIT, MODE_HALVINGS,
# MODE_DECREASE_RTOL), shared with the per-group engine there
# starting values: GLM by IRLS
GLM_START_MAXIT = 50
GLM_START_TOL = 1e-10
SEPARATION_TOL = 1e-7  # linear-program directions smaller than this do not count (rounding)
# general (sparse) Laplace engine: central-difference steps relative to max(|phi_j|, 1); the
# gradient's rounding error ~ eps |loglik| / h, the Hessian's ~ eps |loglik| / h^2
HESS_GRAD_STEP = 1e-5  # central differences of the exact gradient (scalar engine)
LAPLACE_GRAD_STEP = 1e-6
LAPLACE_HESS_STEP = 1e-4
# beta rows of the Hessian: differences of the exact gradient, steps this x the GLM SE of beta
# (a covariate such as height in cm has a tiny coefficient: relative steps would be too big)
LAPLACE_BETA_HESS_STEP = 1e-3
# starting values and scaling of the outer optimisation
BINOMIAL_SD_START = 0.5  # random-effect SD (logit scale) to start from
SD_START = 0.5  # diagonal theta (SD on the link scale) to start the general engine from
SD_PRECOND = 0.2  # preconditioner scale of SD / theta parameters
INFO_FLOOR = 1e-12  # floor of Fisher-information diagonals in the fallback preconditioner
NB_THETA_START_MIN, NB_THETA_START_MAX = 0.5, 1000.0  # moment start of the NB2 size, clipped
# convergence of the outer optimisation
BFGS_OPTIONS = {"maxiter": 1000, "gtol": 1e-6}
NEWTON_POLISH_STEPS = 6  # Newton steps after BFGS (exact or finite-difference Hessian)
NEWTON_POLISH_TOL = 1e-7  # a polish step smaller than this is the last one
POLISH_DECREASE_TOL = 1e-10  # a polish step may lower the log-likelihood this much (rounding)
NEWTON_STEP_TOL = 1e-4  # converged: the remaining Newton step is below this in every parameter
THETA_BOUND_TOL = 1e-2  # log(theta) this close to its cap is set to the cap after BFGS
AT_CAP_TOL = 1e-6  # ... and this close at the optimum is reported as at the cap


# ----------------------------------------------------------------------------------------------
# per-observation pieces of the conditional log-likelihood, as functions of eta = log(mu)
# ----------------------------------------------------------------------------------------------
def _loglik_core(
    y: np.ndarray, eta: np.ndarray, theta: float | None, trials: np.ndarray | None = None
) -> np.ndarray:
    """The eta-dependent part of log p(y | eta): what the mode search maximises.

    Poisson (``theta`` and ``trials`` None), NB2 (``theta`` the size) or binomial with the logit
    link (``trials`` the number of trials; ``y`` the successes).
    """
    if trials is not None:
        return y * eta - trials * np.logaddexp(0.0, eta)
    if theta is None:
        return y * eta - np.exp(eta)
    # theta*log(theta) - (y+theta)*log(theta+mu) + y*eta, rearranged so that nothing of size
    # theta*log(theta) cancels (large theta: the Poisson limit)
    log_t = math.log(theta)
    return y * (eta - np.logaddexp(log_t, eta)) - theta * np.logaddexp(0.0, eta - log_t)


def _derivs(
    y: np.ndarray, eta: np.ndarray, theta: float | None, trials: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First derivative d l / d eta, W = -d2 l / d eta2 and W' = dW / d eta."""
    if trials is not None:
        prob = special.expit(eta)
        w = trials * prob * (1.0 - prob)
        return y - trials * prob, w, w * (1.0 - 2.0 * prob)
    mu = np.exp(eta)
    if theta is None:
        return y - mu, mu, mu
    tm = theta + mu
    d1 = theta * (y - mu) / tm
    w = theta * mu * (y + theta) / tm**2
    dw = theta * (y + theta) * mu * (theta - mu) / tm**3
    return d1, w, dw


def _theta_derivs(
    y: np.ndarray, eta: np.ndarray, theta: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NB2 derivatives with respect to log(theta): of l, of d l/d eta and of W."""
    mu = np.exp(eta)
    tm = theta + mu
    dl = theta * (
        _digamma_diff(y, theta) - np.logaddexp(0.0, eta - math.log(theta)) + (mu - y) / tm
    )
    dd1 = theta * mu * (y - mu) / tm**2
    dw = theta * mu * (y * mu - y * theta + 2.0 * theta * mu) / tm**3
    return dl, dd1, dw


def _loglik_const(
    y: np.ndarray, theta: float | None, trials: np.ndarray | None = None
) -> np.ndarray:
    """The eta-free part of log p(y | eta)."""
    if trials is not None:
        return (
            special.gammaln(trials + 1.0)
            - special.gammaln(y + 1.0)
            - special.gammaln(trials - y + 1.0)
        )
    if theta is None:
        return -special.gammaln(y + 1.0)
    return _lgamma_diff(y, theta) - special.gammaln(y + 1.0)


_ASYMPTOTIC_THETA = 1e4


def _lgamma_diff(y: np.ndarray, theta: float) -> np.ndarray:
    """log Gamma(y + theta) - log Gamma(theta), accurate also for huge theta (Stirling series)."""
    if theta < _ASYMPTOTIC_THETA:
        return special.gammaln(y + theta) - special.gammaln(theta)
    z = y + theta
    return (
        y * np.log(z)
        + (theta - 0.5) * np.log1p(y / theta)
        - y
        + (1.0 / z - 1.0 / theta) / 12.0
        - (1.0 / z**3 - 1.0 / theta**3) / 360.0
    )


def _digamma_diff(y: np.ndarray, theta: float) -> np.ndarray:
    """digamma(y + theta) - digamma(theta), accurate also for huge theta."""
    if theta < _ASYMPTOTIC_THETA:
        return special.digamma(y + theta) - special.digamma(theta)
    z = y + theta
    return (
        np.log1p(y / theta)
        - 0.5 * (1.0 / z - 1.0 / theta)
        - (1.0 / z**2 - 1.0 / theta**2) / 12.0
        + (1.0 / z**4 - 1.0 / theta**4) / 120.0
    )


# ----------------------------------------------------------------------------------------------
# the marginal likelihood engine (data sorted by group)
# ----------------------------------------------------------------------------------------------
@dataclass
class _Problem:
    y: np.ndarray  # (n,)
    X: np.ndarray  # (n, p)
    offset: np.ndarray  # (n,)
    gidx: np.ndarray  # (n,) group index 0..G-1, sorted
    starts: np.ndarray  # (G,) first row of each group
    negbin: bool
    quadrature: GaussHermite  # the adaptive rule (one node: Laplace)
    trials: np.ndarray | None = None  # (n,) binomial trials (None: count families)
    u: np.ndarray | None = None  # warm start for the conditional modes (spherical)
    n_eval: int = 0
    mode_cap_hit: bool = False  # the conditional-mode iteration reached MODE_MAXIT

    @property
    def p(self) -> int:
        return self.X.shape[1]

    @property
    def ngroups(self) -> int:
        return len(self.starts)

    def hessian(self, phi: np.ndarray) -> np.ndarray:
        """Hessian of the marginal log-likelihood (central differences of the exact gradient)."""
        return _hessian(self, phi)

    def gsum(self, a: np.ndarray) -> np.ndarray:
        """Sum rows of ``a`` within groups."""
        return np.add.reduceat(a, self.starts, axis=0)

    def unpack(self, phi: np.ndarray) -> tuple[np.ndarray, float, float | None]:
        p = self.p
        beta = phi[:p]
        s = float(phi[p])
        theta = float(math.exp(phi[p + 1])) if self.negbin else None
        return beta, s, theta

    # -- conditional modes -------------------------------------------------------------------
    def modes(
        self, eta0: np.ndarray, s: float, theta: float | None, *, tol: float = MODE_TOL
    ) -> np.ndarray:
        """Maximise g_i(u) = sum_j l(eta0_ij + s u_i) - u_i^2 / 2 for all groups at once."""
        y, gidx = self.y, self.gidx

        def g(uu: np.ndarray) -> np.ndarray:
            eta = np.minimum(eta0 + s * uu[gidx], _ETA_MAX)
            return self.gsum(_loglik_core(y, eta, theta, self.trials)) - 0.5 * uu**2

        def derivatives(uu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            eta = np.minimum(eta0 + s * uu[gidx], _ETA_MAX)
            d1, w, _ = _derivs(y, eta, theta, self.trials)
            return s * self.gsum(d1) - uu, s * s * self.gsum(w) + 1.0

        u0 = np.zeros(self.ngroups) if self.u is None else self.u
        u, capped = group_modes(g, derivatives, u0, tol=tol)
        self.mode_cap_hit |= capped
        return u

    # -- marginal log-likelihood and gradient ----------------------------------------------
    def evaluate(self, phi: np.ndarray) -> tuple[float, np.ndarray]:
        """Approximate marginal log-likelihood (Laplace / AGQ) and its exact gradient."""
        self.n_eval += 1
        y, X, gidx = self.y, self.X, self.gidx
        beta, s, theta = self.unpack(phi)
        eta0 = X @ beta + self.offset
        u = self.modes(eta0, s, theta)
        self.u = u
        eta_hat = np.minimum(eta0 + s * u[gidx], _ETA_MAX)
        tr = self.trials
        trk = None if tr is None else tr[:, None]
        d1, w, dw = _derivs(y, eta_hat, theta, tr)
        H = s * s * self.gsum(w) + 1.0  # -g''(u_hat), per group
        tau = 1.0 / np.sqrt(H)
        const = _loglik_const(y, theta, tr)
        rule = self.quadrature
        if rule.laplace:
            # Laplace: log L_i = g_i(u_hat) - log(H_i) / 2
            lik_obs = const + _loglik_core(y, eta_hat, theta, tr)
            ll_g = self.gsum(lik_obs) - 0.5 * u**2 - 0.5 * np.log(H)
            pi = None
        else:
            z = rule.z  # (K,)
            uk, _ = rule.points(u, H)  # (G, K)
            eta_k = np.minimum(eta0[:, None] + s * uk[gidx], _ETA_MAX)  # (n, K)
            lik_obs_k = const[:, None] + _loglik_core(y[:, None], eta_k, theta, trk)
            gk = self.gsum(lik_obs_k) - 0.5 * uk**2  # (G, K)
            ll_g, pi = rule.integrate(gk, tau)  # pi: (G, K) normalised node weights
        value = float(np.sum(ll_g))

        # implicit derivatives of the mode and of H, per group
        p = self.p
        nphi = len(phi)
        swx = self.gsum(w[:, None] * X)  # (G, p)
        du = np.empty((self.ngroups, nphi))
        du[:, :p] = -s * swx / H[:, None]
        du[:, p] = (self.gsum(d1) - s * u * self.gsum(w)) / H
        if theta is not None:
            dl_t, dd1_t, dw_t = _theta_derivs(y, eta_hat, theta)
            du[:, p + 1] = s * self.gsum(dd1_t) / H
        # d eta_hat / d phi (n, nphi)
        deta = s * du[gidx]
        deta[:, :p] += X
        deta[:, p] += u[gidx]
        dH = s * s * self.gsum(dw[:, None] * deta)
        dH[:, p] += 2.0 * s * self.gsum(w)
        if theta is not None:
            dH[:, p + 1] += s * s * self.gsum(dw_t)
        dlogtau = -0.5 * dH / H[:, None]  # (G, nphi)

        if pi is None:
            # envelope theorem: d g(u_hat) = partial derivative at u_hat
            gpart = np.empty((self.ngroups, nphi))
            gpart[:, :p] = self.gsum(d1[:, None] * X)
            gpart[:, p] = self.gsum(d1) * u
            if theta is not None:
                gpart[:, p + 1] = self.gsum(dl_t)
            gr = gpart + dlogtau
        else:
            d1k, _, _ = _derivs(y[:, None], eta_k, theta, trk)  # (n, K)
            pin = pi[gidx]  # (n, K)
            gpart = np.empty((self.ngroups, nphi))
            gpart[:, :p] = self.gsum(np.sum(pin * d1k, axis=1)[:, None] * X)
            gpart[:, p] = np.sum(pi * self.gsum(d1k) * uk, axis=1)
            if theta is not None:
                dl_tk, _, _ = _theta_derivs(y[:, None], eta_k, theta)
                gpart[:, p + 1] = np.sum(pi * self.gsum(dl_tk), axis=1)
            gprime = s * self.gsum(d1k) - uk  # g'(u_k), (G, K)
            c0 = np.sum(pi * gprime, axis=1)  # multiplies du
            c1 = np.sum(pi * gprime * z[None, :], axis=1) * tau  # multiplies dlogtau
            gr = gpart + dlogtau + c0[:, None] * du + c1[:, None] * dlogtau
        return value, np.sum(gr, axis=0)


def _hessian(prob: _Problem, phi: np.ndarray) -> np.ndarray:
    """Hessian of the marginal log-likelihood by central differences of the exact gradient."""
    n = len(phi)
    hess = np.empty((n, n))
    u0 = None if prob.u is None else prob.u.copy()
    for j in range(n):
        h = HESS_GRAD_STEP * max(1.0, abs(phi[j]))
        e = np.zeros(n)
        e[j] = h
        prob.u = u0
        gp = prob.evaluate(phi + e)[1]
        prob.u = u0
        gm = prob.evaluate(phi - e)[1]
        hess[:, j] = (gp - gm) / (2.0 * h)
    prob.u = u0
    return 0.5 * (hess + hess.T)


class _Laplace:
    """Laplace approximation for any random-effects structure (sparse, block-eliminated).

    Parameters ``phi = (beta, theta[, log nb_theta])`` with ``theta`` lme4's relative
    covariance factor (here the factor of the covariance itself: no residual scale). For given
    ``phi`` the conditional modes ``u`` of the spherical random effects maximise
    ``g(u) = sum_i log p(y_i | eta_i) - |u|^2 / 2`` with ``eta = X beta + offset + Z Lambda u``
    (Newton steps with the block-eliminated factor of ``H = Lambda' Z' W Z Lambda + I``, step
    halving); the log-likelihood is ``g(u_hat) - log|H| / 2`` plus the constant terms. Its
    gradient and Hessian in ``phi`` are central finite differences of that value, each
    evaluation warm-started from the modes at ``phi``, except the gradient in ``beta``, which
    is exact: ``X' d1 - (X' v - X' W Z Lambda H^-1 Lambda' Z' v) / 2`` with ``v_i = W'_i h_i``
    and ``h_i`` the diagonal of ``Z Lambda H^-1 Lambda' Z'`` (the implicit dependence of the modes
    on ``beta`` included), from one extra solve with the same factor.
    """

    def __init__(
        self,
        y: np.ndarray,
        X: np.ndarray,
        offset: np.ndarray,
        trials: np.ndarray | None,
        negbin: bool,
        re: ReStructure,
    ):
        self.y, self.X, self.offset, self.trials = y, X, offset, trials
        self.negbin = negbin
        self.re = re
        self.p = X.shape[1]
        self.K = re.ntheta
        self.u: tuple[np.ndarray, np.ndarray] | None = None
        self.n_eval = 0
        self.mode_cap_hit = False
        # the eta-free part of the log-likelihood (fixed unless the NB2 size changes)
        self._const = None if negbin else float(np.sum(_loglik_const(y, None, trials)))
        self._last: tuple[np.ndarray, Factor, np.ndarray, float | None] | None = None
        self.beta_scale: np.ndarray | None = None  # GLM standard errors of beta

    def unpack(self, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray, float | None]:
        p, K = self.p, self.K
        nbt = float(math.exp(phi[p + K])) if self.negbin else None
        return phi[:p], phi[p : p + K], nbt

    def _eta(self, eta0: np.ndarray, u: tuple[np.ndarray, np.ndarray], theta: np.ndarray):
        bA, bB = self.re.lam_times(u[0], u[1], theta)
        return np.minimum(eta0 + self.re.z_times(bA, bB), _ETA_MAX)

    def _g(self, eta: np.ndarray, u: tuple[np.ndarray, np.ndarray], nbt: float | None) -> float:
        core = _loglik_core(self.y, eta, nbt, self.trials)
        return float(np.sum(core)) - 0.5 * float(np.sum(u[0] ** 2) + np.sum(u[1] ** 2))

    def modes(
        self, beta: np.ndarray, theta: np.ndarray, nbt: float | None
    ) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray, Factor]:
        """Conditional modes, the linear predictor at them and the factor of H there."""
        re = self.re
        eta0 = self.X @ beta + self.offset
        u = self.u if self.u is not None else (np.zeros((re.G, re.m)), np.zeros(re.qB))
        LamA = re.lam_A(theta)
        eta = self._eta(eta0, u, theta)
        g_old = self._g(eta, u, nbt)
        for _ in range(MODE_MAXIT):
            d1, w, _ = _derivs(self.y, eta, nbt, self.trials)
            tA, tB = re.zt_times(d1)
            gA = tA @ LamA - u[0]
            gB = (re.lam_B_left_t(tB, theta) if re.qB else tB) - u[1]
            F = re.factor(theta, re.cross(w))
            sA, sB = F.solve(gA, gB)
            t = 1.0
            for _ in range(MODE_HALVINGS):
                cand = (u[0] + t * sA, u[1] + t * sB)
                eta_c = self._eta(eta0, cand, theta)
                g_c = self._g(eta_c, cand, nbt)
                if g_c >= g_old - MODE_DECREASE_RTOL * (1.0 + abs(g_old)):
                    break
                t *= 0.5
            u, eta, g_old = cand, eta_c, g_c
            size = max(
                float(np.max(np.abs(sA), initial=0.0)), float(np.max(np.abs(sB), initial=0.0))
            )
            if t * size < MODE_TOL:
                break
        else:
            self.mode_cap_hit = True
        _, w, _ = _derivs(self.y, eta, nbt, self.trials)
        return u, eta, re.factor(theta, re.cross(w))

    def value(self, phi: np.ndarray) -> float:
        """Laplace log-likelihood at ``phi`` (and the modes there are kept as warm start)."""
        self.n_eval += 1
        beta, theta, nbt = self.unpack(phi)
        u, eta, F = self.modes(beta, theta, nbt)
        self.u = u
        self._last = (eta, F, theta, nbt)
        if self._const is None:
            const = float(np.sum(_loglik_const(self.y, nbt, self.trials)))
        else:
            const = self._const
        return const + self._g(eta, u, nbt) - 0.5 * (F.logdet_A() + F.logdet_S())

    def _leverages(self, F: Factor, theta: np.ndarray) -> np.ndarray:
        """``h_i = z_i Lambda H^-1 Lambda' z_i'`` for every observation (selected inversion)."""
        re = self.re
        a = re.zA @ re.lam_A(theta)  # rows: (Lambda_A' zA_i)'
        m = re.m
        LAi = F.LA[re.block]  # (n, m, m)
        xA = a / LAi[:, :, 0] if m == 1 else np.linalg.solve(LAi, a[:, :, None])[:, :, 0]
        h = np.sum(xA * xA, axis=1)
        if re.qB:
            b = np.zeros((self.y.size, re.qB))
            rows = np.arange(self.y.size)[:, None]
            vals = re.bvals * theta[re.b_theta_index[re.bcols]] if re.b_scalar else None
            if vals is None:  # (Lambda_B' z)_i: per term, the level's q values times T
                vals = np.empty_like(re.bvals)
                col = 0
                for k in re.b_terms:
                    t = re.terms[k]
                    T = re.term_factor(t, theta)
                    vals[:, col : col + t.q] = re.bvals[:, col : col + t.q] @ T
                    col += t.q
            np.add.at(b, (np.broadcast_to(rows, re.bcols.shape), re.bcols), vals)
            r = b - np.einsum("nmd,nm->nd", F.CL[re.block], xA)
            xB = linalg.solve_triangular(F.LS, r.T, lower=True, check_finite=False)
            h = h + np.sum(xB * xB, axis=0)
        return h

    def _beta_gradient(self) -> np.ndarray:
        """Exact gradient of the Laplace log-likelihood in beta (implicit modes included)."""
        assert self._last is not None
        eta, F, theta, nbt = self._last
        re = self.re
        d1, w, dw = _derivs(self.y, eta, nbt, self.trials)
        v = dw * self._leverages(F, theta)
        tA, tB = re.zt_times(v)
        rA = tA @ re.lam_A(theta)
        rB = re.lam_B_left_t(tB, theta) if re.qB else tB
        sA, sB = F.solve(rA, rB)
        bA, bB = re.lam_times(sA, sB, theta)
        zls = re.z_times(bA, bB)
        return self.X.T @ d1 - 0.5 * (self.X.T @ v - self.X.T @ (w * zls))

    def _steps(self, phi: np.ndarray, rel: float) -> np.ndarray:
        h = rel * np.maximum(np.abs(phi), 1.0)
        if self.beta_scale is not None:  # beta: steps on the scale of its standard errors
            h[: self.p] = LAPLACE_BETA_HESS_STEP * self.beta_scale
        return h

    def evaluate(self, phi: np.ndarray) -> tuple[float, np.ndarray]:
        """Laplace log-likelihood and its central-difference gradient."""
        value = self.value(phi)
        u0 = self.u
        h = self._steps(phi, LAPLACE_GRAD_STEP)
        g = np.empty(len(phi))
        g[: self.p] = self._beta_gradient()
        for j in range(self.p, len(phi)):
            e = np.zeros(len(phi))
            e[j] = h[j]
            self.u = u0
            vp = self.value(phi + e)
            self.u = u0
            vm = self.value(phi - e)
            g[j] = (vp - vm) / (2.0 * h[j])
        self.u = u0
        return value, g

    def hessian(self, phi: np.ndarray) -> np.ndarray:
        """Hessian: central differences of the exact beta-gradient (rows of beta) and second
        central differences of the log-likelihood (the other parameters)."""
        u0 = self.u
        P, p = len(phi), self.p
        h = self._steps(phi, LAPLACE_HESS_STEP)

        def at(e: np.ndarray) -> tuple[float, np.ndarray]:
            self.u = u0
            val = self.value(phi + e)
            return val, self._beta_gradient()

        f0, _ = at(np.zeros(P))
        H = np.empty((P, P))
        fp, fm = np.empty(P), np.empty(P)
        for k in range(P):
            e = np.zeros(P)
            e[k] = h[k]
            fp[k], gp = at(e)
            fm[k], gm = at(-e)
            H[:p, k] = (gp - gm) / (2.0 * h[k])
            if k >= p:
                H[k, k] = (fp[k] - 2.0 * f0 + fm[k]) / h[k] ** 2
        H[p:, :p] = H[:p, p:].T
        for k in range(p, P):
            for j in range(p, k):
                vals = []
                for sk, sj in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                    e = np.zeros(P)
                    e[k] = sk * h[k]
                    e[j] = sj * h[j]
                    self.u = u0
                    vals.append(self.value(phi + e))
                H[k, j] = H[j, k] = (vals[0] - vals[1] - vals[2] + vals[3]) / (4.0 * h[k] * h[j])
        self.u = u0
        self.value(phi)  # restore the modes at phi
        return 0.5 * (H + H.T)


def _glm_start(
    y: np.ndarray, X: np.ndarray, offset: np.ndarray, trials: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Poisson (or binomial-logit) GLM by IRLS: starting values and the Fisher information."""
    if trials is None:
        eta = np.log(y + 0.5)
    else:
        eta = special.logit((y + 0.5) / (trials + 1.0))
    beta = np.zeros(X.shape[1])
    w = np.ones(len(y))
    for _ in range(GLM_START_MAXIT):
        d1, w, _ = _derivs(y, eta, None, trials)
        z = eta - offset + d1 / w
        xw = X * w[:, None]
        info = X.T @ xw
        beta_new = np.linalg.lstsq(info, xw.T @ z, rcond=None)[0]
        eta = np.clip(X @ beta_new + offset, -_ETA_MAX, _ETA_MAX)
        if np.max(np.abs(beta_new - beta)) < GLM_START_TOL:
            beta = beta_new
            break
        beta = beta_new
    _, w, _ = _derivs(y, eta, None, trials)
    info = X.T @ (X * w[:, None])
    return beta, info


@dataclass
class _Optimum:
    phi: np.ndarray
    loglik: float
    grad: np.ndarray
    hess: np.ndarray
    success: bool
    message: str
    n_iter: int


def _maximise(
    prob: _Problem | _Laplace, phi0: np.ndarray, precond: np.ndarray, *, log_theta_max: float
) -> _Optimum:
    """Maximise the marginal log-likelihood: BFGS in preconditioned coordinates, then Newton.

    For the negative binomial, log(theta) is capped smoothly below ``log_theta_max``
    (``M - softplus(M - a)``) so that equidispersed data cannot send theta to infinity.
    """
    nphi = len(phi0)
    p_cap = nphi - 1 if prob.negbin else None

    def to_phi(psi: np.ndarray) -> tuple[np.ndarray, float]:
        phi = phi0 + precond @ psi
        slope = 1.0
        if p_cap is not None:
            gap = log_theta_max - phi[p_cap]
            phi[p_cap] = log_theta_max - np.logaddexp(0.0, gap)
            slope = float(special.expit(gap))
        return phi, slope

    def fun(psi: np.ndarray) -> tuple[float, np.ndarray]:
        phi, slope = to_phi(psi)
        value, grad = prob.evaluate(phi)
        if not np.isfinite(value):
            return np.inf, np.full(nphi, np.nan)
        if p_cap is not None:
            grad = grad.copy()
            grad[p_cap] *= slope
        return -value, -(precond.T @ grad)

    # scipy's BFGS is plain numpy; its L-BFGS-B calls BLAS for tiny vectors, which is very slow
    # under multi-threaded OpenBLAS on a busy machine
    res = optimize.minimize(
        fun,
        np.zeros(nphi),
        jac=True,
        method="BFGS",
        options=BFGS_OPTIONS,
    )
    phi, _ = to_phi(res.x)
    at_bound = prob.negbin and phi[-1] >= log_theta_max - THETA_BOUND_TOL
    if at_bound:
        phi[-1] = log_theta_max
    value, grad = prob.evaluate(phi)
    hess = prob.hessian(phi)
    n_iter = int(res.nit)
    # Newton polish (Newton steps on the interior parameters only when theta sits at its bound)
    free = np.arange(nphi - 1) if at_bound else np.arange(nphi)
    hess_at = phi.copy()
    for _ in range(NEWTON_POLISH_STEPS):
        try:
            step = np.linalg.solve(-hess[np.ix_(free, free)], grad[free])
        except np.linalg.LinAlgError:
            break
        if not np.all(np.isfinite(step)):
            break
        trial = phi.copy()
        trial[free] += step
        if prob.negbin:
            trial[-1] = min(trial[-1], log_theta_max)
        t_value, t_grad = prob.evaluate(trial)
        if not (np.isfinite(t_value) and t_value >= value - POLISH_DECREASE_TOL):
            prob.evaluate(phi)  # restore the conditional modes at phi
            break
        phi, value, grad = trial, t_value, t_grad
        n_iter += 1
        if np.max(np.abs(step)) < NEWTON_POLISH_TOL:
            break  # quadratic convergence: phi is exact to ~1e-14, the Hessian still holds
        hess = prob.hessian(phi)
        hess_at = phi.copy()
    if np.max(np.abs(phi - hess_at)) > NEWTON_POLISH_TOL:
        hess = prob.hessian(phi)
    return _Optimum(phi, value, grad, hess, bool(res.success), str(res.message), n_iter)


# ----------------------------------------------------------------------------------------------
# result
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False, repr=False)
class GLMMResult(WaldZTests, ResultDisplay):
    """A fitted Poisson / negative-binomial mixed model with a random intercept.

    Attributes
    ----------
    columns : list of str
        Fixed-effect names as in lme4 (``(Intercept)``, ``armketamine:nightpost1``).
    design : Design
        The fixed-effects design (rebuild rows for new data with ``design.matrix_for``).
    beta : numpy.ndarray
        Fixed effects on the log scale.
    vcov : numpy.ndarray
        Their covariance matrix: the fixed-effects block of the inverse of the negative
        Hessian of the marginal log-likelihood over ``(beta, sd[, log theta])``.
    nobs : int
        Observations used.
    ngroups : dict
        Grouping factor -> its number of levels, every random-effect term (lme4's
        ``ngrps``), as :attr:`LMMResult.ngroups`.
    loglik : float
        Maximised marginal log-likelihood (Laplace or AGQ approximation), a proper
        log-likelihood comparable across ``nagq`` and with ``glmmTMB``.
    loglik_lme4 : float or None
        The figure ``logLik()`` prints for the same ``glmer`` fit: equal to ``loglik`` for the
        Laplace fit; for ``nagq > 1`` lme4 drops the saturated-model log-likelihood
        (``sum(y log y - y - log y!)``), so ``loglik_lme4 = loglik - saturated``. ``None`` for
        ``negbin`` with ``nagq > 1`` (no lme4 counterpart).
    aic, bic : float
        ``-2 loglik + 2 k`` and ``-2 loglik + k log(nobs)``, ``k = df_loglik``.
    df_loglik : int
        Number of estimated parameters (fixed effects, SD, and theta for ``negbin``).
    converged : bool
        Optimiser succeeded, the gradient vanishes and the Hessian is negative definite.
    singular : bool
        Random-intercept SD below 1e-4 (lme4's ``isSingular`` tolerance).
    warnings : list of str
        Problems found while fitting (not Python warnings).
    family : str
        ``"poisson"`` or ``"negbin"``.
    link : str
        ``"log"``.
    sd_group : float
        Random-intercept SD on the log scale.
    theta : float or None
        NB2 size (``var = mu + mu^2 / theta``); ``None`` for Poisson.
    nagq : int
        Quadrature nodes per group (1 = Laplace).
    ranef : pandas.Series
        Conditional modes of the random intercepts (log scale), indexed by group.
    vcov_params : pandas.DataFrame
        Covariance of all estimated parameters: fixed effects, ``sd_group`` and, for negbin,
        ``log_theta`` (inverse negative Hessian).
    covariate_means : dict
        Numeric covariate -> its mean over the model rows (emmeans' reference grid).
    formula : str or None
        The lme4 formula when fitted by :func:`studykit.glmer`.
    """

    columns: list[str]
    design: Design
    beta: np.ndarray
    vcov: np.ndarray
    nobs: int
    ngroups: dict[str, int]
    loglik: float
    loglik_lme4: float | None
    aic: float
    bic: float
    df_loglik: int
    converged: bool
    singular: bool
    warnings: list[str]
    family: str
    link: str
    sd_group: float
    theta: float | None
    nagq: int
    outcome: str
    group: str
    ranef: pd.Series
    vcov_params: pd.DataFrame
    covariate_means: dict[str, float] = field(default_factory=dict)
    n_iter: int = 0
    n_eval: int = 0
    formula: str | None = None
    random: list[RandomEffect] = field(default_factory=list)
    varcorr_table: pd.DataFrame | None = None
    re_theta: np.ndarray | None = None

    def varcorr(self) -> pd.DataFrame:
        """Random-effect SDs and correlations (link scale), as lme4's ``VarCorr``.

        Columns ``group, var1, var2, vcov, sdcor`` (as :meth:`LMMResult.varcorr`, without a
        residual row).
        """
        if self.varcorr_table is None:
            return pd.DataFrame(columns=VARCORR_COLUMNS)
        return self.varcorr_table.copy()

    @property
    def method(self) -> str:
        """``"Laplace"`` or ``"AGQ(nagq)"``."""
        return "Laplace" if self.nagq == 1 else f"AGQ({self.nagq})"

    @property
    def std_errors(self) -> pd.Series:
        """Standard errors of the fixed effects, indexed by name."""
        return pd.Series(np.sqrt(np.diag(self.vcov)), index=self.columns, name="std_error")

    def fit_stats(self) -> pd.DataFrame:
        """One-row table: family, method, nobs, ngroups, logLik, AIC, BIC, SD, theta, flags."""
        return pd.DataFrame(
            [
                {
                    "family": self.family,
                    "link": self.link,
                    "method": self.method,
                    "nobs": self.nobs,
                    "ngroups": "; ".join(f"{g}: {k}" for g, k in self.ngroups.items()),
                    "loglik": self.loglik,
                    "loglik_lme4": self.loglik_lme4,
                    "df_loglik": self.df_loglik,
                    "aic": self.aic,
                    "bic": self.bic,
                    "sd_group": self.sd_group,
                    "theta": self.theta,
                    "converged": self.converged,
                    "singular": self.singular,
                    "warnings": "; ".join(self.warnings),
                }
            ]
        )


# ----------------------------------------------------------------------------------------------
# fitting
# ----------------------------------------------------------------------------------------------
_LOG_THETA_MAX = math.log(1e8)


def _check_counts(values: pd.Series, outcome: str) -> np.ndarray:
    if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
        bad = values[pd.to_numeric(values, errors="coerce").isna()]
        raise ModelError(
            f"Outcome {outcome!r} must be counts (non-negative integers); found non-numeric "
            f"values {list(bad.astype(str).unique()[:5])} in rows {list(bad.index[:5])}."
        )
    y = values.to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isfinite(y) | (y < 0) | (y != np.floor(y))
    if bad.any():
        idx = np.flatnonzero(bad)
        shown = [f"row {values.index[i]!r}: {y[i]:g}" for i in idx[:5]]
        raise ModelError(
            f"Outcome {outcome!r} must be counts (non-negative integers) for a "
            f"Poisson/negative-binomial model; {int(bad.sum())} value(s) are not: "
            f"{', '.join(shown)}. Fix the data or model the outcome with a linear mixed model."
        )
    return y


def _check_estimable(
    X: np.ndarray,
    y: np.ndarray,
    data: pd.DataFrame,
    design: Design,
    outcome: str,
    trials: np.ndarray | None = None,
) -> None:
    """Refuse designs whose estimates are infinite (no events, or separation, in a cell).

    The Poisson (and NB) likelihood has no finite maximum when some direction ``d`` of the
    coefficients lowers the linear predictor on zero-count rows and leaves it unchanged on all
    rows with events, e.g. every ketamine post1 night has 0 nightmares. For the binomial, rows
    with all trials successes count as zero rows with the sign of ``d`` reversed (complete or
    quasi-complete separation). Found by a small linear program: minimise ``sum(X0 d)`` subject
    to ``X+ d = 0``, ``-1 <= X0 d <= 0``.
    """
    sign = np.where(y == 0, 1.0, 0.0)
    if trials is not None:
        sign = sign - np.where((y == trials) & (trials > 0), 1.0, 0.0)
    bound = sign != 0
    if not bound.any() or (trials is None and bound.all()):
        return
    X0, Xp = X[bound] * sign[bound, None], X[~bound]
    n0 = int(bound.sum())
    res = optimize.linprog(
        X0.sum(axis=0),
        A_ub=np.vstack([X0, -X0]),
        b_ub=np.r_[np.zeros(n0), np.ones(n0)],
        A_eq=Xp if len(Xp) else None,
        b_eq=np.zeros(len(Xp)) if len(Xp) else None,
        bounds=[(None, None)] * X.shape[1],
        method="highs",
    )
    if res.status != 0 or res.fun > -SEPARATION_TOL:
        return
    rows = np.flatnonzero(bound)[X0 @ res.x < -SEPARATION_TOL]
    factors = [v for v in design.levels if v in data.columns]
    if factors:
        cells = data.iloc[rows].groupby(factors, sort=False, observed=True).size()
        where = "; ".join(
            " & ".join(
                f"{v}={k}"
                for v, k in zip(factors, key if isinstance(key, tuple) else (key,), strict=True)
            )
            + f" ({n} rows)"
            for key, n in cells.items()
        )
    else:
        where = f"rows {list(data.index[rows][:10])}"
    if trials is None:
        raise ModelError(
            f"The fixed effects cannot be estimated: {outcome!r} is 0 in every row of {where}, "
            "so some log rate ratio is minus infinity (the ML estimate does not exist; glmer "
            "would report huge estimates and SEs). Merge or drop "
            "the empty cells, simplify the fixed terms, or analyse this outcome descriptively."
        )
    raise ModelError(
        f"The fixed effects cannot be estimated: {outcome!r} is always 0 or always the number of "
        f"trials in {where} (separation), so some log odds ratio is infinite (the ML estimate "
        "does not exist; glmer would report huge estimates and SEs). Merge or drop those cells, "
        "simplify the fixed terms, or analyse this outcome descriptively."
    )


def _check_binomial(
    values: pd.Series, outcome: str, trials: pd.Series | None, trials_name: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """Successes and trials of a binomial outcome (Bernoulli 0/1 or True/False without trials)."""
    if pd.api.types.is_bool_dtype(values):
        y = values.to_numpy(dtype=float)
    elif pd.api.types.is_numeric_dtype(values):
        y = values.to_numpy(dtype=float, na_value=np.nan)
    else:
        shown = list(values.astype(str).unique()[:5])
        raise ModelError(
            f"Outcome {outcome!r} must be numeric for a binomial model (0/1, True/False, or "
            f"successes with trials=...); found values {shown}. Recode it, e.g. "
            f"(df[{outcome!r}] == 'yes')."
        )
    if trials is None:
        bad = ~np.isin(y, (0.0, 1.0))
        if bad.any():
            shown = [f"row {values.index[i]!r}: {y[i]:g}" for i in np.flatnonzero(bad)[:5]]
            raise ModelError(
                f"Outcome {outcome!r} must be 0/1 for a Bernoulli (binomial) model; "
                f"{int(bad.sum())} value(s) are not: {', '.join(shown)}. For successes out of "
                "several trials give trials='<column of trials>'; for counts use "
                "family='poisson'."
            )
        return y, np.ones_like(y)
    if not pd.api.types.is_numeric_dtype(trials):
        raise ModelError(f"Trials column {trials_name!r} must be numbers of trials.")
    n_tr = trials.to_numpy(dtype=float, na_value=np.nan)
    bad = (
        ~np.isfinite(y)
        | ~np.isfinite(n_tr)
        | (y < 0)
        | (y != np.floor(y))
        | (n_tr != np.floor(n_tr))
        | (n_tr < 1)
        | (y > n_tr)
    )
    if bad.any():
        shown = [
            f"row {values.index[i]!r}: {y[i]:g} of {n_tr[i]:g}" for i in np.flatnonzero(bad)[:5]
        ]
        raise ModelError(
            f"Binomial outcome {outcome!r} must be whole numbers of successes between 0 and the "
            f"trials in {trials_name!r} (at least 1); {int(bad.sum())} row(s) are not: "
            f"{', '.join(shown)}."
        )
    return y, n_tr


def fit_glmm(
    data: pd.DataFrame,
    outcome: str,
    fixed: Sequence[str],
    *,
    group: str | None = None,
    random: Any = None,
    family: str = "poisson",
    levels: Mapping[str, Sequence[str]] | None = None,
    nagq: int = 1,
    offset: str | None = None,
    trials: str | None = None,
) -> GLMMResult:
    """Fit a Poisson, negative-binomial (NB2) or binomial (logit) generalized linear mixed model.

    The model is ``log E[y | b] = X beta + offset + b_group`` with ``b_group ~ N(0, sd^2)``,
    fitted by maximum likelihood (``glmer(y ~ fixed + (1 | group), family = poisson,
    nAGQ = nagq)``; ``glmmTMB(..., family = nbinom2)`` for ``family="negbin"``).

    Parameters
    ----------
    data : pandas.DataFrame
        One row per observation (e.g. participant x night). Not modified.
    outcome : str
        Column of non-negative integer counts.
    fixed : sequence of str
        Fixed-effect terms, e.g. ``["arm", "night", "arm:night"]`` (see
        :func:`studykit.models.design.build_design`); the intercept is always included.
    group : str
        Column identifying the groups (participants) that get a random intercept.
    family : {"poisson", "negbin"}
        Conditional distribution. ``"negbin"`` is NB2: ``var = mu + mu^2 / theta``.
    levels : mapping, optional
        Categorical variable -> levels, reference first (``{"arm": ["placebo", "ketamine"]}``).
    nagq : int, default 1
        Quadrature nodes per group: 1 is the Laplace approximation, more is adaptive
        Gauss-Hermite quadrature (``glmer``'s ``nAGQ``; 25 is a common choice).
    offset : str, optional
        Column added to the linear predictor with coefficient 1 (e.g. log hours asleep for a
        rate per hour).

    Returns
    -------
    GLMMResult

    Raises
    ------
    ModelError
        Negative, non-integer or missing counts, missing group labels, fewer than two groups,
        unknown family, invalid ``nagq``, a rank-deficient design, or zero events in a cell
        of the design (the ML log rate ratio would be infinite).

    Examples
    --------
    Simulated data (not a real study):

    >>> rng = np.random.default_rng(1)
    >>> ids = np.repeat([f"P{i:02d}" for i in range(30)], 3)
    >>> arm = np.repeat(rng.permutation(["placebo", "ketamine"] * 15), 3)
    >>> b = np.repeat(rng.normal(0, 0.3, 30), 3)
    >>> y = rng.poisson(np.exp(2.5 - 0.3 * (arm == "ketamine") + b))
    >>> df = pd.DataFrame({"id": ids, "arm": arm, "awakenings": y})
    >>> fit = fit_glmm(df, "awakenings", ["arm"], group="id",
    ...                levels={"arm": ["placebo", "ketamine"]})
    >>> fit.columns
    ['(Intercept)', 'armketamine']
    >>> fit.converged, fit.nobs, fit.ngroups
    (True, 90, {'id': 30})
    >>> rr = fit.coef_table(exponentiate=True).set_index("term")
    >>> bool(rr.loc["armketamine", "conf_low"] < rr.loc["armketamine", "estimate"] < 1.0)
    True

    Notes
    -----
    *Likelihood.* For group :math:`i` with spherical random effect :math:`u_i`
    (:math:`b_i = \\sigma u_i`), let :math:`g_i(u) = \\sum_j \\log p(y_{ij} | \\eta_{ij} + \\sigma u)
    - u^2/2 - \\log(2\\pi)/2`, :math:`\\hat u_i` its maximiser and :math:`H_i = -g_i''(\\hat u_i)`.
    The Laplace approximation is :math:`\\log L_i = g_i(\\hat u_i) + \\log(2\\pi)/2 - \\log(H_i)/2`;
    adaptive Gauss-Hermite quadrature (Liu & Pierce 1994; Pinheiro & Bates 1995) evaluates
    :math:`\\int e^{g_i}` at nodes :math:`\\hat u_i + \\sqrt{2/H_i}\\,x_k` (``hermgauss``). The
    modes of all groups are found together by damped Newton steps; the outer maximisation over
    :math:`(\\beta, \\sigma[, \\log\\theta])` (BFGS, then Newton steps) uses the exact gradient
    of the approximated log-likelihood, including the dependence of :math:`\\hat u_i` and
    :math:`H_i` on the parameters. For NB2, :math:`H_i` uses the observed information (as TMB /
    glmmTMB); for Poisson with log link observed and expected information coincide.

    *Standard errors* come from the fixed-effects block of the inverse negative Hessian of the
    marginal log-likelihood over all parameters (central differences of the exact gradient):
    glmmTMB's ``sdreport`` convention, which ``glmer`` also reproduces for ``nAGQ > 1``.
    ``glmer``'s Laplace SEs (finite-difference Hessian of its PIRLS deviance) differ from
    these and from glmmTMB's by up to about 0.4 % on the reference trial.

    *Log-likelihood scale.* ``loglik`` is always the full marginal log-likelihood. lme4 prints
    the same number for Laplace fits, but for ``nAGQ > 1`` it omits the saturated-model term;
    ``loglik_lme4`` reproduces that figure. Never compare lme4's Laplace and AGQ logLik.

    *Tests* are Wald z tests (``df = inf``), as in ``summary(glmer_fit)`` and emmeans'
    asymptotic intervals. A singular fit (SD below 1e-4) reduces to a Poisson/NB GLM.
    """
    if not isinstance(data, pd.DataFrame):
        raise ModelError(f"data must be a pandas DataFrame; got {type(data).__name__}.")
    if not isinstance(family, str) or family not in FAMILIES:
        raise ModelError(f"Invalid family {family!r}. Expected one of {list(FAMILIES)}.")
    nagq = check_nagq(nagq, example=25)
    if isinstance(fixed, str):
        fixed = [fixed]
    if (group is None) == (random is None):
        raise ModelError(
            "Give the random effects either as group='<column>' (one random intercept) or as "
            "random=[...] (any terms, e.g. [('id', ['1']), ('scorer', ['1'])]), not both."
        )
    if group is not None and not isinstance(group, str):
        raise ModelError(
            f"group must be one column name; got {group!r}. For several grouping factors "
            "(nested or crossed) use random=[('a', ['1']), ('b', ['1'])]; for an interaction "
            "group='a:b'."
        )
    specs = parse_random(group if group is not None else random)
    if family != "binomial" and trials is not None:
        raise ModelError(f"trials= is for family='binomial'; family is {family!r}.")
    extra = [(outcome, "outcome")]
    extra += [(offset, "offset")] if offset is not None else []
    extra += [(trials, "trials")] if trials is not None else []
    for name, what in extra:
        if not isinstance(name, str) or name not in data.columns:
            raise ModelError(
                f"The {what} column {name!r} is not in the data. Columns: "
                f"{', '.join(map(str, data.columns[:30]))}."
            )
    check_columns(data, specs)
    needed = [name for name, _ in extra] + random_columns(specs)
    missing = data[needed].isna().any(axis=1)
    if missing.any():
        raise ModelError(
            f"{int(missing.sum())} row(s) have a missing {' / '.join(needed)} value (rows "
            f"{list(data.index[missing.to_numpy()][:5])}). Drop incomplete rows before fitting "
            "and report them as excluded."
        )
    n_trials: np.ndarray | None = None
    if family == "binomial":
        y, n_trials = _check_binomial(
            data[outcome], outcome, data[trials] if trials is not None else None, trials
        )
    else:
        y = _check_counts(data[outcome], outcome)
    if offset is not None:
        off = pd.to_numeric(data[offset], errors="coerce").to_numpy(dtype=float)
        if not np.all(np.isfinite(off)):
            raise ModelError(f"Offset column {offset!r} must be finite numbers.")
    else:
        off = np.zeros(len(data))
    design = build_design(data, list(fixed), levels=levels, intercept=True)
    X = design.X
    n, p = X.shape
    if n == 0:
        raise ModelError("No rows to fit.")
    if np.all(y == 0):
        raise ModelError(f"Outcome {outcome!r} is zero in every row: no events to model.")
    if n_trials is not None and np.all(y == n_trials):
        raise ModelError(f"Outcome {outcome!r} is a success in every trial: nothing to model.")
    rank = np.linalg.matrix_rank(X)
    if rank < p:
        raise ModelError(
            f"The fixed-effects design is rank deficient (rank {rank} < {p} columns "
            f"{design.columns}): some combination of levels has no observations or columns are "
            "collinear. Drop or merge the empty cells."
        )
    _check_estimable(X, y, data, design, outcome, n_trials)
    scalar = len(specs) == 1 and specs[0].terms == ("1",)
    if not scalar:
        if nagq != 1:
            raise ModelError(
                f"Adaptive Gauss-Hermite quadrature (nagq={nagq}) needs a single scalar random "
                "effect, as in glmer; these random effects "
                f"({' + '.join(r.label for r in specs)}) are fitted by the Laplace approximation "
                "(nagq=1)."
            )
        with single_threaded_blas():
            return _fit_sparse(data, y, n_trials, off, design, specs, family, outcome, levels)
    group = specs[0].group
    if ":" in group:
        codes, names = group_codes(data, group)
        uniques = pd.Index(names)
    else:
        codes, uniques = pd.factorize(data[group], sort=True)
    ngroups = len(uniques)
    if ngroups < 2:
        raise ModelError(
            f"Group column {group!r} has {ngroups} distinct value(s); a random intercept needs "
            "at least two groups."
        )
    order = np.argsort(codes, kind="stable")
    codes_s = codes[order]
    starts = np.flatnonzero(np.r_[True, codes_s[1:] != codes_s[:-1]])
    Xs, ys, offs = X[order], y[order], off[order]
    negbin = family == "negbin"
    trs = None if n_trials is None else n_trials[order]
    prob = _Problem(ys, Xs, offs, codes_s, starts, negbin, GaussHermite.rule(nagq), trs)

    beta0, info = _glm_start(ys, Xs, offs, trs)
    nphi = p + 1 + int(negbin)
    precond = np.eye(nphi)
    try:
        precond[:p, :p] = np.linalg.cholesky(np.linalg.inv(info))
    except np.linalg.LinAlgError:
        precond[:p, :p] = np.diag(1.0 / np.sqrt(np.maximum(np.diag(info), INFO_FLOOR)))
    precond[p, p] = SD_PRECOND
    # moment start for the SD: spread of the participants' log observed/expected totals beyond
    # Poisson noise; the GLM intercept estimates log E[y] = x'beta + sd^2 / 2
    mu0 = np.exp(Xs @ beta0 + offs)
    beta0 = beta0.copy()
    if trs is None:
        obs, exp_ = prob.gsum(ys), prob.gsum(mu0)
        spread = np.var(np.log((obs + 0.5) / exp_)) - np.mean(1.0 / exp_)
        s0 = math.sqrt(min(max(spread, 0.01), 4.0))
        if design.intercept:
            beta0[0] -= 0.5 * s0**2
    else:
        s0 = BINOMIAL_SD_START
    phi0 = np.r_[beta0, s0]
    if negbin:
        excess = np.sum((ys - mu0) ** 2 - mu0)
        # E[(y - mu)^2 - mu] = mu^2 ((e^{s^2} - 1) + e^{s^2} / theta) under the model
        inv_theta = (excess / np.sum(mu0**2) - math.expm1(s0**2)) / math.exp(s0**2)
        theta0 = 1.0 / inv_theta if inv_theta > 1.0 / NB_THETA_START_MAX else NB_THETA_START_MAX
        phi0 = np.r_[phi0, math.log(min(max(theta0, NB_THETA_START_MIN), NB_THETA_START_MAX))]
    opt = _maximise(prob, phi0, precond, log_theta_max=_LOG_THETA_MAX)

    phi = opt.phi.copy()
    assert prob.u is not None  # set by every evaluation
    u = prob.u.copy()
    if phi[p] < 0:  # the likelihood is symmetric in the SD's sign
        phi[p] = -phi[p]
        u = -u
    sd = float(phi[p])
    theta = float(math.exp(phi[p + 1])) if negbin else None
    warn: list[str] = []
    singular = sd < _SINGULAR_TOL
    info_full = -opt.hess
    info_full[p, :] = np.sign(opt.phi[p] or 1.0) * info_full[p, :]
    info_full[:, p] = np.sign(opt.phi[p] or 1.0) * info_full[:, p]
    at_bound = negbin and phi[-1] >= _LOG_THETA_MAX - AT_CAP_TOL
    keep = np.arange(nphi - 1) if at_bound else np.arange(nphi)
    # the SD at its boundary: condition on it (the GLM covariance of beta)
    cov_params, vcov, pd_ok, newton = _observed_information(
        info_full, opt.grad, keep, p, condition=singular
    )
    converged = bool(pd_ok or singular) and bool(np.max(np.abs(newton)) < NEWTON_STEP_TOL)
    converged = bool(converged and np.all(np.isfinite(vcov)))
    warn = _fit_warnings(
        converged=converged,
        newton=newton,
        message=opt.message,
        singular=singular,
        singular_detail=f"the random-intercept SD is {sd:.2g} (< {_SINGULAR_TOL:g}); the model "
        "reduces to a GLM and the SEs treat the SD as known",
        at_bound=at_bound,
        mode_cap_hit=prob.mode_cap_hit,
    )

    loglik = float(opt.loglik)
    if nagq == 1:
        loglik_lme4: float | None = loglik
    elif not negbin and n_trials is None:
        pos = y > 0
        saturated = float(
            np.sum(y[pos] * np.log(y[pos])) - np.sum(y) - np.sum(special.gammaln(y + 1.0))
        )
        loglik_lme4 = loglik - saturated
    else:
        loglik_lme4 = None
    k = nphi
    names = design.columns + ["sd_group"] + (["log_theta"] if negbin else [])
    ranef = pd.Series(sd * u, index=pd.Index(uniques, name=group), name="(Intercept)")
    return GLMMResult(
        columns=list(design.columns),
        design=design,
        beta=phi[:p].copy(),
        vcov=vcov,
        nobs=n,
        ngroups={group: ngroups},
        loglik=loglik,
        loglik_lme4=loglik_lme4,
        aic=-2.0 * loglik + 2.0 * k,
        bic=-2.0 * loglik + k * math.log(n),
        df_loglik=k,
        converged=converged,
        singular=bool(singular),
        warnings=warn,
        family=family,
        link=LINKS[family],
        sd_group=sd,
        theta=theta,
        nagq=nagq,
        outcome=outcome,
        group=group,
        ranef=ranef,
        vcov_params=pd.DataFrame(cov_params, index=names, columns=names),
        covariate_means={v: float(np.mean(pd.to_numeric(data[v]))) for v in design.numeric},
        n_iter=opt.n_iter,
        n_eval=prob.n_eval,
        random=specs,
        varcorr_table=pd.DataFrame(
            [(group, "(Intercept)", None, sd * sd, sd)], columns=VARCORR_COLUMNS
        ),
        re_theta=np.array([sd]),
    )


def _observed_information(
    info: np.ndarray, grad: np.ndarray, keep: np.ndarray, p: int, *, condition: bool
) -> tuple[np.ndarray, np.ndarray, bool, np.ndarray]:
    """Covariances from the observed information over the parameters ``keep`` (those not at
    a bound) and the remaining Newton step, for the convergence check.

    Returns ``(cov_params, vcov, positive_definite, newton)``: the inverse information over
    ``keep`` (NaN elsewhere, and everywhere when it is not positive definite); ``vcov`` of the
    ``p`` fixed effects, from it, or conditional on the variance parameters (the inverse of
    the fixed effects' block) when ``condition`` or the information is not positive definite.
    """
    nphi = len(info)
    sub = info[np.ix_(keep, keep)]
    pd_ok = True
    try:
        np.linalg.cholesky(sub)
        cov_keep = np.linalg.inv(sub)
    except np.linalg.LinAlgError:
        pd_ok = False
        cov_keep = np.full((len(keep), len(keep)), np.nan)
    cov_params = np.full((nphi, nphi), np.nan)
    cov_params[np.ix_(keep, keep)] = cov_keep
    vcov = cov_params[:p, :p]
    if condition or not pd_ok:
        try:
            vcov = np.linalg.inv(info[:p, :p])
        except np.linalg.LinAlgError:
            vcov = np.full((p, p), np.nan)
    try:
        newton = np.linalg.solve(sub, grad[keep])
    except np.linalg.LinAlgError:
        newton = np.full(len(keep), np.inf)
    return cov_params, 0.5 * (vcov + vcov.T), pd_ok, newton


def _fit_warnings(
    *,
    converged: bool,
    newton: np.ndarray,
    message: str,
    singular: bool,
    singular_detail: str,
    at_bound: bool,
    mode_cap_hit: bool,
) -> list[str]:
    """The warnings of a GLMM fit (both engines), logged once."""
    warn: list[str] = []
    if not converged:
        step = float(np.max(np.abs(newton))) if newton.size else float("nan")
        warn.append(
            fitwarn.not_converged(
                "the gradient does not vanish or the Hessian is not negative definite "
                f"(max |Newton step| {step:.2g}; optimiser: {message})"
            )
        )
    if mode_cap_hit:
        warn.append(
            fitwarn.iteration_cap("The conditional-mode (inner Newton) iteration", MODE_MAXIT)
        )
    if singular:
        warn.append(fitwarn.singular_fit(singular_detail))
    if at_bound:
        warn.append(
            "The negative-binomial theta reached its upper bound (1e8): no overdispersion beyond "
            "the random effects; the Poisson model is adequate."
        )
    return fitwarn.report(logger, warn)


def _fit_sparse(
    data: pd.DataFrame,
    y: np.ndarray,
    n_trials: np.ndarray | None,
    off: np.ndarray,
    design: Design,
    specs: list[RandomEffect],
    family: str,
    outcome: str,
    levels: Mapping[str, Sequence[str]] | None,
) -> GLMMResult:
    """Laplace fit for any random-effects structure (the general engine)."""
    X = design.X
    n, p = X.shape
    terms = build_terms(data, specs, levels)
    for t in terms:
        if t.nlev < 2:
            raise ModelError(
                f"Grouping factor {t.spec.group!r} has {t.nlev} level; a random effect needs at "
                "least two."
            )
    re = ReStructure(terms, n)
    negbin = family == "negbin"
    prob = _Laplace(y, X, off, n_trials, negbin, re)
    K = re.ntheta
    beta0, info = _glm_start(y, X, off, n_trials)
    prob.beta_scale = 1.0 / np.sqrt(np.maximum(np.diag(info), INFO_FLOOR))
    theta0 = np.where(np.isfinite(re.lower), SD_START, 0.0)
    nphi = p + K + int(negbin)
    precond = np.eye(nphi)
    try:
        precond[:p, :p] = np.linalg.cholesky(np.linalg.inv(info))
    except np.linalg.LinAlgError:
        precond[:p, :p] = np.diag(1.0 / np.sqrt(np.maximum(np.diag(info), INFO_FLOOR)))
    precond[p : p + K, p : p + K] *= SD_PRECOND
    beta0 = beta0.copy()
    if n_trials is None and design.intercept:
        beta0[0] -= 0.5 * SD_START**2 * sum(1 for t in terms if "(Intercept)" in t.names)
    phi0 = np.r_[beta0, theta0]
    if negbin:
        mu0 = np.exp(X @ beta0 + off)
        excess = np.sum((y - mu0) ** 2 - mu0) / np.sum(mu0**2)
        theta_nb = 1.0 / excess if excess > 1.0 / NB_THETA_START_MAX else NB_THETA_START_MAX
        phi0 = np.r_[phi0, math.log(min(max(theta_nb, NB_THETA_START_MIN), NB_THETA_START_MAX))]
    opt = _maximise(prob, phi0, precond, log_theta_max=_LOG_THETA_MAX)
    phi = opt.phi.copy()
    # the likelihood depends on Lambda Lambda' only: make every diagonal theta >= 0
    th = phi[p : p + K]
    flip = np.ones(nphi)
    for j, offs in re.col_offdiag.items():
        if th[j] < 0:
            flip[p + j] = -1.0
            flip[[p + o for o in offs]] = -1.0
    phi = phi * flip
    hess = opt.hess * np.outer(flip, flip)
    grad_full = opt.grad * flip
    theta = phi[p : p + K]
    nb_theta = float(math.exp(phi[p + K])) if negbin else None
    diag = np.isfinite(re.lower)
    at_zero = diag & (theta < _SINGULAR_TOL)
    singular = bool(at_zero.any())
    at_bound = negbin and phi[-1] >= _LOG_THETA_MAX - AT_CAP_TOL
    drop: set[int] = set()
    for jj in np.flatnonzero(at_zero).tolist():
        drop |= {p + jj} | {p + o for o in re.col_offdiag.get(jj, [])}
    if at_bound:
        drop.add(nphi - 1)
    keep = np.array([i for i in range(nphi) if i not in drop])
    info_full = -hess
    cov_params, vcov, pd_ok, newton = _observed_information(
        info_full, grad_full, keep, p, condition=False
    )
    converged = bool(pd_ok) and bool(np.max(np.abs(newton), initial=0.0) < NEWTON_STEP_TOL)
    converged = bool(converged and np.all(np.isfinite(vcov)))
    warn = _fit_warnings(
        converged=converged,
        newton=newton,
        message=opt.message,
        singular=singular,
        singular_detail="a random-effect SD is estimated as (near) zero or a correlation as "
        "+/-1 (see varcorr()); the SEs treat those parameters as known",
        at_bound=at_bound,
        mode_cap_hit=prob.mode_cap_hit,
    )
    vc = pd.DataFrame(re.varcorr_rows(theta, 1.0), columns=VARCORR_COLUMNS)
    # conditional modes on the link scale, one row per level of every term
    prob.u = None
    u, _, _ = prob.modes(phi[:p], theta, nb_theta)
    bA, bB = re.lam_times(u[0], u[1], theta)
    pieces = []
    for t, vals in zip(re.terms, re.unsort_levels(bA, bB), strict=True):
        for j, name in enumerate(t.names):
            idx = pd.MultiIndex.from_arrays(
                [[t.spec.group] * t.nlev, t.level_names, [name] * t.nlev],
                names=["group", "level", "effect"],
            )
            pieces.append(pd.Series(vals[:, j], index=idx))
    ranef = pd.concat(pieces).rename("mode")
    names = design.columns + [f"theta{k + 1}" for k in range(K)] + (["log_theta"] if negbin else [])
    loglik = float(opt.loglik)
    first = terms[0]
    sd_first = float(vc["sdcor"].iloc[0])
    return GLMMResult(
        columns=list(design.columns),
        design=design,
        beta=phi[:p].copy(),
        vcov=vcov,
        nobs=n,
        ngroups={t.spec.group: t.nlev for t in terms},
        loglik=loglik,
        loglik_lme4=loglik,
        aic=-2.0 * loglik + 2.0 * nphi,
        bic=-2.0 * loglik + nphi * math.log(n),
        df_loglik=nphi,
        converged=converged,
        singular=singular,
        warnings=warn,
        family=family,
        link=LINKS[family],
        sd_group=sd_first,
        theta=nb_theta,
        nagq=1,
        outcome=outcome,
        group=first.spec.group,
        ranef=ranef,
        vcov_params=pd.DataFrame(cov_params, index=names, columns=names),
        covariate_means={v: float(np.mean(pd.to_numeric(data[v]))) for v in design.numeric},
        n_iter=opt.n_iter,
        n_eval=prob.n_eval,
        random=specs,
        varcorr_table=vc,
        re_theta=theta.copy(),
    )
