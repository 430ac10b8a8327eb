"""Identifier values never leave the machine (#13 item 2), wherever they land.

A property test writes rosters whose rows are damaged at random (a cell missing or extra,
another delimiter, stray quotes), validates them, and exports the issue table and its summary
through every writer (`write_table` in all four formats, `write_csv` as `validate --report`
does, the `validate` command itself): no export may contain an identifier value. The
identifier values are generated so that they cannot occur by chance in other text (two
capitals and two digits; dates 1950-1999), so a plain substring search is the check.
"""

from __future__ import annotations

import shutil
import string
import tempfile
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studykit.cli import main
from studykit.dictionary import load_dictionary
from studykit.privacy import (
    REDACTED,
    Identifiers,
    identifier_values,
    mask_identifiers,
    mask_text,
    study_identifiers,
)
from studykit.tables import validation_summary, write_csv, write_table
from studykit.validate import load_study, validate_table

ROOT = Path(__file__).resolve().parents[1]

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


def test_identifier_numbers_in_numeric_columns_are_flagged_and_never_exported(tmp_path):
    # Gap of #13 item 2: identifier values were searched in text cells only. A lab's
    # dictionary with a numeric identifier (a medical record number) and an MRN typed into a
    # numeric data column: validation rejects the row (error identifier_value: the value is
    # never analysed, so no mean / min / max shows it), another participant's number is a
    # warning, and no export (validate --report, the console, write_table) contains it.
    lines = (ROOT / "data_dictionary.csv").read_text(encoding="utf-8").splitlines()
    lines.append(
        "mrn,Medical record number,roster,identifier,string,,,,,no,no,yes,,,,"
        "Hospital record number; kept at site only.,"
    )
    dd_path = tmp_path / "lab_dictionary.csv"
    dd_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    dd = load_dictionary(dd_path)
    study = tmp_path / "study"
    shutil.copytree(ROOT / "tests" / "data" / "foundation" / "study", study)
    roster = pd.read_csv(study / "roster.csv", dtype=str, keep_default_na=False)
    roster["mrn"] = ""
    roster.loc[roster["participant_id"] == "P01", "mrn"] = "0071207"
    roster.loc[roster["participant_id"] == "P02", "mrn"] = "71311"
    roster.to_csv(study / "roster.csv", index=False)
    nights = pd.read_csv(study / "nights.csv", dtype=str, keep_default_na=False)
    nights["n_transitions"] = ""
    first = (nights["night"] == "baseline") & (nights["period"] == "1")
    p01_base = first & (nights["participant_id"] == "P01")
    p03_base = first & (nights["participant_id"] == "P03")
    nights.loc[p01_base, "n_transitions"] = "71207"  # P01's own MRN, in a numeric column
    nights.loc[p03_base, "n_transitions"] = "71311.0"  # P02's MRN in P03's row
    nights.to_csv(study / "nights.csv", index=False)
    # (the dictionary's n_transitions maximum is 2000: use a lab range for this column)
    text = dd_path.read_text(encoding="utf-8").replace(
        "n_transitions,Number of stage transitions,nights,derived,integer,count,0,2000,",
        "n_transitions,Number of stage transitions,nights,derived,integer,count,0,100000,",
    )
    dd_path.write_text(text, encoding="utf-8")
    dd = load_dictionary(dd_path)
    assert dd.get("nights", "n_transitions").maximum == 100000

    s = load_study(study, dictionary=dd)
    found = s.issues[s.issues["rule"] == "identifier_value"]
    got = found[["participant_id", "night", "column", "value", "severity"]].values.tolist()
    assert sorted(got) == [
        ["P01", "baseline", "n_transitions", REDACTED, "error"],
        ["P03", "baseline", "n_transitions", REDACTED, "warning"],
    ]
    assert "roster.mrn" in found.loc[found["severity"] == "error", "message"].iloc[0]
    kept = s.nights[["participant_id", "period", "night"]].astype(str).values.tolist()
    assert ["P01", "1", "baseline"] not in kept and ["P03", "1", "baseline"] in kept
    # the exports: validate --report, the console listing, every table format
    report = tmp_path / "issues.csv"
    out = tmp_path / "tables"
    main(["validate", str(study), "--dictionary", str(dd_path), "--report", str(report)])
    ids = study_identifiers(study, dictionary=dd)
    assert {"0071207", "71311"} <= ids.values
    for name, table in (("issues", s.issues), ("summary", validation_summary(s.issues))):
        write_table(table, out, name, identifiers=ids)
    masked = mask_identifiers(pd.DataFrame({"value": ["71207.0", "71311", "12"]}), ids)
    assert masked["value"].tolist() == [REDACTED, REDACTED, "12"]
    for f in [report, *out.iterdir()]:
        content = f.read_text(encoding="utf-8")
        for number in ("71207", "71311"):
            assert number not in content, (f.name, number)
