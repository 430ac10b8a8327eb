"""Validate the simulated demo study over many seeds, and time its generation.

Prints (no assertions):

1. the time to simulate and write the 36-participant demo (target: well under 5 s);
2. for each configured effect (``studykit.simulate.DEFAULT_EFFECTS``), the mean estimate
   over ``--seeds`` simulated studies, its Monte Carlo standard error, the z score against the
   configured value, and the share of studies in which a paired t test (ketamine vs placebo,
   same participant, same night) is significant at 5 % - the power of the demo design for
   that effect;
3. placebo-night baselines against the drug-free depression values of LITERATURE.md and the
   night-to-night correlations (baseline nights of periods 1 and 2).

Outcomes are computed from the simulated epochs with the simulator's private validation
helper (``studykit.simulate._outcomes``), not with ``studykit.hypnogram``.

Run from the repository root::

    python benchmarks/validate_simulator.py            # 200 seeds, 36 participants
    python benchmarks/validate_simulator.py --seeds 50 --n 36
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studykit.simulate import DEFAULT_EFFECTS, simulate_study, write_study
from studykit.simulate._outcomes import _night_outcomes

KEYS = ["participant_id", "period", "night"]

LITERATURE = {  # mean, SD: LITERATURE.md (J Clin Sleep Med 2021 n=117; BMC Psychiatry 2019 n=87)
    "tst_min": (358, 75),
    "se_pct": (84, 12),
    "sol_min": (18, 19),
    "lat_rem_min": (130, 75),
    "rem_pct": (16.8, 5.8),
    "waso_min": (73, 62),
    "n3_min": (35, 34),
    "n_awakenings": (float("nan"), float("nan")),
}


def time_demo(repeats: int = 3) -> tuple[float, float]:
    sim, wrt = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        study = simulate_study()
        t1 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            write_study(study, tmp)
        t2 = time.perf_counter()
        sim.append(t1 - t0)
        wrt.append(t2 - t1)
    return statistics.median(sim), statistics.median(wrt)


def _paired(frame: pd.DataFrame, value, outcome: str, by: str = "night") -> pd.Series:
    w = frame[frame[by] == value].pivot(index="participant_id", columns="treatment", values=outcome)
    return (w["ketamine"] - w["placebo"]).dropna()


def one_seed(seed: int, n: int) -> tuple[dict[str, tuple[float, float]], pd.DataFrame]:
    """Estimates (value, paired-t p) of each effect in one simulated study."""
    s = simulate_study(seed=seed, n_participants=n, mess=False)
    nights = _night_outcomes(s).merge(s.nights[[*KEYS, "treatment"]], on=KEYS)
    diary = s.diary.merge(s.periods[["participant_id", "period", "treatment"]])
    est: dict[str, tuple[float, float]] = {}

    def paired(name, frame, value, outcome, by="night"):
        d = _paired(frame, value, outcome, by)
        est[name] = (d.mean(), stats.ttest_1samp(d, 0.0).pvalue)
        return d

    paired("N3 min, post1", nights, "post1", "n3_min")
    paired("N3 min, post2", nights, "post2", "n3_min")
    paired("SOL min, post1", nights, "post1", "sol_min")
    paired("SOL min, post2", nights, "post2", "sol_min")
    paired("TST min, post1", nights, "post1", "tst_min")
    paired("TST min, post2", nights, "post2", "tst_min")
    paired("WASO min, post1", nights, "post1", "waso_min")
    paired("WASO min, post2", nights, "post2", "waso_min")
    for night in ("post1", "post2"):
        d = _paired(nights, night, "n_awakenings")
        sub = nights[nights["night"] == night]
        means = sub.groupby("treatment")["n_awakenings"].mean()
        est[f"awakenings rate ratio, {night}"] = (
            means["ketamine"] / means["placebo"],
            stats.ttest_1samp(d, 0.0).pvalue,
        )
    d1 = paired("REM min, post1 (mean)", nights, "post1", "rem_min")
    d2 = _paired(nights, "post2", "rem_min")
    both = pd.concat([d1, d2], axis=1, join="inner")
    # the participant's REM response is shared by post1 and post2: cov = its variance
    cov = float(np.cov(both.iloc[:, 0], both.iloc[:, 1])[0, 1])
    est["REM response variance (cov post1, post2)"] = (cov, float("nan"))
    for day in (1, 2, 3, 4, 7):
        paired(f"KSS, day {day}", diary, day, "kss", by="day")
    for day in (1, 2, 3):
        paired(f"dream vividness, day {day}", diary, day, "dream_vividness", by="day")
    nm = diary[diary["day"] == 1].groupby("treatment")["nightmares"].mean()
    # log rate ratio (averaging ratios of small counts over studies is biased upwards)
    est["nightmares log rate ratio, day 1"] = (
        math.log(nm["ketamine"] / nm["placebo"]),
        stats.ttest_1samp(_paired(diary, 1, "nightmares", by="day"), 0.0).pvalue,
    )
    nights["rem_pct"] = 100 * nights["rem_min"] / nights["tst_min"]
    nights["seed"] = seed
    return est, nights


def configured() -> dict[str, float]:
    e = DEFAULT_EFFECTS
    return {
        "N3 min, post1": e["n3_min_post1"],
        "N3 min, post2": e["n3_min_post2"],
        "SOL min, post1": e["sol_min_post1"],
        "SOL min, post2": 0.0,
        "TST min, post1": float("nan"),  # follows from SOL and N3 (expected -5..0)
        "TST min, post2": 0.0,
        "WASO min, post1": 0.0,
        "WASO min, post2": 0.0,
        "awakenings rate ratio, post1": e["awakenings_rate_ratio"],
        "awakenings rate ratio, post2": e["awakenings_rate_ratio"],
        "REM min, post1 (mean)": e["rem_min_mean"],
        "REM response variance (cov post1, post2)": e["rem_min_sd"] ** 2,
        **{f"KSS, day {d}": e["kss_by_day"].get(d, 0.0) for d in (1, 2, 3, 4, 7)},
        **{f"dream vividness, day {d}": e["dream_vividness_by_day"].get(d, 0.0) for d in (1, 2, 3)},
        "nightmares log rate ratio, day 1": math.log(e["nightmares_rate_ratio_by_day"].get(1, 1.0)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--n", type=int, default=36, help="participants per study")
    parser.add_argument("--first-seed", type=int, default=1)
    args = parser.parse_args()

    sim_s, write_s = time_demo()
    print(
        f"demo (36 participants, seed 20261125): simulate {sim_s:.2f} s, write {write_s:.2f} s, "
        f"total {sim_s + write_s:.2f} s (median of 3)"
    )

    t0 = time.perf_counter()
    results: dict[str, list[tuple[float, float]]] = {}
    pooled = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        est, nights = one_seed(seed, args.n)
        for k, v in est.items():
            results.setdefault(k, []).append(v)
        pooled.append(nights)
    print(f"{args.seeds} studies of {args.n} participants in {time.perf_counter() - t0:.1f} s\n")

    target = configured()
    rows = []
    for name, values in results.items():
        x = np.array([v[0] for v in values])
        p = np.array([v[1] for v in values])
        mcse = x.std(ddof=1) / math.sqrt(len(x))
        conf = target[name]
        rows.append(
            {
                "effect": name,
                "configured": conf,
                "mean estimate": x.mean(),
                "MC SE": mcse,
                "z": (x.mean() - conf) / mcse if not math.isnan(conf) else float("nan"),
                "SD across studies": x.std(ddof=1),
                "power (paired t, 5 %)": np.mean(p < 0.05) if not np.isnan(p).all() else None,
            }
        )
    table = pd.DataFrame(rows)
    print("Effects, ketamine vs placebo (mean over studies; |z| < 3 = reproduced):")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))

    allnights = pd.concat(pooled, ignore_index=True)
    placebo = allnights[allnights["treatment"] == "placebo"]
    print("\nPlacebo nights vs drug-free depression (LITERATURE.md):")
    base_rows = []
    for name, (m, sd) in LITERATURE.items():
        base_rows.append(
            {
                "outcome": name,
                "literature mean": m,
                "literature SD": sd,
                "simulated mean": placebo[name].mean(),
                "simulated SD": placebo[name].std(),
                "simulated median": placebo[name].median(),
            }
        )
    print(pd.DataFrame(base_rows).to_string(index=False, float_format=lambda v: f"{v:.1f}"))

    print("\nNight-to-night correlation (baseline nights, periods 1 and 2; per study, mean):")
    for name, target_r in (
        ("tst_min", 0.5),
        ("waso_min", 0.5),
        ("n3_min", 0.7),
        ("n_awakenings", float("nan")),
        ("sol_min", float("nan")),
        ("rem_min", float("nan")),
    ):
        rs = []
        for _, g in allnights[allnights["night"] == "baseline"].groupby("seed"):
            w = g.pivot(index="participant_id", columns="period", values=name)
            rs.append(w[1].corr(w[2]))
        print(
            f"  {name:14s} r = {np.mean(rs):.2f} (SD over studies {np.std(rs):.2f}), target {target_r}"
        )


if __name__ == "__main__":
    main()
