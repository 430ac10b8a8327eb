"""Options shared by several subcommands, declared once (same flag, same meaning, same help).

Examples
--------
>>> import argparse
>>> p = argparse.ArgumentParser()
>>> dictionary(p)
>>> outcomes(p)
>>> args = p.parse_args(["--outcomes", "typed"])
>>> args.dictionary, args.outcomes
(None, 'typed')
"""

from __future__ import annotations

import argparse

from studykit.validate import OUTCOME_SOURCES

__all__ = ["dictionary", "outcomes", "force", "seed", "parallel"]


def dictionary(p: argparse.ArgumentParser) -> None:
    """``--dictionary PATH``: the data dictionary CSV (default: the packaged one)."""
    p.add_argument("--dictionary", metavar="PATH", help="data dictionary CSV (default: packaged)")


def outcomes(p: argparse.ArgumentParser) -> None:
    """``--outcomes hypnograms|typed``: which per-night outcomes are analysed."""
    p.add_argument(
        "--outcomes",
        choices=OUTCOME_SOURCES,
        default=OUTCOME_SOURCES[0],
        help="per-night outcomes analysed: recomputed from the hypnograms (default) or as "
        "typed in nights.csv; typed values that differ are listed either way",
    )


def force(p: argparse.ArgumentParser, what: str) -> None:
    """``--force``: overwrite ``what``."""
    p.add_argument("--force", action="store_true", help=f"overwrite {what}")


def seed(p: argparse.ArgumentParser, default: int, what: str) -> None:
    """``--seed N``: the random seed of ``what``."""
    p.add_argument("--seed", type=int, default=default, help=f"seed of {what} (default {default})")


def parallel(p: argparse.ArgumentParser) -> None:
    """``--jobs N`` (joblib, local processes) and ``--scheduler ADDRESS`` (Dask)."""
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="local worker processes (joblib; -1: one per core). Output identical for any N",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="Dask distributed scheduler address (tcp://host:8786): run on its workers",
    )
