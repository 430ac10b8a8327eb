"""Benchmark: the demo `studykit run` end to end (target: under 20 s wall on 2 cores).

Usage (from the repository root)::

    python benchmarks/bench_run.py                       # real modules, demo protocol
    python benchmarks/bench_run.py --repeat 3            # best and median of 3 runs
    python benchmarks/bench_run.py --stand-ins           # output stages only, over the test
                                                         # stand-ins of the upstream modules

Prints the wall time of every stage (simulate, protocol, validate, derive, fit, tables,
figures, report, manifest), the total including imports, and whether the target is met.
It asserts nothing: the machine is shared and noisy; read the figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

T0 = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGET_S = 20.0


def _install_stand_ins() -> None:
    import types

    path = ROOT / "tests" / "data" / "outputs" / "fake_upstream.py"
    spec = importlib.util.spec_from_file_location("studykit_outputs_fake_upstream", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    for name, funcs in mod.MODULES.items():
        m = types.ModuleType(name)
        for f in funcs:
            setattr(m, f, getattr(mod, f))
        sys.modules[name] = m


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", default=str(ROOT / "protocols" / "ketamine_sleep.yaml"))
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--stand-ins", action="store_true", help="use the test stand-ins upstream")
    args = ap.parse_args()
    if args.stand_ins:
        _install_stand_ins()
        print(
            "NOTE: upstream stages run on the TEST STAND-INS; only tables, figures, report "
            "and manifest times are meaningful."
        )
    else:
        missing = [
            m
            for m in ("simulate", "validate", "hypnogram", "protocol", "analysis")
            if importlib.util.find_spec(f"studykit.{m}") is None
        ]
        if missing:
            print(
                f"cannot run the real pipeline: studykit.{', studykit.'.join(missing)} "
                "missing. Use --stand-ins to time the output stages alone."
            )
            return 2
    from studykit.pipeline import run

    protocol = Path(args.protocol)
    if args.stand_ins and not protocol.is_file():
        protocol = Path(tempfile.mkdtemp()) / "stand_in_protocol.yaml"
        protocol.write_text("id: stand_in\n")

    totals, per_stage, per_cpu = [], {}, {}
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            res = run(protocol, out=Path(tmp) / "results", progress=False)
            # the first run counts from the script's start: imports are part of the wall time
            totals.append(time.perf_counter() - (T0 if i == 0 else t))
            for k, v in res.timings.items():
                per_stage.setdefault(k, []).append(v)
                per_cpu.setdefault(k, []).append(res.cpu_timings.get(k, float("nan")))
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
