"""Identifier values never leave the machine (#13 item 2), wherever they land.

A property test writes rosters whose rows are damaged at random (a cell missing or extra,
another delimiter, stray quotes), validates them, and exports the issue table and its summary
through every writer (`write_table` in all four formats, `write_csv` as `validate --report`
does, the `validate` command itself): no export may contain an identifier value. The
identifier values are generated so that they cannot occur by chance in other text (two
capitals and two digits; dates 1950-1999), so a plain substring search is the check.
"""

from __future__ import annotations

import string
import tempfile
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studykit.cli import main
from studykit.privacy import (
    REDACTED,
    Identifiers,
    identifier_values,
    mask_identifiers,
    mask_text,
    study_identifiers,
)
from studykit.tables import validation_summary, write_csv, write_table
from studykit.validate import validate_table

HEADER = [
    "participant_id",
    "initials",
    "screening_date",
    "sequence",
    "age",
    "sex",
    "bmi",
    "madrs_baseline",
    "status",
    "withdrawal_reason",
]
initials = st.builds(
    lambda a, b, n: f"{a}{b}{n:02d}",
    st.sampled_from(string.ascii_uppercase),
    st.sampled_from(string.ascii_uppercase),
    st.integers(10, 99),
)
dates = st.builds(
    lambda y, m, d: f"{y}-{m:02d}-{d:02d}",
    st.integers(1950, 1999),
    st.integers(1, 12),
    st.integers(1, 28),
)
damage = st.sampled_from(["none", "drop", "extra", "semicolon", "tab", "pipe", "quote", "swap"])


def _line(i: int, ini: str, date: str, how: str) -> str:
    cells = [f"P{i + 1:02d}", ini, date, "KP" if i % 2 else "PK", "40", "F", "24.5", "30"]
    cells += ["completed", ""]
    if how == "drop":
        del cells[1 + i % 2]
    elif how == "extra":
        cells.insert(3, "oops")
    elif how == "quote":
        cells[1] = f'"{ini}'
    elif how == "swap":
        cells[3], cells[1] = cells[1], cells[3]
    delimiter = {"semicolon": ";", "tab": "\t", "pipe": "|"}.get(how, ",")
    return delimiter.join(cells)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.tuples(initials, dates, damage), min_size=2, max_size=8),
)
def test_no_export_ever_contains_an_identifier_value(rows):
    secrets = {v for ini, date, _ in rows for v in (ini, date)}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        study = d / "study"
        study.mkdir()
        lines = [",".join(HEADER)]
        lines += [_line(i, ini, date, how) for i, (ini, date, how) in enumerate(rows)]
        (study / "roster.csv").write_text("\n".join(lines) + "\n")
        idents = study_identifiers(study)
        try:
            issues = validate_table(study / "roster.csv", "roster").issues
        except Exception as exc:  # an unreadable file: its message is what gets exported
            issues = pd.DataFrame({"file": ["roster.csv"], "message": [str(exc)]})
        out = d / "out"
        write_table(issues, out, "issues", identifiers=idents, title="Issues", notes="n")
        if {"file", "column", "rule", "severity"} <= set(issues.columns):
            write_table(validation_summary(issues), out, "summary", identifiers=idents)
        write_csv(issues, out / "report.csv", identifiers=idents)
        for f in out.iterdir():
            text = f.read_text()
            leaked = sorted(v for v in secrets if v in text)
            assert not leaked, (f.name, leaked, lines)


def test_validate_report_and_console_mask_values_of_ragged_rows(tmp_path, capsys):
    lines = [",".join(HEADER)]
    lines.append(_line(0, "QZ11", "1961-01-02", "none"))
    lines.append(_line(1, "QZ22", "1962-02-03", "drop"))  # initials column missing
    lines.append(_line(2, "QZ33", "1963-03-04", "semicolon"))  # another delimiter
    lines.append(_line(3, "QZ44", "1964-04-05", "swap"))  # initials in the sequence column
    roster = tmp_path / "roster.csv"
    roster.write_text("\n".join(lines) + "\n")
    report = tmp_path / "issues.csv"
    assert main(["validate", str(roster), "--report", str(report)]) == 2
    printed = capsys.readouterr().out
    text = report.read_text()
    for secret in ("QZ11", "QZ22", "QZ33", "QZ44", "1962-02-03", "1963-03-04", "1964-04-05"):
        assert secret not in text and secret not in printed, secret
    assert REDACTED in text


def test_identifier_values_from_well_formed_and_damaged_rows(tmp_path):
    (tmp_path / "roster.csv").write_text(
        "participant_id,initials,screening_date,sequence\n"
        "P01,AB12,1990-01-01,KP\n"
        "P02,CD34,1990-02-02,PK\n"
        "P03;EF56;1990-03-03;KP\n"  # another delimiter
        "P04,1990-04-04,PK\n"  # initials missing: the date moved left
    )
    (tmp_path / "periods.csv").write_text("participant_id,period\nP03,1\nP04,1\n")
    values = identifier_values(tmp_path)
    assert {"AB12", "CD34", "1990-01-01", "1990-02-02", "EF56", "1990-03-03"} <= values
    assert "1990-04-04" in values
    # codes and participant ids seen in well-formed rows of any file are not identifiers
    assert not {"KP", "PK", "P01", "P03", "P04"} & values


def test_mask_whole_cells_tokens_and_issue_rows():
    ids = Identifiers(frozenset({"initials"}), frozenset({"AB12", "1990-01-01"}))
    frame = pd.DataFrame(
        {
            "column": ["initials", "sequence", "age"],
            "value": ["xx", "AB12", "AB123"],
            "message": ["bad", "row 'P01;AB12;1990-01-01' split", "ok"],
            "n": [1, 2, 3],
        }
    )
    out = mask_identifiers(frame, ids)
    assert out["value"].tolist() == [REDACTED, REDACTED, "AB123"]  # AB123 is another token
    assert out["message"].tolist() == [REDACTED, f"row 'P01;{REDACTED};{REDACTED}' split", "ok"]
    assert out["n"].tolist() == [1, 2, 3]
    assert mask_text("AB12AB12 and AB12.", {"AB12"}) == f"AB12AB12 and {REDACTED}."
