"""The protocol's data model: what a pre-registered hypothesis states (plain dataclasses).

Built by :mod:`studykit.protocol.parse` from a YAML file and compiled into executable plans by
:mod:`studykit.protocol.plan`. Constants defined here have no other home.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from studykit.errors import ProtocolError
from studykit.models.glmm import FAMILIES as GLMM_FAMILIES
from studykit.models.inference import ALTERNATIVES
from studykit.models.inference import DF_METHODS as _ENGINE_DF_METHODS
from studykit.models.random_effects import RandomEffect

if TYPE_CHECKING:
    from studykit.protocol.plan import HypothesisPlan

__all__ = [
    "Amendment",
    "AnalysisSet",
    "Contrast",
    "Estimand",
    "Hypothesis",
    "IntercurrentEvent",
    "MultiplicityFamily",
    "NotTested",
    "Protocol",
    "SensitivityAnalysis",
    "MissingDataAnalysis",
    "RATIO_SCALES",
    "Source",
    "verdict_rule_text",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
ROLES = ("confirmatory", "exploratory")
#: A hypothesis' direction is a test's alternative (models.inference.ALTERNATIVES).
DIRECTIONS = ALTERNATIVES
#: Distribution families a protocol supports: Gaussian (LMM), a count family of the GLMM
#: engine (models.glmm.FAMILIES also has binomial, which no protocol outcome uses yet) or
#: ordinal (CLMM).
FAMILIES = ("gaussian", *(f for f in GLMM_FAMILIES if f in ("poisson", "negbin")), "ordinal")
#: Scales whose estimates are ratios (null value 1; reported as exp of the log-scale contrast).
RATIO_SCALES = ("rate ratio", "odds ratio")
EVIDENCE = {
    "supported": "supported by primary research",
    "partial": "partly supported by primary research",
    "mixed": "primary research is mixed",
    "contradicted": "contradicted by primary research",
    "none": "from the articles, not from primary research",
}
STRATEGIES = {
    # ICH E9(R1) strategy -> allowed handling of the affected data
    "hypothetical": ("exclude_after_event", "exclude_period", "exclude_participant"),
    "treatment_policy": ("include",),
}
#: Column of each outcome table on the scale of an intercurrent event's timing (the night_index
#: of the first night after the event): a night's ``night_index``, a diary entry's ``day``.
EVENT_TIME_COLUMNS = {"nights": "night_index", "diary": "day"}
#: Dictionary units of a timing variable on that scale (night_index is in nights, day in days).
EVENT_TIME_UNITS = ("nights", "days")
CONTRAST_TYPES = ("difference_in_differences", "change_correlation")
#: df methods a protocol may choose (count models always use z tests).
DF_METHODS = tuple(m for m in _ENGINE_DF_METHODS if m != "z")
#: Tables a hypothesis' outcome may come from.
OUTCOME_TABLES = ("nights", "diary", "periods")
#: The participant identifier, the grouping factor of every random effect.
PARTICIPANT = "participant_id"


# --------------------------------------------------------------------------- data classes
@dataclass(frozen=True)
class Source:
    """Where a claim comes from and how well primary research supports it."""

    articles: tuple[str, ...]
    primary_research: str
    evidence: str

    @property
    def evidence_text(self) -> str:
        """The evidence code in words (``"none"`` -> "from the articles, not from ...")."""
        return EVIDENCE[self.evidence]

    def text(self, article_names: Mapping[str, str] | None = None) -> str:
        """One-line description: articles, then the primary research."""
        names = article_names or {}
        arts = ", ".join(
            f"article {a}" + (f" ({names[a]})" if a in names else "") for a in self.articles
        )
        return f"{arts}; primary research: {self.primary_research}"


@dataclass(frozen=True)
class Contrast:
    """The comparison a hypothesis tests, as structured fields.

    For ``difference_in_differences``: (treatment ``level`` minus ``reference``) of the change
    from the time ``reference`` to each of ``time_levels``; ``window`` lists the time levels
    modelled (reference first). For ``change_correlation``: the correlation, among periods of
    treatment ``level``, between the change in a night-table predictor (``predictor`` from
    ``time_reference`` to ``time_levels[0]``) and the change in the outcome from
    ``outcome_reference_variable`` to the outcome.
    """

    type: str
    description: str
    treatment_variable: str
    treatment_level: str
    treatment_reference: str
    time_variable: str
    time_levels: tuple[str, ...]
    time_reference: str
    window: tuple[str, ...]
    predictor_table: str | None = None
    predictor: str | None = None
    outcome_reference_variable: str | None = None

    def labels(self, outcome: str | None = None) -> list[str]:
        """One label per contrast row, e.g. ``ketamine - placebo, change baseline -> post1``.

        ``outcome`` names the outcome variable in a correlation's label (the contrast itself
        only knows the outcome's reference variable).
        """
        if self.type == "change_correlation":
            out = outcome or "outcome"
            return [
                f"correlation in {self.treatment_level} periods: change in {self.predictor} "
                f"({self.time_reference} -> {self.time_levels[0]}) vs change in {out} "
                f"({self.outcome_reference_variable} -> {out})"
            ]
        return [
            f"{self.treatment_level} - {self.treatment_reference}, change from "
            f"{self.time_variable} {self.time_reference} to {lev}"
            for lev in self.time_levels
        ]


@dataclass(frozen=True)
class IntercurrentEvent:
    """An ICH E9(R1) intercurrent event and how it is handled.

    ``variable`` is a boolean of the periods or roster table flagging the event (``None`` for
    events defined otherwise, e.g. withdrawal = roster ``status == "withdrawn"`` with
    ``level``). ``handling``: ``exclude_after_event`` drops the affected participant-period's
    observations at or after the event (``timing``, a column of the same table on the
    night_index scale, :data:`EVENT_TIME_COLUMNS`) and keeps the earlier ones; a period whose
    event has no recorded timing is dropped whole. ``exclude_period`` drops the affected
    participant-period's observations, ``exclude_participant`` drops all of the participant's
    observations, ``include`` keeps the data as observed.
    """

    event: str
    variable: str | None
    table: str | None
    level: str | None
    strategy: str
    handling: str
    rationale: str
    #: Column saying when the event happened (needed by ``exclude_after_event``).
    timing: str | None = None

    def text(self) -> str:
        """The event, strategy and handling in words."""
        strategy = self.strategy.replace("_", " ")
        handling = {
            "exclude_after_event": f"data from the event on ({self.timing}) excluded, earlier "
            "data kept; period excluded when the timing is not recorded",
            "exclude_period": "data of the affected period excluded",
            "exclude_participant": "the participant's data excluded",
            "include": "data used as observed",
        }[self.handling]
        return f"{self.event}: {strategy} strategy ({handling})"


@dataclass(frozen=True)
class Estimand:
    """The ICH E9(R1) estimand attributes."""

    population: str
    treatment: str
    variable: str
    intercurrent_events: tuple[IntercurrentEvent, ...]
    summary_measure: str

    def text(self) -> str:
        """The estimand on one line (for result tables)."""
        ices = "; ".join(e.text() for e in self.intercurrent_events) or "none"
        return (
            f"population: {self.population} | treatment: {self.treatment} | variable: "
            f"{self.variable} | intercurrent events: {ices} | summary: {self.summary_measure}"
        )


@dataclass(frozen=True)
class AnalysisSet:
    """Which participants and periods an analysis uses."""

    name: str
    description: str
    exclude_status: tuple[str, ...] = ()
    require_both_treatments: bool = False
    require_reference_time: bool = False
    exclude_flagged_nights: bool = False


@dataclass(frozen=True)
class MultiplicityFamily:
    """A family of hypotheses whose p-values are adjusted together."""

    name: str
    method: str
    alpha: float
    order: tuple[str, ...] = ()
    description: str = ""


#: ICH E9(R1) strategies a sensitivity analysis may apply to every intercurrent event.
SENSITIVITY_STRATEGIES = ("treatment_policy",)
#: Methods of a missing-data sensitivity analysis (:mod:`studykit.missing`).
MISSING_DATA_METHODS = ("delta_adjusted",)


@dataclass(frozen=True)
class MissingDataAnalysis:
    """A delta-adjusted (tipping-point) multiple-imputation analysis (:mod:`studykit.missing`).

    ``deltas``: sizes of the shift of the treated arm's imputed values, applied against the
    claim (outcome units); ``imputations``: number of imputations; ``seed``: of every draw.
    """

    method: str
    deltas: tuple[float, ...]
    imputations: int
    seed: int


@dataclass(frozen=True)
class SensitivityAnalysis:
    """A pre-specified sensitivity analysis, reported beside the primary result.

    ``analysis_set`` replaces every listed hypothesis' analysis set (e.g. the per-protocol
    set); ``intercurrent_events`` = ``"treatment_policy"`` uses the data of periods with an
    intercurrent event as observed instead of the estimand's handling; ``missing_data``
    imputes the missing post-infusion outcomes with a shift (:class:`MissingDataAnalysis`).
    ``hypotheses`` lists the hypotheses it applies to (all when empty; for ``missing_data``
    all Gaussian difference-in-differences hypotheses).

    A sensitivity analysis may also *restate* its listed hypotheses: ``estimator`` (another
    crossover estimator, e.g. the difference in differences), ``family`` (e.g. the linear
    model of an ordinal rating), ``model`` and ``effect_of_interest`` replace the
    hypothesis' own keys; ``variants`` holds the restated hypotheses, checked as the
    protocol's are (:meth:`variant`).
    """

    name: str
    description: str
    analysis_set: str | None = None
    intercurrent_events: str | None = None
    hypotheses: tuple[str, ...] = ()
    missing_data: MissingDataAnalysis | None = None
    #: The estimator / family the listed hypotheses are restated with (None: their own).
    estimator: str | None = None
    family: str | None = None
    #: The listed hypotheses as this analysis restates them (empty: none restated).
    variants: tuple[Hypothesis, ...] = ()

    def variant(self, hypothesis_id: str) -> Hypothesis | None:
        """The hypothesis as this analysis restates it (None: analysed as the protocol says)."""
        return next((h for h in self.variants if h.id == hypothesis_id), None)


@dataclass(frozen=True)
class NotTested:
    """A claim the protocol states but does not test, with the reason."""

    claim_id: str
    claim: str
    source: str
    reason: str


@dataclass(frozen=True)
class Hypothesis:
    """One pre-registered hypothesis (see the module docstring and ``protocols/``)."""

    id: str
    claim_id: str
    claim: str
    source: Source
    role: str
    outcome_table: str
    outcome: str
    analysis_set: AnalysisSet
    family: str
    fixed: tuple[str, ...]
    covariates: tuple[str, ...]
    random: tuple[RandomEffect, ...]
    levels: dict[str, tuple[str, ...]]
    contrast: Contrast
    direction: str
    multiplicity_family: str
    adjust_method: str
    alpha: float
    effect_of_interest: float
    estimand: Estimand
    df_method: str = "satterthwaite"
    #: The analysis of a difference_in_differences contrast (:data:`studykit.estimators.ESTIMATORS`).
    estimator: str = "did"
    #: Dictionary missing-value codes of the outcome (e.g. ``("-99",)``): treated as missing.
    outcome_missing_codes: tuple[str, ...] = ()
    #: Dictionary range of the outcome; values outside it mean the data were not validated.
    outcome_range: tuple[float | None, float | None] = (None, None)

    @property
    def terms(self) -> list[str]:
        """Fixed terms followed by covariates (model order)."""
        return [*self.fixed, *self.covariates]

    @property
    def conf_level(self) -> float:
        """Confidence level of the reported two-sided interval.

        ``1 - 2 alpha`` for a one-sided test (the interval excludes 0 on the claimed side
        exactly when the unadjusted one-sided p-value is below alpha), ``1 - alpha`` for a
        two-sided test.
        """
        return 1 - 2 * self.alpha if self.direction != "two-sided" else 1 - self.alpha

    @property
    def scale(self) -> str:
        """Scale of ``estimate`` in the results: mean difference, rate ratio or correlation."""
        if self.contrast.type == "change_correlation":
            return "correlation"
        if self.family == "ordinal":
            return "odds ratio"
        return "rate ratio" if self.family in ("poisson", "negbin") else "difference"

    @property
    def model_text(self) -> str:
        """The model in lme4 notation (display only; never evaluated)."""
        rhs = " + ".join(self.terms) or "1"
        if self.contrast.type == "change_correlation":
            return (
                f"Pearson correlation of change in {self.contrast.predictor} and change in "
                f"{self.outcome} (t test with n - 2 df, Fisher z interval)"
            )
        rand = " + ".join(r.label for r in self.random)
        fam = {
            "gaussian": "linear mixed model, REML",
            "poisson": "Poisson GLMM, log link, Laplace",
            "negbin": "negative-binomial GLMM, log link, Laplace",
            "ordinal": "cumulative logit mixed model (CLMM), flexible thresholds, Laplace",
        }[self.family]
        return f"{self.outcome} ~ {rhs} + {rand} [{fam}]"

    @property
    def verdict_rule(self) -> str:
        """The verdict rule in words, generated from the fields that the code applies."""
        return verdict_rule_text(self)


@dataclass(frozen=True)
class Amendment:
    """One entry of a protocol's amendment log (section ``amendments:``, oldest first).

    Attributes
    ----------
    version : str
        The protocol version this amendment produced (the newest equals ``Protocol.version``).
    date : str
        ISO date (YYYY-MM-DD) the amendment was made.
    changes : tuple of str
        What changed, one item each.
    rationale : str
        Why (with the commands whose output the reasons quote).
    replaces_version : str
        The version it replaces (the previous amendment's version, if any).
    replaces_sha256 : str
        SHA-256 (hex, lower case) of the bytes of the replaced version's file.
    replaces_file : str
        Where the replaced version is archived, relative to the protocol file; its SHA-256
        was checked against ``replaces_sha256`` when the protocol was loaded.
    """

    version: str
    date: str
    changes: tuple[str, ...]
    rationale: str
    replaces_version: str
    replaces_sha256: str
    replaces_file: str

    def text(self) -> str:
        """The amendment on one line (for logs and tables)."""
        return (
            f"version {self.version} ({self.date}), replacing version {self.replaces_version} "
            f"(SHA-256 {self.replaces_sha256}, {self.replaces_file}): "
            + " ".join(f"({i}) {c}" for i, c in enumerate(self.changes, 1))
        )


@dataclass(frozen=True)
class Protocol:
    """A loaded, validated protocol.

    Attributes
    ----------
    id, version, title : str
        From the ``protocol`` section.
    sha256 : str
        SHA-256 (hex) of the file bytes: recorded in every result row.
    hypotheses : list of Hypothesis
        In file order.
    families : dict
        Multiplicity family name -> :class:`MultiplicityFamily`.
    analysis_sets : dict
        Name -> :class:`AnalysisSet`.
    not_tested : list of NotTested
        Claims stated but not tested, with reasons.
    amendments : tuple of Amendment
        The amendment log, oldest first (empty for a protocol never amended).
    """

    id: str
    version: str
    title: str
    sha256: str
    hypotheses: list[Hypothesis]
    families: dict[str, MultiplicityFamily]
    analysis_sets: dict[str, AnalysisSet]
    not_tested: list[NotTested]
    articles: dict[str, str] = field(default_factory=dict)
    path: str | None = None
    description: str = ""
    #: Each hypothesis compiled once into an executable plan (:mod:`studykit.protocol.plan`).
    plans: tuple[HypothesisPlan, ...] = ()
    #: Pre-specified sensitivity analyses (protocol section ``sensitivity``).
    sensitivity: tuple[SensitivityAnalysis, ...] = ()
    #: The amendment log, oldest first (protocol section ``amendments``).
    amendments: tuple[Amendment, ...] = ()

    def plan(self, hypothesis_id: str) -> HypothesisPlan:
        """The compiled plan of one hypothesis (:class:`ProtocolError` if there is none)."""
        for p in self.plans:
            if p.id == hypothesis_id:
                return p
        self.get(hypothesis_id)  # raises for an unknown id
        raise ProtocolError(f"Protocol {self.id!r} was not compiled (no plans).")

    def get(self, hypothesis_id: str) -> Hypothesis:
        """The hypothesis with this id (:class:`ProtocolError` if there is none)."""
        for h in self.hypotheses:
            if h.id == hypothesis_id:
                return h
        raise ProtocolError(
            f"Protocol {self.id!r} has no hypothesis {hypothesis_id!r}. Hypotheses: "
            f"{', '.join(h.id for h in self.hypotheses)}."
        )

    def summary(self) -> pd.DataFrame:
        """One row per hypothesis: id, claim, role, outcome, contrast, direction, family ...

        Returns
        -------
        pandas.DataFrame
        """
        rows = [
            {
                "hypothesis_id": h.id,
                "claim_id": h.claim_id,
                "claim": h.claim,
                "evidence": h.source.evidence_text,
                "role": h.role,
                "outcome": f"{h.outcome_table}.{h.outcome}",
                "contrast": h.contrast.description,
                "direction": h.direction,
                "family": h.family,
                "model": h.model_text,
                "multiplicity_family": h.multiplicity_family,
                "adjust_method": h.adjust_method,
                "alpha": h.alpha,
                "verdict_rule": h.verdict_rule,
            }
            for h in self.hypotheses
        ]
        return pd.DataFrame(rows)


# --------------------------------------------------------------------------- verdict text
def verdict_rule_text(h: Hypothesis) -> str:
    """The verdict rule of a hypothesis in words (what :mod:`studykit.analysis` applies)."""
    lvl = f"{100 * h.conf_level:g}%"
    adj = (
        f"{h.adjust_method}-adjusted p-value within family {h.multiplicity_family!r}"
        if h.adjust_method != "none"
        else "unadjusted p-value (exploratory family, no multiplicity adjustment)"
    )
    d = h.effect_of_interest
    if h.scale in RATIO_SCALES:
        unit = h.scale
        null = "1"
        if h.direction == "greater":
            excl = f"the upper limit of the {lvl} CI is below {d:g} (a {unit} of {d:g} or more is ruled out)"
        elif h.direction == "less":
            excl = f"the lower limit of the {lvl} CI is above {d:g} (a {unit} of {d:g} or less is ruled out)"
        else:
            excl = f"the {lvl} CI lies within ({1 / d if d > 1 else d:.3g}, {d if d > 1 else 1 / d:.3g})"
    else:
        unit = "correlation" if h.scale == "correlation" else "difference"
        null = "0"
        if h.direction == "greater":
            excl = f"the upper limit of the {lvl} CI is below {d:g} (an effect of {d:g} or more is ruled out)"
        elif h.direction == "less":
            excl = f"the lower limit of the {lvl} CI is above {-d:g} (an effect of {-d:g} or less is ruled out)"
        else:
            excl = f"the {lvl} CI lies within ({-d:g}, {d:g}) (effects of size {d:g} or more are ruled out)"
    side = {"greater": f"> {null}", "less": f"< {null}", "two-sided": f"!= {null}"}[h.direction]
    test = "one-sided" if h.direction != "two-sided" else "two-sided"
    return (
        f"supported if the {adj} of the {test} test of {unit} {side} is < {h.alpha:g}; "
        f"effect ruled out if not supported and {excl}, where the CI is the family's "
        "multiplicity-adjusted (simultaneous Bonferroni) interval when the family adjusts "
        "p-values; inconclusive otherwise, and whenever the model did not converge or could "
        "not be fitted. Each contrast row gets its own verdict; the claim's verdict combines "
        "its rows."
    )
