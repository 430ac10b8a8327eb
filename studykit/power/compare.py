"""Choose a hypothesis' estimator by simulation: bias, SE, coverage, type I error and power.

For each hypothesis the candidate analyses of :mod:`studykit.estimators` (difference in
differences, constrained baseline, Kenward-Roger 2010 ANCOVA, post-only) analyse *the same*
simulated data sets (common random numbers): under the assumed effects ("effect") and with
the hypothesis' treatment effect set to zero ("null"), same seed, same replicates. Each
scenario is one :func:`~studykit.power.core.power_analysis` run on a design whose
hypotheses are the estimator variants, unadjusted (each tested at the hypothesis' alpha in
its stated direction).

>>> from studykit.power.compare import COMPARISON_COLUMNS
>>> COMPARISON_COLUMNS[:4]
['hypothesis_id', 'contrast', 'estimator', 'scenario']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from studykit.errors import InputError
from studykit.estimators import ESTIMATOR_LABELS, ESTIMATORS
from studykit.models.design import build_design
from studykit.power.core import (
    CONF_METHOD,
    DEFAULT_SEED,
    PowerResult,
    power_analysis,
    replicate_intervals,
    true_contrasts,
)
from studykit.power.simulate import resolve_coefficients
from studykit.power.spec import OutcomeTruth, PowerDesign, PowerHypothesis, as_design

__all__ = ["COMPARISON_COLUMNS", "EstimatorComparison", "compare_estimators_by_simulation"]

COMPARISON_COLUMNS = [
    "hypothesis_id",
    "contrast",
    "estimator",
    "scenario",
    "n",
    "reps",
    "true_effect",
    "mean_estimate",
    "bias",
    "empirical_sd",
    "mean_std_error",
    "se_ratio",
    "relative_variance",
    "coverage",
    "rejection_rate",
    "mc_se",
    "alpha",
    "alternative",
    "df_method",
    "n_failed",
    "seed",
    "simulated",
]


@dataclass
class EstimatorComparison:
    """The outcome of :func:`compare_estimators_by_simulation`.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per hypothesis x contrast x estimator x scenario (:data:`COMPARISON_COLUMNS`):
        ``true_effect`` (the assumed contrast; 0 under "null"), ``bias = mean_estimate -
        true_effect``, ``empirical_sd`` (SD of the estimates over replicates),
        ``mean_std_error`` and ``se_ratio = mean_std_error / empirical_sd`` (1 = honest SEs),
        ``relative_variance`` (empirical variance / that of the difference in differences),
        ``coverage`` of the two-sided 95% interval, ``rejection_rate`` (type I error under
        "null", power under "effect") with its Monte Carlo SE ``mc_se``.
    runs : dict
        Scenario -> the :class:`~studykit.power.core.PowerResult` it came from.
    settings : dict
    """

    table: pd.DataFrame
    runs: dict[str, PowerResult] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_markdown(self, *, digits: int = 3) -> str:
        """The comparison as Markdown, with its settings (SIMULATED)."""
        s = self.settings
        cols = ["hypothesis_id", "estimator", "scenario", "true_effect", "bias", "empirical_sd",
                "mean_std_error", "se_ratio", "relative_variance", "coverage", "rejection_rate",
                "mc_se"]  # fmt: skip
        head = (
            f"Estimator comparison by simulation (SIMULATED data): n = {s.get('n')}, "
            f"{s.get('reps')} replicates per scenario, seed {s.get('seed')}, common random "
            "numbers across estimators and scenarios; tests at each hypothesis' alpha in its "
            "stated direction, unadjusted; coverage of two-sided 95% intervals.\n\n"
        )
        legend = "\n".join(f"- `{k}`: {v}" for k, v in ESTIMATOR_LABELS.items())
        return (
            head + self.table[cols].round(digits).to_markdown(index=False) + "\n\n" + legend + "\n"
        )

    def write(self, directory: str, *, stem: str = "estimators") -> dict[str, str]:
        """Write ``estimators.csv`` and ``estimators.md``."""
        import os

        os.makedirs(directory, exist_ok=True)
        paths = {
            "table_csv": os.path.join(directory, f"{stem}.csv"),
            "table_md": os.path.join(directory, f"{stem}.md"),
        }
        self.table.to_csv(paths["table_csv"], index=False)
        with open(paths["table_md"], "w", encoding="utf-8") as fh:
            fh.write(self.to_markdown())
        return paths


def _null_truth(design: PowerDesign, h: PowerHypothesis) -> OutcomeTruth:
    """The truth of ``h``'s outcome without any coefficient involving the treatment."""
    truth = design.outcomes[h.outcome]
    treatment = design.layout.treatment
    d = build_design(design.layout.template(4), list(truth.fixed), levels=dict(h.levels))
    beta = resolve_coefficients(d, truth.coefficients, f"outcomes.{truth.name}")
    keep = {
        col: float(b)
        for col, b in zip(d.columns, beta, strict=True)
        if b != 0 and not any(piece.startswith(treatment) for piece in col.split(":"))
    }
    return replace(truth, coefficients=keep)


def compare_estimators_by_simulation(
    protocol_or_design: Any,
    effects: Any = None,
    *,
    hypotheses: Sequence[str] | None = None,
    n: int = 36,
    reps: int = 500,
    seed: int = DEFAULT_SEED,
    estimators: Sequence[str] = ESTIMATORS,
    n_jobs: int = 1,
    progress: bool = False,
) -> EstimatorComparison:
    """Compare the candidate estimators of each hypothesis over simulated studies.

    Parameters
    ----------
    protocol_or_design : path, Protocol, PowerDesign or mapping
        As :func:`~studykit.power.core.power_analysis` (a protocol needs ``effects``).
    effects : path or mapping, optional
        Assumed effects (layout and outcome truths). The truth may add the crossover
        template's nuisance columns ``carryover`` and ``first_night`` to its ``fixed`` terms.
    hypotheses : sequence of str, optional
        Hypothesis ids (default: every difference-in-differences hypothesis simulated).
    n : int
        Participants per simulated study.
    reps : int
        Replicates per scenario.
    seed : int
    estimators : sequence of str
        Subset of :data:`studykit.estimators.ESTIMATORS` (the ANCOVA is skipped for counts).
    n_jobs : int
        joblib workers (results do not depend on it).

    Returns
    -------
    EstimatorComparison

    Notes
    -----
    The two scenarios share the seed, hence the random effects and residuals of every
    replicate (count outcomes are drawn by inversion, so they stay paired too). "null"
    removes every true coefficient involving the treatment variable from the hypothesis'
    outcome; nuisance terms (period, carryover, first night) stay, so a carryover shows as
    bias and as type I error.
    """
    bad = [e for e in estimators if e not in ESTIMATORS]
    if bad:
        raise InputError(f"Unknown estimator(s) {bad}; expected some of {list(ESTIMATORS)}.")
    base = as_design(protocol_or_design, effects, hypotheses)
    hyps = [h for h in base.hypotheses if h.estimand is not None]
    if not hyps:
        raise InputError(
            "No hypothesis with a crossover estimand to compare: the comparison needs "
            "difference-in-differences hypotheses from a protocol."
        )
    variants = []
    for h in hyps:
        for e in estimators:
            if e == "ancova" and h.family != "gaussian":
                continue
            variants.append(
                replace(
                    h,
                    estimator=e,
                    multiplicity_family=f"{h.id}/{e}",
                    adjust_method="none",
                )
            )
    nulls = {h.outcome: _null_truth(base, h) for h in hyps}
    scenarios = {
        "effect": replace(base, hypotheses=tuple(variants)),
        "null": replace(
            base,
            hypotheses=tuple(variants),
            outcomes={k: nulls.get(k, v) for k, v in base.outcomes.items()},
        ),
    }
    runs: dict[str, PowerResult] = {}
    rows: list[dict[str, Any]] = []
    for name, design in scenarios.items():
        res = power_analysis(design, n=[n], reps=reps, seed=seed, n_jobs=n_jobs, progress=progress)
        runs[name] = res
        reps_df = res.replicates
        did_var: dict[tuple[str, str], float] = {}
        for h in design.hypotheses:
            truths = true_contrasts(design, h, n)
            for (label, _), truth in zip(h.contrasts, truths, strict=True):
                r = reps_df[
                    (reps_df.hypothesis_id == h.id)
                    & (reps_df.contrast == label)
                    & (reps_df.estimator == h.estimator)
                ]
                ok = r[~r.failed]
                est, se, df = (ok[c].to_numpy(float) for c in ("estimate", "std_error", "df"))
                var = float(np.var(est, ddof=1)) if len(est) > 1 else math.nan
                if h.estimator == "did":
                    did_var[(h.id, label)] = var
                lo, hi = replicate_intervals(est, se, df, 0.95)
                rate = float(r["rejected"].mean())
                rows.append(
                    {
                        "hypothesis_id": h.id,
                        "contrast": label,
                        "estimator": h.estimator,
                        "scenario": name,
                        "n": n,
                        "reps": reps,
                        "true_effect": float(truth),
                        "mean_estimate": float(np.mean(est)) if len(est) else math.nan,
                        "bias": float(np.mean(est) - truth) if len(est) else math.nan,
                        "empirical_sd": math.sqrt(var) if var == var else math.nan,
                        "mean_std_error": float(np.mean(se)) if len(se) else math.nan,
                        "se_ratio": float(np.mean(se)) / math.sqrt(var) if var > 0 else math.nan,
                        "_var": var,
                        "coverage": float(np.mean((lo <= truth) & (truth <= hi)))
                        if len(est)
                        else math.nan,
                        "rejection_rate": rate,
                        "mc_se": math.sqrt(rate * (1 - rate) / reps),
                        "alpha": h.alpha,
                        "alternative": h.alternative,
                        "df_method": h.df_method if h.family == "gaussian" else "z",
                        "n_failed": int(r["failed"].sum()),
                        "seed": seed,
                        "simulated": True,
                    }
                )
        for row in rows:
            if row["scenario"] == name:
                ref = did_var.get((str(row["hypothesis_id"]), str(row["contrast"])), math.nan)
                var = float(row.pop("_var"))
                row["relative_variance"] = var / ref if ref > 0 else math.nan
    table = pd.DataFrame(rows)[COMPARISON_COLUMNS]
    settings = {
        "n": n,
        "reps": reps,
        "seed": seed,
        "estimators": list(estimators),
        "hypotheses": [h.id for h in hyps],
        "source": base.source,
        "conf_method": CONF_METHOD,
        "simulated": True,
    }
    return EstimatorComparison(table=table, runs=runs, settings=settings)
