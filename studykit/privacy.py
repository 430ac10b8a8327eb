"""Identifiers (PHI) never leave the machine: the ONE place where they are masked.

Two kinds of protection, used by every export of studykit (result tables in every format,
the issue table ``tables/validation_issues.csv``, the report, ``studykit validate --report``
and its console listing):

* identifier **columns**: the fields flagged ``identifier = yes`` in the data dictionary
  (:func:`identifier_columns`) are dropped from every exported table
  (:func:`drop_identifier_columns`); a summary whose ``variable`` column names one of them is
  refused (its levels would be the identifier values);
* identifier **values**: :func:`identifier_values` collects the values of those fields from the
  raw data files - also from rows that are ragged (a cell missing or extra) or written with
  another delimiter, where a value lands in the wrong column - and :func:`mask_identifiers`
  replaces every text cell equal to one of them, and every occurrence inside a longer text
  (a message, a mis-split row), by :data:`REDACTED`, wherever it landed.

Notes
-----
Occurrences inside text are matched as whole tokens: the value must not be preceded or
followed by a letter or digit (``Q.A.`` is masked in ``"P03;Q.A.;1999-12-12"``, ``AB`` is
not masked inside ``"ABOVE"``). Values that mean "missing" (empty, ``NA``, the
variable's missing codes) are not identifiers.

Identifier **numbers** (a medical record number, a phone number, an identifier field of type
integer): a text cell that is a number equal to one (``"1234567.0"``, ``"1234567,0"`` for
``1234567``) is masked like the value itself. Numeric columns of computed tables are not
searched: their cells are statistics (an estimate, a count), not data values. A number
typed into a data column is stopped before it can reach a statistic: ``load_study`` rejects
a row whose numeric cell equals an identifier number of the same participant (error
``identifier_value``; another participant's: a warning), so no mean, minimum or maximum
is computed from it (:func:`identifier_numbers` is the comparison both use).
"""

from __future__ import annotations

import csv
import logging
import math
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from studykit.dictionary import DataDictionary, Variable, load_dictionary
from studykit.errors import InputError, StudykitError
from studykit.io import read_table

__all__ = [
    "REDACTED",
    "Identifiers",
    "identifier_columns",
    "identifier_values",
    "study_identifiers",
    "drop_identifier_columns",
    "mask_identifiers",
    "mask_text",
    "identifier_numbers",
    "as_number",
]

logger = logging.getLogger(__name__)

#: What a masked cell (or a masked part of a text) holds instead of the identifier value.
REDACTED = "[redacted: identifier]"

#: Tokens that mean "missing", never identifiers.
_MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "-", ".", "?"})
#: Delimiters a mis-delimited row may use (tried when a row does not fit the header).
_DELIMITERS = (",", ";", "\t", "|")
#: Table files read for identifier values (hypnograms hold no identifier fields).
_TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".xlsx", ".xlsm", ".parquet", ".pq")
_BINARY_SUFFIXES = (".xlsx", ".xlsm", ".parquet", ".pq")
_NUMBER = re.compile(r"[+-]?(\d+([.,]\d*)?|[.,]\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True)
class Identifiers:
    """What must never be exported: identifier column names and identifier values.

    Attributes
    ----------
    columns : frozenset of str
        Names of the identifier fields (dropped from every table).
    values : frozenset of str
        Identifier values found in the data (masked wherever they appear).
    """

    columns: frozenset[str] = frozenset()
    values: frozenset[str] = frozenset()


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


def _missing_codes(dictionary: DataDictionary, names: Iterable[str]) -> set[str]:
    codes: set[str] = set()
    for table in dictionary.tables:
        for v in dictionary.variables(table):
            if v.name in names:
                codes.update(c.strip().lower() for c in v.missing_codes)
    return codes


def _split(line: str, delimiter: str) -> list[str]:
    try:
        return [c.strip() for c in next(csv.reader([line], delimiter=delimiter), [])]
    except csv.Error:
        return [c.strip() for c in line.split(delimiter)]


@dataclass
class _Scan:
    values: set[str]  # identifier columns of clean rows
    safe: set[str]  # other columns of clean rows (codes, numbers, participant ids)
    candidates: set[str]  # cells of damaged rows (an identifier may have landed anywhere)


_BOOLEAN = frozenset({"true", "false", "yes", "no", "y", "n", "0", "1", "t", "f"})


def _plausible(cell: str, v: Variable | None) -> bool:
    """Whether ``cell`` could be a value of variable ``v`` (a coarse check: type and codes)."""
    c = cell.strip()
    if v is None or c.lower() in _MISSING or c in v.missing_codes:
        return True
    if v.codes:
        return c in {code for code, _ in v.codes}
    if v.type in ("integer", "number"):
        return bool(_NUMBER.fullmatch(c))
    if v.type == "boolean":
        return c.lower() in _BOOLEAN
    if v.type in ("date", "datetime"):
        return bool(re.match(r"\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}", c))
    return True


def _scan_text(path: Path, ids: frozenset[str], variables: dict[str, Variable]) -> _Scan:
    """Read a delimited text file line by line (ragged and mis-delimited rows too).

    A row is clean when it has as many cells as the header and every cell outside the
    identifier columns is plausible for its column; the cells of any other row are
    candidates (its identifier values may have landed in any cell).
    """
    raw = path.read_bytes()
    text = ""
    for encoding in ("utf-8-sig", "utf-16", "cp1252", "latin-1"):
        try:
            text = raw.decode(encoding)
            break
        except UnicodeError:
            continue
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if lines and lines[0].strip().lower().startswith("sep="):
        lines = lines[1:]
    scan = _Scan(set(), set(), set())
    if not lines:
        return scan
    header_delim, header = max(
        ((d, _split(lines[0], d)) for d in _DELIMITERS), key=lambda dh: len(dh[1])
    )
    positions = {j for j, h in enumerate(header) if h in ids}
    columns = [variables.get(h) for h in header]
    width = len(header)
    for line in lines[1:]:
        cells = _split(line, header_delim)
        clean = len(cells) == width and all(
            j in positions or _plausible(cell, columns[j]) for j, cell in enumerate(cells)
        )
        if clean:
            for j, cell in enumerate(cells):
                (scan.values if j in positions else scan.safe).add(cell)
        elif positions:
            scan.candidates.add(line.strip())
            for d in _DELIMITERS:
                scan.candidates.update(_split(line, d))
        else:  # no identifier column: only what is safe matters
            scan.safe.update(
                cell
                for j, cell in enumerate(cells[:width])
                if _plausible(cell, columns[j]) and columns[j] is not None
            )
    return scan


def _scan_frame(table: pd.DataFrame, ids: frozenset[str]) -> _Scan:
    scan = _Scan(set(), set(), set())
    for c in table.columns:
        cells = {str(v).strip() for v in table[c]}
        (scan.values if c in ids else scan.safe).update(cells)
    return scan


def identifier_values(
    paths: str | Path | Iterable[str | Path], *, dictionary: DataDictionary | None = None
) -> frozenset[str]:
    """Every identifier value in the data files (or study directories) given.

    Parameters
    ----------
    paths : path or iterable of paths
        Data files, or study directories (their table files are read; ``hypnograms/`` is
        not, hypnograms hold no identifier fields).
    dictionary : DataDictionary, optional
        Default: the packaged dictionary.

    Returns
    -------
    frozenset of str
        The values of the identifier columns. For delimited text, a row that does not fit
        the header of a file with identifier columns (a cell missing or extra, another
        delimiter) contributes its whole line and every cell (split at any of ``, ; TAB |``)
        that is not a number and not a value of a non-identifier column of a well-formed row
        of any file given (codes, participant ids): where such a row put its identifier value
        cannot be known, so every candidate is masked. A row with the right number of cells
        but a cell implausible for its column (not one of its codes, not a number for a
        numeric column: an identifier swapped into it) counts as damaged too. Unreadable
        files contribute nothing (validation reports them).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "roster.csv").write_text(
    ...     "participant_id,initials,sequence\\nP01,A.B.,KP\\nP02;C.D.;PK\\n")
    >>> _ = (d / "periods.csv").write_text("participant_id,period\\nP01,1\\nP02,1\\n")
    >>> sorted(identifier_values(d))
    ['A.B.', 'C.D.', 'P02;C.D.;PK', 'PK']
    """
    dd = load_dictionary() if dictionary is None else dictionary
    ids = identifier_columns(dd)
    missing = _MISSING | _missing_codes(dd, ids)
    variables: dict[str, Variable] = {}
    for table in dd.tables:
        for v in dd.variables(table):
            variables.setdefault(v.name, v)
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    files: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            files.extend(
                f
                for f in sorted(p.iterdir())
                if f.is_file() and f.suffix.lower() in _TABLE_SUFFIXES
            )
        elif p.is_file():
            files.append(p)
    values: set[str] = set()
    safe: set[str] = set()
    candidates: set[str] = set()
    for f in files:
        try:
            if f.suffix.lower() in _BINARY_SUFFIXES:
                scan = _scan_frame(read_table(f), ids)
            else:
                scan = _scan_text(f, ids, variables)
        except (OSError, StudykitError) as exc:
            logger.debug("identifier values: %s not read (%s)", f, exc)
            continue
        values |= scan.values
        safe |= scan.safe
        candidates |= scan.candidates
    values |= {c for c in candidates if c not in safe and not _NUMBER.fullmatch(c)}
    return frozenset(v for v in values if v.strip().lower() not in missing and v not in ids)


def study_identifiers(
    paths: str | Path | Iterable[str | Path], *, dictionary: DataDictionary | None = None
) -> Identifiers:
    """Identifier columns (from the dictionary) and values (from the files) of a study.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "roster.csv").write_text("participant_id,initials\\nP01,A.B.\\n")
    >>> ids = study_identifiers(d)
    >>> sorted(ids.values), "initials" in ids.columns
    (['A.B.'], True)
    """
    dd = load_dictionary() if dictionary is None else dictionary
    return Identifiers(identifier_columns(dd), identifier_values(paths, dictionary=dd))


def _pattern(values: Collection[str]) -> re.Pattern[str] | None:
    vals = sorted({v for v in values if v}, key=len, reverse=True)
    if not vals:
        return None
    alternation = "|".join(re.escape(v) for v in vals)
    return re.compile(rf"(?<![A-Za-z0-9])(?:{alternation})(?![A-Za-z0-9])")


def as_number(text: object) -> float | None:
    """The number a cell's text spells (``.`` or ``,`` decimal), else None.

    Examples
    --------
    >>> as_number(" 1234567.0 "), as_number("12,5"), as_number("A.B."), as_number("1e400")
    (1234567.0, 12.5, None, None)
    """
    if isinstance(text, bool):
        return None
    if isinstance(text, int | float):
        value = float(text)
    else:
        t = str(text).strip()
        if not _NUMBER.fullmatch(t):
            return None
        try:
            value = float(t.replace(",", "."))
        except ValueError:
            return None
    return value if math.isfinite(value) else None


def identifier_numbers(values: Iterable[str]) -> frozenset[float]:
    """The identifier values that are numbers, as numbers (compared numerically).

    Examples
    --------
    >>> sorted(identifier_numbers({"A.B.", "0012345", "2024-03-04", "98.6"}))
    [98.6, 12345.0]
    """
    out = set()
    for v in values:
        number = as_number(v)
        if number is not None:
            out.add(number)
    return frozenset(out)


def mask_text(text: str, values: Collection[str]) -> str:
    """``text`` with every whole-token occurrence of an identifier value replaced.

    Examples
    --------
    >>> mask_text("row 4: 'P03;Q.C.;1999-12-12;PK' has 1 cell", {"Q.C.", "1999-12-12"})
    "row 4: 'P03;[redacted: identifier];[redacted: identifier];PK' has 1 cell"
    """
    pattern = _pattern(values)
    return text if pattern is None else pattern.sub(REDACTED, text)


def drop_identifier_columns(data: pd.DataFrame, ids: Collection[str], name: str) -> pd.DataFrame:
    """``data`` without identifier columns; refuse a summary of an identifier field.

    Raises
    ------
    InputError
        When the table's ``variable`` column names an identifier field (its levels would be
        the identifier values).

    Examples
    --------
    >>> d = pd.DataFrame({"participant_id": ["P01"], "initials": ["AB"]})
    >>> drop_identifier_columns(d, {"initials"}, "demo").columns.tolist()
    ['participant_id']
    """
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


def mask_identifiers(
    frame: pd.DataFrame, identifiers: Identifiers, *, name: str = "table"
) -> pd.DataFrame:
    """THE masking of identifiers in a table about to leave the machine (any export).

    Parameters
    ----------
    frame : pandas.DataFrame
        Any table: a result table, its display version, an issue table.
    identifiers : Identifiers
        Identifier columns and values (:func:`study_identifiers`).
    name : str
        The table's name, for messages.

    Returns
    -------
    pandas.DataFrame
        A copy without identifier columns (:func:`drop_identifier_columns`), in which, for an
        issue table (a ``column`` column naming the checked field), the ``value``,
        ``message`` and ``example`` of issues about an identifier field are
        :data:`REDACTED`, and every text cell equal to an identifier value is
        :data:`REDACTED` and every whole-token occurrence inside a longer text replaced by
        it; a text cell that is a number equal to an identifier number too (``"1234567.0"``).
        Column names are masked the same way. Numeric columns are left as they are
        (statistics; see the module's Notes).

    Raises
    ------
    InputError
        The table summarizes an identifier field (see :func:`drop_identifier_columns`).

    Examples
    --------
    >>> iss = pd.DataFrame({"column": ["initials", "sequence"], "value": ["A.B.", "P03;C.D."],
    ...                     "message": ["too long: 'A.B.'", "not a code"]})
    >>> ids = Identifiers(frozenset({"initials"}), frozenset({"A.B.", "C.D."}))
    >>> mask_identifiers(iss, ids)["value"].tolist()
    ['[redacted: identifier]', 'P03;[redacted: identifier]']
    """
    out = drop_identifier_columns(frame, identifiers.columns, name).copy()
    if "column" in out.columns and identifiers.columns:
        rows = out["column"].astype("string").isin(identifiers.columns).fillna(False)
        rows_np = rows.to_numpy(bool)
        if rows_np.any():
            for c in ("value", "message", "example"):
                if c in out.columns:
                    out[c] = out[c].astype(object)
                    out.loc[rows_np, c] = REDACTED
    pattern = _pattern(identifiers.values)
    if pattern is None:
        return out
    values = identifiers.values
    numbers = identifier_numbers(values)

    def cell(v: object) -> object:
        if not isinstance(v, str):
            return v
        if v in values or v.strip() in values:
            return REDACTED
        if numbers and as_number(v) in numbers:  # the same number written otherwise
            return REDACTED
        return pattern.sub(REDACTED, v)

    for c in out.columns:
        s = out[c]
        if s.dtype == object or pd.api.types.is_string_dtype(s):
            out[c] = s.map(cell, na_action="ignore")
    out.columns = [cell(c) if isinstance(c, str) else c for c in out.columns]
    return out
