"""Missing outcomes: delta-adjusted multiple imputation and the tipping point.

A sensitivity analysis for missing post-infusion outcomes of a Gaussian outcome. The missing
values are multiply imputed under missing at random (MAR) from a linear mixed model fitted to
the observed data (proper imputation: a parameter draw, then outcome draws given the
participant's observed outcomes), the imputed values of the treated arm are shifted by
``delta`` against the claim, each completed data set is analysed with the primary estimator,
and the analyses are combined with Rubin's rules (Barnard-Rubin degrees of freedom). Over a
grid of shifts, the tipping point is the smallest shift at which the verdict changes.

This module knows nothing of protocols: :mod:`studykit.analysis` gives it the observed data,
the rows to impute, the imputation model and the complete-data analysis.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from studykit.errors import ModelError
from studykit.models.design import build_design
from studykit.models.lmm import LMMResult, fit_lmm
from studykit.models.random_effects import RandomEffect

__all__ = [
    "ImputationModel",
    "PooledEstimate",
    "DeltaAdjustedResult",
    "barnard_rubin_df",
    "rubin_pool",
    "impute_mar",
    "delta_adjusted_analysis",
    "tipping_point",
]

#: A complete-data analysis: completed data -> (estimates, variances, complete-data df), one
#: value per contrast.
Analyse = Callable[[pd.DataFrame], tuple[np.ndarray, np.ndarray, np.ndarray]]
#: Bootstrap samples redrawn at most this many times when the imputation model cannot be fitted
_MAX_REDRAWS = 20


@dataclass(frozen=True)
class ImputationModel:
    """The linear mixed model that imputes: ``outcome ~ terms`` with random intercepts.

    Every random effect must be an intercept of a group nested in ``participant`` (e.g.
    ``participant_id`` and ``participant_id:period``): the observations of different
    participants are then independent, and the missing values of a participant are drawn
    given that participant's observed values.
    """

    outcome: str
    terms: tuple[str, ...]
    random: tuple[RandomEffect, ...]
    levels: dict[str, tuple[str, ...]]
    participant: str = "participant_id"

    def check(self) -> None:
        """Refuse random effects this imputation cannot draw from (a clear :class:`ModelError`)."""
        for r in self.random:
            if tuple(r.terms) != ("1",) or self.participant not in r.group.split(":"):
                raise ModelError(
                    f"Delta-adjusted imputation needs random intercepts of groups nested in "
                    f"{self.participant} (e.g. (1 | {self.participant}), (1 | "
                    f"{self.participant}:period)); the model has {r.label}."
                )

    def fit(self, data: pd.DataFrame) -> LMMResult:
        """Fit the model by REML."""
        return fit_lmm(
            data,
            self.outcome,
            list(self.terms),
            random=list(self.random),
            levels={k: list(v) for k, v in self.levels.items()},
            reml=True,
        )


@dataclass(frozen=True)
class PooledEstimate:
    """Rubin's rules for one scalar (see :func:`rubin_pool`)."""

    estimate: float
    std_error: float
    df: float
    within: float
    between: float
    total: float
    #: Proportion of the total variance due to missing data, ``(1 + 1/m) B / T``.
    lambda_: float
    m: int


def barnard_rubin_df(m: int, between: float, within: float, df_complete: float) -> float:
    """Barnard-Rubin (1999) degrees of freedom of a multiply imputed estimate.

    Parameters
    ----------
    m : int
        Number of imputations (at least 2).
    between, within : float
        Between-imputation variance ``B`` and mean within-imputation variance ``U``.
    df_complete : float
        Degrees of freedom of the complete-data analysis (``inf`` for a z test).

    Returns
    -------
    float
        ``nu = 1 / (1 / nu_old + 1 / nu_obs)`` with ``lambda = (1 + 1/m) B / T``,
        ``nu_old = (m - 1) / lambda^2`` and ``nu_obs = (nu_com + 1) / (nu_com + 3) nu_com
        (1 - lambda)``; ``nu_old`` alone when ``nu_com`` is infinite; ``nu_obs`` when
        ``B = 0``.

    Examples
    --------
    m = 3, B = 1, U = 0.5, nu_com = 20: T = 0.5 + 4/3, lambda = 0.7273, nu_old = 3.781,
    nu_obs = 4.980, nu = 2.149 (hand computation, tests/test_missing.py):

    >>> round(barnard_rubin_df(3, 1.0, 0.5, 20.0), 3)
    2.149
    >>> round(barnard_rubin_df(3, 1.0, 0.5, float("inf")), 3)  # Rubin (1987): nu_old
    3.781

    Notes
    -----
    References: Barnard J, Rubin DB (1999). Small-sample degrees of freedom with multiple
    imputation. Biometrika 86:948-955. Rubin DB (1987). Multiple Imputation for Nonresponse
    in Surveys. Wiley. Same formula as R's ``mice::pool`` (``barnard.rubin``).
    """
    if m < 2:
        raise ValueError("Rubin's rules need at least 2 imputations.")
    total = within + (1.0 + 1.0 / m) * between
    lam = (1.0 + 1.0 / m) * between / total if total > 0 else 0.0
    nu_old = (m - 1) / lam**2 if lam > 0 else math.inf
    if math.isinf(df_complete):
        return nu_old
    nu_obs = (df_complete + 1.0) / (df_complete + 3.0) * df_complete * (1.0 - lam)
    if math.isinf(nu_old):
        return nu_obs
    return 1.0 / (1.0 / nu_old + 1.0 / nu_obs)


def rubin_pool(estimates: ArrayLike, variances: ArrayLike, df_complete: float) -> PooledEstimate:
    """Combine the analyses of ``m`` completed data sets with Rubin's rules.

    Parameters
    ----------
    estimates, variances : array_like
        The estimate and its squared standard error from each completed data set.
    df_complete : float
        Degrees of freedom of the complete-data analysis (``inf``: z test).

    Returns
    -------
    PooledEstimate
        ``estimate`` = mean of the estimates, ``total`` = ``U + (1 + 1/m) B`` (``U`` mean
        variance, ``B`` variance of the estimates, ddof 1), ``std_error`` = ``sqrt(total)``,
        ``df`` from :func:`barnard_rubin_df`.

    Examples
    --------
    >>> p = rubin_pool([1.0, 2.0, 3.0], [0.5, 0.5, 0.5], 20.0)
    >>> p.estimate, p.within, p.between, round(p.total, 4)
    (2.0, 0.5, 1.0, 1.8333)

    Notes
    -----
    Rubin DB (1987). Multiple Imputation for Nonresponse in Surveys. Wiley, pp. 76-77;
    Barnard J, Rubin DB (1999). Biometrika 86:948-955.
    """
    q = np.asarray(estimates, dtype=float)
    u = np.asarray(variances, dtype=float)
    m = q.size
    if m < 2 or u.size != m:
        raise ValueError("Rubin's rules need at least 2 estimates, each with its variance.")
    qbar = float(q.mean())
    within = float(u.mean())
    between = float(q.var(ddof=1))
    total = within + (1.0 + 1.0 / m) * between
    lam = (1.0 + 1.0 / m) * between / total if total > 0 else 0.0
    return PooledEstimate(
        estimate=qbar,
        std_error=math.sqrt(total),
        df=barnard_rubin_df(m, between, within, df_complete),
        within=within,
        between=between,
        total=total,
        lambda_=lam,
        m=m,
    )


def _group_keys(frame: pd.DataFrame, model: ImputationModel) -> list[np.ndarray]:
    keys = []
    for r in model.random:
        cols = r.group.split(":")
        keys.append(frame[cols].astype(str).agg(":".join, axis=1).to_numpy())
    return keys


def _variance_components(fit: LMMResult, model: ImputationModel) -> tuple[list[float], float]:
    vc = fit.varcorr()
    out = []
    for r in model.random:
        row = vc[(vc["group"] == r.group) & vc["var2"].isna()]
        if len(row) != 1:  # pragma: no cover - the engine names groups as given
            raise ModelError(f"no variance for random effect {r.label} in the imputation fit")
        out.append(float(row["vcov"].iloc[0]))
    return out, float(fit.sigma) ** 2


def _bootstrap_fit(
    observed: pd.DataFrame, model: ImputationModel, rng: np.random.Generator
) -> LMMResult:
    """The imputation model fitted to a bootstrap sample of participants (a parameter draw)."""
    pid = model.participant
    ids = pd.unique(observed[pid].astype(str))
    by_id = {k: g for k, g in observed.groupby(observed[pid].astype(str), sort=False)}
    last: Exception | None = None
    for _ in range(_MAX_REDRAWS):
        draw = rng.choice(ids, size=ids.size, replace=True)
        sample = pd.concat(
            [by_id[k].assign(**{pid: f"{k}#{j}"}) for j, k in enumerate(draw)],
            ignore_index=True,
        )
        try:
            return model.fit(sample)
        except ModelError as exc:  # e.g. a cell absent from this sample: draw again
            last = exc
    raise ModelError(
        f"the imputation model could not be fitted to {_MAX_REDRAWS} bootstrap samples of "
        f"participants (last: {last})"
    )


def impute_mar(
    observed: pd.DataFrame,
    missing: pd.DataFrame,
    model: ImputationModel,
    *,
    imputations: int,
    seed: int,
) -> np.ndarray:
    """Proper multiple imputation of ``missing`` rows under MAR from a linear mixed model.

    Parameters
    ----------
    observed : pandas.DataFrame
        The observed rows (outcome present), with every model variable.
    missing : pandas.DataFrame
        Rows to impute: the same columns, outcome missing.
    model : ImputationModel
    imputations : int
        Number of imputations ``m``.
    seed : int
        Seed of the random draws (same seed, same imputations).

    Returns
    -------
    numpy.ndarray
        Shape ``(m, len(missing))``: the imputed outcomes, one row per imputation.

    Notes
    -----
    For each imputation: the participants are resampled with replacement and the model is
    refitted (REML), which draws the parameters (``beta``, the random-intercept variances and
    the residual variance) from their approximate sampling distribution (the bootstrap
    version of a proper imputation: Little & Rubin 2019, Statistical Analysis with Missing
    Data, 3rd ed., section 10.2.3; Efron 1994, JASA 89:463-475); then each participant's
    missing outcomes are drawn from their normal distribution given the participant's observed
    outcomes under the drawn parameters: mean ``X_m b + V_mo V_oo^-1 (y_o - X_o b)``, covariance
    ``V_mm - V_mo V_oo^-1 V_om``, with ``V = sigma^2 I + sum_g s_g^2 [same group g]``.
    """
    model.check()
    if imputations < 2:
        raise ValueError("multiple imputation needs at least 2 imputations.")
    if not len(missing):
        return np.zeros((imputations, 0))
    y = model.outcome
    frame = pd.concat([observed, missing], ignore_index=True)
    n_obs = len(observed)
    design = build_design(
        frame.assign(**{y: 0.0}),
        list(model.terms),
        levels={k: list(v) for k, v in model.levels.items()},
    )
    keys = _group_keys(frame, model)
    pid = frame[model.participant].astype(str).to_numpy()
    yo_all = pd.to_numeric(observed[y]).to_numpy(dtype=float)
    blocks = []
    for p in pd.unique(pid[n_obs:]):
        rows = np.flatnonzero(pid == p)
        o, m_ = rows[rows < n_obs], rows[rows >= n_obs]
        same = [k[np.r_[o, m_]][:, None] == k[np.r_[o, m_]][None, :] for k in keys]
        blocks.append((o, m_, same))
    out = np.empty((imputations, len(missing)))
    for i, child in enumerate(np.random.SeedSequence(seed).spawn(imputations)):
        rng = np.random.default_rng(child)
        fit = _bootstrap_fit(observed, model, rng)
        if fit.columns != design.columns:
            raise ModelError(
                "the imputation model's bootstrap fit has other coefficients than the data "
                f"({fit.columns} vs {design.columns})"
            )
        variances, s2 = _variance_components(fit, model)
        mu = design.X @ fit.beta
        for o, m_, same in blocks:
            k = o.size
            V = s2 * np.eye(k + m_.size)
            for v, s in zip(variances, same, strict=True):
                V = V + v * s
            mean = mu[m_]
            cov = V[k:, k:]
            if k:
                Voo, Vmo = V[:k, :k], V[k:, :k]
                sol = np.linalg.solve(Voo, np.column_stack([yo_all[o] - mu[o], Vmo.T]))
                mean = mean + Vmo @ sol[:, 0]
                cov = cov - Vmo @ sol[:, 1:]
            cov = (cov + cov.T) / 2.0
            out[i, m_ - n_obs] = rng.multivariate_normal(mean, cov, method="cholesky")
    return out


@dataclass(frozen=True)
class DeltaAdjustedResult:
    """A delta-adjusted multiple-imputation analysis over a grid of shifts.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per shift x contrast: ``delta`` (the shift applied to the imputed values of
        the shifted arm, signed), ``contrast`` (index), ``estimate``, ``std_error``, ``df``
        (Barnard-Rubin), ``within``, ``between``, ``lambda_``, ``df_complete``, ``m``.
    n_imputed, n_shifted : int
        Missing values imputed, and how many of them were shifted.
    imputations : int
    seed : int
    imputed : numpy.ndarray
        The MAR imputations, shape ``(m, n_imputed)``.
    """

    table: pd.DataFrame
    n_imputed: int
    n_shifted: int
    imputations: int
    seed: int
    imputed: np.ndarray = field(repr=False)


def delta_adjusted_analysis(
    observed: pd.DataFrame,
    missing: pd.DataFrame,
    *,
    model: ImputationModel,
    shifted: np.ndarray,
    deltas: Sequence[float],
    analyse: Analyse,
    imputations: int = 20,
    seed: int = 0,
) -> DeltaAdjustedResult:
    """Impute under MAR, shift the imputed values of one arm, analyse and pool, per shift.

    Parameters
    ----------
    observed, missing : pandas.DataFrame
        Observed rows and the rows to impute (see :func:`impute_mar`).
    model : ImputationModel
    shifted : numpy.ndarray of bool
        Which rows of ``missing`` get the shift (e.g. the ketamine arm's).
    deltas : sequence of float
        Shifts added to the shifted imputed values (signed: a negative shift lowers them).
    analyse : callable
        The complete-data analysis: completed data (``observed`` then ``missing`` with the
        outcome filled in, same row order every call) -> (estimates, variances, df), one per
        contrast.
    imputations : int, default 20
    seed : int, default 0

    Returns
    -------
    DeltaAdjustedResult

    Examples
    --------
    A toy study (SIMULATED): 12 participants, two times, the second missing for three of
    them; the complete-data analysis is the mean change (its variance and n - 1 df):

    >>> from studykit.models.random_effects import RandomEffect
    >>> rng = np.random.default_rng(1)
    >>> ids = np.repeat([f"P{i:02d}" for i in range(12)], 2)
    >>> d = pd.DataFrame({"participant_id": ids, "time": ["pre", "post"] * 12})
    >>> d["y"] = rng.normal(size=12)[np.arange(24) // 2] + (d["time"] == "post") + rng.normal(size=24)
    >>> miss = (d["time"] == "post") & d["participant_id"].isin(["P00", "P01", "P02"])
    >>> model = ImputationModel("y", ("time",), (RandomEffect("participant_id"),),
    ...                         {"time": ("pre", "post")})
    >>> def analyse(full):
    ...     w = full.pivot(index="participant_id", columns="time", values="y")
    ...     ch = w["post"] - w["pre"]
    ...     return np.array([ch.mean()]), np.array([ch.var() / len(ch)]), np.array([len(ch) - 1.0])
    >>> res = delta_adjusted_analysis(d[~miss], d[miss].assign(y=np.nan), model=model,
    ...     shifted=np.ones(3, bool), deltas=[0.0, -1.0], analyse=analyse, imputations=5, seed=1)
    >>> res.n_imputed, res.table["delta"].tolist()
    (3, [0.0, -1.0])
    >>> e = res.table["estimate"].to_numpy()
    >>> bool(np.isclose(e[0] - e[1], 3 / 12))  # 3 of 12 changes lowered by 1
    True

    Notes
    -----
    The same ``m`` MAR imputations serve every shift, so results across the grid differ only
    by the shift. With nothing to impute the complete-data analysis is returned as it is
    (``m`` = 1, its own df). References: Ratitch B, O'Kelly M, Tosiello R (2013). Missing
    data in clinical trials: from clinical assumptions to statistical analysis using
    pattern mixture models. Pharm Stat 12:337-347; Rubin (1987); Barnard & Rubin (1999).
    """
    shifted = np.asarray(shifted, dtype=bool)
    if shifted.shape != (len(missing),):
        raise ValueError("'shifted' needs one flag per missing row.")
    y = model.outcome
    rows = []
    if not len(missing):
        est, var, dfc = (
            np.asarray(a, dtype=float) for a in analyse(observed.reset_index(drop=True))
        )
        for delta in deltas:
            for j in range(est.size):
                rows.append(
                    {
                        "delta": float(delta),
                        "contrast": j,
                        "estimate": est[j],
                        "std_error": math.sqrt(var[j]),
                        "df": dfc[j],
                        "within": var[j],
                        "between": 0.0,
                        "lambda_": 0.0,
                        "df_complete": dfc[j],
                        "m": 1,
                    }
                )
        return DeltaAdjustedResult(pd.DataFrame(rows), 0, 0, 0, seed, np.zeros((0, 0)))
    imputed = impute_mar(observed, missing, model, imputations=imputations, seed=seed)
    frame = pd.concat([observed, missing], ignore_index=True)
    y_obs = pd.to_numeric(observed[y]).to_numpy(dtype=float)
    results = {}
    for delta in deltas:
        per = []
        for i in range(imputations):
            filled = imputed[i] + float(delta) * shifted
            frame[y] = np.concatenate([y_obs, filled])
            per.append(tuple(np.asarray(a, dtype=float) for a in analyse(frame)))
        results[float(delta)] = per
    for delta, per in results.items():
        est = np.array([p[0] for p in per])
        var = np.array([p[1] for p in per])
        dfc = np.array([p[2] for p in per])
        for j in range(est.shape[1]):
            df_complete = float(np.mean(dfc[:, j]))
            pooled = rubin_pool(est[:, j], var[:, j], df_complete)
            rows.append(
                {
                    "delta": delta,
                    "contrast": j,
                    "estimate": pooled.estimate,
                    "std_error": pooled.std_error,
                    "df": pooled.df,
                    "within": pooled.within,
                    "between": pooled.between,
                    "lambda_": pooled.lambda_,
                    "df_complete": df_complete,
                    "m": pooled.m,
                }
            )
    return DeltaAdjustedResult(
        table=pd.DataFrame(rows),
        n_imputed=len(missing),
        n_shifted=int(shifted.sum()),
        imputations=imputations,
        seed=seed,
        imputed=imputed,
    )


def tipping_point(
    deltas: Sequence[float], verdicts: Sequence[str], reference: str
) -> tuple[float | None, str | None]:
    """The smallest shift (by size) whose verdict differs from ``reference``.

    Parameters
    ----------
    deltas : sequence of float
        The grid of shifts (their sizes are compared).
    verdicts : sequence of str
        The verdict at each shift.
    reference : str
        The verdict it is compared with (the primary analysis').

    Returns
    -------
    (float or None, str or None)
        The tipping shift and the verdict there, or ``(None, None)``: no tipping point
        within the grid.

    Examples
    --------
    >>> tipping_point([0, 5, 10, 15], ["supported", "supported", "inconclusive",
    ...               "inconclusive"], "supported")
    (10, 'inconclusive')
    >>> tipping_point([0, 5], ["supported", "supported"], "supported")
    (None, None)
    """
    order = sorted(range(len(deltas)), key=lambda i: abs(deltas[i]))
    for i in order:
        if verdicts[i] != reference:
            return deltas[i], verdicts[i]
    return None, None
