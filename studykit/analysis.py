"""Protocol + study data -> one results row per hypothesis and contrast.

For each hypothesis of a :class:`~studykit.protocol.Protocol`, :func:`run_analysis` builds the
analysis data (the outcome table joined with the periods and roster tables), applies the
analysis set and the intercurrent-event strategies of the estimand, records every excluded
observation with its reason, fits the pre-specified model (linear mixed model, or Poisson /
negative-binomial mixed model for counts), computes the pre-specified contrast, adjusts the
p-values within each multiplicity family and applies the verdict rule. Nothing is chosen after
seeing the data: every choice comes from the protocol.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from studykit import estimators
from studykit.errors import ModelError, ProtocolError, ValidationError
from studykit.missing import (
    DeltaAdjustedResult,
    ImputationModel,
    delta_adjusted_analysis,
    tipping_point,
)
from studykit.models.clmm import CLMMResult, fit_clmm
from studykit.models.emmeans import did_matrix, emmeans
from studykit.models.glmm import GLMMResult, fit_glmm
from studykit.models.inference import (
    TABLE_COLUMNS,
    confidence_interval,
    contrast_table,
    correlation_test,
    wald_test,
)
from studykit.models.lmm import LMMResult, fit_lmm
from studykit.models.multiplicity import adjust_pvalues, adjusted_intervals
from studykit.protocol import Hypothesis, HypothesisPlan, Protocol
from studykit.protocol.model import (
    EVENT_TIME_COLUMNS,
    RATIO_SCALES,
    IntercurrentEvent,
    SensitivityAnalysis,
)
from studykit.protocol.plan import claim_verdict, compile_plan

__all__ = [
    "HYPOTHESIS_COLUMNS",
    "AnalysisResults",
    "HypothesisFit",
    "run_analysis",
]

logger = logging.getLogger(__name__)

#: Columns of the hypothesis results table, in order (docs/ARCHITECTURE.md).
HYPOTHESIS_COLUMNS = [
    "protocol_id",
    "protocol_sha256",
    "hypothesis_id",
    "analysis",
    "claim_id",
    "claim",
    "source",
    "evidence",
    "outcome",
    "contrast",
    "estimand",
    "role",
    "multiplicity_family",
    "family",
    "scale",
    "n_ketamine",
    "n_placebo",
    "n_participants",
    "n_observations",
    "n_excluded",
    "excluded_reasons",
    "estimate",
    "std_error",
    "df",
    "df_method",
    "statistic",
    "alternative",
    "conf_level",
    "conf_low",
    "conf_high",
    "p_value",
    "p_adjusted",
    "adjust_method",
    "effect_size",
    "effect_size_definition",
    "verdict",
    "claim_verdict",
    "verdict_rule",
    "model",
    "converged",
    "singular",
    "warnings",
    "simulated",
]

#: A planned contrast's row: the tidy inference columns, the interval's level and the scale.
_CONTRAST_COLUMNS = [*TABLE_COLUMNS, "conf_level", "scale"]
#: Column carrying the number of treatments a participant's periods cover (correlations).
_N_TREATMENTS = "_n_treatments"
#: Column carrying a period-level observation's time on the event-timing scale: the latest
#: night a correlation reads (its night_index), for intercurrent events' timing.
_EVENT_TIME = "_event_time"
_TIPPING_COLUMNS = [
    "analysis",
    "hypothesis_id",
    "contrast",
    "primary_verdict",
    "shifts",
    "tipping_shift",
    "tipping_verdict",
]
_EXCLUSION_COLUMNS = ["hypothesis_id", "participant_id", "period", "n_observations", "reason"]
_KEYS = {
    "nights": ["participant_id", "period", "night"],
    "diary": ["participant_id", "period", "day"],
}


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class HypothesisFit:
    """Everything computed for one hypothesis (for tables, figures and diagnostics).

    Attributes
    ----------
    hypothesis : Hypothesis
        The protocol's hypothesis.
    plan : HypothesisPlan
        The compiled plan that was executed (after any change of analysis set or window).
    data : pandas.DataFrame
        The analysis data actually modelled (after the window, analysis set, intercurrent
        events and missing values); for a ``change_correlation`` one row per period with the
        two changes.
    model : LMMResult, GLMMResult or None
        The fitted model (``None`` for a correlation or when the fit failed).
    contrasts : pandas.DataFrame
        One row per contrast, unadjusted: ``term, estimate, std_error, statistic, df,
        p_value, conf_low, conf_high, df_method, alternative, conf_level, scale`` (rate ratios
        for counts; SE and statistic on the log scale).
    coefficients : pandas.DataFrame or None
        The model's ``coef_table()`` (lme4 column names).
    emmeans : pandas.DataFrame or None
        Model-estimated means per treatment x time cell (averaged over other factors with
        equal weights, numeric covariates at their mean, as emmeans does): columns
        ``<treatment variable>, <time variable>, estimate, std_error, df, conf_low, conf_high,
        conf_level, scale`` (rates for counts).
    exclusions : pandas.DataFrame
        ``hypothesis_id, participant_id, period, n_observations, reason``.
    counts : dict
        ``n_ketamine, n_placebo, n_participants, n_observations, n_excluded``.
    warnings : list of str
        Model warnings and analysis notes.
    error : str or None
        Why the model could not be fitted, if it could not.
    """

    hypothesis: Hypothesis
    plan: HypothesisPlan
    data: pd.DataFrame
    model: Any
    contrasts: pd.DataFrame
    coefficients: pd.DataFrame | None
    emmeans: pd.DataFrame | None
    exclusions: pd.DataFrame
    counts: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class AnalysisResults:
    """The results of :func:`run_analysis`.

    Attributes
    ----------
    protocol : Protocol
        The protocol analysed (its ``sha256`` is in every row).
    hypotheses : pandas.DataFrame
        One row per hypothesis x contrast, columns :data:`HYPOTHESIS_COLUMNS` exactly.
    fits : dict
        Hypothesis id -> :class:`HypothesisFit` (models, emmeans, coefficients, data).
    simulated : bool
        Whether the data are simulated (then every row says so).
    sensitivity_fits : dict
        Sensitivity analysis name -> hypothesis id -> :class:`HypothesisFit`.
    missing_data : dict
        Missing-data (delta-adjusted) sensitivity analysis name -> hypothesis id ->
        :class:`studykit.missing.DeltaAdjustedResult` (pooled results per shift).
    tipping_points : pandas.DataFrame
        One row per missing-data analysis x hypothesis x contrast: ``analysis,
        hypothesis_id, contrast, primary_verdict, shifts`` (the grid, signed, as text),
        ``tipping_shift`` (NaN: no tipping point within the grid), ``tipping_verdict``.
    """

    protocol: Protocol
    hypotheses: pd.DataFrame
    fits: dict[str, HypothesisFit]
    simulated: bool
    sensitivity_fits: dict[str, dict[str, HypothesisFit]] = field(default_factory=dict)
    missing_data: dict[str, dict[str, DeltaAdjustedResult]] = field(default_factory=dict)
    tipping_points: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=_TIPPING_COLUMNS)
    )

    def fit(self, hypothesis_id: str) -> HypothesisFit:
        """The :class:`HypothesisFit` of one hypothesis."""
        try:
            return self.fits[hypothesis_id]
        except KeyError as exc:
            raise ProtocolError(
                f"No results for hypothesis {hypothesis_id!r}; analysed: {', '.join(self.fits)}."
            ) from exc

    @property
    def emmeans(self) -> pd.DataFrame:
        """Model-estimated cell means of every model-based hypothesis, in one long table.

        Columns ``hypothesis_id, outcome, treatment, time_variable, time``, the time variable
        itself (``night`` or ``day``, missing for rows of the other kind), then ``estimate,
        std_error, df, conf_low, conf_high, conf_level, scale`` (``"mean"``, or ``"rate"`` for
        counts). Rows follow the protocol order, then treatment (reference first) and time.
        """
        parts = []
        for hid, f in self.fits.items():
            if f.emmeans is None or not len(f.emmeans):
                continue
            c = f.plan.contrast
            e = f.emmeans.copy()
            e.insert(0, "hypothesis_id", hid)
            e.insert(1, "outcome", f.plan.selection.outcome)
            e.insert(2, "time_variable", c.time_variable)
            e.insert(3, "time", e[c.time_variable].astype(str))
            if c.treatment_variable != "treatment":
                e["treatment"] = e[c.treatment_variable]
            parts.append(e)
        if not parts:
            return pd.DataFrame(
                columns=["hypothesis_id", "outcome", "treatment", "time_variable", "time"]
            )
        out = pd.concat(parts, ignore_index=True)
        lead = ["hypothesis_id", "outcome", "treatment", "time_variable", "time"]
        return out[lead + [c for c in out.columns if c not in lead]]

    def exclusions(self) -> pd.DataFrame:
        """Every exclusion of every hypothesis (``hypothesis_id, participant_id, period,
        n_observations, reason``)."""
        frames = [f.exclusions for f in self.fits.values() if len(f.exclusions)]
        if not frames:
            return pd.DataFrame(columns=_EXCLUSION_COLUMNS)
        return pd.concat(frames, ignore_index=True)

    def adjusted_intervals(self) -> pd.DataFrame:
        """Multiplicity-adjusted (simultaneous) confidence intervals of every result row.

        See :func:`studykit.models.multiplicity.adjusted_intervals` (the one implementation).

        Returns
        -------
        pandas.DataFrame
            ``hypothesis_id, contrast, conf_level_adjusted, conf_low_adjusted,
            conf_high_adjusted, ci_adjustment``.
        """
        return adjusted_intervals(self.hypotheses)


# --------------------------------------------------------------------------- data preparation
def _truthy(values: pd.Series) -> pd.Series:
    """Boolean flags from bool / 0-1 / 'yes'-'no' columns; missing stays missing (NA)."""
    out = pd.Series(pd.NA, index=values.index, dtype="boolean")
    for i, v in values.items():
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
            continue
        s = str(v).strip().lower()
        if s in ("1", "1.0", "true", "yes", "y"):
            out[i] = True
        elif s in ("0", "0.0", "false", "no", "n"):
            out[i] = False
    return out


def _as_level(values: pd.Series) -> pd.Series:
    """Factor values as strings; integral numbers without a decimal point ('1', not '1.0')."""

    def one(v: Any) -> Any:
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            return pd.NA
        if isinstance(v, bool | np.bool_):
            return str(int(v))
        if isinstance(v, int | np.integer):
            return str(int(v))
        if isinstance(v, float | np.floating) and float(v).is_integer():
            return str(int(v))
        return str(v)

    return pd.Series([one(v) for v in values], index=values.index, dtype="string")


def _table(study: Any, name: str) -> pd.DataFrame:
    value = getattr(study, name, None)
    if value is None or not isinstance(value, pd.DataFrame):
        raise ProtocolError(
            f"The study has no {name!r} table, which the protocol needs. Load the study with "
            "studykit.validate.load_study (it provides roster, periods, nights, diary)."
        )
    return value


def _join(study: Any, plan: HypothesisPlan) -> pd.DataFrame:
    """The outcome table with the periods and roster columns the plan reads."""
    needed = set(plan.selection.columns)
    base = _table(study, plan.selection.outcome_table).copy()
    periods = _table(study, "periods")
    roster = _table(study, "roster")
    for col in ("participant_id", "period"):
        if col not in base.columns:
            raise ProtocolError(f"Table {plan.selection.outcome_table!r} has no {col!r} column.")
    base["participant_id"] = base["participant_id"].astype(str)
    if plan.selection.outcome_table != "periods":
        pcols = [c for c in periods.columns if c in needed and c not in base.columns]
        if pcols:
            p = periods[["participant_id", "period", *pcols]].copy()
            p["participant_id"] = p["participant_id"].astype(str)
            base = _merge_periods(base, p)
    rcols = [c for c in roster.columns if c in needed and c not in base.columns]
    if rcols:
        r = roster[["participant_id", *rcols]].copy()
        r["participant_id"] = r["participant_id"].astype(str)
        base = base.merge(r, on="participant_id", how="left", validate="m:1")
    # an event's timing is optional data: without the column every event is "not recorded"
    for col in {e.timing for e in plan.selection.intercurrent_events if e.timing}:
        if col not in base.columns:
            base[col] = pd.NA
    missing = sorted(c for c in needed if c not in base.columns)
    if missing:
        raise ProtocolError(
            f"Hypothesis {plan.id!r} needs column(s) {', '.join(missing)}, which the study's "
            f"{plan.selection.outcome_table!r}, periods and roster tables do not have. For night outcomes, "
            "derive them from the hypnograms first (studykit derive)."
        )
    return base


def _merge_periods(base: pd.DataFrame, p: pd.DataFrame) -> pd.DataFrame:
    left = base.assign(_period_key=_as_level(base["period"]))
    right = p.assign(_period_key=_as_level(p["period"])).drop(columns="period")
    out = left.merge(right, on=["participant_id", "_period_key"], how="left", validate="m:1")
    return out.drop(columns="_period_key")


@dataclass
class _Exclusions:
    hid: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, dropped: pd.DataFrame, reason: str) -> None:
        if dropped.empty:
            return
        g = dropped.groupby(["participant_id", "_period"], sort=True, dropna=False).size()
        for (pid, per), n in g.items():
            self.rows.append(
                {
                    "hypothesis_id": self.hid,
                    "participant_id": pid,
                    "period": per,
                    "n_observations": int(n),
                    "reason": reason,
                }
            )

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=_EXCLUSION_COLUMNS)

    def summary(self) -> tuple[int, str]:
        if not self.rows:
            return 0, ""
        df = self.frame()
        total = int(df["n_observations"].sum())
        parts = []
        for reason, g in df.groupby("reason", sort=False):
            parts.append(
                f"{reason}: {int(g['n_observations'].sum())} obs "
                f"({len(g)} participant-periods, {g['participant_id'].nunique()} participants)"
            )
        return total, "; ".join(parts)


def _outcome_checked(plan: HypothesisPlan, df: pd.DataFrame, ex: _Exclusions) -> pd.DataFrame:
    """Drop missing outcomes (and dictionary missing codes, e.g. -99); refuse unvalidated data."""
    raw = df[plan.selection.outcome]
    if plan.selection.missing_codes:
        coded = _as_level(raw).isin(plan.selection.missing_codes).fillna(False).to_numpy(dtype=bool)
        ex.add(df[coded], f"{plan.selection.outcome} missing (missing-value code)")
        df = df[~coded]
        raw = df[plan.selection.outcome]
    y = pd.to_numeric(raw, errors="coerce")
    bad_text = (y.isna() & raw.notna()).to_numpy(dtype=bool)
    lo, hi = plan.selection.outcome_range
    out = np.zeros(len(y), dtype=bool)
    if lo is not None:
        out |= (y < lo).fillna(False).to_numpy(dtype=bool)
    if hi is not None:
        out |= (y > hi).fillna(False).to_numpy(dtype=bool)
    if bad_text.any() or out.any():
        vals = sorted({str(v) for v in raw[bad_text | out]})[:5]
        raise ValidationError(
            f"Hypothesis {plan.id!r}: outcome {plan.selection.outcome!r} has values outside its dictionary "
            f"definition (range {lo}-{hi}): {', '.join(vals)}. The data were not validated: "
            "load them with studykit.validate.load_study (it converts missing-value codes and "
            "reports every invalid value) before analysis."
        )
    miss = y.isna().to_numpy()
    ex.add(df[miss], f"{plan.selection.outcome} missing")
    return df[~miss]


def _apply_exclusions(
    plan: HypothesisPlan,
    df: pd.DataFrame,
    ex: _Exclusions,
    notes: list[str],
    model_vars: Sequence[str],
) -> pd.DataFrame:
    """Analysis set, intercurrent events and missing values; every dropped row recorded."""
    aset = plan.selection.analysis_set
    if aset.exclude_status:
        st = _as_level(df["status"])
        drop = st.isin(aset.exclude_status).fillna(False).to_numpy(dtype=bool)
        ex.add(df[drop], f"status {'/'.join(aset.exclude_status)} (analysis set {aset.name})")
        df = df[~drop]
    if aset.exclude_flagged_nights:
        if plan.selection.outcome_table == "nights" and "quality_flag" in df.columns:
            drop = _truthy(df["quality_flag"]).fillna(False).to_numpy(dtype=bool)
            ex.add(
                df[drop],
                "night flagged for artefact / unscored / movement time (quality_flag; "
                f"analysis set {aset.name})",
            )
            df = df[~drop]
        elif plan.selection.outcome_table == "nights":
            notes.append(
                f"analysis set {aset.name} excludes flagged nights, but the nights have no "
                "quality_flag column (derive the outcomes from the hypnograms): none excluded"
            )
    for ice in plan.selection.intercurrent_events:
        if ice.variable is None:
            notes.append(
                f"{ice.event}: {ice.strategy.replace('_', ' ')} strategy, data used as observed"
            )
            continue
        col = df[ice.variable]
        if ice.level is not None:
            flag = (_as_level(col) == ice.level).astype("boolean")
        else:
            flag = _truthy(col)
        n_unknown = int(flag.isna().sum())
        if n_unknown:
            notes.append(
                f"{ice.variable} missing for {n_unknown} observations: treated as no "
                f"{ice.event} (cannot be excluded without the flag)"
            )
        flag = flag.fillna(False).to_numpy(dtype=bool)
        if ice.handling == "include":
            if flag.any():
                notes.append(
                    f"{ice.event}: {int(flag.sum())} observations affected, used as observed "
                    "(treatment-policy strategy)"
                )
            continue
        if ice.handling == "exclude_after_event":
            df = _exclude_after_event(plan, ice, df, flag, ex, notes)
            continue
        if ice.handling == "exclude_participant":
            pids = set(df.loc[flag, "participant_id"])
            flag = df["participant_id"].isin(pids).to_numpy(dtype=bool)
            reason = f"{ice.event} (hypothetical strategy: participant excluded)"
        else:
            reason = f"{ice.event} (hypothetical strategy: period excluded)"
        ex.add(df[flag], reason)
        df = df[~flag]
    df = _outcome_checked(plan, df, ex)
    for v in model_vars:
        if v == plan.selection.outcome:
            continue
        miss = df[v].isna().to_numpy(dtype=bool)
        ex.add(df[miss], f"{v} missing")
        df = df[~miss]
    if aset.require_reference_time and plan.contrast.type == "difference_in_differences":
        tv, ref = plan.contrast.time_variable, plan.contrast.time_reference
        has_ref = df.groupby(["participant_id", "_period"])[tv].transform(
            lambda s: (s == ref).any()
        )
        drop = ~has_ref.to_numpy(dtype=bool)
        ex.add(df[drop], f"no {tv} {ref} observation in the period (analysis set {aset.name})")
        df = df[~drop]
    if aset.require_both_treatments:
        tv = plan.contrast.treatment_variable
        if _N_TREATMENTS in df.columns:  # counted before the rows were restricted to one arm
            n_arms = df[_N_TREATMENTS]
        else:
            n_arms = df.groupby("participant_id")[tv].transform("nunique")
        drop = (n_arms < 2).to_numpy(dtype=bool)
        ex.add(df[drop], f"not observed under both treatments (analysis set {aset.name})")
        df = df[~drop]
    return df


def _event_times(plan: HypothesisPlan, df: pd.DataFrame) -> np.ndarray:
    """Each observation's time on the intercurrent events' timing scale (night_index)."""
    col = EVENT_TIME_COLUMNS.get(plan.selection.outcome_table, _EVENT_TIME)
    if col not in df.columns:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _exclude_after_event(
    plan: HypothesisPlan,
    ice: IntercurrentEvent,
    df: pd.DataFrame,
    flag: np.ndarray,
    ex: _Exclusions,
    notes: list[str],
) -> pd.DataFrame:
    """Hypothetical strategy keeping the data before the event: drop the flagged periods'
    observations at or after the event's night (``ice.timing``); a flagged period without a
    recorded timing is dropped whole (conservative), with its own reason."""
    assert ice.timing is not None  # the parser requires it for this handling
    when = pd.to_numeric(df[ice.timing], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    obs = _event_times(plan, df)
    no_time = flag & np.isnan(when)
    with np.errstate(invalid="ignore"):
        # an observation without a time of its own cannot be shown to precede the event
        after = flag & ~np.isnan(when) & (np.isnan(obs) | (obs >= when))
    if no_time.any():
        n_periods = len(df.loc[no_time, ["participant_id", "_period"]].drop_duplicates())
        notes.append(
            f"{ice.event}: {ice.timing} not recorded for {n_periods} affected period(s): "
            "the whole period excluded (conservative)"
        )
    ex.add(
        df[after],
        f"{ice.event} (hypothetical strategy: observations from the event on excluded, "
        f"{ice.timing})",
    )
    ex.add(
        df[no_time],
        f"{ice.event} (hypothetical strategy: {ice.timing} not recorded, period excluded)",
    )
    return df[~(after | no_time)]


def _counts(plan: HypothesisPlan, df: pd.DataFrame, n_excluded: int) -> dict[str, int]:
    tv = plan.contrast.treatment_variable
    by_arm = df.groupby(tv)["participant_id"].nunique() if len(df) else pd.Series(dtype=int)
    return {
        "n_ketamine": int(by_arm.get(plan.contrast.treatment_level, 0)),
        "n_placebo": int(by_arm.get(plan.contrast.treatment_reference, 0))
        if plan.contrast.treatment_reference
        else 0,
        "n_participants": int(df["participant_id"].nunique()),
        "n_observations": int(len(df)),
        "n_excluded": int(n_excluded),
    }


# --------------------------------------------------------------------------- engines
def _fit_model(data: pd.DataFrame, plan: HypothesisPlan) -> LMMResult | GLMMResult | CLMMResult:
    """Fit the plan's model: a linear mixed model (REML), a count GLMM or an ordinal CLMM
    (Laplace)."""
    m = plan.model
    if m.kind == "lmm":
        return fit_lmm(
            data, m.outcome, list(m.terms), random=list(m.random), levels=dict(m.levels), reml=True
        )
    if m.kind == "clmm":
        return fit_clmm(
            data, m.outcome, list(m.terms), group=m.random[0].group, levels=dict(m.levels)
        )
    return fit_glmm(
        data,
        m.outcome,
        list(m.terms),
        group=m.random[0].group,
        family=m.family,
        levels=dict(m.levels),
        nagq=1,
    )


# --------------------------------------------------------------------------- contrasts
def _contrast_rows(model: Any, plan: HypothesisPlan) -> pd.DataFrame:
    """The pre-specified contrasts: reference-grid weights (models.emmeans), the test in the
    protocol's direction and the two-sided interval at ``conf_level`` (models.inference)."""
    c = plan.contrast
    _, L, _ = did_matrix(
        model,
        treatment=c.treatment_variable,
        time=c.time_variable,
        treated=c.treatment_level,
        control=c.treatment_reference,
        baseline=c.time_reference,
        at_times=c.time_levels,
    )
    return _planned_contrasts(model, L, plan)


def _planned_contrasts(model: Any, L: np.ndarray, plan: HypothesisPlan) -> pd.DataFrame:
    """The rows of contrasts ``L``: the test in the protocol's direction, the two-sided
    interval at ``conf_level`` (models.inference), exponentiated on a ratio scale."""
    tab = contrast_table(
        model,
        L,
        names=plan.contrast.labels(),
        df_method=plan.model.df_method,
        alpha=1 - plan.test.conf_level,
        alternative=plan.test.alternative,
        interval="two-sided",
    )
    rr = plan.test.scale in RATIO_SCALES
    out = pd.DataFrame(
        {
            "term": tab["term"],
            "estimate": np.exp(tab["estimate"]) if rr else tab["estimate"],
            "std_error": tab["std_error"],
            "statistic": tab["statistic"],
            "df": tab["df"],
            "p_value": tab["p_value"],
            "conf_low": np.exp(tab["conf_low"]) if rr else tab["conf_low"],
            "conf_high": np.exp(tab["conf_high"]) if rr else tab["conf_high"],
            "df_method": plan.test.df_label,
            "alternative": plan.test.alternative,
            "conf_level": plan.test.conf_level,
            "scale": plan.test.scale,
        }
    )
    return out


def _emmeans(model: Any, plan: HypothesisPlan) -> pd.DataFrame:
    """Model-estimated cell means (models.emmeans), treatment outer, time inner."""
    c = plan.contrast
    tv, time = c.treatment_variable, c.time_variable
    if plan.model.kind == "clmm":  # latent scale: x'beta - mean(thresholds), as R's emmeans
        em = model.emmeans([time, tv], alpha=1 - plan.test.conf_level)
        return _cell_means(em, plan, "latent")
    rr = plan.model.family != "gaussian"
    em = emmeans(
        model,
        [time, tv],  # first spec fastest: time within treatment
        df_method=plan.model.df_method,
        alpha=1 - plan.test.conf_level,
        type="response" if rr else "link",
    )
    return _cell_means(em, plan, "rate" if rr else "mean")


def _cell_means(em: pd.DataFrame, plan: HypothesisPlan, scale: str) -> pd.DataFrame:
    """An emmeans table as the results' cell-mean rows (treatment and time as text)."""
    tv, time = plan.contrast.treatment_variable, plan.contrast.time_variable
    return pd.DataFrame(
        {
            tv: em[tv].astype(str),
            time: em[time].astype(str),
            "estimate": em["estimate"],
            "std_error": em["std_error"],
            "df": em["df"],
            "conf_low": em["conf_low"],
            "conf_high": em["conf_high"],
            "conf_level": plan.test.conf_level,
            "scale": scale,
        }
    )


def _effect_size(
    plan: HypothesisPlan, data: pd.DataFrame, contrasts: pd.DataFrame
) -> tuple[list[float], list[str]]:
    """Standardized effect size of each contrast row, and its definition.

    Differences: Cohen's d_z for within-participant comparisons (Lakens 2013, Front Psychol
    4:863): the model's estimate over the SD of the participants' own differences-in-
    differences, from participants observed in all four cells. Rate ratios and correlations
    are already effect sizes on their own scale: none is added.
    """
    n_rows = len(contrasts)
    if plan.test.scale in RATIO_SCALES:
        return [math.nan] * n_rows, [
            f"none: the {plan.test.scale} is the effect size (not standardized)"
        ] * n_rows
    if plan.test.scale == "correlation":
        return [math.nan] * n_rows, ["none: the correlation is itself the effect size"] * n_rows
    c = plan.contrast
    y = pd.to_numeric(data[plan.selection.outcome])
    cells = y.groupby(
        [data["participant_id"], data[c.treatment_variable], data[c.time_variable]]
    ).mean()
    wide = cells.unstack([1, 2])
    values, definitions = [], []
    for level, est in zip(c.time_levels, contrasts["estimate"], strict=True):
        need = [
            (c.treatment_level, level),
            (c.treatment_level, c.time_reference),
            (c.treatment_reference, level),
            (c.treatment_reference, c.time_reference),
        ]
        if any(k not in wide.columns for k in need):
            values.append(math.nan)
            definitions.append("none: no participant observed in all four treatment x time cells")
            continue
        d = (wide[need[0]] - wide[need[1]] - wide[need[2]] + wide[need[3]]).dropna()
        sd = float(d.std(ddof=1)) if len(d) > 1 else math.nan
        ok = math.isfinite(sd) and sd > 0
        values.append(float(est) / sd if ok else math.nan)
        definitions.append(
            f"d_z: estimate / SD of the participants' own difference-in-differences "
            f"({c.treatment_level} - {c.treatment_reference}, {c.time_variable} "
            f"{c.time_reference} -> {level}; n = {len(d)} participants with all four cells, "
            f"SD = {sd:.4g}); within-participant standardized difference (Lakens 2013)"
        )
    return values, definitions


# --------------------------------------------------------------------------- per hypothesis
def _empty_contrasts(plan: HypothesisPlan) -> pd.DataFrame:
    rows = []
    for label in plan.contrast.labels():
        rows.append(
            {
                "term": label,
                "estimate": math.nan,
                "std_error": math.nan,
                "statistic": math.nan,
                "df": math.nan,
                "p_value": math.nan,
                "conf_low": math.nan,
                "conf_high": math.nan,
                "df_method": plan.test.df_label,
                "alternative": plan.test.alternative,
                "conf_level": plan.test.conf_level,
                "scale": plan.test.scale,
            }
        )
    return pd.DataFrame(rows)


def _windowed(plan: HypothesisPlan, study: Any) -> tuple[pd.DataFrame, list[str]]:
    """The joined rows of the plan's time window (factors as text), before any exclusion."""
    c = plan.contrast
    df = _join(study, plan)
    df["_period"] = _as_level(df["period"])
    for v in plan.model.levels:
        df[v] = _as_level(df[v])
    in_window = df[c.time_variable].isin(c.window).fillna(False).to_numpy(dtype=bool)
    notes: list[str] = []
    n_out = int((~in_window).sum())
    if n_out:
        notes.append(
            f"{n_out} observations outside the modelled {c.time_variable} window {list(c.window)} not used (by design)"
        )
    return df[in_window], notes


def _select(
    plan: HypothesisPlan, study: Any
) -> tuple[pd.DataFrame, _Exclusions, list[str], HypothesisPlan]:
    """The analysis data of a difference-in-differences plan: the window, the analysis set,
    the intercurrent events and missing values applied (every dropped row recorded); the plan
    with the window levels that have data."""
    c = plan.contrast
    df, notes = _windowed(plan, study)
    ex = _Exclusions(plan.id)
    df = _apply_exclusions(plan, df, ex, notes, plan.selection.model_variables)
    df = df.reset_index(drop=True)
    present = set(df[c.time_variable].dropna())
    needed_times = {c.time_reference, *c.time_levels}
    unused = [t for t in c.window if t not in present and t not in needed_times]
    plan_fit = plan
    if unused:
        window = tuple(t for t in c.window if t not in unused)
        notes.append(
            f"{c.time_variable} level(s) {unused} of the protocol's window have no observations "
            f"in these data: modelled window {list(window)}"
        )
        plan_fit = plan.with_window(window)
    return df, ex, notes, plan_fit


def _fit_did(plan: HypothesisPlan, study: Any) -> HypothesisFit:
    c = plan.contrast
    df, ex, notes, plan_fit = _select(plan, study)
    n_excluded, _ = ex.summary()
    counts = _counts(plan, df, n_excluded)
    cells = set(zip(df[c.treatment_variable], df[c.time_variable], strict=True))
    empty = [
        f"{t}/{tm}"
        for t in (c.treatment_level, c.treatment_reference)
        for tm in (c.time_reference, *c.time_levels)
        if (t, tm) not in cells
    ]
    if empty:
        msg = (
            f"no observations left in cell(s) {', '.join(empty)} ({c.treatment_variable}/"
            f"{c.time_variable}): the contrast is not estimable"
        )
        return _failed(plan, df, ex, counts, notes, msg)
    if plan.model.estimator != "did":
        return _fit_estimator(plan_fit, df, ex, counts, notes)
    try:
        model = _fit_model(df, plan_fit)
    except ModelError as exc:
        return _failed(plan, df, ex, counts, notes, f"model could not be fitted: {exc}")
    contrasts = _contrast_rows(model, plan_fit)
    try:
        coefs = model.coef_table()
    except ModelError as exc:  # pragma: no cover - engine specific
        coefs = None
        notes.append(f"coefficient table unavailable: {exc}")
    emm = _emmeans(model, plan_fit)
    warnings = [str(w) for w in model.warnings]
    if model.singular and not any("singular" in w.lower() for w in warnings):
        warnings.append("singular fit: a random-effect variance is estimated at (or near) zero")
    if not model.converged:
        warnings.append("model did not converge: verdict set to inconclusive")
    return HypothesisFit(
        hypothesis=plan.hypothesis,
        plan=plan,
        data=df.drop(columns="_period"),
        model=model,
        contrasts=contrasts,
        coefficients=coefs,
        emmeans=emm,
        exclusions=ex.frame(),
        counts=counts,
        warnings=warnings + notes,
    )


def _fit_estimator(
    plan: HypothesisPlan,
    df: pd.DataFrame,
    ex: _Exclusions,
    counts: dict[str, int],
    notes: list[str],
) -> HypothesisFit:
    """A crossover estimator of :mod:`studykit.estimators` (cLDA, KR-2010 ANCOVA, post-only)
    on the selected data; its contrast tested by models.inference as the DiD is."""
    try:
        prep, model, contrasts = _estimator_contrasts(plan, df)
    except ModelError as exc:
        return _failed(plan, df, ex, counts, notes, f"model could not be fitted: {exc}")
    if prep.n_excluded:
        notes.append(f"{prep.n_excluded} rows left out by the {plan.model.estimator} estimator")
    warnings = [str(w) for w in model.warnings]
    if not model.converged:
        warnings.append("model did not converge: verdict set to inconclusive")
    return HypothesisFit(
        hypothesis=plan.hypothesis,
        plan=plan,
        data=prep.data,
        model=model,
        contrasts=contrasts,
        coefficients=model.coef_table(),
        emmeans=None,
        exclusions=ex.frame(),
        counts=counts,
        warnings=warnings + notes,
    )


def _estimator_contrasts(
    plan: HypothesisPlan,
    df: pd.DataFrame,
    previous: tuple[estimators.PreparedModel, Any] | None = None,
) -> tuple[estimators.PreparedModel, Any, pd.DataFrame]:
    """The estimator's model on the selected data and the planned contrast rows.

    ``previous`` (an earlier preparation and its fit): when this preparation differs from it
    only in the outcome (same rows, terms and covariates), its model is refitted to the new
    response instead of built again (completed data sets of an imputation)."""
    c = plan.contrast
    spec = estimators.CrossoverSpec(
        outcome=plan.model.outcome,
        family=plan.model.family,
        treatment=c.treatment_variable,
        treatment_levels=(c.treatment_reference, c.treatment_level),
        time=c.time_variable,
        baseline=c.time_reference,
        window=tuple(c.window),
        levels=tuple(c.time_levels),
        period="period" if "period" in plan.model.levels else None,
        period_levels=tuple(plan.model.levels.get("period", ())),
    )
    prep = estimators.prepare(df.drop(columns="_period"), plan.model.estimator, spec)
    if previous is not None and _same_design(previous[0], prep):
        model = previous[1].refit(pd.to_numeric(prep.data[prep.outcome]).to_numpy(dtype=float))
    else:
        model = estimators.fit_prepared(prep)
    L = np.vstack(
        [
            estimators.contrast_matrix(model, prep, replace(spec, levels=(lv,)))
            for lv in c.time_levels
        ]
    )
    return prep, model, _planned_contrasts(model, L, plan)


def _same_design(a: estimators.PreparedModel, b: estimators.PreparedModel) -> bool:
    """Whether two preparations differ at most in the outcome's values."""
    if (a.fixed, a.random, a.levels, a.family, a.outcome) != (
        b.fixed,
        b.random,
        b.levels,
        b.family,
        b.outcome,
    ) or a.family != "gaussian":
        return False
    return a.data.drop(columns=a.outcome).equals(b.data.drop(columns=b.outcome))


def _failed(
    plan: HypothesisPlan,
    df: pd.DataFrame,
    ex: _Exclusions,
    counts: dict[str, int],
    notes: list[str],
    msg: str,
) -> HypothesisFit:
    logger.warning("hypothesis %s: %s", plan.id, msg)
    return HypothesisFit(
        hypothesis=plan.hypothesis,
        plan=plan,
        data=df.drop(columns="_period", errors="ignore"),
        model=None,
        contrasts=_empty_contrasts(plan),
        coefficients=None,
        emmeans=None,
        exclusions=ex.frame(),
        counts=counts,
        warnings=[msg, *notes],
        error=msg,
    )


def _fit_correlation(plan: HypothesisPlan, study: Any) -> HypothesisFit:
    """Pearson correlation of two per-period changes among periods of one treatment."""
    c = plan.contrast
    ref_var, predictor_table = c.outcome_reference_variable, c.predictor_table
    if ref_var is None or predictor_table is None or c.predictor is None:
        raise ProtocolError(f"Hypothesis {plan.id!r}: a change correlation without its variables.")
    per = _join(study, plan)
    per["_period"] = _as_level(per["period"])
    # the per-protocol requirement "observed under both treatments" is about the participant's
    # periods, so it is counted before the analysis keeps the treatment_level periods only
    per[_N_TREATMENTS] = per.groupby("participant_id")[c.treatment_variable].transform("nunique")
    per = per[_as_level(per[c.treatment_variable]) == c.treatment_level].copy()
    nights = _table(study, predictor_table)
    for col in (c.predictor, c.time_variable):
        if col not in nights.columns:
            raise ProtocolError(
                f"Hypothesis {plan.id!r} needs column {col!r} of table {c.predictor_table!r}."
            )
    nn = nights[["participant_id", "period", c.time_variable, c.predictor]].copy()
    nn["participant_id"] = nn["participant_id"].astype(str)
    nn["_period"] = _as_level(nn["period"])
    nn["_t"] = _as_level(nn[c.time_variable])
    nn[c.predictor] = pd.to_numeric(nn[c.predictor], errors="coerce")
    wide = nn[nn["_t"].isin([c.time_reference, c.time_levels[0]])].pivot_table(
        index=["participant_id", "_period"], columns="_t", values=c.predictor, aggfunc="first"
    )
    pred_change = wide.get(c.time_levels[0], pd.Series(dtype=float)) - wide.get(
        c.time_reference, pd.Series(dtype=float)
    )
    pred_change = pred_change.rename("predictor_change").reset_index()
    per = per.merge(pred_change, on=["participant_id", "_period"], how="left")
    time_col = EVENT_TIME_COLUMNS.get(predictor_table)
    if time_col is not None and time_col in nights.columns:
        used = nights.loc[nn["_t"].isin([c.time_reference, c.time_levels[0]]).to_numpy()]
        latest = (
            pd.to_numeric(used[time_col], errors="coerce")
            .groupby([nn.loc[used.index, "participant_id"], nn.loc[used.index, "_period"]])
            .max()
            .rename(_EVENT_TIME)
            .rename_axis(["participant_id", "_period"])
            .reset_index()
        )
        per = per.merge(latest, on=["participant_id", "_period"], how="left")
    per["outcome_change"] = pd.to_numeric(
        per[plan.selection.outcome], errors="coerce"
    ) - pd.to_numeric(per[ref_var], errors="coerce")
    ex = _Exclusions(plan.id)
    notes: list[str] = []
    per = _apply_exclusions(plan, per, ex, notes, plan.selection.model_variables)
    miss = per["predictor_change"].isna().to_numpy()
    ex.add(
        per[miss],
        f"{c.predictor} missing on {c.time_variable} {c.time_reference} or {c.time_levels[0]}",
    )
    per = per[~miss].reset_index(drop=True)
    n_excluded, _ = ex.summary()
    counts = {
        "n_ketamine": int(per["participant_id"].nunique()),
        "n_placebo": 0,
        "n_participants": int(per["participant_id"].nunique()),
        "n_observations": int(len(per)),
        "n_excluded": int(n_excluded),
    }
    data = per[["participant_id", "period", "predictor_change", "outcome_change"]]
    n = len(per)
    x = per["predictor_change"].to_numpy(dtype=float)
    y = per["outcome_change"].to_numpy(dtype=float)
    if n < 4 or np.std(x) == 0 or np.std(y) == 0:
        msg = f"correlation not estimable from {n} periods (need at least 4 with varying changes)"
        return _failed(plan, data, ex, counts, notes, msg)
    r = float(np.corrcoef(x, y)[0, 1])
    test = correlation_test(r, n, alternative=plan.test.alternative, level=plan.test.conf_level)
    contrasts = pd.DataFrame(
        [
            {
                "term": plan.contrast.labels(plan.selection.outcome)[0],
                **test,
                "df_method": "t (n - 2)",
                "alternative": plan.test.alternative,
                "conf_level": plan.test.conf_level,
                "scale": "correlation",
            }
        ]
    )[_CONTRAST_COLUMNS]
    return HypothesisFit(
        hypothesis=plan.hypothesis,
        plan=plan,
        data=data,
        model=None,
        contrasts=contrasts,
        coefficients=None,
        emmeans=None,
        exclusions=ex.frame(),
        counts=counts,
        warnings=notes,
    )


# --------------------------------------------------------------------------- the driver
def run_analysis(
    protocol: Protocol,
    study: Any,
    *,
    simulated: bool | None = None,
    hypotheses: Sequence[str] | None = None,
    analysis_set: str | None = None,
    sensitivity: bool = True,
) -> AnalysisResults:
    """Fit every hypothesis of a protocol to a study and apply its verdict rule.

    Parameters
    ----------
    protocol : Protocol
        From :func:`studykit.protocol.load_protocol`.
    study : Study
        An object with DataFrames ``roster``, ``periods``, ``nights``, ``diary`` (as returned
        by :func:`studykit.validate.load_study` or :func:`studykit.simulate.simulate_study`);
        only the tables the protocol uses are read. Not modified.
    simulated : bool, optional
        Whether the data are simulated; written into every row. Default: ``study.simulated``
        if the study has that attribute; ``True`` for a study from
        :func:`studykit.simulate.simulate_study`, or one loaded from a directory whose
        ``README.md`` starts with a line saying ``SIMULATED`` (what
        :func:`studykit.simulate.write_study` writes); else ``False``.
    hypotheses : sequence of str, optional
        Only report these hypothesis ids. Hypotheses sharing an adjusted multiplicity family
        with them are still fitted, because the adjusted p-values depend on the whole family.
    analysis_set : str, optional
        A sensitivity analysis: analyse every hypothesis in this analysis set of the protocol
        (e.g. ``"per_protocol"``) instead of the set each hypothesis names. Every row then
        says so in ``warnings``; the protocol hash is unchanged (the set is part of the
        locked protocol).
    sensitivity : bool, default True
        Also run the protocol's pre-specified sensitivity analyses (section ``sensitivity``):
        their rows follow the primary rows in ``.hypotheses`` with ``analysis`` = their name,
        each adjusted for multiplicity within its own analysis; their fits are in
        ``.sensitivity_fits``. Ignored with ``analysis_set``.

    Returns
    -------
    AnalysisResults
        ``.hypotheses`` (one row per hypothesis x contrast, columns
        :data:`HYPOTHESIS_COLUMNS`), ``.fits`` (models, emmeans, coefficient tables,
        exclusions per hypothesis), ``.exclusions()``, ``.adjusted_intervals()``.

    Raises
    ------
    ProtocolError
        The study lacks a table or column the protocol needs, or an unknown hypothesis id.

    Examples
    --------
    A small simulated study (8 participants, SIMULATED data) written as a study directory and
    loaded back, as a user would with real data:

    >>> import tempfile
    >>> from pathlib import Path
    >>> from studykit.protocol import load_protocol
    >>> from studykit.simulate import simulate_study, write_study
    >>> from studykit.validate import load_study
    >>> tmp = tempfile.TemporaryDirectory()
    >>> folder = write_study(simulate_study(seed=3, n_participants=8), Path(tmp.name) / "demo")
    >>> proto = load_protocol(Path(__file__).parents[1] / "protocols" / "ketamine_sleep.yaml")
    >>> res = run_analysis(proto, load_study(folder), sensitivity=False)  # primary rows only
    >>> t = res.hypotheses
    >>> t["hypothesis_id"].tolist()
    ['H1', 'H2', 'H3', 'E1', 'E2', 'E3', 'E3', 'E3', 'E4', 'E5', 'E6', 'E7']
    >>> bool((t["protocol_sha256"] == proto.sha256).all()), bool(t["simulated"].all())
    (True, True)
    >>> t.loc[t["role"] == "confirmatory", ["hypothesis_id", "df_method", "adjust_method"]]
      hypothesis_id            df_method   adjust_method
    0            H1        satterthwaite  fixed-sequence
    1            H2  z (asymptotic Wald)  fixed-sequence
    2            H3        satterthwaite  fixed-sequence
    >>> set(t["verdict"]) <= {"supported", "effect ruled out", "inconclusive"}
    True
    >>> h2 = res.fit("H2")
    >>> type(h2.model).__name__, h2.emmeans.columns[:3].tolist()
    ('GLMMResult', ['treatment', 'night', 'estimate'])
    >>> tmp.cleanup()

    Notes
    -----
    *Contrast.* A difference-in-differences is ``(mu[k, t] - mu[k, r]) - (mu[p, t] -
    mu[p, r])`` for treatment level ``k`` vs reference ``p`` and time level ``t`` vs reference
    ``r``, where each cell mean averages the model's linear predictor over the levels of the
    other factors with equal weights (numeric covariates at their mean), as emmeans does.
    Estimate ``L beta``, standard error ``sqrt(L V L')``, degrees of freedom from the model's
    ``contrast_df(L)`` (Satterthwaite for a linear mixed model; infinite, i.e. a z test, for
    a count model). For counts the test is on the log scale and ``estimate``, ``conf_low``,
    ``conf_high`` are rate ratios (``std_error`` and ``statistic`` stay on the log scale).
    One-sided p-values test the protocol's direction; the reported interval is two-sided at
    ``conf_level`` = ``1 - 2 alpha`` (one-sided tests) or ``1 - alpha``.

    *Multiplicity.* p-values are adjusted within each multiplicity family over all its rows
    (hypothesis x contrast) with the family's method (:func:`~studykit.models.multiplicity.
    adjust_pvalues`); fixed-sequence uses the family's ``order``. A row whose model could not
    be fitted enters the adjustment with p = 1 (conservative: it still counts in the family
    size) and keeps ``p_value`` NaN.

    *Exclusions.* Observations outside the modelled time window are not part of the analysis
    by design and are not counted as excluded. Every other dropped observation (analysis-set
    status, intercurrent event handled by exclusion, missing outcome or covariate, analysis-set
    requirements) is counted in ``n_excluded`` (observations) and described in
    ``excluded_reasons``; the per participant-period detail is in ``.exclusions()``.
    Missing outcomes are left out: the likelihood-based mixed model is then valid under
    missing at random.
    """
    if simulated is None:
        simulated = _is_simulated(study)
    plans = {p.id: p for p in protocol.plans}
    note = None
    if analysis_set is not None:
        if analysis_set not in protocol.analysis_sets:
            raise ProtocolError(
                f"The protocol has no analysis set {analysis_set!r}; it defines "
                f"{', '.join(protocol.analysis_sets)}."
            )
        aset = protocol.analysis_sets[analysis_set]
        plans = {hid: p.with_analysis_set(aset) for hid, p in plans.items()}
        note = f"sensitivity analysis: analysis set {analysis_set!r} for every hypothesis"
    wanted = list(hypotheses) if hypotheses is not None else list(plans)
    for hid in wanted:
        protocol.plan(hid)  # raises for unknown ids
    name = "primary" if analysis_set is None else analysis_set
    table, fits, full = _execute(plans, wanted, study, name, note, bool(simulated))
    tables = [table]
    sensitivity_fits: dict[str, dict[str, HypothesisFit]] = {}
    missing_data: dict[str, dict[str, DeltaAdjustedResult]] = {}
    tips: list[dict[str, Any]] = []
    if analysis_set is None and sensitivity:
        for sa in protocol.sensitivity:
            targets = [h for h in wanted if not sa.hypotheses or h in sa.hypotheses]
            if sa.missing_data is not None:
                targets = [h for h in targets if _imputable(plans[h])]
            if not targets:
                continue
            if sa.missing_data is not None:
                with _model_logs_held():
                    t, mi = _missing_data_rows(sa, plans, targets, study, full, tips)
                tables.append(t)
                missing_data[sa.name] = mi
                continue
            sp = {hid: _sensitivity_plan(p, sa, protocol) for hid, p in plans.items()}
            t, f, _ = _execute(sp, targets, study, sa.name, f"sensitivity analysis {sa.name!r}: "
                               f"{sa.description}", bool(simulated))  # fmt: skip
            tables.append(t)
            sensitivity_fits[sa.name] = f
    return AnalysisResults(
        protocol=protocol,
        hypotheses=pd.concat(tables, ignore_index=True) if len(tables) > 1 else table,
        fits=fits,
        simulated=bool(simulated),
        sensitivity_fits=sensitivity_fits,
        missing_data=missing_data,
        tipping_points=pd.DataFrame(tips, columns=_TIPPING_COLUMNS),
    )


def _sensitivity_plan(
    plan: HypothesisPlan, sa: SensitivityAnalysis, protocol: Protocol
) -> HypothesisPlan:
    """The plan of one hypothesis under a pre-specified sensitivity analysis."""
    if sa.hypotheses and plan.id not in sa.hypotheses:
        return plan
    variant = sa.variant(plan.id)
    if variant is not None:  # restated (estimator, family, model, effect of interest)
        plan = compile_plan(protocol, variant)
    if sa.analysis_set is not None:
        plan = plan.with_analysis_set(protocol.analysis_sets[sa.analysis_set])
    if sa.intercurrent_events == "treatment_policy":
        plan = plan.with_treatment_policy()
    return plan


@contextmanager
def _model_logs_held() -> Iterator[None]:
    """Hold back the models' per-fit warning log lines during an analysis.

    Every fit's warnings are in its result row (``warnings``) and the console summary says
    each once with the hypotheses it concerns; logging them per fit as well repeated the same
    sentence for every hypothesis (``studykit run``).
    """
    log = logging.getLogger("studykit.models")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _execute(
    plans: dict[str, HypothesisPlan],
    wanted: Sequence[str],
    study: Any,
    analysis: str,
    note: str | None,
    simulated: bool,
) -> tuple[pd.DataFrame, dict[str, HypothesisFit], pd.DataFrame]:
    """Fit the wanted plans (and their adjusted families' members), one results table (and
    the table of every fitted plan, with ``_usable``, for analyses that re-adjust a family)."""
    with _model_logs_held():
        return _execute_plans(plans, wanted, study, analysis, note, simulated)


def _execute_plans(
    plans: dict[str, HypothesisPlan],
    wanted: Sequence[str],
    study: Any,
    analysis: str,
    note: str | None,
    simulated: bool,
) -> tuple[pd.DataFrame, dict[str, HypothesisFit], pd.DataFrame]:
    fams = {plans[hid].multiplicity_family for hid in wanted}
    to_fit = [
        p
        for p in plans.values()
        if p.id in wanted or (p.multiplicity_family in fams and p.adjust_method != "none")
    ]
    fits: dict[str, HypothesisFit] = {}
    for plan in to_fit:
        logger.debug("fitting %s (%s, %s)", plan.id, plan.selection.outcome, plan.model.kind)
        if plan.model.kind == "correlation":
            fits[plan.id] = _fit_correlation(plan, study)
        else:
            fits[plan.id] = _fit_did(plan, study)
        if note is not None:
            fits[plan.id].warnings.insert(0, note)

    rows = []
    for plan in to_fit:
        f = fits[plan.id]
        converged = f.model.converged if f.model is not None else f.error is None
        usable = f.error is None and converged
        n_excluded, reasons = _Exclusions(plan.id, f.exclusions.to_dict("records")).summary()
        if f.error is None:
            es, es_def = _effect_size(plan, f.data, f.contrasts)
        else:
            es, es_def = [math.nan] * len(f.contrasts), [""] * len(f.contrasts)
        for i, c in f.contrasts.reset_index(drop=True).iterrows():
            rows.append(
                {
                    **plan.row,
                    "analysis": analysis,
                    "contrast": c["term"],
                    **f.counts,
                    "n_excluded": n_excluded,
                    "excluded_reasons": reasons,
                    "estimate": c["estimate"],
                    "std_error": c["std_error"],
                    "df": c["df"],
                    "df_method": c["df_method"],
                    "statistic": c["statistic"],
                    "alternative": plan.test.alternative,
                    "conf_level": plan.test.conf_level,
                    "conf_low": c["conf_low"],
                    "conf_high": c["conf_high"],
                    "p_value": c["p_value"],
                    "p_adjusted": math.nan,
                    "effect_size": es[i],
                    "effect_size_definition": es_def[i],
                    "verdict": "",
                    "claim_verdict": "",
                    "converged": bool(converged),
                    "singular": bool(f.model.singular) if f.model is not None else False,
                    "warnings": "; ".join(f.warnings),
                    "simulated": simulated,
                    "_usable": usable,
                }
            )
    table = _adjust(pd.DataFrame(rows), plans)
    # effects are ruled out with the family's simultaneous interval (same error rate as support)
    adj = adjusted_intervals(table)
    table["verdict"] = [
        plans[r.hypothesis_id].verdict.apply(
            p_adjusted=r.p_adjusted, conf_low=lo, conf_high=hi, usable=bool(u)
        )
        for r, lo, hi, u in zip(
            table.itertuples(),
            adj["conf_low_adjusted"],
            adj["conf_high_adjusted"],
            table["_usable"],
            strict=True,
        )
    ]
    table["claim_verdict"] = table.groupby("claim_id", sort=False)["verdict"].transform(
        lambda v: claim_verdict(list(v), list(table.loc[v.index, "role"]))
    )
    full = table
    table = table[table["hypothesis_id"].isin(wanted)].reset_index(drop=True)
    return table[HYPOTHESIS_COLUMNS], {hid: fits[hid] for hid in wanted}, full


# --------------------------------------------------------------------------- missing data
def _imputable(plan: HypothesisPlan) -> bool:
    """Whether the delta-adjusted imputation applies: a Gaussian difference in differences
    whose random effects are intercepts (studykit.missing.ImputationModel)."""
    return (
        plan.model.family == "gaussian"
        and plan.contrast.type == "difference_in_differences"
        and all(tuple(r.terms) == ("1",) for r in plan.model.random)
    )


def _missing_cells(
    plan: HypothesisPlan, df: pd.DataFrame, joined: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The observed rows and the missing post-infusion cells to impute.

    ``df`` is the analysed data, ``joined`` the window's rows before any exclusion. A cell is
    missing when a participant-period of the study data (of a participant with at least one
    analysed observation) has no analysed observation at a post-infusion time of the
    modelled window: not recorded, outcome missing, or excluded as after an intercurrent event
    (hypothetical strategy, which MAR imputation then completes). Its other model variables
    are the participant-period's (they must be constant within it). Periods without any row
    in the outcome table (e.g. after a withdrawal) are not imputed.
    """
    c = plan.contrast
    y, tv = plan.model.outcome, c.time_variable
    keys = ["participant_id", "_period"]
    needed = [v for v in plan.selection.model_variables if v not in (tv, "participant_id")]
    cols = list(dict.fromkeys([*keys, "period", tv, c.treatment_variable, *needed, y]))
    obs = df[cols].reset_index(drop=True)
    pool = joined[joined["participant_id"].isin(set(obs["participant_id"]))][cols]
    for v in [*needed, c.treatment_variable]:
        varying = pool.groupby(keys, sort=False)[v].nunique(dropna=True) > 1
        if varying.any():
            raise ModelError(
                f"{v!r} varies within a participant-period, so a missing {tv} cannot be "
                "completed for the delta-adjusted imputation (only variables constant within "
                "a participant-period may enter its model)"
            )
    have = set(zip(obs["participant_id"], obs["_period"], obs[tv], strict=True))
    posts = [t for t in c.window if t != c.time_reference]
    rows = []
    for (pid, per), g in pool.groupby(keys, sort=True):
        template = g.iloc[0].to_dict()
        if any(pd.isna(template[v]) for v in [*needed, c.treatment_variable]):
            continue  # a model variable of the period itself is missing: nothing to complete
        for t in posts:
            if (pid, per, t) not in have:
                rows.append(template | {tv: t, y: np.nan})
    return obs, pd.DataFrame(rows, columns=cols)


def _complete_data_analysis(
    plan: HypothesisPlan,
) -> Callable[[pd.DataFrame], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The primary estimator as a complete-data analysis: completed data -> contrast
    estimates, variances and df. The first fit's model is refitted to each new response when
    the design is the same (the difference in differences always; an estimator whose
    covariates do not come from the outcome, e.g. cLDA)."""
    first: list[Any] = []

    def analyse(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if plan.model.estimator != "did":
            prep, model, tab = _estimator_contrasts(plan, frame, first[0] if first else None)
            if not first:
                first.append((prep, model))
        else:
            y = pd.to_numeric(frame[plan.model.outcome]).to_numpy(dtype=float)
            model = first[0].refit(y) if first else _fit_model(frame, plan)
            if not first:
                first.append(model)
            tab = _contrast_rows(model, plan)
        se = tab["std_error"].to_numpy(dtype=float)
        return (
            tab["estimate"].to_numpy(dtype=float),
            se**2,
            tab["df"].to_numpy(dtype=float),
        )

    return analyse


def _shift_sign(plan: HypothesisPlan, primary_estimate: float) -> float:
    """The sign of the shift against the claim: down for 'greater', up for 'less'; against
    the primary estimate's sign for a two-sided test."""
    if plan.test.alternative == "greater":
        return -1.0
    if plan.test.alternative == "less":
        return 1.0
    return -1.0 if not np.isfinite(primary_estimate) or primary_estimate >= 0 else 1.0


def _missing_data_rows(
    sa: SensitivityAnalysis,
    plans: dict[str, HypothesisPlan],
    targets: Sequence[str],
    study: Any,
    primary_full: pd.DataFrame,
    tips: list[dict[str, Any]],
) -> tuple[pd.DataFrame, dict[str, DeltaAdjustedResult]]:
    """A delta-adjusted multiple-imputation analysis of each target: one row per hypothesis x
    contrast x shift, with the tipping point (studykit.missing)."""
    spec = sa.missing_data
    assert spec is not None
    rows: list[dict[str, Any]] = []
    results: dict[str, DeltaAdjustedResult] = {}
    for hid in targets:
        plan = plans[hid]
        prim = primary_full[primary_full["hypothesis_id"] == hid].reset_index(drop=True)
        sign = _shift_sign(plan, float(prim["estimate"].iloc[0]))
        level = plan.contrast.treatment_level
        note = f"sensitivity analysis {sa.name!r}: {sa.description}"
        try:
            df, _, _, plan_fit = _select(plan, study)
            joined, _ = _windowed(plan_fit, study)
            observed, missing = _missing_cells(plan_fit, df, joined)
            model = ImputationModel(
                outcome=plan.model.outcome,
                terms=tuple(plan_fit.model.terms),
                random=tuple(plan_fit.model.random),
                levels={k: tuple(v) for k, v in plan_fit.model.levels.items()},
            )
            shifted = (missing[plan.contrast.treatment_variable].astype(str) == level).to_numpy()
            res = delta_adjusted_analysis(
                observed,
                missing,
                model=model,
                shifted=shifted,
                deltas=[sign * d + 0.0 for d in spec.deltas],  # + 0.0: no -0,
                analyse=_complete_data_analysis(plan_fit),
                imputations=spec.imputations,
                seed=spec.seed,
            )
        except ModelError as exc:
            msg = f"delta-adjusted imputation not possible: {exc}"
            logger.warning("hypothesis %s: %s", hid, msg)
            for _, r in prim.iterrows():
                rows.append(_failed_mi_row(r, sa, f"{note}; {msg}"))
            continue
        results[hid] = res
        what = (
            f"{res.n_imputed} missing post-infusion {plan.model.outcome} values imputed under "
            f"MAR ({res.n_shifted} in {level} periods shifted by "
            f"{'-' if sign < 0 else '+'}delta, against the claim), {res.imputations} "
            f"imputations, seed {res.seed}"
            if res.n_imputed
            else "no missing post-infusion outcome: the primary analysis, unchanged"
        )
        rows.extend(_delta_rows(plan, prim, res, primary_full, plans, sa, f"{note}; {what}", tips))
    return pd.DataFrame(rows, columns=HYPOTHESIS_COLUMNS), results


def _failed_mi_row(primary: pd.Series, sa: SensitivityAnalysis, msg: str) -> dict[str, Any]:
    row = primary[HYPOTHESIS_COLUMNS].to_dict()
    for k in ("estimate", "std_error", "df", "statistic", "conf_low", "conf_high", "p_value"):
        row[k] = math.nan
    row.update(
        analysis=sa.name,
        p_adjusted=math.nan,
        effect_size=math.nan,
        effect_size_definition="",
        verdict="inconclusive",
        claim_verdict="",
        converged=False,
        warnings=msg,
    )
    return row


def _delta_rows(
    plan: HypothesisPlan,
    prim: pd.DataFrame,
    res: DeltaAdjustedResult,
    primary_full: pd.DataFrame,
    plans: dict[str, HypothesisPlan],
    sa: SensitivityAnalysis,
    note: str,
    tips: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """The rows of one hypothesis: each shift's pooled contrasts, tested as the primary, with
    the verdict the hypothesis would get with this result (the rest of its multiplicity family
    as in the primary analysis), and the tipping point."""
    alt, level = plan.test.alternative, plan.test.conf_level
    out: list[dict[str, Any]] = []
    family = primary_full[primary_full["multiplicity_family"] == plan.multiplicity_family]
    by_delta = []
    for delta, tab in res.table.groupby("delta", sort=False):
        tab = tab.sort_values("contrast")
        est = tab["estimate"].to_numpy(dtype=float)
        se = tab["std_error"].to_numpy(dtype=float)
        dfs = tab["df"].to_numpy(dtype=float)
        stat, p = wald_test(est, se, dfs, alt)
        lo, hi = confidence_interval(est, se, dfs, level, "two-sided")
        if plan.test.scale in RATIO_SCALES:  # pragma: no cover - Gaussian outcomes only
            raise ProtocolError("delta-adjusted imputation is for Gaussian outcomes")
        fam = family.copy()
        mine = fam.index[fam["hypothesis_id"] == plan.id]
        fam.loc[mine, "estimate"] = est
        fam.loc[mine, "std_error"] = se
        fam.loc[mine, "df"] = dfs
        fam.loc[mine, "statistic"] = stat
        fam.loc[mine, "p_value"] = p
        fam.loc[mine, "conf_low"] = lo
        fam.loc[mine, "conf_high"] = hi
        fam.loc[mine, "_usable"] = np.isfinite(p)
        fam = _adjust(fam, plans)
        adj = adjusted_intervals(fam).set_index(fam.index)
        verdicts = [
            plan.verdict.apply(
                p_adjusted=fam.at[i, "p_adjusted"],
                conf_low=adj.at[i, "conf_low_adjusted"],
                conf_high=adj.at[i, "conf_high_adjusted"],
                usable=bool(fam.at[i, "_usable"]),
            )
            for i in mine
        ]
        by_delta.append((float(delta), fam.loc[mine], verdicts, tab))
    m = int(res.table["m"].max())
    df_method = (
        f"Rubin's rules, Barnard-Rubin df ({m} imputations; complete data: "
        f"{prim['df_method'].iloc[0]})"
        if res.n_imputed
        else str(prim["df_method"].iloc[0])
    )
    for j, (_, p_row) in enumerate(prim.iterrows()):
        grid = [d for d, *_ in by_delta]
        verdicts = [v[j] for _, _, v, _ in by_delta]
        tip, tip_verdict = tipping_point(grid, verdicts, str(p_row["verdict"]))
        tips.append(
            {
                "analysis": sa.name,
                "hypothesis_id": plan.id,
                "contrast": p_row["contrast"],
                "primary_verdict": p_row["verdict"],
                "shifts": ", ".join(f"{d:+g}" for d in grid),
                "tipping_shift": math.nan if tip is None else tip,
                "tipping_verdict": tip_verdict or "",
            }
        )
        span = f"{abs(grid[0]):g} to {abs(grid[-1]):g}"
        tipping = (
            f"tipping point: shift {tip:+g} ({p_row['verdict']} -> {tip_verdict})"
            if tip is not None
            else f"no tipping point within the grid (shifts {span}; verdict {p_row['verdict']})"
        )
        for delta, fam_rows, vs, _ in by_delta:
            r = fam_rows.iloc[j]
            label = (
                f"{p_row['contrast']}; imputed {plan.contrast.treatment_level} values {delta:+g}"
            )
            if tip is not None and delta == tip:
                label += " (tipping point)"
            elif tip is None and delta == grid[-1]:
                label += " (no tipping point within the grid)"
            row = p_row[HYPOTHESIS_COLUMNS].to_dict()
            row.update(
                analysis=sa.name,
                contrast=label,
                estimate=r["estimate"],
                std_error=r["std_error"],
                df=r["df"],
                df_method=df_method,
                statistic=r["statistic"],
                conf_low=r["conf_low"],
                conf_high=r["conf_high"],
                p_value=r["p_value"],
                p_adjusted=r["p_adjusted"],
                effect_size=math.nan,
                effect_size_definition="none: a delta-adjusted multiple-imputation analysis",
                verdict=vs[j],
                claim_verdict="",
                converged=True,
                singular=False,
                warnings=f"{note}; {tipping}",
            )
            out.append(row)
    return out


def _is_simulated(study: Any) -> bool:
    """Simulated data are always labelled: a study from ``load_study`` carries the flag (its
    directory's README says SIMULATED); an in-memory ``simulate_study`` result is simulated."""
    flag = getattr(study, "simulated", None)
    if flag is not None:
        return bool(flag)
    return type(study).__name__ == "SimulatedStudy"


def _adjust(table: pd.DataFrame, plans: dict[str, HypothesisPlan]) -> pd.DataFrame:
    """Adjusted p-values within each multiplicity family (its method; fixed-sequence order)."""
    table = table.copy()
    first = {p.multiplicity_family: p for p in plans.values()}
    for name, plan in first.items():
        idx = table.index[table["multiplicity_family"] == name]
        if not len(idx):
            continue
        sub = table.loc[idx]
        method = plan.adjust_method
        if method == "fixed-sequence":
            rank = {hid: i for i, hid in enumerate(plan.family_order)}
            order = sorted(idx, key=lambda j: (rank[table.at[j, "hypothesis_id"]], j))
        else:
            order = list(idx)
        p = sub.loc[order, "p_value"].to_numpy(dtype=float)
        usable = sub.loc[order, "_usable"].to_numpy(dtype=bool)
        p_for_adjust = np.where(np.isnan(p) | ~usable, 1.0, p)
        if method == "none":
            adj = p
        else:
            adj = adjust_pvalues(p_for_adjust, method=method)
            adj = np.where(np.isnan(p), np.nan, adj)
        table.loc[order, "p_adjusted"] = adj
    return table
