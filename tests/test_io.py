"""studykit.io.read_table: every file format, encoding and the bad-input corpus.

The corpus is tests/data/bad_inputs/ (its README lists each file and the expected outcome).
Expected cell values below are read off the hand-written files.
"""

from pathlib import Path

import pandas as pd
import pytest

from studykit.errors import InputError
from studykit.io import read_table

CORPUS = Path(__file__).parent / "data" / "bad_inputs"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("empty.csv", r"empty\.csv is empty\. It needs a header line"),
        ("whitespace_only.csv", r"whitespace_only\.csv is empty"),
        ("header_only_nights.csv", r"has a header \(participant_id, period.*\) but no data rows"),
        ("duplicate_columns_nights.csv", r"duplicate column names: 'night' in columns 3, 4"),
        ("ragged_decimal_comma_nights.csv", r"Expected 6 fields in line 3, saw 7.*decimal commas"),
        ("binary_junk.csv", r"binary_junk\.csv is not a text table: it contains binary data"),
        ("binary_no_nul.dat", r"binary_no_nul\.dat is not a text table: \d+ control characters"),
        ("a_directory.csv", r"a_directory\.csv is a directory, not a file"),
        ("missing_nights.csv", r"File not found: .*missing_nights\.csv"),
        ("xlsx_named_roster.csv", r"is a ZIP container \(an Excel \.xlsx workbook\?\).*Rename it"),
        ("legacy_roster.xls", r"legacy Excel 97-2003 workbook.*save it as \.xlsx or CSV"),
        ("not_parquet_roster.parquet", r"cannot be read as a Parquet file"),
        (
            "unclosed_quote_diary.csv",
            r"quote character \(\"\) that is never closed \(the quote opens on line 2\)",
        ),
    ],
)
def test_bad_files_raise_input_error_naming_file_and_fix(name, message):
    with pytest.raises(InputError, match=message) as exc:
        read_table(CORPUS / name)
    assert name in str(exc.value)


# roster rows of the corpus files (hand-written): P01 KP 34 F 31 completed '';
# P02 PK 41 M 28 withdrawn 'déménagement (moved away)'
ROSTER_COLUMNS = [
    "participant_id",
    "sequence",
    "age",
    "sex",
    "madrs_baseline",
    "status",
    "withdrawal_reason",
]


@pytest.mark.parametrize(
    ("name", "fmt", "encoding"),
    [
        ("utf8_bom_roster.csv", "csv", "utf-8-sig"),
        ("latin1_roster.csv", "csv", "cp1252"),
        ("utf16_roster.txt", "csv", "utf-16"),
        ("roster.xlsx", "excel", ""),
        ("roster.parquet", "parquet", ""),
    ],
)
def test_encodings_and_formats_read_to_the_same_strings(name, fmt, encoding):
    t = read_table(CORPUS / name)
    assert list(t.columns) == ROSTER_COLUMNS
    assert t.attrs["format"] == fmt
    assert t.attrs["encoding"] == encoding
    assert t["participant_id"].tolist() == ["P01", "P02"]
    assert t["age"].tolist() == ["34", "41"]
    assert t["withdrawal_reason"].tolist() == ["", "déménagement (moved away)"]
    assert t.index.name == "row"
    # header is row 1 for text and Excel; Parquet has no header row: 1-based records
    assert t.index.tolist() == ([1, 2] if fmt == "parquet" else [2, 3])


@pytest.mark.parametrize("delimiter", [",", "\t", ";", "|"])
def test_delimiter_is_detected(tmp_path, delimiter):
    p = tmp_path / "t.csv"
    p.write_text(delimiter.join(["a", "b", "c"]) + "\n" + delimiter.join(["1", "2", "3"]) + "\n")
    t = read_table(p)
    assert list(t.columns) == ["a", "b", "c"]
    assert t.attrs["delimiter"] == delimiter
    assert t.iloc[0].tolist() == ["1", "2", "3"]


def test_row_numbers_count_blank_lines_and_header(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("\nid,x\nA,1\n\n\nB,2\n,\nC,3\n")
    t = read_table(p)
    # line 1 blank, header on line 2; data on lines 3, 6, 8; line 7 is all-empty cells
    assert t.index.tolist() == [3, 6, 8]
    assert t["id"].tolist() == ["A", "B", "C"]


def test_quoted_delimiters_and_trailing_delimiter(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text('id,label,\nA,"Sleepy, no effort",\n')
    t = read_table(p)
    assert list(t.columns) == ["id", "label"]  # empty trailing column dropped
    assert t["label"].tolist() == ["Sleepy, no effort"]


def test_unnamed_column_with_data_is_kept(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("id,,x\nA,5,1\n")
    assert list(read_table(p).columns) == ["id", "unnamed_2", "x"]


def test_excel_sheet_choice_and_missing_sheet(tmp_path):
    p = tmp_path / "book.xlsx"
    with pd.ExcelWriter(p) as w:
        pd.DataFrame({"a": [1]}).to_excel(w, sheet_name="first", index=False)
        pd.DataFrame({"b": ["x", "y"]}).to_excel(w, sheet_name="second", index=False)
    assert list(read_table(p).columns) == ["a"]
    t = read_table(p, sheet="second")
    assert t["b"].tolist() == ["x", "y"]
    with pytest.raises(InputError, match="book.xlsx"):
        read_table(p, sheet="nope")


def test_parquet_types_become_strings(tmp_path):
    p = tmp_path / "t.parquet"
    pd.DataFrame(
        {
            "i": pd.array([1, None], dtype="Int64"),
            "f": [1.5, float("nan")],
            "b": [True, False],
            "d": pd.to_datetime(["2024-03-05 22:30", None]),
        }
    ).to_parquet(p)
    t = read_table(p)
    assert t["i"].tolist() == ["1", ""]
    assert t["f"].tolist() == ["1.5", ""]
    assert t["b"].tolist() == ["true", "false"]
    assert t["d"].tolist() == ["2024-03-05T22:30:00", ""]


def test_excel_sep_line_names_the_delimiter():
    t = read_table(CORPUS / "excel_sep_line_diary.csv")
    assert t.attrs["delimiter"] == ";"
    assert list(t.columns) == ["participant_id", "period", "day"]
    assert t.index.tolist() == [3]  # line 1 'sep=;', header on line 2


def test_utf16_without_bom(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes("a\tb\n1\t2\n".encode("utf-16-le"))
    t = read_table(p)
    assert t.attrs["encoding"] == "utf-16-le"
    assert t.iloc[0].tolist() == ["1", "2"]


def test_input_is_not_modified(tmp_path):
    p = tmp_path / "t.csv"
    text = "id,x\nA,1\n"
    p.write_text(text)
    read_table(p)
    assert p.read_text() == text
