"""`studykit simulate`: write the simulated demo study (SIMULATED data) to a directory."""

from __future__ import annotations

import argparse

__all__ = ["register", "handle"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``simulate`` subcommand."""
    p = sub.add_parser(
        "simulate",
        help="write the simulated demo study (placebo-controlled ketamine sleep trial)",
        description=(
            "Simulate a placebo-controlled ketamine sleep study and write it as a study "
            "directory: README.md (says SIMULATED, the seed and the assumed effects), "
            "roster.csv, periods.csv, nights.csv, diary.csv and hypnograms/ (CSV, plus a few "
            "nights as Sleep-EDF EDF+ and NSRR XML). The same seed gives byte-identical files."
        ),
    )
    p.add_argument("--seed", type=int, default=20261125, help="random seed (default 20261125)")
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
    p.add_argument("--force", action="store_true", help="replace a simulated study already in DIR")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Simulate and write; print where the study went."""
    from studykit.simulate import simulate_study, write_study

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
