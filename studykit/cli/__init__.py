"""The ``studykit`` command line: thin wrappers over library calls.

Each subcommand lives in its own module of this package, ``studykit.cli.<name>``, which
imports what it needs at its top and exposes ``register(parser)``: it adds the subcommand's
arguments to ``parser`` and sets ``handler`` (a function ``args -> int``). The dispatcher
imports only the module of the subcommand being run (:func:`build_parser`): the one
deliberately lazy import of studykit, so that ``studykit --help`` loads no analysis code.
Exit codes: 0 success, 2 invalid input (any :class:`~studykit.errors.StudykitError`), 130
interrupted (Ctrl-C: one line saying what was left, no traceback; what the command had
written is removed, :class:`~studykit.outdir.OutputGuard`), 1 anything else.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Sequence

from studykit import __version__
from studykit.errors import StudykitError
from studykit.outdir import OutputGuard

__all__ = ["main", "build_parser", "COMMANDS", "EXIT_INTERRUPTED", "OUTPUT_OPTIONS"]

#: Exit code after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130
#: Options (argparse destinations) naming what a command writes; an interrupted command's
#: partial output under them is removed.
OUTPUT_OPTIONS = ("output", "out", "report", "csv")
#: Commands that stage their own output (:class:`~studykit.outdir.StagedOutput`: written
#: beside ``--out``, moved into place at the very end): not guarded, so an interrupt after
#: the move can never remove finished results.
SELF_STAGED = ("run",)

#: Subcommands, in the order ``--help`` lists them, with their one-line help.
COMMANDS: dict[str, str] = {
    "validate": "check data files against the data dictionary",
    "derive": "derive per-night sleep statistics from hypnogram files",
    "simulate": "write the simulated demo study (placebo-controlled ketamine sleep trial)",
    "fit": "fit a protocol's hypotheses to a study and print the results table",
    "run": "run a protocol's analysis: tables, figures, report, manifest",
    "verify": "check a results folder against its manifest and a fresh re-run",
    "power": "power and sample size by simulation (refits the pre-specified analysis)",
    "dictionary": "check the data dictionary; REDCap import/export; Table Schema",
    "redcap": "import a REDCap longitudinal export as study tables; export a study to REDCap",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; ``command``'s module is imported and its arguments registered.

    Every subcommand is listed (with its help line); only ``command`` (``None``: none) gets
    its arguments, so only that subcommand's module, and what it imports, is loaded.

    Examples
    --------
    >>> parser = build_parser("verify")
    >>> parser.parse_args(["verify", "results"]).results
    'results'
    """
    parser = argparse.ArgumentParser(
        prog="studykit",
        description="Pre-registered, reproducible analysis of sleep studies.",
    )
    parser.add_argument("--version", action="version", version=f"studykit {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the Python traceback of unexpected errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_line in COMMANDS.items():
        p = sub.add_parser(name, help=help_line, description=help_line)
        if name == command:
            # the one lazy import: the subcommand being run, by name
            importlib.import_module(f"studykit.cli.{name}").register(p)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv``: its first word that is not an option."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(_command(argv))
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        print("studykit: interrupted; no results were written", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    guard: OutputGuard | None = None
    try:
        if args.command not in SELF_STAGED:
            guard = OutputGuard(
                getattr(args, name) for name in OUTPUT_OPTIONS if getattr(args, name, None)
            )
        return int(args.handler(args) or 0)
    except StudykitError as exc:
        print(f"studykit {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"studykit {args.command}: interrupted; {_undo(guard)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug, not the user's fault: say so plainly
        if args.debug:
            raise
        print(
            f"studykit {args.command}: internal error ({type(exc).__name__}: {exc}). "
            "This is a bug in studykit; re-run with --debug for the traceback and report it.",
            file=sys.stderr,
        )
        return 1


def _undo(guard: OutputGuard | None) -> str:
    """Remove an interrupted command's partial output; say what is left (one clause)."""
    if guard is None:
        return "no results were written"
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: finish first
    try:
        removed, changed = guard.undo()
    finally:
        signal.signal(signal.SIGINT, previous)
    said = "partial output removed" if removed else "no results were written"
    if changed:
        shown = ", ".join(str(p) for p in changed[:3]) + (" ..." if len(changed) > 3 else "")
        said += f"; {shown} was being rewritten and may be incomplete: run the command again"
    return said
