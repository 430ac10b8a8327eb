"""Front doors for lme4 users: ``lmer``, ``glmer`` and ``clmm`` fit a model from a formula.

Each parses the formula with :mod:`studykit.models.formula` (never evaluated), binds it to the
data (factors and levels as R makes them, complete rows) and calls the engine:
:func:`~studykit.models.lmm.fit_lmm`, :func:`~studykit.models.glmm.fit_glmm` or
:func:`~studykit.models.clmm.fit_clmm`. Where the engine cannot fit a formula, the error names
what is not supported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from studykit.errors import FormulaError
from studykit.models.clmm import fit_clmm
from studykit.models.formula import ModelFrame, factor_levels, model_frame
from studykit.models.glmm import fit_glmm
from studykit.models.lmm import fit_lmm

__all__ = ["lmer", "glmer", "clmm"]

Levels = Mapping[str, Sequence[object]] | None


def _finish(fit: Any, mf: ModelFrame) -> Any:
    """Record the formula and the rows dropped for missing values on the engine's result."""
    changes: dict[str, Any] = {"formula": mf.formula.text}
    note = mf.exclusion_note
    if note is not None:
        changes["warnings"] = [note, *fit.warnings]
        if hasattr(fit, "n_excluded"):
            changes["n_excluded"] = mf.n_excluded
    return dataclasses.replace(fit, **changes)


def _need_bars(mf: ModelFrame, fn: str) -> None:
    if not mf.formula.bars:
        raise FormulaError(
            f"{fn}() needs at least one random-effects term such as (1 | participant_id); "
            f"{mf.formula.text!r} has none."
        )


def lmer(
    formula: str,
    data: pd.DataFrame,
    *,
    reml: bool = True,
    levels: Levels = None,
) -> Any:
    """Fit a linear mixed model from an lme4 formula (R: ``lmerTest::lmer``).

    Parameters
    ----------
    formula : str
        lme4 formula, e.g. ``"Reaction ~ Days + (Days | Subject)"``; see
        :func:`studykit.models.formula.parse_formula` for the syntax.
    data : pandas.DataFrame
        One row per observation; not modified.
    reml : bool, default True
        REML (lme4's default) or maximum likelihood.
    levels : mapping, optional
        Factor -> levels, reference first (default: R's order, see
        :func:`studykit.models.formula.model_frame`).

    Returns
    -------
    LMMResult
        With ``coef_table()``, ``varcorr()``, ``anova()``, ``emmeans()``, ``summary()``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> df = pd.DataFrame({"id": np.repeat(np.arange(20), 4), "day": np.tile(np.arange(4.0), 20)})
    >>> df["y"] = 2 + 0.5 * df["day"] + rng.normal(0, 1, 20)[df["id"]] + rng.normal(0, 1, 80)
    >>> fit = lmer("y ~ day + (1 | id)", df)
    >>> fit.columns, fit.formula
    (['(Intercept)', 'day'], 'y ~ day + (1 | id)')

    Notes
    -----
    Rows with a missing value in any variable of the formula are dropped and counted
    (``n_excluded`` and ``warnings``), as ``na.omit``. Tests of fixed effects use
    Satterthwaite's df (lmerTest's default).
    """
    mf = model_frame(formula, data, levels=levels)
    _need_bars(mf, "lmer")
    if mf.trials is not None:
        raise FormulaError("cbind() responses are for glmer(..., family='binomial'), not lmer().")
    if mf.offset is not None:
        raise FormulaError(
            "offset() in lmer() is not supported: subtract the offset from the response instead."
        )
    if not mf.formula.intercept:
        raise FormulaError(
            f"{mf.formula.text!r} removes the intercept (0 + / - 1): the linear mixed model "
            "engine fits models with an intercept only."
        )
    fit = fit_lmm(mf.data, mf.outcome, mf.fixed, random=mf.random, levels=mf.levels, reml=reml)
    return _finish(fit, mf)


def glmer(
    formula: str,
    data: pd.DataFrame,
    *,
    family: str = "poisson",
    nagq: int = 1,
    levels: Levels = None,
) -> Any:
    """Fit a generalized linear mixed model from an lme4 formula (R: ``lme4::glmer``).

    Parameters
    ----------
    formula : str
        lme4 formula; counts may have ``offset(log(exposure))``; binomial responses are
        ``cbind(successes, failures)`` (or ``cbind(s, n - s)``), 0/1 numbers, booleans or a
        two-level factor (its first level is the failure, as R).
    data : pandas.DataFrame
    family : {"poisson", "negbin", "binomial"}
        ``"negbin"`` is NB2 (``glmer.nb`` / ``glmmTMB(family = nbinom2)``); ``"binomial"``
        (logit) takes 0/1 responses or ``cbind(successes, failures)``.
    nagq : int, default 1
        1 = Laplace; more = adaptive Gauss-Hermite nodes (one scalar random effect only).
    levels : mapping, optional
        Factor -> levels, reference first.

    Returns
    -------
    GLMMResult

    Examples
    --------
    Simulated counts (not a real study):

    >>> import numpy as np
    >>> rng = np.random.default_rng(2)
    >>> df = pd.DataFrame({"id": np.repeat(np.arange(30), 3), "arm": np.tile(["a", "b", "c"], 30)})
    >>> df["n"] = rng.poisson(np.exp(1 + rng.normal(0, 0.3, 30)[df["id"]]))
    >>> fit = glmer("n ~ arm + (1 | id)", df, family="poisson")
    >>> fit.columns
    ['(Intercept)', 'armb', 'armc']
    """
    mf = model_frame(formula, data, levels=levels)
    _need_bars(mf, "glmer")
    text = mf.formula.text
    if not mf.formula.intercept:
        raise FormulaError(f"{text!r} removes the intercept: the GLMM engine needs one.")
    frame = mf.data
    outcome = mf.outcome
    trials = None
    if mf.trials is not None:
        if family != "binomial":
            raise FormulaError(f"{text!r}: cbind() responses need family='binomial'.")
        frame = frame.assign(_trials=mf.trials)
        trials = "_trials"
    elif family == "binomial":
        frame, outcome = _binary_response(frame, outcome, text)
    fit = fit_glmm(
        frame,
        outcome,
        mf.fixed,
        random=mf.random,
        family=family,
        levels=mf.levels,
        nagq=nagq,
        offset=mf.offset,
        trials=trials,
    )
    return _finish(fit, mf)


def _binary_response(frame: pd.DataFrame, outcome: str, text: str) -> tuple[pd.DataFrame, str]:
    """A Bernoulli response as 0/1: numbers as given; booleans and two-level factors as R's
    glmer (the first level is the failure)."""
    col = frame[outcome]
    if pd.api.types.is_bool_dtype(col):
        values = col.astype(float)
    elif pd.api.types.is_numeric_dtype(col):
        return frame, outcome
    else:
        lv = factor_levels(col)
        if len(lv) != 2:
            raise FormulaError(
                f"{text!r}: a binomial response that is a factor needs exactly two levels "
                f"(the first is the failure, as R); {outcome!r} has {lv[:10]}."
            )
        values = (col.astype(str) == lv[1]).astype(float)
    name = f"({outcome})"
    return frame.assign(**{name: values.to_numpy()}), name


def clmm(
    formula: str,
    data: pd.DataFrame,
    *,
    link: str = "logit",
    nagq: int = 1,
    levels: Levels = None,
    response_levels: Sequence[object] | None = None,
) -> Any:
    """Fit a cumulative link mixed model from a formula (R: ``ordinal::clmm``).

    Parameters
    ----------
    formula : str
        E.g. ``"kss ~ treatment * day + (1 | participant_id)"``: an ordinal response and one
        random intercept (the thresholds replace the intercept).
    data : pandas.DataFrame
    link : {"logit", "probit"}
    nagq : int, default 1
        1 = Laplace; more = adaptive Gauss-Hermite nodes (``clmm(..., nAGQ = nagq)``).
    levels : mapping, optional
        Factor -> levels for the predictors, reference first.
    response_levels : sequence, optional
        Ordered categories of the response, lowest first (default: a ``Categorical``'s order,
        else the sorted distinct values).

    Returns
    -------
    CLMMResult

    Examples
    --------
    Simulated ratings (not a real study):

    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> df = pd.DataFrame({"id": np.repeat(np.arange(40), 4), "x": np.tile([0.0, 1, 2, 3], 40)})
    >>> latent = 0.8 * df["x"] + rng.normal(0, 1, 40)[df["id"]] + rng.logistic(size=160)
    >>> df["score"] = np.digitize(latent, [0.0, 1.5, 3.0]) + 1
    >>> fit = clmm("score ~ x + (1 | id)", df)
    >>> fit.thresholds.index.tolist(), fit.columns
    (['1|2', '2|3', '3|4'], ['x'])
    """
    mf = model_frame(formula, data, levels=levels)
    _need_bars(mf, "clmm")
    text = mf.formula.text
    if mf.trials is not None or mf.offset is not None:
        raise FormulaError(f"{text!r}: clmm() takes neither cbind() nor offset().")
    if mf.formula.response.value.function is not None:
        raise FormulaError(f"{text!r}: an ordinal response cannot be transformed.")
    bars = mf.formula.bars
    if len(bars) != 1 or bars[0].terms or not bars[0].intercept:
        raise FormulaError(
            f"{text!r}: clmm() fits one random intercept (1 | group); several random-effects "
            "terms and random slopes are not supported."
        )
    frame = mf.data
    group = bars[0].group
    if ":" in group:
        frame = frame.copy()
        frame[group] = frame[group.split(":")].astype(str).agg(":".join, axis=1)
    fit = fit_clmm(
        frame,
        mf.outcome,
        mf.fixed,
        group=group,
        link=link,
        nagq=nagq,
        levels=mf.levels,
        response_levels=response_levels,
    )
    return _finish(fit, mf)
