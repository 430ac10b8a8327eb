"""What a power simulation assumes: the study layout, the true model of each outcome, the tests.

A :class:`PowerDesign` has three parts, mirroring the YAML it is usually read from:

``layout``
    Parallel-group or two-period crossover; treatment levels (reference first) and allocation;
    the repeated time axis (``night``: baseline, post1, ...); missing-at-random probabilities
    per time level.
``outcomes``
    For each simulated outcome the assumed *truth*: distribution (Gaussian, Poisson,
    negative binomial), fixed-effect coefficients by lme4 column name, random-effect SDs per
    grouping factor (optionally random slopes) and the residual SD (Gaussian) or dispersion
    (negative binomial).
``hypotheses``
    The pre-specified analyses: model (fixed terms, random terms, levels), contrast weights,
    direction, alpha and multiplicity family, as in a studykit protocol.

It is built from a plain mapping (:func:`design_from_dict`, :func:`load_design`) or from a
loaded protocol plus an effects file (:func:`design_from_protocol`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import yaml

from studykit.errors import InputError, ModelError, ProtocolError
from studykit.estimators import CrossoverSpec
from studykit.models.design import build_design
from studykit.models.emmeans import did_matrix
from studykit.models.inference import ALTERNATIVES
from studykit.models.multiplicity import METHODS
from studykit.models.random_effects import RandomEffect
from studykit.protocol import load_protocol

__all__ = [
    "Layout",
    "OutcomeTruth",
    "PowerHypothesis",
    "PowerDesign",
    "design_from_dict",
    "design_from_protocol",
    "load_design",
    "as_design",
    "TRIAL_SIM_EXAMPLE",
]

logger = logging.getLogger(__name__)

FAMILIES = ("gaussian", "poisson", "negbin")
PARTICIPANT = "participant_id"


def _fail(where: str, msg: str) -> ProtocolError:
    return ProtocolError(f"Power design, {where}: {msg}")


@dataclass(frozen=True)
class Layout:
    """The study layout that simulated data follow.

    Attributes
    ----------
    design : {"parallel", "crossover"}
        Parallel groups (each participant receives one treatment) or an AB/BA two-period
        crossover (each participant receives both, in random order; column ``period``).
    treatment : str
        Treatment column name (``"treatment"``, the data dictionary's name).
    treatment_levels : tuple of str
        Reference (control) first.
    allocation : tuple of float
        Relative allocation to the levels (parallel) or to the sequences (crossover: first
        sequence = reference level first). Group sizes are ``round`` of the proportions,
        fixed by design (not random).
    time : str
        Column of the repeated time axis (``"night"``).
    time_levels : tuple of str
        Levels of the time axis, reference (baseline) first; every participant (and period)
        is scheduled on each.
    time_index : str or None
        Name of a numeric column holding the position ``0, 1, ...`` of each time level (for
        random slopes), e.g. ``"night_index"``.
    missing : dict
        Time level -> probability that an observation is missing (completely at random).
    """

    design: str = "parallel"
    treatment: str = "treatment"
    treatment_levels: tuple[str, ...] = ("placebo", "ketamine")
    allocation: tuple[float, ...] = (1.0, 1.0)
    time: str = "night"
    time_levels: tuple[str, ...] = ("baseline", "post1", "post2")
    time_index: str | None = "night_index"
    missing: dict[str, float] = field(default_factory=dict)

    def group_of(self, n: int) -> np.ndarray:
        """Arm (parallel) or sequence (crossover) of participants ``0 .. n-1``.

        Interleaved: participant ``i`` joins the group furthest below its share of ``i + 1``
        participants (earlier groups first on ties), so the first ``n`` participants are
        allocated alike whatever the total (common random numbers across sample sizes).

        Examples
        --------
        >>> Layout().group_of(5).tolist()
        [0, 1, 0, 1, 0]
        >>> Layout(allocation=(1.0, 2.0)).group_of(6).tolist()
        [1, 0, 1, 1, 0, 1]
        """
        w = np.asarray(self.allocation, float) / float(np.sum(self.allocation))
        counts = np.zeros(len(w))
        out = np.empty(n, dtype=np.intp)
        for i in range(n):
            g = int(np.argmax(w * (i + 1) - counts - 1e-12 * np.arange(len(w))))
            out[i] = g
            counts[g] += 1
        return out

    def group_sizes(self, n: int) -> list[int]:
        """Participants per treatment arm (parallel) or per sequence (crossover)."""
        return np.bincount(self.group_of(n), minlength=len(self.allocation)).tolist()

    def template(self, n: int) -> pd.DataFrame:
        """The complete schedule for ``n`` participants: one row per planned observation.

        Examples
        --------
        >>> t = Layout().template(4)
        >>> t.groupby("treatment", sort=False).size().to_dict()
        {'placebo': 6, 'ketamine': 6}
        >>> Layout(design="crossover").template(2)[["participant_id", "period", "treatment"]].drop_duplicates().values.tolist()
        [['S001', 1, 'placebo'], ['S001', 2, 'ketamine'], ['S002', 1, 'ketamine'], ['S002', 2, 'placebo']]

        A crossover template also has the numeric columns ``carryover`` (1 in period 2 after
        the active treatment in period 1) and ``first_night`` (1 on the first time level of
        period 1, the first night in the laboratory), for true models with carryover or a
        first-night effect.
        """
        width = max(3, len(str(n)))
        ids = [f"S{i + 1:0{width}d}" for i in range(n)]
        group = self.group_of(n)
        T = len(self.time_levels)
        rows: dict[str, Any] = {}
        if self.design == "parallel":
            rows[PARTICIPANT] = np.repeat(ids, T)
            rows[self.treatment] = np.repeat(np.asarray(self.treatment_levels)[group], T)
            rows[self.time] = np.tile(self.time_levels, n)
            pos = np.tile(np.arange(T), n)
        else:
            ref, act = self.treatment_levels[0], self.treatment_levels[1]
            seqs = [(ref, act), (act, ref)]
            trt = [seqs[g][per] for g in group for per in (0, 1) for _ in range(T)]
            rows[PARTICIPANT] = np.repeat(ids, 2 * T)
            rows["sequence"] = np.repeat(
                [f"{s[0]}-{s[1]}" for s in (seqs[g] for g in group)], 2 * T
            )
            rows["period"] = np.tile(np.repeat([1, 2], T), n)
            rows[self.treatment] = np.asarray(trt, dtype=object)
            rows[self.time] = np.tile(self.time_levels, 2 * n)
            pos = np.tile(np.arange(T), 2 * n)
            # nuisance indicators a true model may use (fixed: [..., carryover, first_night]):
            # period 2 after the active treatment in period 1; the first night in the
            # laboratory (first time level of period 1)
            first_active = np.repeat(group == 1, 2 * T)
            rows["carryover"] = ((rows["period"] == 2) & first_active).astype(float)
            rows["first_night"] = ((rows["period"] == 1) & (pos == 0)).astype(float)
        out = pd.DataFrame(rows)
        if self.time_index:
            out[self.time_index] = pos
        return out

    def levels(self) -> dict[str, tuple[str, ...]]:
        """Levels of the layout's categorical columns, reference first."""
        lv = {self.treatment: self.treatment_levels, self.time: self.time_levels}
        if self.design == "crossover":
            lv["period"] = ("1", "2")
        return lv


@dataclass(frozen=True)
class OutcomeTruth:
    """The assumed data-generating model of one outcome.

    Attributes
    ----------
    name : str
        Outcome column.
    family : {"gaussian", "poisson", "negbin"}
        Gaussian, or counts with a log link (Poisson; negative binomial NB2 with
        ``Var = mu + mu^2 / dispersion``).
    fixed : tuple of str
        Terms of the true fixed part (defaults to the analysis model's).
    coefficients : dict
        lme4 column name (``"(Intercept)"``, ``"treatmentketamine:nightpost1"``) -> value
        (log scale for counts). Columns not listed are 0.
    sd : dict
        Grouping factor (``"participant_id"``, ``"participant_id:period"``) -> SD of its random
        intercept (log scale for counts: log-normal participant effects).
    slopes : dict
        Grouping factor -> {numeric column: SD of its random slope}.
    corr : dict
        Grouping factor -> correlation of intercept and slope(s) (one value, all pairs).
    sd_residual : float or None
        Residual SD (Gaussian only).
    dispersion : float or None
        Negative-binomial size ``theta`` (NB2).
    round_to : float or None
        Round simulated Gaussian values to this resolution (e.g. 0.5 min = one epoch).
    origin : str
        Where the numbers come from: ``"assumed"`` (an effects file) or a sentence saying they
        were estimated from pilot data.
    pilot_ci : dict
        Column -> 95% confidence interval of a coefficient estimated from pilot data (its
        uncertainty, shown beside the power).
    """

    name: str
    family: str = "gaussian"
    fixed: tuple[str, ...] = ()
    coefficients: dict[str, float] = field(default_factory=dict)
    sd: dict[str, float] = field(default_factory=dict)
    slopes: dict[str, dict[str, float]] = field(default_factory=dict)
    corr: dict[str, float] = field(default_factory=dict)
    sd_residual: float | None = None
    dispersion: float | None = None
    round_to: float | None = None
    origin: str = "assumed"
    pilot_ci: dict[str, tuple[float, float]] = field(default_factory=dict)

    def describe(self) -> str:
        """The truth in one line (for tables and captions).

        Examples
        --------
        >>> OutcomeTruth("y", coefficients={"(Intercept)": 35.0}, sd={"participant_id": 20.0},
        ...              sd_residual=18.6).describe()
        'gaussian; coefficients (Intercept)=35; SD participant_id=20, residual=18.6'
        """
        coefs = ", ".join(f"{k}={v:.4g}" for k, v in self.coefficients.items())
        sds = [f"{g}={v:.4g}" for g, v in self.sd.items()]
        for g, sl in self.slopes.items():
            sds += [f"{g} slope {c}={v:.4g}" for c, v in sl.items()]
        if self.sd_residual is not None:
            sds.append(f"residual={self.sd_residual:.4g}")
        text = f"{self.family}; coefficients {coefs}; SD {', '.join(sds)}"
        if self.corr:
            text += "; corr " + ", ".join(f"{g}={v:.3g}" for g, v in self.corr.items())
        if self.dispersion is not None:
            text += f"; NB dispersion {self.dispersion:.4g}"
        return text


@dataclass(frozen=True)
class PowerHypothesis:
    """One pre-specified test, as the analysis will run it.

    Attributes
    ----------
    id : str
        Hypothesis identifier (``"H1"``).
    outcome : str
        Outcome column (an :class:`OutcomeTruth` name).
    family : str
        Model family the analysis fits (``"gaussian"``, ``"poisson"``, ``"negbin"``).
    fixed : tuple of str
        Fixed terms of the analysis model.
    random : tuple of studykit.models.random_effects.RandomEffect
        Random terms of the analysis model (lme4's ``(1 | participant_id)``, ``||`` kept).
    levels : dict
        Levels of categorical variables, reference first.
    contrasts : tuple of (str, dict)
        One ``(label, {lme4 column: weight})`` per tested contrast.
    alternative : {"greater", "less", "two-sided"}
    alpha : float
        Level at which the (adjusted) p-value is compared.
    multiplicity_family : str
    adjust_method : str
        Adjustment within the family in each replicate (``"holm"``, ...).
    df_method : str
        ``"satterthwaite"`` (LMM) ; count models are z tests.
    family_order : tuple of str
        Testing order of the family's hypotheses (fixed-sequence); default the design order.
    estimator : str
        The analysis (:data:`studykit.estimators.ESTIMATORS`): ``"did"`` fits ``fixed`` /
        ``random`` and tests ``contrasts``; the others prepare the replicate's data and model
        through :mod:`studykit.estimators` (needs ``estimand``).
    estimand : studykit.estimators.CrossoverSpec or None
        Outcome, treatment and time axis of a crossover comparison (one contrast per level).
    effect_of_interest : float or None
        The protocol's smallest effect of interest (for the verdict probabilities).
    conf_level : float
        Level of the two-sided interval the analysis reports (the verdict's interval).
    """

    id: str
    outcome: str
    family: str
    fixed: tuple[str, ...]
    random: tuple[RandomEffect, ...]
    levels: dict[str, tuple[str, ...]]
    contrasts: tuple[tuple[str, dict[str, float]], ...]
    alternative: str = "greater"
    alpha: float = 0.025
    multiplicity_family: str = "confirmatory"
    adjust_method: str = "holm"
    df_method: str = "satterthwaite"
    family_order: tuple[str, ...] = ()
    estimator: str = "did"
    estimand: Any = None
    effect_of_interest: float | None = None
    conf_level: float = 0.95


@dataclass(frozen=True)
class PowerDesign:
    """Layout + outcome truths + hypotheses: everything a power simulation needs.

    Examples
    --------
    >>> d = design_from_dict(TRIAL_SIM_EXAMPLE)
    >>> [h.id for h in d.hypotheses], d.outcomes["sws_min"].sd
    (['H1'], {'participant_id': 15.0})
    """

    layout: Layout
    outcomes: dict[str, OutcomeTruth]
    hypotheses: tuple[PowerHypothesis, ...]
    source: str = "design"

    def select(self, ids: Sequence[str]) -> PowerDesign:
        """Keep only the hypotheses with these ids (in the given order)."""
        known = {h.id: h for h in self.hypotheses}
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise _fail("hypotheses", f"unknown id(s) {unknown}; known: {sorted(known)}.")
        return replace(self, hypotheses=tuple(known[i] for i in ids))

    def with_effects(self, coefficients: Mapping[str, Mapping[str, float]]) -> PowerDesign:
        """A copy with some true coefficients replaced (outcome -> {column: value})."""
        outs = dict(self.outcomes)
        for name, coefs in coefficients.items():
            if name not in outs:
                raise _fail("effects", f"unknown outcome {name!r}; outcomes: {sorted(outs)}.")
            outs[name] = replace(outs[name], coefficients={**outs[name].coefficients, **coefs})
        return replace(self, outcomes=outs)


# --------------------------------------------------------------------------- parsing helpers
def _num(value: Any, where: str, *, lo: float | None = None, positive: bool = False) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError) as exc:
        raise _fail(where, f"expected a number, got {value!r}.") from exc
    if not math.isfinite(x) or (positive and x <= 0) or (lo is not None and x < lo):
        cond = "> 0" if positive else (f">= {lo}" if lo is not None else "finite")
        raise _fail(where, f"expected a finite number {cond}, got {value!r}.")
    return x


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(where, f"expected a mapping (key: value), got {type(value).__name__}.")
    return {str(k): v for k, v in value.items()}


def _strs(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise _fail(where, f"expected a list, got {value!r}.")
    return tuple(str(v) for v in value)


def _choice(value: Any, where: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise _fail(where, f"invalid value {value!r}; expected one of {', '.join(allowed)}.")
    return str(value)


def _layout(raw: Any) -> Layout:
    raw = _mapping(raw, "layout")
    allowed = {"design", "treatment", "time", "missing"}
    extra = sorted(set(raw) - allowed)
    if extra:
        raise _fail("layout", f"unknown key(s) {extra}; allowed: {sorted(allowed)}.")
    design = _choice(raw.get("design", "parallel"), "layout.design", ("parallel", "crossover"))
    trt = _mapping(raw.get("treatment"), "layout.treatment")
    time = _mapping(raw.get("time"), "layout.time")
    levels = _strs(trt.get("levels", ["placebo", "ketamine"]), "layout.treatment.levels")
    if len(levels) < 2 or (design == "crossover" and len(levels) != 2):
        raise _fail("layout.treatment.levels", f"need 2 levels (crossover) or >= 2; got {levels}.")
    ngroups = len(levels) if design == "parallel" else 2
    alloc = trt.get("allocation", [1] * ngroups)
    alloc_t = tuple(_num(a, "layout.treatment.allocation", positive=True) for a in alloc)
    if len(alloc_t) != ngroups:
        raise _fail(
            "layout.treatment.allocation",
            f"needs {ngroups} weights ({'arms' if design == 'parallel' else 'sequences'}); got {alloc}.",
        )
    tlevels = _strs(time.get("levels", ["baseline", "post1", "post2"]), "layout.time.levels")
    missing = {
        str(k): _num(v, f"layout.missing.{k}", lo=0.0)
        for k, v in _mapping(raw.get("missing"), "layout.missing").items()
    }
    bad = {k: v for k, v in missing.items() if k not in tlevels or v >= 1}
    if bad:
        raise _fail(
            "layout.missing",
            f"{bad}: keys must be time levels {list(tlevels)} and values probabilities in [0, 1).",
        )
    return Layout(
        design=design,
        treatment=str(trt.get("variable", "treatment")),
        treatment_levels=levels,
        allocation=alloc_t,
        time=str(time.get("variable", "night")),
        time_levels=tlevels,
        time_index=None
        if time.get("index", "night_index") is None
        else str(time.get("index", "night_index")),
        missing=missing,
    )


def _random(raw: Any, where: str) -> tuple[RandomEffect, ...]:
    """Random terms: a group name (random intercept) or ``{group, slopes, correlated}``.

    Examples
    --------
    >>> [r.label for r in _random([{"group": "participant_id", "slopes": ["night_index"],
    ...                             "correlated": False}], "random")]
    ['(1 + night_index || participant_id)']
    """
    if raw is None:
        return (RandomEffect(PARTICIPANT),)
    out: list[RandomEffect] = []
    for i, r in enumerate(raw if isinstance(raw, list) else [raw]):
        at = f"{where}[{i}]"
        if not isinstance(r, str):
            r = _mapping(r, at)
            extra = sorted(set(r) - {"group", "slopes", "correlated"})
            if extra:
                raise _fail(at, f"unknown key(s) {extra}; allowed: group, slopes, correlated.")
        try:
            if isinstance(r, str):
                out.append(RandomEffect(r))
                continue
            group = r.get("group", PARTICIPANT)
            group = ":".join(map(str, group)) if isinstance(group, list) else str(group)
            slopes = _strs(r.get("slopes", []), f"{at}.slopes")
            correlated = r.get("correlated", True)
            if not isinstance(correlated, bool):
                raise _fail(f"{at}.correlated", f"expected true or false, got {correlated!r}.")
            out.append(RandomEffect(group, ("1", *slopes), correlated=correlated))
        except ModelError as exc:
            raise _fail(at, str(exc)) from exc
    return tuple(out)


def _truth(name: str, raw: Any, *, fixed_default: tuple[str, ...]) -> OutcomeTruth:
    where = f"outcomes.{name}"
    raw = _mapping(raw, where)
    allowed = {"family", "fixed", "coefficients", "sd", "slopes", "corr", "sd_residual",
               "dispersion", "round_to", "random"}  # fmt: skip
    extra = sorted(set(raw) - allowed)
    if extra:
        raise _fail(where, f"unknown key(s) {extra}; allowed: {sorted(allowed)}.")
    family = _choice(raw.get("family", "gaussian"), f"{where}.family", FAMILIES)
    coefs = {
        str(k): _num(v, f"{where}.coefficients.{k}")
        for k, v in _mapping(raw.get("coefficients"), f"{where}.coefficients").items()
    }
    sd_raw = raw.get("sd", {})
    if not isinstance(sd_raw, Mapping):
        sd_raw = {PARTICIPANT: sd_raw}
    sd = {str(k): _num(v, f"{where}.sd.{k}", lo=0.0) for k, v in sd_raw.items()}
    slopes = {
        str(g): {
            str(k): _num(v, f"{where}.slopes.{g}.{k}", lo=0.0)
            for k, v in _mapping(s, f"{where}.slopes.{g}").items()
        }
        for g, s in _mapping(raw.get("slopes"), f"{where}.slopes").items()
    }
    corr = {
        str(g): _num(v, f"{where}.corr.{g}")
        for g, v in _mapping(raw.get("corr"), f"{where}.corr").items()
    }
    if any(abs(c) >= 1 for c in corr.values()):
        raise _fail(f"{where}.corr", f"correlations must be in (-1, 1); got {corr}.")
    sd_res = raw.get("sd_residual")
    if family == "gaussian":
        if sd_res is None:
            raise _fail(where, "a Gaussian outcome needs sd_residual (the within-participant SD).")
        sd_res = _num(sd_res, f"{where}.sd_residual", positive=True)
    disp = raw.get("dispersion")
    if family == "negbin":
        if disp is None:
            raise _fail(where, "a negative-binomial outcome needs dispersion (NB2 size theta > 0).")
        disp = _num(disp, f"{where}.dispersion", positive=True)
    fixed = _strs(raw["fixed"], f"{where}.fixed") if "fixed" in raw else fixed_default
    rnd = raw.get("round_to")
    return OutcomeTruth(
        name=name,
        family=family,
        fixed=fixed,
        coefficients=coefs,
        sd=sd,
        slopes=slopes,
        corr=corr,
        sd_residual=sd_res,
        dispersion=disp,
        round_to=None if rnd is None else _num(rnd, f"{where}.round_to", positive=True),
    )


def _did_weights(
    layout: Layout,
    fixed: Sequence[str],
    levels: Mapping[str, Sequence[str]],
    *,
    treatment: str,
    treated: str,
    control: str,
    time: str,
    baseline: str,
    at_times: Sequence[str],
) -> list[dict[str, float]]:
    """Weights of the difference-in-differences contrasts on the analysis model's columns.

    From :func:`studykit.models.emmeans.did_matrix` (the analysis' one reference grid) on the
    model's design for the layout's schedule; one ``{lme4 column: weight}`` per time level,
    zero weights left out. With treatment x time in the model it is the interaction column.

    Examples
    --------
    >>> _did_weights(Layout(), ["treatment", "night", "treatment:night"], Layout().levels(),
    ...              treatment="treatment", treated="ketamine", control="placebo",
    ...              time="night", baseline="baseline", at_times=["post2"])
    [{'treatmentketamine:nightpost2': 1.0}]
    """
    lv = {k: list(v) for k, v in levels.items()}
    try:
        design = build_design(layout.template(4), list(fixed), levels=lv)
        _, L, _ = did_matrix(
            SimpleNamespace(design=design),
            treatment=treatment,
            time=time,
            treated=treated,
            control=control,
            baseline=baseline,
            at_times=at_times,
        )
    except ModelError as exc:
        raise _fail("hypotheses", f"the difference in differences cannot be formed: {exc}") from exc
    out = [{c: float(w) for c, w in zip(design.columns, row, strict=True) if w != 0.0} for row in L]
    if not all(out):
        raise _fail(
            "hypotheses",
            f"the model {list(fixed)} has no {treatment} x {time} interaction: its difference "
            "in differences is zero by construction. Add the interaction term.",
        )
    return out


def design_from_dict(spec: Mapping[str, Any], *, source: str = "design") -> PowerDesign:
    """Build a :class:`PowerDesign` from a mapping (e.g. a parsed YAML file).

    Parameters
    ----------
    spec : mapping
        Keys ``layout``, ``outcomes``, ``hypotheses`` and optionally ``multiplicity``
        (family -> {method, alpha}); see :data:`TRIAL_SIM_EXAMPLE` for a complete example.
    source : str
        Where the spec came from (for messages and the result's settings).

    Returns
    -------
    PowerDesign

    Raises
    ------
    ProtocolError
        A missing or invalid entry; the message names it and what is allowed.

    Examples
    --------
    >>> d = design_from_dict(TRIAL_SIM_EXAMPLE)
    >>> d.hypotheses[0].contrasts
    (('ketamine vs reference, change from baseline to post1', {'treatmentketamine:nightpost1': 1.0}),)
    """
    spec = _mapping(spec, "top level")
    extra = sorted(set(spec) - {"layout", "outcomes", "hypotheses", "multiplicity", "description"})
    if extra:
        raise _fail(
            "top level",
            f"unknown key(s) {extra}; allowed: layout, outcomes, hypotheses, multiplicity, description.",
        )
    layout = _layout(spec.get("layout"))
    families = _mapping(spec.get("multiplicity"), "multiplicity")
    raw_h = spec.get("hypotheses")
    if not isinstance(raw_h, list) or not raw_h:
        raise _fail("hypotheses", "give a non-empty list of hypotheses.")
    default_fixed: tuple[str, ...] = (
        layout.treatment,
        layout.time,
        f"{layout.treatment}:{layout.time}",
    )
    if layout.design == "crossover":
        default_fixed = (*default_fixed, "period")
    hyps = []
    for i, h in enumerate(raw_h):
        where = f"hypotheses[{i}]"
        h = _mapping(h, where)
        if "id" not in h or "outcome" not in h:
            raise _fail(where, "each hypothesis needs an id and an outcome.")
        fam_name = str(h.get("multiplicity_family", "confirmatory"))
        fam = _mapping(families.get(fam_name, {}), f"multiplicity.{fam_name}")
        alpha = _num(h.get("alpha", fam.get("alpha", 0.025)), f"{where}.alpha", positive=True)
        method = _choice(
            h.get("adjust_method", fam.get("method", "holm")),
            f"{where}.adjust_method",
            METHODS,
        )
        contrast = _mapping(h.get("contrast", {}), f"{where}.contrast")
        if "weights" in contrast:
            w = {
                str(k): _num(v, f"{where}.contrast.weights.{k}")
                for k, v in _mapping(contrast["weights"], f"{where}.contrast.weights").items()
            }
            contrasts: tuple[tuple[str, dict[str, float]], ...] = (
                (str(contrast.get("label", " + ".join(w))), w),
            )
        else:
            tl = _strs(
                contrast.get("time_levels", [layout.time_levels[1]]),
                f"{where}.contrast.time_levels",
            )
            bad = [t for t in tl if t not in layout.time_levels[1:]]
            if bad:
                raise _fail(
                    f"{where}.contrast.time_levels",
                    f"{bad} not among post-baseline levels {list(layout.time_levels[1:])}.",
                )
        levels = {
            **layout.levels(),
            **{
                str(k): _strs(v, f"{where}.levels.{k}")
                for k, v in _mapping(h.get("levels"), f"{where}.levels").items()
            },
        }
        fixed = _strs(h["fixed"], f"{where}.fixed") if "fixed" in h else default_fixed
        if "weights" not in contrast:
            weights = _did_weights(
                layout,
                fixed,
                levels,
                treatment=layout.treatment,
                treated=layout.treatment_levels[1],
                control=layout.treatment_levels[0],
                time=layout.time,
                baseline=layout.time_levels[0],
                at_times=tl,
            )
            contrasts = tuple(
                (f"{layout.treatment_levels[1]} vs reference, change from baseline to {t}", w)
                for t, w in zip(tl, weights, strict=True)
            )
        hyps.append(
            PowerHypothesis(
                id=str(h["id"]),
                outcome=str(h["outcome"]),
                family=_choice(h.get("family", "gaussian"), f"{where}.family", FAMILIES),
                fixed=fixed,
                random=_random(h.get("random"), f"{where}.random"),
                levels=levels,
                contrasts=contrasts,
                alternative=_choice(
                    h.get("direction", "greater"), f"{where}.direction", ALTERNATIVES
                ),
                alpha=alpha,
                multiplicity_family=fam_name,
                adjust_method=method,
                family_order=_strs(fam.get("order", []), f"multiplicity.{fam_name}.order"),
                effect_of_interest=(
                    _num(h["effect_of_interest"], f"{where}.effect_of_interest", positive=True)
                    if "effect_of_interest" in h
                    else None
                ),
            )
        )
    ids = [h.id for h in hyps]
    if len(set(ids)) != len(ids):
        raise _fail("hypotheses", f"duplicate ids in {ids}.")
    outcomes = _outcomes(spec.get("outcomes"), hyps)
    return PowerDesign(layout=layout, outcomes=outcomes, hypotheses=tuple(hyps), source=source)


def _outcomes(raw: Any, hyps: Sequence[PowerHypothesis]) -> dict[str, OutcomeTruth]:
    raw = _mapping(raw, "outcomes")
    out = {}
    for h in hyps:
        if h.outcome in out:
            continue
        if h.outcome not in raw:
            raise _fail(
                "outcomes",
                f"hypothesis {h.id} tests {h.outcome!r} but no assumed truth is given for it "
                f"(outcomes given: {sorted(raw)}). Add outcomes.{h.outcome} with coefficients, "
                "sd and sd_residual (or use --pilot to estimate them).",
            )
        out[h.outcome] = _truth(h.outcome, raw[h.outcome], fixed_default=h.fixed)
    return out


def _read_yaml(path: str | os.PathLike[str]) -> Any:
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise InputError(f"Power design file {p!r} does not exist or is not a file.")
    try:
        with open(p, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise InputError(f"Power design file {p!r} is not valid YAML: {exc}") from exc


def load_design(path: str | os.PathLike[str]) -> PowerDesign:
    """Read a power design YAML file (layout, outcomes, hypotheses); see :func:`design_from_dict`."""
    return design_from_dict(_read_yaml(path), source=os.fspath(path))


def _estimand(h: Any, layout: Layout, levels: Mapping[str, Sequence[str]]) -> Any:
    """The :class:`~studykit.estimators.CrossoverSpec` of a protocol DiD hypothesis."""
    c = h.contrast
    return CrossoverSpec(
        outcome=h.outcome,
        family=h.family,
        treatment=c.treatment_variable,
        treatment_levels=(str(c.treatment_reference), str(c.treatment_level)),
        time=c.time_variable,
        baseline=str(c.time_reference),
        window=tuple(str(x) for x in c.window),
        levels=tuple(str(x) for x in c.time_levels),
        period="period" if layout.design == "crossover" else None,
        period_levels=tuple(levels.get("period", ("1", "2"))),
    )


def design_from_protocol(
    protocol: Any,
    effects: Mapping[str, Any] | str | os.PathLike[str],
    *,
    hypotheses: Sequence[str] | None = None,
) -> PowerDesign:
    """Combine a loaded protocol's hypotheses with assumed effects into a :class:`PowerDesign`.

    Parameters
    ----------
    protocol : studykit.protocol.Protocol
        The pre-registered analyses (models, contrasts, directions, alpha, multiplicity).
    effects : mapping or path
        ``layout`` (optional; the design is crossover when the protocol's models have a
        ``period`` term) and ``outcomes`` (assumed truth per outcome variable). Protocol
        hypotheses whose outcome has no assumed truth are left out, with a log message.
    hypotheses : sequence of str, optional
        Only these hypothesis ids.

    Returns
    -------
    PowerDesign
    """
    if not isinstance(effects, Mapping):
        effects = _read_yaml(effects)
    effects = _mapping(effects, "effects")
    extra = sorted(set(effects) - {"layout", "outcomes", "description"})
    if extra:
        raise _fail(
            "effects file", f"unknown key(s) {extra}; allowed: layout, outcomes, description."
        )
    raw_out = _mapping(effects.get("outcomes"), "outcomes")
    hyps_all = list(protocol.hypotheses)
    if hypotheses is not None:
        known = {h.id for h in hyps_all}
        unknown = [i for i in hypotheses if i not in known]
        if unknown:
            raise _fail("hypotheses", f"unknown id(s) {unknown}; the protocol has {sorted(known)}.")
        hyps_all = [h for h in hyps_all if h.id in set(hypotheses)]
    lay_raw = dict(_mapping(effects.get("layout"), "layout"))
    first = next((h for h in hyps_all if h.contrast.type == "difference_in_differences"), None)
    if first is None:
        raise _fail("protocol", "no difference-in-differences hypothesis to simulate.")
    crossover = any("period" in t.split(":") for h in hyps_all for t in h.fixed)
    lay_raw.setdefault("design", "crossover" if crossover else "parallel")
    c = first.contrast
    lay_raw.setdefault(
        "treatment",
        {"variable": c.treatment_variable, "levels": [c.treatment_reference, c.treatment_level]},
    )
    lay_raw.setdefault(
        "time",
        {
            "variable": c.time_variable,
            "levels": list(c.window),
            "index": f"{c.time_variable}_index",
        },
    )
    layout = _layout(lay_raw)
    hyps = []
    skipped = []
    for h in hyps_all:
        if h.contrast.type != "difference_in_differences":
            skipped.append(f"{h.id} ({h.contrast.type} is not simulated)")
            continue
        if h.outcome not in raw_out:
            skipped.append(f"{h.id} (no assumed truth for {h.outcome})")
            continue
        if (
            h.contrast.time_variable != layout.time
            or tuple(h.contrast.window) != layout.time_levels
        ):
            skipped.append(
                f"{h.id} (time axis {h.contrast.time_variable} {list(h.contrast.window)} differs from the layout's)"
            )
            continue
        if h.covariates:
            skipped.append(f"{h.id} (covariates {list(h.covariates)} are not simulated)")
            continue
        c = h.contrast
        levels = {**layout.levels(), **{k: tuple(map(str, v)) for k, v in h.levels.items()}}
        hyps.append(
            PowerHypothesis(
                id=h.id,
                outcome=h.outcome,
                family=h.family,
                fixed=tuple(h.fixed),
                random=tuple(h.random),
                levels=levels,
                contrasts=tuple(
                    zip(
                        c.labels(),
                        _did_weights(
                            layout,
                            h.fixed,
                            levels,
                            treatment=c.treatment_variable,
                            treated=str(c.treatment_level),
                            control=str(c.treatment_reference),
                            time=c.time_variable,
                            baseline=str(c.time_reference),
                            at_times=[str(t) for t in c.time_levels],
                        ),
                        strict=True,
                    )
                ),
                alternative=h.direction,
                alpha=float(h.alpha),
                multiplicity_family=h.multiplicity_family,
                adjust_method=h.adjust_method,
                df_method=h.df_method,
                family_order=tuple(
                    getattr(protocol.families.get(h.multiplicity_family), "order", ()) or ()
                ),
                estimand=_estimand(h, layout, levels),
                effect_of_interest=h.effect_of_interest,
                conf_level=float(h.conf_level),
            )
        )
    if skipped:
        logger.warning("power: hypotheses left out: %s", "; ".join(skipped))
    if not hyps:
        raise _fail("effects", f"no protocol hypothesis can be simulated: {'; '.join(skipped)}.")
    outcomes = _outcomes(raw_out, hyps)
    return PowerDesign(
        layout=layout,
        outcomes=outcomes,
        hypotheses=tuple(hyps),
        source=str(getattr(protocol, "path", None) or getattr(protocol, "id", "protocol")),
    )


#: The design of the R reference data set ``trial_sim`` (lme4 reference, ``trial_truth.json``):
#: 40 participants 20/20 parallel, nights baseline/post1/post2, SWS 85 + 2 post1 + 1 post2 +
#: 10 ketamine:post1 + 5 ketamine:post2, participant SD 15, residual SD 12; H1 is the one-sided
#: night-1 difference in differences.
TRIAL_SIM_EXAMPLE: dict[str, Any] = {
    "layout": {
        "design": "parallel",
        "treatment": {"variable": "treatment", "levels": ["placebo", "ketamine"]},
        "time": {
            "variable": "night",
            "levels": ["baseline", "post1", "post2"],
            "index": "night_index",
        },
    },
    "outcomes": {
        "sws_min": {
            "family": "gaussian",
            "coefficients": {
                "(Intercept)": 85,
                "nightpost1": 2,
                "nightpost2": 1,
                "treatmentketamine:nightpost1": 10,
                "treatmentketamine:nightpost2": 5,
            },
            "sd": {"participant_id": 15},
            "sd_residual": 12,
        }
    },
    "hypotheses": [
        {
            "id": "H1",
            "outcome": "sws_min",
            "contrast": {"time_levels": ["post1"]},
            "direction": "greater",
        }
    ],
    "multiplicity": {"confirmatory": {"method": "holm", "alpha": 0.025}},
}


def as_design(obj: Any, effects: Any, hypotheses: Sequence[str] | None) -> PowerDesign:
    """A :class:`PowerDesign` from a design, a mapping, a design or protocol YAML, or a Protocol.

    ``effects`` (a mapping or YAML file) supply what a protocol does not state (layout, outcomes)
    or override a design's ``outcomes.<name>`` fields; ``hypotheses`` selects ids.

    Examples
    --------
    >>> d = as_design(TRIAL_SIM_EXAMPLE, {"outcomes": {"sws_min": {"sd_residual": 10}}}, None)
    >>> d.hypotheses[0].id, d.outcomes["sws_min"].sd_residual
    ('H1', 10)
    """
    if isinstance(obj, PowerDesign):
        design = obj
    elif isinstance(obj, Mapping):
        design = design_from_dict(obj)
    elif isinstance(obj, (str, os.PathLike)):
        path = os.fspath(obj)
        if not os.path.isfile(path):
            raise InputError(
                f"{path!r} does not exist or is not a file (a protocol or power design YAML)."
            )
        with open(path, encoding="utf-8") as fh:
            try:
                doc = yaml.safe_load(fh)
            except yaml.YAMLError as exc:
                raise InputError(f"{path!r} is not valid YAML: {exc}") from exc
        if isinstance(doc, Mapping) and "outcomes" in doc and "hypotheses" in doc:
            design = load_design(path)
        else:
            if effects is None:
                raise ProtocolError(
                    f"Protocol {path!r} states the analyses but not the effects to simulate: "
                    "give effects (an effects YAML with layout and outcomes) or pilot data."
                )
            return design_from_protocol(load_protocol(path), effects, hypotheses=hypotheses)
    elif hasattr(obj, "hypotheses") and hasattr(obj, "sha256"):
        if effects is None:
            raise ProtocolError("A protocol needs effects (layout and outcomes) to simulate from.")
        return design_from_protocol(obj, effects, hypotheses=hypotheses)
    else:
        raise InputError(
            f"Cannot simulate from a {type(obj).__name__}: give a PowerDesign, a mapping, a "
            "path to a power design or protocol YAML, or a loaded Protocol."
        )
    if effects is not None:
        design = _override(design, effects)
    if hypotheses is not None:
        design = design.select(list(hypotheses))
    return design


def _override(design: PowerDesign, effects: Any) -> PowerDesign:
    """Apply an effects mapping/file ({outcomes: {name: {field: value}}}) to a design."""
    if not isinstance(effects, Mapping):
        path = os.fspath(effects)
        if not os.path.isfile(path):
            raise InputError(f"Effects file {path!r} does not exist.")
        with open(path, encoding="utf-8") as fh:
            effects = yaml.safe_load(fh) or {}
    outs = dict(design.outcomes)
    for name, fields in dict(effects.get("outcomes", {})).items():
        if name not in outs:
            raise ProtocolError(f"Effects: unknown outcome {name!r}; outcomes: {sorted(outs)}.")
        fields = dict(fields)
        if "coefficients" in fields:
            fields["coefficients"] = {
                **outs[name].coefficients,
                **{str(k): float(v) for k, v in fields["coefficients"].items()},
            }
        allowed = {"coefficients", "sd", "sd_residual", "dispersion", "slopes", "corr", "round_to"}
        bad = sorted(set(fields) - allowed)
        if bad:
            raise ProtocolError(
                f"Effects for {name!r}: unknown key(s) {bad}; allowed: {sorted(allowed)}."
            )
        if "sd" in fields and not isinstance(fields["sd"], Mapping):
            fields["sd"] = {"participant_id": float(fields["sd"])}
        outs[name] = replace(outs[name], **fields)
    return replace(design, outcomes=outs)
