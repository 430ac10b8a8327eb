"""Benchmark `studykit derive` at cohort scale: nights per second, EDF+ and NSRR XML, serial
and parallel (joblib), optionally on a Dask cluster.

The nights are SIMULATED (a fixed-seed Markov chain of stage runs, ~8 h, 30-s epochs), written
as Sleep-EDF style EDF+ annotation files and NSRR XML files into a temporary folder.

Run from the repository root::

    PYTHONPATH=. python benchmarks/bench_derive.py --nights 500 --jobs 2
    PYTHONPATH=. python benchmarks/bench_derive.py --nights 10000 --jobs 2 --formats nsrr

Prints one line per (format, jobs): files, seconds, nights per second, and the load average
before and after (on a shared machine the figures are noisy when the load nears the cores).
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from studykit.hypnogram.derive import derive_nights

LABELS = ["W", "1", "2", "3", "R"]
EDF_TEXT = {s: f"Sleep stage {s}" for s in LABELS}
NSRR_TEXT = {"W": "Wake|0", "1": "Stage 1 sleep|1", "2": "Stage 2 sleep|2",
             "3": "Stage 3 sleep|3", "R": "REM sleep|5"}  # fmt: skip


def simulated_night(rng: np.random.Generator, epochs: int = 960) -> list[tuple[float, float, str]]:
    """Stage runs (onset s, duration s, stage) covering ``epochs`` 30-s epochs."""
    out, t = [], 0
    while t < epochs:
        run = int(min(rng.integers(1, 30), epochs - t))
        out.append((t * 30.0, run * 30.0, str(rng.choice(LABELS))))
        t += run
    return out


def write_edf(path: Path, night: list[tuple[float, float, str]]) -> None:
    from edfio import Edf, EdfAnnotation

    anns = [EdfAnnotation(o, d, EDF_TEXT[s]) for o, d, s in night]
    Edf(signals=[], annotations=anns).write(path)


def write_nsrr(path: Path, night: list[tuple[float, float, str]]) -> None:
    events = "".join(
        f"<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>{NSRR_TEXT[s]}"
        f"</EventConcept><Start>{o:.1f}</Start><Duration>{d:.1f}</Duration></ScoredEvent>"
        for o, d, s in night
    )
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<PSGAnnotation><EpochLength>30</EpochLength>'
        f"<ScoredEvents>{events}</ScoredEvents></PSGAnnotation>\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=400, help="files per format")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--formats", nargs="+", default=["edf", "nsrr"])
    parser.add_argument("--scheduler", help="also run on this Dask scheduler address")
    args = parser.parse_args()
    rng = np.random.default_rng(2024)
    print(f"load average before: {os.getloadavg()}, cores: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in args.formats:
            folder = Path(tmp) / fmt
            folder.mkdir()
            t0 = time.perf_counter()
            for i in range(args.nights):
                night = simulated_night(rng)
                if fmt == "edf":
                    write_edf(folder / f"SC4{i % 100:02d}{i // 100 % 10}EC-Hypnogram.edf"
                              if i < 1000 else folder / f"N{i:05d}_p1_n.edf", night)  # fmt: skip
                else:
                    write_nsrr(folder / f"shhs1-{200001 + i}-nsrr.xml", night)
            print(
                f"{fmt}: wrote {args.nights} SIMULATED nights in {time.perf_counter() - t0:.1f} s"
            )
            runs = [(f"jobs={j}", {"jobs": j}) for j in args.jobs]
            if args.scheduler:
                runs.append((f"dask {args.scheduler}", {"scheduler": args.scheduler}))
            reference = None
            for label, kwargs in runs:
                t0 = time.perf_counter()
                result = derive_nights(folder, **kwargs)  # type: ignore[arg-type]
                elapsed = time.perf_counter() - t0
                text = result.nights.to_csv(index=False)
                same = "" if reference is None else f", identical to first: {text == reference}"
                reference = reference or text
                print(
                    f"{fmt:5s} {label:10s} {len(result.nights):6d} nights {elapsed:7.2f} s "
                    f"{len(result.nights) / elapsed:8.1f} nights/s{same}"
                )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
