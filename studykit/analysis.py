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

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from studykit.errors import ModelError, ProtocolError, ValidationError
from studykit.models.emmeans import did_matrix, emmeans
from studykit.models.glmm import fit_glmm
from studykit.models.inference import contrast_table, correlation_test
from studykit.models.lmm import fit_lmm
from studykit.models.multiplicity import adjust_pvalues, adjusted_intervals
from studykit.protocol import Hypothesis, Protocol

__all__ = [
    "HYPOTHESIS_COLUMNS",
    "AnalysisResults",
    "HypothesisFit",
    "run_analysis",
    "verdict",
]

logger = logging.getLogger(__name__)

#: Columns of the hypothesis results table, in order (docs/ARCHITECTURE.md).
HYPOTHESIS_COLUMNS = [
    "protocol_id",
    "protocol_sha256",
    "hypothesis_id",
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
    "verdict_rule",
    "model",
    "converged",
    "singular",
    "warnings",
    "simulated",
]

_CONTRAST_COLUMNS = [
    "term",
    "estimate",
    "std_error",
    "statistic",
    "df",
    "p_value",
    "conf_low",
    "conf_high",
    "df_method",
    "alternative",
    "conf_level",
    "scale",
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
    """

    protocol: Protocol
    hypotheses: pd.DataFrame
    fits: dict[str, HypothesisFit]
    simulated: bool

    def fit(self, hypothesis_id: str) -> HypothesisFit:
        """The :class:`HypothesisFit` of one hypothesis."""
        try:
            return self.fits[hypothesis_id]
        except KeyError:
            raise ProtocolError(
                f"No results for hypothesis {hypothesis_id!r}; analysed: {', '.join(self.fits)}."
            ) from None

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
            c = f.hypothesis.contrast
            e = f.emmeans.copy()
            e.insert(0, "hypothesis_id", hid)
            e.insert(1, "outcome", f.hypothesis.outcome)
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


# --------------------------------------------------------------------------- verdict
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
        The reported interval (on the scale of ``scale``).
    direction : {"greater", "less", "two-sided"}
    effect_of_interest : float
        Smallest effect of interest: a positive magnitude (difference, correlation) or a
        rate ratio for counts.
    scale : {"difference", "rate ratio", "correlation"}
    usable : bool, default True
        ``False`` when the model failed or did not converge: the verdict is then
        ``"inconclusive"``.

    Returns
    -------
    str
        ``"supported"``, ``"not supported"`` or ``"inconclusive"``.

    Examples
    --------
    >>> verdict(p_adjusted=0.01, alpha=0.025, conf_low=2.0, conf_high=14.0,
    ...         direction="greater", effect_of_interest=5, scale="difference")
    'supported'
    >>> verdict(p_adjusted=0.4, alpha=0.025, conf_low=-6.0, conf_high=4.0,
    ...         direction="greater", effect_of_interest=5, scale="difference")
    'not supported'
    >>> verdict(p_adjusted=0.1, alpha=0.025, conf_low=-3.0, conf_high=12.0,
    ...         direction="greater", effect_of_interest=5, scale="difference")
    'inconclusive'

    Notes
    -----
    *Supported*: the adjusted p-value of the test in the claimed direction is below alpha
    (for a two-sided claim, either direction). *Not supported*: not supported, and the
    interval rules out the smallest effect of interest in the claimed direction (greater:
    ``conf_high < d``; less: ``conf_low > -d``, or ``conf_low > d`` for a rate ratio ``d < 1``;
    two-sided: the whole interval inside ``(-d, d)``, or ``(min(d, 1/d), max(d, 1/d))`` for a
    rate ratio). An effect significantly in the opposite direction is therefore "not
    supported" when its interval also excludes ``d``. *Inconclusive*: everything else: the
    data neither confirm the claim nor rule out an effect that would matter; also whenever
    the model failed or did not converge.
    """
    if not usable or any(math.isnan(x) for x in (p_adjusted, conf_low, conf_high)):
        return "inconclusive"
    if p_adjusted < alpha:
        return "supported"
    d = effect_of_interest
    if scale == "rate ratio":
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
    return "not supported" if excluded else "inconclusive"


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


def _join(study: Any, h: Hypothesis, needed: set[str]) -> pd.DataFrame:
    """The outcome table with the periods and roster columns the hypothesis uses."""
    base = _table(study, h.outcome_table).copy()
    periods = _table(study, "periods")
    roster = _table(study, "roster")
    for col in ("participant_id", "period"):
        if col not in base.columns:
            raise ProtocolError(f"Table {h.outcome_table!r} has no {col!r} column.")
    base["participant_id"] = base["participant_id"].astype(str)
    if h.outcome_table != "periods":
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
    missing = sorted(c for c in needed if c not in base.columns)
    if missing:
        raise ProtocolError(
            f"Hypothesis {h.id!r} needs column(s) {', '.join(missing)}, which the study's "
            f"{h.outcome_table!r}, periods and roster tables do not have. For night outcomes, "
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


def _outcome_checked(h: Hypothesis, df: pd.DataFrame, ex: _Exclusions) -> pd.DataFrame:
    """Drop missing outcomes (and dictionary missing codes, e.g. -99); refuse unvalidated data."""
    raw = df[h.outcome]
    if h.outcome_missing_codes:
        coded = _as_level(raw).isin(h.outcome_missing_codes).fillna(False).to_numpy(dtype=bool)
        ex.add(df[coded], f"{h.outcome} missing (missing-value code)")
        df = df[~coded]
        raw = df[h.outcome]
    y = pd.to_numeric(raw, errors="coerce")
    bad_text = (y.isna() & raw.notna()).to_numpy(dtype=bool)
    lo, hi = h.outcome_range
    out = np.zeros(len(y), dtype=bool)
    if lo is not None:
        out |= (y < lo).fillna(False).to_numpy(dtype=bool)
    if hi is not None:
        out |= (y > hi).fillna(False).to_numpy(dtype=bool)
    if bad_text.any() or out.any():
        vals = sorted({str(v) for v in raw[bad_text | out]})[:5]
        raise ValidationError(
            f"Hypothesis {h.id!r}: outcome {h.outcome!r} has values outside its dictionary "
            f"definition (range {lo}-{hi}): {', '.join(vals)}. The data were not validated: "
            "load them with studykit.validate.load_study (it converts missing-value codes and "
            "reports every invalid value) before analysis."
        )
    miss = y.isna().to_numpy()
    ex.add(df[miss], f"{h.outcome} missing")
    return df[~miss]


def _apply_exclusions(
    h: Hypothesis, df: pd.DataFrame, ex: _Exclusions, notes: list[str], model_vars: Sequence[str]
) -> pd.DataFrame:
    """Analysis set, intercurrent events and missing values; every dropped row recorded."""
    aset = h.analysis_set
    if aset.exclude_status:
        st = _as_level(df["status"])
        drop = st.isin(aset.exclude_status).fillna(False).to_numpy(dtype=bool)
        ex.add(df[drop], f"status {'/'.join(aset.exclude_status)} (analysis set {aset.name})")
        df = df[~drop]
    if aset.exclude_flagged_nights:
        if h.outcome_table == "nights" and "quality_flag" in df.columns:
            drop = _truthy(df["quality_flag"]).fillna(False).to_numpy(dtype=bool)
            ex.add(
                df[drop],
                "night flagged for artefact / unscored / movement time (quality_flag; "
                f"analysis set {aset.name})",
            )
            df = df[~drop]
        elif h.outcome_table == "nights":
            notes.append(
                f"analysis set {aset.name} excludes flagged nights, but the nights have no "
                "quality_flag column (derive the outcomes from the hypnograms): none excluded"
            )
    for ice in h.estimand.intercurrent_events:
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
        if ice.handling == "exclude_participant":
            pids = set(df.loc[flag, "participant_id"])
            flag = df["participant_id"].isin(pids).to_numpy(dtype=bool)
            reason = f"{ice.event} (hypothetical strategy: participant excluded)"
        else:
            reason = f"{ice.event} (hypothetical strategy: period excluded)"
        ex.add(df[flag], reason)
        df = df[~flag]
    df = _outcome_checked(h, df, ex)
    for v in model_vars:
        if v == h.outcome:
            continue
        miss = df[v].isna().to_numpy(dtype=bool)
        ex.add(df[miss], f"{v} missing")
        df = df[~miss]
    if aset.require_reference_time and h.contrast.type == "difference_in_differences":
        tv, ref = h.contrast.time_variable, h.contrast.time_reference
        has_ref = df.groupby(["participant_id", "_period"])[tv].transform(
            lambda s: (s == ref).any()
        )
        drop = ~has_ref.to_numpy(dtype=bool)
        ex.add(df[drop], f"no {tv} {ref} observation in the period (analysis set {aset.name})")
        df = df[~drop]
    if aset.require_both_treatments:
        tv = h.contrast.treatment_variable
        n_arms = df.groupby("participant_id")[tv].transform("nunique")
        drop = (n_arms < 2).to_numpy(dtype=bool)
        ex.add(df[drop], f"not observed under both treatments (analysis set {aset.name})")
        df = df[~drop]
    return df


def _counts(h: Hypothesis, df: pd.DataFrame, n_excluded: int) -> dict[str, int]:
    tv = h.contrast.treatment_variable
    by_arm = df.groupby(tv)["participant_id"].nunique() if len(df) else pd.Series(dtype=int)
    return {
        "n_ketamine": int(by_arm.get(h.contrast.treatment_level, 0)),
        "n_placebo": int(by_arm.get(h.contrast.treatment_reference, 0))
        if h.contrast.treatment_reference
        else 0,
        "n_participants": int(df["participant_id"].nunique()),
        "n_observations": int(len(df)),
        "n_excluded": int(n_excluded),
    }


# --------------------------------------------------------------------------- engines
def _fit_lmm(data: pd.DataFrame, h: Hypothesis) -> Any:
    """Fit the hypothesis' linear mixed model (REML) with the project's LMM engine."""
    random = []
    for r in h.random:
        if r.correlated or not r.slopes:
            random.append((r.group_name, ["1", *r.slopes]))
        else:
            random.append((r.group_name, ["1"]))
            random.extend((r.group_name, [s]) for s in r.slopes)
    return fit_lmm(data, h.outcome, h.terms, random=random, levels=dict(h.levels), reml=True)


def _fit_glmm(data: pd.DataFrame, h: Hypothesis) -> Any:
    """Fit the hypothesis' Poisson / negative-binomial mixed model (Laplace)."""
    return fit_glmm(
        data,
        h.outcome,
        h.terms,
        group=h.random[0].group_name,
        family=h.family,
        levels=dict(h.levels),
        nagq=1,
    )


# --------------------------------------------------------------------------- contrasts
def _contrast_rows(model: Any, h: Hypothesis) -> pd.DataFrame:
    """The pre-specified contrasts: reference-grid weights (models.emmeans), the test in the
    protocol's direction and the two-sided interval at ``conf_level`` (models.inference)."""
    c = h.contrast
    _, L, _ = did_matrix(
        model,
        treatment=c.treatment_variable,
        time=c.time_variable,
        treated=c.treatment_level,
        control=c.treatment_reference,
        baseline=c.time_reference,
        at_times=c.time_levels,
    )
    tab = contrast_table(
        model,
        L,
        names=c.labels(),
        df_method=_engine_df_method(h),
        alpha=1 - h.conf_level,
        alternative=h.direction,
        interval="two-sided",
    )
    rr = h.scale == "rate ratio"
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
            "df_method": [_df_method(h, d) for d in tab["df"]],
            "alternative": h.direction,
            "conf_level": h.conf_level,
            "scale": h.scale,
        }
    )
    return out


def _engine_df_method(h: Hypothesis) -> str:
    """The df method asked of models.inference: z for count models (Wald z tests)."""
    return h.df_method if h.family == "gaussian" else "z"


def _df_method(h: Hypothesis, df: float) -> str:
    if h.scale == "correlation":
        return "t (n - 2)"
    if not np.isfinite(df):
        return "z (asymptotic Wald)"
    return h.df_method


def _emmeans(model: Any, h: Hypothesis) -> pd.DataFrame:
    """Model-estimated cell means (models.emmeans), treatment outer, time inner."""
    c = h.contrast
    tv, time = c.treatment_variable, c.time_variable
    rr = h.family != "gaussian"
    em = emmeans(
        model,
        [time, tv],  # first spec fastest: time within treatment
        df_method=_engine_df_method(h),
        alpha=1 - h.conf_level,
        type="response" if rr else "link",
    )
    return pd.DataFrame(
        {
            tv: em[tv].astype(str),
            time: em[time].astype(str),
            "estimate": em["estimate"],
            "std_error": em["std_error"],
            "df": em["df"],
            "conf_low": em["conf_low"],
            "conf_high": em["conf_high"],
            "conf_level": h.conf_level,
            "scale": "rate" if rr else "mean",
        }
    )


def _effect_size(
    h: Hypothesis, data: pd.DataFrame, contrasts: pd.DataFrame
) -> tuple[list[float], str]:
    if h.scale == "rate ratio":
        return list(contrasts["estimate"]), (
            "rate ratio (ratio of the post/reference rate ratios, ketamine vs placebo); counts "
            "are not standardized"
        )
    c = h.contrast
    ref = data[data[c.time_variable] == c.time_reference]
    y = pd.to_numeric(ref[h.outcome])
    groups = [g.to_numpy(dtype=float) for _, g in y.groupby(ref[c.treatment_variable])]
    dof = sum(len(g) - 1 for g in groups)
    ss = sum(((g - g.mean()) ** 2).sum() for g in groups)
    sd = math.sqrt(ss / dof) if dof > 0 else math.nan
    values = [
        e / sd if sd and not math.isnan(sd) and sd > 0 else math.nan for e in contrasts["estimate"]
    ]
    return values, (
        f"difference-in-differences / pooled within-arm SD of {h.outcome} at {c.time_variable} "
        f"{c.time_reference} in the analysis data (SD = {sd:.4g}); Cohen's d scale"
    )


# --------------------------------------------------------------------------- per hypothesis
def _empty_contrasts(h: Hypothesis) -> pd.DataFrame:
    rows = []
    for label in h.contrast.labels():
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
                "df_method": h.df_method if h.family == "gaussian" else "z (asymptotic Wald)",
                "alternative": h.direction,
                "conf_level": h.conf_level,
                "scale": h.scale,
            }
        )
    return pd.DataFrame(rows)


def _fit_did(h: Hypothesis, study: Any) -> HypothesisFit:
    c = h.contrast
    model_vars = sorted(
        {v for t in h.terms for v in t.split(":")}
        | {g for r in h.random for g in r.group}
        | {s for r in h.random for s in r.slopes}
    )
    needed = set(model_vars) | {
        h.outcome,
        "participant_id",
        "period",
        c.treatment_variable,
        c.time_variable,
    }
    needed |= {e.variable for e in h.estimand.intercurrent_events if e.variable}
    if h.analysis_set.exclude_status:
        needed.add("status")
    df = _join(study, h, needed)
    df["_period"] = _as_level(df["period"])
    for v in h.levels:
        df[v] = _as_level(df[v])
    in_window = df[c.time_variable].isin(c.window).fillna(False).to_numpy(dtype=bool)
    notes: list[str] = []
    n_out = int((~in_window).sum())
    if n_out:
        notes.append(
            f"{n_out} observations outside the modelled {c.time_variable} window {list(c.window)} not used (by design)"
        )
    df = df[in_window]
    ex = _Exclusions(h.id)
    df = _apply_exclusions(h, df, ex, notes, [v for v in model_vars if v != "participant_id"])
    df = df.reset_index(drop=True)
    n_excluded, _ = ex.summary()
    counts = _counts(h, df, n_excluded)
    present = set(df[c.time_variable].dropna())
    needed_times = {c.time_reference, *c.time_levels}
    unused = [t for t in c.window if t not in present and t not in needed_times]
    h_fit = h
    if unused:
        window = tuple(t for t in c.window if t not in unused)
        notes.append(
            f"{c.time_variable} level(s) {unused} of the protocol's window have no observations "
            f"in these data: modelled window {list(window)}"
        )
        h_fit = dataclasses.replace(
            h,
            contrast=dataclasses.replace(c, window=window),
            levels={**h.levels, c.time_variable: window},
        )
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
        return _failed(h, df, ex, counts, notes, msg)
    try:
        model = _fit_lmm(df, h_fit) if h.family == "gaussian" else _fit_glmm(df, h_fit)
    except ModelError as exc:
        return _failed(h, df, ex, counts, notes, f"model could not be fitted: {exc}")
    contrasts = _contrast_rows(model, h_fit)
    try:
        coefs = model.coef_table()
    except ModelError as exc:  # pragma: no cover - engine specific
        coefs = None
        notes.append(f"coefficient table unavailable: {exc}")
    emm = _emmeans(model, h_fit)
    warnings = [str(w) for w in (getattr(model, "warnings", None) or [])]
    if getattr(model, "singular", False) and not any("singular" in w.lower() for w in warnings):
        warnings.append("singular fit: a random-effect variance is estimated at (or near) zero")
    if not getattr(model, "converged", True):
        warnings.append("model did not converge: verdict set to inconclusive")
    return HypothesisFit(
        hypothesis=h,
        data=df.drop(columns="_period"),
        model=model,
        contrasts=contrasts,
        coefficients=coefs,
        emmeans=emm,
        exclusions=ex.frame(),
        counts=counts,
        warnings=warnings + notes,
    )


def _failed(
    h: Hypothesis,
    df: pd.DataFrame,
    ex: _Exclusions,
    counts: dict[str, int],
    notes: list[str],
    msg: str,
) -> HypothesisFit:
    logger.warning("hypothesis %s: %s", h.id, msg)
    return HypothesisFit(
        hypothesis=h,
        data=df.drop(columns="_period", errors="ignore"),
        model=None,
        contrasts=_empty_contrasts(h),
        coefficients=None,
        emmeans=None,
        exclusions=ex.frame(),
        counts=counts,
        warnings=[msg, *notes],
        error=msg,
    )


def _fit_correlation(h: Hypothesis, study: Any) -> HypothesisFit:
    """Pearson correlation of two per-period changes among periods of one treatment."""
    c = h.contrast
    ref_var = c.outcome_reference_variable
    needed = {h.outcome, ref_var, c.treatment_variable, "participant_id", "period"}
    needed |= {e.variable for e in h.estimand.intercurrent_events if e.variable}
    if h.analysis_set.exclude_status:
        needed.add("status")
    per = _join(study, h, needed)
    per["_period"] = _as_level(per["period"])
    per = per[_as_level(per[c.treatment_variable]) == c.treatment_level].copy()
    nights = _table(study, c.predictor_table)
    for col in (c.predictor, c.time_variable):
        if col not in nights.columns:
            raise ProtocolError(
                f"Hypothesis {h.id!r} needs column {col!r} of table {c.predictor_table!r}."
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
    per["outcome_change"] = pd.to_numeric(per[h.outcome], errors="coerce") - pd.to_numeric(
        per[ref_var], errors="coerce"
    )
    ex = _Exclusions(h.id)
    notes: list[str] = []
    per = _apply_exclusions(h, per, ex, notes, [ref_var])
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
        return _failed(h, data, ex, counts, notes, msg)
    r = float(np.corrcoef(x, y)[0, 1])
    test = correlation_test(r, n, alternative=h.direction, level=h.conf_level)
    contrasts = pd.DataFrame(
        [
            {
                "term": h.contrast.labels(h.outcome)[0],
                **test,
                "df_method": "t (n - 2)",
                "alternative": h.direction,
                "conf_level": h.conf_level,
                "scale": "correlation",
            }
        ]
    )[_CONTRAST_COLUMNS]
    return HypothesisFit(
        hypothesis=h,
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
    >>> res = run_analysis(proto, load_study(folder))
    >>> t = res.hypotheses
    >>> t["hypothesis_id"].tolist()
    ['H1', 'H2', 'H3', 'E1', 'E2', 'E3', 'E3', 'E3', 'E4', 'E5', 'E6', 'E7']
    >>> bool((t["protocol_sha256"] == proto.sha256).all()), bool(t["simulated"].all())
    (True, True)
    >>> t.loc[t["role"] == "confirmatory", ["df_method", "adjust_method"]].drop_duplicates()
                 df_method adjust_method
    0        satterthwaite          holm
    1  z (asymptotic Wald)          holm
    >>> set(t["verdict"]) <= {"supported", "not supported", "inconclusive"}
    True
    >>> h1 = res.fit("H1")
    >>> type(h1.model).__name__, h1.emmeans.columns[:3].tolist()
    ('LMMResult', ['treatment', 'night', 'estimate'])
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
    locked = protocol
    if analysis_set is not None:
        if analysis_set not in protocol.analysis_sets:
            raise ProtocolError(
                f"The protocol has no analysis set {analysis_set!r}; it defines "
                f"{', '.join(protocol.analysis_sets)}."
            )
        aset = protocol.analysis_sets[analysis_set]
        protocol = dataclasses.replace(
            protocol,
            hypotheses=[dataclasses.replace(h, analysis_set=aset) for h in protocol.hypotheses],
        )
    wanted = list(hypotheses) if hypotheses is not None else [h.id for h in protocol.hypotheses]
    for hid in wanted:
        protocol.get(hid)  # raises for unknown ids
    fams = {protocol.get(hid).multiplicity_family for hid in wanted}
    to_fit = [
        h
        for h in protocol.hypotheses
        if h.id in wanted
        or (
            h.multiplicity_family in fams
            and protocol.families[h.multiplicity_family].method != "none"
        )
    ]
    fits: dict[str, HypothesisFit] = {}
    for h in to_fit:
        logger.debug("fitting %s (%s, %s)", h.id, h.outcome, h.family)
        if h.contrast.type == "change_correlation":
            fits[h.id] = _fit_correlation(h, study)
        else:
            fits[h.id] = _fit_did(h, study)
        if analysis_set is not None:
            fits[h.id].warnings.insert(
                0, f"sensitivity analysis: analysis set {analysis_set!r} for every hypothesis"
            )

    rows = []
    for h in to_fit:
        f = fits[h.id]
        usable = f.error is None and bool(getattr(f.model, "converged", True))
        n_excluded, reasons = _Exclusions(h.id, f.exclusions.to_dict("records")).summary()
        if f.error is None:
            es, es_def = (
                (list(f.contrasts["estimate"]), "Pearson correlation")
                if h.scale == "correlation"
                else _effect_size(h, f.data, f.contrasts)
            )
        else:
            es, es_def = [math.nan] * len(f.contrasts), ""
        for i, c in f.contrasts.reset_index(drop=True).iterrows():
            rows.append(
                {
                    "protocol_id": protocol.id,
                    "protocol_sha256": protocol.sha256,
                    "hypothesis_id": h.id,
                    "claim": h.claim,
                    "source": h.source.text(protocol.articles),
                    "evidence": h.source.evidence_text,
                    "outcome": h.outcome,
                    "contrast": c["term"],
                    "estimand": h.estimand.text(),
                    "role": h.role,
                    "multiplicity_family": h.multiplicity_family,
                    "family": h.family,
                    "scale": h.scale,
                    **f.counts,
                    "n_excluded": n_excluded,
                    "excluded_reasons": reasons,
                    "estimate": c["estimate"],
                    "std_error": c["std_error"],
                    "df": c["df"],
                    "df_method": c["df_method"],
                    "statistic": c["statistic"],
                    "alternative": h.direction,
                    "conf_level": h.conf_level,
                    "conf_low": c["conf_low"],
                    "conf_high": c["conf_high"],
                    "p_value": c["p_value"],
                    "p_adjusted": math.nan,
                    "adjust_method": h.adjust_method,
                    "effect_size": es[i],
                    "effect_size_definition": es_def,
                    "verdict": "",
                    "verdict_rule": h.verdict_rule,
                    "model": h.model_text,
                    "converged": bool(getattr(f.model, "converged", f.error is None)),
                    "singular": bool(getattr(f.model, "singular", False)),
                    "warnings": "; ".join(f.warnings),
                    "simulated": bool(simulated),
                    "_usable": usable,
                }
            )
    table = pd.DataFrame(rows)
    table = _adjust(table, protocol)
    table["verdict"] = [
        verdict(
            p_adjusted=r.p_adjusted,
            alpha=protocol.get(r.hypothesis_id).alpha,
            conf_low=r.conf_low,
            conf_high=r.conf_high,
            direction=r.alternative,
            effect_of_interest=protocol.get(r.hypothesis_id).effect_of_interest,
            scale=r.scale,
            usable=bool(u),
        )
        for r, u in zip(table.itertuples(), table["_usable"], strict=True)
    ]
    table = table[table["hypothesis_id"].isin(wanted)].reset_index(drop=True)
    table = table[HYPOTHESIS_COLUMNS]
    return AnalysisResults(
        protocol=locked,
        hypotheses=table,
        fits={hid: fits[hid] for hid in wanted},
        simulated=bool(simulated),
    )


def _is_simulated(study: Any) -> bool:
    """Simulated data are always labelled: a study from ``load_study`` carries the flag (its
    directory's README says SIMULATED); an in-memory ``simulate_study`` result is simulated."""
    flag = getattr(study, "simulated", None)
    if flag is not None:
        return bool(flag)
    return type(study).__name__ == "SimulatedStudy"


def _adjust(table: pd.DataFrame, protocol: Protocol) -> pd.DataFrame:
    table = table.copy()
    for name, fam in protocol.families.items():
        idx = table.index[table["multiplicity_family"] == name]
        if not len(idx):
            continue
        sub = table.loc[idx]
        if fam.method == "fixed-sequence":
            rank = {hid: i for i, hid in enumerate(fam.order)}
            order = sorted(idx, key=lambda j: (rank[table.at[j, "hypothesis_id"]], j))
        else:
            order = list(idx)
        p = sub.loc[order, "p_value"].to_numpy(dtype=float)
        usable = sub.loc[order, "_usable"].to_numpy(dtype=bool)
        p_for_adjust = np.where(np.isnan(p) | ~usable, 1.0, p)
        if fam.method == "none":
            adj = p
        else:
            adj = adjust_pvalues(p_for_adjust, method=fam.method)
            adj = np.where(np.isnan(p), np.nan, adj)
        table.loc[order, "p_adjusted"] = adj
    return table
