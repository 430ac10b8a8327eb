"""Identifiers (PHI) never leave the machine: the ONE place where they are masked.

Two kinds of protection, both used by every export of studykit (tables, issue lists,
``validate --report``):

* identifier *columns*: the fields flagged ``identifier = yes`` in the data dictionary
  (:func:`identifier_columns`) are dropped from every exported table
  (:func:`drop_identifier_columns`), and a summary whose ``variable`` column names one of them
  is refused (its levels would be the identifier values);
* identifier *values*: issue tables keep no value of an identifier field
  (:func:`redact_identifier_values`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection

import pandas as pd

from studykit.dictionary import DataDictionary, load_dictionary
from studykit.errors import InputError

__all__ = [
    "REDACTED",
    "identifier_columns",
    "drop_identifier_columns",
    "redact_identifier_values",
]

logger = logging.getLogger(__name__)

#: What a masked cell holds instead of the identifier value.
REDACTED = "[redacted: identifier field]"


def identifier_columns(dictionary: DataDictionary | None = None) -> frozenset[str]:
    """Names of the identifier (PHI) fields that must never be exported.

    Parameters
    ----------
    dictionary : DataDictionary, optional
        A loaded data dictionary; default the packaged one
        (``studykit.dictionary.load_dictionary()``).

    Returns
    -------
    frozenset of str
        The names flagged ``identifier = yes`` in the dictionary. The pseudonymous key
        ``participant_id`` is not PHI and is not among them.

    Examples
    --------
    >>> ids = identifier_columns()
    >>> "initials" in ids, "participant_id" in ids
    (True, False)
    """
    if dictionary is None:
        dictionary = load_dictionary()
    return frozenset(dictionary.identifier_columns())


def drop_identifier_columns(data: pd.DataFrame, ids: Collection[str], name: str) -> pd.DataFrame:
    ids = set(ids)
    drop = [c for c in data.columns if str(c) in ids]
    if drop:
        logger.info("table %s: identifier columns not exported: %s", name, ", ".join(drop))
        data = data.drop(columns=drop)
    if "variable" in data.columns:
        named = sorted(set(data["variable"].dropna().astype(str)) & ids)
        if named:
            raise InputError(
                f"Table {name!r} summarizes identifier field(s) {named}: their values (or "
                "levels) would be exported. Identifier fields (identifier = yes in the data "
                "dictionary) are never exported; remove them from the table's variables."
            )
    return data


def redact_identifier_values(
    issues: pd.DataFrame, *, identifiers: Collection[str] | None = None
) -> pd.DataFrame:
    """Blank the value and message of issues about identifier (PHI) fields.

    Parameters
    ----------
    issues : pandas.DataFrame
        Issue table (columns ``column``, ``value``, ``message`` ...).
    identifiers : collection of str, optional
        Identifier field names; default :func:`identifier_columns`.

    Returns
    -------
    pandas.DataFrame
        A copy where rows whose ``column`` is an identifier field have ``value`` and
        ``message`` replaced by ``"[redacted: identifier field]"``.

    Examples
    --------
    >>> iss = pd.DataFrame({"column": ["initials", "age"], "value": ["A.B.", "abc"],
    ...                     "message": ["too long: 'A.B.'", "not an integer"]})
    >>> redact_identifier_values(iss)["value"].tolist()
    ['[redacted: identifier field]', 'abc']
    """
    ids = identifier_columns() if identifiers is None else frozenset(identifiers)
    out = issues.copy()
    if "column" not in out.columns:
        return out
    mask = out["column"].astype("string").isin(ids).fillna(False).to_numpy(bool)
    for c in ("value", "message"):
        if c in out.columns and mask.any():
            out[c] = out[c].astype(object)
            out.loc[mask, c] = REDACTED
    return out
