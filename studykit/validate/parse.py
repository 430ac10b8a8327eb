"""Cell parsing: a column of raw strings (or typed values) to the dictionary type.

Each distinct value is parsed once and the result broadcast to every row, so columns with
few distinct values (epoch numbers, stage codes) cost little. Every cell that does not parse
is reported to the issue collector with a message saying how to write it; missing cells
(empty, ``NA`` ... or a variable's ``missing_codes``) become missing values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from studykit.dictionary import FALSE_TOKENS, MISSING_TOKENS, TRUE_TOKENS, Variable
from studykit.validate.issues import IssueCollector

__all__ = [
    "Parsed",
    "parse_column",
    "strings",
    "as_categorical",
    "codes_message",
    "MAX_INT",
]

_DATE_RE = r"^\d{4}-\d{2}-\d{2}(?:[T ]00:00(?::00(?:\.0+)?)?)?$"
_DATETIME_RE = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?$"
# ISO 8601 with a time-zone designator: unambiguous, but studykit's times are local clock time
_ISO_OFFSET_RE = (
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$"
)
_OTHER_DATE_RE = r"^\d{1,4}[/.\-]\d{1,2}[/.\-]\d{1,4}"
_DECIMAL_COMMA_RE = r"^[+-]?\d{1,3}(?:\.\d{3})*,\d+$|^[+-]?\d+,\d+$"
MAX_INT = 2**53


@dataclass
class Parsed:
    """A parsed column: typed values, and which cells are missing / coded missing."""

    values: pd.Series  # typed
    missing: np.ndarray  # bool: missing (blank / NA / missing code)
    coded_missing: np.ndarray  # bool: a missing code of the variable


def strings(s: pd.Series) -> pd.Series:
    """Raw column -> stripped strings with '' for missing.

    Examples
    --------
    >>> strings(pd.Series([" P01 ", None], dtype=object)).tolist()
    ['P01', '']
    """
    if isinstance(s.dtype, pd.StringDtype) or s.dtype == object:
        out = s.astype("str") if s.dtype == object else s
        out = out.fillna("")
    else:
        out = s.astype(str).where(s.notna(), "")
    return out.str.strip()


def parse_column(raw: pd.Series, v: Variable, issues: IssueCollector, *, decimal: str) -> Parsed:
    """Parse one column to the type of variable ``v``; report cells that fail to ``issues``.

    Parameters
    ----------
    raw : pandas.Series
        Strings as read from a file, or values already typed (numbers, booleans, datetimes).
    v : Variable
        The dictionary variable (type, codes, missing codes).
    issues : IssueCollector
        Receives ``type``, ``decimal_comma``, ``date_format``, ``code`` and ``code_case``
        issues, by row position.
    decimal : {".", ","}
        Decimal separator of numbers written as text.

    Returns
    -------
    Parsed
        Typed values (missing where a cell is missing or failed), and the masks of missing
        and coded-missing cells.

    Examples
    --------
    >>> from studykit.dictionary import load_dictionary
    >>> kss = load_dictionary().get("diary", "kss")
    >>> raw = pd.Series(["3", "x", "-99"])
    >>> c = IssueCollector(pd.DataFrame({"kss": raw}))
    >>> p = parse_column(raw, kss, c, decimal=".")
    >>> p.values.tolist(), p.coded_missing.tolist(), c.frame()["rule"].tolist()
    ([3, <NA>, <NA>], [False, False, True], ['type'])
    """
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
                    ~missing & np.isfinite(num) & ((num != np.round(num)) | (np.abs(num) > MAX_INT))
                )
        _add_type_issue(issues, np.flatnonzero(bad), v, raw)
        num[missing | bad] = np.nan
        return Parsed(_numeric_series(num, v, raw.index), missing, coded)
    if v.type == "boolean" and pd.api.types.is_bool_dtype(raw.dtype):
        missing = raw.isna().to_numpy()
        return Parsed(raw.astype("boolean"), missing, np.zeros(n, dtype=bool))
    if v.type in ("date", "datetime") and pd.api.types.is_datetime64_any_dtype(raw.dtype):
        values = raw
        if getattr(raw.dt, "tz", None) is not None:
            values = raw.dt.tz_localize(None)
        if v.type == "date":
            values = values.dt.normalize()
        return Parsed(values, raw.isna().to_numpy(), np.zeros(n, dtype=bool))

    # Parse each distinct value once, then broadcast: columns of epoch tables have few
    # distinct values (epoch numbers, stages), so this is much faster than parsing every cell.
    codes, text = _factorize(raw)
    parsed = _parse_text(text, v, issues.by_value(codes), decimal=decimal)
    return Parsed(
        parsed.values.take(codes).reset_index(drop=True),
        parsed.missing[codes],
        parsed.coded_missing[codes],
    )


def _factorize(raw: pd.Series) -> tuple[np.ndarray, pd.Series]:
    """Codes into the distinct values (stripped strings; the last one is '' for missing)."""
    codes, uniques = pd.factorize(raw, use_na_sentinel=True)
    text = strings(pd.Series(np.asarray(uniques, dtype=object), dtype=object))
    text = pd.concat([text, pd.Series([""], dtype=text.dtype)], ignore_index=True)
    codes = np.where(codes < 0, len(text) - 1, codes)
    return codes, text


def _parse_text(text: pd.Series, v: Variable, issues: IssueCollector, *, decimal: str) -> Parsed:
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
                    present & np.isfinite(num) & ((num != np.round(num)) | (np.abs(num) > MAX_INT))
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
        return Parsed(_numeric_series(num, v, raw.index), missing, coded)

    if v.type == "boolean":
        low = text.str.lower()
        is_true = low.isin(TRUE_TOKENS).to_numpy()
        is_false = low.isin(FALSE_TOKENS).to_numpy()
        bad = present & ~is_true & ~is_false
        _add_type_issue(issues, np.flatnonzero(bad), v, raw)
        arr = pd.array(np.where(is_true, True, False), dtype="boolean")
        arr[~present | bad] = pd.NA
        return Parsed(pd.Series(arr, index=raw.index), missing, coded)

    if v.type in ("date", "datetime"):
        pattern = _DATE_RE if v.type == "date" else _DATETIME_RE
        iso = text.str.match(pattern).to_numpy() & present
        parsed = pd.to_datetime(text.where(iso, None), format="ISO8601", errors="coerce")
        if v.type == "date":
            parsed = parsed.dt.normalize()
        not_iso = np.flatnonzero(present & ~iso)
        impossible = np.flatnonzero(iso & parsed.isna().to_numpy())
        if not_iso.size:
            offset = text.iloc[not_iso].str.match(_ISO_OFFSET_RE).to_numpy()
            issues.add(
                not_iso[offset],
                col,
                "date_format",
                "error",
                "ISO 8601 date and time with a time-zone offset (e.g. +05:00 or Z): studykit "
                "reads local clock time at the sleep lab; write the local time without the "
                "offset (e.g. 2024-03-05T22:30)",
            )
            not_iso = not_iso[~offset]
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
        return Parsed(pd.Series(parsed.to_numpy(), index=raw.index), missing, coded)

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
            issues.add(pos[~ok], col, "code", "error", codes_message(v))
        return Parsed(pd.Series(cat, index=raw.index), missing, coded)

    # string
    return Parsed(text.where(present, None).astype("str"), missing, coded)


def as_categorical(values: pd.Series, levels: list[str]) -> pd.Series:
    """Values (already checked to be codes or missing) as a categorical with ``levels``.

    Examples
    --------
    >>> as_categorical(pd.Series(["R", "W"]), ["W", "R"]).cat.codes.tolist()
    [1, 0]
    """
    codes = pd.Index(levels, dtype=object).get_indexer(values.astype(object))
    return pd.Series(pd.Categorical.from_codes(codes, categories=levels), index=values.index)


def _numeric_series(num: np.ndarray, v: Variable, index: pd.Index) -> pd.Series:
    if v.type == "integer":
        arr = pd.array(num, dtype="Float64")
        return pd.Series(arr.astype("Int64"), index=index)
    return pd.Series(num, index=index, dtype="float64")


def codes_message(v: Variable) -> str:
    """The fix for a value that is not one of ``v``'s codes (lists the first 12 codes).

    Examples
    --------
    >>> from studykit.dictionary import load_dictionary
    >>> codes_message(load_dictionary().get("roster", "sex"))[:40]
    'not an allowed code; use one of: F = Fem'
    """
    shown = " | ".join(f"{c} = {lab}" for c, lab in v.codes[:12])
    more = " ..." if len(v.codes) > 12 else ""
    return f"not an allowed code; use one of: {shown}{more} (see data_dictionary.csv)"


def _add_type_issue(issues: IssueCollector, pos: np.ndarray, v: Variable, raw: pd.Series) -> None:
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
