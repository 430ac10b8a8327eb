"""Speed of studykit's count mixed models (``fit_glmm``) against the R reference timings.

Run from the repository root::

    python benchmarks/bench_glmm.py            # 200 simulate + refit replicates
    python benchmarks/bench_glmm.py --replicates 50 --skip-large

Prints wall-clock figures; asserts nothing (the machine is shared and noisy).

R reference (``reference/lme4/large/r_timing.csv``, R 4.2.2 on a 2-core machine): 200 glmer
Poisson simulate + refit replicates of the 40-participant trial took 35.8 s, about 179 ms per
fit. All data here are SIMULATED.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _same_run_r import r_median_seconds

from studykit.models.glmm import fit_glmm

ROOT = Path(__file__).resolve().parents[1]
TRIAL = ROOT / "tests" / "data" / "glmm" / "trial_sim_awakenings.csv"
LEVELS = {"arm": ["placebo", "ketamine"], "night": ["baseline", "post1", "post2"]}
TERMS = ["arm", "night", "arm:night"]
R_SECONDS_200 = 35.8  # 200 glmer Poisson replicates (simulate + refit), r_timing.csv


def _median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def single_fits(trial: pd.DataFrame, repeat: int) -> None:
    print(f"Single fits of awakenings ~ arm*night + (1|id), n=120, 40 groups (median of {repeat})")
    for family, nagq in (("poisson", 1), ("poisson", 25), ("negbin", 1), ("negbin", 25)):
        sec = _median_time(
            lambda f=family, k=nagq: fit_glmm(
                trial, "awakenings", TERMS, group="id", family=f, levels=LEVELS, nagq=k
            ),
            repeat,
        )
        print(f"  {family:8s} nagq={nagq:<3d} {sec * 1e3:8.1f} ms")


def simulate_refit(trial: pd.DataFrame, replicates: int, seed: int) -> None:
    fit = fit_glmm(trial, "awakenings", TERMS, group="id", levels=LEVELS)
    rng = np.random.default_rng(seed)
    eta_fixed = fit.design.X @ fit.beta
    codes, groups = pd.factorize(trial["id"])
    n_conv = n_sing = 0
    did = []
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(replicates):
        b = rng.normal(0.0, fit.sd_group, len(groups))
        sim = trial.assign(awakenings=rng.poisson(np.exp(eta_fixed + b[codes])))
        refit = fit_glmm(sim, "awakenings", TERMS, group="id", levels=LEVELS)
        n_conv += refit.converged
        n_sing += refit.singular
        did.append(refit.beta[4])
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"\n{replicates} simulate + refit replicates (Poisson, Laplace): {total:.2f} s wall, "
        f"{total / replicates * 1e3:.1f} ms per fit ({cpu / replicates * 1e3:.1f} ms CPU per fit)"
    )
    r_per_fit = R_SECONDS_200 / 200
    print(
        f"  R glmer: {R_SECONDS_200:.1f} s for 200 ({r_per_fit * 1e3:.0f} ms per fit); "
        f"studykit is {r_per_fit / (total / replicates):.1f}x faster per fit"
    )
    print(
        f"  converged {n_conv}/{replicates}, singular {n_sing}; mean armketamine:nightpost1 "
        f"{np.mean(did):.4f} (generating value {fit.beta[4]:.4f})"
    )


def large(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_id = 2000
    ids = np.repeat([f"S{i:04d}" for i in range(n_id)], 3)
    arm = np.repeat(np.where(np.arange(n_id) % 2 == 0, "placebo", "ketamine"), 3)
    night = np.tile(LEVELS["night"], n_id)
    log_rate = (
        np.log(14.0)
        + np.log(0.75) * ((arm == "ketamine") & (night == "post1"))
        + np.log(0.9) * ((arm == "ketamine") & (night == "post2"))
        + np.repeat(rng.normal(0.0, 0.35, n_id), 3)
    )
    df = pd.DataFrame({"id": ids, "arm": arm, "night": night})
    df["awakenings"] = rng.poisson(np.exp(log_rate))
    df["nb_awakenings"] = rng.negative_binomial(20.0, 20.0 / (20.0 + np.exp(log_rate)))
    print("\nLarge SIMULATED cohort: 2000 participants x 3 nights (single runs)")
    for outcome, family, nagq in (
        ("awakenings", "poisson", 1),
        ("awakenings", "poisson", 25),
        ("nb_awakenings", "negbin", 1),
        ("nb_awakenings", "negbin", 25),
    ):
        t0 = time.perf_counter()
        fit = fit_glmm(df, outcome, TERMS, group="id", family=family, levels=LEVELS, nagq=nagq)
        sec = time.perf_counter() - t0
        extra = f", theta {fit.theta:.1f} (true 20)" if fit.theta is not None else ""
        print(
            f"  {family:8s} nagq={nagq:<3d} {sec:6.2f} s  sd {fit.sd_group:.3f} (true 0.35)"
            f"{extra}, converged={fit.converged}, {fit.n_eval} likelihood evaluations"
        )


def crossed_target(seed: int, runs: int = 3) -> None:
    """#15 target: Poisson GLMM, two crossed random intercepts, 2,000 participants (SIMULATED)."""
    rng = np.random.default_rng(seed)
    n_id, n_scorer = 2000, 40
    ids = np.repeat(np.arange(n_id), 3)
    night = np.tile(LEVELS["night"], n_id)
    arm = np.where(ids % 2 == 0, "placebo", "ketamine")
    scorer = rng.integers(0, n_scorer, ids.size)
    eta = (
        1.0
        - 0.2 * ((arm == "ketamine") & (night != "baseline"))
        + rng.normal(0, 0.35, n_id)[ids]
        + rng.normal(0, 0.2, n_scorer)[scorer]
    )
    df = pd.DataFrame(
        {
            "id": [f"P{i:04d}" for i in ids],
            "scorer": [f"S{s:02d}" for s in scorer],
            "arm": arm,
            "night": night,
            "awakenings": rng.poisson(np.exp(eta)),
        }
    )
    random = [("id", ["1"]), ("scorer", ["1"])]
    print("\n#15 target: Poisson, (1|id) + (1|scorer), 2,000 participants x 3 nights, 40 scorers")
    print(f"load average now: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    fit = None

    def one() -> None:
        nonlocal fit
        fit = fit_glmm(df, "awakenings", TERMS, random=random, levels=LEVELS)

    ours = _median_time(one, runs)
    assert fit is not None
    r_default = r_median_seconds(
        df,
        "glmer(awakenings ~ arm * night + (1 | id) + (1 | scorer), d, family = poisson)",
        factors=["id", "scorer"],
        levels=LEVELS,
        runs=runs,
    )
    r_tight = r_median_seconds(
        df,
        "glmer(awakenings ~ arm * night + (1 | id) + (1 | scorer), d, family = poisson, "
        "control = glmerControl(optimizer = 'bobyqa', optCtrl = list(maxfun = 1e5)))",
        factors=["id", "scorer"],
        levels=LEVELS,
        runs=runs,
    )

    def fmt(x: float | None) -> str:
        return "n/a (no Rscript)" if x is None else f"{x:.2f} s"

    print(
        f"  studykit (Laplace, fit + SEs) {ours:.2f} s  [{fit.n_eval} likelihood evaluations, "
        f"converged={fit.converged}]\n  glmer default {fmt(r_default)}; glmer bobyqa maxfun=1e5 "
        f"{fmt(r_tight)} (medians of {runs}; target: studykit <= glmer)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=20, help="repeats per single-fit timing")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--target-only", action="store_true", help="only the #15 crossed target")
    args = parser.parse_args()
    crossed_target(args.seed)
    if args.target_only:
        return
    trial = pd.read_csv(TRIAL)
    single_fits(trial, args.repeat)
    simulate_refit(trial, args.replicates, args.seed)
    if not args.skip_large:
        large(args.seed)


if __name__ == "__main__":
    main()
