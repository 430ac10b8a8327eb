"""Per-replicate analysis: refit the pre-specified model and test its contrasts.

Power uses the very engine the analysis uses (issue #9): :func:`studykit.models.lmm.fit_lmm`
(REML, Satterthwaite df via ``contrast_df``) for Gaussian outcomes and
:func:`studykit.models.glmm.fit_glmm` (Laplace, z tests) for counts, with any random-effects
structure they support, and p-values from :func:`studykit.models.inference.wald_test`. When a
replicate keeps every row of the design, the first fit is reused through ``LMMResult.refit``
(lme4's ``refit``). The closed-form REML of earlier versions is now a test oracle
(``tests/reml_oracle.py``) that checks ``fit_lmm``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from studykit import estimators
from studykit.errors import ModelError, StudykitError
from studykit.models.glmm import fit_glmm
from studykit.models.inference import contrast_table
from studykit.models.lmm import fit_lmm
from studykit.power.spec import PowerHypothesis

__all__ = ["ENGINES", "Analyser", "make_analyser"]

logger = logging.getLogger(__name__)

ENGINES = ("studykit",)


@dataclass
class ContrastResults:
    """Results of one replicate's contrasts (one entry per contrast row)."""

    estimate: np.ndarray
    std_error: np.ndarray
    df: np.ndarray
    p_value: np.ndarray
    failed: bool = False
    singular: bool = False


class Analyser:
    """Fits one hypothesis' model to replicate data and tests its contrasts.

    Call with the full schedule's outcome vector ``y`` and the mask ``keep`` of observed
    rows; returns a :class:`ContrastResults`. A fit that fails (rank-deficient design after
    missingness, no convergence) gives NaN p-values and ``failed=True``: the replicate counts
    as a non-rejection.
    """

    engine: str = ""

    def __init__(self, hyp: PowerHypothesis, template: pd.DataFrame) -> None:
        self.hyp = hyp
        self.template = template
        self.k = len(hyp.contrasts)

    def _L(self, columns: list[str]) -> np.ndarray:
        L = np.zeros((self.k, len(columns)))
        for i, (label, weights) in enumerate(self.hyp.contrasts):
            for col, w in weights.items():
                if col not in columns:
                    raise ModelError(
                        f"Hypothesis {self.hyp.id}, contrast {label!r}: {col!r} is not a "
                        f"coefficient of the model. Coefficients: {', '.join(columns)}."
                    )
                L[i, columns.index(col)] = w
        return L

    def _failed(self) -> ContrastResults:
        nan = np.full(self.k, np.nan)
        return ContrastResults(nan, nan.copy(), nan.copy(), nan.copy(), failed=True)

    def __call__(self, y: np.ndarray, keep: np.ndarray) -> ContrastResults:  # pragma: no cover
        raise NotImplementedError


class EngineAnalyser(Analyser):
    """studykit's own model engine (``fit_lmm`` / ``fit_glmm``)."""

    engine = "studykit"

    def __init__(self, hyp: PowerHypothesis, template: pd.DataFrame) -> None:
        super().__init__(hyp, template)
        self.fit = _engine_fit(hyp)
        self.L: np.ndarray | None = None
        self._full: Any = None  # a fit on every template row, reused through refit()

    def __call__(self, y: np.ndarray, keep: np.ndarray) -> ContrastResults:
        try:
            if self._full is not None and keep.all():
                # same rows as a previous fit: reuse its design and grouping (lme4's refit)
                res = self._full.refit(y)
            else:
                data = self.template.loc[keep].copy()
                data[self.hyp.outcome] = y[keep]
                res = self.fit(data)
                if keep.all() and hasattr(res, "refit"):
                    self._full = res
        except StudykitError:
            return self._failed()
        if not getattr(res, "converged", True):
            return self._failed()
        if self.L is None:
            self.L = self._L(list(res.columns))
        return _tested(res, self.L, self.hyp)


def _tested(fit: Any, L: np.ndarray, hyp: PowerHypothesis) -> ContrastResults:
    """The contrasts' tests by the analysis' inference (``models.inference.contrast_table``)."""
    method = hyp.df_method if hyp.family == "gaussian" else "z"
    tab = contrast_table(fit, L, df_method=method, alternative=hyp.alternative)
    return ContrastResults(
        tab["estimate"].to_numpy(float),
        tab["std_error"].to_numpy(float),
        tab["df"].to_numpy(float),
        tab["p_value"].to_numpy(float),
        singular=bool(getattr(fit, "singular", False)),
    )


def _engine_fit(hyp: PowerHypothesis) -> Callable[[pd.DataFrame], object]:
    """The studykit engine call for this hypothesis (``fit_lmm`` or ``fit_glmm``)."""
    levels = {k: list(v) for k, v in hyp.levels.items()}
    random = list(hyp.random)
    if hyp.family == "gaussian":

        def fit(data: pd.DataFrame) -> object:
            return fit_lmm(data, hyp.outcome, list(hyp.fixed), random=random, levels=levels)

        return fit

    def fit_counts(data: pd.DataFrame) -> object:
        return fit_glmm(
            data, hyp.outcome, list(hyp.fixed), random=random, family=hyp.family, levels=levels
        )

    return fit_counts


class EstimatorAnalyser(Analyser):
    """A candidate analysis of :mod:`studykit.estimators` (cLDA, ANCOVA, post-only, DiD).

    Each replicate's data go through the estimator's own preparation (the ANCOVA's baseline
    covariates depend on the outcome), model and contrast; one contrast per level of the
    hypothesis' estimand; tests by :func:`studykit.models.inference.contrast_table`.
    """

    engine = "studykit"

    def __init__(self, hyp: PowerHypothesis, template: pd.DataFrame) -> None:
        super().__init__(hyp, template)
        if hyp.estimand is None:
            raise ModelError(
                f"Hypothesis {hyp.id}: estimator {hyp.estimator!r} needs the comparison's "
                "estimand (treatment, time axis, baseline); it comes from a protocol "
                "difference-in-differences hypothesis."
            )
        self.spec = hyp.estimand
        self.k = len(self.spec.levels)
        self.L: np.ndarray | None = None

    def __call__(self, y: np.ndarray, keep: np.ndarray) -> ContrastResults:
        spec = self.spec
        data = self.template.loc[keep].copy()
        data[spec.outcome] = y[keep]
        try:
            prep = estimators.prepare(data, self.hyp.estimator, spec)
            fit = estimators.fit_prepared(prep)
        except StudykitError:
            return self._failed()
        if not getattr(fit, "converged", True):
            return self._failed()
        if self.L is None or self.L.shape[1] != len(fit.columns):
            self.L = np.vstack(
                [
                    estimators.contrast_matrix(fit, prep, replace(spec, levels=(lv,)))
                    for lv in spec.levels
                ]
            )
        return _tested(fit, self.L, self.hyp)


def make_analyser(
    hyp: PowerHypothesis, template: pd.DataFrame, engine: str = "studykit"
) -> Analyser:
    """The analyser of ``hyp`` (the engine is always studykit's own, ``"studykit"``)."""
    if engine not in ENGINES:
        raise ModelError(f"Invalid engine {engine!r}. Expected one of: {', '.join(ENGINES)}.")
    if hyp.estimator != "did":
        return EstimatorAnalyser(hyp, template)
    return EngineAnalyser(hyp, template)
