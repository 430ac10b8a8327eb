"""Bad and unusual input (issues #12.4, #12.5, #13.4, #13.6, #13.9, #13.11, #13.12).

Studies with hypnograms are SIMULATED (studykit.simulate, 4 participants, mess=False); the
other fixtures are hand-written here or copied from tests/data/foundation/study. Every
expected count below is a hand count on these small files.
"""

import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest

from studykit.analysis import run_analysis
from studykit.cli import main
from studykit.errors import InputError
from studykit.io import read_table
from studykit.protocol import load_protocol
from studykit.simulate import simulate_study, write_study
from studykit.validate import (
    MINUTES_TOLERANCE,
    load_study,
    table_by_columns,
    validate_table,
)

DATA = Path(__file__).parent / "data"
STUDY = DATA / "foundation" / "study"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A small SIMULATED study with hypnograms (written once, copied per test)."""
    d = tmp_path_factory.mktemp("sim") / "study"
    write_study(simulate_study(n_participants=4, mess=False), d)
    return d


@pytest.fixture
def sim_dir(simulated, tmp_path):
    d = tmp_path / "study"
    shutil.copytree(simulated, d)
    return d


@pytest.fixture
def study_dir(tmp_path):
    d = tmp_path / "study"
    shutil.copytree(STUDY, d)
    return d


def _set_cell(path: Path, row: int, column: str, value: str) -> str:
    """Set one cell of a CSV (row = 0-based data row); return the old value."""
    t = pd.read_csv(path, dtype=str, keep_default_na=False)
    old = t.loc[row, column]
    t.loc[row, column] = value
    t.to_csv(path, index=False)
    return old


# -- #12.5 one truth for derived outcomes --------------------------------------------------
def test_typed_outcome_that_differs_from_the_hypnogram_is_reported(sim_dir):
    nights = sim_dir / "nights.csv"
    # sol_min: no cross-field rule involves it, so the row stays accepted
    old = float(_set_cell(nights, 0, "sol_min", "99.5"))  # first row, file row 2
    s = load_study(sim_dir)
    diff = s.issues[s.issues["rule"] == "derived_mismatch"]
    # one issue for the edited night and column, none for the other 23 nights
    assert diff[["row", "column", "severity"]].values.tolist() == [[2, "sol_min", "warning"]]
    assert "the hypnogram gives" in diff["message"].iloc[0]
    assert s.outcomes == "hypnograms"
    first = s.nights.loc[2]
    assert abs(first["sol_min"] - old) <= MINUTES_TOLERANCE  # the recomputed value
    typed = load_study(sim_dir, outcomes="typed")
    assert typed.outcomes == "typed"
    assert typed.nights.loc[2, "sol_min"] == 99.5
    assert (typed.issues["rule"] == "derived_mismatch").sum() == 1


def test_fit_api_and_run_analyse_the_same_values(sim_dir, tmp_path, capsys):
    # before: fit / the API analysed nights.csv and run the recomputed values
    nights = sim_dir / "nights.csv"
    t = pd.read_csv(nights)
    t["sol_min"] = t["sol_min"] + 60  # every typed sleep-onset latency off by an hour
    t.to_csv(nights, index=False)
    proto = load_protocol(ROOT / "protocols" / "ketamine_sleep.yaml")
    api = run_analysis(proto, load_study(sim_dir)).hypotheses
    assert main(["fit", str(ROOT / "protocols/ketamine_sleep.yaml"), "--data", str(sim_dir),
                 "--csv", str(tmp_path / "fit.csv")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert f"{len(t)} typed value(s) differ" in out  # fit says so, one line per night
    fit = pd.read_csv(tmp_path / "fit.csv")
    assert np.allclose(fit["estimate"], api["estimate"], equal_nan=True)
    assert main(["run", str(ROOT / "protocols/ketamine_sleep.yaml"), "--data", str(sim_dir),
                 "--out", str(tmp_path / "res"), "--quiet"]) == 0  # fmt: skip
    run = pd.read_csv(tmp_path / "res" / "tables" / "hypotheses.csv", skiprows=1)  # SIMULATED
    assert np.allclose(run["estimate"], api["estimate"], equal_nan=True)
    issues = pd.read_csv(tmp_path / "res" / "tables" / "validation_issues.csv", skiprows=1)
    assert (issues["rule"] == "derived_mismatch").sum() == len(t)


def test_validate_reports_differences_and_outcomes_flag(sim_dir, tmp_path):
    _set_cell(sim_dir / "nights.csv", 3, "sol_min", "123")
    report = tmp_path / "issues.csv"
    assert main(["validate", str(sim_dir), "--report", str(report)]) == 0  # a warning
    issues = pd.read_csv(report)
    assert issues.loc[issues["rule"] == "derived_mismatch", ["row", "column"]].values.tolist() == [
        [5, "sol_min"]
    ]


# -- #13.4 an absent hypnogram ------------------------------------------------------------
def test_absent_hypnogram_is_an_error_not_a_blank_night(sim_dir, tmp_path):
    victim = sorted((sim_dir / "hypnograms").iterdir())[1]  # P01_p1_post1
    victim.unlink()
    s = load_study(sim_dir)
    miss = s.issues[s.issues["rule"] == "hypnogram_missing"]
    assert miss[["participant_id", "night", "severity"]].values.tolist() == [
        ["P01", "post1", "error"]
    ]
    assert not s.ok
    assert len(s.nights) == 23 and s.nights[["tst_min", "se_pct"]].notna().all().all()
    assert main(["validate", str(sim_dir)]) == 2
    # run stops (the error is not turned into blank outcomes)
    assert main(["run", str(ROOT / "protocols/ketamine_sleep.yaml"), "--data", str(sim_dir),
                 "--out", str(tmp_path / "res"), "--quiet"]) == 2  # fmt: skip
    # analysing the typed outcomes instead: the night keeps its typed values
    t = load_study(sim_dir, outcomes="typed")
    assert (t.issues["rule"] == "hypnogram_missing").sum() == 0 and len(t.nights) == 24


# -- #12.4 / #13.12 which table ---------------------------------------------------------------
def test_file_not_named_after_its_table_is_matched_by_columns(study_dir, tmp_path, capsys):
    shutil.move(study_dir / "diary.csv", study_dir / "sleepdiary_export.csv")
    s = load_study(study_dir)
    assert s.diary is not None and len(s.diary) > 0
    assert s.files["diary"].name == "sleepdiary_export.csv"
    assert s.issues["message"].str.contains("is read as table diary").any()
    # CLI: one file by content
    p = tmp_path / "export.csv"
    shutil.copy(STUDY / "periods.csv", p)
    assert main(["validate", str(p)]) == 0
    assert " periods " in capsys.readouterr().out


def test_unknown_and_ambiguous_files_say_what_was_considered():
    from studykit.dictionary import DataDictionary, Variable, load_dictionary

    dd = load_dictionary()
    with pytest.raises(InputError) as err:
        table_by_columns(["participant_id", "colour"], dd, source="odd.csv")
    msg = str(err.value)
    for t in dd.tables:
        assert f"{t} (" in msg  # every table considered, with what it lacks
    assert "periods (lacks period" in msg
    twins = DataDictionary(
        [
            Variable("id", "Id", "a", "identifier", "string", required=True, key=True),
            Variable("id", "Id", "b", "identifier", "string", required=True, key=True),
        ]
    )
    with pytest.raises(InputError, match="could hold any of the tables a, b"):
        table_by_columns(["id"], twins, source="x.csv")


def test_mistyped_folder_says_no_such_folder(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "studdy")]) == 2
    out = capsys.readouterr().out
    assert "no such folder" in out and "cannot tell which table" not in out


# -- #13.11 missing / special files -------------------------------------------------------------
def test_missing_diary_is_an_error_unless_the_study_has_none(study_dir):
    (study_dir / "diary.csv").unlink()
    s = load_study(study_dir)
    assert s.issues[["rule", "severity"]].values.tolist() == [["missing_table", "error"]]
    assert main(["validate", str(study_dir)]) == 2
    assert main(["validate", str(study_dir), "--no-diary"]) == 0


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (POSIX)")
def test_fifo_table_is_refused_not_skipped(study_dir):
    (study_dir / "diary.csv").unlink()
    os.mkfifo(study_dir / "diary.csv")
    s = load_study(study_dir)  # returns: nothing is opened
    rules = s.issues[["rule", "severity"]].values.tolist()
    assert ["file", "error"] in rules and ["missing_table", "error"] in rules
    assert s.issues["message"].str.contains("FIFO").any()
    with pytest.raises(InputError, match="FIFO"):
        read_table(study_dir / "diary.csv")


def test_symlink_outside_the_study_is_refused(study_dir, tmp_path):
    outside = tmp_path / "elsewhere.csv"
    shutil.move(study_dir / "diary.csv", outside)
    (study_dir / "diary.csv").symlink_to(outside)
    s = load_study(study_dir)
    assert s.issues["message"].str.contains("outside the study folder").any()
    assert not s.ok
    inside = study_dir / "sub"
    inside.mkdir()
    (study_dir / "diary.csv").unlink()
    shutil.move(outside, inside / "diary_data.csv")
    (study_dir / "diary.csv").symlink_to(inside / "diary_data.csv")
    assert load_study(study_dir).ok  # a link within the folder is fine


def _xlsx(path: Path, rows: list[list[object]]) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    for r in rows:
        ws.append(r)
    wb.save(path)
    return path


def test_xlsx_formula_without_cached_value_is_an_issue(tmp_path):
    # openpyxl writes formulas without a cached value (as a script would)
    p = _xlsx(
        tmp_path / "diary.xlsx",
        [["participant_id", "period", "day", "kss"], ["P01", 1, 0, 3], ["P01", 1, 1, "=2+2"]],
    )
    r = validate_table(p, "diary")
    f = r.issues[r.issues["rule"] == "formula"]
    assert f[["row", "column", "severity"]].values.tolist() == [[3, "kss", "error"]]
    assert r.summary["rows_rejected"] == 1


def test_xlsx_zip_bomb_is_refused_before_loading(tmp_path):
    p = _xlsx(
        tmp_path / "diary.xlsx", [["participant_id", "period", "day", "kss"], ["P01", 1, 0, 3]]
    )
    # add a highly compressible member of 300 MB (uncompressed): stored size ~0.3 MB
    with zipfile.ZipFile(p, "a", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("xl/worksheets/padding.xml", "w", force_zip64=True) as f:
            chunk = b" " * (1 << 20)
            for _ in range(300):
                f.write(chunk)
    with pytest.raises(InputError, match="uncompressed"):
        read_table(p)


# -- #13.6 many columns -----------------------------------------------------------------------
def test_wide_file_is_read_into_one_block_and_validated(tmp_path):
    n = 20_000
    p = tmp_path / "diary.csv"
    p.write_text(
        "participant_id,period,day,"
        + ",".join(f"c{i}" for i in range(n))
        + "\nP01,1,0,"
        + ",".join("1" for _ in range(n))
        + "\n"
    )
    t = read_table(p)
    assert t.shape == (1, n + 3)
    assert t._mgr.nblocks == 1  # one 2-D block: no per-column cost (was one block per column)
    r = validate_table(t, "diary")
    assert (r.issues["rule"] == "unknown_column").sum() == n


# -- #13.9 / #13.12 messages ------------------------------------------------------------------
def test_bad_utf16_and_unclosed_quote_exit_2_with_the_file(tmp_path, capsys):
    bad16 = tmp_path / "diary.csv"
    bad16.write_bytes(b"\xff\xfe" + "participant_id,period\n".encode("utf-16-le") + b"\x00\xdc")
    assert main(["validate", str(bad16)]) == 2
    out = capsys.readouterr().out
    assert "not valid utf-16" in out and "internal error" not in out
    quote = tmp_path / "nights.csv"
    quote.write_text('participant_id,period,night\nP01,1,"baseline\nP01,1,post1\n')
    assert main(["validate", str(quote)]) == 2
    assert "never closed (the quote opens on line 2)" in capsys.readouterr().out


def test_offset_datetime_is_not_called_ambiguous():
    frame = pd.DataFrame(
        {
            "participant_id": ["P01"],
            "period": ["1"],
            "night": ["baseline"],
            "night_index": ["0"],
            "treatment": ["placebo"],
            "lights_off": ["2024-03-05T22:30+05:00"],
        }
    )
    msg = validate_table(frame, "nights").issues["message"].iloc[0]
    assert "time-zone offset" in msg and "ambiguous" not in msg


def test_huge_bad_value_is_not_echoed_in_full(tmp_path):
    label = "x" * 2_000_000  # 2 MB in one cell
    p = tmp_path / "diary.csv"
    p.write_text(f"participant_id,period,day,kss\nP01,1,0,{label}\n")
    r = validate_table(p, "diary")
    value = r.issues["value"].iloc[0]
    assert len(value) < 300 and "2,000,000 characters" in value


def test_huge_column_name_is_not_echoed_in_full():
    name = "y" * 3_000_000
    with pytest.raises(InputError) as err:
        validate_table(pd.DataFrame({name: ["1"]}), "diary")
    assert len(str(err.value)) < 1000 and "3,000,000 characters" in str(err.value)
