"""The smallest sample size reaching a target power, per hypothesis and for the family.

Power at each candidate ``n`` comes from :func:`~studykit.power.core.power_analysis` with one
seed: common random numbers across ``n`` (the first ``n`` simulated participants are the same
people at every size), so power estimates at neighbouring sizes differ by the added
participants, not by fresh noise, and the search is stable. Search: sizes double from
``n_start`` until every target is reached (or ``n_max``), then bisection on multiples of
``step`` between the largest size below and the smallest size at or above the target.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from studykit.errors import InputError
from studykit.power.core import (
    CONF_METHOD,
    DEFAULT_SEED,
    PowerResult,
    binomial_ci,
    power_analysis,
)

__all__ = ["SampleSizeResult", "find_sample_size"]


@dataclass
class SampleSizeResult:
    """The outcome of :func:`find_sample_size`.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per target: ``target`` (``H1: <contrast>`` or ``family <name>: all
        supported`` / ``any supported``), ``target_power``, ``n_required`` (NaN when not
        reached by ``n_max``), ``power`` at it with ``mc_se``, ``conf_low``, ``conf_high``,
        ``n_below`` and ``power_below`` (the next smaller size evaluated), ``reps``, ``seed``.
    power : PowerResult
        Every size evaluated, as one power result (curve, verdicts, assumptions).
    """

    table: pd.DataFrame
    power: PowerResult
    settings: dict[str, Any] = field(default_factory=dict)

    def to_markdown(self, *, digits: int = 3) -> str:
        """The sample sizes, then the power result (curve table, assumptions, methods)."""
        s = self.settings
        head = (
            f"Smallest n reaching power {s.get('target_power')} (SIMULATED data; seed "
            f"{s.get('seed')}, {s.get('reps')} replicates per n, common random numbers across "
            f"n; sizes in steps of {s.get('step')}; {CONF_METHOD} intervals)\n\n"
        )
        return (
            head
            + self.table.round(digits).to_markdown(index=False)
            + "\n\n"
            + self.power.to_markdown(digits=digits)
        )

    def write(self, directory: str, *, stem: str = "power") -> dict[str, str]:
        """Write ``sample_size.csv`` / ``.md`` beside the power files (:meth:`PowerResult.write`)."""
        import os

        paths = self.power.write(directory, stem=stem)
        paths["sample_size_csv"] = os.path.join(directory, "sample_size.csv")
        paths["sample_size_md"] = os.path.join(directory, "sample_size.md")
        self.table.to_csv(paths["sample_size_csv"], index=False)
        with open(paths["sample_size_md"], "w", encoding="utf-8") as fh:
            fh.write(self.to_markdown())
        return paths


def _targets(res: PowerResult) -> dict[str, pd.Series]:
    """Target name -> power by n (each hypothesis x contrast, each family all/any)."""
    out: dict[str, pd.Series] = {}
    conf = res.table[res.table["multiplicity_family"] != "exploratory"]
    for (hid, contrast), g in conf.groupby(["hypothesis_id", "contrast"], sort=False):
        out[f"{hid}: {contrast}"] = g.set_index("n")["power"]
    fam = res.families
    if len(fam):
        for name, g in fam.groupby("multiplicity_family", sort=False):
            if name == "exploratory" or g["hypotheses"].iloc[0].count(":") < 2:
                continue
            out[f"family {name}: all supported"] = g.set_index("n")["p_all_supported"]
            out[f"family {name}: any supported"] = g.set_index("n")["p_any_supported"]
    return out


def _merge(results: Sequence[PowerResult]) -> PowerResult:
    ns = sorted(int(n) for r in results for n in r.settings["n"])
    first = results[0]
    settings = {**first.settings, "n": ns}
    settings["elapsed_s"] = sum(r.settings.get("elapsed_s", 0.0) for r in results)
    settings["seconds_per_replicate"] = settings["elapsed_s"] / max(
        1, len(ns) * first.settings["reps"]
    )

    def cat(frames: list[pd.DataFrame], keys: list[str]) -> pd.DataFrame:
        df = pd.concat(frames, ignore_index=True)
        return df.sort_values(keys, kind="stable").reset_index(drop=True)

    order = {h.id: i for i, h in enumerate(first.design.hypotheses)}
    table = pd.concat([r.table for r in results], ignore_index=True)
    table = table.assign(_o=table["hypothesis_id"].map(order)).sort_values(
        ["_o", "contrast", "n"], kind="stable"
    )
    return PowerResult(
        table=table.drop(columns="_o").reset_index(drop=True),
        replicates=cat([r.replicates for r in results], ["n", "hypothesis_id", "rep"]),
        design=first.design,
        settings=settings,
        families=cat([r.families for r in results], ["multiplicity_family", "n"]),
    )


def find_sample_size(
    protocol_or_design: Any,
    effects: Any = None,
    *,
    target_power: float = 0.8,
    reps: int = 500,
    seed: int = DEFAULT_SEED,
    n_start: int = 12,
    n_max: int = 400,
    step: int = 2,
    hypotheses: Sequence[str] | None = None,
    pilot: Any = None,
    n_jobs: int = 1,
    progress: bool = False,
    estimators: Mapping[str, str] | None = None,
) -> SampleSizeResult:
    """Smallest ``n`` (a multiple of ``step``) whose simulated power reaches ``target_power``.

    Parameters
    ----------
    protocol_or_design, effects, hypotheses, pilot, n_jobs, estimators
        As :func:`~studykit.power.core.power_analysis`.
    target_power : float
        E.g. 0.8.
    reps : int
        Replicates per evaluated size (the Monte Carlo SE of a power near 0.8 is
        ``sqrt(0.16 / reps)``: 0.018 at 500).
    seed : int
    n_start, n_max, step : int
        First size, largest size tried, and the size grid (2: equal crossover sequences).

    Returns
    -------
    SampleSizeResult

    Examples
    --------
    >>> from studykit.power.spec import TRIAL_SIM_EXAMPLE
    >>> r = find_sample_size(TRIAL_SIM_EXAMPLE, target_power=0.5, reps=40, seed=1, n_start=20)
    >>> int(r.table["n_required"].iloc[0]) % 2
    0

    Notes
    -----
    Targets: every confirmatory hypothesis x contrast (power after the protocol's
    multiplicity adjustment) and, for a family of two or more tests, the probability that all
    of them are supported and that at least one is. The found ``n`` is where the *estimated*
    power first reaches the target on the grid; read it with the Monte Carlo interval shown.
    """
    if not 0 < target_power < 1:
        raise InputError(f"target power must be between 0 and 1; got {target_power!r}.")
    if step < 1 or n_start < 2 * step or n_max < n_start:
        raise InputError(
            f"Invalid size grid: n_start {n_start}, n_max {n_max}, step {step} (need "
            "n_start >= 2 x step and n_max >= n_start)."
        )
    n_start = int(math.ceil(n_start / step) * step)
    cache: dict[int, PowerResult] = {}

    def run(n: int) -> PowerResult:
        if n not in cache:
            cache[n] = power_analysis(
                protocol_or_design,
                n=[n],
                reps=reps,
                effects=effects,
                pilot=pilot,
                seed=seed,
                n_jobs=n_jobs,
                hypotheses=hypotheses,
                progress=progress,
                estimators=estimators,
            )
        return cache[n]

    def curves() -> dict[str, pd.Series]:
        return _targets(_merge([cache[k] for k in sorted(cache)]))

    n = n_start
    while True:
        run(n)
        if all((c >= target_power).any() for c in curves().values()) or n >= n_max:
            break
        n = min(n * 2, int(math.floor(n_max / step) * step))
    for _name in list(curves()):
        while True:
            c = curves()[_name].sort_index()
            ok = c[c >= target_power]
            if ok.empty:
                break
            hi = int(ok.index.min())
            below = c[c.index < hi]
            lo = int(below.index.max()) if len(below) else None
            if lo is None or hi - lo <= step:
                break
            mid = int(round((lo + hi) / 2 / step) * step)
            if mid in (lo, hi):
                break
            run(mid)
    merged = _merge([cache[k] for k in sorted(cache)])
    rows = []
    for name, c in _targets(merged).items():
        c = c.sort_index()
        ok = c[c >= target_power]
        n_req = int(ok.index.min()) if len(ok) else None
        p = float(c.loc[n_req]) if n_req is not None else float(c.iloc[-1])
        x = np.array([round(p * reps)])
        lo_ci, hi_ci = binomial_ci(x, np.array([reps]))
        below = c[c.index < (n_req if n_req is not None else math.inf)]
        rows.append(
            {
                "target": name,
                "target_power": target_power,
                "n_required": n_req if n_req is not None else math.nan,
                "reached": n_req is not None,
                "power": p,
                "mc_se": math.sqrt(p * (1 - p) / reps),
                "conf_low": float(lo_ci[0]),
                "conf_high": float(hi_ci[0]),
                "n_below": int(below.index.max()) if len(below) else math.nan,
                "power_below": float(below.iloc[-1]) if len(below) else math.nan,
                "n_max": n_max if n_req is None else math.nan,
                "reps": reps,
                "seed": seed,
                "simulated": True,
            }
        )
    settings = {
        "target_power": target_power,
        "reps": reps,
        "seed": seed,
        "step": step,
        "n_evaluated": sorted(cache),
        "n_max": n_max,
        "simulated": True,
    }
    return SampleSizeResult(table=pd.DataFrame(rows), power=merged, settings=settings)
