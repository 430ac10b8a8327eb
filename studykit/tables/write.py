"""Writing tables: the one writer of table files (CSV, Markdown, HTML, LaTeX).

:func:`write_table` is the only function that writes a table file. It

* masks identifiers (:mod:`studykit.privacy`): identifier columns dropped, identifier values
  masked wherever they landed;
* neutralizes spreadsheet formulas in CSV text cells (:func:`neutralize_csv_cell`, the OWASP
  CSV-injection rule) and escapes Markdown, HTML and LaTeX cells, titles and notes;
* labels simulated data in every format (:data:`SIMULATED_LABEL`);
* writes floats with a fixed format (``%.10g``, empty cell for missing) and ``\\n`` line
  ends, so two runs on the same data give byte-identical files.
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
from studykit.outdir import USER_FIXABLE_ERRNOS, os_error_message
from studykit.privacy import (
    Identifiers,
    identifier_columns,
    mask_identifiers,
    mask_text,
)
from studykit.tables.format import format_display

__all__ = [
    "FLOAT_FORMAT",
    "TABLE_FORMATS",
    "SIMULATED_LABEL",
    "neutralize_csv_cell",
    "escape_markdown",
    "read_table_csv",
    "write_csv",
    "to_csv_text",
    "write_table",
]

logger = logging.getLogger(__name__)

#: printf-style format of floats in CSV exports: 10 significant digits, stable across runs.
FLOAT_FORMAT = "%.10g"

#: File formats :func:`write_table` can write, with their suffixes.
TABLE_FORMATS: dict[str, str] = {"csv": ".csv", "md": ".md", "html": ".html", "tex": ".tex"}

#: The label every table of simulated data carries (CSV: a first comment line ``# ...``).
SIMULATED_LABEL = "SIMULATED DATA: not evidence about any real participant (studykit demo study)"

#: First characters that make a spreadsheet read a cell as a formula (OWASP CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_ENTITY = re.compile(r"&(?=#?[A-Za-z0-9]+;)")
_TAG_OPEN = re.compile(r"<(?=[A-Za-z/!?])")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity|nan)", re.I)


def neutralize_csv_cell(value: str) -> str:
    """A text cell made inert for spreadsheets (OWASP CSV-injection rule).

    A cell beginning with ``=``, ``+``, ``-``, ``@``, TAB or CR is read as a formula by Excel,
    LibreOffice and Google Sheets; such a cell gets a leading single quote, which
    spreadsheets show as text. Numbers written as text (``-5``, ``+1.5e3``, ``-inf``) are
    numbers, not formulas, and are left as they are.

    Examples
    --------
    >>> print(neutralize_csv_cell('=HYPERLINK("http://x")'), neutralize_csv_cell("-5"))
    '=HYPERLINK("http://x") -5
    >>> neutralize_csv_cell("@SUM(A1)"), neutralize_csv_cell("ketamine - placebo")
    ("'@SUM(A1)", 'ketamine - placebo')
    """
    if value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value.strip()):
        return "'" + value
    return value


def escape_markdown(text: str) -> str:
    """Text safe inside a Markdown table cell: one line, ``|`` escaped, no raw HTML.

    ``|`` (which would split the cell) and ``\\`` are backslash-escaped; ``<`` that could open
    an HTML tag (``<`` before a letter, ``/``, ``!`` or ``?``) and ``&`` that could start an
    HTML entity become entities; line breaks become spaces. ``<0.001`` and ``A & B`` stay
    readable.

    Examples
    --------
    >>> print(escape_markdown("a|b <script>alert(1)</script> <0.001 & more"))
    a\\|b &lt;script>alert(1)&lt;/script> <0.001 & more
    """
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    text = _ENTITY.sub("&amp;", text)
    text = _TAG_OPEN.sub("&lt;", text)
    return " ".join(text.splitlines())


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


def _csv_text_cell(v: object) -> object:
    """Neutralize a formula; CR line breaks inside a cell become LF (the csv module quotes a
    cell holding LF, not one holding a lone CR, which readers take for the end of a row)."""
    if not isinstance(v, str):
        return v
    return neutralize_csv_cell(v).replace("\r\n", "\n").replace("\r", "\n")


def to_csv_text(data: pd.DataFrame) -> str:
    """The CSV text :func:`write_table` writes (fixed float format, ``\\n`` line ends).

    Examples
    --------
    >>> print(to_csv_text(pd.DataFrame({"x": ["a", "b"], "y": [1 / 3, float("nan")]})), end="")
    x,y
    a,0.3333333333
    b,
    >>> print(to_csv_text(pd.DataFrame({"x": ["=1+1", "-2"], "y": [-1.5, 2.0]})), end="")
    x,y
    '=1+1,-1.5
    -2,2
    """
    out = _clean_cells(data)
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(_csv_text_cell, na_action="ignore")
    out.columns = [neutralize_csv_cell(str(c)) for c in out.columns]
    return out.to_csv(index=False, float_format=FLOAT_FORMAT, na_rep="", lineterminator="\n")


def write_csv(data: pd.DataFrame, path: str | Path, *, identifiers: Identifiers) -> Path:
    """Write one CSV file at ``path`` (e.g. ``validate --report``), identifiers masked.

    Same text as the CSV of :func:`write_table` (formulas neutralized, fixed float format).

    Raises
    ------
    InputError
        ``path`` is a folder, or cannot be written (the message names it and the fix).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "issues.csv"
    >>> ids = Identifiers(frozenset({"initials"}), frozenset({"A.B."}))
    >>> _ = write_csv(pd.DataFrame({"value": ["A.B.", "=1+1"]}), p, identifiers=ids)
    >>> print(p.read_text(), end="")
    value
    [redacted: identifier]
    '=1+1
    """
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p} is a folder; give a file name for the CSV, e.g. {p / 'issues.csv'}.")
    try:
        with open(p, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(to_csv_text(mask_identifiers(data, identifiers, name=p.name)))
    except OSError as exc:
        if exc.errno in USER_FIXABLE_ERRNOS or isinstance(exc, FileNotFoundError):
            raise InputError(os_error_message(exc, str(p))) from exc
        raise
    return p


def read_table_csv(path: str | Path) -> pd.DataFrame:
    """Read a CSV table :func:`write_table` wrote, as strings (leading ``#`` lines skipped).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = p.write_text("# SIMULATED DATA\\nx,y\\n1,#2\\n")
    >>> read_table_csv(p).to_dict("records")
    [{'x': '1', 'y': '#2'}]
    """
    with open(path, encoding="utf-8", newline="") as fh:
        text = fh.read()
    skip = 0
    for line in text.split("\n"):
        if not line.startswith("#"):
            break
        skip += 1
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, skiprows=skip)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _latex(display: pd.DataFrame, title: str | None, notes: str | None, simulated: bool) -> str:
    styler = display.style.hide(axis="index")
    styler = styler.format(escape="latex").format_index(escape="latex", axis=1)
    caption = title or ""
    if simulated:
        caption = f"{SIMULATED_LABEL}. {caption}".strip()
    body = styler.to_latex(
        hrules=True,
        caption=_latex_escape(caption) if caption else None,
        position_float="centering" if caption else None,
        column_format="l" * display.shape[1],
    )
    if simulated:
        body = f"% {SIMULATED_LABEL}\n" + body
    if notes:
        lines = notes.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        body += "".join(f"% {ln}\n" for ln in lines)
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
        "\n": " ",
        "\r": " ",
    }
    return "".join(repl.get(c, c) for c in text)


def _html(
    display: pd.DataFrame, name: str, title: str | None, notes: str | None, simulated: bool
) -> str:
    table = display.to_html(
        index=False, escape=True, border=0, classes="studykit-table", table_id=f"table-{name}"
    )
    parts = []
    if simulated:
        parts.append(f"<p class='simulated'><strong>{html.escape(SIMULATED_LABEL)}</strong></p>")
    if title:
        parts.append(f"<p class='table-title'><strong>{html.escape(title)}</strong></p>")
    parts.append(table)
    if notes:
        parts.append(f"<p class='table-notes'>{html.escape(notes)}</p>")
    return "\n".join(parts) + "\n"


def _markdown(display: pd.DataFrame, title: str | None, notes: str | None, simulated: bool) -> str:
    parts = []
    if simulated:
        parts.append(f"> **{escape_markdown(SIMULATED_LABEL)}**\n")
    if title:
        parts.append(f"**{escape_markdown(title)}**\n")
    if len(display):
        safe = display.map(lambda v: escape_markdown(str(v)))
        safe.columns = [escape_markdown(str(c)) for c in display.columns]
        parts.append(safe.to_markdown(index=False, disable_numparse=True))
    else:
        parts.append("(no rows)")
    if notes:
        parts.append("\n" + escape_markdown(notes))
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
    identifiers: Identifiers | Collection[str] | None = None,
    digits: int = 2,
    simulated: bool = False,
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
    identifiers : Identifiers or collection of str, optional
        What must not be exported (:func:`studykit.privacy.study_identifiers`), or only the
        identifier field names; default: the field names flagged in the packaged dictionary.
        Identifier columns are dropped from every format (also from ``display``); a table
        whose ``variable`` column names one of them (a summary of an identifier's values) is
        refused with :class:`~studykit.errors.InputError`; identifier values are masked in
        every cell, title and note (:func:`studykit.privacy.mask_identifiers`).
    digits : int, default 2
        Decimals of the default display version.
    simulated : bool, default False
        The data are simulated: every format says so (:data:`SIMULATED_LABEL`; CSV: a first
        line ``# SIMULATED DATA ...``, read back with :func:`read_table_csv`; Markdown: a
        first quote line; HTML: a first paragraph; LaTeX: a comment line and the caption).

    Returns
    -------
    dict
        Format -> written path.

    Notes
    -----
    The CSV writes floats as ``%.10g`` (10 significant digits), missing values as empty
    cells and ``\\n`` line ends, so identical results give identical bytes. Text cells
    beginning with ``= + - @`` TAB or CR get a leading ``'`` (:func:`neutralize_csv_cell`);
    Markdown cells have ``|`` and HTML escaped (:func:`escape_markdown`); HTML and LaTeX
    cells are escaped by pandas (``escape=True``, ``escape="latex"``).

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
    if identifiers is None:
        idents = Identifiers(identifier_columns())
    elif isinstance(identifiers, Identifiers):
        idents = identifiers
    else:
        idents = Identifiers(frozenset(identifiers))
    data = mask_identifiers(data, idents, name=name)
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
    display = mask_identifiers(display, idents, name=name).reset_index(drop=True)
    title = mask_text(title, idents.values) if title else title
    notes = mask_text(notes, idents.values) if notes else notes
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for fmt in formats:
        path = directory / f"{name}{TABLE_FORMATS[fmt]}"
        if fmt == "csv":
            text = (f"# {SIMULATED_LABEL}\n" if simulated else "") + to_csv_text(data)
        elif fmt == "md":
            text = _markdown(display, title, notes, simulated)
        elif fmt == "html":
            text = _html(display, name, title, notes, simulated)
        else:
            text = _latex(display, title, notes, simulated)
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        written[fmt] = path
    return written
