"""Fast linear mixed models (REML / ML), giving lme4's answers.

The model is ``y = X beta + Z b + e`` with ``b ~ N(0, sigma^2 Lambda Lambda')`` and
``e ~ N(0, sigma^2 I)``; ``Lambda`` is the relative covariance factor parameterized by
``theta`` exactly as in lme4 (lower-triangular elements of each term's factor, column by
column). The REML / ML deviance is profiled over ``beta`` and ``sigma`` and computed from
per-block sufficient statistics: the random effects split into independent blocks (one per
participant for a single grouping factor; one per participant for participant and
participant x period, which are nested), every block's small ``m x m`` system is solved in one
vectorized numpy call, and the optimizer gets the analytic gradient. The same per-block
quantities give the analytic Hessian of the deviance and the derivatives of ``vcov(beta)``
used by Satterthwaite's degrees of freedom (:mod:`studykit.models.inference`).

Random effects are structured specifications, never formula strings::

    fit_lmm(df, "sws_min", ["arm", "night", "arm:night"],
            random=[("participant_id", ["1"])], levels=LEVELS)
    random=[("participant_id", ["1", "night_index"])]          # correlated slope
    random=[("participant_id", ["1"]), ("participant_id:period", ["1"])]   # nested
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import linalg, optimize, sparse
from scipy.sparse import csgraph

from studykit.errors import ModelError
from studykit.models.design import Design, build_design, parse_term

__all__ = ["RandomEffect", "LMMResult", "fit_lmm", "parse_random"]

logger = logging.getLogger(__name__)

_LOG2PI = math.log(2.0 * math.pi)
SINGULAR_TOL = 1e-4  # lme4::isSingular default


@dataclass(frozen=True)
class RandomEffect:
    """One random-effects term, ``(terms | group)`` in lme4 notation.

    Parameters
    ----------
    group : str
        Grouping column, or columns joined by ``:`` for their interaction
        (``"participant_id:period"``).
    terms : tuple of str
        ``"1"`` for a random intercept, plus variables with random slopes. Without ``"1"``
        the term has no intercept (lme4's ``(0 + x | g)``). All effects in one term are
        correlated (unstructured covariance).

    Examples
    --------
    >>> RandomEffect("participant_id", ("1", "night_index")).label
    '(1 + night_index | participant_id)'
    """

    group: str
    terms: tuple[str, ...] = ("1",)

    def __post_init__(self) -> None:
        if not isinstance(self.group, str) or not self.group:
            raise ModelError(f"Random-effect group must be a column name; got {self.group!r}.")
        for g in self.group.split(":"):
            if not g.strip().isidentifier():
                raise ModelError(
                    f"Random-effect group {self.group!r}: {g!r} is not a column name "
                    "(letters, digits and underscores; join columns with ':')."
                )
        terms = tuple(str(t).strip() for t in self.terms)
        if not terms:
            raise ModelError(f"Random effect for {self.group!r} has no terms; use ('1',).")
        for t in terms:
            if t not in ("1", "0"):
                parse_term(t)
        object.__setattr__(self, "terms", terms)

    @property
    def label(self) -> str:
        """lme4-style label, e.g. ``(1 + night_index | participant_id)``."""
        return f"({' + '.join(self.terms)} | {self.group})"


def parse_random(random: Any) -> list[RandomEffect]:
    """Normalize random-effect specifications to a list of :class:`RandomEffect`.

    Accepts a :class:`RandomEffect`, a group name (random intercept), a ``(group, terms)``
    pair, a mapping with keys ``group`` and ``terms``, or a list of those.

    Examples
    --------
    >>> parse_random("id")
    [RandomEffect(group='id', terms=('1',))]
    >>> [r.label for r in parse_random([("id", ["1"]), ("id:period", ["1"])])]
    ['(1 | id)', '(1 | id:period)']
    """
    if random is None:
        raise ModelError("A mixed model needs at least one random effect, e.g. random='id'.")
    if isinstance(random, RandomEffect | str | Mapping) or (
        isinstance(random, tuple) and len(random) == 2 and isinstance(random[0], str)
    ):
        items = [random]
    else:
        items = list(random)
    out: list[RandomEffect] = []
    for item in items:
        if isinstance(item, RandomEffect):
            out.append(item)
        elif isinstance(item, str):
            out.append(RandomEffect(item))
        elif isinstance(item, Mapping):
            if "group" not in item:
                raise ModelError(f"Random effect {dict(item)!r} needs a 'group' key.")
            terms = item.get("terms", ("1",))
            out.append(
                RandomEffect(item["group"], (terms,) if isinstance(terms, str) else tuple(terms))
            )
        elif isinstance(item, Sequence) and len(item) == 2:
            group, terms = item
            out.append(RandomEffect(group, (terms,) if isinstance(terms, str) else tuple(terms)))
        else:
            raise ModelError(
                f"Cannot read random effect {item!r}; give RandomEffect(group, terms), "
                "a group name, or a (group, [terms]) pair."
            )
    if not out:
        raise ModelError("A mixed model needs at least one random effect.")
    return out


# --------------------------------------------------------------------------------------------
# structure: sufficient statistics per block
# --------------------------------------------------------------------------------------------


@dataclass
class _ReTerm:
    spec: RandomEffect
    names: list[str]  # columns of the term's Z (lme4 names)
    q: int
    nlev: int
    level_names: list[str]
    codes: np.ndarray  # level index per observation
    theta_start: int  # index of the first theta of this term


class _Structure:
    """Everything that does not depend on theta: per-block cross-products."""

    def __init__(self, X: np.ndarray, y: np.ndarray, terms: list[_ReTerm], Zs: list[np.ndarray]):
        n, p = X.shape
        self.n, self.p = n, p
        self.X, self.y = X, y
        self.terms = terms
        # ---- blocks: connected components of the levels of all terms
        if len(terms) == 1:
            block = terms[0].codes
            nblocks = terms[0].nlev
            slots = [np.zeros(n, dtype=np.int64)]
            nslots = [1]
            self.level_block_slot = [
                np.column_stack([np.arange(terms[0].nlev), np.zeros(terms[0].nlev, np.int64)])
            ]
        else:
            offsets = np.cumsum([0] + [t.nlev for t in terms])
            rows, cols = [], []
            for k in range(1, len(terms)):
                rows.append(terms[0].codes + offsets[0])
                cols.append(terms[k].codes + offsets[k])
            r = np.concatenate(rows)
            c = np.concatenate(cols)
            tot = int(offsets[-1])
            graph = sparse.coo_matrix((np.ones(len(r)), (r, c)), shape=(tot, tot))
            nblocks, comp = csgraph.connected_components(graph, directed=False)
            block = comp[terms[0].codes]
            ublocks = np.unique(block)
            slots, nslots = [], []
            self.level_block_slot = []
            for k, t in enumerate(terms):
                lev_comp = comp[offsets[k] : offsets[k + 1]]
                # rank of each level within its component (levels in sorted order)
                order = np.lexsort((np.arange(t.nlev), lev_comp))
                rank = np.empty(t.nlev, dtype=np.int64)
                sorted_comp = lev_comp[order]
                starts = np.r_[0, np.flatnonzero(np.diff(sorted_comp)) + 1]
                counts = np.diff(np.r_[starts, t.nlev])
                rank[order] = np.arange(t.nlev) - np.repeat(starts, counts)
                slots.append(rank[t.codes])
                nslots.append(int(rank.max()) + 1)
                self.level_block_slot.append(
                    np.column_stack([np.searchsorted(ublocks, lev_comp), rank])
                )
        self.nblocks = int(nblocks)
        # ---- layout of one block: for each term, nslots[k] slots of q_k effects
        self.term_offsets: list[int] = []
        m = 0
        for t, ns in zip(terms, nslots, strict=True):
            self.term_offsets.append(m)
            m += t.q * ns
        self.m = m
        self.nslots = nslots
        Zb = np.zeros((n, m))
        for t, Z, sl, off in zip(terms, Zs, slots, self.term_offsets, strict=True):
            base = off + sl * t.q
            for j in range(t.q):
                Zb[np.arange(n), base + j] = Z[:, j]
        # ---- theta -> Lambda positions
        rows_l, cols_l, tidx = [], [], []
        nth = 0
        self.lower: list[float] = []
        self.col_offdiag: dict[int, list[int]] = {}
        for t, ns, off in zip(terms, nslots, self.term_offsets, strict=True):
            t.theta_start = nth
            pairs = [(i, j) for j in range(t.q) for i in range(j, t.q)]  # column-major lower
            for s in range(ns):
                base = off + s * t.q
                for kk, (i, j) in enumerate(pairs):
                    rows_l.append(base + i)
                    cols_l.append(base + j)
                    tidx.append(nth + kk)
            self.lower += [0.0 if i == j else -np.inf for i, j in pairs]
            for kk, (i, j) in enumerate(pairs):
                if i == j:
                    self.col_offdiag[nth + kk] = [
                        nth + k2 for k2, (i2, j2) in enumerate(pairs) if j2 == j and i2 > j
                    ]
            nth += len(pairs)
        self.ntheta = nth
        self.lam_rows = np.array(rows_l)
        self.lam_cols = np.array(cols_l)
        self.lam_tidx = np.array(tidx)
        E = np.zeros((nth, m, m))
        E[self.lam_tidx, self.lam_rows, self.lam_cols] = 1.0
        self.E = E
        # ---- sufficient statistics per block
        order = np.argsort(block, kind="stable")
        bsorted = block[order]
        starts = np.r_[0, np.flatnonzero(np.diff(bsorted)) + 1]
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
        self.ZtZ = sums[:, : m * m].reshape(G, m, m)
        self.ZtX = sums[:, m * m : m * m + m * p].reshape(G, m, p)
        self.Zty = sums[:, m * m + m * p :].reshape(G, m)
        self.rhs = np.concatenate([self.ZtZ, self.ZtX, self.Zty[:, :, None]], axis=2)
        self.XtX = X.T @ X
        self.Xty = X.T @ y
        self.yty = float(y @ y)
        self.ZtX_flat = self.ZtX.reshape(G * m, p)
        self.Zty_flat = self.Zty.reshape(G * m)

    def lam(self, theta: np.ndarray) -> np.ndarray:
        L = np.zeros((self.m, self.m))
        L[self.lam_rows, self.lam_cols] = theta[self.lam_tidx]
        return L

    def evaluate(self, theta: np.ndarray, reml: bool, level: int = 0) -> dict[str, Any]:
        """Profiled deviance (level 0), + gradient (1), + Hessian pieces (2)."""
        m, p, n = self.m, self.p, self.n
        Lam = self.lam(theta)
        Gm = Lam @ Lam.T
        if m == 1:
            B = 1.0 + self.ZtZ[:, 0, 0] * Gm[0, 0]
            sol = self.rhs / B[:, None, None]
            logdet_v = float(np.sum(np.log(B)))
        else:
            B = np.eye(m) + self.ZtZ @ Gm
            sol = np.linalg.solve(B, self.rhs)
            sign, ld = np.linalg.slogdet(B)
            logdet_v = float(np.sum(ld))
        S = sol[:, :, :m]
        W = sol[:, :, m : m + p]
        h = sol[:, :, m + p]
        G = S.shape[0]
        if m == 1:
            GW = W.reshape(G, p) * Gm[0, 0]
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
        r2 = max(yViy - float(beta @ XtViy), 1e-300)
        nprime = n - p if reml else n
        dev = logdet_v + nprime * (1.0 + _LOG2PI + math.log(r2 / nprime))
        if reml:
            dev += logdet_m
        out: dict[str, Any] = {
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
        E = self.E
        D = np.einsum("kij,lj->kil", E, Lam)
        D = D + D.transpose(0, 2, 1)  # d(Lam Lam')/d theta_k
        g = h - np.einsum("gip,p->gi", W, beta)
        Minv = linalg.cho_solve(cf, np.eye(p), check_finite=False)
        S_sum = S.sum(axis=0)
        gg = g.T @ g
        WM = W @ Minv
        WMW = np.einsum("gip,gjp->ij", WM, W)
        a_k = np.einsum("kij,ji->k", D, S_sum)
        r2_k = -np.einsum("kij,ij->k", D, gg)
        grad = a_k + nprime * r2_k / r2
        if reml:
            grad = grad - np.einsum("kij,ji->k", D, WMW)
        out.update(grad=grad, r2_k=r2_k, Minv=Minv, Lam=Lam)
        if level == 1:
            return out
        # ---- second derivatives (Hessian of the deviance in (theta, sigma))
        K = self.ntheta
        Dkl = np.einsum("kij,lmj->klim", E, E)
        Dkl = Dkl + Dkl.transpose(1, 0, 2, 3)
        DS = np.einsum("kij,gjl->kgil", D, S)
        T = np.einsum("kgij,lgji->kl", DS, DS)
        a_kl = np.einsum("klij,ji->kl", Dkl, S_sum) - T
        DW = np.einsum("kij,gjp->kgip", D, W)
        U = np.einsum("gip,kgiq->kpq", W, DW)  # X'V^-1 V_k V^-1 X
        Dg = np.einsum("kij,gj->kgi", D, g)
        t1 = np.einsum("kgi,gij,lgj->kl", Dg, S, Dg)
        wDg = np.einsum("gip,kgi->kp", W, Dg)
        t2 = wDg @ Minv @ wDg.T
        r2_kl = 2.0 * (t1 - t2) - np.einsum("klij,ij->kl", Dkl, gg)
        H_tt = a_kl.copy()
        if reml:
            Q = np.einsum("lgip,gij,kgjq->lkpq", DW, S, DW)
            WW = np.einsum("gip,gjq->ipjq", W, W)
            R = np.einsum("klij,ipjq->klpq", Dkl, WW)
            Mkl = Q + Q.transpose(1, 0, 2, 3) - R
            MU = np.einsum("pq,kqr->kpr", Minv, U)
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


@dataclass(frozen=True, eq=False)
class LMMResult:
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
        rows = []
        s2 = self.sigma**2
        for t in self._struct.terms:
            q = t.q
            T = np.zeros((q, q))
            k = t.theta_start
            for j in range(q):
                for i in range(j, q):
                    T[i, j] = self.theta[k]
                    k += 1
            C = s2 * T @ T.T
            sd = np.sqrt(np.diag(C))
            for i in range(q):
                rows.append((t.spec.group, t.names[i], None, C[i, i], sd[i]))
            for j in range(q):
                for i in range(j + 1, q):
                    cor = C[i, j] / (sd[i] * sd[j]) if sd[i] > 0 and sd[j] > 0 else float("nan")
                    rows.append((t.spec.group, t.names[j], t.names[i], C[i, j], cor))
        rows.append(("Residual", None, None, s2, self.sigma))
        return pd.DataFrame(rows, columns=["group", "var1", "var2", "vcov", "sdcor"])

    def ranef(self) -> pd.DataFrame:
        """Conditional modes of the random effects (lme4's ``ranef``), one row per level."""
        st = self._struct
        ev = st.evaluate(self.theta, self.reml, level=1)
        Lam = ev["Lam"]
        Gm = Lam @ Lam.T
        sol = np.linalg.solve(np.eye(st.m) + st.ZtZ @ Gm, st.rhs) if st.m > 1 else None
        if sol is None:
            B = 1.0 + st.ZtZ[:, 0, 0] * Gm[0, 0]
            sol = st.rhs / B[:, None, None]
        W = sol[:, :, st.m : st.m + st.p]
        h = sol[:, :, st.m + st.p]
        b = (h - np.einsum("gip,p->gi", W, self.beta)) @ Gm.T
        frames = []
        for t, off, bs in zip(st.terms, st.term_offsets, st.level_block_slot, strict=True):
            cols = off + bs[:, 1:2] * t.q + np.arange(t.q)[None, :]
            vals = b[bs[:, 0:1], cols]
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
            ev = st.evaluate(self.theta, self.reml, level=2)
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
            eig = np.linalg.eigvalsh(0.5 * (H + H.T))
            if eig.min() <= 0:
                msg = (
                    "Hessian of the deviance in (theta, sigma) is not positive definite "
                    "(boundary fit): Satterthwaite df are approximate."
                )
                if msg not in self.warnings:
                    self.warnings.append(msg)
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
        from studykit.models.inference import satterthwaite_df

        jac, avar = self._satterthwaite_parts()
        return float(satterthwaite_df(np.atleast_2d(np.asarray(L, float)), self.vcov, jac, avar)[0])

    def kenward_roger(self, L: Any) -> tuple[np.ndarray, np.ndarray]:
        """Kenward-Roger adjusted covariance of ``L @ beta`` and df per row (REML fits)."""
        from studykit.models.inference import kenward_roger

        return kenward_roger(self, np.atleast_2d(np.asarray(L, float)))

    def coef_table(
        self,
        *,
        df_method: str = "satterthwaite",
        alpha: float = 0.05,
        alternative: str = "two-sided",
    ) -> pd.DataFrame:
        """Fixed effects with t tests: lmerTest's ``summary`` (see ``inference.contrast_table``)."""
        from studykit.models.inference import contrast_table

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
        from studykit.models.inference import contrast_table

        return contrast_table(
            self, L, names=names, df_method=df_method, alpha=alpha, alternative=alternative
        )

    def anova(self, *, type: int = 3, df_method: str = "satterthwaite") -> pd.DataFrame:
        """Type III F tests of every fixed term (lmerTest's ``anova``)."""
        from studykit.models.inference import anova_table

        return anova_table(self, type=type, df_method=df_method)

    def summary(self) -> str:
        """A short text summary (model, fit statistics, variance components, fixed effects)."""
        lines = [
            f"Linear mixed model fit by {'REML' if self.reml else 'maximum likelihood'}",
            f"  {self.outcome} ~ {' + '.join(self.design.columns[1:]) or '1'} + "
            + " + ".join(r.label for r in self.random),
            f"  nobs = {self.nobs}, groups: "
            + ", ".join(f"{k} {v}" for k, v in self.ngroups.items()),
            f"  logLik = {self.loglik:.4f}, AIC = {self.aic:.2f}, BIC = {self.bic:.2f}",
            f"  converged = {self.converged}, singular = {self.singular}",
        ]
        for w in self.warnings:
            lines.append(f"  warning: {w}")
        lines.append(self.varcorr().to_string(index=False))
        lines.append(self.coef_table().to_string(index=False))
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# fitting
# --------------------------------------------------------------------------------------------


def _group_codes(data: pd.DataFrame, group: str) -> tuple[np.ndarray, list[str]]:
    cols = [c.strip() for c in group.split(":")]
    for c in cols:
        if c not in data.columns:
            raise ModelError(
                f"Grouping variable {c!r} is not a column of the data. Columns: "
                f"{', '.join(map(str, data.columns[:30]))}."
            )
    if len(cols) == 1:
        key = data[cols[0]].astype("string")
    else:
        key = data[cols[0]].astype("string")
        for c in cols[1:]:
            key = key + ":" + data[c].astype("string")
    codes, uniques = pd.factorize(key, sort=True)
    return codes.astype(np.int64), [str(u) for u in uniques]


def _optimize(st: _Structure, reml: bool) -> tuple[np.ndarray, dict[str, Any]]:
    lower = np.array(st.lower)
    x0 = np.where(np.isfinite(lower), 1.0, 0.0)
    nev = [0]

    def fun(th: np.ndarray) -> tuple[float, np.ndarray]:
        nev[0] += 1
        ev = st.evaluate(th, reml, level=1)
        return ev["dev"], ev["grad"]

    bounds = [(0.0 if np.isfinite(lo) else None, None) for lo in lower]

    def run(start: np.ndarray) -> Any:
        return optimize.minimize(
            fun,
            start,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"ftol": 1e-14, "gtol": 1e-9, "maxiter": 500},
        )

    res = run(x0)
    theta = np.asarray(res.x, float)
    # In the theta parameterization a diagonal element at 0 always has zero gradient (the
    # covariance is quadratic in theta), so a gradient method can stop on the boundary
    # although the deviance decreases into the interior, or in a boundary local optimum.
    # Boundary fits are therefore re-run from interior starting points; the best is kept.
    diag = np.isfinite(lower)
    restarts = 0
    if np.any(diag & (theta <= 1e-6)):
        best = float(res.fun)
        starts = []
        at_zero = diag & (theta <= 1e-6)
        flip = [k for j in np.flatnonzero(at_zero) for k in st.col_offdiag.get(int(j), [])]
        for val in (0.05, 0.2, 0.5, 1.0, 2.0, 5.0):
            for sign in (1.0, -1.0) if flip else (1.0,):
                cand = theta.copy()
                cand[at_zero] = val
                cand[flip] *= sign
                starts.append(cand)
        if st.ntheta > 1:
            starts += [x0 * sc for sc in (0.1, 0.3, 3.0)]
        devs = [st.evaluate(c, reml)["dev"] for c in starts]
        order = np.argsort(devs)
        tried = 0
        for i in order:
            if devs[i] >= best - 1e-10 and tried >= 1:
                break
            res2 = run(starts[i])
            tried += 1
            restarts += 1
            if res2.fun < best - 1e-10:
                best, theta, res = float(res2.fun), np.asarray(res2.x, float), res2
            if tried >= 4:
                break
    # Newton polish with the exact Hessian of the profiled deviance (interior parameters)
    free = ~(np.isfinite(lower) & (theta <= 1e-8))
    newton = 0
    if free.any():
        for _ in range(8):
            ev = st.evaluate(theta, reml, level=2)
            sigma = math.sqrt(ev["r2"] / ev["nprime"])
            H = _vp_hessian(ev, sigma)
            K = ev["K"]
            Hp = H[:K, :K] - np.outer(H[:K, K], H[K, :K]) / H[K, K]
            g = ev["grad"]
            Hf = Hp[np.ix_(free, free)]
            try:
                step_f = np.linalg.solve(Hf, g[free])
            except np.linalg.LinAlgError:
                break
            if not np.all(np.linalg.eigvalsh(0.5 * (Hf + Hf.T)) > 0):
                break
            step = np.zeros_like(theta)
            step[free] = step_f
            cand = theta - step
            if np.any(cand[np.isfinite(lower)] < 0):
                break
            if st.evaluate(cand, reml)["dev"] > ev["dev"] + 1e-10:
                break
            theta = cand
            newton += 1
            if np.max(np.abs(step)) < 1e-10:
                break
    ev = st.evaluate(theta, reml, level=1)
    grad = ev["grad"].copy()
    on_bound = np.isfinite(lower) & (theta <= 1e-8) & (grad > 0)
    grad[on_bound] = 0.0
    info = {
        "method": "L-BFGS-B + Newton",
        "success": bool(res.success),
        "message": str(res.message),
        "nfev": nev[0],
        "newton_steps": newton,
        "restarts": restarts,
        "max_abs_grad": float(np.max(np.abs(grad))) if grad.size else 0.0,
    }
    return theta, info


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
    It is minimized over ``theta`` (diagonal elements >= 0) by L-BFGS-B with the analytic
    gradient, then polished by Newton steps with the analytic Hessian. A fit is *singular*
    when a diagonal theta is below 1e-4 (lme4's ``isSingular``); estimates are then still
    reported in full (no fixed effect is zeroed), with a warning.
    """
    if not isinstance(data, pd.DataFrame):
        raise ModelError(f"data must be a pandas DataFrame, got {type(data).__name__}.")
    specs = parse_random(random)
    fixed = [str(t) for t in fixed]
    if outcome not in data.columns:
        raise ModelError(f"Outcome {outcome!r} is not a column of the data.")
    # ---- variables used and missing-row exclusion
    used: list[str] = [outcome]
    for t in fixed:
        used += list(parse_term(t))
    for r in specs:
        for t in r.terms:
            if t not in ("0", "1"):
                used += list(parse_term(t))
        used += [c.strip() for c in r.group.split(":")]
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
    rank = np.linalg.matrix_rank(X)
    if rank < p:
        raise ModelError(
            f"The fixed-effects design is rank deficient (rank {rank} < {p} columns "
            f"{design.columns}): some terms are confounded or a level combination is empty. "
            "Remove a term or check the data."
        )
    # ---- random-effect terms
    terms: list[_ReTerm] = []
    Zs: list[np.ndarray] = []
    ngroups: dict[str, int] = {}
    for r in specs:
        intercept = "1" in r.terms
        rterms = [t for t in r.terms if t not in ("0", "1")]
        if not intercept and not rterms:
            raise ModelError(f"Random effect {r.label} has no effects.")
        zd = build_design(sub, rterms, levels=levels, intercept=intercept)
        codes, names = _group_codes(sub, r.group)
        nlev = len(names)
        if nlev >= n:
            raise ModelError(
                f"Grouping factor {r.group!r} has {nlev} levels for {n} observations: its "
                "random effect cannot be told apart from the residual (lme4 refuses this too)."
            )
        terms.append(_ReTerm(r, list(zd.columns), zd.X.shape[1], nlev, names, codes, 0))
        Zs.append(zd.X)
        ngroups[r.group] = nlev
    n_re = sum(t.q * t.nlev for t in terms)
    if n_re > n:
        raise ModelError(
            f"{n_re} random effects for {n} observations: the model is not identifiable "
            "(lme4's check.nobs.vs.nRE). Simplify the random effects."
        )
    st = _Structure(X, y, terms, Zs)
    theta, info = _optimize(st, reml)
    ev = st.evaluate(theta, reml, level=1)
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
    converged = bool(info["success"]) or info["max_abs_grad"] < 2e-3
    if info["max_abs_grad"] >= 2e-3:
        converged = False
        warnings.append(
            f"Model failed to converge: max|grad| = {info['max_abs_grad']:.3g} "
            "(lme4's tolerance 0.002)."
        )
    elif not info["success"]:
        warnings.append(f"Optimizer reported: {info['message']} (gradient is small).")
    if singular:
        warnings.append(
            "Boundary (singular) fit: a random-effect variance is estimated as (near) zero "
            "or a correlation as +/-1 (see varcorr()). Estimates are reported in full; consider "
            "simplifying the random effects."
        )
    covariate_means = {v: float(np.mean(pd.to_numeric(sub[v]))) for v in design.numeric}
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
    )
