"""Which table a file holds: by its name, else by its key and columns.

This is the one place where a data file's table is decided (``studykit validate`` and
:func:`~studykit.validate.study.load_study` both ask here). A file named after its table
(``nights.csv``, ``site2_nights.xlsx``) is that table; otherwise the file's columns decide:
a table *fits* when the file has all of the table's key columns and all of its required
columns; among the tables that fit, the one with the most of the file's columns wins (ties:
the table with the longer key, i.e. the more specific one). When no table fits, or two fit
equally, :class:`~studykit.errors.InputError` says which tables were considered and why
each did not fit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from studykit.dictionary import DataDictionary
from studykit.errors import InputError
from studykit.validate.issues import shorten

__all__ = ["infer_table", "table_by_columns", "normalize_name"]


def normalize_name(name: str) -> str:
    """A column name compared ignoring case, surrounding spaces and ``-``/``.``/space vs ``_``.

    Examples
    --------
    >>> normalize_name(" Participant ID")
    'participant_id'
    """
    return re.sub(r"[\s\-.]+", "_", name.strip().lower())


def infer_table(path: str | Path, tables: tuple[str, ...] | list[str]) -> str | None:
    """Guess the table of a file from its name (``nights.csv`` -> ``nights``).

    The stem equal to a table name wins; else a table name contained in the stem (only one).

    Examples
    --------
    >>> infer_table("data/site2_nights.csv", ["roster", "nights"])
    'nights'
    >>> infer_table("data/export.csv", ["roster", "nights"]) is None
    True
    """
    stem = Path(path).stem.lower()
    if stem in tables:
        return stem
    hits = [t for t in tables if re.search(rf"(?:^|[^a-z]){re.escape(t)}(?:$|[^a-z])", stem)]
    return hits[0] if len(hits) == 1 else None


def table_by_columns(
    columns: Sequence[str],
    dictionary: DataDictionary,
    *,
    source: str,
    tables: Sequence[str] | None = None,
) -> str:
    """The table whose key and required columns the file has (see the module docstring).

    Parameters
    ----------
    columns : sequence of str
        The file's column names (compared with :func:`normalize_name`).
    dictionary : DataDictionary
        Tables and their key / required columns.
    source : str
        The file, for the message.
    tables : sequence of str, optional
        Tables to consider (default: every table of the dictionary).

    Returns
    -------
    str
        The table.

    Raises
    ------
    InputError
        No table fits, or several fit equally; the message lists each table considered
        and what it lacks.

    Examples
    --------
    >>> from studykit.dictionary import load_dictionary
    >>> dd = load_dictionary()
    >>> table_by_columns(["participant_id", "period", "day", "kss"], dd, source="export.csv")
    'diary'
    >>> table_by_columns(["id", "score"], dd, source="x.csv", tables=["roster", "diary"])
    Traceback (most recent call last):
    ...
    studykit.errors.InputError: cannot tell which table x.csv holds from its name or its columns ('id', 'score'). Considered: roster (lacks participant_id, sequence, age, sex, madrs_baseline, status); diary (lacks participant_id, period, day). Name the file after its table (e.g. nights.csv) or pass --table.
    """
    have = {normalize_name(str(c)) for c in columns}
    considered = list(tables) if tables is not None else list(dictionary.tables)
    fits: list[tuple[int, int, str]] = []
    reasons: list[str] = []
    for t in considered:
        names = dictionary.names(t)
        needed = list(
            dict.fromkeys(
                [*dictionary.keys(t), *(v.name for v in dictionary.variables(t) if v.required)]
            )
        )
        lacks = [n for n in needed if normalize_name(n) not in have]
        if lacks:
            shown = ", ".join(lacks[:8]) + (f" and {len(lacks) - 8} more" if len(lacks) > 8 else "")
            reasons.append(f"{t} (lacks {shown})")
            continue
        overlap = sum(normalize_name(n) in have for n in names)
        fits.append((overlap, len(dictionary.keys(t)), t))
        reasons.append(f"{t} (fits: {overlap} of the file's {len(have)} columns)")
    shown_cols = ", ".join(repr(shorten(str(c), 40)) for c in list(columns)[:8]) + (
        " ..." if len(columns) > 8 else ""
    )
    hint = "Name the file after its table (e.g. nights.csv) or pass --table."
    if not fits:
        raise InputError(
            f"cannot tell which table {source} holds from its name or its columns "
            f"({shown_cols}). Considered: {'; '.join(reasons)}. {hint}"
        )
    fits.sort(reverse=True)
    if len(fits) > 1 and fits[0][:2] == fits[1][:2]:
        top = {t for o, k, t in fits if (o, k) == fits[0][:2]}
        tied = [t for t in considered if t in top]
        raise InputError(
            f"{source} could hold any of the tables {', '.join(tied)}: it has the key and "
            f"required columns of each ({shown_cols}). Considered: {'; '.join(reasons)}. {hint}"
        )
    return fits[0][2]
