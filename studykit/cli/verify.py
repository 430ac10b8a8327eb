"""`studykit verify`: re-run the analysis of a results directory and compare every table."""

from __future__ import annotations

import argparse

#: Differences printed at most (the count of the rest is given).
MAX_SHOWN = 200


def register(sub: argparse._SubParsersAction) -> None:
    from studykit.manifest import ATOL, RTOL

    p = sub.add_parser(
        "verify",
        help="re-run the analysis in OUT/manifest.json and compare every result table",
        description=(
            "Re-run the analysis recorded in OUT/manifest.json (same protocol, data or "
            "simulation seed) into a temporary directory and compare every result CSV with "
            "the stored one: numbers within |a - b| <= atol + rtol |b|, text exactly. Exit 0 "
            "when everything agrees, 1 listing each difference."
        ),
        epilog="Example: studykit verify results",
    )
    p.add_argument("results", metavar="OUT", help="results directory of 'studykit run'")
    p.add_argument("--rtol", type=float, default=RTOL, help=f"relative tolerance (default {RTOL})")
    p.add_argument("--atol", type=float, default=ATOL, help=f"absolute tolerance (default {ATOL})")
    p.add_argument("--progress", action="store_true", help="print the re-run's stages")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from studykit.errors import VerificationError
    from studykit.verify import verify

    diffs = verify(args.results, rtol=args.rtol, atol=args.atol, progress=args.progress)
    if not diffs:
        print(
            f"verified: every result table in {args.results} agrees with a fresh re-run "
            f"(rtol {args.rtol:g}, atol {args.atol:g}; text exactly)"
        )
        return 0
    for d in diffs[:MAX_SHOWN]:
        print(f"DIFFERENCE {d}")
    if len(diffs) > MAX_SHOWN:
        print(f"... and {len(diffs) - MAX_SHOWN} more differences")
    files = sorted({d.file for d in diffs})
    raise VerificationError(
        f"{len(diffs)} difference(s) between the stored results in {args.results} and a "
        f"re-run, in {len(files)} file(s): {', '.join(files[:10])}"
        f"{' ...' if len(files) > 10 else ''}. Each is listed above (tolerance rtol "
        f"{args.rtol:g}, atol {args.atol:g})."
    )
