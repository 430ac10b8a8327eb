"""Fast linear mixed models (REML / ML), giving lme4's answers.

The model is ``y = X beta + Z b + e`` with ``b ~ N(0, sigma^2 Lambda Lambda')`` and
``e ~ N(0, sigma^2 I)``; ``Lambda`` is the relative covariance factor parameterized by
``theta`` exactly as in lme4 (lower-triangular elements of each term's factor, column by
column). The REML / ML deviance is profiled over ``beta`` and ``sigma``.

Random effects are stored sparsely (:class:`~studykit.models.random_effects.ReStructure`):
one *anchor* grouping factor and the terms nested in it form independent small blocks (one
per participant, say), the remaining crossed terms (scorer, site, item) a dense part that is
eliminated last. Two evaluators share that structure:

* *nested designs* (everything in the blocks): the deviance comes from per-block sufficient
  statistics, every block's small ``m x m`` system is solved in one vectorized numpy call, and
  the analytic gradient and Hessian of the deviance and the derivatives of ``vcov(beta)``
  (used by Satterthwaite's df) are computed from the same per-block quantities;
* *crossed designs*: the Cholesky factor of ``[Lambda' Z' Z Lambda + I, Lambda' Z' X,
  Lambda' Z' y; ...]`` is built by block elimination (lme4's eqs. 18-22 with the blocks
  eliminated first), and derivatives are central finite differences of the deviance pieces
  (as lmerTest's numerical Hessian and Jacobian).

Random effects are structured specifications, never formula strings::

    fit_lmm(df, "sws_min", ["arm", "night", "arm:night"],
            random=[("participant_id", ["1"])], levels=LEVELS)
    random=[("participant_id", ["1", "night_index"])]          # correlated slope
    random=[RandomEffect("participant_id", ("1", "night_index"), correlated=False)]  # ||
    random=[("participant_id", ["1"]), ("participant_id:period", ["1"])]   # nested
    random=[("participant_id", ["1"]), ("scorer", ["1"])]      # crossed
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import linalg, optimize

from studykit.errors import ModelError
from studykit.models import fitwarn
from studykit.models.design import Design, build_design, parse_term
from studykit.models.inference import contrast_table, kenward_roger, satterthwaite_df
from studykit.models.random_effects import (
    Factor,
    RandomEffect,
    ReStructure,
    build_terms,
    check_columns,
    parse_random,
    random_columns,
    single_threaded_blas,
)
from studykit.models.summary import ResultDisplay

__all__ = ["RandomEffect", "LMMResult", "fit_lmm", "parse_random"]

logger = logging.getLogger(__name__)

_LOG2PI = math.log(2.0 * math.pi)
SINGULAR_TOL = 1e-4  # lme4::isSingular default: a diagonal theta below this is on the boundary
CONVERGENCE_TOL = 2e-3  # lme4's check.conv.grad: max |Hessian-scaled gradient|
KR_MAX_Q = 4000  # Kenward-Roger works with dense q x q matrices (q random effects)
RANK_RTOL = 1e-10  # eigenvalues of X'X below this x the largest count as zero (rank check)
R2_FLOOR = 1e-300  # penalized RSS floor: keeps log(r2) finite for an exact fit
# finite differences (crossed designs), steps relative to max(|theta_k|, FD_STEP_FLOOR):
# central differences of the deviance pieces; truncation error ~ h^2, rounding ~ eps / h^2 for
# second derivatives. 1e-3 balances the two for the Hessian and the Jacobian of vcov(beta)
# (Satterthwaite df within 1e-5 of lmerTest); the gradient uses a smaller step (rounding ~eps/h).
FD_STEP = 1e-3
FD_GRAD_STEP = 1e-5
FD_STEP_FLOOR = 0.05
# Newton steps on crossed designs: Hessian by forward differences of the analytic gradient
# (error ~ h; the Hessian only shapes the steps and the convergence check's scaling)
FD_HESS_GRAD_STEP = 1e-6
# Newton optimizer
NEWTON_MAXIT = 100  # iteration cap (a warning names it when reached)
NEWTON_GRAD_RTOL = 1e-10  # stop: max |gradient| below this x max(1, |deviance|)
NEWTON_DECREMENT_RTOL = 1e-13  # stop: Newton decrement below this x max(1, |deviance|)
NEWTON_LINESEARCH_OK_RTOL = 1e-7  # a failed line search counts as converged below this decrement
EIG_RTOL = 1e-8  # Hessian eigenvalues below this x the largest are treated as non-positive
ARMIJO_C = 1e-4  # sufficient-decrease constant of the backtracking line search
LINESEARCH_HALVINGS = 40  # step halvings before the line search gives up
LBFGSB_OPTIONS = {"ftol": 1e-14, "gtol": 1e-9, "maxiter": 500}  # fallback optimizer settings
# boundary handling: a diagonal theta at or below this is "at zero" and the fit is re-run from
# interior starts (values below); a restart must improve the deviance by RESTART_GAIN to count
BOUNDARY_THETA = 1e-6
RESTART_VALUES = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)
RESTART_SCALES = (0.1, 0.3, 3.0)
RESTART_GAIN = 1e-10
MAX_RESTARTS = 4


# --------------------------------------------------------------------------------------------
# structure: sufficient statistics per block
# --------------------------------------------------------------------------------------------


class _Structure:
    """Everything that does not depend on theta: cross-products of Z, X and y."""

    def __init__(self, X: np.ndarray, y: np.ndarray, re: ReStructure):
        n, p = X.shape
        self.n, self.p = n, p
        self.X, self.y = X, y
        self.re = re
        self.terms = re.terms
        self.ntheta = re.ntheta
        self.lower = re.lower
        self.col_offdiag = re.col_offdiag
        self.m = m = re.m
        self.crossed = re.qB > 0
        self.XtX = X.T @ X
        self.Xty = X.T @ y
        self.yty = float(y @ y)
        if self.crossed:
            self.cross = re.cross(None, np.column_stack([X, y]))
            return
        # ---- nested: theta -> Lambda positions within one block, and their derivatives
        nth = self.ntheta
        E = np.zeros((nth, m, m))
        E[re.lamA_tidx, re.lamA_rows, re.lamA_cols] = 1.0
        self.E = E
        Dkl = np.einsum("kij,lmj->klim", E, E)
        self.Dkl = Dkl + Dkl.transpose(1, 0, 2, 3)  # d2(Lam Lam')/d theta_k d theta_l
        # ---- sufficient statistics per block
        Zb = re.zA
        order, starts = re.order, re.starts
        Zo, Xo, yo = Zb[order], X[order], y[order]
        feats = np.concatenate(
            [
                (Zo[:, :, None] * Zo[:, None, :]).reshape(n, m * m),
                (Zo[:, :, None] * Xo[:, None, :]).reshape(n, m * p),
                Zo * yo[:, None],
            ],
            axis=1,
        )
        sums = np.add.reduceat(feats, starts, axis=0)
        G = len(starts)
        self.nblocks_eff = G
        self.Zb = Zb
        self.obs_block = re.block
        self.ZtZ = sums[:, : m * m].reshape(G, m, m)
        self.ZtX = sums[:, m * m : m * m + m * p].reshape(G, m, p)
        self.Zty = sums[:, m * m + m * p :].reshape(G, m)
        self.rhs = np.concatenate([self.ZtZ, self.ZtX, self.Zty[:, :, None]], axis=2)
        self.ZtX_flat = self.ZtX.reshape(G * m, p)
        self.Zty_flat = self.Zty.reshape(G * m)

    def with_y(self, y: np.ndarray) -> _Structure:
        """The same design with a new response (only the y cross-products change)."""
        new = copy.copy(self)
        new.y = y
        new.Xty = self.X.T @ y
        new.yty = float(y @ y)
        if self.crossed:
            new.cross = self.re.cross(None, np.column_stack([self.X, y]))
            return new
        G, m = self.nblocks_eff, self.m
        Zty = np.empty((G, m))
        for j in range(m):
            Zty[:, j] = np.bincount(self.obs_block, weights=self.Zb[:, j] * y, minlength=G)
        new.Zty = Zty
        new.Zty_flat = Zty.reshape(G * m)
        new.rhs = np.concatenate([self.ZtZ, self.ZtX, Zty[:, :, None]], axis=2)
        return new

    def lam(self, theta: np.ndarray) -> np.ndarray:
        return self.re.lam_A(theta)

    def evaluate(
        self, theta: np.ndarray, reml: bool, level: int = 0, *, known: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Profiled deviance (level 0), + gradient (1), + Hessian pieces (2: for Newton steps;
        3: as accurate as the evaluator allows, for Satterthwaite's df). ``known``: a level-0
        result at the same ``theta`` (crossed designs reuse its factorization)."""
        if self.crossed:
            return self._evaluate_crossed(theta, reml, level, known)
        return self._evaluate_nested(theta, reml, level)

    # ------------------------------------------------------------------ crossed designs
    def _pieces(self, theta: np.ndarray, reml: bool) -> dict[str, Any]:
        """Deviance pieces from the block-eliminated Cholesky factor (lme4's eq. 34/41)."""
        n, p, qB = self.n, self.p, self.re.qB
        try:
            F = self.re.factor(theta, self.cross)
        except np.linalg.LinAlgError as exc:
            raise ModelError(
                "The fixed-effects design is rank deficient at these variance parameters."
            ) from exc
        LS = F.LS
        d1 = qB + p
        # inverse of the factor's random-effects (dense part) and fixed-effects rows: its
        # trailing block is RX^-1, and the analytic gradient reuses it
        LSinv, _info = linalg.lapack.dtrtri(LS[:d1, :d1], lower=1)
        RXinv = LSinv[qB:, qB:]
        logdet_v = F.logdet_A() + F.logdet_S(qB)
        logdet_m = 2.0 * float(np.sum(np.log(np.diag(LS)[qB:d1])))
        r2 = max(float(LS[-1, -1]) ** 2, R2_FLOOR)
        beta = RXinv.T @ LS[d1, qB:d1]
        Minv = RXinv.T @ RXinv
        nprime = n - p if reml else n
        ldet = logdet_v + (logdet_m if reml else 0.0)
        dev = ldet + nprime * (1.0 + _LOG2PI + math.log(r2 / nprime))
        return {
            "theta": theta,
            "dev": dev,
            "beta": beta,
            "r2": r2,
            "logdet_v": logdet_v,
            "logdet_m": logdet_m,
            "ldet": ldet,
            "nprime": nprime,
            "Minv": Minv,
            "factor": F,
            "LSinv": LSinv,
            "reml": reml,
        }

    def _analytic_gradient(self, pc: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
        """Gradients in theta of the deviance pieces ``ldet`` and ``r2`` (crossed designs).

        ``ldet``: :meth:`ReStructure.logdet_gradient` of the leading block of the factor
        (random effects, plus the fixed effects for REML). ``r2`` is the minimum over ``u``
        and ``beta`` of ``|y - X beta - Z Lambda u|^2 + |u|^2``, so (envelope theorem)
        ``d r2 / d theta_k = -2 (Z' res)' (d Lambda / d theta_k) u`` at the solution, where
        ``Lambda' Z' res = u`` (the normal equations). None where ``Lambda`` is (nearly)
        singular: the caller uses central differences there.
        """
        re, p = self.re, self.p
        F: Factor = pc["factor"]
        theta = pc["theta"]
        qB = re.qB
        LS = F.LS
        d1 = qB + p
        LSinv = pc["LSinv"]
        s = d1 if pc["reml"] else qB
        l_k = re.logdet_gradient(theta, F, LSinv[:s, :s])
        if l_k is None:
            return None
        # the solution [u; beta] of the (q + p) system: L11' x = last row of the factor
        xB = LSinv.T @ LS[d1, :d1]
        uB = xB[:qB]
        r = F.CL[:, :, d1] - F.CL[:, :, :d1] @ xB
        uA = (np.swapaxes(F.LAinv, 1, 2) @ r[:, :, None])[:, :, 0]
        zrA, zrB = re.lam_inv_t_times(uA, uB, theta)
        r2_k = -2.0 * re.lam_derivative_forms(zrA, zrB, uA, uB)
        return l_k, r2_k

    def _evaluate_crossed(
        self, theta: np.ndarray, reml: bool, level: int, known: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        if known is not None and known["reml"] == reml and np.array_equal(known["theta"], theta):
            out = dict(known)
        else:
            out = self._pieces(theta, reml)
        if level == 0:
            return out
        K = self.ntheta
        nprime = out["nprime"]
        scale = np.maximum(np.abs(theta), FD_STEP_FLOOR)
        if level <= 2:
            ag = self._analytic_gradient(out)
            if ag is not None:
                l_k, r2_k = ag
                out.update(grad=l_k + nprime * r2_k / out["r2"], Lam=self.lam(theta), K=K)
                if level == 1:
                    return out
                # Newton steps: Hessian pieces by forward differences of the analytic
                # gradient (K evaluations instead of the 2K + 2K + K(K-1)/2 of differences of
                # the deviance)
                h = FD_HESS_GRAD_STEP * scale
                l_kl = np.empty((K, K))
                r2_kl = np.empty((K, K))
                dMinv = np.empty((K, self.p, self.p))
                for j in range(K):
                    e = np.zeros(K)
                    e[j] = h[j]
                    pc = self._pieces(theta + e, reml)
                    agj = self._analytic_gradient(pc)
                    if agj is None:
                        break
                    l_kl[:, j] = (agj[0] - l_k) / h[j]
                    r2_kl[:, j] = (agj[1] - r2_k) / h[j]
                    dMinv[j] = (pc["Minv"] - out["Minv"]) / h[j]
                else:
                    M = np.linalg.inv(out["Minv"])
                    out.update(
                        r2_k=r2_k,
                        r2_kl=0.5 * (r2_kl + r2_kl.T),
                        H_tt_nosigma=0.5 * (l_kl + l_kl.T),
                        U=M[None] @ dMinv @ M[None],
                    )
                    return out

        def f(th: np.ndarray) -> tuple[float, float, np.ndarray]:
            pc = self._pieces(th, reml)
            return pc["ldet"], pc["r2"], pc["Minv"]

        def sides(h: np.ndarray) -> tuple[np.ndarray, ...]:
            lp, ln_, rp, rn = np.empty(K), np.empty(K), np.empty(K), np.empty(K)
            dMinv = np.empty((K, self.p, self.p))
            for k in range(K):
                e = np.zeros(K)
                e[k] = h[k]
                lp[k], rp[k], Mp = f(theta + e)
                ln_[k], rn[k], Mn = f(theta - e)
                dMinv[k] = (Mp - Mn) / (2.0 * h[k])
            return lp, ln_, rp, rn, dMinv

        l0, r0 = out["ldet"], out["r2"]
        hg = FD_GRAD_STEP * scale
        lp, ln_, rp, rn, _ = sides(hg)
        grad = (lp - ln_) / (2.0 * hg) + nprime * (rp - rn) / (2.0 * hg) / r0
        out.update(grad=grad, Lam=self.lam(theta))
        if level == 1:
            return out
        h = FD_STEP * scale
        lp, ln_, rp, rn, dMinv = sides(h)
        r2_k = (rp - rn) / (2.0 * h)
        out["r2_k"] = r2_k
        l_kl = np.empty((K, K))
        r2_kl = np.empty((K, K))
        for k in range(K):
            l_kl[k, k] = (lp[k] - 2.0 * l0 + ln_[k]) / h[k] ** 2
            r2_kl[k, k] = (rp[k] - 2.0 * r0 + rn[k]) / h[k] ** 2
            for j in range(k):
                e = np.zeros(K)
                e[k], e[j] = h[k], h[j]
                if level >= 3:  # four-point central difference: error ~ h^2
                    vals = []
                    for sk, sj in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                        e = np.zeros(K)
                        e[k] = sk * h[k]
                        e[j] = sj * h[j]
                        vals.append(f(theta + e)[:2])
                    a = np.array(vals)
                    d = (a[0] - a[1] - a[2] + a[3]) / (4.0 * h[k] * h[j])
                else:  # Newton steps only: one-point forward difference, error ~ h
                    fkj = np.array(f(theta + e)[:2])
                    d = (fkj - [lp[k], rp[k]] - [lp[j], rp[j]] + [l0, r0]) / (h[k] * h[j])
                l_kl[k, j] = l_kl[j, k] = d[0]
                r2_kl[k, j] = r2_kl[j, k] = d[1]
        M = np.linalg.inv(out["Minv"])
        U = M[None] @ dMinv @ M[None]  # X'V^-1 V_k V^-1 X = -dM/d theta_k
        out.update(U=U, r2_kl=r2_kl, H_tt_nosigma=l_kl, K=K)
        return out

    # ------------------------------------------------------------------ nested designs
    def _evaluate_nested(self, theta: np.ndarray, reml: bool, level: int) -> dict[str, Any]:
        m, p, n = self.m, self.p, self.n
        Lam = self.lam(theta)
        Gm = Lam @ Lam.T
        G = self.nblocks_eff
        # per block: B = I + Z'Z G;  [S, W, h] = B^-1 [Z'Z, Z'X, Z'y];  log|V| = sum log|B|
        if m == 1:
            B = 1.0 + self.ZtZ[:, 0, 0] * Gm[0, 0]
            sol = self.rhs / B[:, None, None]
            logdet_v = float(np.sum(np.log(B)))
        elif m == 2:
            B = self.ZtZ @ Gm
            a = B[:, 0, 0] + 1.0
            b = B[:, 0, 1]
            c = B[:, 1, 0]
            d = B[:, 1, 1] + 1.0
            det = a * d - b * c
            r0 = self.rhs[:, 0, :]
            r1 = self.rhs[:, 1, :]
            inv_det = (1.0 / det)[:, None]
            sol = np.stack(
                [(d[:, None] * r0 - b[:, None] * r1) * inv_det,
                 (a[:, None] * r1 - c[:, None] * r0) * inv_det],
                axis=1,
            )  # fmt: skip
            logdet_v = float(np.sum(np.log(det)))
        else:
            B = np.eye(m) + self.ZtZ @ Gm
            sol = np.linalg.solve(B, self.rhs)
            _sign, ld = np.linalg.slogdet(B)
            logdet_v = float(np.sum(ld))
        S = sol[:, :, :m]
        W = sol[:, :, m : m + p]
        h = sol[:, :, m + p]
        W_flat = W.reshape(G * m, p)
        if m == 1:
            GW = W_flat * Gm[0, 0]
            Gh = h.reshape(G) * Gm[0, 0]
        else:
            GW = (Gm @ W).reshape(G * m, p)
            Gh = (h @ Gm.T).reshape(G * m)
        M = self.XtX - self.ZtX_flat.T @ GW
        M = 0.5 * (M + M.T)
        XtViy = self.Xty - self.ZtX_flat.T @ Gh
        yViy = self.yty - float(self.Zty_flat @ Gh)
        try:
            cf = linalg.cho_factor(M, lower=True, check_finite=False)
        except linalg.LinAlgError as exc:
            raise ModelError(
                "The fixed-effects design is rank deficient at these variance parameters."
            ) from exc
        beta = linalg.cho_solve(cf, XtViy, check_finite=False)
        logdet_m = 2.0 * float(np.sum(np.log(np.diag(cf[0]))))
        r2 = max(yViy - float(beta @ XtViy), R2_FLOOR)
        nprime = n - p if reml else n
        dev = logdet_v + nprime * (1.0 + _LOG2PI + math.log(r2 / nprime))
        if reml:
            dev += logdet_m
        out: dict[str, Any] = {
            "theta": theta,
            "dev": dev,
            "beta": beta,
            "r2": r2,
            "logdet_v": logdet_v,
            "logdet_m": logdet_m,
            "cf": cf,
            "nprime": nprime,
        }
        if level == 0:
            return out
        K = self.ntheta
        E = self.E
        D = E @ Lam.T
        D = D + D.transpose(0, 2, 1)  # d(Lam Lam')/d theta_k, (K, m, m)
        g = h - W @ beta  # Z' V^-1 (y - X beta) per block, (G, m)
        Minv = linalg.cho_solve(cf, np.eye(p), check_finite=False)
        S_sum = S.sum(axis=0)
        gg = g.T @ g
        WM = W_flat @ Minv
        if m == 1:
            WMW = np.array([[float(np.sum(WM * W_flat))]])
        else:
            WMW = np.einsum("gip,gjp->ij", WM.reshape(G, m, p), W)
        Dflat = D.reshape(K, m * m)
        a_k = Dflat @ S_sum.T.reshape(m * m)
        r2_k = -(Dflat @ gg.reshape(m * m))
        grad = a_k + nprime * r2_k / r2
        if reml:
            grad = grad - Dflat @ WMW.T.reshape(m * m)
        out.update(grad=grad, r2_k=r2_k, Minv=Minv, Lam=Lam)
        if level == 1:
            return out
        # ---- second derivatives (Hessian of the deviance in (theta, sigma))
        Dkl = self.Dkl  # (K, K, m, m), constant
        if m == 1:  # scalars per block: broadcasting beats BLAS calls on 1 x 1 matrices
            DS = D[:, None] * S[None]
        else:
            DS = np.tensordot(D, S, axes=([2], [1])).transpose(0, 2, 1, 3)  # (K, G, m, m)
        T = DS.reshape(K, -1) @ DS.transpose(0, 1, 3, 2).reshape(K, -1).T
        a_kl = (Dkl.reshape(K * K, m * m) @ S_sum.T.reshape(m * m)).reshape(K, K) - T
        if m == 1:
            DW = D[:, None] * W[None]
        else:
            DW = np.tensordot(D, W, axes=([2], [1])).transpose(0, 2, 1, 3)  # (K, G, m, p)
        DW_flat = DW.reshape(K, G * m, p)
        U = W_flat.T[None] @ DW_flat  # X'V^-1 V_k V^-1 X, (K, p, p)
        Dg = g[None] @ D.transpose(0, 2, 1)  # (K, G, m)
        SDg = (S[None] @ Dg[..., None])[..., 0]
        t1 = Dg.reshape(K, -1) @ SDg.reshape(K, -1).T
        wDg = Dg.reshape(K, G * m) @ W_flat  # (K, p)
        t2 = wDg @ Minv @ wDg.T
        r2_kl = 2.0 * (t1 - t2) - (Dkl.reshape(K * K, m * m) @ gg.reshape(m * m)).reshape(K, K)
        H_tt = a_kl
        if reml:
            SDW = (S[None] @ DW).reshape(K, G * m, p)
            A1 = DW_flat.transpose(1, 0, 2).reshape(G * m, K * p)
            A2 = SDW.transpose(1, 0, 2).reshape(G * m, K * p)
            Q = (A1.T @ A2).reshape(K, p, K, p).transpose(0, 2, 1, 3)  # Q[l, k]
            WW = (W.reshape(G, m * p).T @ W.reshape(G, m * p)).reshape(m, p, m, p)
            R = Dkl.reshape(K * K, m * m) @ WW.transpose(0, 2, 1, 3).reshape(m * m, p * p)
            R = R.reshape(K, K, p, p)
            Mkl = Q + Q.transpose(1, 0, 2, 3) - R
            MU = Minv[None] @ U  # (K, p, p)
            c_kl = np.einsum("pq,klqp->kl", Minv, Mkl) - np.einsum("kpq,lqp->kl", MU, MU)
            H_tt = H_tt + c_kl
        out.update(U=U, a_kl=a_kl, r2_kl=r2_kl, H_tt_nosigma=H_tt, K=K)
        return out


def _vp_hessian(ev: dict[str, Any], sigma: float) -> np.ndarray:
    """Hessian of lmerTest's ``devfun_vp`` (deviance in (theta, sigma)) at ``sigma``."""
    K = ev["K"]
    s2 = sigma * sigma
    H = np.empty((K + 1, K + 1))
    H[:K, :K] = ev["H_tt_nosigma"] + ev["r2_kl"] / s2
    H[:K, K] = H[K, :K] = -2.0 * ev["r2_k"] / (s2 * sigma)
    H[K, K] = 6.0 * ev["r2"] / (s2 * s2) - 2.0 * ev["nprime"] / s2
    return H


# --------------------------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class LMMResult(ResultDisplay):
    """A fitted linear mixed model.

    Attributes
    ----------
    columns : list of str
        Fixed-effect names (lme4 style).
    design : Design
        The fixed-effects design (levels, terms) used to build reference grids.
    beta, vcov : numpy.ndarray
        Fixed-effect estimates and their covariance matrix.
    sigma : float
        Residual standard deviation.
    theta : numpy.ndarray
        Relative covariance factor parameters (lme4's ``getME(fit, "theta")``).
    loglik : float
        Log-likelihood (REML log-likelihood, ``-REMLcrit / 2``, for REML fits, as lme4).
    reml : bool
    aic, bic : float
    nobs : int
        Observations used.
    ngroups : dict
        Grouping factor -> number of levels.
    converged : bool
    singular : bool
        lme4's ``isSingular``: a variance parameter on its boundary (theta diagonal < 1e-4).
    warnings : list of str
    family, link : str
        ``"gaussian"`` and ``"identity"``.
    formula : str or None
        The lme4 formula when fitted by :func:`studykit.lmer`.
    """

    columns: list[str]
    design: Design
    beta: np.ndarray
    vcov: np.ndarray
    sigma: float
    theta: np.ndarray
    loglik: float
    reml: bool
    aic: float
    bic: float
    nobs: int
    ngroups: dict[str, int]
    converged: bool
    singular: bool
    warnings: list[str]
    outcome: str
    random: list[RandomEffect]
    covariate_means: dict[str, float]
    n_excluded: int = 0
    deviance: float = float("nan")
    optimizer: dict[str, Any] = field(default_factory=dict)
    family: str = "gaussian"
    link: str = "identity"
    formula: str | None = None
    _struct: Any = field(default=None, repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    # ---------------------------------------------------------------- variance components
    def varcorr(self) -> pd.DataFrame:
        """Variance components as lme4's ``as.data.frame(VarCorr(fit))``.

        Returns
        -------
        pandas.DataFrame
            Columns ``group, var1, var2, vcov, sdcor``: variances (``var2`` missing) with
            their SDs, then covariances with correlations, per term; last the residual.
        """
        s2 = self.sigma**2
        rows = self._struct.re.varcorr_rows(self.theta, s2)
        rows.append(("Residual", None, None, s2, self.sigma))
        return pd.DataFrame(rows, columns=["group", "var1", "var2", "vcov", "sdcor"])

    def _modes(self) -> tuple[np.ndarray, np.ndarray]:
        """Conditional modes ``b`` of the random effects (in the engine's two blocks)."""
        st = self._struct
        re = st.re
        theta = self.theta
        # spherical modes u solve (Lambda' Z' Z Lambda + I) u = Lambda' Z' (y - X beta)
        F = re.factor(theta, re.cross(None))
        r = st.y - st.X @ self.beta
        tA, tB = re.zt_times(r)
        rA = tA @ re.lam_A(theta)
        rB = re.lam_B_left_t(tB, theta) if re.qB else tB
        uA, uB = F.solve(rA, rB)
        bA, bB = re.lam_times(uA, uB, theta)
        return bA, bB

    def residuals(self, *, scaled: bool = False) -> np.ndarray:
        """Conditional residuals ``y - X beta - Z b`` (lme4's ``residuals(fit)``), in row order.

        ``scaled=True`` divides by sigma (the "Scaled residuals" of ``summary``).
        """
        st = self._struct
        r = st.y - st.X @ self.beta - st.re.z_times(*self._modes())
        return r / self.sigma if scaled else r

    def ranef(self) -> pd.DataFrame:
        """Conditional modes of the random effects (lme4's ``ranef``), one row per level."""
        re = self._struct.re
        bA, bB = self._modes()
        frames = []
        for t, vals in zip(re.terms, re.unsort_levels(bA, bB), strict=True):
            f = pd.DataFrame(vals, columns=t.names)
            f.insert(0, "level", t.level_names)
            f.insert(0, "group", t.spec.group)
            frames.append(f)
        return pd.concat(frames, ignore_index=True)

    # ---------------------------------------------------------------- inference
    def _satterthwaite_parts(self) -> tuple[np.ndarray, np.ndarray]:
        """(Jacobian of vcov(beta) w.r.t. (theta, sigma), asymptotic covariance of them)."""
        if "jac" not in self._cache:
            st = self._struct
            ev = self._cache.get("ev2") or st.evaluate(self.theta, self.reml, level=3)
            H = _vp_hessian(ev, self.sigma)
            Minv = ev["Minv"]
            s2 = self.sigma**2
            jac = np.empty((ev["K"] + 1, st.p, st.p))
            jac[: ev["K"]] = s2 * np.einsum("pq,kqr,rs->kps", Minv, ev["U"], Minv)
            jac[ev["K"]] = 2.0 * self.sigma * Minv
            try:
                avar = 2.0 * np.linalg.inv(H)
            except np.linalg.LinAlgError:
                avar = 2.0 * np.linalg.pinv(H)
            self._cache["jac"] = jac
            self._cache["avar"] = avar
            self._cache["hessian"] = H
        return self._cache["jac"], self._cache["avar"]

    def contrast_df(self, L: Any) -> float:
        """Satterthwaite degrees of freedom of the contrast ``L @ beta`` (lmerTest's method).

        Parameters
        ----------
        L : array_like
            Contrast weights, length ``p`` (one contrast).
        """
        if "jac" in self._cache:
            jac, avar = self._cache["jac"], self._cache["avar"]
        else:
            with single_threaded_blas():
                jac, avar = self._satterthwaite_parts()
        return float(satterthwaite_df(np.atleast_2d(np.asarray(L, float)), self.vcov, jac, avar)[0])

    def refit(self, y: Any) -> LMMResult:
        """Fit the same model to a new response vector (lme4's ``refit``).

        The design, grouping and random-effect structure are reused, so this is the fast
        path for simulation studies (power analysis, parametric bootstrap).

        Parameters
        ----------
        y : array_like
            New responses, one per row used by this fit (same order, ``nobs`` values).

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> df = pd.DataFrame({"id": np.repeat(np.arange(20), 3), "x": np.tile([0., 1, 2], 20)})
        >>> df["y"] = df["x"] + rng.normal(size=20)[df["id"]] + rng.normal(size=60)
        >>> fit = fit_lmm(df, "y", ["x"], random="id")
        >>> new = fit.refit(df["y"].to_numpy() * 2)
        >>> bool(np.allclose(new.beta, 2 * fit.beta))
        True
        """
        yv = np.asarray(y, dtype=float).ravel()
        if yv.shape != (self.nobs,) or not np.all(np.isfinite(yv)):
            raise ModelError(
                f"refit needs {self.nobs} finite responses (one per row of the original fit); "
                f"got {yv.size} values."
            )
        warns = [w for w in self.warnings if "rows excluded" in w]
        return _fit_structure(
            self._struct.with_y(yv),
            reml=self.reml,
            design=self.design,
            ngroups=dict(self.ngroups),
            warnings=warns,
            outcome=self.outcome,
            specs=list(self.random),
            covariate_means=dict(self.covariate_means),
            n_excluded=self.n_excluded,
        )

    def _kr_parts(self) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray]:
        """Kenward-Roger ingredients (pbkrtest's ``vcovAdj``): Phi, PhiA, P_i, W.

        pbkrtest works with ``n x n`` matrices; here every product is rewritten in the space
        of the ``q`` random effects with ``Sigma^-1 = (I - Z Lambda P^-1 Lambda' Z') / sigma^2``
        (``P = Lambda' Z' Z Lambda + I``), so the cost is ``O(q^3)`` whatever ``n``.
        """
        if "kr" in self._cache:
            return self._cache["kr"]
        st = self._struct
        re = st.re
        q = re.G * re.m + re.qB
        if q > KR_MAX_Q:
            raise ModelError(
                f"Kenward-Roger needs dense {q} x {q} matrices (one row per random effect); it "
                f"is available for up to {KR_MAX_Q} random effects. Use "
                "df_method='satterthwaite' (lmerTest's default)."
            )
        n = st.n
        X = st.X
        Z = re.z_sparse()
        ZtZ = (Z.T @ Z).toarray()
        ZtX = np.asarray(Z.T @ X)
        XtX = X.T @ X
        s2 = self.sigma**2
        Lam = re.lam_sparse(self.theta).toarray()
        LtZtZ = Lam.T @ ZtZ
        P = LtZtZ @ Lam + np.eye(q)
        cP = linalg.cho_factor(P, lower=True, check_finite=False)

        def pinv_(B: np.ndarray) -> np.ndarray:
            return np.asarray(linalg.cho_solve(cP, B, check_finite=False))

        R = Lam @ pinv_(Lam.T @ ZtX)  # Lambda P^-1 Lambda' Z'X
        T = np.eye(q) - Lam @ pinv_(LtZtZ)  # Sigma^-1 Z = Z T / s2
        Qzz = (ZtZ - ZtZ @ (np.eye(q) - T)) / s2  # Z' Sigma^-1 Z
        Qzx = (ZtX - ZtZ @ R) / s2  # Z' Sigma^-1 X
        Phi = np.linalg.inv((XtX - ZtX.T @ R) / s2)  # (X' Sigma^-1 X)^-1
        Z2Z = T.T @ ZtZ @ T / s2**2  # Z' Sigma^-2 Z
        Z2X = T.T @ (ZtX - ZtZ @ R) / s2**2  # Z' Sigma^-2 X
        Yty = XtX - ZtX.T @ R - R.T @ ZtX + R.T @ ZtZ @ R  # (X - Z R)'(X - Z R)
        ZtY = ZtX - ZtZ @ R
        X2X = Yty / s2**2  # X' Sigma^-2 X
        X3X = (Yty - ZtY.T @ Lam @ pinv_(Lam.T @ ZtY)) / s2**3  # X' Sigma^-3 X
        LZZL = LtZtZ @ Lam
        PL = pinv_(LZZL)
        tr_s2 = (n - 2.0 * np.trace(PL) + float(np.sum(PL * PL.T))) / s2**2  # tr Sigma^-2
        Es = re.cov_patterns()
        r = len(Es) + 1
        QE = [np.asarray((E @ Qzz.T).T) for E in Es]  # Qzz E_i
        Pm = [-(Qzx.T @ np.asarray(E @ Qzx)) for E in Es] + [-X2X]
        Q = [[np.zeros_like(Phi) for _ in range(r)] for _ in range(r)]
        tr2 = np.empty((r, r))
        for i, Ei in enumerate(Es):
            EiQzx = np.asarray(Ei @ Qzx)
            for j, Ej in enumerate(Es):
                Q[i][j] = EiQzx.T @ Qzz @ np.asarray(Ej @ Qzx)
                tr2[i, j] = float(np.sum(QE[i] * QE[j].T))
            Q[i][r - 1] = EiQzx.T @ Z2X
            Q[r - 1][i] = Q[i][r - 1].T
            tr2[i, r - 1] = tr2[r - 1, i] = float(Ei.multiply(Z2Z).sum())
        Q[r - 1][r - 1] = X3X
        tr2[r - 1, r - 1] = tr_s2
        IE2 = np.empty((r, r))
        for i in range(r):
            for j in range(r):
                IE2[i, j] = (
                    tr2[i, j] - 2.0 * np.trace(Phi @ Q[i][j]) + np.trace(Phi @ Pm[i] @ Phi @ Pm[j])
                )
        W = 2.0 * np.linalg.inv(IE2)
        U = np.zeros_like(Phi)
        for i in range(r):
            for j in range(r):
                U += W[i, j] * (Q[i][j] - Pm[i] @ Phi @ Pm[j])
        PhiA = Phi + 2.0 * Phi @ U @ Phi
        self._cache["kr"] = (Phi, PhiA, Pm, W)
        return self._cache["kr"]

    def kenward_roger(self, L: Any) -> tuple[np.ndarray, np.ndarray]:
        """Kenward-Roger adjusted covariance of ``L @ beta`` and df per row (REML fits)."""
        return kenward_roger(self, np.atleast_2d(np.asarray(L, float)))

    def coef_table(
        self,
        *,
        df_method: str = "satterthwaite",
        alpha: float = 0.05,
        alternative: str = "two-sided",
    ) -> pd.DataFrame:
        """Fixed effects with t tests: lmerTest's ``summary`` (see ``inference.contrast_table``)."""
        return contrast_table(
            self,
            np.eye(len(self.beta)),
            names=list(self.columns),
            df_method=df_method,
            alpha=alpha,
            alternative=alternative,
        )

    def contrast(
        self,
        L: Any,
        *,
        names: Sequence[str] | None = None,
        alternative: str = "two-sided",
        df_method: str = "satterthwaite",
        alpha: float = 0.05,
    ) -> pd.DataFrame:
        """Tests of linear contrasts ``L @ beta`` (rows of ``L``), one row each."""
        return contrast_table(
            self, L, names=names, df_method=df_method, alpha=alpha, alternative=alternative
        )


# --------------------------------------------------------------------------------------------
# fitting
# --------------------------------------------------------------------------------------------


def _positive_definite(H: np.ndarray) -> bool:
    return bool(np.linalg.eigvalsh(0.5 * (H + H.T)).min() > 0)


def _profiled_hessian(ev: dict[str, Any]) -> np.ndarray:
    """Hessian of the profiled deviance in theta (sigma profiled out: a Schur complement)."""
    sigma = math.sqrt(ev["r2"] / ev["nprime"])
    H = _vp_hessian(ev, sigma)
    K = ev["K"]
    return H[:K, :K] - np.outer(H[:K, K], H[K, :K]) / H[K, K]


@dataclass
class _OptResult:
    x: np.ndarray
    fun: float
    success: bool
    message: str
    nit: int
    ev: dict[str, Any] | None = None


def _newton(st: _Structure, reml: bool, start: np.ndarray, maxit: int = NEWTON_MAXIT) -> _OptResult:
    """Newton's method with the exact Hessian (modified to be positive definite) and
    backtracking. Unconstrained: the deviance only depends on Lambda Lambda', which is
    unchanged when a column of Lambda changes sign, so the signs are normalized afterwards
    (diagonal >= 0, as lme4's bounds)."""
    x = np.array(start, float)
    ev = st.evaluate(x, reml, level=2)
    for it in range(1, maxit + 1):
        g = ev["grad"]
        scale = max(1.0, abs(ev["dev"]))
        if np.max(np.abs(g)) < NEWTON_GRAD_RTOL * scale:
            return _OptResult(x, ev["dev"], True, "gradient below tolerance", it, ev)
        Hp = _profiled_hessian(ev)
        w, V = np.linalg.eigh(0.5 * (Hp + Hp.T))
        wmax = max(float(np.max(np.abs(w))), np.finfo(float).eps)
        vg = V.T @ g
        pos = w > EIG_RTOL * wmax
        coef = np.zeros_like(w)
        coef[pos] = -vg[pos] / w[pos]
        if not pos.all():
            # negative curvature (e.g. near a sign-symmetric saddle at theta_j = 0): move a
            # trust-region length along it, downhill
            radius = max(0.5, 0.5 * float(np.linalg.norm(x)))
            coef[~pos] = -np.where(vg[~pos] > 0, 1.0, -1.0) * radius
        d = V @ coef
        decrement = -float(g @ d)
        if decrement <= 0:  # no descent component: fall back to the gradient
            d = -g * (1.0 / wmax)
            decrement = -float(g @ d)
        if decrement < NEWTON_DECREMENT_RTOL * scale:
            return _OptResult(x, ev["dev"], True, "Newton decrement below tolerance", it, ev)
        alpha = 1.0
        for _ in range(LINESEARCH_HALVINGS):
            xn = x + alpha * d
            evn = st.evaluate(xn, reml, level=0)
            if evn["dev"] <= ev["dev"] - ARMIJO_C * alpha * decrement:
                break
            alpha *= 0.5
        else:
            ok = decrement < NEWTON_LINESEARCH_OK_RTOL * scale
            return _OptResult(x, ev["dev"], bool(ok), "line search could not improve", it)
        x = xn
        ev = st.evaluate(x, reml, level=2, known=evn)
    return _OptResult(x, ev["dev"], False, "iteration limit reached", maxit)


def _normalize_signs(st: _Structure, theta: np.ndarray) -> np.ndarray:
    """Flip column signs of Lambda so that every diagonal element is >= 0."""
    theta = theta.copy()
    for j, offs in st.col_offdiag.items():
        if theta[j] < 0:
            theta[j] = -theta[j]
            theta[offs] = -theta[offs]
    return theta


def _optimize(st: _Structure, reml: bool) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
    lower = np.array(st.lower)
    diag = np.isfinite(lower)
    x0 = np.where(diag, 1.0, 0.0)
    nev = [0]

    def fun(th: np.ndarray) -> tuple[float, np.ndarray]:
        nev[0] += 1
        ev = st.evaluate(th, reml, level=1)
        return ev["dev"], ev["grad"]

    bounds = [(0.0 if np.isfinite(lo) else None, None) for lo in lower]

    def run(start: np.ndarray) -> _OptResult:
        res = _newton(st, reml, start)
        res.x = _normalize_signs(st, res.x)
        if res.success:
            return res
        alt = optimize.minimize(
            fun,
            start,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options=LBFGSB_OPTIONS,
        )
        if alt.fun < res.fun:
            return _OptResult(np.asarray(alt.x, float), float(alt.fun), bool(alt.success),
                              "L-BFGS-B: " + str(alt.message), int(alt.nit))  # fmt: skip
        return res

    res = run(x0)
    theta = np.asarray(res.x, float)
    # In the theta parameterization a diagonal element at 0 always has zero gradient (the
    # covariance is quadratic in theta), so a gradient method can stop on the boundary
    # although the deviance decreases into the interior, or in a boundary local optimum.
    # Boundary fits are therefore re-run from interior starting points; the best is kept.
    restarts = 0
    if np.any(diag & (theta <= BOUNDARY_THETA)):
        best = float(res.fun)
        starts = []
        at_zero = diag & (theta <= BOUNDARY_THETA)
        flip = [k for j in np.flatnonzero(at_zero) for k in st.col_offdiag.get(int(j), [])]
        for val in RESTART_VALUES:
            for sign in (1.0, -1.0) if flip else (1.0,):
                cand = theta.copy()
                cand[at_zero] = val
                cand[flip] *= sign
                starts.append(cand)
        if st.ntheta > 1:
            starts += [x0 * sc for sc in RESTART_SCALES]
        devs = [st.evaluate(c, reml)["dev"] for c in starts]
        order = np.argsort(devs)
        tried = 0
        for i in order:
            if devs[i] >= best - RESTART_GAIN and tried >= 1:
                break
            res2 = run(starts[i])
            tried += 1
            restarts += 1
            if res2.fun < best - RESTART_GAIN:
                best, theta, res = float(res2.fun), np.asarray(res2.x, float), res2
            if tried >= MAX_RESTARTS:
                break
    if res.ev is not None and np.array_equal(res.ev["theta"], theta):
        ev = res.ev
    else:
        ev = st.evaluate(theta, reml, level=3)
    grad = ev["grad"]
    # lme4's convergence check: gradient scaled by the Cholesky factor of the Hessian
    try:
        R = np.linalg.cholesky(_profiled_hessian(ev)).T
        scaled = np.linalg.solve(R, grad)
    except np.linalg.LinAlgError:
        scaled = grad
    info = {
        "method": "projected Newton (exact Hessian); L-BFGS-B fallback",
        "success": bool(res.success),
        "message": str(res.message),
        "iterations": int(res.nit),
        "lbfgsb_evaluations": nev[0],
        "restarts": restarts,
        "max_abs_grad": float(np.max(np.abs(grad))) if grad.size else 0.0,
        "max_abs_scaled_grad": float(np.max(np.abs(scaled))) if grad.size else 0.0,
    }
    return theta, info, ev


def fit_lmm(
    data: pd.DataFrame,
    outcome: str,
    fixed: Sequence[str],
    *,
    random: Any,
    levels: Mapping[str, Sequence[str]] | None = None,
    reml: bool = True,
) -> LMMResult:
    """Fit a linear mixed model by REML or maximum likelihood.

    Parameters
    ----------
    data : pandas.DataFrame
        One row per observation. Rows with a missing value in any model variable are
        excluded and counted (``n_excluded``, and a message in ``warnings``).
    outcome : str
        Response column (numeric).
    fixed : sequence of str
        Fixed terms, e.g. ``["arm", "night", "arm:night"]`` (an intercept is always included).
    random : RandomEffect, str, (group, terms) pair, or a list of those
        Random-effects terms; see :func:`parse_random`.
    levels : mapping, optional
        Levels of categorical variables, reference first (``{"arm": ["placebo",
        "ketamine"]}``), for the fixed and random terms.
    reml : bool, default True
        REML (default, as lme4) or maximum likelihood.

    Returns
    -------
    LMMResult

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> ids = np.repeat(np.arange(30), 4)
    >>> x = np.tile(np.arange(4.0), 30)
    >>> y = 10 + 0.5 * x + rng.normal(0, 2, 30)[ids] + rng.normal(0, 1, 120)
    >>> df = pd.DataFrame({"id": ids, "x": x, "y": y})
    >>> fit = fit_lmm(df, "y", ["x"], random=[("id", ["1"])])
    >>> fit.columns
    ['(Intercept)', 'x']
    >>> bool(fit.converged), bool(fit.singular)
    (True, False)
    >>> list(fit.coef_table().columns[:4])
    ['term', 'estimate', 'std_error', 'statistic']

    Notes
    -----
    The profiled deviance is lme4's (Bates et al. 2015, J Stat Softw 67(1), eqs. 34 and 41):
    ML ``log|V| + n (1 + log(2 pi r^2 / n))`` and REML
    ``log|V| + log|X' V^-1 X| + (n - p)(1 + log(2 pi r^2 / (n - p)))`` with
    ``V = I + Z Lambda Lambda' Z'`` and ``r^2`` the penalized residual sum of squares.
    It is minimized over ``theta`` (diagonal elements >= 0) by a projected Newton method with
    the analytic gradient and Hessian (L-BFGS-B as a fallback); boundary solutions are
    re-checked from interior starting points. A fit is *singular*
    when a diagonal theta is below 1e-4 (lme4's ``isSingular``); estimates are then still
    reported in full (no fixed effect is zeroed), with a warning.
    """
    if not isinstance(data, pd.DataFrame):
        raise ModelError(f"data must be a pandas DataFrame, got {type(data).__name__}.")
    specs = parse_random(random)
    fixed = [str(t) for t in fixed]
    if outcome not in data.columns:
        raise ModelError(f"Outcome {outcome!r} is not a column of the data.")
    check_columns(data, specs)
    # ---- variables used and missing-row exclusion
    used: list[str] = [outcome]
    for t in fixed:
        used += list(parse_term(t))
    used += random_columns(specs)
    used = list(dict.fromkeys(used))
    missing_cols = [c for c in used if c not in data.columns]
    if missing_cols:
        raise ModelError(
            f"Model variables {missing_cols[:10]} are not columns of the data. Columns: "
            f"{', '.join(map(str, data.columns[:30]))}."
        )
    sub = data[used]
    complete = sub.notna().all(axis=1).to_numpy()
    warnings: list[str] = []
    n_excluded = int((~complete).sum())
    if n_excluded:
        bad = [c for c in used if sub[c].isna().any()]
        warnings.append(
            f"{n_excluded} of {len(sub)} rows excluded for missing values in {bad[:10]}."
        )
        sub = sub.loc[complete]
    if len(sub) == 0:
        raise ModelError("No complete rows to fit the model to.")
    try:
        y = pd.to_numeric(sub[outcome], errors="raise").to_numpy(dtype=float)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"Outcome {outcome!r} must be numeric.") from exc
    design = build_design(sub, fixed, levels=levels, intercept=True)
    X = design.X
    n, p = X.shape
    XtX_eig = np.linalg.eigvalsh(X.T @ X)
    rank = int(np.sum(XtX_eig > max(float(XtX_eig[-1]), np.finfo(float).tiny) * RANK_RTOL))
    if rank < p:
        raise ModelError(
            f"The fixed-effects design is rank deficient (rank {rank} < {p} columns "
            f"{design.columns}): some terms are confounded or a level combination is empty. "
            "Remove a term or check the data."
        )
    # ---- random-effect terms
    terms = build_terms(sub, specs, levels)
    ngroups: dict[str, int] = {}
    for term in terms:
        ngroups[term.spec.group] = term.nlev
    n_re = sum(term.q * term.nlev for term in terms)
    if n_re > n:
        raise ModelError(
            f"{n_re} random effects for {n} observations: the model is not identifiable "
            "(lme4's check.nobs.vs.nRE). Simplify the random effects."
        )
    st = _Structure(X, y, ReStructure(terms, n))
    covariate_means = {v: float(np.mean(pd.to_numeric(sub[v]))) for v in design.numeric}
    return _fit_structure(
        st,
        reml=reml,
        design=design,
        ngroups=ngroups,
        warnings=warnings,
        outcome=outcome,
        specs=specs,
        covariate_means=covariate_means,
        n_excluded=n_excluded,
    )


def _fit_structure(
    st: _Structure,
    *,
    reml: bool,
    design: Design,
    ngroups: dict[str, int],
    warnings: list[str],
    outcome: str,
    specs: list[RandomEffect],
    covariate_means: dict[str, float],
    n_excluded: int,
) -> LMMResult:
    n, p = st.n, st.p
    with single_threaded_blas():
        theta, info, ev = _optimize(st, reml)
    r2, nprime = ev["r2"], ev["nprime"]
    sigma = math.sqrt(r2 / nprime)
    beta = ev["beta"]
    vcov = sigma**2 * ev["Minv"]
    dev = ev["dev"]
    loglik = -0.5 * dev
    npar = p + st.ntheta + 1
    aic = -2.0 * loglik + 2.0 * npar
    bic = -2.0 * loglik + math.log(n) * npar
    lower = np.array(st.lower)
    singular = bool(np.any(theta[np.isfinite(lower)] < SINGULAR_TOL))
    converged = info["max_abs_scaled_grad"] < CONVERGENCE_TOL
    warnings = list(warnings)
    if not converged:
        warnings.append(
            fitwarn.not_converged(
                f"max|scaled gradient| = {info['max_abs_scaled_grad']:.3g} (lme4's tolerance "
                f"{CONVERGENCE_TOL:g})"
            )
        )
    elif info["message"] == "iteration limit reached":
        warnings.append(fitwarn.iteration_cap("The Newton optimizer", NEWTON_MAXIT))
    elif not info["success"]:
        warnings.append(f"Optimizer reported: {info['message']} (gradient is small).")
    if singular:
        warnings.append(
            fitwarn.singular_fit(
                "a random-effect variance is estimated as (near) zero or a correlation as +/-1 "
                "(see varcorr())"
            )
        )
    elif not _positive_definite(_vp_hessian(ev, sigma)):
        warnings.append(
            "The Hessian of the deviance in (theta, sigma) is not positive definite: "
            "Satterthwaite df are approximate."
        )
    fitwarn.report(logger, warnings)
    return LMMResult(
        columns=list(design.columns),
        design=design,
        beta=beta,
        vcov=vcov,
        sigma=sigma,
        theta=theta,
        loglik=loglik,
        reml=reml,
        aic=aic,
        bic=bic,
        nobs=n,
        ngroups=ngroups,
        converged=converged,
        singular=singular,
        warnings=warnings,
        outcome=outcome,
        random=specs,
        covariate_means=covariate_means,
        n_excluded=n_excluded,
        deviance=dev,
        optimizer=info,
        _struct=st,
        # crossed designs: the Newton iterations' Hessian is a cheap one; Satterthwaite's df
        # recompute the accurate one when first asked for
        _cache={} if st.crossed else {"ev2": ev},
    )
