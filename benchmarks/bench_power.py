"""Benchmark: time per power-simulation replicate on the trial_sim design, next to R.

Run from the repository root::

    python benchmarks/bench_power.py [--reps 1000] [--jobs 2] [--repeat 3]

One replicate = simulate n = 40 participants x 3 nights (SIMULATED data) + REML fit of
``sws ~ treatment * night + (1 | participant_id)`` + Satterthwaite test of the night-1 DiD +
multiplicity bookkeeping. R reference (shared/reference/lme4/large/r_timing.csv, R 4.2.2, lme4
1.1-31, lmerTest 3.1-3, 2-core x86_64): 200 x (simulate + lmerTest::lmer + Satterthwaite
summary) = 11.101 s, i.e. 55.5 ms per replicate; lme4 ``simulate`` + ``refit`` (no df) 18.5 ms.
Target (issue #8): at least 5x faster per replicate, 1,000 replicates in under 11 s on 2 cores.
Prints figures only; asserts nothing (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from studykit.power import TRIAL_SIM_EXAMPLE, did_power_balanced, power_analysis

R_MS_PER_REP = 11.101 / 200 * 1000  # lmerTest simulate + fit + Satterthwaite, r_timing.csv
R_REFIT_MS_PER_REP = 3.701 / 200 * 1000  # lme4 simulate() + refit(), no Satterthwaite


def _run(reps: int, jobs: int, engine: str, seed: int) -> tuple[float, float, float]:
    c0 = time.process_time()
    t0 = time.perf_counter()
    res = power_analysis(
        TRIAL_SIM_EXAMPLE, n=[40], reps=reps, seed=seed, n_jobs=jobs, engine=engine, progress=False
    )
    wall = time.perf_counter() - t0
    return wall, time.process_time() - c0, float(res.table.loc[0, "power"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per setting (median shown)")
    args = ap.parse_args()
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, load {os.getloadavg()[0]:.2f}"
    )
    print(
        f"R reference: {R_MS_PER_REP:.1f} ms/replicate (lmerTest fit + Satterthwaite); {R_REFIT_MS_PER_REP:.1f} ms lme4 refit only"
    )
    _run(20, 1, "studykit", 0)  # warm-up (imports)
    rows = []
    for engine, label in (("studykit", "studykit engine"),):
        for jobs in sorted({1, args.jobs}):
            if jobs > 1:
                _run(8, jobs, engine, 0)  # start the worker processes (not timed)
            times, cpus, power = [], [], float("nan")
            for i in range(args.repeat):
                el, cpu, power = _run(args.reps, jobs, engine, 20261125 + i)
                times.append(el)
                cpus.append(cpu)
            cpu = statistics.median(cpus) if jobs == 1 else float("nan")  # workers' CPU not seen
            rows.append(
                (f"{label}, {jobs} job(s)", args.reps, statistics.median(times), cpu, power)
            )
    print()
    print(
        f"{'setting':40s} {'reps':>5s} {'wall s':>7s} {'ms/rep':>7s} {'cpu ms/rep':>10s} "
        f"{'x vs R':>6s} {'power':>6s}"
    )
    for name, reps, el, cpu, power in rows:
        ms = el / reps * 1000
        print(
            f"{name:40s} {reps:5d} {el:7.2f} {ms:7.2f} {cpu / reps * 1000:10.2f} "
            f"{R_MS_PER_REP / ms:6.1f} {power:6.3f}"
        )
    print("(wall: median of the timed runs, worker processes already started; cpu: main process)")
    exact = did_power_balanced(40, effect=10, sd_residual=12, alpha=0.025)["power"]
    print(
        f"\nanalytic power (noncentral t, df 76, one-sided alpha 0.025): {exact:.4f}; R: 0.45 (MC SE 0.035, 200 reps)"
    )
    print(f"target: {R_MS_PER_REP / 5:.1f} ms/replicate (5x R), 1000 replicates < 11 s on 2 cores")


if __name__ == "__main__":
    main()
