"""Power by simulation: the replicate loop, its parallel execution, and the result table."""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

import numpy as np
import pandas as pd

from studykit import __version__
from studykit.errors import InputError
from studykit.estimators import ESTIMATOR_LABELS, ESTIMATORS
from studykit.models.design import build_design
from studykit.models.inference import confidence_interval
from studykit.models.multiplicity import P_ADJUSTING, adjust_pvalues
from studykit.power.engine import ENGINES, make_analyser
from studykit.power.pilot import design_from_pilot
from studykit.power.plot import plot_power_curve
from studykit.power.simulate import OutcomePlan, resolve_coefficients
from studykit.power.spec import (
    PowerDesign,
    as_design,
)
from studykit.protocol.plan import verdict

__all__ = [
    "PowerResult",
    "power_analysis",
    "binomial_ci",
    "adjust_pvalues_matrix",
    "replicate_intervals",
    "replicate_verdicts",
    "true_contrasts",
    "with_estimators",
]

logger = logging.getLogger(__name__)

DEFAULT_SEED = 20261125
CONF_METHOD = "Clopper-Pearson exact 95%"


# --------------------------------------------------------------------------- statistics
def binomial_ci(
    successes: np.ndarray, trials: np.ndarray, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Clopper-Pearson exact confidence interval for a binomial proportion.

    Examples
    --------
    >>> lo, hi = binomial_ci(np.array([90]), np.array([200]))
    >>> round(float(lo[0]), 4), round(float(hi[0]), 4)
    (0.3798, 0.5218)
    """
    from scipy import stats

    x = np.asarray(successes, float)
    n = np.asarray(trials, float)
    a = (1.0 - level) / 2.0
    with np.errstate(invalid="ignore"):
        lo = np.where(x > 0, stats.beta.ppf(a, x, n - x + 1), 0.0)
        hi = np.where(x < n, stats.beta.ppf(1 - a, x + 1, n - x), 1.0)
    return lo, hi


def adjust_pvalues_matrix(p: np.ndarray, method: str) -> np.ndarray:
    """Adjust each row of ``p`` (one replicate's family of p-values) for multiplicity.

    Row by row with :func:`studykit.models.multiplicity.adjust_pvalues`, the analysis' own
    adjustment.

    Examples
    --------
    >>> adjust_pvalues_matrix(np.array([[0.01, 0.04, 0.03], [0.2, 0.01, np.nan]]), "holm").round(3).tolist()
    [[0.03, 0.06, 0.06], [0.2, 0.02, nan]]
    """
    p = np.atleast_2d(np.asarray(p, float))
    return np.vstack([adjust_pvalues(row, method) for row in p]) if p.size else p.copy()


def replicate_intervals(
    est: np.ndarray, se: np.ndarray, df: np.ndarray, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided ``level`` intervals of replicate estimates (t with each replicate's df, normal
    where df is infinite), by :func:`studykit.models.inference.confidence_interval`.

    Examples
    --------
    >>> lo, hi = replicate_intervals(np.array([1.0, 2.0]), np.array([0.5, 0.5]), np.array([np.inf, np.inf]))
    >>> np.round(lo, 3).tolist(), np.round(hi, 3).tolist()
    ([0.02, 1.02], [1.98, 2.98])
    """
    return confidence_interval(est, se, df, level)


def replicate_verdicts(
    h: Any,
    p_adjusted: np.ndarray,
    est: np.ndarray,
    se: np.ndarray,
    df: np.ndarray,
    m: int = 1,
) -> np.ndarray:
    """The protocol's verdict (:func:`studykit.protocol.plan.verdict`) of each replicate of ``h``.

    The interval is the one the analysis rules effects out with: two-sided at ``h.conf_level``,
    or the family's simultaneous (Bonferroni) interval at ``1 - (1 - conf_level) / m`` when
    the family adjusts p-values over ``m`` rows (as
    :func:`studykit.models.multiplicity.adjusted_intervals`); on the rate ratio scale for
    counts; a failed fit is "inconclusive".
    """
    lo, hi = replicate_intervals(est, se, df, 1 - (1 - h.conf_level) / m)
    scale = "difference"
    if h.family != "gaussian":
        lo, hi, scale = np.exp(lo), np.exp(hi), "rate ratio"
    eoi = h.effect_of_interest
    out = []
    for p, a, b in zip(p_adjusted, lo, hi, strict=True):
        if eoi is None:
            # no smallest effect of interest: nothing can be ruled out
            out.append("supported" if p < h.alpha else "inconclusive")
            continue
        out.append(
            verdict(
                p_adjusted=float(p),
                alpha=h.alpha,
                conf_low=float(a),
                conf_high=float(b),
                direction=h.alternative,
                effect_of_interest=float(eoi),
                scale=scale,
                usable=bool(np.isfinite(p)),
            )
        )
    return np.asarray(out, dtype=object)


# --------------------------------------------------------------------------- one chunk of work
def _run_chunk(
    design: PowerDesign, n: int, start: int, stop: int, seed: int, engine: str
) -> dict[str, Any]:
    """Simulate and analyse replicates ``start .. stop - 1`` at sample size ``n``.

    Module-level (picklable) so that joblib and Dask workers can run it. Each replicate draws
    from its own streams (:func:`~studykit.power.simulate.replicate_rng`; common random
    numbers across sample sizes and analyses), so results do not depend on how replicates
    are split into chunks.
    """
    plans = {}
    for name, truth in design.outcomes.items():
        first = next(h for h in design.hypotheses if h.outcome == name)
        plans[name] = OutcomePlan.build(truth, design.layout, n, first.levels)
    analysers = [make_analyser(h, plans[h.outcome].template, engine) for h in design.hypotheses]
    K = sum(a.k for a in analysers)
    r = stop - start
    est, se, df, p = (np.full((r, K), np.nan) for _ in range(4))
    failed = np.zeros((r, K), bool)
    singular = np.zeros((r, K), bool)
    index = {name: j for j, name in enumerate(design.outcomes)}
    for i, rep in enumerate(range(start, stop)):
        draws = {name: plan.draw(seed, rep, index[name]) for name, plan in plans.items()}
        j = 0
        for h, a in zip(design.hypotheses, analysers, strict=True):
            res = a(*draws[h.outcome])
            sl = slice(j, j + a.k)
            est[i, sl], se[i, sl], df[i, sl], p[i, sl] = (
                res.estimate,
                res.std_error,
                res.df,
                res.p_value,
            )
            failed[i, sl] = res.failed
            singular[i, sl] = res.singular
            j += a.k
    return {
        "n": n,
        "start": start,
        "estimate": est,
        "std_error": se,
        "df": df,
        "p_value": p,
        "failed": failed,
        "singular": singular,
        "engines": [a.engine for a in analysers for _ in range(a.k)],
    }


# --------------------------------------------------------------------------- progress
class _Progress:
    """A minimal progress bar on stderr (no dependency)."""

    def __init__(
        self, total: int, *, enabled: bool, stream: TextIO | None = None, label: str = "power"
    ) -> None:
        self.total, self.done, self.enabled = total, 0, enabled and total > 0
        self.stream = stream if stream is not None else sys.stderr
        self.label = label
        self.t0 = time.perf_counter()
        self.last = -1.0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.last_decile = -1

    def update(self, k: int) -> None:
        self.done += k
        if not self.enabled:
            return
        now = time.perf_counter()
        frac = self.done / self.total
        if self.tty:
            if now - self.last < 0.1 and self.done < self.total:
                return
            self.last = now
            self._write("\r" + self._line(frac, now), end="\n" if self.done >= self.total else "")
        else:
            decile = int(frac * 10)
            if decile > self.last_decile:
                self.last_decile = decile
                self._write(self._line(frac, now), end="\n")

    def _line(self, frac: float, now: float) -> str:
        width = 30
        fill = int(round(frac * width))
        el = now - self.t0
        eta = el / frac - el if frac > 0 else float("nan")
        return (
            f"{self.label} [{'#' * fill}{'.' * (width - fill)}] {frac:4.0%} {self.done}/{self.total} "
            f"replicates, {el:.1f} s elapsed, ~{eta:.0f} s left"
        )

    def _write(self, text: str, end: str) -> None:
        self.stream.write(text + end)
        self.stream.flush()


# --------------------------------------------------------------------------- executors
def _chunks(ns: Sequence[int], reps: int, chunk: int) -> list[tuple[int, int, int]]:
    return [(n, s, min(reps, s + chunk)) for n in ns for s in range(0, reps, chunk)]


def _execute(
    tasks: list[tuple[int, int, int]],
    design: PowerDesign,
    seed: int,
    engine: str,
    *,
    n_jobs: int,
    scheduler: Any,
    bar: _Progress,
) -> Iterable[dict[str, Any]]:
    if scheduler is not None:
        yield from _execute_dask(tasks, design, seed, engine, scheduler=scheduler, bar=bar)
        return
    if n_jobs == 1:
        for n, a, b in tasks:
            out = _run_chunk(design, n, a, b, seed, engine)
            bar.update(b - a)
            yield out
        return
    from joblib import Parallel, delayed

    par = Parallel(n_jobs=n_jobs, return_as="generator_unordered")
    for out in par(delayed(_run_chunk)(design, n, a, b, seed, engine) for n, a, b in tasks):
        bar.update(out["estimate"].shape[0])
        yield out


def _execute_dask(tasks, design, seed, engine, *, scheduler, bar):
    try:
        from distributed import Client, as_completed
    except ImportError as exc:
        raise InputError(
            "A scheduler address was given but dask.distributed is not installed "
            "(pip install 'dask[distributed]')."
        ) from exc
    own = not isinstance(scheduler, Client)
    try:
        client = Client(scheduler) if own else scheduler
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(
            f"Cannot connect to the Dask scheduler at {scheduler!r}: {exc}. Start one with "
            "`dask scheduler` (and workers with `dask worker ADDRESS`), or drop --scheduler."
        ) from exc
    try:
        design_f = client.scatter(design, broadcast=True)
        futures = [
            client.submit(_run_chunk, design_f, n, a, b, seed, engine, pure=False)
            for n, a, b in tasks
        ]
        for fut in as_completed(futures):
            out = fut.result()
            bar.update(out["estimate"].shape[0])
            yield out
    finally:
        if own:
            client.close()


# --------------------------------------------------------------------------- result
@dataclass
class PowerResult:
    """The outcome of :func:`power_analysis`.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per hypothesis x contrast x sample size: ``hypothesis_id, contrast, outcome,
        family, alternative, n, reps, rejections, power, mc_se, conf_low, conf_high,
        conf_method, alpha, adjust_method, multiplicity_family, n_failed, n_singular,
        mean_estimate, mean_std_error, median_df, engine, df_method, seed, simulated``.
        ``power`` is the share of replicates whose multiplicity-adjusted p-value is below
        ``alpha``; ``mc_se = sqrt(power (1 - power) / reps)``; ``conf_low, conf_high`` the
        Clopper-Pearson exact 95% interval. Failed fits count as non-rejections (``n_failed``).
    replicates : pandas.DataFrame
        One row per replicate x hypothesis x contrast: ``n, rep, hypothesis_id, contrast,
        estimate, std_error, df, p_value, p_adjusted, rejected, failed, singular``.
    design : PowerDesign
        The assumptions simulated.
    settings : dict
        Seed, replicates, sample sizes, engine, workers, timing.
    """

    table: pd.DataFrame
    replicates: pd.DataFrame
    design: PowerDesign
    settings: dict[str, Any] = field(default_factory=dict)
    families: pd.DataFrame = field(default_factory=pd.DataFrame)

    def assumptions(self) -> pd.DataFrame:
        """What was simulated: one row per hypothesis x contrast.

        Columns ``hypothesis_id, contrast, outcome, estimator, assumed_effect, effect_origin,
        effect_pilot_ci, true_model, alpha, alternative, adjust_method, multiplicity_family,
        conf_level, effect_of_interest, reps, seed`` (``assumed_effect`` is the contrast's true
        value, on the log scale for counts; ``true_model`` the coefficients, SDs,
        correlations and dispersion of the outcome's true model).
        """
        rows = []
        for h in self.design.hypotheses:
            truth = self.design.outcomes[h.outcome]
            values = true_contrasts(self.design, h)
            for (label, weights), value in zip(h.contrasts, values, strict=True):
                cis = [truth.pilot_ci[c] for c in weights if c in truth.pilot_ci]
                ci = ""
                if len(cis) == 1 and len(weights) == 1:
                    w = next(iter(weights.values()))
                    lo, hi = sorted((w * cis[0][0], w * cis[0][1]))
                    ci = f"[{lo:.4g}, {hi:.4g}]"
                rows.append(
                    {
                        "hypothesis_id": h.id,
                        "contrast": label,
                        "outcome": h.outcome,
                        "estimator": h.estimator,
                        "assumed_effect": float(value),
                        "effect_origin": truth.origin,
                        "effect_pilot_ci": ci,
                        "true_model": truth.describe(),
                        "alpha": h.alpha,
                        "alternative": h.alternative,
                        "adjust_method": h.adjust_method,
                        "multiplicity_family": h.multiplicity_family,
                        "conf_level": h.conf_level,
                        "effect_of_interest": h.effect_of_interest,
                        "reps": self.settings.get("reps"),
                        "seed": self.settings.get("seed"),
                    }
                )
        return pd.DataFrame(rows)

    def methods_text(self) -> str:
        """A paragraph for a grant's statistical section: what was simulated, how analysed."""
        s = self.settings
        a = self.assumptions()
        hyps = "; ".join(
            f"{r.hypothesis_id} ({r.outcome}, {r.contrast}: assumed effect {r.assumed_effect:.3g}"
            f"{' on the log scale' if self.design.outcomes[r.outcome].family != 'gaussian' else ''}"
            f"; true model {r.true_model}; analysed by "
            f"{ESTIMATOR_LABELS.get(str(r.estimator), str(r.estimator))}"
            f", {r.alternative} test at alpha {r.alpha:g}, {r.adjust_method} within the "
            f"{r.multiplicity_family} family)"
            for r in a.itertuples()
        )
        origin = sorted(set(a["effect_origin"]))
        lay = self.design.layout
        return (
            f"Power was estimated by simulation (studykit {_version()}). Each simulated study "
            f"followed the {lay.design} layout ({', '.join(lay.treatment_levels)}; "
            f"{lay.time} {', '.join(lay.time_levels)}), with outcomes drawn from linear or "
            "log-linear mixed models whose fixed effects, random-effect SDs and residual SD "
            f"(or dispersion) were {' / '.join(origin)} (table of assumptions). Each of "
            f"{s.get('reps')} replicates per sample size (n = "
            f"{', '.join(map(str, s.get('n', [])))}; seed {s.get('seed')}; common random "
            "numbers across sample sizes) was analysed as pre-registered: each hypothesis' mixed "
            "model was refitted (REML; Satterthwaite degrees of freedom for linear models, "
            "Wald z tests for counts), its contrast tested in the stated "
            f"direction and the p-values adjusted within each multiplicity family. Hypotheses: "
            f"{hyps}. Power is the share of replicates with a 'supported' verdict (adjusted "
            "p-value below alpha); its Monte Carlo standard error is sqrt(p(1-p)/replicates) "
            f"and intervals are {CONF_METHOD}. The probability of each verdict (supported, "
            "effect ruled out, inconclusive) and of the family's joint outcomes is reported "
            "beside it. All data were simulated."
        )

    def plot(self, *, ax: Any = None, target: float | None = 0.8) -> Any:
        """Power curve (power against n, one line per hypothesis x contrast); a Figure."""
        return plot_power_curve(self, ax=ax, target=target)

    def to_markdown(self, *, digits: int = 3) -> str:
        """Power, verdict probabilities, family outcomes and the assumptions, as Markdown.

        SIMULATED: labelled in the heading line.
        """
        cols = ["hypothesis_id", "contrast", "n", "reps", "power", "mc_se", "conf_low", "conf_high",
                "p_supported", "p_ruled_out", "p_inconclusive", "alpha", "adjust_method",
                "n_failed"]  # fmt: skip
        head = (
            f"Power by simulation (SIMULATED data; seed {self.settings.get('seed')}, "
            f"{CONF_METHOD} intervals, {self.settings.get('reps')} replicates per n)\n\n"
        )
        out = head + self.table[cols].round(digits).to_markdown(index=False) + "\n"
        if len(self.families):
            fcols = ["multiplicity_family", "n", "hypotheses", "adjust_method", "alpha",
                     "p_all_supported", "p_any_supported", "p_none_supported",
                     "p_all_ruled_out"]  # fmt: skip
            out += (
                "\nFamily outcomes per replicate (after multiplicity):\n\n"
                + self.families[fcols].round(digits).to_markdown(index=False)
                + "\n"
            )
        a = self.assumptions()
        acols = ["hypothesis_id", "contrast", "assumed_effect", "effect_origin",
                 "effect_pilot_ci", "true_model", "alternative", "alpha", "adjust_method",
                 "effect_of_interest"]  # fmt: skip
        out += (
            "\nAssumptions simulated:\n\n"
            + a[acols].round(digits).to_markdown(index=False)
            + "\n\nMethods. "
            + self.methods_text()
            + "\n"
        )
        return out

    def write(self, directory: str | os.PathLike[str], *, stem: str = "power") -> dict[str, str]:
        """Write the tables, replicates, assumptions, methods text and the power curve.

        Files: ``power.csv`` (one row per hypothesis x contrast x n, with the assumptions in
        columns), ``power_families.csv``, ``power_assumptions.csv``, ``power.md`` (all of
        it plus the methods paragraph), ``power_replicates.csv.gz``, ``power.png``,
        ``power.svg`` (the assumptions in the caption).
        """
        import matplotlib.pyplot as plt

        out = os.fspath(directory)
        os.makedirs(out, exist_ok=True)
        paths = {
            "table_csv": os.path.join(out, f"{stem}.csv"),
            "families_csv": os.path.join(out, f"{stem}_families.csv"),
            "assumptions_csv": os.path.join(out, f"{stem}_assumptions.csv"),
            "table_md": os.path.join(out, f"{stem}.md"),
            "replicates_csv": os.path.join(out, f"{stem}_replicates.csv.gz"),
            "figure_png": os.path.join(out, f"{stem}.png"),
            "figure_svg": os.path.join(out, f"{stem}.svg"),
        }
        a = self.assumptions()
        keys = ["hypothesis_id", "contrast"]
        extra = ["assumed_effect", "effect_origin", "effect_pilot_ci", "true_model",
                 "effect_of_interest"]  # fmt: skip
        self.table.merge(a[keys + extra], on=keys, how="left").to_csv(
            paths["table_csv"], index=False
        )
        self.families.to_csv(paths["families_csv"], index=False)
        a.to_csv(paths["assumptions_csv"], index=False)
        with open(paths["table_md"], "w", encoding="utf-8") as fh:
            fh.write(self.to_markdown())
        self.replicates.to_csv(paths["replicates_csv"], index=False)
        fig = self.plot()
        fig.savefig(paths["figure_png"], dpi=150, bbox_inches="tight")
        fig.savefig(
            paths["figure_svg"], bbox_inches="tight", metadata={"Description": self.methods_text()}
        )
        plt.close(fig)
        return paths


def with_estimators(design: PowerDesign, estimators: Mapping[str, str]) -> PowerDesign:
    """``design`` with some hypotheses analysed by another estimator (``{"H1": "clda"}``).

    The power of a pre-specified sensitivity analysis, or of an analysis a protocol amendment
    considers. Hypotheses need a crossover estimand (from a protocol DiD hypothesis).

    Examples
    --------
    >>> from studykit.power.spec import TRIAL_SIM_EXAMPLE, design_from_dict
    >>> with_estimators(design_from_dict(TRIAL_SIM_EXAMPLE), {"H9": "clda"})
    Traceback (most recent call last):
    ...
    studykit.errors.InputError: --estimator: unknown hypothesis id(s) ['H9']; simulated: ['H1'].
    """
    known = {h.id for h in design.hypotheses}
    unknown = sorted(set(estimators) - known)
    if unknown:
        raise InputError(
            f"--estimator: unknown hypothesis id(s) {unknown}; simulated: {sorted(known)}."
        )
    bad = sorted({e for e in estimators.values() if e not in ESTIMATORS})
    if bad:
        raise InputError(f"--estimator: unknown estimator(s) {bad}; expected {list(ESTIMATORS)}.")
    out = []
    for h in design.hypotheses:
        e = estimators.get(h.id)
        if e is None or e == h.estimator:
            out.append(h)
            continue
        if h.estimand is None:
            raise InputError(
                f"--estimator: hypothesis {h.id} has no crossover estimand (treatment, time axis, "
                "baseline); estimators other than 'did' need a protocol DiD hypothesis."
            )
        if e == "ancova" and h.family != "gaussian":
            raise InputError(f"--estimator: the ANCOVA is for Gaussian outcomes, not {h.id}.")
        out.append(replace(h, estimator=e))
    return replace(design, hypotheses=tuple(out))


def _version() -> str:
    return str(__version__)


def true_contrasts(design: PowerDesign, h: Any, n: int = 4) -> np.ndarray:
    """The assumed (true) value of each of ``h``'s contrasts: its weights on the true model.

    Examples
    --------
    >>> from studykit.power.spec import TRIAL_SIM_EXAMPLE, design_from_dict
    >>> d = design_from_dict(TRIAL_SIM_EXAMPLE)
    >>> true_contrasts(d, d.hypotheses[0]).tolist()
    [10.0]
    """
    truth = design.outcomes[h.outcome]
    template = design.layout.template(n)
    d = build_design(template, list(truth.fixed), levels=dict(h.levels))
    beta = resolve_coefficients(d, truth.coefficients, f"outcomes.{truth.name}")
    out = []
    for label, weights in h.contrasts:
        missing = [c for c in weights if c not in d.columns]
        if missing:
            raise InputError(
                f"Hypothesis {h.id}, contrast {label!r}: the true model of {h.outcome} lacks "
                f"column(s) {missing}; give it the analysis' terms."
            )
        out.append(sum(w * beta[d.columns.index(c)] for c, w in weights.items()))
    return np.asarray(out, float)


# --------------------------------------------------------------------------- entry point
def _parse_ns(n: int | Sequence[int]) -> list[int]:
    ns = [n] if isinstance(n, (int, np.integer)) else list(n)
    bad = [x for x in ns if not isinstance(x, (int, np.integer)) or x < 4]
    if not ns or bad:
        raise InputError(f"Sample sizes must be integers >= 4 (participants); got {bad or ns}.")
    if len(set(ns)) != len(ns):
        raise InputError(f"Sample sizes are repeated: {ns}.")
    return [int(x) for x in ns]


def power_analysis(
    protocol_or_design: Any,
    *,
    n: int | Sequence[int] = (20, 30, 40, 60),
    reps: int = 1000,
    effects: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    pilot: Any = None,
    seed: int = DEFAULT_SEED,
    n_jobs: int = 1,
    scheduler: Any = None,
    progress: bool = True,
    engine: str = "studykit",
    hypotheses: Sequence[str] | None = None,
    chunk_size: int | None = None,
    estimators: Mapping[str, str] | None = None,
) -> PowerResult:
    """Power of each pre-specified test at each sample size, by simulation and refitting.

    For every sample size ``n`` and replicate, data are simulated from the design's assumed
    truth (or a model fitted to pilot data), every hypothesis' model is refitted exactly as the
    analysis will fit it, its contrasts are tested (Satterthwaite t for linear mixed models, z
    for count models, one- or two-sided as pre-specified), p-values are adjusted within each
    multiplicity family, and a rejection is an adjusted p-value below the hypothesis' alpha.

    Parameters
    ----------
    protocol_or_design : PowerDesign, mapping, path or Protocol
        A power design (see :func:`~studykit.power.spec.design_from_dict`), a YAML file with
        one, a protocol YAML file, or a loaded :class:`studykit.protocol.Protocol` (then
        ``effects`` or ``pilot`` supply what to simulate).
    n : int or sequence of int, default (20, 30, 40, 60)
        Total numbers of participants.
    reps : int, default 1000
        Replicates per sample size.
    effects : mapping or path, optional
        Assumed effects. With a protocol: ``layout`` and ``outcomes`` (see
        :func:`~studykit.power.spec.design_from_protocol`). With a design: overrides of
        ``outcomes.<name>`` fields (e.g. a smaller ``coefficients`` entry).
    pilot : pandas.DataFrame or path, optional
        Pilot data: the design's model is fitted to them and the fitted fixed effects and
        variance components replace the assumed ones (as simr's ``extend``); ``effects``
        still override coefficients afterwards (e.g. the smallest effect of interest).
    seed : int, default 20261125
        Replicate ``rep`` at size ``n`` uses ``SeedSequence(seed, spawn_key=(n, rep))``.
    n_jobs : int, default 1
        Local worker processes (joblib; ``-1`` = all cores). Results do not depend on it.
    scheduler : str or distributed.Client, optional
        A Dask scheduler address (``"tcp://host:8786"``) or client: run the replicates on
        that cluster instead of locally.
    progress : bool, default True
        Progress bar on stderr.
    engine : {"studykit"}, default "studykit"
        Per-replicate analysis (see :mod:`studykit.power.engine`).
    hypotheses : sequence of str, optional
        Only these hypothesis ids.
    chunk_size : int, optional
        Replicates per task (default: about four tasks per worker per sample size, at most 100).

    Returns
    -------
    PowerResult

    Examples
    --------
    >>> from studykit.power.spec import TRIAL_SIM_EXAMPLE, design_from_dict
    >>> res = power_analysis(TRIAL_SIM_EXAMPLE, n=[40], reps=50, seed=1, progress=False)
    >>> res.table[["hypothesis_id", "n", "reps", "power"]].to_dict("records")
    [{'hypothesis_id': 'H1', 'n': 40, 'reps': 50, 'power': 0.48}]

    Notes
    -----
    Monte Carlo standard error ``sqrt(p (1 - p) / reps)`` (binomial); 95% intervals are
    Clopper-Pearson exact. Outcomes are simulated independently of each other, so
    multiplicity adjustments see independent tests (Holm/Bonferroni control the error rate
    under any dependence; power of correlated outcomes may differ). Simulated data are
    labelled ``simulated = True`` in the table.

    References: Green & MacLeod (2016), simr: an R package for power analysis of generalized
    linear mixed models by simulation, Methods Ecol Evol 7:493-498; Kuznetsova, Brockhoff &
    Christensen (2017), lmerTest, J Stat Softw 82(13).
    """
    if engine not in ENGINES:
        raise InputError(f"Invalid engine {engine!r}. Expected one of: {', '.join(ENGINES)}.")
    ns = _parse_ns(n)
    if not isinstance(reps, (int, np.integer)) or reps < 1:
        raise InputError(f"reps must be a positive integer; got {reps!r}.")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer; got {seed!r}.")
    if pilot is not None:
        design = design_from_pilot(
            pilot,
            protocol_or_design,
            effects=effects,
            hypotheses=hypotheses,
        )
    else:
        design = as_design(protocol_or_design, effects, hypotheses)
    if estimators:
        design = with_estimators(design, estimators)
    workers = (os.cpu_count() or 1) if n_jobs == -1 else int(n_jobs)
    if workers < 1:
        raise InputError(f"n_jobs must be >= 1 or -1 (all cores); got {n_jobs}.")
    if chunk_size is None:
        par = 1 if scheduler is None and workers == 1 else max(workers, 2)
        chunk_size = max(1, min(100, math.ceil(reps / (4 * par))))
    tasks = _chunks(ns, int(reps), int(chunk_size))
    bar = _Progress(len(ns) * int(reps), enabled=progress)
    t0 = time.perf_counter()
    results = list(
        _execute(tasks, design, int(seed), engine, n_jobs=workers, scheduler=scheduler, bar=bar)
    )
    elapsed = time.perf_counter() - t0
    table, replicates, families = _summarise(design, ns, int(reps), results, int(seed))
    settings = {
        "seed": int(seed),
        "reps": int(reps),
        "n": ns,
        "engine": engine,
        "n_jobs": workers,
        "scheduler": None if scheduler is None else str(getattr(scheduler, "scheduler", scheduler)),
        "chunk_size": int(chunk_size),
        "elapsed_s": elapsed,
        "seconds_per_replicate": elapsed / (len(ns) * int(reps)),
        "source": design.source,
        "pilot": pilot is not None,
        "conf_method": CONF_METHOD,
        "simulated": True,
    }
    logger.info("power: %d replicates in %.2f s", len(ns) * int(reps), elapsed)
    return PowerResult(
        table=table, replicates=replicates, design=design, settings=settings, families=families
    )


def _summarise(
    design: PowerDesign, ns: list[int], reps: int, results: list[dict[str, Any]], seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rows_meta = [(h, label) for h in design.hypotheses for label, _ in h.contrasts]
    K = len(rows_meta)
    by_n: dict[int, list[dict[str, Any]]] = {n: [] for n in ns}
    for r in results:
        by_n[r["n"]].append(r)
    table_rows = []
    rep_frames = []
    fam_rows: list[dict[str, Any]] = []
    for n in ns:
        chunks = sorted(by_n[n], key=lambda r: r["start"])
        stack = {
            k: np.vstack([c[k] for c in chunks])
            for k in ("estimate", "std_error", "df", "p_value", "failed", "singular")
        }
        engines = chunks[0]["engines"]
        p_adj = np.full_like(stack["p_value"], np.nan)
        families: dict[str, list[int]] = {}
        for j, (h, _) in enumerate(rows_meta):
            families.setdefault(h.multiplicity_family, []).append(j)
        for _fam, cols in families.items():
            # as studykit.analysis: fixed sequence in the family's order; a missing p-value
            # (failed fit) enters the adjustment as 1 and stays missing
            method = rows_meta[cols[0]][0].adjust_method
            if method == "fixed-sequence":
                order = rows_meta[cols[0]][0].family_order
                rank = {hid: i for i, hid in enumerate(order)}
                cols = sorted(cols, key=lambda j: (rank.get(rows_meta[j][0].id, len(rank)), j))
            raw = stack["p_value"][:, cols]
            if method == "none":
                p_adj[:, cols] = raw
            else:
                adj = adjust_pvalues_matrix(np.where(np.isnan(raw), 1.0, raw), method)
                p_adj[:, cols] = np.where(np.isnan(raw), np.nan, adj)
        alpha = np.array([h.alpha for h, _ in rows_meta])
        rejected = np.where(np.isnan(p_adj), False, p_adj < alpha)
        x = rejected.sum(axis=0)
        power = x / reps
        lo, hi = binomial_ci(x, np.full(K, reps))
        verdicts = np.column_stack(
            [
                replicate_verdicts(
                    h,
                    p_adj[:, j],
                    stack["estimate"][:, j],
                    stack["std_error"][:, j],
                    stack["df"][:, j],
                    m=len(families[h.multiplicity_family]) if h.adjust_method in P_ADJUSTING else 1,
                )
                for j, (h, _) in enumerate(rows_meta)
            ]
        )
        supported = verdicts == "supported"
        inconclusive = verdicts == "inconclusive"
        ruled_out = ~supported & ~inconclusive
        for fam, cols in families.items():
            fam_rows.append(
                {
                    "multiplicity_family": fam,
                    "n": n,
                    "reps": reps,
                    "hypotheses": " ".join(f"{rows_meta[j][0].id}:{rows_meta[j][1]}" for j in cols),
                    "adjust_method": rows_meta[cols[0]][0].adjust_method,
                    "alpha": rows_meta[cols[0]][0].alpha,
                    "p_all_supported": float(supported[:, cols].all(axis=1).mean()),
                    "p_any_supported": float(supported[:, cols].any(axis=1).mean()),
                    "p_none_supported": float((~supported[:, cols]).all(axis=1).mean()),
                    "p_all_ruled_out": float(ruled_out[:, cols].all(axis=1).mean()),
                    "seed": seed,
                    "simulated": True,
                }
            )
        for j, (h, label) in enumerate(rows_meta):
            table_rows.append(
                {
                    "_order": j,
                    "hypothesis_id": h.id,
                    "contrast": label,
                    "estimator": h.estimator,
                    "outcome": h.outcome,
                    "family": h.family,
                    "alternative": h.alternative,
                    "n": n,
                    "reps": reps,
                    "rejections": int(x[j]),
                    "power": float(power[j]),
                    "mc_se": math.sqrt(power[j] * (1 - power[j]) / reps),
                    "conf_low": float(lo[j]),
                    "conf_high": float(hi[j]),
                    "conf_method": CONF_METHOD,
                    "alpha": h.alpha,
                    "adjust_method": h.adjust_method,
                    "multiplicity_family": h.multiplicity_family,
                    "p_supported": float(supported[:, j].mean()),
                    "p_ruled_out": float(ruled_out[:, j].mean()),
                    "p_inconclusive": float(inconclusive[:, j].mean()),
                    "n_failed": int(stack["failed"][:, j].sum()),
                    "n_singular": int(stack["singular"][:, j].sum()),
                    "mean_estimate": float(np.nanmean(stack["estimate"][:, j]))
                    if (~stack["failed"][:, j]).any()
                    else np.nan,
                    "mean_std_error": float(np.nanmean(stack["std_error"][:, j]))
                    if (~stack["failed"][:, j]).any()
                    else np.nan,
                    "median_df": float(np.nanmedian(stack["df"][:, j]))
                    if (~stack["failed"][:, j]).any()
                    else np.nan,
                    "engine": engines[j],
                    "df_method": h.df_method if h.family == "gaussian" else "z (asymptotic)",
                    "seed": seed,
                    "simulated": True,
                }
            )
        for j, (h, label) in enumerate(rows_meta):
            rep_frames.append(
                pd.DataFrame(
                    {
                        "n": n,
                        "rep": np.arange(reps),
                        "hypothesis_id": h.id,
                        "contrast": label,
                        "estimator": h.estimator,
                        "estimate": stack["estimate"][:, j],
                        "std_error": stack["std_error"][:, j],
                        "df": stack["df"][:, j],
                        "p_value": stack["p_value"][:, j],
                        "p_adjusted": p_adj[:, j],
                        "rejected": rejected[:, j],
                        "verdict": verdicts[:, j],
                        "failed": stack["failed"][:, j],
                        "singular": stack["singular"][:, j],
                    }
                )
            )
    table = pd.DataFrame(table_rows).sort_values(["_order", "n"], kind="stable")
    table = table.drop(columns="_order").reset_index(drop=True)
    fam_table = pd.DataFrame(fam_rows).sort_values(["multiplicity_family", "n"], kind="stable")
    return table, pd.concat(rep_frames, ignore_index=True), fam_table.reset_index(drop=True)
