"""Candidate analyses of one crossover treatment comparison with baseline nights.

A two-period crossover records, in each period, a *baseline* night before the infusion and
one or more *post* nights after it. The effect of interest is ketamine minus placebo on a
post night (or the mean over several). Four analyses estimate it; each is here as

1. a **data preparation** (the rows it uses and any derived columns),
2. a **model spec** for the engine (:func:`studykit.models.lmm.fit_lmm` for Gaussian
   outcomes, :func:`studykit.models.glmm.fit_glmm` for counts), and
3. the **contrast** ``L`` over the model's coefficients,

with the test and interval from :func:`studykit.models.inference.contrast_table` (the one
inference path of the package).

``"did"`` - difference in differences
    All nights of the window; fixed ``treatment + time + treatment:time + period``; random
    ``(1 | participant) + (1 | participant:period)``. Contrast: treatment difference in the
    change from the baseline night (emmeans on the ``treatment x time`` grid).
``"clda"`` - constrained baseline (constrained longitudinal data analysis)
    All nights of the window; the baseline nights of both treatments share the period's mean
    (randomization makes them equal in expectation), and treatment acts on post nights
    only: fixed ``time + period + tx_<level>...`` where ``tx_<level>`` is 1 on a ketamine
    post night ``level`` and 0 elsewhere; random as DiD. Contrast: the ``tx_`` coefficient(s).
``"ancova"`` - Kenward & Roger (2010) ANCOVA
    Post nights only, with two baseline covariates: the participant's mean baseline over the
    periods (``bl_mean``) and the period's deviation from it (``bl_within = baseline -
    bl_mean``); fixed ``treatment + period [+ time + treatment:time] + bl_within + bl_mean``;
    random ``(1 | participant)`` [``+ (1 | participant:period)`` with several post nights].
    Contrast: treatment difference on the contrast night(s) (emmeans).
``"post_only"`` - post nights only, no baseline
    As the ANCOVA without the covariates.

>>> from studykit.estimators import ESTIMATORS
>>> ESTIMATORS
('did', 'clda', 'ancova', 'post_only')

Notes
-----
Why they differ. Within a crossover the participant effect cancels from the treatment
comparison, so subtracting a baseline night (DiD) mostly *adds* that night's noise: with
night-to-night correlation ``rho`` within a participant and period, the DiD variance is about
``2 (1 - rho)`` times that of a post-only comparison when there is no participant-by-period
variation. cLDA uses the baseline nights without letting them carry a treatment difference
(Liang & Zeger 2000), and the ANCOVA weights the baseline by its estimated regression instead
of by 1; Kenward & Roger (2010) show that in a crossover only the *within-participant*
baseline deviation carries information on the treatment contrast, and that adding the
participant mean baseline as a second covariate keeps the analysis valid when the
between- and within-participant regressions differ.

Missing data. Rows with a missing outcome are left out (likelihood analysis, valid under
missing at random). The ANCOVA needs the period's baseline: post nights of a period without
a baseline night are left out (counted in ``n_excluded``); a participant with one period
keeps it (``bl_within = 0``).

References: Kenward MG, Roger JH (2010). The use of baseline covariates in crossover
studies. Biostatistics 11(1):1-17. Liang KY, Zeger SL (2000). Longitudinal data analysis of
continuous and discrete responses for pre-post designs. Sankhya B 62:134-148. Senn S (2002).
Cross-over Trials in Clinical Research, 2nd ed., Wiley (ch. 3, baselines).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from studykit.errors import ModelError
from studykit.models.emmeans import did_matrix, emmeans_matrix
from studykit.models.glmm import fit_glmm
from studykit.models.inference import contrast_table
from studykit.models.lmm import fit_lmm
from studykit.models.random_effects import RandomEffect

__all__ = [
    "ESTIMATORS",
    "ESTIMATOR_LABELS",
    "CrossoverSpec",
    "PreparedModel",
    "EstimatorResult",
    "prepare",
    "fit_prepared",
    "contrast_matrix",
    "estimate",
    "compare_estimators",
    "example_data",
    "observed_spec",
]

#: The candidate analyses, in the order they are reported.
ESTIMATORS: tuple[str, ...] = ("did", "clda", "ancova", "post_only")

#: One-line descriptions (used in tables and reports).
ESTIMATOR_LABELS: dict[str, str] = {
    "did": "difference in differences (unconstrained baseline)",
    "clda": "constrained baseline (cLDA): baseline nights share the period mean",
    "ancova": "Kenward-Roger 2010 ANCOVA: within-participant baseline deviation + participant mean baseline",
    "post_only": "post nights only (no baseline)",
}

_GAUSSIAN = "gaussian"
_COUNT_FAMILIES = ("poisson", "negbin")


@dataclass(frozen=True)
class CrossoverSpec:
    """What one treatment comparison is about: outcome, factors and their levels.

    Attributes
    ----------
    outcome : str
        Outcome column.
    family : {"gaussian", "poisson", "negbin"}
        Gaussian (linear mixed model) or counts (log-link GLMM; estimates on the log scale).
    treatment : str
        Treatment column.
    treatment_levels : tuple
        ``(reference, active)``, e.g. ``("placebo", "ketamine")``.
    time : str
        Column of the repeated time axis (``"night"``).
    baseline : str
        The baseline (pre-infusion) level of ``time``.
    window : tuple
        Levels of ``time`` the model uses, baseline first (e.g. ``("baseline", "post1",
        "post2", "day7")``); rows at other levels are not used.
    levels : tuple
        Post levels the contrast is about; several are averaged (equal weights).
    participant : str
        Participant column.
    period : str or None
        Period column of a crossover (``None``: parallel groups, one period).
    period_levels : tuple
        Levels of ``period``, reference first (default ``(1, 2)``).

    Examples
    --------
    >>> s = CrossoverSpec("n3_min", levels=("post1",), window=("baseline", "post1", "post2"))
    >>> s.post_levels
    ('post1', 'post2')
    """

    outcome: str
    family: str = _GAUSSIAN
    treatment: str = "treatment"
    treatment_levels: tuple[Any, ...] = ("placebo", "ketamine")
    time: str = "night"
    baseline: Any = "baseline"
    window: tuple[Any, ...] = ("baseline", "post1", "post2")
    levels: tuple[Any, ...] = ("post1",)
    participant: str = "participant_id"
    period: str | None = "period"
    period_levels: tuple[Any, ...] = (1, 2)

    def __post_init__(self) -> None:
        if self.family not in (_GAUSSIAN, *_COUNT_FAMILIES):
            raise ModelError(
                f"Unknown family {self.family!r}; expected gaussian, poisson or negbin."
            )
        if len(self.treatment_levels) != 2:
            raise ModelError(
                f"treatment_levels must be (reference, active); got {self.treatment_levels!r}."
            )
        if not self.window or self.window[0] != self.baseline:
            raise ModelError(
                f"The window {list(self.window)} must start with the baseline level "
                f"{self.baseline!r}."
            )
        bad = [lv for lv in self.levels if lv not in self.window or lv == self.baseline]
        if bad or not self.levels:
            raise ModelError(
                f"Contrast levels {list(self.levels)} must be post levels of the window "
                f"{list(self.window)}."
            )

    @property
    def post_levels(self) -> tuple[Any, ...]:
        """The window's levels after the baseline."""
        return tuple(self.window[1:])


@dataclass
class PreparedModel:
    """One estimator's data, model spec and contrast, ready for the engine.

    Attributes
    ----------
    estimator : str
        One of :data:`ESTIMATORS`.
    data : pandas.DataFrame
        The rows the model uses, with any derived columns.
    outcome : str
    family : str
    fixed : list of str
        Fixed terms for :func:`~studykit.models.design.build_design`.
    random : list of RandomEffect
        Random intercepts (Gaussian); counts use the first (participant) only.
    levels : dict
        Categorical variables and their levels, reference first.
    contrast : dict
        ``{"type": "coefficients", "weights": {column: w}}`` or ``{"type": "emmeans", ...}``
        (see :func:`contrast_matrix`).
    n_excluded : int
        Rows of the window left out by the preparation (missing outcome or baseline).
    description : str
    """

    estimator: str
    data: pd.DataFrame
    outcome: str
    family: str
    fixed: list[str]
    random: list[RandomEffect]
    levels: dict[str, list[Any]]
    contrast: dict[str, Any]
    n_excluded: int = 0
    description: str = ""

    def formula(self) -> str:
        """The model as an lme4 formula (for reading and for R cross-checks).

        Examples
        --------
        >>> import pandas as pd
        >>> df = pd.DataFrame({"participant_id": ["a", "a", "b", "b"], "period": [1, 1, 1, 1],
        ...                    "treatment": ["placebo", "placebo", "ketamine", "ketamine"],
        ...                    "night": ["baseline", "post1"] * 2, "y": [1.0, 2, 3, 4]})
        >>> spec = CrossoverSpec("y", window=("baseline", "post1"), period=None)
        >>> prepare(df, "clda", spec).formula()
        'y ~ night + tx_post1 + (1 | participant_id)'
        """
        rnd = " + ".join(r.label for r in self.random)
        return f"{self.outcome} ~ {' + '.join(self.fixed)} + {rnd}"


@dataclass
class EstimatorResult:
    """The fitted model and the contrast test of one estimator.

    Attributes
    ----------
    estimator : str
    table : pandas.DataFrame
        One row: ``estimator, term, estimate, std_error, statistic, df, p_value, conf_low,
        conf_high, df_method, alternative, nobs, n_excluded, converged, singular, model``.
    fit : LMMResult or GLMMResult
    prepared : PreparedModel
    L : numpy.ndarray
        The contrast row over ``fit.columns``.
    """

    estimator: str
    table: pd.DataFrame
    fit: Any
    prepared: PreparedModel
    L: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((1, 0)))


# --------------------------------------------------------------------------- preparation
def _safe(level: Any) -> str:
    return re.sub(r"\W", "_", str(level))


def _tx_column(level: Any) -> str:
    return f"tx_{_safe(level)}"


def _check_columns(data: pd.DataFrame, spec: CrossoverSpec) -> None:
    need = [spec.outcome, spec.treatment, spec.time, spec.participant]
    if spec.period is not None:
        need.append(spec.period)
    missing = [c for c in need if c not in data.columns]
    if missing:
        raise ModelError(
            f"The data lack column(s) {missing} needed by the estimator; columns present: "
            f"{', '.join(map(str, data.columns))}."
        )


def _window_rows(data: pd.DataFrame, spec: CrossoverSpec) -> pd.DataFrame:
    """Rows in the window with both treatments known; time/treatment as given levels."""
    _check_columns(data, spec)
    d = data.loc[data[spec.time].isin(spec.window)].copy()
    unknown = sorted(
        set(d[spec.treatment].dropna().astype(str)) - set(map(str, spec.treatment_levels))
    )
    if unknown:
        raise ModelError(
            f"Treatment column {spec.treatment!r} has level(s) {unknown} outside "
            f"{list(spec.treatment_levels)}."
        )
    return d.reset_index(drop=True)


def _random(spec: CrossoverSpec, *, nested: bool) -> list[RandomEffect]:
    out = [RandomEffect(spec.participant)]
    if nested and spec.period is not None and spec.family == _GAUSSIAN:
        out.append(RandomEffect(f"{spec.participant}:{spec.period}"))
    return out


def _levels(spec: CrossoverSpec, time_levels: Sequence[Any]) -> dict[str, list[Any]]:
    lv: dict[str, list[Any]] = {spec.treatment: list(spec.treatment_levels)}
    if len(time_levels) > 1:
        lv[spec.time] = list(time_levels)
    if spec.period is not None:
        lv[spec.period] = list(spec.period_levels)
    return lv


def prepare(data: pd.DataFrame, estimator: str, spec: CrossoverSpec) -> PreparedModel:
    """Data, model spec and contrast of one estimator (no fitting).

    Parameters
    ----------
    data : pandas.DataFrame
        Long data: one row per participant x period x time, with the spec's columns.
    estimator : {"did", "clda", "ancova", "post_only"}
    spec : CrossoverSpec

    Returns
    -------
    PreparedModel

    Examples
    --------
    >>> df = pd.DataFrame({
    ...     "participant_id": ["a"] * 4 + ["b"] * 4,
    ...     "period": [1, 1, 2, 2] * 2,
    ...     "treatment": ["placebo", "placebo", "ketamine", "ketamine",
    ...                   "ketamine", "ketamine", "placebo", "placebo"],
    ...     "night": ["baseline", "post1"] * 4,
    ...     "y": [30.0, 32, 31, 40, 25, 33, 27, 28]})
    >>> spec = CrossoverSpec("y", window=("baseline", "post1"))
    >>> prep = prepare(df, "ancova", spec)
    >>> prep.data[["participant_id", "period", "bl_within", "bl_mean"]].values.tolist()
    [['a', 1, -0.5, 30.5], ['a', 2, 0.5, 30.5], ['b', 1, -1.0, 26.0], ['b', 2, 1.0, 26.0]]
    >>> prep.formula()
    'y ~ treatment + period + bl_within + bl_mean + (1 | participant_id)'
    """
    if estimator not in ESTIMATORS:
        raise ModelError(f"Unknown estimator {estimator!r}; expected one of {list(ESTIMATORS)}.")
    spec = observed_spec(data, spec)
    d = _window_rows(data, spec)
    n_window = len(d)
    d = d.loc[d[spec.outcome].notna()].reset_index(drop=True)
    period_terms = [spec.period] if spec.period is not None else []
    contrast: dict[str, Any]
    if estimator == "did":
        fixed = [spec.treatment, spec.time, f"{spec.treatment}:{spec.time}", *period_terms]
        random = _random(spec, nested=True)
        levels = _levels(spec, spec.window)
        contrast = {"type": "emmeans_did"}
    elif estimator == "clda":
        active = spec.treatment_levels[1]
        for lv in spec.post_levels:
            d[_tx_column(lv)] = (
                (d[spec.treatment].astype(str) == str(active))
                & (d[spec.time].astype(str) == str(lv))
            ).astype(float)
        fixed = [spec.time, *period_terms, *(_tx_column(lv) for lv in spec.post_levels)]
        random = _random(spec, nested=True)
        levels = _levels(spec, spec.window)
        del levels[spec.treatment]
        w = 1.0 / len(spec.levels)
        contrast = {"type": "coefficients", "weights": {_tx_column(lv): w for lv in spec.levels}}
    else:
        post = list(spec.post_levels)
        if estimator == "ancova":
            if spec.family != _GAUSSIAN:
                raise ModelError(
                    "The Kenward-Roger ANCOVA is defined for Gaussian outcomes; for counts use "
                    "'did', 'clda' or 'post_only'."
                )
            d = _add_baseline_covariates(d, spec)
        d = d.loc[d[spec.time].isin(post)].reset_index(drop=True)
        fixed = [spec.treatment, *period_terms]
        if len(post) > 1:
            fixed += [spec.time, f"{spec.treatment}:{spec.time}"]
        if estimator == "ancova":
            fixed += ["bl_within", "bl_mean"]
        random = _random(spec, nested=len(post) > 1)
        levels = _levels(spec, post)
        contrast = {"type": "emmeans_difference"}
    n_used = len(d)
    if estimator in ("ancova", "post_only"):
        # baseline nights are not modelled by design, so they are not "excluded": count the
        # post rows lost to a missing outcome (or, for the ANCOVA, a missing baseline)
        n_window = int(_window_rows(data, spec)[spec.time].isin(spec.post_levels).sum())
    n_excl = n_window - n_used
    return PreparedModel(
        estimator=estimator,
        data=d,
        outcome=spec.outcome,
        family=spec.family,
        fixed=list(fixed),
        random=random,
        levels=levels,
        contrast=contrast,
        n_excluded=int(n_excl),
        description=ESTIMATOR_LABELS[estimator],
    )


def observed_spec(data: pd.DataFrame, spec: CrossoverSpec) -> CrossoverSpec:
    """``spec`` with its window cut to the time levels present in ``data`` (a protocol may
    name nights a study did not record, e.g. ``day7``); the baseline and the contrast levels
    must be present.

    Examples
    --------
    >>> df = example_data(n=4, nights=("baseline", "post1"))
    >>> observed_spec(df, CrossoverSpec("n3_min", window=("baseline", "post1", "day7"))).window
    ('baseline', 'post1')
    """
    _check_columns(data, spec)
    present = set(data.loc[data[spec.outcome].notna(), spec.time].astype(str))
    need = [spec.baseline, *spec.levels]
    lost = [lv for lv in need if str(lv) not in present]
    if lost:
        raise ModelError(
            f"No observed {spec.outcome!r} at {spec.time} level(s) {lost}: the estimator needs "
            f"the baseline and the contrast level(s) {need}."
        )
    window = tuple(lv for lv in spec.window if str(lv) in present)
    return replace(spec, window=window) if window != spec.window else spec


def _add_baseline_covariates(d: pd.DataFrame, spec: CrossoverSpec) -> pd.DataFrame:
    """``bl_mean`` (participant mean of the period baselines) and ``bl_within`` (deviation)."""
    keys = [spec.participant] + ([spec.period] if spec.period is not None else [])
    base = d.loc[d[spec.time] == spec.baseline, [*keys, spec.outcome]]
    dup = base.duplicated(keys)
    if dup.any():
        raise ModelError(
            f"More than one {spec.baseline!r} row for some {' x '.join(keys)} (first: "
            f"{base.loc[dup, keys].iloc[0].tolist()}); the ANCOVA needs one baseline per period."
        )
    base = base.rename(columns={spec.outcome: "_bl"})
    base["bl_mean"] = base.groupby(spec.participant)["_bl"].transform("mean")
    base["bl_within"] = base["_bl"] - base["bl_mean"]
    out = d.merge(base[[*keys, "bl_within", "bl_mean"]], on=keys, how="inner", sort=False)
    return out


# --------------------------------------------------------------------------- fitting
def fit_prepared(prep: PreparedModel, *, nagq: int = 1) -> Any:
    """Fit the prepared model with the studykit engine (``fit_lmm`` or ``fit_glmm``); the
    result's ``formula`` is the estimator's model (:meth:`PreparedModel.formula`)."""
    if prep.family == _GAUSSIAN:
        fit: Any = fit_lmm(
            prep.data, prep.outcome, prep.fixed, random=prep.random, levels=prep.levels
        )
    else:
        fit = fit_glmm(
            prep.data,
            prep.outcome,
            prep.fixed,
            random=prep.random,
            family=prep.family,
            levels=prep.levels,
            nagq=nagq,
        )
    return replace(fit, formula=prep.formula())


def contrast_matrix(fit: Any, prep: PreparedModel, spec: CrossoverSpec) -> np.ndarray:
    """The ``1 x p`` contrast row of the estimator over ``fit.columns``.

    ``emmeans_did``: treatment difference in the change from baseline, on the marginal means
    of the ``treatment x time`` grid (averaged over period), averaged over the contrast levels.
    ``emmeans_difference``: treatment difference of the marginal means at the contrast levels
    (averaged over period and, where present, at the covariates' means: no interaction, so
    their values do not matter). ``coefficients``: the named coefficients with their weights.
    """
    cols = list(fit.columns)
    kind = prep.contrast["type"]
    ref, act = (str(x) for x in spec.treatment_levels)
    if kind == "coefficients":
        L = np.zeros(len(cols))
        for name, w in prep.contrast["weights"].items():
            if name not in cols:
                raise ModelError(f"Coefficient {name!r} is not in the model ({cols}).")
            L[cols.index(name)] = w
        return L[None, :]
    if kind == "emmeans_did":
        _, Ld, _ = did_matrix(
            fit,
            treatment=spec.treatment,
            time=spec.time,
            treated=act,
            control=ref,
            baseline=str(spec.baseline),
            at_times=[str(t) for t in spec.levels],
        )
        return Ld.mean(axis=0)[None, :]
    # emmeans_difference
    if spec.time in prep.levels:
        cells, Lc = emmeans_matrix(fit, [spec.treatment, spec.time])
        idx = {(a, b): i for i, (a, b) in enumerate(cells.astype(str).itertuples(index=False))}
        rows = [Lc[idx[(act, str(t))]] - Lc[idx[(ref, str(t))]] for t in spec.levels]
        return np.mean(rows, axis=0)[None, :]
    cells, Lc = emmeans_matrix(fit, [spec.treatment])
    pos = {str(v): i for i, v in enumerate(cells[spec.treatment])}
    return (Lc[pos[act]] - Lc[pos[ref]])[None, :]


def estimate(
    data: pd.DataFrame,
    estimator: str,
    spec: CrossoverSpec,
    *,
    df_method: str = "satterthwaite",
    alternative: str = "two-sided",
    alpha: float = 0.05,
    nagq: int = 1,
) -> EstimatorResult:
    """Fit one estimator and test its contrast.

    Parameters
    ----------
    data : pandas.DataFrame
        Long data (participant x period x time rows).
    estimator : {"did", "clda", "ancova", "post_only"}
    spec : CrossoverSpec
    df_method : {"satterthwaite", "kenward-roger"}
        Denominator df for Gaussian outcomes (counts use z tests).
    alternative : {"two-sided", "greater", "less"}
    alpha : float
        1 - confidence level of the (one- or two-sided) interval.
    nagq : int
        Quadrature points for count models (1 = Laplace).

    Returns
    -------
    EstimatorResult

    Examples
    --------
    >>> from studykit.estimators import example_data
    >>> df = example_data(seed=4)
    >>> spec = CrossoverSpec("n3_min", window=("baseline", "post1", "post2"))
    >>> r = estimate(df, "clda", spec)
    >>> r.table[["estimator", "term", "df_method", "alternative"]].values.tolist()
    [['clda', 'ketamine-placebo at post1', 'satterthwaite', 'two-sided']]
    """
    prep = prepare(data, estimator, spec)
    fit = fit_prepared(prep, nagq=nagq)
    L = contrast_matrix(fit, prep, spec)
    ref, act = spec.treatment_levels
    term = f"{act}-{ref} at {'+'.join(map(str, spec.levels))}"
    method = df_method if spec.family == _GAUSSIAN else "z"
    tab = contrast_table(
        fit, L, names=[term], df_method=method, alpha=alpha, alternative=alternative
    )
    tab.insert(0, "estimator", estimator)
    tab["nobs"] = int(fit.nobs)
    tab["n_excluded"] = prep.n_excluded
    tab["converged"] = bool(getattr(fit, "converged", True))
    tab["singular"] = bool(getattr(fit, "singular", False))
    tab["model"] = prep.formula()
    return EstimatorResult(estimator=estimator, table=tab, fit=fit, prepared=prep, L=L)


def compare_estimators(
    data: pd.DataFrame,
    spec: CrossoverSpec,
    *,
    estimators: Sequence[str] = ESTIMATORS,
    df_method: str = "satterthwaite",
    alternative: str = "two-sided",
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Every estimator on the same data: one row each (see :func:`estimate`).

    Examples
    --------
    >>> df = example_data(seed=4)
    >>> spec = CrossoverSpec("n3_min", window=("baseline", "post1", "post2"))
    >>> compare_estimators(df, spec)["estimator"].tolist()
    ['did', 'clda', 'ancova', 'post_only']
    """
    if spec.family != _GAUSSIAN:
        estimators = [e for e in estimators if e != "ancova"]
    rows = [
        estimate(data, e, spec, df_method=df_method, alternative=alternative, alpha=alpha).table
        for e in estimators
    ]
    return pd.concat(rows, ignore_index=True)


def example_data(
    seed: int = 1,
    n: int = 24,
    *,
    effect: float = 8.0,
    sd_participant: float = 28.4,
    sd_period: float = 8.0,
    sd_residual: float = 18.6,
    nights: Sequence[str] = ("baseline", "post1", "post2"),
) -> pd.DataFrame:
    """A small SIMULATED crossover (N3 minutes) for examples and tests.

    Gaussian: participant, participant x period and night effects as stated; ketamine adds
    ``effect`` on night post1. Sequences alternate placebo-first / ketamine-first.

    Examples
    --------
    >>> example_data(n=4).groupby("treatment").size().to_dict()
    {'ketamine': 12, 'placebo': 12}
    """
    rng = np.random.default_rng(seed)
    rows = []
    u = rng.normal(0.0, sd_participant, n)
    for i in range(n):
        for period in (1, 2):
            trt = "ketamine" if (i % 2 == 0) == (period == 2) else "placebo"
            v = rng.normal(0.0, sd_period)
            for night in nights:
                y = 35.0 + u[i] + v + rng.normal(0.0, sd_residual)
                if trt == "ketamine" and night == "post1":
                    y += effect
                rows.append(
                    {
                        "participant_id": f"S{i + 1:03d}",
                        "period": period,
                        "treatment": trt,
                        "night": night,
                        "n3_min": round(y, 1),
                    }
                )
    return pd.DataFrame(rows)
