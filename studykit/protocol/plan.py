"""Each hypothesis of a protocol compiled once into an executable plan.

A :class:`HypothesisPlan` says everything :func:`studykit.analysis.run_analysis` needs and
nothing more: which data (tables, columns, window, analysis set, intercurrent events), which
model (family, fixed terms, the engine's random effects, factor levels, df method), which
contrast, which test (alternative, alpha, interval level, scale) and which verdict rule. The
analysis executes plans; it does not interpret the protocol's fields itself.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from studykit.estimators import ESTIMATOR_LABELS
from studykit.models.random_effects import RandomEffect
from studykit.protocol.model import (
    EVENT_TIME_COLUMNS,
    RATIO_SCALES,
    AnalysisSet,
    Contrast,
    Hypothesis,
    IntercurrentEvent,
    Protocol,
)

__all__ = [
    "DataSelection",
    "HypothesisPlan",
    "ModelSpec",
    "InferenceSpec",
    "VerdictRule",
    "compile_plan",
    "compile_plans",
    "VERDICTS",
    "CLAIM_VERDICT_RULE",
    "claim_verdict",
    "verdict",
]

logger = logging.getLogger(__name__)

#: Verdicts a rule can give.
VERDICTS = ("supported", "effect ruled out", "inconclusive")
#: How a claim's verdict combines the verdicts of its result rows (see :func:`claim_verdict`).
CLAIM_VERDICT_RULE = (
    "claim verdict: from the claim's confirmatory rows when it has any (exploratory rows "
    "then do not count), else from its exploratory rows (marked 'exploratory'): supported if "
    "at least one row is supported (each row's test already controls the family's error "
    "rate); effect ruled out if every row rules the effect out; inconclusive otherwise"
)


@dataclass(frozen=True)
class DataSelection:
    """Which observations a hypothesis analyses.

    Attributes
    ----------
    outcome_table, outcome : str
        The outcome variable and its table (``nights``, ``diary`` or ``periods``).
    variables : tuple of str
        Columns read for the model, contrast and intercurrent events (see ``columns``).
    factors : tuple of str
        Columns used as factors (compared as strings, e.g. period ``"1"``).
    model_variables : tuple of str
        Model variables other than the outcome: rows missing one are excluded.
    analysis_set : AnalysisSet
    intercurrent_events : tuple of IntercurrentEvent
    missing_codes : tuple of str
        Dictionary missing-value codes of the outcome.
    outcome_range : (float or None, float or None)
        Dictionary range of the outcome.
    """

    outcome_table: str
    outcome: str
    variables: tuple[str, ...]
    factors: tuple[str, ...]
    model_variables: tuple[str, ...]
    analysis_set: AnalysisSet
    intercurrent_events: tuple[IntercurrentEvent, ...]
    missing_codes: tuple[str, ...] = ()
    outcome_range: tuple[float | None, float | None] = (None, None)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column read from the outcome table joined with periods and roster."""
        extra = ("status",) if self.analysis_set.exclude_status else ()
        return tuple(sorted({*self.variables, *extra}))


@dataclass(frozen=True)
class ModelSpec:
    """The model fitted for a hypothesis (``kind`` ``"correlation"`` has no model)."""

    kind: str  # "lmm", "glmm", "clmm" (ordinal) or "correlation"
    family: str
    outcome: str
    terms: tuple[str, ...]
    random: tuple[RandomEffect, ...]
    levels: Mapping[str, tuple[str, ...]]
    #: df method asked of models.inference: satterthwaite, kenward-roger, or z (counts).
    df_method: str
    text: str
    #: The crossover estimator (:mod:`studykit.estimators`); "did" fits ``terms`` as stated.
    estimator: str = "did"


@dataclass(frozen=True)
class InferenceSpec:
    """The test and the reported interval."""

    alternative: str
    alpha: float
    #: Level of the reported two-sided interval (1 - 2 alpha one-sided, 1 - alpha two-sided).
    conf_level: float
    #: Scale of the estimate: "difference", "rate ratio" or "correlation".
    scale: str
    #: How the df are described in the results ("satterthwaite", "z (asymptotic Wald)" ...).
    df_label: str


@dataclass(frozen=True)
class VerdictRule:
    """The rule that turns a result row into a verdict (see :func:`verdict`)."""

    alternative: str
    alpha: float
    effect_of_interest: float
    scale: str
    text: str

    def apply(
        self, *, p_adjusted: float, conf_low: float, conf_high: float, usable: bool = True
    ) -> str:
        """The verdict of one result row."""
        return verdict(
            p_adjusted=p_adjusted,
            alpha=self.alpha,
            conf_low=conf_low,
            conf_high=conf_high,
            direction=self.alternative,
            effect_of_interest=self.effect_of_interest,
            scale=self.scale,
            usable=usable,
        )


@dataclass(frozen=True)
class HypothesisPlan:
    """One hypothesis, compiled: data selection, model, contrast, test and verdict rule.

    Attributes
    ----------
    id : str
    hypothesis : Hypothesis
        The protocol's statement (claim, source, estimand) for reports.
    selection : DataSelection
    model : ModelSpec
    contrast : Contrast
    test : InferenceSpec
    verdict : VerdictRule
    multiplicity_family, adjust_method : str
    row : mapping
        The descriptive columns of the results table (claim, source, estimand, model ...).
    """

    id: str
    hypothesis: Hypothesis
    selection: DataSelection
    model: ModelSpec
    contrast: Contrast
    test: InferenceSpec
    verdict: VerdictRule
    multiplicity_family: str
    adjust_method: str
    #: Testing order of a fixed-sequence family (empty otherwise).
    family_order: tuple[str, ...] = ()
    row: Mapping[str, str] = field(default_factory=dict)

    def with_analysis_set(self, analysis_set: AnalysisSet) -> HypothesisPlan:
        """The same plan on another analysis set (a sensitivity analysis)."""
        return replace(self, selection=replace(self.selection, analysis_set=analysis_set))

    def with_treatment_policy(self) -> HypothesisPlan:
        """The same plan using the data of every intercurrent event as observed."""
        events = tuple(
            replace(e, strategy="treatment_policy", handling="include")
            for e in self.selection.intercurrent_events
        )
        return replace(self, selection=replace(self.selection, intercurrent_events=events))

    def with_window(self, window: tuple[str, ...]) -> HypothesisPlan:
        """The same plan modelling only these time levels (levels without data dropped)."""
        tv = self.contrast.time_variable
        levels = {**self.model.levels, tv: window}
        return replace(
            self,
            contrast=replace(self.contrast, window=window),
            model=replace(self.model, levels=levels),
        )


def compile_plan(protocol: Protocol, h: Hypothesis) -> HypothesisPlan:
    """Compile one hypothesis of ``protocol`` into its :class:`HypothesisPlan`.

    Examples
    --------
    >>> from pathlib import Path
    >>> from studykit.protocol import load_protocol
    >>> proto = load_protocol(Path(__file__).parents[2] / "protocols" / "ketamine_sleep.yaml")
    >>> plan = proto.plan("H2")
    >>> plan.model.kind, plan.model.df_method, plan.test.df_label, plan.test.scale
    ('glmm', 'z', 'z (asymptotic Wald)', 'rate ratio')
    >>> [r.label for r in proto.plan("H1").model.random]
    ['(1 | participant_id)', '(1 | participant_id:period)']
    """
    c = h.contrast
    correlation = c.type == "change_correlation"
    kind = (
        "correlation"
        if correlation
        else {"gaussian": "lmm", "ordinal": "clmm"}.get(h.family, "glmm")
    )
    model_vars = sorted(
        {v for t in h.terms for v in t.split(":")}
        | {g for r in h.random for g in r.group.split(":")}
        | {t for r in h.random for t in r.terms if t not in ("0", "1")}
    )
    if correlation:
        assert c.outcome_reference_variable is not None  # the parser requires it
        columns = {h.outcome, c.outcome_reference_variable, c.treatment_variable}
    else:
        columns = set(model_vars) | {h.outcome, c.treatment_variable, c.time_variable}
    columns |= {"participant_id", "period"}
    columns |= {e.variable for e in h.estimand.intercurrent_events if e.variable}
    columns |= {e.timing for e in h.estimand.intercurrent_events if e.timing}
    if h.outcome_table in EVENT_TIME_COLUMNS and any(
        e.handling == "exclude_after_event" for e in h.estimand.intercurrent_events
    ):
        columns.add(EVENT_TIME_COLUMNS[h.outcome_table])
    if kind == "lmm":
        df_method, df_label = h.df_method, h.df_method
    elif kind in ("glmm", "clmm"):
        df_method, df_label = "z", "z (asymptotic Wald)"
    else:
        df_method, df_label = "t", "t (n - 2)"
    scale = h.scale
    selection = DataSelection(
        outcome_table=h.outcome_table,
        outcome=h.outcome,
        variables=tuple(sorted(columns)),
        factors=tuple(h.levels),
        model_variables=(
            (c.outcome_reference_variable,)
            if c.outcome_reference_variable is not None
            else tuple(v for v in model_vars if v not in ("participant_id", h.outcome))
        ),
        analysis_set=h.analysis_set,
        intercurrent_events=h.estimand.intercurrent_events,
        missing_codes=h.outcome_missing_codes,
        outcome_range=h.outcome_range,
    )
    model = ModelSpec(
        kind=kind,
        family=h.family,
        outcome=h.outcome,
        terms=tuple(h.terms),
        random=tuple(h.random),
        levels=dict(h.levels),
        df_method=df_method,
        text=h.model_text
        if h.estimator == "did"
        else f"{ESTIMATOR_LABELS[h.estimator]} ({h.family}; studykit.estimators.{h.estimator})",
        estimator=h.estimator,
    )
    rule = VerdictRule(
        alternative=h.direction,
        alpha=h.alpha,
        effect_of_interest=h.effect_of_interest,
        scale=scale,
        text=h.verdict_rule,
    )
    row = {
        "protocol_id": protocol.id,
        "protocol_sha256": protocol.sha256,
        "hypothesis_id": h.id,
        "claim_id": h.claim_id,
        "claim": h.claim,
        "source": h.source.text(protocol.articles),
        "evidence": h.source.evidence_text,
        "outcome": h.outcome,
        "estimand": h.estimand.text(),
        "role": h.role,
        "multiplicity_family": h.multiplicity_family,
        "family": h.family,
        "scale": scale,
        "adjust_method": h.adjust_method,
        "verdict_rule": h.verdict_rule,
        "model": h.model_text
        if h.estimator == "did"
        else f"{ESTIMATOR_LABELS[h.estimator]} ({h.family}; studykit.estimators.{h.estimator})",
    }
    return HypothesisPlan(
        id=h.id,
        hypothesis=h,
        selection=selection,
        model=model,
        contrast=c,
        test=InferenceSpec(
            alternative=h.direction,
            alpha=h.alpha,
            conf_level=h.conf_level,
            scale=scale,
            df_label=df_label,
        ),
        verdict=rule,
        multiplicity_family=h.multiplicity_family,
        adjust_method=h.adjust_method,
        family_order=protocol.families[h.multiplicity_family].order,
        row=row,
    )


def compile_plans(protocol: Protocol) -> tuple[HypothesisPlan, ...]:
    """Every hypothesis of ``protocol`` compiled, in protocol order (see :func:`compile_plan`)."""
    return tuple(compile_plan(protocol, h) for h in protocol.hypotheses)


def verdict(
    *,
    p_adjusted: float,
    alpha: float,
    conf_low: float,
    conf_high: float,
    direction: str,
    effect_of_interest: float,
    scale: str,
    usable: bool = True,
) -> str:
    """Apply a hypothesis' verdict rule to one result row.

    Parameters
    ----------
    p_adjusted : float
        The multiplicity-adjusted p-value of the test in the stated direction.
    alpha : float
        The family's alpha.
    conf_low, conf_high : float
        The interval that rules effects out (on the scale of ``scale``): the
        multiplicity-adjusted (simultaneous) interval when the family adjusts p-values
        (:func:`studykit.models.multiplicity.adjusted_intervals`), else the reported one.
    direction : {"greater", "less", "two-sided"}
    effect_of_interest : float
        Smallest effect of interest: a positive magnitude (difference, correlation) or a
        rate ratio for counts.
    scale : {"difference", "rate ratio", "odds ratio", "correlation"}
    usable : bool, default True
        ``False`` when the model failed or did not converge: the verdict is then
        ``"inconclusive"``.

    Returns
    -------
    str
        ``"supported"``, ``"effect ruled out"`` or ``"inconclusive"``.

    Examples
    --------
    >>> verdict(p_adjusted=0.01, alpha=0.025, conf_low=2.0, conf_high=14.0,
    ...         direction="greater", effect_of_interest=5, scale="difference")
    'supported'
    >>> verdict(p_adjusted=0.4, alpha=0.025, conf_low=-6.0, conf_high=4.0,
    ...         direction="greater", effect_of_interest=5, scale="difference")
    'effect ruled out'
    >>> verdict(p_adjusted=0.1, alpha=0.025, conf_low=-3.0, conf_high=12.0,
    ...         direction="greater", effect_of_interest=5, scale="difference")
    'inconclusive'

    Notes
    -----
    *Supported*: the adjusted p-value of the test in the claimed direction is below alpha
    (for a two-sided claim, either direction). *Effect ruled out*: not supported, and the
    interval rules out the smallest effect of interest in the claimed direction (greater:
    ``conf_high < d``; less: ``conf_low > -d``, or ``conf_low > d`` for a rate ratio ``d < 1``;
    two-sided: the whole interval inside ``(-d, d)``, or ``(min(d, 1/d), max(d, 1/d))`` for a
    rate ratio). An effect significantly in the opposite direction is therefore "effect
    ruled out" when its interval also excludes ``d``. Under multiplicity the interval is the
    family's simultaneous one, so ruling effects out is held to the same family-wise error
    rate as supporting them. *Inconclusive*: everything else: the
    data neither confirm the claim nor rule out an effect that would matter; also whenever
    the model failed or did not converge.
    """
    if not usable or any(math.isnan(x) for x in (p_adjusted, conf_low, conf_high)):
        return "inconclusive"
    if p_adjusted < alpha:
        return "supported"
    d = effect_of_interest
    if scale in RATIO_SCALES:
        lo_b, hi_b = min(d, 1 / d), max(d, 1 / d)
        excluded = {
            "greater": conf_high < d,
            "less": conf_low > d,
            "two-sided": conf_low > lo_b and conf_high < hi_b,
        }[direction]
    else:
        excluded = {
            "greater": conf_high < d,
            "less": conf_low > -d,
            "two-sided": conf_low > -d and conf_high < d,
        }[direction]
    return "effect ruled out" if excluded else "inconclusive"


def claim_verdict(verdicts: Sequence[str], roles: Sequence[str]) -> str:
    """Combine the verdicts of one claim's result rows (hypotheses x contrasts).

    Parameters
    ----------
    verdicts : sequence of str
        Row verdicts (:data:`VERDICTS`).
    roles : sequence of str
        The role (``confirmatory`` / ``exploratory``) of each row's hypothesis.

    Returns
    -------
    str
        ``supported``, ``effect ruled out`` or ``inconclusive``, followed by
        `` (exploratory)`` when only exploratory rows decide.

    Examples
    --------
    >>> claim_verdict(["supported", "inconclusive"], ["confirmatory", "exploratory"])
    'supported'
    >>> claim_verdict(["inconclusive", "effect ruled out"], ["confirmatory", "exploratory"])
    'inconclusive'
    >>> claim_verdict(["supported", "supported", "effect ruled out"], ["exploratory"] * 3)
    'supported (exploratory)'

    Notes
    -----
    See :data:`CLAIM_VERDICT_RULE`. A claim tested by several contrasts (C1: sleepiness on
    days 1, 2 and 3, "within 24-72 h, resolving within days") or several hypotheses (C4:
    awakenings H2 and WASO E6) is supported when at least one deciding row supports it
    (union-intersection: the claim is that the effect exists somewhere among its contrasts)
    and ruled out only when every deciding row rules the effect out (intersection-union).
    A day 3 that rules the effect out therefore does not count against C1.
    """
    confirm = [v for v, r in zip(verdicts, roles, strict=True) if r == "confirmatory"]
    deciding = confirm or list(verdicts)
    suffix = "" if confirm else " (exploratory)"
    if not deciding:
        return ""
    if "supported" in deciding:
        out = "supported"
    elif all(v == "effect ruled out" for v in deciding):
        out = "effect ruled out"
    else:
        out = "inconclusive"
    return out + suffix
