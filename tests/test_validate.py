"""validate_table, load_study and ``studykit validate``.

Fixture: tests/data/foundation/study/ (hand-written, see its README): 3 participants x 2
periods x 2 nights, no issues. Tests copy it and break one thing at a time; every expected
row number / count below is a hand count on those small files (header = row 1).
"""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studykit.cli import main
from studykit.dictionary import load_dictionary
from studykit.errors import DictionaryError, InputError, ValidationError
from studykit.validate import (
    ISSUE_COLUMNS,
    Study,
    load_study,
    validate_table,
)

DATA = Path(__file__).parent / "data"
STUDY = DATA / "foundation" / "study"
CORPUS = DATA / "bad_inputs"


@pytest.fixture(scope="module")
def dd():
    return load_dictionary()


@pytest.fixture
def study_dir(tmp_path):
    d = tmp_path / "study"
    shutil.copytree(STUDY, d)
    return d


def _edit(path, old, new, count=1):
    text = path.read_text()
    assert text.count(old) >= count, old
    path.write_text(text.replace(old, new, count))


def _rules(result_or_issues):
    issues = getattr(result_or_issues, "issues", result_or_issues)
    return issues[["row", "column", "rule", "severity"]].values.tolist()


# -- clean data --------------------------------------------------------------------------
def test_clean_study_has_no_issues_and_typed_tables(dd):
    s = load_study(STUDY, dictionary=dd)
    assert isinstance(s, Study)
    assert s.ok and len(s.issues) == 0
    assert list(s.issues.columns) == list(ISSUE_COLUMNS)
    assert (len(s.roster), len(s.periods), len(s.nights), len(s.diary)) == (3, 6, 12, 6)
    assert s.epochs is None  # no hypnograms/ folder
    n = s.nights
    assert n["period"].dtype == "Int64"
    assert n["tst_min"].dtype == "float64"
    assert isinstance(n["treatment"].dtype, pd.CategoricalDtype)
    assert list(n["treatment"].cat.categories) == ["placebo", "ketamine"]  # reference first
    assert list(n["night"].cat.categories) == ["baseline", "post1", "post2", "day7"]
    assert pd.api.types.is_datetime64_any_dtype(n["lights_off"])
    assert s.periods["sedative_use"].dtype == "boolean"
    assert s.periods["alcohol_use"].isna().sum() == 1  # P02 period 1 left empty
    assert n.index.name == "row" and n.index.tolist() == list(range(2, 14))
    assert s.roster["bmi"].isna().tolist() == [False, False, True]  # -99 = missing code
    assert s.summary["rows_read"].tolist() == [3, 6, 12, 6]
    assert set(s.files) == {"roster", "periods", "nights", "diary"}


def test_columns_follow_dictionary_order_and_unknown_columns_warn(tmp_path, dd):
    p = tmp_path / "diary.csv"
    p.write_text("mood,kss,participant_id,period,day\nok,3,P01,1,0\n")
    r = validate_table(p, "diary", dictionary=dd)
    assert list(r.data.columns) == ["participant_id", "period", "day", "kss"]
    assert _rules(r) == [[pd.NA, "mood", "unknown_column", "warning"]]
    assert r.ok and r.summary["rows_accepted"] == 1


def test_column_name_matched_ignoring_case_is_a_warning(tmp_path, dd):
    p = tmp_path / "diary.csv"
    p.write_text("Participant_ID,Period,day,KSS\nP01,1,0,3\n")
    r = validate_table(p, "diary", dictionary=dd)
    assert r.data["kss"].tolist() == [3]
    assert [x[2] for x in _rules(r)] == ["column_name"] * 3
    p.write_text("Participant_ID,Period,day,KSS\nP01,1,0,13\n")
    r = validate_table(p, "diary", dictionary=dd)
    bad = r.issues[r.issues["rule"] == "range"]
    assert bad[["row", "column", "value"]].values.tolist() == [[2, "kss", "13"]]


# -- cell rules --------------------------------------------------------------------------
NIGHTS_HEAD = "participant_id,period,night,night_index,treatment,tst_min,n_awakenings\n"


def test_one_bad_cell_does_not_hide_others_in_the_same_column(tmp_path, dd):
    p = tmp_path / "nights.csv"
    p.write_text(
        NIGHTS_HEAD
        + "P01,1,baseline,0,ketamine,abc,3\n"  # row 2: tst not a number
        + "P01,1,post1,1,ketamine,1500,2.5\n"  # row 3: tst above 1440; awakenings not whole
        + "P01,1,post2,2,ketamine,-1,\n"  # row 4: tst below 0
        + "P01,1,day7,7,Ketamine,300,4\n"  # row 5: code case (warning only)
        + "P01,1,post9,9,ketamin,,4\n"  # row 6: two bad codes
        + ",1,baseline,,placebo,300,1\n"  # row 7: two required values missing
    )
    r = validate_table(p, "nights", dictionary=dd)
    assert _rules(r) == [
        [2, "tst_min", "type", "error"],
        [3, "tst_min", "range", "error"],
        [3, "n_awakenings", "type", "error"],
        [4, "tst_min", "range", "error"],
        [5, "treatment", "code_case", "warning"],
        [6, "night", "code", "error"],
        [6, "treatment", "code", "error"],
        [7, "participant_id", "required", "error"],
        [7, "night_index", "required", "error"],
    ]
    assert r.rejected.index.tolist() == [2, 3, 4, 6, 7]
    assert r.data.index.tolist() == [5]
    assert r.data["treatment"].tolist() == ["ketamine"]  # case fixed
    assert r.rejected.loc[3, "reasons"] == "range: tst_min; type: n_awakenings"
    assert r.summary == {
        "file": str(p),
        "table": "nights",
        "rows_read": 6,
        "rows_accepted": 1,
        "rows_rejected": 5,
        "errors": 8,
        "warnings": 1,
    }
    issue = r.issues.iloc[1]
    assert (issue["participant_id"], issue["night"], issue["value"]) == ("P01", "post1", "1500")
    assert "above the maximum 1440 min" in issue["message"]


def test_missing_codes_and_missing_tokens(tmp_path, dd):
    p = tmp_path / "roster.csv"
    p.write_text(
        "participant_id,sequence,age,sex,madrs_baseline,status,bmi\n"
        "P01,KP,-99,F,30,completed,NA\n"  # required age coded missing -> warning
        "P02,PK,,M,30,completed,-99\n"  # required age empty -> error
    )
    r = validate_table(p, "roster", dictionary=dd)
    assert _rules(r) == [[2, "age", "missing_code", "warning"], [3, "age", "required", "error"]]
    assert r.data["age"].isna().all() and r.data["bmi"].isna().all()


def test_decimal_comma_file(dd):
    r = validate_table(CORPUS / "decimal_comma_nights.csv", "nights", dictionary=dd)
    assert _rules(r) == [
        [2, "tst_min", "decimal_comma", "error"],
        [3, "tib_min", "decimal_comma", "error"],
    ]
    assert "--decimal ," in r.issues["message"].iloc[0]
    ok = validate_table(CORPUS / "decimal_comma_nights.csv", "nights", dictionary=dd, decimal=",")
    assert ok.ok
    assert ok.data["tst_min"].tolist() == [371.5, 370.5]
    assert ok.data["tib_min"].tolist() == [480.0, 480.0]


def test_mixed_date_formats(dd):
    r = validate_table(CORPUS / "mixed_dates_periods.csv", "periods", dictionary=dd)
    assert _rules(r) == [
        [3, "infusion_datetime", "date_format", "error"],
        [4, "infusion_datetime", "date_format", "error"],
        [5, "infusion_datetime", "type", "error"],
    ]
    msgs = r.issues["message"].tolist()
    assert "mixes date formats" in msgs[0] and "YYYY-MM-DDTHH:MM" in msgs[0]
    assert "a date without a time" in msgs[1]
    assert "not a real calendar date" in msgs[2]
    assert r.data["infusion_datetime"].tolist() == [pd.Timestamp("2024-03-05 10:00")]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no_header_nights.csv", r"looks like data.*no header row.*participant_id, period"),
        ("wrong_delimiter_nights.csv", r"read as a single column.*delimiter"),
        ("duplicate_columns_nights.csv", r"duplicate column names"),
        ("header_only_nights.csv", r"no data rows"),
        ("empty.csv", r"is empty"),
        ("binary_junk.csv", r"binary"),
        ("a_directory.csv", r"is a directory"),
        ("missing_nights.csv", r"File not found"),
    ],
)
def test_bad_files_raise_input_error(dd, name, message):
    with pytest.raises(InputError, match=message):
        validate_table(CORPUS / name, "nights", dictionary=dd)


def test_encodings_are_accepted_latin1_warns(dd):
    for name in ("utf8_bom_roster.csv", "utf16_roster.txt", "roster.xlsx", "roster.parquet"):
        r = validate_table(CORPUS / name, "roster", dictionary=dd)
        assert r.ok and len(r.issues) == 0, name
        assert r.data["participant_id"].tolist() == ["P01", "P02"]
    r = validate_table(CORPUS / "latin1_roster.csv", "roster", dictionary=dd)
    assert _rules(r) == [[pd.NA, "", "encoding", "warning"]]
    assert r.data["withdrawal_reason"].tolist()[1] == "déménagement (moved away)"


def test_wrong_table_and_unknown_table(tmp_path, dd):
    p = tmp_path / "x.csv"
    p.write_text("foo,bar\n1,2\n")
    with pytest.raises(InputError, match="none of its columns.*belongs to table 'roster'"):
        validate_table(p, "roster", dictionary=dd)
    with pytest.raises(DictionaryError, match="Unknown table 'night'"):
        validate_table(p, "night", dictionary=dd)


def test_missing_required_column_rejects_every_row(tmp_path, dd):
    p = tmp_path / "diary.csv"
    p.write_text("participant_id,day,kss\nP01,0,3\nP01,1,4\n")
    r = validate_table(p, "diary", dictionary=dd)
    assert _rules(r) == [[pd.NA, "period", "missing_column", "error"]]
    assert r.summary["rows_rejected"] == 2 and len(r.data) == 0
    assert r.rejected["reasons"].tolist() == ["missing_column: period"] * 2


def test_unique_keys(tmp_path, dd):
    p = tmp_path / "diary.csv"
    p.write_text("participant_id,period,day,kss\nP01,1,0,3\nP01,1,1,4\nP01,1,0,5\nP01,1,0,6\n")
    r = validate_table(p, "diary", dictionary=dd)
    assert _rules(r) == [
        [row, "participant_id, period, day", "unique_key", "error"] for row in (2, 4, 5)
    ]
    assert r.issues["value"].tolist() == ["P01/1/0"] * 3
    assert "3 rows share this participant_id x period x day" in r.issues["message"].iloc[0]


def test_epoch_table_from_typed_frame(dd):
    ep = pd.DataFrame(
        {
            "participant_id": "P01",
            "period": 1,
            "night": "baseline",
            "epoch": [0, 1, 2, 2, 4],
            "onset_s": [0.0, 30.0, 60.0, 60.0, np.nan],
            "stage": pd.Categorical(["W", "N1", "S4", "N2", "R"]),
        }
    )
    r = validate_table(ep, "epochs", dictionary=dd, source="P01_p1_baseline.csv")
    # rows are 1-based positions for frames; S4 is not a code (R&K stages are mapped by the
    # hypnogram reader, not here); epoch 2 twice; onset of the 5th epoch missing
    assert _rules(r) == [
        [3, "stage", "code", "error"],
        [3, "participant_id, period, night, epoch", "unique_key", "error"],
        [4, "participant_id, period, night, epoch", "unique_key", "error"],
        [5, "onset_s", "required", "error"],
    ]
    assert r.issues["file"].unique().tolist() == ["P01_p1_baseline.csv"]
    assert r.data.index.tolist() == [1, 2]
    assert r.data["stage"].cat.categories.tolist() == dd.levels("epochs", "stage")
    assert ep["epoch"].tolist() == [0, 1, 2, 2, 4]  # input not modified


def test_raise_for_errors(tmp_path, dd):
    p = tmp_path / "diary.csv"
    p.write_text("participant_id,period,day,kss\nP01,1,0,10\n")
    r = validate_table(p, "diary", dictionary=dd)
    with pytest.raises(ValidationError, match=r"1 error\(s\) in 1 of 1 rows; first: row 2") as exc:
        r.raise_for_errors()
    assert len(exc.value.issues) == 1
    p.write_text("participant_id,period,day,kss\nP01,1,0,9\n")
    assert validate_table(p, "diary", dictionary=dd).raise_for_errors().ok


def test_typed_tables_round_trip(dd):
    s = load_study(STUDY, dictionary=dd)
    for table in ("roster", "periods", "nights", "diary"):
        typed = getattr(s, table)
        r = validate_table(typed, table, dictionary=dd)
        assert len(r.issues) == 0, table
        pd.testing.assert_frame_equal(r.data.reset_index(drop=True), typed.reset_index(drop=True))


def test_typed_columns_with_missing_values(dd):
    frame = pd.DataFrame(
        {
            "participant_id": ["P01", "P01", "P01"],
            "period": pd.array([1, 1, None], dtype="Int64"),
            "day": [0.0, 1.0, 2.5],
            "kss": pd.array([3, None, -99], dtype="Int64"),
        }
    )
    r = validate_table(frame, "diary", dictionary=dd)
    assert _rules(r) == [[3, "period", "required", "error"], [3, "day", "type", "error"]]
    assert r.data["kss"].isna().tolist() == [False, True]


# -- cross-field rules (nights) -----------------------------------------------------------
@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # row 2 of nights.csv: P01 period 1 baseline, TIB 480, SPT 401, TST 371, SE 77.3,
        # N1 20, N2 210.5, N3 60, REM 80.5
        ("2024-03-05T07:00", "2024-03-04T22:00", [("lights_off, lights_on", "lights_order")]),
        (
            "480.0,401.0,371.0,77.3",
            "360.0,401.0,371.0,77.3",  # TIB 360 < TST 371 and < SPT 401; SE now 103 %
            [
                ("tst_min, tib_min", "tst_le_tib"),
                ("spt_min, tib_min", "spt_le_tib"),
                ("se_pct, tst_min, tib_min", "se_consistency"),
            ],
        ),
        ("480.0,401.0,371.0", "480.0,361.0,371.0", [("tst_min, spt_min", "tst_le_spt")]),
        (
            "20.0,210.5,60.0,80.5",
            "20.0,210.5,61.0,80.5",
            [("n1_min, n2_min, n3_min, rem_min, tst_min", "stage_sum")],
        ),
        ("371.0,77.3", "371.0,78.3", [("se_pct, tst_min, tib_min", "se_consistency")]),
        ("P01,1,baseline,0", "P01,1,baseline,1", [("night, night_index", "night_index")]),
    ],
)
def test_cross_field_rules(study_dir, dd, old, new, expected):
    _edit(study_dir / "nights.csv", old, new)
    r = validate_table(study_dir / "nights.csv", "nights", dictionary=dd)
    errors = r.issues[r.issues["severity"] == "error"]
    assert errors[["row", "column", "rule"]].values.tolist() == [
        [2, c, rule] for c, rule in expected
    ]
    assert r.rejected.index.tolist() == [2]


def test_tolerances_accept_rounding(study_dir, dd):
    # SE 77.3 vs 100 x 371 / 480 = 77.29; within 0.5 percentage points
    _edit(study_dir / "nights.csv", "371.0,77.3", "371.0,77.7")
    r = validate_table(study_dir / "nights.csv", "nights", dictionary=dd)
    assert r.ok


def test_percent_of_tst_rule(tmp_path, dd):
    p = tmp_path / "nights.csv"
    # 100 x 60 / 400 = 15.0
    p.write_text(
        "participant_id,period,night,night_index,treatment,tst_min,n3_min,n3_pct\n"
        "P01,1,baseline,0,placebo,400,60,15.0\nP01,1,post1,1,placebo,400,60,16.0\n"
    )
    r = validate_table(p, "nights", dictionary=dd)
    assert _rules(r) == [[3, "n3_pct, n3_min, tst_min", "pct_consistency", "error"]]


def test_periods_dose_rule(study_dir, dd):
    _edit(
        study_dir / "periods.csv",
        "P01,2,placebo,2024-03-26T10:00,0,",
        "P01,2,placebo,2024-03-26T10:00,0.5,",
    )
    r = validate_table(study_dir / "periods.csv", "periods", dictionary=dd)
    assert _rules(r) == [[3, "treatment, dose_mg_kg", "dose_treatment", "error"]]


# -- cross-table rules (load_study) -------------------------------------------------------
def test_participant_not_in_roster(study_dir, dd):
    _edit(study_dir / "diary.csv", "P03,1,1,7", "P04,1,1,7")
    s = load_study(study_dir, dictionary=dd)
    assert _rules(s) == [[7, "participant_id", "reference", "error"]]
    assert "not in the roster" in s.issues["message"].iloc[0]
    assert len(s.diary) == 5


def test_rejected_roster_row_rejects_the_participants_rows(study_dir, dd):
    _edit(study_dir / "roster.csv", "P02,PK,41", "P02,PK,17")
    s = load_study(study_dir, dictionary=dd)
    rules = s.issues.groupby("rule").size().to_dict()
    # roster row 3 (age 17 < 18); P02 has 2 periods, 4 nights, 2 diary rows
    assert rules == {"range": 1, "reference": 8}
    assert set(s.nights["participant_id"]) == {"P01", "P03"}
    # rejected rows keep their raw values and say why
    assert s.rejected["roster"][["age", "reasons"]].values.tolist() == [["17", "range: age"]]
    assert s.rejected["nights"].index.tolist() == [6, 7, 8, 9]
    assert set(s.rejected["nights"]["reasons"]) == {"reference: participant_id"}
    assert s.rejected["nights"]["tst_min"].tolist()[0] == "371.0"  # raw string on line 6
    sm = s.summary.set_index("table")
    assert (sm["rows_read"] == sm["rows_accepted"] + sm["rows_rejected"]).all()
    assert sm.loc["nights", "rows_rejected"] == 4


def test_treatment_constant_and_equal_to_periods(study_dir, dd):
    nights = study_dir / "nights.csv"
    _edit(nights, "P02,1,post1,1,placebo", "P02,1,post1,1,ketamine")  # row 7 differs from row 6
    _edit(nights, "P03,2,baseline,0,placebo", "P03,2,baseline,0,ketamine")
    _edit(nights, "P03,2,post1,1,placebo", "P03,2,post1,1,ketamine")  # rows 12-13 vs periods
    s = load_study(study_dir, dictionary=dd)
    assert _rules(s) == [
        # periods rows 4 (P02 p1) and 7 (P03 p2) are left without accepted nights
        [4, "participant_id, period", "no_nights", "warning"],
        [7, "participant_id, period", "no_nights", "warning"],
        [6, "treatment", "treatment_constant", "error"],
        [7, "treatment", "treatment_constant", "error"],
        [12, "treatment", "treatment_periods", "error"],
        [13, "treatment", "treatment_periods", "error"],
    ]
    assert "(placebo)" in s.issues["message"].iloc[4]
    assert len(s.nights) == 8


def test_night_without_periods_row(study_dir, dd):
    _edit(study_dir / "periods.csv", "P03,2,placebo,2024-05-28T10:15,0,33,31,0,0\n", "")
    s = load_study(study_dir, dictionary=dd)
    assert _rules(s) == [
        [12, "participant_id, period", "treatment_periods", "error"],
        [13, "participant_id, period", "treatment_periods", "error"],
    ]


def test_sequence_must_spell_treatments(study_dir, dd):
    _edit(study_dir / "roster.csv", "P02,PK", "P02,KP")
    s = load_study(study_dir, dictionary=dd)
    # periods rows 4-5 (P02): placebo then ketamine, but sequence KP; then P02's nights no
    # longer match an accepted periods row
    rules = s.issues[["file", "row", "rule"]].values.tolist()
    assert [r[1:] for r in rules if r[0].endswith("periods.csv")] == [
        [4, "sequence_treatment"],
        [5, "sequence_treatment"],
    ]
    assert "expected ketamine" in s.issues["message"].iloc[0]
    assert [r[1:] for r in rules if r[0].endswith("nights.csv")] == [
        [pd.NA, "no_nights"],  # P02 is left without accepted nights (file-level issues first)
        *([row, "treatment_periods"] for row in (6, 7, 8, 9)),
    ]


def test_missing_baseline_night_is_a_warning(study_dir, dd):
    text = (study_dir / "nights.csv").read_text().splitlines(keepends=True)
    (study_dir / "nights.csv").write_text(
        "".join(t for t in text if not t.startswith("P01,2,baseline"))
    )
    s = load_study(study_dir, dictionary=dd)
    assert s.ok
    assert s.issues[["participant_id", "column", "rule", "severity", "value"]].values.tolist() == [
        ["P01", "night", "baseline_night", "warning", "period 2"]
    ]


def test_roster_participant_without_nights_warns(study_dir, dd):
    _edit(
        study_dir / "roster.csv",
        "P03,KP,29,F,-99,35,completed,\n",
        "P03,KP,29,F,-99,35,completed,\nP04,PK,50,M,22.0,30,withdrawn,\n",
    )
    s = load_study(study_dir, dictionary=dd)
    assert sorted(s.issues["rule"]) == ["no_nights", "withdrawal_reason"]


def test_period_without_nights_warns_unless_withdrawn(study_dir, dd):
    text = (study_dir / "nights.csv").read_text().splitlines(keepends=True)
    (study_dir / "nights.csv").write_text("".join(t for t in text if not t.startswith("P03,2,")))
    s = load_study(study_dir, dictionary=dd)
    # periods.csv row 7 = P03 period 2
    assert s.issues[["row", "rule", "severity", "value"]].values.tolist() == [
        [7, "no_nights", "warning", "P03/2"]
    ]
    _edit(
        study_dir / "roster.csv",
        "P03,KP,29,F,-99,35,completed,",
        "P03,KP,29,F,-99,35,withdrawn,moved",
    )
    assert load_study(study_dir, dictionary=dd).ok
    assert len(load_study(study_dir, dictionary=dd).issues) == 0


def test_study_directory_errors(tmp_path, study_dir, dd):
    with pytest.raises(InputError, match="not found"):
        load_study(tmp_path / "nope", dictionary=dd)
    with pytest.raises(InputError, match="is a file, not a study directory"):
        load_study(study_dir / "roster.csv", dictionary=dd)
    (study_dir / "periods.csv").unlink()
    with pytest.raises(InputError, match="has no periods table"):
        load_study(study_dir, dictionary=dd)


def test_study_without_diary_and_with_extra_file(study_dir, dd):
    (study_dir / "diary.csv").unlink()
    (study_dir / "notes.csv").write_text("a\n1\n")
    s = load_study(study_dir, dictionary=dd, tables=("roster", "periods", "nights"))
    assert s.diary is None
    assert _rules(s) == [[pd.NA, "", "file", "warning"]]
    assert "lacks participant_id" in s.issues["message"].iloc[0]  # why no table fits


def test_hypnograms_are_read_and_validated(study_dir, dd):
    h = study_dir / "hypnograms"
    h.mkdir()
    (h / "P01_p1_baseline.csv").write_text("epoch,onset_s,stage\n0,0,W\n1,30,N1\n2,60,N2\n")
    (h / "P02_p2_post1.csv").write_text("epoch,onset_s,stage\n0,0,W\n1,30,X\n")
    (h / "P09_p1_post1.csv").write_text("epoch,onset_s,stage\n0,0,W\n")
    (h / "P03_p1_day9.csv").write_text("epoch,onset_s,stage\n0,0,W\n1,30,N1\n")  # no such night
    (h / "broken_p1_post1.csv").write_text("epoch,onset_s\n0,0\n")
    (h / "readme.txt").write_text("not a hypnogram\n")
    # outcomes="typed": this test is about reading and validating the epochs (with the default
    # "hypnograms" every night of nights.csv without a readable hypnogram is also an error)
    s = load_study(study_dir, dictionary=dd, outcomes="typed")
    assert s.epochs is not None
    # P09 (1 epoch); P02's file is refused by the reader (stage 'X' unknown); P01's reads but
    # its lights (nights.csv: a clock time, no recording_start) cannot be placed on it, so it
    # is not derived (as studykit derive --lights would refuse it); P03's 2 epochs are rejected
    assert len(s.epochs) == 1
    assert list(s.epochs.columns) == [
        "participant_id",
        "period",
        "night",
        "epoch",
        "onset_s",
        "stage",
    ]
    assert s.epochs["stage"].cat.categories.tolist() == dd.levels("epochs", "stage")
    got = sorted((Path(f).name, r) for f, r in s.issues[["file", "rule"]].values.tolist())
    assert got == [
        ("P01_p1_baseline.csv", "lights"),  # lights_off a clock time, no recording_start
        ("P02_p2_post1.csv", "hypnogram"),  # reader error: unknown stage
        ("P03_p1_day9.csv", "code"),  # night code not in the dictionary: both epochs
        ("P03_p1_day9.csv", "code"),
        ("P03_p1_day9.csv", "hypnogram"),  # and no nights row
        ("P03_p1_day9.csv", "no_lights"),  # no lights in the file or a table
        ("P09_p1_post1.csv", "hypnogram"),  # no nights row
        ("P09_p1_post1.csv", "no_lights"),
        ("broken_p1_post1.csv", "hypnogram"),  # reader error
        ("readme.txt", "hypnogram"),  # name pattern
    ]
    assert len(s.files["epochs"]) == 2  # P03, P09
    ep = s.summary.set_index("table").loc["epochs"]
    assert (ep["rows_read"], ep["rows_accepted"], ep["rows_rejected"]) == (3, 1, 2)
    rej = s.rejected["epochs"]
    assert (
        rej[["file", "night", "reasons"]].values.tolist()
        == [[str(h / "P03_p1_day9.csv"), "day9", "code: night"]] * 2
    )
    assert rej.index.tolist() == [1, 2]  # epoch records of that file


# -- nothing is lost: property test ----------------------------------------------------------
_CELLS = {
    "participant_id": st.sampled_from(["P01", "P02", "P03", "", " P01 ", "NA", "x"]),
    "period": st.sampled_from(["1", "2", "3", "", "1.0", "one", "-99", "1,0"]),
    "night": st.sampled_from(["baseline", "post1", "Post2", "day7", "night9", ""]),
    "night_index": st.sampled_from(["0", "1", "2", "7", "", "1.5", "-1"]),
    "treatment": st.sampled_from(["placebo", "ketamine", "KETAMINE", "saline", ""]),
    "lights_off": st.sampled_from(["2024-03-04T23:00", "04/03/2024 23:00", "2024-02-30T23:00", ""]),
    "lights_on": st.sampled_from(["2024-03-05T07:00", "2024-03-04T07:00", "", "7am"]),
    "tib_min": st.sampled_from(["480", "480.0", "", "abc", "2000", "480,5"]),
    "tst_min": st.sampled_from(["400", "500", "", "nan", "inf", "-5"]),
    "se_pct": st.sampled_from(["83.3", "90", "", "101"]),
    "n_awakenings": st.sampled_from(["3", "0", "2.5", "", "many"]),
    "extra": st.sampled_from(["", "z"]),
}


@st.composite
def messy_nights(draw):
    columns = draw(
        st.lists(st.sampled_from(sorted(_CELLS)), min_size=1, max_size=len(_CELLS), unique=True)
    )
    if not set(columns) & (set(_CELLS) - {"extra"}):
        columns.append("participant_id")
    n = draw(st.integers(min_value=1, max_value=25))
    rows = [[draw(_CELLS[c]) for c in columns] for _ in range(n)]
    return pd.DataFrame(rows, columns=columns, dtype=object)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messy_nights())
def test_rows_read_equal_accepted_plus_rejected(raw):
    dd = load_dictionary()
    r = validate_table(raw, "nights", dictionary=dd)
    s = r.summary
    assert s["rows_read"] == len(raw) == s["rows_accepted"] + s["rows_rejected"]
    assert len(r.data) == s["rows_accepted"] and len(r.rejected) == s["rows_rejected"]
    # every row exactly once, and rejected rows are exactly those with an error
    assert sorted([*r.data.index, *r.rejected.index]) == list(range(1, len(raw) + 1))
    err = r.issues[r.issues["severity"] == "error"]
    row_errors = set(err["row"].dropna().astype(int))
    if err["row"].isna().any():  # a missing required column rejects every row
        assert len(r.data) == 0
    else:
        assert set(r.rejected.index) == row_errors
    assert (r.rejected["reasons"] != "").all()
    # accepted rows are typed and inside the rules
    d = r.data
    if "tst_min" in d:
        assert d["tst_min"].dtype == "float64"
        assert (d["tst_min"].between(0, 1440) | d["tst_min"].isna()).all()
    if "treatment" in d:
        assert d["treatment"].cat.categories.tolist() == ["placebo", "ketamine"]
    if "period" in d:
        assert d["period"].dtype == "Int64"
    assert list(r.issues.columns) == list(ISSUE_COLUMNS)
    assert raw.equals(raw.copy())  # still the same object contents


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messy_nights(), st.lists(st.booleans(), min_size=30, max_size=30))
def test_file_rows_are_line_numbers(raw, blank_after):
    # write the messy table as CSV with blank lines sprinkled in; every row number in the
    # result must be the line of that row in the file
    import tempfile

    lines = [",".join(raw.columns)]
    line_of, empty = [], []
    for i, values in enumerate(raw.itertuples(index=False)):
        lines.append(",".join(f'"{v}"' for v in values))
        (line_of if any(v.strip() for v in values) else empty).append(len(lines))
        if blank_after[i % 30]:
            lines.append("")
            empty.append(len(lines))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "nights.csv"
        path.write_text("\n".join(lines) + "\n")
        if not line_of:  # only empty rows: nothing to validate
            with pytest.raises(InputError, match="no data rows"):
                validate_table(path, "nights")
            return
        r = validate_table(path, "nights")
    assert sorted([*r.data.index, *r.rejected.index]) == line_of
    # empty rows and blank lines hold no value: skipped, but reported
    reported = r.issues.loc[r.issues["rule"] == "empty_rows", "message"].tolist()
    assert len(reported) == (1 if empty else 0)
    if empty:
        assert f"{len(empty)} empty row(s) skipped (row {empty[0]}" in reported[0]
    rows = r.issues["row"].dropna().astype(int)
    assert set(rows) <= set(line_of)


# -- CLI --------------------------------------------------------------------------------------
def test_cli_validate_clean_files_exit_0(capsys):
    files = [str(STUDY / f) for f in ("roster.csv", "periods.csv", "nights.csv", "diary.csv")]
    assert main(["validate", *files]) == 0
    out = capsys.readouterr().out
    assert "rows read 27 = accepted 27 + rejected 0; 0 error(s), 0 warning(s)" in out


def test_cli_validate_errors_exit_2_and_report(study_dir, tmp_path, capsys):
    _edit(study_dir / "roster.csv", "P02,PK,41", "P02,PK,170")
    report = tmp_path / "issues.csv"
    assert main(["validate", str(study_dir), "--report", str(report)]) == 2
    out = capsys.readouterr().out
    assert "issues by rule:" in out and "reference" in out
    issues = pd.read_csv(report)
    assert list(issues.columns) == list(ISSUE_COLUMNS)
    assert len(issues) == 9


def test_cli_validate_warnings_only_exit_0(tmp_path, capsys):
    p = tmp_path / "my_diary_export.csv"
    p.write_text("participant_id,period,day,kss,comment\nP01,1,0,3,fine\n")
    assert main(["validate", str(p)]) == 0  # table 'diary' from the file name
    assert "unknown_column" in capsys.readouterr().out


def test_cli_validate_table_option_and_unknown_name(tmp_path, capsys):
    p = tmp_path / "export.csv"
    p.write_text("participant_id,period,day,kss\nP01,1,0,3\n")
    assert main(["validate", str(p)]) == 0  # diary's key and columns (issue #12.4)
    assert " diary " in capsys.readouterr().out
    q = tmp_path / "export2.csv"
    q.write_text("id,score\nP01,3\n")
    assert main(["validate", str(q)]) == 2
    out = capsys.readouterr().out
    assert "cannot tell which table export2.csv holds" in out and "roster (lacks" in out
    assert main(["validate", str(p), "--table", "diary"]) == 0
    capsys.readouterr()
    assert main(["validate", str(p), "--table", "dairy"]) == 2
    assert "not a table of the data dictionary" in capsys.readouterr().err


def test_cli_validate_continues_past_unreadable_files(capsys):
    files = [
        str(CORPUS / "empty.csv"),
        str(STUDY / "roster.csv"),
        str(CORPUS / "decimal_comma_nights.csv"),
    ]
    assert main(["validate", *files, "--table", "nights"]) == 2
    out = capsys.readouterr().out
    assert "file error:" in out and "empty.csv is empty" in out
    assert main(["validate", str(CORPUS / "decimal_comma_nights.csv"), "--decimal", ","]) == 0


def test_cli_validate_hypnogram_file_by_name(tmp_path, capsys):
    p = tmp_path / "P01_p1_day9.csv"  # 'day9' is not a night code of the dictionary
    p.write_text("epoch,onset_s,stage\n0,0,W\n1,30,N1\n2,60,S4\n")
    report = tmp_path / "issues.csv"
    assert main(["validate", str(p), "--report", str(report)]) == 2
    issues = pd.read_csv(report)
    # one issue per epoch record (row = record number 1-3, as in load_study);
    # 'S4' is an R&K label the reader maps to N3, so only the night code fails
    assert issues[["row", "participant_id", "night", "column", "rule"]].values.tolist() == [
        [r, "P01", "day9", "night", "code"] for r in (1, 2, 3)
    ]
    assert "epochs" in capsys.readouterr().out
    edf = tmp_path / "P01_p1_post1.edf"
    edf.write_bytes(b"0       ")  # 8 bytes: not an EDF header
    assert main(["validate", str(edf), "--report", str(report)]) == 2
    assert pd.read_csv(report)["message"].str.contains("cannot read the hypnogram").all()


def test_code_that_looks_like_a_missing_token_is_a_code():
    from studykit.dictionary import DataDictionary, Variable

    dd = DataDictionary(
        [
            Variable("id", "Id", "t", "identifier", "string", required=True, key=True),
            Variable(
                "region",
                "Region",
                "t",
                "covariate",
                "categorical",
                codes=(("EU", "Europe"), ("NA", "North America")),
            ),
        ]
    )
    r = validate_table(
        pd.DataFrame({"id": ["a", "b", "c"], "region": ["NA", "EU", ""]}), "t", dictionary=dd
    )
    assert r.data["region"].astype(object).tolist()[:2] == ["NA", "EU"]
    assert r.data["region"].isna().tolist() == [False, False, True]
