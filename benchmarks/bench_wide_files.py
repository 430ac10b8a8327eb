"""Benchmark: read and validate files with many columns (issue #13.6).

A diary file with the three key columns plus N unknown columns and one data row (the
attack: a 38 kB CSV with 5,000 columns took 13 s, 20,000 columns 56 s). The figures should
grow linearly with N. Prints seconds for ``read_table`` and ``validate_table`` and the load
average; asserts nothing (timings on a shared machine are noisy). The data are synthetic.

Run from the repository root::

    python benchmarks/bench_wide_files.py
    python benchmarks/bench_wide_files.py --columns 1000 5000 20000 40000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from studykit.io import read_table  # noqa: E402
from studykit.validate import validate_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--columns", type=int, nargs="+", default=[1000, 5000, 20000])
    args = parser.parse_args()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'columns':>8} {'kB':>7} {'read_table s':>13} {'validate_table s':>17}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.columns:
            p = Path(tmp) / "diary.csv"
            p.write_text(
                "participant_id,period,day,"
                + ",".join(f"c{i}" for i in range(n))
                + "\nP01,1,0,"
                + ",".join("1" for _ in range(n))
                + "\n"
            )
            t0 = time.perf_counter()
            read_table(p)
            t1 = time.perf_counter()
            validate_table(p, "diary")
            t2 = time.perf_counter()
            print(f"{n:>8} {p.stat().st_size / 1000:>7.0f} {t1 - t0:>13.2f} {t2 - t1:>17.2f}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
