"""Validate one table: map its columns to the dictionary, parse, check, split accepted / rejected.

:func:`validate_table` works in two passes, both vectorized over whole columns:

1. **Parse** every cell of every known column to the dictionary type
   (:mod:`studykit.validate.parse`).
2. **Check** the parsed values: required, range, allowed codes, unique keys and the table's
   cross-field rules (:mod:`studykit.validate.rules`).

Rows with at least one *error* are rejected (kept in ``rejected`` with their reasons); the
others are accepted, typed, in ``data``. Warnings never reject a row. Rows read = rows
accepted + rows rejected, always.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from studykit.dictionary import DataDictionary, load_dictionary
from studykit.errors import InputError, ValidationError
from studykit.io import read_table
from studykit.validate.identify import normalize_name
from studykit.validate.issues import (
    IssueCollector,
    as_text,
    describe_issue,
    empty_issues,
    shorten,
)
from studykit.validate.parse import codes_message, parse_column
from studykit.validate.rules import ROW_RULES, check_keys, check_range

__all__ = ["ValidationResult", "validate_table"]


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
        if not self.ok:
            errors = self.issues[self.issues["severity"] == "error"]
            raise ValidationError(
                f"{self.source} (table {self.table}): {len(errors)} error(s) in "
                f"{self.summary['rows_rejected']} of {self.summary['rows_read']} rows; first: "
                f"{describe_issue(errors.iloc[0])}",
                self.issues,
            )
        return self


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
    issues = IssueCollector(raw)

    # -- columns ------------------------------------------------------------------------
    colnames = [str(c).strip() for c in raw.columns]
    dupes = sorted(c for c, k in Counter(colnames).items() if k > 1)
    if dupes:
        raise InputError(
            f"{src} has duplicate column names: {', '.join(shorten(d, 40) for d in dupes[:10])}. "
            "Each column needs its own "
            "name; rename or delete the repeated column(s)."
        )
    mapping: dict[str, str] = {}  # raw column -> variable
    norm = {normalize_name(k): k for k in variables}
    for raw_col, name in zip(raw.columns, colnames, strict=True):
        if name in variables:
            mapping[raw_col] = name
    for raw_col, name in zip(raw.columns, colnames, strict=True):
        if raw_col in mapping:
            continue
        target = norm.get(normalize_name(name))
        if target is not None and target not in mapping.values():
            mapping[raw_col] = target
            issues.add(
                np.array([-1]),
                target,
                "column_name",
                "warning",
                f"column {shorten(name, 60)!r} read as {target!r}; rename it to the dictionary name",
                values=name,
            )
        else:
            issues.add(
                np.array([-1]),
                name,
                "unknown_column",
                "warning",
                f"column {shorten(name, 60)!r} is not in the data dictionary for table {table!r}: it is "
                "ignored. Rename it to a dictionary name, or add it to data_dictionary.csv",
                values="",
            )
    mapping_by_name = {str(k).strip(): v for k, v in mapping.items()}
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

    formula_cells = raw.attrs.get("formula_cells") or []
    if formula_cells:
        where = {int(r): i for i, r in enumerate(rows)}
        for r, name, formula in formula_cells:
            target = mapping_by_name.get(name)
            if target is None or r not in where:
                continue
            issues.add(
                np.array([where[r]]),
                target,
                "formula",
                "error",
                f"the cell holds a formula ({shorten(formula, 60)}) whose result was never saved, "
                "so its value is unknown: open the workbook in Excel or LibreOffice, let it "
                "recalculate and save it (or paste the values)",
                values=shorten(formula, 60),
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
        p = parse_column(col, v, issues, decimal=decimal)
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
            out_of_range = check_range(values, v, issues)
        else:
            out_of_range = np.zeros(n, dtype=bool)
        if v.type == "integer" and v.codes:
            allowed = [int(c) for c in v.levels]
            bad = values.notna().to_numpy() & ~values.isin(allowed).to_numpy() & ~out_of_range
            issues.add(np.flatnonzero(bad), name, "code", "error", codes_message(v))

    typed = pd.DataFrame(parsed, index=pd.RangeIndex(n))

    # -- keys -------------------------------------------------------------------------
    keys = [k for k in dd.keys(table) if k in typed.columns]
    if keys and len(keys) == len(dd.keys(table)):
        check_keys(typed, raw.rename(columns=mapping), keys, issues)

    # -- cross-field rules ----------------------------------------------------------------
    for rule in ROW_RULES.get(table, ()):
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


def _no_columns_message(src: str, table: str, colnames: list[str], expected: list[str]) -> str:
    shown = ", ".join(repr(shorten(c, 40)) for c in colnames[:8]) + (
        " ..." if len(colnames) > 8 else ""
    )
    hint = ""
    if len(colnames) == 1 and re.search(r"[\s:/]", colnames[0][:10_000]):
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


# ---------------------------------------------------------------------------------------
# assembling the result
# ---------------------------------------------------------------------------------------
def _finish(
    *,
    raw: pd.DataFrame,
    typed: pd.DataFrame,
    issues: IssueCollector,
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
            vals = as_text(renamed[key].iloc[safe]).to_numpy(dtype=object)
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
