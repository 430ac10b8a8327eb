"""Benchmark studykit's linear mixed-model engine against statsmodels and lme4 (printed figures).

Run from the repository root::

    python benchmarks/bench_lmm.py            # everything (statsmodels takes ~10-20 s)
    python benchmarks/bench_lmm.py --quick    # skip statsmodels and the 20,000-participant fits

Prints, on the same data (tests/data/lme4/large/: 2000 participants x 3 nights, SIMULATED):
studykit's fit and fit + Satterthwaite df for every fixed effect (median of repeated runs),
statsmodels MixedLM's fit, and lme4 / lmerTest's wall-clock medians from
tests/data/lme4/large/r_timing.csv (measured on the same 2-core machine; see
tests/data/lme4/PROVENANCE.md). Then the n=40 trial (fit + Satterthwaite, and 200 simulate +
refit replicates as in a power analysis), and peak memory for 2,000 / 20,000 participants
(SIMULATED) to show memory grows linearly. Figures only: no timed assertions.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from studykit.models.lmm import fit_lmm  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _same_run_r import r_median_seconds  # noqa: E402

DATA = ROOT / "tests" / "data" / "lme4"
LEVELS = {"arm": ["placebo", "ketamine"], "night": ["baseline", "post1", "post2"]}
MODELS = {
    "large_ri": (["arm", "night", "arm:night"], [("id", ["1"])], "y ~ arm * night", None),
    "large_rs": (
        ["arm", "night_index", "arm:night_index"],
        [("id", ["1", "night_index"])],
        "y ~ arm * night_index",
        "~night_index",
    ),
}


def timings(fun, runs: int) -> tuple[float, float]:
    """(median, min) wall-clock seconds over ``runs`` calls."""
    times = []
    for _ in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        fun()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def r_figures() -> pd.DataFrame:
    return pd.read_csv(DATA / "large" / "r_timing.csv")


def r_median(r: pd.DataFrame, startswith: str) -> float:
    rows = r[r["task"].str.startswith(startswith)]
    return float(rows["median_s"].iloc[0]) if len(rows) else float("nan")


def statsmodels_fit(data: pd.DataFrame, formula: str, re_formula: str | None) -> float:
    import statsmodels.formula.api as smf

    d = data.assign(
        arm=pd.Categorical(data["arm"], LEVELS["arm"]),
        night=pd.Categorical(data["night"], LEVELS["night"]),
    )
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        smf.mixedlm(formula, d, groups="id", re_formula=re_formula).fit(reml=True)
    return time.perf_counter() - t0


def simulate_cohort(n_participants: int, *, slope: bool, seed: int = 1) -> pd.DataFrame:
    """SIMULATED cohort: n participants x 3 nights, as large_ri / large_rs."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(n_participants), 3)
    night_index = np.tile([0, 1, 2], n_participants)
    arm = np.repeat(rng.permutation(np.arange(n_participants) % 2), 3)
    u = rng.normal(0, 15, n_participants)[ids]
    s = rng.normal(0, 4, n_participants)[ids] if slope else 0.0
    y = 85 + 2 * night_index + 5 * arm * night_index + u + s * night_index
    y = y + rng.normal(0, 12, len(ids))
    return pd.DataFrame(
        {
            "id": [f"S{i:05d}" for i in ids],
            "night": np.array(LEVELS["night"])[night_index],
            "arm": np.array(LEVELS["arm"])[arm],
            "night_index": night_index,
            "y": y,
        }
    )


def simulate_crossed(n_id: int = 300, n_scorer: int = 40, seed: int = 2) -> pd.DataFrame:
    """SIMULATED inter-scorer study: every participant scored by every scorer."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(n_id), n_scorer)
    sc = np.tile(np.arange(n_scorer), n_id)
    arm = np.where(ids % 2 == 0, "placebo", "ketamine")
    y = (
        50
        + 2 * (arm == "ketamine")
        + rng.normal(0, 4, n_id)[ids]
        + rng.normal(0, 2, n_scorer)[sc]
        + rng.normal(0, 3, ids.size)
    )
    return pd.DataFrame(
        {"id": [f"P{i:04d}" for i in ids], "scorer": [f"S{s:02d}" for s in sc], "arm": arm, "y": y}
    )


def targets(runs: int, quick: bool) -> None:
    """The #15 targets, studykit and lme4 timed in this same run (R via Rscript)."""
    print("\n#15 targets: studykit vs lme4::lmer (REML fit), both timed in this run")
    print(f"load average now: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    ham = pd.read_csv(DATA / "crossed" / "ham.csv", dtype={"Consumer": str, "Product": str})
    ham = ham.astype({"Information": str, "Gender": str}).rename(
        columns={"Informed.liking": "liking"}
    )
    large_ri = pd.read_csv(DATA / "large" / "large_ri.csv")
    nested = simulate_cohort(20_000 if quick else 100_000, slope=False, seed=3)
    hl = {"Information": ["1", "2"], "Gender": ["1", "2"]}
    cases = [
        (
            "crossed 300 x 40, (1|id) + (1|scorer)",
            simulate_crossed(),
            "y",
            ["arm"],
            [("id", ["1"]), ("scorer", ["1"])],
            {"arm": ["placebo", "ketamine"]},
            "lmer(y ~ arm + (1 | id) + (1 | scorer), d)",
            ["id", "scorer"],
        ),
        (
            "ham (1|Consumer) + (1|Product) + (1|Consumer:Product)",
            ham,
            "liking",
            ["Information", "Gender", "Information:Gender"],
            [("Consumer", ["1"]), ("Product", ["1"]), ("Consumer:Product", ["1"])],
            hl,
            "lmer(liking ~ Information * Gender + (1 | Consumer) + (1 | Product) + "
            "(1 | Consumer:Product), d)",
            ["Consumer", "Product", "Information", "Gender"],
        ),
        (
            f"nested {len(nested) // 3:,} x 3, (1|id)",
            nested,
            "y",
            ["arm", "night", "arm:night"],
            [("id", ["1"])],
            LEVELS,
            "lmer(y ~ arm * night + (1 | id), d)",
            ["id"],
        ),
        (
            "random intercept 2,000 x 3 (large_ri)",
            large_ri,
            "y",
            ["arm", "night", "arm:night"],
            [("id", ["1"])],
            LEVELS,
            "lmer(y ~ arm * night + (1 | id), d)",
            ["id"],
        ),
    ]
    rows = []
    for label, data, y, fixed, random, levels, r_call, factors in cases:
        fit_lmm(data, y, fixed, random=random, levels=levels)  # warm-up

        def one(data=data, y=y, fixed=fixed, random=random, levels=levels):
            return fit_lmm(data, y, fixed, random=random, levels=levels)

        med, mn = timings(one, runs)
        cpu = []
        for _ in range(runs):
            c0 = time.process_time()
            one()
            cpu.append(time.process_time() - c0)
        r_levels = {k: v for k, v in levels.items() if k in data.columns}
        r_sec = r_median_seconds(
            data.rename(columns={"liking": "liking"}),
            r_call,
            factors=[f for f in factors if f not in r_levels],
            levels=r_levels,
            runs=max(3, runs // 2),
        )
        r_med = r_sec if r_sec is not None else float("nan")
        rows.append((label, med, mn, statistics.median(cpu), r_med))
    tab = pd.DataFrame(
        rows,
        columns=["model", "studykit_median", "studykit_min", "studykit_cpu", "lme4_median"],
    )
    tab["ratio"] = tab["studykit_median"] / tab["lme4_median"]
    print(tab.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print("target: ratio <= 1 (studykit no slower than lme4); lme4 nan = Rscript not available")
    print("studykit_cpu: median CPU seconds of the same fit (steadier than wall time under load)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip statsmodels and 20,000 x 3")
    ap.add_argument("--runs", type=int, default=7, help="repeats for medians (default 7)")
    ap.add_argument("--targets-only", action="store_true", help="only the #15 targets vs lme4")
    args = ap.parse_args(argv)
    targets(args.runs, args.quick)
    if args.targets_only:
        return 0
    r = r_figures()
    print(f"studykit LMM benchmark (seconds; median and min of {args.runs} runs)")
    print(f"load average now: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
          "(a loaded machine inflates medians; min ~ an unloaded run)")  # fmt: skip
    print(f"machine: {sys.platform}, numpy {np.__version__}, pandas {pd.__version__}")
    rows = []
    for name, (fixed, random, formula, re_formula) in MODELS.items():
        data = pd.read_csv(DATA / "large" / f"{name}.csv")
        fit_lmm(data, "y", fixed, random=random, levels=LEVELS)  # warm-up (imports)

        def one_fit(data=data, fixed=fixed, random=random):
            return fit_lmm(data, "y", fixed, random=random, levels=LEVELS)

        t_fit, m_fit = timings(one_fit, args.runs)
        t_satt, m_satt = timings(lambda f=one_fit: f().coef_table(), args.runs)
        t_sm = float("nan") if args.quick else statsmodels_fit(data, formula, re_formula)
        key = "large_ri" if name == "large_ri" else "large_rs"
        r_fit = r_median(r, f"{key}: lme4::lmer REML fit")
        r_satt = r_median(r, f"{key}: lmerTest::lmer fit + summary")
        rows.append((name, "fit (REML)", t_fit, m_fit, t_sm, r_fit))
        rows.append((name, "fit + Satterthwaite (all)", t_satt, m_satt, float("nan"), r_satt))
    tab = pd.DataFrame(
        rows,
        columns=["data", "task", "studykit", "studykit_min", "statsmodels", "lme4/lmerTest"],
    )
    print(tab.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print("targets: fit <= 0.07 s (ri) / 0.14 s (rs); fit + Satterthwaite <= 0.18 s / 0.33 s")

    trial = pd.read_csv(DATA / "trial_sim.csv")
    fixed = ["arm", "night", "arm:night"]

    def trial_fit() -> None:
        fit_lmm(trial, "sws_min", fixed, random="id", levels=LEVELS).coef_table()

    t_trial, m_trial = timings(trial_fit, 200)
    print(
        f"\nn=40 trial (120 rows), fit + Satterthwaite table: median {t_trial * 1e3:.2f} ms, "
        f"min {m_trial * 1e3:.2f} ms (target <= 5 ms)"
    )
    base = fit_lmm(trial, "sws_min", fixed, random="id", levels=LEVELS)
    rng = np.random.default_rng(7)
    sd_id = float(base.varcorr()["sdcor"][0])
    mu = base.design.X @ base.beta
    codes = pd.factorize(trial["id"])[0]
    t0 = time.perf_counter()
    for _ in range(200):
        y = mu + rng.normal(0, sd_id, 40)[codes] + rng.normal(0, base.sigma, len(trial))
        sim = trial.assign(sws_min=y)  # SIMULATED outcome
        fit_lmm(sim, "sws_min", fixed, random="id", levels=LEVELS).coef_table()
    t_power = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(200):
        y = mu + rng.normal(0, sd_id, 40)[codes] + rng.normal(0, base.sigma, len(trial))
        base.refit(y).coef_table()  # SIMULATED outcome, same design (lme4's refit idiom)
    t_refit = time.perf_counter() - t0
    print(
        f"200 x (simulate n=40 + fit + Satterthwaite): studykit {t_power:.2f} s; "
        f"lmerTest {r_median(r, 'power: 200 x (simulate n=40'):.2f} s; "
        f"lme4 simulate+refit (no df) {r_median(r, 'power: 200 x (simulate() + lme4::refit'):.2f} s"
    )
    print(f"200 x (simulate + LMMResult.refit + Satterthwaite): studykit {t_refit:.2f} s")

    print("\nmemory (SIMULATED cohorts, random intercept and random slope, fit + Satterthwaite)")
    sizes = [2000, 20000] if not args.quick else [2000, 5000]
    for slope in (False, True):
        for n in sizes:
            d = simulate_cohort(n, slope=slope)
            fixed_c = ["arm", "night_index", "arm:night_index"] if slope else ["arm", "night",
                                                                                "arm:night"]  # fmt: skip
            rand = [("id", ["1", "night_index"])] if slope else [("id", ["1"])]
            gc.collect()
            tracemalloc.start()
            t0 = time.perf_counter()
            fit = fit_lmm(d, "y", fixed_c, random=rand, levels=LEVELS)
            fit.coef_table()
            dt = time.perf_counter() - t0
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            data_mb = d.memory_usage(deep=True).sum() / 2**20
            print(
                f"  {'slope' if slope else 'intercept':9s} {n:6d} x 3: {dt:6.3f} s, "
                f"peak {peak / 2**20:7.1f} MiB (data frame itself {data_mb:5.1f} MiB), "
                f"converged={fit.converged}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
