"""`studykit verify`: check a results folder against its manifest and a fresh re-run.

Exit codes (as ``diff``): 0 everything agrees; 1 differences found (each printed on a
``DIFFERENCE`` line); 2 could not verify (no usable manifest, protocol or data gone: the
message says what and how to fix it).
"""

from __future__ import annotations

import argparse

from studykit.errors import VerificationError
from studykit.manifest import ATOL, RTOL
from studykit.verify import verify

#: Differences printed at most (the count of the rest is given).
MAX_SHOWN = 200


def register(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Check OUT/manifest.json against its digest (manifest.json.sha256), every output "
        "it lists (tables in all formats, figures, report) against its SHA-256, the "
        "protocol and data files against theirs, then re-run the recorded analysis in a "
        "temporary folder and compare: CSV tables cell by cell (numbers within |a - b| <= "
        "atol + rtol |b|, text exactly), every other output byte for byte. Exit 0 when "
        "everything agrees; 1 when differences are found (each listed); 2 when the "
        "results cannot be verified (no usable manifest, protocol or data gone)."
    )
    p.epilog = "Example: studykit verify results"
    p.add_argument("results", metavar="OUT", help="results folder of 'studykit run'")
    p.add_argument(
        "--rtol", type=float, default=None, help=f"relative tolerance (default: manifest's, {RTOL})"
    )
    p.add_argument(
        "--atol", type=float, default=None, help=f"absolute tolerance (default: manifest's, {ATOL})"
    )
    p.add_argument("--progress", action="store_true", help="print the re-run's stages")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    diffs = verify(args.results, rtol=args.rtol, atol=args.atol, progress=args.progress)
    if not diffs:
        print(
            f"verified: the manifest, every output and a fresh re-run of {args.results} agree "
            "(CSV numbers within the manifest's tolerance, everything else byte for byte)"
        )
        return 0
    for d in diffs[:MAX_SHOWN]:
        print(f"DIFFERENCE {d}")
    if len(diffs) > MAX_SHOWN:
        print(f"... and {len(diffs) - MAX_SHOWN} more differences")
    files = sorted({d.file for d in diffs})
    raise VerificationError(
        f"{len(diffs)} difference(s) between the stored results in {args.results} and their "
        f"manifest or a re-run, in {len(files)} file(s): {', '.join(files[:10])}"
        f"{' ...' if len(files) > 10 else ''}. Each is listed above."
    )
