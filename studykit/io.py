"""Read any tabular file into a frame of strings, keeping the file's row numbers.

:func:`read_table` reads delimited text (comma, tab, semicolon or pipe, detected from the
file), Excel workbooks (``.xlsx``) and Parquet files. Every cell comes back as a string,
exactly as written (missing cells as ``""``), so that :mod:`studykit.validate` can parse
each cell against the data dictionary and report the raw value of any cell that fails.

The frame's index, named ``row``, is the row number as in the file: for text and Excel
files the header is row 1 and the first data row is row 2 (as a spreadsheet numbers rows);
for Parquet it is the 1-based record number. Blank lines are skipped without shifting the
numbers (their row numbers are listed in ``frame.attrs["empty_rows"]``; the validator
reports them as a warning). ``frame.attrs`` also records ``source`` (the path), ``format``,
``encoding`` and ``delimiter``.

Files that cannot be read as a table raise :class:`~studykit.errors.InputError` with a
message naming the file and saying how to fix it: missing file, a directory, an empty
file, a header without data, duplicate column names, rows with more cells than the header,
binary content, a workbook or Parquet file under a text extension, legacy ``.xls``.
"""

from __future__ import annotations

import csv
import io
import logging
import stat
import unicodedata
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd

from studykit.errors import InputError

__all__ = [
    "read_table",
    "refuse_special_file",
    "read_table_or_frame",
    "TEXT_SUFFIXES",
    "EXCEL_SUFFIXES",
    "PARQUET_SUFFIXES",
]

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = (".csv", ".tsv", ".txt", ".tab", ".dat", "")
EXCEL_SUFFIXES = (".xlsx", ".xlsm")
PARQUET_SUFFIXES = (".parquet", ".pq")
_DELIMITERS = (",", "\t", ";", "|")
_DELIMITER_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}


def read_table(path: str | Path, *, sheet: str | int | None = None) -> pd.DataFrame:
    """Read a CSV / TSV / Excel / Parquet file into a frame of strings.

    Parameters
    ----------
    path : str or Path
        The file. Its format comes from the extension (``.xlsx``/``.xlsm`` Excel,
        ``.parquet``/``.pq`` Parquet, anything else delimited text) and is checked against
        the file's first bytes.
    sheet : str or int, optional
        Excel only: the worksheet (name or 0-based position). Default: the first sheet.

    Returns
    -------
    pandas.DataFrame
        One column per header cell (names stripped of surrounding spaces), every cell a
        string (``""`` when empty). Index ``row``: the row number in the file (header = 1).
        ``attrs``: ``source``, ``format`` (csv / excel / parquet), ``encoding``,
        ``delimiter``.

    Raises
    ------
    InputError
        The file is missing, a directory, empty, only a header, binary, undecodable, has
        duplicate column names or rows with more cells than the header.

    Notes
    -----
    Text encodings: UTF-8 (with or without a byte-order mark) and UTF-16 with a byte-order
    mark are read as such; text that is not valid UTF-8 is read as Windows-1252 / Latin-1
    and ``attrs["encoding"]`` says so (the validator reports it as a warning). The
    delimiter is the candidate (comma, tab, semicolon, pipe) that splits the first lines
    into the same number of cells, more than one.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "roster.csv").write_text("participant_id;age\\nP01;34\\n\\nP02;41\\n")
    >>> t = read_table(d / "roster.csv")
    >>> t.index.tolist(), t["participant_id"].tolist(), t["age"].tolist()
    ([2, 4], ['P01', 'P02'], ['34', '41'])
    >>> t.attrs["delimiter"]
    ';'
    """
    p = Path(path)
    if not p.exists():
        parent = p.parent if str(p.parent) else Path(".")
        hint = ""
        if parent.is_dir():
            near = sorted(x.name for x in parent.iterdir() if x.stem.lower() == p.stem.lower())
            if near:
                hint = f" Files with that name there: {', '.join(near[:5])}."
        raise InputError(f"File not found: {p}. Check the path and the current directory.{hint}")
    if p.is_dir():
        raise InputError(
            f"{p} is a directory, not a file. Pass a file inside it (e.g. {p / 'nights.csv'}); "
            "to read a whole study directory use load_study() or 'studykit validate DIR'."
        )
    refused = refuse_special_file(p)
    if refused:
        raise InputError(f"{p}: {refused}")
    try:
        with p.open("rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise InputError(f"Cannot open {p}: {exc.strerror}. Check its permissions.") from exc
    suffix = p.suffix.lower()
    if suffix == ".xls":
        raise InputError(
            f"{p} is a legacy Excel 97-2003 workbook (.xls), which studykit does not read. Open "
            "it in Excel or LibreOffice and save it as .xlsx or CSV UTF-8."
        )
    is_zip = head.startswith(b"PK\x03\x04")
    is_parquet = head.startswith(b"PAR1")
    if suffix in EXCEL_SUFFIXES:
        frame = _read_excel(p, sheet=sheet)
    elif suffix in PARQUET_SUFFIXES:
        frame = _read_parquet(p)
    elif is_zip:
        raise InputError(
            f"{p} is a ZIP container (an Excel .xlsx workbook?) although its name ends in "
            f"{suffix or 'nothing'}. Rename it to .xlsx if it is a workbook, or export it as CSV."
        )
    elif is_parquet:
        raise InputError(
            f"{p} is a Parquet file although its name ends in {suffix or 'nothing'}. Rename it "
            "to .parquet."
        )
    else:
        frame = _read_text(p)
    frame.attrs["source"] = str(p)
    return frame


def refuse_special_file(path: str | Path, root: str | Path | None = None) -> str | None:
    """Why ``path`` must not be read (a message), or None for a regular file.

    Refused: a FIFO (named pipe: reading it would wait forever), a device, a socket, and,
    when ``root`` is given, a symbolic link whose target lies outside ``root`` (a study
    folder must not pull in files from elsewhere). Nothing is opened.

    Examples
    --------
    >>> import os, tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> os.mkfifo(d / "diary.csv")
    >>> refuse_special_file(d / "diary.csv")[:40]
    'diary.csv is a FIFO (named pipe), not a '
    >>> _ = (d / "roster.csv").write_text("participant_id\\nP01\\n")
    >>> refuse_special_file(d / "roster.csv") is None
    True
    """
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError:
        return None  # missing or dangling: the reader says so
    kind = (
        "a FIFO (named pipe)"
        if stat.S_ISFIFO(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else None
    )
    if kind is not None:
        return (
            f"{p.name} is {kind}, not a regular file: refused (reading it could block or never "
            "end). Save the table as an ordinary file."
        )
    if root is not None and p.is_symlink():
        target = p.resolve()
        base = Path(root).resolve()
        if not target.is_relative_to(base):
            return (
                f"{p.name} is a symbolic link to {target}, outside the study folder {base}: "
                "refused. Copy the file into the study folder."
            )
    return None


# ---------------------------------------------------------------------------------------
# text
# ---------------------------------------------------------------------------------------
def read_table_or_frame(
    table: str | Path | pd.DataFrame, *, name: str = "<frame>"
) -> tuple[pd.DataFrame, str]:
    """A file (read with :func:`read_table`) or a frame already in memory, as strings.

    Parameters
    ----------
    table : str, Path or DataFrame
        A path, or a frame (missing cells become ``""``, every cell a string; its rows are
        numbered as a file's would be: header = 1, first data row = 2).
    name : str
        What messages call a frame (a file is called by its path).

    Returns
    -------
    (DataFrame, str)
        The frame of strings and its source (the path, or ``name``).

    Examples
    --------
    >>> t, source = read_table_or_frame(pd.DataFrame({"a": [1, None]}), name="<events>")
    >>> t["a"].tolist(), t.index.tolist(), source
    (['1.0', ''], [2, 3], '<events>')
    """
    if isinstance(table, pd.DataFrame):
        frame = table.astype(object).where(table.notna(), "").astype(str)
        frame.index = pd.RangeIndex(2, len(frame) + 2, name="row")
        return frame, name
    return read_table(table), str(table)


def _decode(p: Path, raw: bytes) -> tuple[str, str]:
    if raw.startswith(b"\xef\xbb\xbf"):
        encoding = "utf-8-sig"
    elif raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    elif len(raw) >= 4 and raw[1:4:2] == b"\x00\x00" and raw[0:4:2] != b"\x00\x00":
        encoding = "utf-16-le"  # UTF-16 without a byte-order mark (ASCII text, every 2nd byte 0)
    else:
        encoding = "utf-8"
    if encoding == "utf-8" and b"\x00" in raw[:65536]:
        raise InputError(
            f"{p} is not a text table: it contains binary data (NUL bytes). Check that you "
            "passed the right file; export the table as CSV (UTF-8)."
        )
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        if encoding != "utf-8":
            how = (
                f"starts with a {encoding} byte-order mark"
                if raw.startswith((b"\xff\xfe", b"\xfe\xff"))
                else f"looks like {encoding} text (every second byte is 0)"
            )
            raise InputError(
                f"{p} {how} but is not valid {encoding} ({exc.reason} at byte {exc.start}). "
                "Save it again as CSV UTF-8."
            ) from exc
        try:
            text, encoding = raw.decode("cp1252"), "cp1252"
        except UnicodeDecodeError:
            text, encoding = raw.decode("latin-1"), "latin-1"
        logger.warning(
            "%s is not valid UTF-8 (%s at byte %d); read it as %s",
            p,
            exc.reason,
            exc.start,
            encoding,
        )
    sample = text[:65536]
    controls = sum(
        1 for ch in sample if ch not in "\t\r\n" and unicodedata.category(ch) in ("Cc", "Cs", "Co")
    )
    if sample and controls > max(2, 0.005 * len(sample)):
        raise InputError(
            f"{p} is not a text table: {controls} control characters in its first "
            f"{len(sample)} characters (binary data?). Check that you passed the right file; "
            "export the table as CSV (UTF-8)."
        )
    return text, encoding


def _sniff_delimiter(text: str) -> str:
    lines = [ln for ln in text.splitlines()[:50] if ln.strip()][:20]
    best, best_score = ",", (0.0, 1)
    for d in _DELIMITERS:
        try:
            counts = [len(r) for r in csv.reader(lines, delimiter=d)]
        except csv.Error:
            continue
        if not counts or counts[0] < 2:
            continue
        consistent = sum(c == counts[0] for c in counts) / len(counts)
        score = (consistent, counts[0])
        if score > best_score:
            best, best_score = d, score
    return best


def _read_text(p: Path) -> pd.DataFrame:
    raw = p.read_bytes()
    if not raw.strip():
        raise InputError(
            f"{p} is empty. It needs a header line with the column names and one line per "
            "row (see data_dictionary.csv for the columns of each table)."
        )
    text, encoding = _decode(p, raw)
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise InputError(f"{p} is empty (only white space).")
    # leading blank lines would make the parser see zero columns: drop them, keep the count
    skipped = 0
    while True:
        nl = text.find("\n")
        if nl < 0 or text[:nl].strip():
            break
        text = text[nl + 1 :]
        skipped += 1
    # Excel's "sep=;" first line names the delimiter
    first_line = text.split("\n", 1)[0].strip()
    if len(first_line) == 5 and first_line.lower().startswith("sep="):
        delimiter = first_line[4]
        text = text.split("\n", 1)[1] if "\n" in text else ""
        skipped += 1
        if not text.strip():
            raise InputError(f"{p} has only a 'sep=' line and no table.")
    else:
        delimiter = _sniff_delimiter(text)
    cells = _split_cells(p, text, delimiter, skipped=skipped)
    frame = _split_header(p, cells, first_row=1 + skipped)
    frame.attrs.update(format="csv", encoding=encoding, delimiter=delimiter)
    return frame


def _split_cells(p: Path, text: str, delimiter: str, *, skipped: int) -> np.ndarray:
    """Text -> 2-D array of cell strings (rows as records; short rows padded with "").

    The first record fixes the number of cells: a later record with more cells is an error
    (often unquoted delimiters in values), as is a quote that is never closed. Python's C
    ``csv`` reader is used and the cells go into one array, so the time grows linearly with
    the number of cells whatever the file's shape.
    """
    # a cell may be as long as the file (the csv module's default cap is 128 kB)
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    reader = csv.reader(io.StringIO(text, newline=None), delimiter=delimiter, strict=True)
    records: list[list[str]] = []
    start_line = 1
    try:
        for record in reader:
            if records and len(record) > len(records[0]):
                raise InputError(
                    f"{p} cannot be split into cells with the {_DELIMITER_NAMES[delimiter]} "
                    f"delimiter: Expected {len(records[0])} fields in line "
                    f"{reader.line_num + skipped}, saw {len(record)}. A row has more cells "
                    "than the header: often unquoted delimiters inside values, e.g. decimal "
                    "commas ('7,5') in a comma-separated file. Quote such values, or use ';' "
                    "as the delimiter, or '.' as the decimal separator."
                )
            records.append(record)
            start_line = reader.line_num + 1
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            raise InputError(
                f'{p} has a quote character (") that is never closed (the quote opens on line '
                f"{start_line + skipped}). Close the quote or remove it."
            ) from exc
        raise InputError(
            f"{p} cannot be split into cells (line {reader.line_num + skipped}: {exc}). Check "
            "the quotes on that line; save the file again as CSV UTF-8."
        ) from exc
    width = len(records[0]) if records else 0
    grid = np.full((len(records), width), "", dtype=object)
    for i, record in enumerate(records):
        grid[i, : len(record)] = record
    return grid


def _split_header(p: Path, cells: np.ndarray, *, first_row: int) -> pd.DataFrame:
    """Take row 0 as the header; index the rest by their row number in the file.

    Works on one 2-D object array, so that the cost grows linearly with the number of cells
    whatever the shape (a frame with one block per column made wide files slow).
    """
    grid = cells
    rows = np.arange(first_row, first_row + grid.shape[0])
    empty = grid == ""
    blank = empty.all(axis=1)
    if blank.all():
        raise InputError(f"{p} is empty (only blank lines).")
    start = int(blank.argmin())  # skip leading blank lines
    header = [str(h).strip() for h in grid[start]]
    keep = ~blank[start + 1 :]
    body_rows = rows[start + 1 :]
    body = grid[start + 1 :][keep]
    # drop unnamed columns that hold nothing (a trailing delimiter on every line)
    named = np.array([bool(h) for h in header], dtype=bool) | (~empty[start + 1 :][keep]).any(
        axis=0
    )
    if not named.all():
        body = body[:, named]
        header = [h for h, k in zip(header, named, strict=True) if k]
    header = [h if h else f"unnamed_{j + 1}" for j, h in enumerate(header)]
    dupes = sorted(h for h, k in Counter(header).items() if k > 1)
    if dupes:
        places: dict[str, list[str]] = {}
        for j, h in enumerate(header):
            places.setdefault(h, []).append(str(j + 1))
        where = "; ".join(f"{d!r} in columns {', '.join(places[d])}" for d in dupes[:10])
        raise InputError(
            f"{p} has duplicate column names: {where}. Each column needs its own name; rename "
            "or delete the repeated column(s)."
        )
    if body.shape[0] == 0:
        raise InputError(
            f"{p} has a header ({', '.join(header[:8])}{', ...' if len(header) > 8 else ''}) but "
            "no data rows. Add the data, or leave the file out."
        )
    frame = pd.DataFrame(
        body, columns=header, index=pd.Index(body_rows[keep], name="row"), dtype=object
    )
    frame.attrs["empty_rows"] = [int(r) for r in body_rows[~keep]]
    frame.attrs["header_row"] = int(rows[start])
    return frame


# ---------------------------------------------------------------------------------------
# Excel and Parquet
# ---------------------------------------------------------------------------------------
#: Largest total uncompressed size of an .xlsx workbook read (bytes): a zip bomb of a few kB
#: can expand to gigabytes, so sizes are checked before anything is loaded.
XLSX_MAX_UNCOMPRESSED = 256 * 2**20
#: Largest compression ratio of any member of an .xlsx workbook (real workbooks: below ~20).
XLSX_MAX_RATIO = 200
#: Largest number of cells of the worksheet read (from the sheet's declared dimension).
XLSX_MAX_CELLS = 5_000_000


def _check_workbook(p: Path) -> None:
    """Refuse a workbook whose members expand beyond the limits (zip bomb), before loading."""
    try:
        with zipfile.ZipFile(p) as z:
            members = z.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(
            f"{p} cannot be read as an Excel .xlsx workbook ({type(exc).__name__}: {exc}). Open "
            "it in Excel and save it again, or export the sheet as CSV UTF-8."
        ) from exc
    total = sum(m.file_size for m in members)
    if total > XLSX_MAX_UNCOMPRESSED:
        raise InputError(
            f"{p}: the workbook's parts add up to {total:,} bytes uncompressed, above the "
            f"limit of {XLSX_MAX_UNCOMPRESSED:,} (a damaged file or a zip bomb). Export the "
            "sheet as CSV UTF-8."
        )
    for m in members:
        if m.file_size > 2**20 and m.file_size > XLSX_MAX_RATIO * max(m.compress_size, 1):
            raise InputError(
                f"{p}: part {m.filename} expands {m.file_size // max(m.compress_size, 1):,}-fold "
                f"when uncompressed (limit {XLSX_MAX_RATIO}; a zip bomb?). Export the sheet "
                "as CSV UTF-8."
            )


def _formula_cells(p: Path, sheet: str | int | None) -> list[tuple[int, int, str]]:
    """``(row, column, formula)`` (1-based) of every formula cell of the sheet."""
    wb = openpyxl.load_workbook(p, read_only=True, data_only=False)
    try:
        ws = (
            wb.worksheets[sheet]
            if isinstance(sheet, int)
            else wb[sheet]
            if sheet
            else wb.worksheets[0]
        )
        try:
            dims = ws.calculate_dimension()
        except ValueError:  # an "unsized" sheet declares no dimension: counted while read
            dims = ""
        if ":" in dims:
            min_col, min_row, max_col, max_row = openpyxl.utils.cell.range_boundaries(dims)
            cells = (max_row - min_row + 1) * (max_col - min_col + 1)
            if cells > XLSX_MAX_CELLS:
                raise InputError(
                    f"{p}: the worksheet spans {dims} ({cells:,} cells), above the limit of "
                    f"{XLSX_MAX_CELLS:,}. Delete the unused rows and columns, or export the "
                    "sheet as CSV UTF-8."
                )
        found = []
        seen = 0
        for row in ws.iter_rows(min_row=1, min_col=1):
            seen += len(row)
            if seen > XLSX_MAX_CELLS:
                raise InputError(
                    f"{p}: the worksheet has more than {XLSX_MAX_CELLS:,} cells. Delete the "
                    "unused rows and columns, or export the sheet as CSV UTF-8."
                )
            for cell in row:
                if getattr(cell, "data_type", None) == "f":
                    found.append((int(cell.row), int(cell.column), str(cell.value)))
        return found
    finally:
        wb.close()


def _read_excel(p: Path, *, sheet: str | int | None) -> pd.DataFrame:
    _check_workbook(p)
    try:
        formulas = _formula_cells(p, sheet)
        cells = pd.read_excel(
            p, sheet_name=0 if sheet is None else sheet, header=None, dtype=str, engine="openpyxl"
        )
    except InputError:
        raise
    except (zipfile.BadZipFile, OSError, KeyError) as exc:
        raise InputError(
            f"{p} cannot be read as an Excel .xlsx workbook ({type(exc).__name__}: {exc}). Open "
            "it in Excel and save it again, or export the sheet as CSV UTF-8."
        ) from exc
    except ValueError as exc:  # unknown sheet name, or not an xlsx at all
        raise InputError(f"{p}: {exc}. Pass an existing sheet, or export it as CSV.") from exc
    except Exception as exc:  # openpyxl raises its own types for corrupt workbooks
        raise InputError(
            f"{p} cannot be read as an Excel .xlsx workbook ({type(exc).__name__}: {exc}). Save "
            "it again from Excel, or export the sheet as CSV UTF-8."
        ) from exc
    if cells.empty:
        raise InputError(
            f"{p}: the worksheet is empty. Put the header in row 1 and the data below."
        )
    grid = cells.fillna("").astype(str).to_numpy(dtype=object)
    frame = _split_header(p, grid, first_row=1)
    # a formula whose result was never saved (a workbook written by a script, or saved
    # without recalculation) reads as an empty cell: say so instead of reading it as missing
    uncached = []
    header = grid[frame.attrs["header_row"] - 1]
    names = {j + 1: str(h).strip() for j, h in enumerate(header)}
    for r, c, formula in formulas:
        if r - 1 < grid.shape[0] and c - 1 < grid.shape[1] and grid[r - 1, c - 1] == "":
            uncached.append((r, names.get(c, ""), formula))
    frame.attrs.update(format="excel", encoding="", delimiter="", formula_cells=uncached)
    return frame


def _read_parquet(p: Path) -> pd.DataFrame:
    try:
        data = pd.read_parquet(p)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for non-Parquet files
        raise InputError(
            f"{p} cannot be read as a Parquet file ({type(exc).__name__}: {exc}). Check that it "
            "is Parquet, or export the table as CSV UTF-8."
        ) from exc
    if len(data.columns) == 0:
        raise InputError(f"{p} has no columns.")
    names = [str(c).strip() for c in data.columns]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"{p} has duplicate column names: {', '.join(dupes)}. Rename them.")
    if len(data) == 0:
        raise InputError(f"{p} has columns ({', '.join(names[:8])}) but no data rows.")
    out = {}
    for name, col in zip(names, data.columns, strict=True):
        out[name] = _to_strings(data[col])
    frame = pd.DataFrame(out)
    frame.index = pd.RangeIndex(1, len(frame) + 1, name="row")
    frame.attrs.update(format="parquet", encoding="", delimiter="")
    return frame


def _to_strings(s: pd.Series) -> pd.Series:
    """Typed column -> strings as a CSV writer would write them ('' for missing)."""
    if pd.api.types.is_datetime64_any_dtype(s):
        out = s.dt.strftime("%Y-%m-%dT%H:%M:%S")
    elif pd.api.types.is_bool_dtype(s):
        out = s.map({True: "true", False: "false"})
    else:
        out = s.astype(str).where(s.notna())
    return out.fillna("").astype(str)
