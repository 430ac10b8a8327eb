"""Parse and check study tables against the data dictionary; nothing is silently dropped.

:func:`validate_table` works in two passes, both vectorized over whole columns:

1. **Parse** every cell of every known column to the dictionary type (integer, number,
   boolean, date, datetime, categorical with the dictionary's codes, string). Each cell that
   fails is recorded; missing cells (empty, ``NA`` ... or a variable's missing codes such as
   ``-99``) become missing values.
2. **Check** the parsed values: required, range, allowed codes, unique keys and cross-field
   rules (lights on after lights off; TST <= SPT <= TIB; N1 + N2 + N3 + REM = TST;
   SE = TST / TIB; stage percentages = minutes / TST; ...).

Every problem becomes one row of the issue table (:data:`ISSUE_COLUMNS`): file, row number
as in the file, participant, night, column, raw value, rule, severity and a message saying
how to fix it. Rows with at least one *error* are rejected (kept in ``rejected`` with their
reasons); the others are accepted, typed, in ``data``. Warnings never reject a row. Rows
read = rows accepted + rows rejected, always.

:func:`load_study` reads a study directory and adds the cross-table rules: every
participant is in the roster, treatment equals the periods table and is constant within a
participant x period, the roster's sequence matches the periods' treatments, and each
participant x period has a baseline night (a warning when not).

Rule codes (the ``rule`` column)
--------------------------------
``encoding``, ``empty_rows``, ``column_name``, ``unknown_column`` (warnings about the
file);
``missing_column``; ``type``, ``decimal_comma``, ``date_format`` (cell does not parse);
``required``, ``missing_code`` (warning: a required value coded missing); ``range``;
``code``, ``code_case`` (warning: code matched ignoring case); ``unique_key``;
``lights_order``, ``tst_le_tib``, ``tst_le_spt``, ``spt_le_tib``, ``stage_sum``,
``se_consistency``, ``pct_consistency``, ``night_index``, ``dose_treatment``,
``withdrawal_reason`` (cross-field); ``reference``, ``treatment_constant``,
``treatment_periods``, ``sequence_treatment``, ``baseline_night``, ``hypnogram``,
``file``, ``no_nights`` (cross-table, :func:`load_study`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from studykit.dictionary import MISSING_TOKENS, DataDictionary, Variable, load_dictionary
from studykit.errors import InputError, StudykitError
from studykit.io import EXCEL_SUFFIXES, PARQUET_SUFFIXES, read_table

__all__ = [
    "ISSUE_COLUMNS",
    "MINUTES_TOLERANCE",
    "PERCENT_TOLERANCE",
    "ValidationResult",
    "Study",
    "validate_table",
    "load_study",
    "readme_says_simulated",
    "empty_issues",
    "infer_table",
    "hypnogram_keys",
    "read_hypnogram_file",
]

logger = logging.getLogger(__name__)

#: Columns of every issue table.
ISSUE_COLUMNS = (
    "file",
    "row",
    "participant_id",
    "night",
    "column",
    "value",
    "rule",
    "severity",
    "message",
)
#: Tolerance (minutes) of the sum rules: one 30-s epoch, which also covers values rounded to
#: 0.1 min.
MINUTES_TOLERANCE = 0.5
#: Tolerance (percentage points) of SE = TST / TIB and stage % = minutes / TST: covers values
#: rounded to whole percent.
PERCENT_TOLERANCE = 0.5

_TRUE = frozenset({"1", "true", "t", "yes", "y"})
_FALSE = frozenset({"0", "false", "f", "no", "n"})
_DATE_RE = r"^\d{4}-\d{2}-\d{2}(?:[T ]00:00(?::00(?:\.0+)?)?)?$"
_DATETIME_RE = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?$"
_OTHER_DATE_RE = r"^\d{1,4}[/.\-]\d{1,2}[/.\-]\d{1,4}"
_DECIMAL_COMMA_RE = r"^[+-]?\d{1,3}(?:\.\d{3})*,\d+$|^[+-]?\d+,\d+$"
_MAX_INT = 2**53


def empty_issues() -> pd.DataFrame:
    """An issue table with no rows (the columns of :data:`ISSUE_COLUMNS`).

    Examples
    --------
    >>> list(empty_issues().columns) == list(ISSUE_COLUMNS)
    True
    """
    return pd.DataFrame(
        {
            "file": pd.Series([], dtype=object),
            "row": pd.Series([], dtype="Int64"),
            "participant_id": pd.Series([], dtype=object),
            "night": pd.Series([], dtype=object),
            "column": pd.Series([], dtype=object),
            "value": pd.Series([], dtype=object),
            "rule": pd.Series([], dtype=object),
            "severity": pd.Series([], dtype=object),
            "message": pd.Series([], dtype=object),
        }
    )


@dataclass
class ValidationResult:
    """What :func:`validate_table` found.

    Attributes
    ----------
    table : str
        The dictionary table validated against.
    source : str
        The file (or label) the rows came from.
    data : pandas.DataFrame
        Accepted rows, typed: ``Int64`` integers, ``float64`` numbers, ``boolean``,
        ``datetime64`` dates, ``category`` with the dictionary's codes as categories in
        dictionary order (first = reference level), strings. Index ``row``: the row number
        in the file. Columns in dictionary order; unknown columns are left out (they are
        reported as warnings).
    rejected : pandas.DataFrame
        Rejected rows with their raw values plus ``reasons`` (``rule: column; ...``).
    issues : pandas.DataFrame
        One row per problem, columns :data:`ISSUE_COLUMNS`.
    summary : dict
        ``file, table, rows_read, rows_accepted, rows_rejected, errors, warnings``.
    raw : pandas.DataFrame or None
        The input as read (strings for files), kept so that rows rejected later by
        cross-table rules (:func:`load_study`) keep their raw values.
    raw_rows : numpy.ndarray or None
        The row number of each row of ``raw``.
    """

    table: str
    source: str
    data: pd.DataFrame
    rejected: pd.DataFrame
    issues: pd.DataFrame
    summary: dict[str, Any]
    raw: pd.DataFrame | None = field(default=None, repr=False)
    raw_rows: np.ndarray | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not bool((self.issues["severity"] == "error").any())

    def raise_for_errors(self) -> ValidationResult:
        """Raise :class:`~studykit.errors.ValidationError` when there are errors; else return self.

        Examples
        --------
        >>> import pandas as pd
        >>> frame = pd.DataFrame({"participant_id": ["P01"], "period": [1], "day": [0], "kss": [12]})
        >>> validate_table(frame, "diary").raise_for_errors()
        Traceback (most recent call last):
        ...
        studykit.errors.ValidationError: <data> (table diary): 1 error(s) in 1 of 1 rows; first: row 1, column kss = '12': above the maximum 9 points (allowed: 1 to 9 points); correct the value or leave it empty if unknown
        """
        from studykit.errors import ValidationError

        if not self.ok:
            errors = self.issues[self.issues["severity"] == "error"]
            raise ValidationError(
                f"{self.source} (table {self.table}): {len(errors)} error(s) in "
                f"{self.summary['rows_rejected']} of {self.summary['rows_read']} rows; first: "
                f"{_describe_issue(errors.iloc[0])}",
                self.issues,
            )
        return self


def _describe_issue(issue: pd.Series) -> str:
    where = f"row {issue['row']}" if pd.notna(issue["row"]) else "file"
    return f"{where}, column {issue['column']} = {issue['value']!r}: {issue['message']}"


# ---------------------------------------------------------------------------------------
# issue collection
# ---------------------------------------------------------------------------------------
class _Issues:
    """Collects issues as positions (0-based row positions; -1 = not tied to a row)."""

    def __init__(self, raw: pd.DataFrame) -> None:
        self.raw = raw
        self.parts: list[pd.DataFrame] = []

    def add(
        self,
        positions: np.ndarray,
        column: str,
        rule: str,
        severity: str,
        message: str | pd.Series | np.ndarray,
        values: pd.Series | np.ndarray | str | None = None,
    ) -> None:
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size == 0:
            return
        if values is None:
            if column in self.raw.columns and (positions >= 0).all():
                values = _as_text(self.raw[column].iloc[positions]).to_numpy()
            else:
                values = ""
        self.parts.append(
            pd.DataFrame(
                {
                    "pos": positions,
                    "column": column,
                    "value": np.asarray(values, dtype=object)
                    if not isinstance(values, str)
                    else values,
                    "rule": rule,
                    "severity": severity,
                    "message": np.asarray(message, dtype=object)
                    if not isinstance(message, str)
                    else message,
                }
            )
        )

    def frame(self) -> pd.DataFrame:
        if not self.parts:
            return pd.DataFrame(
                {
                    c: pd.Series([], dtype=object)
                    for c in ("column", "value", "rule", "severity", "message")
                }
                | {"pos": pd.Series([], dtype=np.int64)}
            )
        return pd.concat(self.parts, ignore_index=True)


def _as_text(s: pd.Series) -> pd.Series:
    """Values as display strings ('' for missing)."""
    if s.dtype == object or isinstance(s.dtype, pd.StringDtype):
        return s.astype(object).where(s.notna(), "").astype(str)
    return s.astype(str).where(s.notna(), "")


# ---------------------------------------------------------------------------------------
# parsing one column
# ---------------------------------------------------------------------------------------
@dataclass
class _Parsed:
    values: pd.Series  # typed
    missing: np.ndarray  # bool: missing (blank / NA / missing code)
    coded_missing: np.ndarray  # bool: a missing code of the variable


def _strings(s: pd.Series) -> pd.Series:
    """Raw column -> stripped strings with '' for missing."""
    if isinstance(s.dtype, pd.StringDtype) or s.dtype == object:
        out = s.astype("str") if s.dtype == object else s
        out = out.fillna("")
    else:
        out = s.astype(str).where(s.notna(), "")
    return out.str.strip()


def _parse_column(raw: pd.Series, v: Variable, issues: _Issues, *, decimal: str) -> _Parsed:
    n = len(raw)
    typed_numeric = pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(
        raw.dtype
    )
    if v.type in ("integer", "number") and typed_numeric:
        num = raw.astype("float64").to_numpy(copy=True)
        missing = np.isnan(num)
        coded = np.zeros(n, dtype=bool)
        for mc in v.missing_codes:
            try:
                coded |= num == float(mc)
            except ValueError:
                pass
        missing |= coded
        bad = ~missing & ~np.isfinite(num)
        if v.type == "integer":
            with np.errstate(invalid="ignore"):
                bad |= (
                    ~missing
                    & np.isfinite(num)
                    & ((num != np.round(num)) | (np.abs(num) > _MAX_INT))
                )
        _add_type_issue(issues, np.flatnonzero(bad), v, raw)
        num[missing | bad] = np.nan
        return _Parsed(_numeric_series(num, v, raw.index), missing, coded)
    if v.type == "boolean" and pd.api.types.is_bool_dtype(raw.dtype):
        missing = raw.isna().to_numpy()
        return _Parsed(raw.astype("boolean"), missing, np.zeros(n, dtype=bool))
    if v.type in ("date", "datetime") and pd.api.types.is_datetime64_any_dtype(raw.dtype):
        values = raw
        if getattr(raw.dt, "tz", None) is not None:
            values = raw.dt.tz_localize(None)
        if v.type == "date":
            values = values.dt.normalize()
        return _Parsed(values, raw.isna().to_numpy(), np.zeros(n, dtype=bool))

    # Parse each distinct value once, then broadcast: columns of epoch tables have few
    # distinct values (epoch numbers, stages), so this is much faster than parsing every cell.
    codes, text = _factorize(raw)
    parsed = _parse_text(text, v, _UniqueIssues(issues, codes), decimal=decimal)
    return _Parsed(
        parsed.values.take(codes).reset_index(drop=True),
        parsed.missing[codes],
        parsed.coded_missing[codes],
    )


def _factorize(raw: pd.Series) -> tuple[np.ndarray, pd.Series]:
    """Codes into the distinct values (stripped strings; the last one is '' for missing)."""
    codes, uniques = pd.factorize(raw, use_na_sentinel=True)
    text = _strings(pd.Series(np.asarray(uniques, dtype=object), dtype=object))
    text = pd.concat([text, pd.Series([""], dtype=text.dtype)], ignore_index=True)
    codes = np.where(codes < 0, len(text) - 1, codes)
    return codes, text


class _UniqueIssues:
    """Issue sink for positions into distinct values: expands them to row positions."""

    def __init__(self, issues: _Issues, codes: np.ndarray) -> None:
        self.issues = issues
        self.codes = codes

    def add(self, positions, column, rule, severity, message, values=None) -> None:
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size == 0:
            return
        mask = np.zeros(int(self.codes.max()) + 1, dtype=bool)
        mask[positions] = True
        self.issues.add(np.flatnonzero(mask[self.codes]), column, rule, severity, message)


def _parse_text(text: pd.Series, v: Variable, issues: Any, *, decimal: str) -> _Parsed:
    """Parse stripped strings (one per distinct value) to the variable's type."""
    n = len(text)
    col = v.name
    raw = text
    missing_tokens = text.isin(MISSING_TOKENS - set(v.levels)).to_numpy()  # a code wins
    coded = text.isin(v.missing_codes).to_numpy() if v.missing_codes else np.zeros(n, dtype=bool)
    missing = missing_tokens | coded
    present = ~missing

    if v.type in ("integer", "number"):
        work = text
        if decimal != ".":
            work = text.str.replace(decimal, ".", regex=False)
        num = pd.to_numeric(work.where(present, ""), errors="coerce").to_numpy(
            dtype="float64", na_value=np.nan, copy=True
        )
        bad = present & ~np.isfinite(num)
        if v.type == "integer":
            with np.errstate(invalid="ignore"):
                bad |= (
                    present & np.isfinite(num) & ((num != np.round(num)) | (np.abs(num) > _MAX_INT))
                )
        bad_pos = np.flatnonzero(bad)
        if bad_pos.size:
            bad_text = text.iloc[bad_pos]
            comma = (
                bad_text.str.match(_DECIMAL_COMMA_RE).to_numpy()
                if decimal == "."
                else np.zeros(bad_pos.size, dtype=bool)
            )
            issues.add(
                bad_pos[comma],
                col,
                "decimal_comma",
                "error",
                "uses a comma as decimal (or thousands) separator: write the number with a "
                "decimal point and no thousands separator (e.g. 7.5, 1234), or read the file "
                "with decimal=',' (CLI: --decimal ,)",
            )
            _add_type_issue(issues, bad_pos[~comma], v, raw)
        num[~present | bad] = np.nan
        return _Parsed(_numeric_series(num, v, raw.index), missing, coded)

    if v.type == "boolean":
        low = text.str.lower()
        is_true = low.isin(_TRUE).to_numpy()
        is_false = low.isin(_FALSE).to_numpy()
        bad = present & ~is_true & ~is_false
        _add_type_issue(issues, np.flatnonzero(bad), v, raw)
        arr = pd.array(np.where(is_true, True, False), dtype="boolean")
        arr[~present | bad] = pd.NA
        return _Parsed(pd.Series(arr, index=raw.index), missing, coded)

    if v.type in ("date", "datetime"):
        pattern = _DATE_RE if v.type == "date" else _DATETIME_RE
        iso = text.str.match(pattern).to_numpy() & present
        parsed = pd.to_datetime(text.where(iso, None), format="ISO8601", errors="coerce")
        if v.type == "date":
            parsed = parsed.dt.normalize()
        not_iso = np.flatnonzero(present & ~iso)
        impossible = np.flatnonzero(iso & parsed.isna().to_numpy())
        if not_iso.size:
            other = text.iloc[not_iso].str.match(_OTHER_DATE_RE).to_numpy()
            if v.type == "datetime":
                other = other & ~text.iloc[not_iso].str.match(_DATE_RE).to_numpy()
            mixed = bool(iso.any())
            fmt = "YYYY-MM-DD" if v.type == "date" else "YYYY-MM-DDTHH:MM[:SS]"
            msg_other = (
                f"date not in ISO 8601 format{' (the column mixes date formats)' if mixed else ''}: "
                f"day/month order is ambiguous; write it as {fmt} (e.g. "
                f"{'2024-03-05' if v.type == 'date' else '2024-03-05T22:30'})"
            )
            issues.add(not_iso[other], col, "date_format", "error", msg_other)
            if v.type == "datetime":
                date_only = text.iloc[not_iso].str.match(_DATE_RE).to_numpy()
                issues.add(
                    not_iso[~other & date_only],
                    col,
                    "date_format",
                    "error",
                    "a date without a time: write date and clock time as YYYY-MM-DDTHH:MM "
                    "(e.g. 2024-03-05T22:30)",
                )
                rest = ~other & ~date_only
            else:
                rest = ~other
            _add_type_issue(issues, not_iso[rest], v, raw)
        issues.add(
            impossible,
            col,
            "type",
            "error",
            "not a real calendar date or clock time (e.g. 2024-02-30 or 25:00); correct it",
        )
        return _Parsed(pd.Series(parsed.to_numpy(), index=raw.index), missing, coded)

    if v.type == "categorical":
        levels = v.levels
        cat_codes = pd.Index(levels, dtype=object).get_indexer(text.astype(object))
        cat_codes[~present] = -1
        cat = pd.Categorical.from_codes(cat_codes, categories=levels)
        unmatched = present & (cat.codes < 0)
        pos = np.flatnonzero(unmatched)
        if pos.size:
            lower = {c.lower(): c for c in levels}
            fixed = text.iloc[pos].str.lower().map(lower)
            ok = fixed.notna().to_numpy()
            if ok.any():
                issues.add(
                    pos[ok],
                    col,
                    "code_case",
                    "warning",
                    "code matched ignoring upper/lower case; write it exactly as in the "
                    f"dictionary ({', '.join(levels)})",
                )
                codes = cat.codes.copy()
                codes[pos[ok]] = [levels.index(c) for c in fixed[ok]]
                cat = pd.Categorical.from_codes(codes, categories=levels)
            issues.add(pos[~ok], col, "code", "error", _codes_message(v))
        return _Parsed(pd.Series(cat, index=raw.index), missing, coded)

    # string
    return _Parsed(text.where(present, None).astype("str"), missing, coded)


def _as_categorical(values: pd.Series, levels: list[str]) -> pd.Series:
    """Values (already checked to be codes or missing) as a categorical with ``levels``."""
    codes = pd.Index(levels, dtype=object).get_indexer(values.astype(object))
    return pd.Series(pd.Categorical.from_codes(codes, categories=levels), index=values.index)


def _numeric_series(num: np.ndarray, v: Variable, index: pd.Index) -> pd.Series:
    if v.type == "integer":
        arr = pd.array(num, dtype="Float64")
        return pd.Series(arr.astype("Int64"), index=index)
    return pd.Series(num, index=index, dtype="float64")


def _codes_message(v: Variable) -> str:
    shown = " | ".join(f"{c} = {lab}" for c, lab in v.codes[:12])
    more = " ..." if len(v.codes) > 12 else ""
    return f"not an allowed code; use one of: {shown}{more} (see data_dictionary.csv)"


def _add_type_issue(issues: _Issues, pos: np.ndarray, v: Variable, raw: pd.Series) -> None:
    if pos.size == 0:
        return
    what = {
        "integer": "not a whole number; write digits only (e.g. 42)",
        "number": "not a number; write digits with '.' as the decimal point (e.g. 7.5)",
        "boolean": "not a yes/no value; write 1 or 0 (also accepted: yes/no, true/false)",
        "date": "not a date; write it as YYYY-MM-DD (e.g. 2024-03-05)",
        "datetime": "not a date and time; write it as YYYY-MM-DDTHH:MM[:SS] (e.g. 2024-03-05T22:30)",
    }[v.type]
    if v.missing_codes:
        what += f"; leave it empty or write {' / '.join(v.missing_codes)} if missing"
    issues.add(pos, v.name, "type", "error", what)


# ---------------------------------------------------------------------------------------
# validate_table
# ---------------------------------------------------------------------------------------
def validate_table(
    data_or_path: pd.DataFrame | str | Path,
    table: str,
    *,
    dictionary: DataDictionary | None = None,
    source: str | None = None,
    decimal: str = ".",
) -> ValidationResult:
    """Parse and check one table against the data dictionary.

    Parameters
    ----------
    data_or_path : DataFrame, str or Path
        A file (read with :func:`studykit.io.read_table`) or a frame. A frame may hold
        strings or already-typed columns. Row numbers: the frame's index when it came from
        ``read_table`` (``attrs["source"]`` set), else the 1-based position.
    table : str
        The dictionary table (``roster``, ``periods``, ``nights``, ``epochs``, ``diary``).
    dictionary : DataDictionary, optional
        Default: :func:`studykit.dictionary.load_dictionary`.
    source : str, optional
        Label for the ``file`` column of issues (default: the path, or ``attrs["source"]``,
        or ``"<data>"``).
    decimal : {".", ","}
        Decimal separator of numbers written as text. With ``","`` a comma is read as the
        decimal point (a point still is one); thousands separators are never accepted.

    Returns
    -------
    ValidationResult
        ``.data`` (typed accepted rows), ``.rejected``, ``.issues``, ``.summary``.

    Raises
    ------
    InputError
        The file cannot be read, or none of its columns belongs to ``table`` (no header,
        wrong delimiter or wrong table).
    DictionaryError
        ``table`` is not in the dictionary.

    Notes
    -----
    Missing values: empty cells and ``NA``, ``N/A``, ``NaN``, ``NULL``, ``None``, ``.``, plus
    the variable's ``missing_codes``. A required value given as a missing code is a warning
    (``missing_code``), an empty one an error (``required``). Dates are ISO 8601 only
    (``YYYY-MM-DD``; datetimes ``YYYY-MM-DDTHH:MM[:SS]``, local clock time), because
    ``05/03/2024`` is ambiguous. Leading and trailing spaces are ignored. A column name that
    matches a dictionary name only ignoring case or spaces is accepted with a warning.

    Examples
    --------
    >>> import pandas as pd
    >>> raw = pd.DataFrame({"participant_id": ["P01", "P01", "P02"], "period": ["1", "1", "x"],
    ...                     "day": ["0", "1", "0"], "kss": ["3", "12", "-99"]})
    >>> res = validate_table(raw, "diary")
    >>> res.summary["rows_read"], res.summary["rows_accepted"], res.summary["rows_rejected"]
    (3, 1, 2)
    >>> res.issues[["row", "column", "value", "rule", "severity"]].values.tolist()
    [[2, 'kss', '12', 'range', 'error'], [3, 'period', 'x', 'type', 'error']]
    >>> res.data.dtypes["kss"]
    Int64Dtype()
    """
    dd = dictionary if dictionary is not None else load_dictionary()
    variables = {v.name: v for v in dd.variables(table)}
    if isinstance(data_or_path, pd.DataFrame):
        raw = data_or_path
        src = source or raw.attrs.get("source") or "<data>"
        from_file = "source" in raw.attrs
    else:
        raw = read_table(data_or_path)
        src = source or str(data_or_path)
        from_file = True
    if decimal not in (".", ","):
        raise InputError(f"decimal must be '.' or ','; got {decimal!r}.")
    n = len(raw)
    rows = (
        np.asarray(raw.index, dtype=np.int64)
        if from_file and pd.api.types.is_integer_dtype(raw.index.dtype)
        else np.arange(1, n + 1, dtype=np.int64)
    )
    issues = _Issues(raw)

    # -- columns ------------------------------------------------------------------------
    colnames = [str(c).strip() for c in raw.columns]
    dupes = sorted({c for c in colnames if colnames.count(c) > 1})
    if dupes:
        raise InputError(
            f"{src} has duplicate column names: {', '.join(dupes)}. Each column needs its own "
            "name; rename or delete the repeated column(s)."
        )
    mapping: dict[str, str] = {}  # raw column -> variable
    norm = {_normalize_name(k): k for k in variables}
    for raw_col, name in zip(raw.columns, colnames, strict=True):
        if name in variables:
            mapping[raw_col] = name
    for raw_col, name in zip(raw.columns, colnames, strict=True):
        if raw_col in mapping:
            continue
        target = norm.get(_normalize_name(name))
        if target is not None and target not in mapping.values():
            mapping[raw_col] = target
            issues.add(
                np.array([-1]),
                target,
                "column_name",
                "warning",
                f"column {name!r} read as {target!r}; rename it to the dictionary name",
                values=name,
            )
        else:
            issues.add(
                np.array([-1]),
                name,
                "unknown_column",
                "warning",
                f"column {name!r} is not in the data dictionary for table {table!r}: it is "
                "ignored. Rename it to a dictionary name, or add it to data_dictionary.csv",
                values="",
            )
    if not mapping:
        raise InputError(_no_columns_message(src, table, colnames, list(variables)))
    if encoding := raw.attrs.get("encoding"):
        if encoding in ("cp1252", "latin-1"):
            issues.add(
                np.array([-1]),
                "",
                "encoding",
                "warning",
                f"the file is not UTF-8; it was read as {encoding} (Western European). Check "
                "accented characters and save the file as 'CSV UTF-8'",
            )

    empty_rows = raw.attrs.get("empty_rows") or []
    if empty_rows:
        shown = ", ".join(str(r) for r in empty_rows[:10]) + (
            " ..." if len(empty_rows) > 10 else ""
        )
        issues.add(
            np.array([-1]),
            "",
            "empty_rows",
            "warning",
            f"{len(empty_rows)} empty row(s) skipped (row {shown}): they hold no value",
            values="",
        )

    frame = raw.rename(columns=mapping)
    issues.raw = frame  # raw values of renamed columns are found under their dictionary name
    frame = (
        frame.loc[:, [c for c in frame.columns if c in variables]]
        if len(mapping) < len(raw.columns)
        else frame
    )

    # -- parse + per-cell checks --------------------------------------------------------
    parsed: dict[str, pd.Series] = {}
    missing_all = np.zeros(n, dtype=bool)
    for name, v in variables.items():
        if name not in frame.columns:
            if v.required:
                issues.add(
                    np.array([-1]),
                    name,
                    "missing_column",
                    "error",
                    f"required column {name!r} ({v.label}) is missing: every row is rejected. "
                    "Add the column (see data_dictionary.csv)",
                    values="",
                )
                missing_all[:] = True
            continue
        col = frame[name]
        p = _parse_column(col, v, issues, decimal=decimal)
        values = p.values
        values.index = pd.RangeIndex(n)
        parsed[name] = values
        if v.required:
            blank = p.missing & ~p.coded_missing
            issues.add(
                np.flatnonzero(blank),
                name,
                "required",
                "error",
                f"required value is missing; fill in {v.label.lower()}"
                + (
                    f" (or {' / '.join(v.missing_codes)} if truly unknown)"
                    if v.missing_codes
                    else ""
                ),
            )
            issues.add(
                np.flatnonzero(p.coded_missing),
                name,
                "missing_code",
                "warning",
                f"required value coded as missing ({' / '.join(v.missing_codes)}); analyses will "
                "treat it as missing",
            )
        if v.minimum is not None or v.maximum is not None:
            out_of_range = _check_range(values, v, issues)
        else:
            out_of_range = np.zeros(n, dtype=bool)
        if v.type == "integer" and v.codes:
            allowed = [int(c) for c in v.levels]
            bad = values.notna().to_numpy() & ~values.isin(allowed).to_numpy() & ~out_of_range
            issues.add(np.flatnonzero(bad), name, "code", "error", _codes_message(v))

    typed = pd.DataFrame(parsed, index=pd.RangeIndex(n))

    # -- keys -------------------------------------------------------------------------
    keys = [k for k in dd.keys(table) if k in typed.columns]
    if keys and len(keys) == len(dd.keys(table)):
        _check_keys(typed, raw.rename(columns=mapping), keys, issues)

    # -- cross-field rules ----------------------------------------------------------------
    for rule in _ROW_RULES.get(table, ()):
        rule(typed, issues)

    return _finish(
        raw=raw,
        typed=typed,
        issues=issues,
        rows=rows,
        table=table,
        source=src,
        dictionary=dd,
        reject_all=missing_all,
        mapping=mapping,
    )


def _normalize_name(name: str) -> str:
    return re.sub(r"[\s\-.]+", "_", name.strip().lower())


def _no_columns_message(src: str, table: str, colnames: list[str], expected: list[str]) -> str:
    shown = ", ".join(repr(c) for c in colnames[:8]) + (" ..." if len(colnames) > 8 else "")
    hint = ""
    if len(colnames) == 1 and re.search(r"[\s:/]", colnames[0]):
        hint = (
            " The header was read as a single column, so the file seems to use a delimiter "
            "studykit does not recognise (spaces? colons?): save it with commas, tabs or "
            "semicolons between the columns."
        )
    elif any(_looks_like_data(c) for c in colnames):
        hint = (
            " The first line looks like data, not column names: the file seems to have no "
            f"header row. Add a first line with the column names ({', '.join(expected[:6])}"
            f"{', ...' if len(expected) > 6 else ''})."
        )
    else:
        hint = " Is this the right file for this table (or the right --table)?"
    return (
        f"{src}: none of its columns ({shown}) belongs to table {table!r}, whose columns are "
        f"{', '.join(expected[:10])}{', ...' if len(expected) > 10 else ''}.{hint}"
    )


def _looks_like_data(cell: str) -> bool:
    return bool(
        re.fullmatch(r"[+-]?\d+(?:[.,]\d+)?|\d{4}-\d{2}-\d{2}.*|[A-Za-z]{1,3}\d+", cell.strip())
    )


def _check_range(values: pd.Series, v: Variable, issues: _Issues) -> np.ndarray:
    """Add range issues; return the mask of out-of-range values."""
    out = np.zeros(len(values), dtype=bool)
    unit = f" {v.unit}" if v.unit else ""
    lo, hi = v.minimum, v.maximum
    if v.type in ("date", "datetime"):
        lo = pd.Timestamp(lo) if lo is not None else None
        hi = pd.Timestamp(hi) if hi is not None else None
        arr = values
    else:
        arr = values.astype("float64") if v.type == "integer" else values
    lo_text = _fmt(v.minimum) if v.minimum is not None else "-inf"
    hi_text = _fmt(v.maximum) if v.maximum is not None else "inf"
    allowed = f"allowed: {lo_text} to {hi_text}{unit}"
    if lo is not None:
        below = (arr < lo).fillna(False).to_numpy(dtype=bool)
        out |= below
        issues.add(
            np.flatnonzero(below),
            v.name,
            "range",
            "error",
            f"below the minimum {_fmt(v.minimum)}{unit} ({allowed}); correct the value or "
            "leave it empty if unknown",
        )
    if hi is not None:
        above = (arr > hi).fillna(False).to_numpy(dtype=bool)
        out |= above
        issues.add(
            np.flatnonzero(above),
            v.name,
            "range",
            "error",
            f"above the maximum {_fmt(v.maximum)}{unit} ({allowed}); correct the value or "
            "leave it empty if unknown",
        )
    return out


def _fmt(x: Any) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def _check_keys(
    typed: pd.DataFrame, renamed_raw: pd.DataFrame, keys: list[str], issues: _Issues
) -> None:
    complete = typed[keys].notna().all(axis=1).to_numpy()
    keyframe = typed[keys]
    dup = keyframe.duplicated(keep=False).to_numpy() & complete
    pos = np.flatnonzero(dup)
    if pos.size == 0:
        return
    sub = keyframe.iloc[pos]
    counts = sub.groupby(keys, observed=True, sort=False)[keys[0]].transform("size").to_numpy()
    label = _as_text(renamed_raw[keys[0]].iloc[pos]).to_numpy(dtype=object)
    for k in keys[1:]:
        label = label + "/" + _as_text(renamed_raw[k].iloc[pos]).to_numpy(dtype=object)
    messages = pd.Series(counts).map(
        lambda c: (
            f"duplicate key: {c} rows share this {' x '.join(keys)}; keep one row per key "
            "(or fix the key values)"
        )
    )
    issues.add(pos, ", ".join(keys), "unique_key", "error", messages.to_numpy(), values=label)


# ---------------------------------------------------------------------------------------
# cross-field rules, one function per table
# ---------------------------------------------------------------------------------------
def _num(typed: pd.DataFrame, name: str) -> np.ndarray | None:
    if name not in typed.columns:
        return None
    return typed[name].astype("float64").to_numpy(na_value=np.nan)


def _rule_values(typed: pd.DataFrame, names: list[str], pos: np.ndarray) -> np.ndarray:
    out = np.full(pos.size, "", dtype=object)
    for i, n in enumerate(names):
        part = _as_text(typed[n].iloc[pos]).to_numpy(dtype=object)
        out = out + ("; " if i else "") + n + "=" + part
    return out


def _nights_rules(typed: pd.DataFrame, issues: _Issues) -> None:
    if {"lights_off", "lights_on"} <= set(typed.columns):
        off, on = typed["lights_off"], typed["lights_on"]
        bad = (on <= off).fillna(False).to_numpy(dtype=bool)
        pos = np.flatnonzero(bad)
        issues.add(
            pos,
            "lights_off, lights_on",
            "lights_order",
            "error",
            "lights on is not after lights off; check the dates (a night crosses midnight: "
            "lights on is on the next day)",
            values=_rule_values(typed, ["lights_off", "lights_on"], pos),
        )
        long = ((on - off) > pd.Timedelta(hours=24)).fillna(False).to_numpy(dtype=bool)
        pos = np.flatnonzero(long)
        issues.add(
            pos,
            "lights_off, lights_on",
            "lights_order",
            "warning",
            "more than 24 h between lights off and lights on; check the dates",
            values=_rule_values(typed, ["lights_off", "lights_on"], pos),
        )
    tst, tib, spt = _num(typed, "tst_min"), _num(typed, "tib_min"), _num(typed, "spt_min")
    tol = MINUTES_TOLERANCE + 1e-9

    def greater(a, b, names, rule, msg):
        if a is None or b is None:
            return
        with np.errstate(invalid="ignore"):
            pos = np.flatnonzero(a > b + tol)
        issues.add(
            pos, ", ".join(names), rule, "error", msg, values=_rule_values(typed, names, pos)
        )

    greater(
        tst,
        tib,
        ["tst_min", "tib_min"],
        "tst_le_tib",
        "total sleep time exceeds time in bed (TST <= TIB by definition); recompute both "
        "from the hypnogram",
    )
    greater(
        tst,
        spt,
        ["tst_min", "spt_min"],
        "tst_le_spt",
        "total sleep time exceeds the sleep period time (TST <= SPT); recompute from the hypnogram",
    )
    greater(
        spt,
        tib,
        ["spt_min", "tib_min"],
        "spt_le_tib",
        "sleep period time exceeds time in bed (SPT <= TIB); recompute from the hypnogram",
    )
    stages = ["n1_min", "n2_min", "n3_min", "rem_min"]
    if tst is not None and all(s in typed.columns for s in stages):
        total = sum(_num(typed, s) for s in stages)
        with np.errstate(invalid="ignore"):
            pos = np.flatnonzero(np.abs(total - tst) > tol)
        issues.add(
            pos,
            ", ".join([*stages, "tst_min"]),
            "stage_sum",
            "error",
            f"N1 + N2 + N3 + REM minutes do not add up to TST (tolerance "
            f"{MINUTES_TOLERANCE} min); recompute from the hypnogram",
            values=_rule_values(typed, [*stages, "tst_min"], pos),
        )
    ptol = PERCENT_TOLERANCE + 1e-9
    se = _num(typed, "se_pct")
    if se is not None and tst is not None and tib is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            expect = np.where(tib > 0, 100.0 * tst / tib, np.nan)
            pos = np.flatnonzero(np.abs(se - expect) > ptol)
        issues.add(
            pos,
            "se_pct, tst_min, tib_min",
            "se_consistency",
            "error",
            f"sleep efficiency is not 100 x TST / TIB (tolerance {PERCENT_TOLERANCE} "
            "percentage points); recompute it",
            values=_rule_values(typed, ["se_pct", "tst_min", "tib_min"], pos),
        )
    for stage in ("n1", "n2", "n3", "rem"):
        pct, mins = _num(typed, f"{stage}_pct"), _num(typed, f"{stage}_min")
        if pct is None or mins is None or tst is None:
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            expect = np.where(tst > 0, 100.0 * mins / tst, np.nan)
            pos = np.flatnonzero(np.abs(pct - expect) > ptol)
        names = [f"{stage}_pct", f"{stage}_min", "tst_min"]
        issues.add(
            pos,
            ", ".join(names),
            "pct_consistency",
            "error",
            f"{stage.upper()} % is not 100 x {stage.upper()} minutes / TST (tolerance "
            f"{PERCENT_TOLERANCE} percentage points); recompute it",
            values=_rule_values(typed, names, pos),
        )
    if {"night", "night_index"} <= set(typed.columns) and "baseline" in list(
        typed["night"].cat.categories
        if isinstance(typed["night"].dtype, pd.CategoricalDtype)
        else []
    ):
        is_base = (typed["night"] == "baseline").fillna(False).to_numpy(dtype=bool)
        idx = typed["night_index"].astype("float64").to_numpy(na_value=np.nan)
        with np.errstate(invalid="ignore"):
            bad = (is_base & (idx != 0) & ~np.isnan(idx)) | (
                ~is_base & typed["night"].notna().to_numpy() & (idx == 0)
            )
        pos = np.flatnonzero(bad)
        issues.add(
            pos,
            "night, night_index",
            "night_index",
            "error",
            "night_index must be 0 for the baseline night and > 0 for nights after the infusion",
            values=_rule_values(typed, ["night", "night_index"], pos),
        )


def _periods_rules(typed: pd.DataFrame, issues: _Issues) -> None:
    if {"treatment", "dose_mg_kg"} <= set(typed.columns):
        trt = typed["treatment"].astype(object)
        dose = _num(typed, "dose_mg_kg")
        with np.errstate(invalid="ignore"):
            bad = ((trt == "placebo").fillna(False).to_numpy(dtype=bool) & (dose > 0)) | (
                (trt != "placebo").fillna(False).to_numpy(dtype=bool)
                & trt.notna().to_numpy()
                & (dose == 0)
            )
        pos = np.flatnonzero(bad)
        issues.add(
            pos,
            "treatment, dose_mg_kg",
            "dose_treatment",
            "error",
            "dose does not match treatment: placebo (saline) has dose 0, an active "
            "treatment a dose above 0",
            values=_rule_values(typed, ["treatment", "dose_mg_kg"], pos),
        )


def _roster_rules(typed: pd.DataFrame, issues: _Issues) -> None:
    if {"status", "withdrawal_reason"} <= set(typed.columns):
        bad = (typed["status"] == "withdrawn").fillna(False).to_numpy(dtype=bool) & typed[
            "withdrawal_reason"
        ].isna().to_numpy()
        issues.add(
            np.flatnonzero(bad),
            "withdrawal_reason",
            "withdrawal_reason",
            "warning",
            "participant withdrawn without a reason; record the reason (CONSORT flow)",
        )


_ROW_RULES: dict[str, tuple[Callable[[pd.DataFrame, _Issues], None], ...]] = {
    "nights": (_nights_rules,),
    "periods": (_periods_rules,),
    "roster": (_roster_rules,),
}


# ---------------------------------------------------------------------------------------
# assembling the result
# ---------------------------------------------------------------------------------------
def _finish(
    *,
    raw: pd.DataFrame,
    typed: pd.DataFrame,
    issues: _Issues,
    rows: np.ndarray,
    table: str,
    source: str,
    dictionary: DataDictionary,
    reject_all: np.ndarray,
    mapping: dict[str, str],
) -> ValidationResult:
    n = len(raw)
    found = issues.frame()
    pos = found["pos"].to_numpy(dtype=np.int64)
    has_row = pos >= 0
    err = (found["severity"] == "error").to_numpy() & has_row
    rejected_mask = reject_all.copy()
    rejected_mask[pos[err]] = True

    # issue table
    renamed = raw.rename(columns=mapping)
    safe = np.where(has_row, pos, 0)
    out = pd.DataFrame(
        {
            "file": np.full(len(found), source, dtype=object),
            "row": pd.array(np.where(has_row, rows[safe] if n else 0, 0), dtype="Int64"),
        }
    )
    out.loc[~has_row, "row"] = pd.NA
    for key in ("participant_id", "night"):
        if key in renamed.columns and n:
            vals = _as_text(renamed[key].iloc[safe]).to_numpy(dtype=object)
            vals = np.where(has_row, vals, None)
        else:
            vals = np.full(len(found), None, dtype=object)
        out[key] = vals
    for c in ("column", "value", "rule", "severity", "message"):
        out[c] = found[c].to_numpy(dtype=object)
    out["_pos"] = np.where(has_row, pos, -1)
    out = out.sort_values(["_pos"], kind="stable").drop(columns="_pos").reset_index(drop=True)
    # table-level issues (no row) first
    out = pd.concat([out[out["row"].isna()], out[out["row"].notna()]], ignore_index=True)
    if out.empty:
        out = empty_issues()

    # accepted / rejected rows
    index = pd.Index(rows, name="row")
    accepted = ~rejected_mask
    order = [v.name for v in dictionary.variables(table) if v.name in typed.columns]
    data = typed.loc[:, order]
    if not accepted.all():
        data = data.loc[accepted]
        data.index = index[accepted]
    else:
        data = data.set_axis(index, axis=0)
    rej_pos = np.flatnonzero(rejected_mask)
    rejected = raw.iloc[rej_pos].copy() if rej_pos.size else raw.iloc[0:0].copy()
    rejected.index = index[rej_pos]
    reasons = pd.Series("", index=rej_pos, dtype=object)
    if rej_pos.size:
        e = found.loc[err, ["pos", "rule", "column"]]
        if len(e):
            text = (
                (e["rule"] + ": " + e["column"])
                .groupby(e["pos"].to_numpy())
                .agg(lambda s: "; ".join(dict.fromkeys(s)))
            )
            reasons.loc[text.index] = text.to_numpy()
        if reject_all.any():
            missing_cols = found.loc[
                (found["rule"] == "missing_column").to_numpy(), "column"
            ].tolist()
            extra = "missing_column: " + ", ".join(missing_cols)
            reasons = reasons.map(lambda r: f"{r}; {extra}" if r else extra)
    rejected["reasons"] = reasons.to_numpy()
    summary = {
        "file": source,
        "table": table,
        "rows_read": n,
        "rows_accepted": int(accepted.sum()),
        "rows_rejected": int(rejected_mask.sum()),
        "errors": int((out["severity"] == "error").sum()),
        "warnings": int((out["severity"] == "warning").sum()),
    }
    return ValidationResult(
        table=table,
        source=source,
        data=data,
        rejected=rejected,
        issues=out,
        summary=summary,
        raw=raw,
        raw_rows=rows,
    )


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


# ---------------------------------------------------------------------------------------
# load_study
# ---------------------------------------------------------------------------------------
@dataclass
class Study:
    """A study's tables, validated (or simulated), plus every issue found.

    Attributes
    ----------
    roster, periods, nights : pandas.DataFrame
        Typed accepted rows of each table (columns as in the data dictionary).
    diary : pandas.DataFrame or None
        Diary rows, None when the study has no diary.
    epochs : pandas.DataFrame or None
        Epoch-by-epoch stages of every hypnogram (``participant_id, period, night, epoch,
        onset_s, stage``), None when there are no hypnograms (or no hypnogram reader).
    issues : pandas.DataFrame
        All issues of all files, columns :data:`ISSUE_COLUMNS`.
    files : dict
        Table -> file path (``epochs`` -> list of hypnogram paths).
    summary : pandas.DataFrame or None
        One row per table: file, table, rows read / accepted / rejected, errors, warnings.
    rejected : dict
        Table -> its rejected rows (raw values + ``reasons``), so that rows read = accepted +
        rejected can be checked table by table.
    simulated : bool
        True when the study directory's ``README.md`` heading says SIMULATED (as
        :func:`studykit.simulate.write_study` writes it): every output then says so.
    """

    roster: pd.DataFrame
    periods: pd.DataFrame
    nights: pd.DataFrame
    diary: pd.DataFrame | None = None
    epochs: pd.DataFrame | None = None
    issues: pd.DataFrame = field(default_factory=empty_issues)
    files: dict[str, Any] = field(default_factory=dict)
    summary: pd.DataFrame | None = None
    rejected: dict[str, pd.DataFrame] = field(default_factory=dict)
    simulated: bool = False

    @property
    def ok(self) -> bool:
        """True when no issue is an error."""
        return not bool((self.issues["severity"] == "error").any())


_STUDY_TABLES = ("roster", "periods", "nights", "diary")
_READABLE = (".csv", ".tsv", ".txt", *EXCEL_SUFFIXES, *PARQUET_SUFFIXES)
_HYPNOGRAM_NAME = re.compile(r"^(?P<pid>.+)_p(?P<period>\d+)_(?P<night>[A-Za-z0-9]+)$")


def load_study(
    directory: str | Path, *, dictionary: DataDictionary | None = None, decimal: str = "."
) -> Study:
    r"""Read and validate a study directory (see docs/ARCHITECTURE.md for its layout).

    Parameters
    ----------
    directory : str or Path
        Holds ``roster``, ``periods``, ``nights`` (required) and ``diary`` (optional) tables
        as CSV / TSV / XLSX / Parquet, and optionally ``hypnograms/`` with one file per night
        named ``{participant_id}_p{period}_{night}.{csv|tsv|txt|edf|xml}``.
    dictionary : DataDictionary, optional
        Default: the packaged dictionary.
    decimal : {".", ","}
        Decimal separator of numbers in the tables (see :func:`validate_table`).

    Returns
    -------
    Study
        Accepted rows of each table and all issues. Rows failing a cross-table rule are
        rejected like rows failing a cell check.

    Raises
    ------
    InputError
        The directory or a required table is missing, or a table cannot be read.

    Notes
    -----
    Cross-table rules (errors reject the row): the participant of every periods / nights /
    diary row is in the roster (``reference``); a night's treatment equals the periods
    table's for the same participant and period (``treatment_periods``) and is constant
    within participant x period (``treatment_constant``); the roster's sequence code spells
    the treatments by period (``KP``: ketamine then placebo; one letter = same treatment in
    every period) (``sequence_treatment``). Warnings: a participant x period without a
    baseline night (``baseline_night``; change-from-baseline contrasts for it cannot be
    estimated), a roster participant without nights (``no_nights``), hypnograms that cannot
    be read or matched to a night (``hypnogram``).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "roster.csv").write_text(
    ...     "participant_id,sequence,age,sex,madrs_baseline,status\n"
    ...     "P01,K,34,F,31,completed\nP02,P,41,M,28,completed\n")
    >>> _ = (d / "periods.csv").write_text(
    ...     "participant_id,period,treatment,dose_mg_kg,sedative_use\n"
    ...     "P01,1,ketamine,0.5,0\nP02,1,placebo,0,0\n")
    >>> _ = (d / "nights.csv").write_text(
    ...     "participant_id,period,night,night_index,treatment\n"
    ...     "P01,1,baseline,0,ketamine\nP01,1,post1,1,ketamine\n"
    ...     "P02,1,baseline,0,ketamine\nP03,1,baseline,0,placebo\n")
    >>> study = load_study(d)
    >>> study.issues[["row", "participant_id", "rule"]].values.tolist()
    [[<NA>, 'P02', 'no_nights'], [4, 'P02', 'treatment_periods'], [5, 'P03', 'reference']]
    >>> study.summary[["table", "rows_read", "rows_accepted", "rows_rejected"]].values.tolist()
    [['roster', 2, 2, 0], ['periods', 2, 2, 0], ['nights', 4, 2, 2]]
    """
    dd = dictionary if dictionary is not None else load_dictionary()
    d = Path(directory)
    if not d.exists():
        raise InputError(f"Study directory {d} not found. Check the path.")
    if not d.is_dir():
        raise InputError(
            f"{d} is a file, not a study directory. Pass the directory that holds roster.csv, "
            "periods.csv, nights.csv (and diary.csv, hypnograms/)."
        )
    files: dict[str, Any] = {}
    extra_issues: list[pd.DataFrame] = []
    candidates = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in _READABLE)
    for table in _STUDY_TABLES:
        found = [p for p in candidates if p.stem.lower() == table]
        if len(found) > 1:
            raise InputError(
                f"{d} has several {table} tables ({', '.join(p.name for p in found)}); keep one."
            )
        if found:
            files[table] = found[0]
        elif table in ("roster", "periods", "nights"):
            raise InputError(
                f"Study directory {d} has no {table} table ({table}.csv). Present: "
                f"{', '.join(p.name for p in candidates) or 'no tables'}. Every study needs "
                "roster, periods and nights."
            )
    for p in candidates:
        if p.stem.lower() not in _STUDY_TABLES:
            extra_issues.append(
                _one_issue(
                    str(p),
                    "",
                    "file",
                    "warning",
                    f"{p.name} is not a study table ({', '.join(_STUDY_TABLES)}): ignored",
                )
            )

    results = {t: validate_table(files[t], t, dictionary=dd, decimal=decimal) for t in files}
    cross = _cross_table(results, dd)
    epochs, epoch_issues, epoch_files, epoch_summary, epoch_rejected = _load_hypnograms(
        d / "hypnograms", results, dd
    )
    if epoch_files:
        files["epochs"] = epoch_files

    issues = [r.issues for r in results.values()] + extra_issues + cross + epoch_issues
    issues = [i for i in issues if len(i)]
    all_issues = _sort_issues(pd.concat(issues, ignore_index=True)) if issues else empty_issues()
    summary_rows = [r.summary for r in results.values()]
    if epoch_summary is not None:
        summary_rows.append(epoch_summary)
    summary = pd.DataFrame(summary_rows)
    return Study(
        roster=results["roster"].data,
        periods=results["periods"].data,
        nights=results["nights"].data,
        diary=results["diary"].data if "diary" in results else None,
        epochs=epochs,
        issues=all_issues,
        files=files,
        summary=summary,
        rejected={t: r.rejected for t, r in results.items()} | epoch_rejected,
        simulated=readme_says_simulated(directory),
    )


def readme_says_simulated(directory: str | Path) -> bool:
    """True when the study directory's ``README.md`` heading says SIMULATED.

    :func:`studykit.simulate.write_study` writes such a heading; a simulated data set is always
    labelled as simulated in every output.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "README.md").write_text("# SIMULATED DATA: demo")
    ...     readme_says_simulated(tmp)
    True
    """
    readme = Path(directory) / "README.md"
    try:
        lines = readme.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return False
    heading = next((ln for ln in lines if ln.strip()), "")
    return "SIMULATED" in heading


def _sort_issues(issues: pd.DataFrame) -> pd.DataFrame:
    """Group by file (in order of first appearance), file-level issues first, then by row."""
    order = {f: i for i, f in enumerate(dict.fromkeys(issues["file"]))}
    key = pd.DataFrame(
        {
            "f": issues["file"].map(order).to_numpy(),
            "has_row": issues["row"].notna().to_numpy(),
            "row": issues["row"].fillna(0).to_numpy(dtype="int64"),
        }
    )
    idx = key.sort_values(["f", "has_row", "row"], kind="stable").index
    return issues.iloc[idx].reset_index(drop=True)


def _one_issue(
    file: str,
    column: str,
    rule: str,
    severity: str,
    message: str,
    *,
    row: Any = pd.NA,
    participant_id: Any = None,
    night: Any = None,
    value: str = "",
) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "file": [file],
            "row": pd.array([row], dtype="Int64"),
            "participant_id": [participant_id],
            "night": [night],
            "column": [column],
            "value": [value],
            "rule": [rule],
            "severity": [severity],
            "message": [message],
        }
    )
    return frame.astype({c: object for c in ISSUE_COLUMNS if c != "row"})


def _reject(
    result: ValidationResult,
    mask: np.ndarray,
    column: str,
    rule: str,
    severity: str,
    messages: np.ndarray | str,
    values: np.ndarray | str,
) -> None:
    """Cross-table issue on rows of ``result.data`` (mask over data); reject them if an error."""
    data = result.data
    pos = np.flatnonzero(mask)
    if pos.size == 0:
        return
    rows = data.index.to_numpy()[pos]
    issues = pd.DataFrame(
        {
            "file": result.source,
            "row": pd.array(rows, dtype="Int64"),
            "participant_id": _as_text(data["participant_id"].iloc[pos]).to_numpy(dtype=object)
            if "participant_id" in data.columns
            else None,
            "night": _as_text(data["night"].iloc[pos]).to_numpy(dtype=object)
            if "night" in data.columns
            else None,
            "column": column,
            "value": values,
            "rule": rule,
            "severity": severity,
            "message": messages,
        }
    ).astype({c: object for c in ISSUE_COLUMNS if c != "row"})
    if severity == "error":
        if result.raw is not None and result.raw_rows is not None:
            moved = result.raw.iloc[np.searchsorted(result.raw_rows, rows)].copy()
            moved.index = pd.Index(rows, name="row")
        else:
            moved = data.iloc[pos].astype(str)
        moved["reasons"] = f"{rule}: {column}"
        result.rejected = pd.concat([result.rejected, moved]).sort_index()
        result.data = data.loc[~mask]
        result.summary["rows_accepted"] -= pos.size
        result.summary["rows_rejected"] += pos.size
    result.summary["errors" if severity == "error" else "warnings"] += pos.size
    result.issues = (
        pd.concat([result.issues, issues], ignore_index=True) if len(result.issues) else issues
    )


def _cross_table(results: dict[str, ValidationResult], dd: DataDictionary) -> list[pd.DataFrame]:
    roster = results["roster"]
    extra: list[pd.DataFrame] = []
    raw_ids = set()
    if roster.raw is not None and "participant_id" in roster.raw.columns:
        raw_ids = set(_strings(roster.raw["participant_id"]))
    ids = (
        set(roster.data["participant_id"].dropna())
        if "participant_id" in roster.data.columns
        else set()
    )

    # reference: participant in roster
    for t in ("periods", "nights", "diary"):
        if t not in results or "participant_id" not in results[t].data.columns:
            continue
        r = results[t]
        pid = r.data["participant_id"].astype(object)
        unknown = ~pid.isin(ids).to_numpy() & pid.notna().to_numpy()
        if unknown.any():
            in_raw = pid.isin(raw_ids).to_numpy()
            msgs = np.where(
                in_raw[unknown],
                "the participant's roster row was rejected (see the roster issues); fix it there",
                "participant not in the roster; add them to roster.csv or correct the identifier",
            )
            _reject(
                r,
                unknown,
                "participant_id",
                "reference",
                "error",
                msgs,
                pid[unknown].to_numpy(dtype=object),
            )

    periods = results["periods"].data
    # sequence spells the treatments by period
    if {"participant_id", "sequence"} <= set(roster.data.columns) and {
        "participant_id",
        "period",
        "treatment",
    } <= set(periods.columns):
        _check_sequence(results, dd)
        periods = results["periods"].data

    nights = results["nights"]
    nd = nights.data
    if {"participant_id", "period", "treatment"} <= set(nd.columns):
        # constant within participant x period
        grp = nd.groupby(["participant_id", "period"], observed=True, sort=False)["treatment"]
        nuniq = grp.transform(lambda s: s.nunique(dropna=True)).to_numpy()
        bad = nuniq > 1
        if bad.any():
            _reject(
                nights,
                bad,
                "treatment",
                "treatment_constant",
                "error",
                "treatment differs between nights of the same participant and period; "
                "a period has one treatment (check the periods table)",
                _as_text(nd["treatment"][bad]).to_numpy(dtype=object),
            )
        nd = nights.data
        if {"participant_id", "period", "treatment"} <= set(periods.columns) and len(nd):
            ref = periods[["participant_id", "period", "treatment"]].rename(
                columns={"treatment": "_trt"}
            )
            ref = ref.astype({"participant_id": object, "_trt": object})
            merged = (
                nd[["participant_id", "period", "treatment"]]
                .astype({"participant_id": object, "treatment": object})
                .merge(ref, on=["participant_id", "period"], how="left")
            )
            no_period = merged["_trt"].isna().to_numpy()
            differs = ~no_period & (merged["treatment"] != merged["_trt"]).fillna(False).to_numpy(
                dtype=bool
            )
            if differs.any():
                msgs = (
                    "treatment differs from the periods table ("
                    + merged.loc[differs, "_trt"].astype(str).to_numpy(dtype=object)
                    + ") for this participant and period; correct one of them"
                )
                _reject(
                    nights,
                    differs,
                    "treatment",
                    "treatment_periods",
                    "error",
                    msgs,
                    merged.loc[differs, "treatment"].astype(str).to_numpy(dtype=object),
                )
            nd = nights.data
            merged = merged.loc[~differs].reset_index(drop=True)
            no_period = merged["_trt"].isna().to_numpy()
            if no_period.any():
                _reject(
                    nights,
                    no_period,
                    "participant_id, period",
                    "treatment_periods",
                    "error",
                    "no accepted row in the periods table for this participant and period "
                    "(missing, or rejected: see the periods issues); add or fix it",
                    (
                        merged.loc[no_period, "participant_id"].astype(str)
                        + "/"
                        + merged.loc[no_period, "period"].astype(str)
                    ).to_numpy(dtype=object),
                )
    nd = nights.data
    # baseline night per participant x period (warning)
    if {"participant_id", "period", "night"} <= set(nd.columns) and len(nd):
        has_base = (
            (nd["night"] == "baseline")
            .groupby([nd["participant_id"].astype(object), nd["period"]], sort=True)
            .any()
        )
        missing = has_base[~has_base]
        for (pid, per), _ in missing.items():
            extra.append(
                _one_issue(
                    nights.source,
                    "night",
                    "baseline_night",
                    "warning",
                    f"participant {pid} has no baseline night in period {per}: change-from-"
                    "baseline contrasts for this period cannot be estimated; add the "
                    "baseline night or document why it is missing",
                    participant_id=str(pid),
                    value=f"period {per}",
                )
            )
        with_nights = set(nd["participant_id"].astype(object))
        for pid in sorted(ids - with_nights):
            extra.append(
                _one_issue(
                    nights.source,
                    "participant_id",
                    "no_nights",
                    "warning",
                    f"participant {pid} is in the roster but has no accepted nights",
                    participant_id=str(pid),
                    value=str(pid),
                )
            )
        # a period with no nights (expected after a withdrawal, so only when not withdrawn)
        per = results["periods"].data
        if {"participant_id", "period"} <= set(per.columns) and len(per):
            withdrawn = set()
            if {"participant_id", "status"} <= set(roster.data.columns):
                st_ = roster.data
                withdrawn = set(
                    st_.loc[(st_["status"] == "withdrawn").fillna(False), "participant_id"]
                )
            have = set(
                zip(nd["participant_id"].astype(object), nd["period"].astype(object), strict=True)
            )
            keys = list(
                zip(per["participant_id"].astype(object), per["period"].astype(object), strict=True)
            )
            lonely = np.array(
                [
                    (k not in have) and (k[0] in with_nights) and (k[0] not in withdrawn)
                    for k in keys
                ],
                dtype=bool,
            )
            if lonely.any():
                _reject(
                    results["periods"],
                    lonely,
                    "participant_id, period",
                    "no_nights",
                    "warning",
                    "no accepted night for this participant and period (participant not withdrawn); "
                    "add the nights or record the withdrawal in the roster",
                    np.array(
                        [f"{a}/{b}" for (a, b), m in zip(keys, lonely, strict=True) if m],
                        dtype=object,
                    ),
                )
    return extra


def _check_sequence(results: dict[str, ValidationResult], dd: DataDictionary) -> None:
    roster, periods = results["roster"].data, results["periods"]
    try:
        treatments = dd.levels("periods", "treatment")
    except StudykitError:
        return
    initials = {t[0].upper(): t for t in treatments}
    if len(initials) != len(treatments):
        return  # treatments do not have distinct initials: cannot spell sequences
    seq = dict(
        zip(roster["participant_id"].astype(object), roster["sequence"].astype(object), strict=True)
    )
    pd_ = periods.data
    if not len(pd_):
        return
    expected = []
    for pid, per in zip(pd_["participant_id"].astype(object), pd_["period"], strict=True):
        code = seq.get(pid)
        if not isinstance(code, str) or pd.isna(per) or not all(ch in initials for ch in code):
            expected.append(None)
            continue
        k = int(per)
        ch = code[0] if len(code) == 1 else (code[k - 1] if 1 <= k <= len(code) else None)
        expected.append(initials.get(ch) if ch else None)
    exp = pd.Series(expected, dtype=object, index=pd_.index)
    actual = pd_["treatment"].astype(object)
    bad = (exp.notna() & actual.notna() & (exp != actual)).to_numpy(dtype=bool)
    if bad.any():
        msgs = (
            "treatment does not match the roster's sequence (expected "
            + exp[bad].astype(str)
            + "); correct the sequence or the treatment"
        ).to_numpy(dtype=object)
        _reject(
            periods,
            bad,
            "treatment",
            "sequence_treatment",
            "error",
            msgs,
            actual[bad].astype(str).to_numpy(dtype=object),
        )


def hypnogram_keys(path: str | Path) -> tuple[str, int, str] | None:
    """``(participant_id, period, night)`` from a hypnogram file name, or None.

    Hypnogram files are named ``{participant_id}_p{period}_{night}.{ext}``.

    Examples
    --------
    >>> hypnogram_keys("hypnograms/P01_p2_post1.csv")
    ('P01', 2, 'post1')
    >>> hypnogram_keys("nights.csv") is None
    True
    """
    m = _HYPNOGRAM_NAME.match(Path(path).stem)
    if m is None:
        return None
    return m["pid"], int(m["period"]), m["night"]


def read_hypnogram_file(path: str | Path) -> pd.DataFrame:
    r"""One hypnogram as an ``epochs`` table: key columns from the file name, then the epochs.

    Uses :func:`studykit.hypnogram.read_hypnogram` when that module is installed (every
    format it reads); otherwise text files are read with :func:`studykit.io.read_table`
    (columns ``epoch, onset_s, stage``; row numbers as in the file).

    Raises
    ------
    InputError
        The name does not follow ``{participant_id}_p{period}_{night}.{ext}``, or the file
        cannot be read.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "P07_p2_post1.csv"
    >>> _ = p.write_text("epoch,onset_s,stage\n0,0,W\n1,30,N1\n")
    >>> frame = read_hypnogram_file(p)
    >>> frame[["participant_id", "period", "night"]].drop_duplicates().values.tolist()
    [['P07', 2, 'post1']]
    >>> validate_table(frame, "epochs").summary["rows_accepted"]
    2
    """
    p = Path(path)
    keys = hypnogram_keys(p)
    if keys is None:
        raise InputError(
            f"{p.name} is not named {{participant_id}}_p{{period}}_{{night}}.ext (e.g. "
            "P01_p1_baseline.csv); rename it so its night can be identified."
        )
    try:
        from studykit.hypnogram import read_hypnogram
    except ImportError:
        read_hypnogram = None
    if read_hypnogram is not None:
        try:
            frame = read_hypnogram(p).copy()
        except StudykitError as exc:
            raise InputError(f"{p}: cannot read the hypnogram: {exc}") from None
        frame.attrs.pop("source", None)
    else:
        if p.suffix.lower() not in (".csv", ".tsv", ".txt"):
            raise InputError(
                f"{p}: reading {p.suffix} hypnograms needs studykit.hypnogram, which is not "
                "installed in this version."
            )
        frame = read_table(p)
    for i, (name, value) in enumerate(
        zip(("participant_id", "period", "night"), keys, strict=True)
    ):
        if name not in frame.columns:
            frame.insert(i, name, value if read_hypnogram is not None else str(value))
    return frame


def _load_hypnograms(
    folder: Path, results: dict[str, ValidationResult], dd: DataDictionary
) -> tuple[
    pd.DataFrame | None,
    list[pd.DataFrame],
    list[Path],
    dict[str, Any] | None,
    dict[str, pd.DataFrame],
]:
    if not folder.is_dir():
        return None, [], [], None, {}
    try:
        from studykit.hypnogram import read_hypnogram
    except ImportError:
        logger.warning("studykit.hypnogram is not available: hypnograms in %s not read", folder)
        return None, [], [], None, {}
    nights = results["nights"].data
    known = set()
    if {"participant_id", "period", "night"} <= set(nights.columns):
        known = set(
            zip(
                nights["participant_id"].astype(object),
                nights["period"].astype("float64").astype("Int64").astype(object),
                nights["night"].astype(object),
                strict=True,
            )
        )
    issues: list[pd.DataFrame] = []
    frames: list[pd.DataFrame] = []
    used: list[Path] = []
    summary = {
        "file": str(folder),
        "table": "epochs",
        "rows_read": 0,
        "rows_accepted": 0,
        "rows_rejected": 0,
        "errors": 0,
        "warnings": 0,
    }
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        m = _HYPNOGRAM_NAME.match(path.stem)
        if m is None:
            issues.append(
                _one_issue(
                    str(path),
                    "",
                    "hypnogram",
                    "warning",
                    f"{path.name} is not named {{participant_id}}_p{{period}}_{{night}}.ext: ignored",
                )
            )
            continue
        pid, period, night = m["pid"], int(m["period"]), m["night"]
        try:
            ep = read_hypnogram(path)
        except StudykitError as exc:
            issues.append(
                _one_issue(
                    str(path),
                    "",
                    "hypnogram",
                    "error",
                    f"cannot read the hypnogram: {exc}",
                    participant_id=pid,
                    night=night,
                )
            )
            summary["errors"] += 1
            continue
        ep = ep.copy()
        ep.insert(0, "participant_id", pid)
        ep.insert(1, "period", period)
        ep.insert(2, "night", night)
        frames.append(ep.reset_index(drop=True))
        used.append(path)
        if known and (pid, period, night) not in known:
            issues.append(
                _one_issue(
                    str(path),
                    "participant_id, period, night",
                    "hypnogram",
                    "warning",
                    "no accepted row in the nights table for this hypnogram: its "
                    "epochs are kept but the night has no design information",
                    participant_id=pid,
                    night=night,
                    value=f"{pid}/{period}/{night}",
                )
            )
            summary["warnings"] += 1
    if not frames:
        return None, issues, used, summary, {}
    # validate all nights at once (one call per file would cost ~50 ms each), then map the
    # issues' positions back to (file, epoch record number within the file)
    sizes = np.array([len(f) for f in frames])
    combined = pd.concat(frames, ignore_index=True)
    res = validate_table(combined, "epochs", dictionary=dd, source=str(folder))
    file_of = np.repeat(np.arange(len(frames)), sizes)
    local_row = np.arange(len(combined)) - np.repeat(np.cumsum(sizes) - sizes, sizes) + 1
    if len(res.issues):
        found = res.issues.copy()
        has = found["row"].notna().to_numpy()
        pos = found["row"].fillna(1).astype("int64").to_numpy() - 1
        names = np.array([str(u) for u in used], dtype=object)
        found["file"] = np.where(has, names[file_of[pos]], str(folder))
        found["row"] = pd.array(np.where(has, local_row[pos], 0), dtype="Int64")
        found.loc[~has, "row"] = pd.NA
        issues.append(found)
    for k in ("rows_read", "rows_accepted", "rows_rejected", "errors", "warnings"):
        summary[k] += res.summary[k]
    epochs = res.data.reset_index(drop=True)
    for name in ("night", "stage"):
        if name in epochs.columns:
            epochs[name] = _as_categorical(epochs[name], dd.levels("epochs", name))
    rejected = res.rejected.copy()
    if len(rejected):
        pos = np.searchsorted(res.raw_rows, rejected.index.to_numpy())
        names = np.array([str(u) for u in used], dtype=object)
        rejected.insert(0, "file", names[file_of[pos]])
        rejected.index = pd.Index(local_row[pos], name="row")
    return epochs, issues, used, summary, {"epochs": rejected}
