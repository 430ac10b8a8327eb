"""`studykit simulate`: write the simulated demo study (SIMULATED data) to a directory."""

from __future__ import annotations

import argparse

from studykit.cli import options
from studykit.simulate import simulate_study, write_study

__all__ = ["register", "handle"]


def register(p: argparse.ArgumentParser) -> None:
    """Add the ``simulate`` subcommand."""
    p.description = (
        "Simulate a placebo-controlled ketamine sleep study and write it as a study "
        "directory: README.md (says SIMULATED, the seed and the assumed effects), "
        "roster.csv, periods.csv, nights.csv, diary.csv and hypnograms/ (CSV, plus a few "
        "nights as Sleep-EDF EDF+ and NSRR XML). The same seed gives byte-identical files."
    )
    options.seed(p, 20261125, "the simulated study")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (new or empty)")
    p.add_argument(
        "--design",
        choices=("crossover", "parallel"),
        default="crossover",
        help="crossover (sequences KP / PK, default) or parallel groups (arms K / P)",
    )
    p.add_argument(
        "--n", type=int, default=36, metavar="N", help="participants randomized (default 36)"
    )
    p.add_argument(
        "--nights",
        default="baseline,post1,post2",
        help="comma-separated nights per period from baseline, post1, post2, day7 "
        "(default baseline,post1,post2)",
    )
    p.add_argument(
        "--clean", action="store_true", help="no missing nights, withdrawal or artefacts"
    )
    p.add_argument(
        "--nuisance",
        choices=["v1", "v2"],
        default="v1",
        help="design nuisances: v1 none (the demo, default); v2 participant x period "
        "variation and a first-night effect (docs/simulate.md)",
    )
    options.force(p, "a simulated study already in DIR")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Simulate and write; print where the study went."""
    nights = tuple(n.strip() for n in args.nights.split(",") if n.strip())
    study = simulate_study(
        seed=args.seed,
        n_participants=args.n,
        design=args.design,
        nights=nights,
        mess=not args.clean,
        nuisance=args.nuisance,
    )
    out = write_study(study, args.out, overwrite=args.force)
    print(
        f"SIMULATED study (seed {study.seed}, {study.design}, {len(study.roster)} participants, "
        f"{len(study.nights)} nights) written to {out}"
    )
    return 0
