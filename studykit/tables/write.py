"""Writing tables: the one writer of table files (CSV, Markdown, HTML, LaTeX).

:func:`write_table` drops identifier columns (:mod:`studykit.privacy`) and writes floats with
a fixed format (``%.10g``, empty cell for missing) and ``\\n`` line ends, so two runs on the
same data give byte-identical CSV files.
"""

from __future__ import annotations

import html
import logging
import math
import re
from collections.abc import Collection, Sequence
from pathlib import Path

import pandas as pd

from studykit.errors import InputError
from studykit.privacy import drop_identifier_columns, identifier_columns
from studykit.tables.format import format_display

__all__ = ["FLOAT_FORMAT", "TABLE_FORMATS", "to_csv_text", "write_table"]

logger = logging.getLogger(__name__)

#: printf-style format of floats in CSV exports: 10 significant digits, stable across runs.
FLOAT_FORMAT = "%.10g"

#: File formats :func:`write_table` can write, with their suffixes.
TABLE_FORMATS: dict[str, str] = {"csv": ".csv", "md": ".md", "html": ".html", "tex": ".tex"}


def _natural_key(series: pd.Series) -> pd.Series:
    """Sort key that orders ``H2`` before ``H10`` and numbers numerically."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series

    def key(v: object) -> tuple:
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
            return ((2, ""),)
        parts = re.split(r"(\d+)", str(v))
        return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts if p != "")

    return series.map(key)


def _clean_cells(data: pd.DataFrame) -> pd.DataFrame:
    """Lists/tuples -> '; '-joined text; -0.0 -> 0.0 (so '-0' never appears)."""
    out = data.copy()
    for col in out.columns:
        s = out[col]
        if s.dtype == object:
            if s.map(lambda v: isinstance(v, list | tuple | set)).any():
                out[col] = s.map(
                    lambda v: (
                        "; ".join(map(str, sorted(v) if isinstance(v, set) else v))
                        if isinstance(v, list | tuple | set)
                        else v
                    )
                )
        elif pd.api.types.is_float_dtype(s):
            out[col] = s + 0.0  # turns -0.0 into 0.0, keeps NaN
    return out


def to_csv_text(data: pd.DataFrame) -> str:
    """The CSV text :func:`write_table` writes (fixed float format, ``\\n`` line ends).

    Examples
    --------
    >>> print(to_csv_text(pd.DataFrame({"x": ["a", "b"], "y": [1 / 3, float("nan")]})), end="")
    x,y
    a,0.3333333333
    b,
    """
    return _clean_cells(data).to_csv(
        index=False, float_format=FLOAT_FORMAT, na_rep="", lineterminator="\n"
    )


def _latex(display: pd.DataFrame, title: str | None, notes: str | None) -> str:
    styler = display.style.hide(axis="index")
    styler = styler.format(escape="latex").format_index(escape="latex", axis=1)
    body = styler.to_latex(
        hrules=True,
        caption=_latex_escape(title) if title else None,
        position_float="centering" if title else None,
        column_format="l" * display.shape[1],
    )
    if notes:
        body += "% " + notes.replace("\n", "\n% ") + "\n"
    return body


def _latex_escape(text: str) -> str:
    repl = {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
    }
    return "".join(repl.get(c, c) for c in text)


def _html(display: pd.DataFrame, name: str, title: str | None, notes: str | None) -> str:
    table = display.to_html(
        index=False, escape=True, border=0, classes="studykit-table", table_id=f"table-{name}"
    )
    parts = []
    if title:
        parts.append(f"<p class='table-title'><strong>{html.escape(title)}</strong></p>")
    parts.append(table)
    if notes:
        parts.append(f"<p class='table-notes'>{html.escape(notes)}</p>")
    return "\n".join(parts) + "\n"


def _markdown(display: pd.DataFrame, title: str | None, notes: str | None) -> str:
    parts = []
    if title:
        parts.append(f"**{title}**\n")
    if len(display):
        parts.append(display.to_markdown(index=False))
    else:
        parts.append("(no rows)")
    if notes:
        parts.append("\n" + notes)
    return "\n".join(parts) + "\n"


def write_table(
    data: pd.DataFrame,
    directory: str | Path,
    name: str,
    *,
    formats: Sequence[str] = ("csv", "md", "html", "tex"),
    display: pd.DataFrame | None = None,
    title: str | None = None,
    notes: str | None = None,
    sort_by: Sequence[str] | None = None,
    identifiers: Collection[str] | None = None,
    digits: int = 2,
) -> dict[str, Path]:
    """Write one table as CSV, Markdown, HTML and LaTeX; never export identifier fields.

    Parameters
    ----------
    data : pandas.DataFrame
        The tidy, numeric table. Its CSV is the machine-readable export.
    directory : str or Path
        Output directory (created if needed).
    name : str
        File stem, e.g. ``"hypotheses"`` -> ``hypotheses.csv``, ``hypotheses.md`` ...
    formats : sequence of str, default all four
        Any of ``"csv"``, ``"md"``, ``"html"``, ``"tex"``.
    display : pandas.DataFrame, optional
        A formatted version for the human-readable formats (e.g. from
        :func:`format_baseline_table`); default ``format_display(data)``.
    title, notes : str, optional
        Caption and footnote of the human-readable versions (the CSV has neither).
    sort_by : sequence of str, optional
        Columns to sort ``data`` by (stable, natural order: ``H2`` before ``H10``). Default:
        keep the order of ``data``, which the builders of this module fix.
    identifiers : collection of str, optional
        Identifier (PHI) field names to drop; default :func:`identifier_columns` of the
        packaged dictionary. Columns with these names are dropped from every format (also
        from ``display``); a table whose ``variable`` column names one of them (a summary of
        an identifier's values) is refused with :class:`~studykit.errors.InputError`.
    digits : int, default 2
        Decimals of the default display version.

    Returns
    -------
    dict
        Format -> written path.

    Notes
    -----
    The CSV writes floats as ``%.10g`` (10 significant digits), missing values as empty
    cells and ``\\n`` line ends, so identical results give identical bytes.

    Examples
    --------
    >>> import tempfile
    >>> d = pd.DataFrame({"participant_id": ["P01"], "initials": ["AB"], "tst_min": [401.5]})
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     paths = write_table(d, tmp, "demo")
    ...     print(paths["csv"].read_text(), end="")
    participant_id,tst_min
    P01,401.5
    """
    if not isinstance(data, pd.DataFrame):
        raise InputError(f"write_table expects a pandas DataFrame, got {type(data).__name__}.")
    unknown = [f for f in formats if f not in TABLE_FORMATS]
    if unknown:
        raise InputError(
            f"Invalid table format(s) {unknown!r} for table {name!r}. "
            f"Expected any of {sorted(TABLE_FORMATS)}."
        )
    ids = identifier_columns() if identifiers is None else frozenset(identifiers)
    data = drop_identifier_columns(data, ids, name)
    if sort_by:
        missing = [c for c in sort_by if c not in data.columns]
        if missing:
            raise InputError(
                f"Cannot sort table {name!r} by {missing}: no such column. "
                f"Columns are {list(data.columns)}."
            )
        data = data.sort_values(list(sort_by), key=_natural_key, kind="mergesort")
    data = data.reset_index(drop=True)
    if display is None:
        display = format_display(data, digits=digits)
    else:
        display = drop_identifier_columns(display, ids, name).reset_index(drop=True)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for fmt in formats:
        path = directory / f"{name}{TABLE_FORMATS[fmt]}"
        if fmt == "csv":
            text = to_csv_text(data)
        elif fmt == "md":
            text = _markdown(display, title, notes)
        elif fmt == "html":
            text = _html(display, name, title, notes)
        else:
            text = _latex(display, title, notes)
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        written[fmt] = path
    return written
