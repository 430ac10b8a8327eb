"""Benchmark: the demo `studykit run` end to end (target: under 20 s wall on 2 cores).

Usage (from the repository root)::

    python benchmarks/bench_run.py                       # demo protocol, simulated demo study
    python benchmarks/bench_run.py --repeat 3            # best and median of 3 runs

Prints the wall and CPU time of every stage (simulate, protocol, validate, derive, fit,
tables, figures, report, manifest), the total including imports, whether the target is met,
and the load average of the machine beside the figures. It asserts nothing: the machine is
shared and noisy; read the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

T0 = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGET_S = 20.0


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--protocol", default=str(ROOT / "protocols" / "ketamine_sleep.yaml"))
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    from studykit.pipeline import run

    protocol = Path(args.protocol)
    totals: list[float] = []
    per_stage: dict[str, list[float]] = {}
    per_cpu: dict[str, list[float]] = {}
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            res = run(protocol, out=Path(tmp) / "results", progress=False)
            # the first run counts from the script's start: imports are part of the wall time
            totals.append(time.perf_counter() - (T0 if i == 0 else t))
            for k, v in res.timings.items():
                per_stage.setdefault(k, []).append(v)
                per_cpu.setdefault(k, []).append(res.cpu_timings.get(k, float("nan")))
    print(f"load average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'stage':<10} {'wall best s':>12} {'wall median s':>14} {'cpu median s':>13}")
    for k, v in per_stage.items():
        print(
            f"{k:<10} {min(v):12.2f} {statistics.median(v):14.2f} "
            f"{statistics.median(per_cpu[k]):13.2f}"
        )
    first = totals[0]
    print(
        f"end to end, first run incl. Python imports: {first:.2f} s "
        f"-> target < {TARGET_S:.0f} s: {'MET' if first < TARGET_S else 'NOT MET'}"
    )
    if len(totals) > 1:
        print(
            f"later runs (warm imports): best {min(totals[1:]):.2f} s, "
            f"median {statistics.median(totals[1:]):.2f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
