"""Benchmark: validate a 1,000,000-row epoch table (1,000 nights x 1,000 epochs).

Target (issue #2): at most 5 s and 2 GiB peak memory on the 2-core CI machine. This script
prints the figures; it asserts nothing (timings on a shared machine are noisy).

Each measurement runs in a fresh Python process so that its peak resident memory
(``ru_maxrss``) belongs to that measurement alone; the baseline (interpreter + pandas +
studykit imported) is printed too.

The data are SIMULATED: random stages, 1,000 epochs per night, with ~0.1 % of cells made
bad (unknown stage codes, non-numeric epochs, negative onsets) so the issue path is timed.

Run from the repository root::

    python benchmarks/bench_validate.py            # 1,000,000 rows
    python benchmarks/bench_validate.py --rows 200000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
import numpy as np, pandas as pd
from studykit.dictionary import load_dictionary
from studykit.validate import validate_table
from studykit.io import read_table
dd = load_dictionary()
mode, path = {mode!r}, {path!r}
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if mode == "frame":
    raw = pd.read_parquet(path)  # strings, as read_table would return them
    t0 = time.perf_counter()
    res = validate_table(raw, "epochs", dictionary=dd, source="bench")
elif mode == "read":
    t0 = time.perf_counter()
    raw = read_table(path)
    res = None
else:
    t0 = time.perf_counter()
    res = validate_table(path, "epochs", dictionary=dd)
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = dict(mode=mode, seconds=dt, peak_rss_mib=peak / 1024, baseline_rss_mib=base / 1024)
if res is not None:
    out.update(res.summary)
    out["issues"] = len(res.issues)
print(json.dumps(out))
"""


def make_epochs(n_rows: int, path_csv: Path, path_parquet: Path, *, seed: int = 1) -> None:
    """Write a SIMULATED epoch table as CSV and as a Parquet file of strings."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    per_night = 1000
    n_nights = max(1, n_rows // per_night)
    n = n_nights * per_night
    night_id = np.repeat(np.arange(n_nights), per_night)
    epoch = np.tile(np.arange(per_night), n_nights)
    pid = np.array([f"P{k:03d}" for k in range(n_nights // 8 + 1)])[night_id // 8]
    period = (night_id // 4) % 2 + 1
    night = np.array(["baseline", "post1", "post2", "day7"])[night_id % 4]
    stage = rng.choice(
        np.array(["W", "N1", "N2", "N3", "R", "MT", "ART", "UNS"]),
        size=n,
        p=[0.15, 0.08, 0.45, 0.12, 0.18, 0.01, 0.005, 0.005],
    )
    frame = pd.DataFrame(
        {
            "participant_id": pid,
            "period": period.astype(str),
            "night": night,
            "epoch": epoch.astype(str),
            "onset_s": (epoch * 30.0).astype(str),
            "stage": stage,
        }
    )
    bad = rng.random(n) < 0.001
    frame.loc[bad & (rng.random(n) < 0.34), "stage"] = "S5"
    frame.loc[bad & (rng.random(n) < 0.5), "epoch"] = "x"
    frame.loc[bad & (rng.random(n) < 0.5), "onset_s"] = "-30"
    frame.to_csv(path_csv, index=False)
    frame.to_parquet(path_parquet, index=False)


def run(mode: str, path: Path) -> dict:
    code = _CHILD.format(root=str(ROOT), mode=mode, path=str(path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode (best time shown)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        csv_path, pq_path = Path(tmp) / "epochs.csv", Path(tmp) / "epochs.parquet"
        # generate in a child process too: Linux keeps a process's peak RSS across exec, so
        # the parent must stay small for the children's figures to be their own
        gen = (
            f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); "
            f"from bench_validate import make_epochs; "
            f"make_epochs({args.rows}, __import__('pathlib').Path({str(csv_path)!r}), "
            f"__import__('pathlib').Path({str(pq_path)!r}))"
        )
        subprocess.run([sys.executable, "-c", gen], check=True)
        print(
            f"SIMULATED epoch table: {args.rows:,} rows, CSV {csv_path.stat().st_size / 2**20:.1f} MiB"
        )
        print(f"{'measurement':<44} {'best s':>7} {'peak RSS MiB':>13} {'(baseline)':>11}")
        labels = {
            "frame": "validate_table(frame of strings)",
            "read": "read_table(CSV) only",
            "file": "validate_table(CSV path): read + validate",
        }
        for mode in ("frame", "read", "file"):
            runs = [run(mode, pq_path if mode == "frame" else csv_path) for _ in range(args.repeat)]
            best = min(r["seconds"] for r in runs)
            peak = max(r["peak_rss_mib"] for r in runs)
            base = min(r["baseline_rss_mib"] for r in runs)
            print(f"{labels[mode]:<44} {best:7.2f} {peak:13.0f} {base:11.0f}")
            if "rows_read" in runs[0]:
                r = runs[0]
                print(
                    f"{'':<4}rows read {r['rows_read']:,} = accepted {r['rows_accepted']:,} + "
                    f"rejected {r['rows_rejected']:,}; {r['issues']:,} issues"
                )
        print("target: <= 5 s and <= 2048 MiB peak (issue #2)")


if __name__ == "__main__":
    main()
