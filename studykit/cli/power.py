"""`studykit power`: power and sample size by simulation (table + power curve)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from studykit.cli import options
from studykit.errors import InputError
from studykit.power import power_analysis
from studykit.power.compare import compare_estimators_by_simulation
from studykit.power.core import DEFAULT_SEED
from studykit.power.samplesize import find_sample_size

__all__ = ["register", "handle"]

logger = logging.getLogger(__name__)

EPILOG = """\
PROTOCOL is a protocol YAML (then --effects and/or --pilot say what to simulate) or a power
design YAML (keys layout, outcomes, hypotheses). Data are SIMULATED; each replicate has its
own random stream, so results are identical for a given --seed whatever --jobs/--scheduler.

Every output records the assumed effects, SDs, correlations, alpha, multiplicity, replicates
and seed (power_assumptions.csv, the Markdown, the figure caption) and a methods paragraph.

examples:
  studykit power protocols/ketamine_sleep.yaml --effects protocols/ketamine_effects.yaml --n 24,36,48 --reps 500
  studykit power protocols/ketamine_sleep.yaml --effects protocols/ketamine_effects.yaml --target-power 0.8 --reps 500
  studykit power protocols/ketamine_sleep.yaml --effects protocols/ketamine_effects.yaml --compare-estimators --hypotheses H1,H3,E1 --n 36
  studykit power design.yaml --pilot pilot/nights.csv --n 40,60 --scheduler tcp://host:8786
"""


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 20,30,40; got {text!r}"
        ) from exc
    if not values:
        raise argparse.ArgumentTypeError("give at least one sample size")
    return values


def register(p: argparse.ArgumentParser) -> None:
    """Add the ``power`` subcommand."""
    p.description = (
        "Simulate the study at each sample size, refit each pre-specified model, apply the "
        "multiplicity adjustment and report power with Monte Carlo SE and 95% CI."
    )
    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("protocol", metavar="PROTOCOL", help="protocol YAML or power design YAML")
    p.add_argument("--n", type=_int_list, default=[20, 30, 40, 60], metavar="N1,N2,...",
                   help="total participants per scenario (default 20,30,40,60)")  # fmt: skip
    p.add_argument(
        "--reps", type=int, default=1000, help="replicates per sample size (default 1000)"
    )
    p.add_argument("--effects", metavar="FILE", help="assumed effects YAML (layout, outcomes)")
    p.add_argument("--pilot", metavar="PATH",
                   help="pilot data (a CSV, or a study directory with nights.csv) to fit the truth from")  # fmt: skip
    p.add_argument("--hypotheses", metavar="ID,...", help="only these hypothesis ids")
    options.parallel(p)
    options.seed(p, DEFAULT_SEED, "the simulation (each replicate has its own stream)")
    p.add_argument("--engine", choices=["studykit"], default="studykit",
                   help="per-replicate analysis engine (default studykit: the analysis engine)")  # fmt: skip
    p.add_argument(
        "--out", metavar="DIR", default="power", help="output directory (default ./power)"
    )
    p.add_argument("--target-power", type=float, metavar="P",
                   help="find the smallest n reaching power P per confirmatory hypothesis and "
                   "for the family (sizes double from the smallest --n, then bisection)")  # fmt: skip
    p.add_argument("--n-max", type=int, default=400, help="largest n for --target-power (400)")
    p.add_argument("--compare-estimators", action="store_true",
                   help="compare the candidate analyses (DiD, constrained baseline, Kenward-Roger "
                   "ANCOVA, post-only) of each hypothesis: bias, SE, coverage, type I error, "
                   "power at the first --n")  # fmt: skip
    p.add_argument("--estimator", action="append", default=[], metavar="ID=NAME",
                   help="analyse hypothesis ID with another estimator (did, clda, ancova, "
                   "post_only), e.g. a pre-specified sensitivity analysis; repeatable")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Run the simulation and write ``power.csv``, ``power.md``, ``power.png``, ``power.svg``."""
    if args.reps < 1:
        raise InputError(f"--reps must be a positive integer; got {args.reps}.")
    if args.pilot is not None and not os.path.exists(args.pilot):
        raise InputError(f"--pilot {args.pilot!r} does not exist.")
    hyps = [h for h in args.hypotheses.split(",") if h] if args.hypotheses else None
    args.estimators = _estimators(args.estimator)
    if args.compare_estimators:
        return _compare(args, hyps)
    if args.target_power is not None:
        return _target(args, hyps)
    result = power_analysis(
        args.protocol,
        n=args.n,
        reps=args.reps,
        effects=args.effects,
        pilot=args.pilot,
        seed=args.seed,
        n_jobs=args.jobs,
        scheduler=args.scheduler,
        progress=not args.no_progress,
        engine=args.engine,
        hypotheses=hyps,
        estimators=args.estimators,
    )
    paths = result.write(args.out)
    sys.stdout.write(result.to_markdown())
    s = result.settings
    sys.stdout.write(
        f"\n{s['reps'] * len(s['n'])} replicates in {s['elapsed_s']:.1f} s "
        f"({1000 * s['seconds_per_replicate']:.2f} ms per replicate, {s['n_jobs']} job(s)"
        f"{', Dask ' + str(s['scheduler']) if s['scheduler'] else ''}).\n"
        f"Wrote {', '.join(paths.values())}.\n"
    )
    return 0


def _estimators(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        hid, sep, name = item.partition("=")
        if not sep or not hid.strip() or not name.strip():
            raise InputError(f"--estimator expects ID=NAME (e.g. H1=clda); got {item!r}.")
        out[hid.strip()] = name.strip()
    return out


def _compare(args: argparse.Namespace, hyps: list[str] | None) -> int:
    res = compare_estimators_by_simulation(
        args.protocol,
        args.effects,
        hypotheses=hyps,
        n=args.n[0],
        reps=args.reps,
        seed=args.seed,
        n_jobs=args.jobs,
        progress=not args.no_progress,
    )
    paths = res.write(args.out)
    sys.stdout.write(res.to_markdown())
    sys.stdout.write(f"\nWrote {', '.join(paths.values())}.\n")
    return 0


def _target(args: argparse.Namespace, hyps: list[str] | None) -> int:
    res = find_sample_size(
        args.protocol,
        args.effects,
        target_power=args.target_power,
        reps=args.reps,
        seed=args.seed,
        n_start=min(args.n),
        n_max=args.n_max,
        hypotheses=hyps,
        pilot=args.pilot,
        n_jobs=args.jobs,
        progress=not args.no_progress,
        estimators=args.estimators,
    )
    paths = res.write(args.out)
    sys.stdout.write(res.to_markdown())
    sys.stdout.write(f"\nWrote {', '.join(paths.values())}.\n")
    return 0
