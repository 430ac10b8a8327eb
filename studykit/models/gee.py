"""GEE for counts: a marginal (population-averaged) sensitivity analysis to the count GLMM.

A Poisson GEE with log link and an exchangeable working correlation within participant, with
sandwich (robust) standard errors, fitted by :class:`statsmodels.genmod.generalized_estimating_equations.GEE`
on a studykit design matrix (explicit reference levels, lme4 column names). With a log link and a
random intercept, the GLMM's rate ratios for covariates are also population-averaged rate ratios,
so GEE and GLMM estimate the same contrasts under different assumptions: GEE's robust SEs stay
valid if the random-intercept or Poisson assumptions fail (given enough participants).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from studykit.errors import ModelError
from studykit.models.design import Design, build_design
from studykit.models.glmm import _check_counts, _check_estimable
from studykit.models.wald import WaldZTests

__all__ = ["GEEResult", "fit_gee"]

logger = logging.getLogger(__name__)

_COV_TYPES = ("robust", "bias_reduced", "naive")
_STRUCTURES = ("exchangeable", "independence")


@dataclass(frozen=True, eq=False)
class GEEResult(WaldZTests):
    """A fitted Poisson GEE (log link).

    Attributes
    ----------
    columns, design, beta, vcov, nobs, ngroups, converged, warnings, family, link
        As for :class:`studykit.models.glmm.GLMMResult`; ``vcov`` is the sandwich covariance
        of type ``cov_type``.
    loglik : float
        ``nan``: GEE has no likelihood.
    singular : bool
        Always ``False`` (no variance components).
    correlation : float
        Estimated exchangeable working correlation (0 for independence).
    scale : float
        Estimated dispersion (Pearson chi-square / (n - p)); 1 means Poisson variance.
    cov_struct, cov_type : str
        Working correlation and covariance estimator used.
    covariate_means : dict
        Numeric covariate -> its mean over the model rows (emmeans' reference grid).
    """

    columns: list[str]
    design: Design
    beta: np.ndarray
    vcov: np.ndarray
    nobs: int
    ngroups: int
    converged: bool
    warnings: list[str]
    correlation: float
    scale: float
    cov_struct: str
    cov_type: str
    outcome: str
    group: str
    family: str = "poisson"
    link: str = "log"
    loglik: float = math.nan
    singular: bool = False
    covariate_means: dict[str, float] = field(default_factory=dict)


def fit_gee(
    data: pd.DataFrame,
    outcome: str,
    fixed: Sequence[str],
    *,
    group: str,
    levels: Mapping[str, Sequence[str]] | None = None,
    cov_struct: str = "exchangeable",
    cov_type: str = "robust",
) -> GEEResult:
    """Fit a Poisson GEE (log link) with a working correlation within groups.

    Parameters
    ----------
    data : pandas.DataFrame
        One row per observation. Not modified.
    outcome : str
        Column of non-negative integer counts.
    fixed : sequence of str
        Terms, as for :func:`studykit.models.glmm.fit_glmm`.
    group : str
        Cluster column (participant).
    levels : mapping, optional
        Categorical variable -> levels, reference first.
    cov_struct : {"exchangeable", "independence"}
        Working correlation.
    cov_type : {"robust", "bias_reduced", "naive"}
        Sandwich (Liang-Zeger), Mancl-DeRouen bias-reduced sandwich (better with few
        clusters), or model-based covariance.

    Returns
    -------
    GEEResult

    Examples
    --------
    Simulated data (not a real study):

    >>> rng = np.random.default_rng(4)
    >>> ids = np.repeat([f"P{i:02d}" for i in range(40)], 3)
    >>> arm = np.repeat(["placebo", "ketamine"] * 20, 3)
    >>> y = rng.poisson(np.repeat(rng.gamma(8, 12 / 8, 40), 3) * np.where(arm == "ketamine", 0.8, 1))
    >>> df = pd.DataFrame({"id": ids, "arm": arm, "awakenings": y})
    >>> fit = fit_gee(df, "awakenings", ["arm"], group="id", levels={"arm": ["placebo", "ketamine"]})
    >>> fit.columns, fit.converged
    (['(Intercept)', 'armketamine'], True)
    >>> 0 < fit.correlation < 1
    True

    Notes
    -----
    Estimating equations of Liang & Zeger (1986), solved by statsmodels' ``GEE``; the
    exchangeable correlation and the dispersion are moment estimates. Tests are Wald z tests
    with the chosen covariance. GEE targets population-averaged rates and makes no
    distributional assumption beyond the mean model; use it as a sensitivity analysis next to
    :func:`studykit.models.glmm.fit_glmm`, not instead of the pre-registered model.
    """
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    if not isinstance(data, pd.DataFrame):
        raise ModelError(f"data must be a pandas DataFrame; got {type(data).__name__}.")
    if cov_struct not in _STRUCTURES:
        raise ModelError(f"Invalid cov_struct {cov_struct!r}. Expected one of {list(_STRUCTURES)}.")
    if cov_type not in _COV_TYPES:
        raise ModelError(f"Invalid cov_type {cov_type!r}. Expected one of {list(_COV_TYPES)}.")
    if isinstance(fixed, str):
        fixed = [fixed]
    for name, what in ((outcome, "outcome"), (group, "group")):
        if name not in data.columns:
            raise ModelError(f"The {what} column {name!r} is not in the data.")
    missing = data[[outcome, group]].isna().any(axis=1)
    if missing.any():
        raise ModelError(
            f"{int(missing.sum())} row(s) have a missing {outcome} / {group} value (rows "
            f"{list(data.index[missing.to_numpy()][:5])}). Drop incomplete rows before fitting "
            "and report them as excluded."
        )
    y = _check_counts(data[outcome], outcome)
    design = build_design(data, list(fixed), levels=levels, intercept=True)
    X = design.X
    if np.linalg.matrix_rank(X) < X.shape[1]:
        raise ModelError(
            f"The design is rank deficient (columns {design.columns}): some combination of "
            "levels has no observations."
        )
    if not np.any(y > 0):
        raise ModelError(f"Outcome {outcome!r} is zero in every row: no events to model.")
    _check_estimable(X, y, data, design, outcome)
    codes, uniques = pd.factorize(data[group], sort=True)
    if len(uniques) < 2:
        raise ModelError(f"Group column {group!r} needs at least two groups.")
    structure = (
        sm.cov_struct.Exchangeable()
        if cov_struct == "exchangeable"
        else sm.cov_struct.Independence()
    )
    model = sm.GEE(y, X, groups=codes, family=sm.families.Poisson(), cov_struct=structure)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = model.fit(cov_type=cov_type)
    messages = [f"{w.category.__name__}: {w.message}" for w in caught]
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    for m in messages:
        logger.warning(m)
    dep = structure.summary() if cov_struct == "exchangeable" else ""
    rho = float(structure.dep_params) if cov_struct == "exchangeable" else 0.0
    logger.debug("GEE working correlation: %s", dep)
    return GEEResult(
        columns=list(design.columns),
        design=design,
        beta=np.asarray(res.params, dtype=float),
        vcov=np.asarray(res.cov_params(), dtype=float),
        nobs=len(y),
        ngroups=len(uniques),
        converged=bool(converged),
        warnings=messages,
        correlation=rho,
        scale=float(res.scale),
        cov_struct=cov_struct,
        cov_type=cov_type,
        outcome=outcome,
        group=group,
        covariate_means={v: float(np.mean(pd.to_numeric(data[v]))) for v in design.numeric},
    )
