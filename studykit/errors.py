"""Typed errors of studykit, all in one place.

Every error a user can cause derives from :class:`StudykitError`. Its message says what was
wrong, the offending values (capped), what is allowed, and how to fix it. The command line
turns these into a one-paragraph message and exit code 2; anything else is a bug (exit 1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "StudykitError",
    "InputError",
    "DictionaryError",
    "ValidationError",
    "HypnogramError",
    "ProtocolError",
    "ModelError",
    "FormulaError",
    "VerificationError",
]


class StudykitError(Exception):
    """Base class of every error caused by user input; the CLI exits with code 2."""

    exit_code: int = 2


class InputError(StudykitError):
    """A file cannot be read: missing, a directory, empty, binary, undecodable, no header."""


class DictionaryError(StudykitError):
    """The data dictionary itself is malformed (duplicate names, unknown types, min > max ...)."""


class ValidationError(StudykitError):
    """Data failed validation; ``issues`` holds the full issue table (one row per problem).

    Parameters
    ----------
    message : str
        Summary of what failed.
    issues : pandas.DataFrame
        The issue table (columns ``file, row, participant_id, night, column, value, rule,
        severity, message``).
    """

    def __init__(self, message: str, issues: pd.DataFrame | None = None) -> None:
        super().__init__(message)
        self.issues = issues


class HypnogramError(StudykitError):
    """A hypnogram cannot be read or is inconsistent (unknown labels, gaps, overlaps ...)."""


class ProtocolError(StudykitError):
    """A protocol file is malformed or does not match the data dictionary or design."""


class ModelError(StudykitError):
    """A model cannot be fitted to the data as specified (e.g. a factor with one level)."""


class FormulaError(ModelError):
    """A model formula is malformed, holds code, or does not fit the data it is applied to."""


class VerificationError(StudykitError):
    """``studykit verify`` found differences between stored and re-computed results."""

    exit_code = 1
