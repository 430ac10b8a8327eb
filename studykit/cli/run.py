"""`studykit run`: not yet implemented (placeholder registered so --help lists it)."""

from __future__ import annotations

import argparse

from studykit.errors import StudykitError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="(not yet implemented)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    raise StudykitError("'studykit run' is not implemented yet in this version.")
