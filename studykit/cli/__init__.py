"""The ``studykit`` command line: thin wrappers over library calls.

Each subcommand lives in its own module of this package and exposes ``register(subparsers)``,
which adds its parser and sets ``handler`` (a function ``args -> int``). Exit codes: 0
success, 2 invalid input (any :class:`~studykit.errors.StudykitError`), 1 anything else.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from studykit import __version__
from studykit.errors import StudykitError

__all__ = ["main", "build_parser"]

#: Subcommand modules, in the order ``--help`` lists them.
COMMANDS = (
    "validate",
    "derive",
    "simulate",
    "fit",
    "run",
    "verify",
    "power",
    "dictionary",
    "redcap",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="studykit",
        description="Pre-registered, reproducible analysis of sleep studies.",
    )
    parser.add_argument("--version", action="version", version=f"studykit {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the Python traceback of unexpected errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"studykit.cli.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return int(args.handler(args) or 0)
    except StudykitError as exc:
        print(f"studykit {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug, not the user's fault: say so plainly
        if args.debug:
            raise
        print(
            f"studykit {args.command}: internal error ({type(exc).__name__}: {exc}). "
            "This is a bug in studykit; re-run with --debug for the traceback and report it.",
            file=sys.stderr,
        )
        return 1
