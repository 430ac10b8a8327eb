"""The warnings every mixed-model engine attaches to its results, worded once.

A fit's problems are returned in the result's ``warnings`` list (they end up in the output
tables) and logged through the ``logging`` module; they are never Python warnings, which a
pipeline would lose. LMM and GLMM use the same sentences so that tables read alike.

Examples
--------
>>> singular_fit("a random-effect variance is estimated as 0")[:22]
'Singular (boundary) fi'
"""

from __future__ import annotations

import logging

__all__ = ["not_converged", "singular_fit", "iteration_cap", "report"]


def not_converged(detail: str) -> str:
    """The model did not converge (``detail``: the failed criterion, with numbers)."""
    return f"Model failed to converge: {detail}."


def singular_fit(detail: str) -> str:
    """A variance parameter is on its boundary (``detail``: which one and its value)."""
    return (
        f"Singular (boundary) fit: {detail}. Estimates are reported in full; consider "
        "simplifying the random effects."
    )


def iteration_cap(what: str, cap: int) -> str:
    """An iteration reached its cap before its convergence criterion."""
    return (
        f"{what} stopped at its iteration cap ({cap}) before converging; the estimates may be "
        "inaccurate."
    )


def report(logger: logging.Logger, warnings: list[str]) -> list[str]:
    """Log every warning (once) and return the list unchanged."""
    for w in warnings:
        logger.warning(w)
    return warnings
