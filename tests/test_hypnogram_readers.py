"""Hypnogram readers: every format gives the same epoch table; bad files give clear errors.

Fixtures: tests/data/hypnograms/, one hand-made night written in six formats by
tests/data/hypnograms/make_fixtures.py (Sleep-EDF EDF+, NSRR XML, Profusion XML, CSV,
UTF-16 text with R&K labels, BIDS-style onset/duration TSV).
"""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from studykit.errors import HypnogramError
from studykit.hypnogram import (
    STAGES,
    normalize_stages,
    parse_hypnogram_name,
    read_hypnogram,
    read_hypnograms,
    sleep_statistics,
)

DATA = Path(__file__).parent / "data" / "hypnograms"
# The fixture night epoch by epoch (hand-made; see make_fixtures.py).
NIGHT = "W W N1 N2 N2 N2 N3 N3 N3 N3 N2 W R R R MT R UNS UNS".split()
FIXTURES = {
    "P01_p1_baseline.edf": "edf",
    "P01_p1_post1.xml": "nsrr",
    "P02_p1_baseline.xml": "profusion",
    "P02_p2_baseline.csv": "text",
    "P03_p1_baseline.txt": "text",
    "P03_p1_post1.tsv": "text",
}


@pytest.mark.parametrize(("name", "fmt"), FIXTURES.items())
def test_every_format_gives_the_same_night(name, fmt):
    table = read_hypnogram(DATA / name)
    assert list(table.columns) == ["epoch", "onset_s", "stage"]
    assert table["stage"].tolist() == NIGHT
    assert list(table["stage"].cat.categories) == list(STAGES)
    assert table["epoch"].tolist() == list(range(19))
    np.testing.assert_array_equal(table["onset_s"], 30.0 * np.arange(19))
    assert table.attrs["format"] == fmt


def test_non_stage_annotations_are_kept_as_events():
    edf = read_hypnogram(DATA / "P01_p1_baseline.edf")
    assert edf.attrs["events"] == [{"onset_s": 5.0, "duration_s": None, "text": "Lights off"}]
    nsrr = read_hypnogram(DATA / "P01_p1_post1.xml")
    texts = {e["text"] for e in nsrr.attrs["events"]}
    assert texts == {"Recording Start Time", "Arousal|Arousal ()"}


def test_read_hypnograms_directory():
    epochs, problems = read_hypnograms(DATA)
    assert list(epochs.columns) == [
        "recording_id",
        "participant_id",
        "period",
        "night",
        "epoch",
        "onset_s",
        "stage",
    ]
    nights = epochs[["participant_id", "period", "night"]].drop_duplicates()
    assert len(nights) == 6 and len(epochs) == 6 * 19
    assert set(map(tuple, nights.astype(str).to_numpy())) == {
        ("P01", "1", "baseline"),
        ("P01", "1", "post1"),
        ("P02", "1", "baseline"),
        ("P02", "2", "baseline"),
        ("P03", "1", "baseline"),
        ("P03", "1", "post1"),
    }
    # the generator script is not a hypnogram: reported, not silently ignored; the nights
    # without lights in the file (all but the EDF+, which has "Lights off" at 5 s) are warned
    rules = problems.assign(file=problems["file"].map(lambda f: Path(f).name))
    assert rules[["file", "severity", "rule"]].to_dict("records") == [
        {"file": "make_fixtures.py", "severity": "warning", "rule": "skipped"},
        *[
            {"file": name, "severity": "warning", "rule": "no_lights"}
            for name in sorted(p.name for p in DATA.iterdir() if p.suffix != ".py")
        ],
    ]
    stats = sleep_statistics(epochs)
    assert len(stats) == 6
    # hand count (see test_hypnogram_statistics.test_fixture_night_hand_counted)
    assert (stats["tst_min"] == 6.5).all() and (stats["tib_min"] == 9.5).all()


def test_read_hypnograms_collects_problems_and_keeps_going(tmp_path):
    (tmp_path / "A1_p1_baseline.txt").write_text("W\nN2\nN2\nW\n")
    (tmp_path / "A1_p1_post1.txt").write_text("W\nN9\n")
    (tmp_path / "badname.txt").write_text("W\n")
    (tmp_path / "A1_p1_baseline.csv").write_text("stage\nW\n")
    (tmp_path / "A2_p1_baseline.txt").write_text("")
    epochs, problems = read_hypnograms(tmp_path)
    # a file with a name no rule reads is still read, with its stem as recording_id
    assert epochs["recording_id"].astype(str).unique().tolist() == ["A1_p1_baseline", "badname"]
    assert epochs["participant_id"].unique().tolist() == ["A1", np.nan]
    assert len(epochs) == 2  # the .csv of A1 baseline comes first in sorted order
    problems = problems[problems["rule"] != "no_lights"]
    rules = dict(zip(problems["file"].map(lambda f: Path(f).name), problems["rule"], strict=True))
    assert rules == {
        "A1_p1_baseline.txt": "duplicate_recording",
        "A1_p1_post1.txt": "read_error",
        "A2_p1_baseline.txt": "read_error",
    }
    msg = problems.set_index(problems["file"].map(lambda f: Path(f).name))["message"]
    assert "N9" in msg["A1_p1_post1.txt"] and "line 2" in msg["A1_p1_post1.txt"]
    assert "empty" in msg["A2_p1_baseline.txt"]


def test_parse_name():
    assert parse_hypnogram_name("x/P_01_p2_day7.xml") == ("P_01", 2, "day7")
    with pytest.raises(HypnogramError, match="participant_id"):
        parse_hypnogram_name("P01-baseline.csv")


# ------------------------------------------------------------------------------ stages ----


def test_normalize_all_vocabularies():
    labels = {
        "W": ["W", "wake", "Sleep stage W", "Wake|0", "WAKE", 0, "0"],
        "N1": ["N1", "S1", "Sleep stage 1", "Stage 1 sleep|1", 1, "Sleep_stage_1"],
        "N2": ["N2", "s2", "Sleep stage 2", "Stage 2 sleep|2", 2],
        "N3": ["N3", "S3", "S4", "Sleep stage 3", "Sleep stage 4", "Stage 4 sleep|4", 3],
        "R": ["R", "REM", "Sleep stage R", "REM sleep|5", 4, 4.0],
        "MT": ["MT", "Movement time", "Movement|6"],
        "ART": ["ART", "artefact", "Artifact", -1],
        "UNS": ["UNS", "?", "Sleep stage ?", "Unscored|9", -2],
    }
    for code, values in labels.items():
        assert list(normalize_stages(values)) == [code] * len(values), code


def test_rk_integer_scheme_and_hint():
    assert list(normalize_stages([0, 1, 2, 3, 4, 5, 6, 9, 10], scheme="rk")) == [
        "W", "N1", "N2", "N3", "N3", "R", "MT", "UNS", "ART",
    ]  # fmt: skip
    with pytest.raises(HypnogramError, match="scheme='rk'"):
        normalize_stages([0, 5])
    with pytest.raises(HypnogramError, match="no stage"):
        normalize_stages(["W", None])
    with pytest.raises(HypnogramError, match="Invalid scheme"):
        normalize_stages(["W"], scheme="xyz")


# ---------------------------------------------------------------------------- bad files ----


def write_edf(path, annotations):
    from edfio import Edf, EdfAnnotation

    Edf(signals=[], annotations=[EdfAnnotation(*a) for a in annotations]).write(path)
    return path


@pytest.mark.parametrize(
    ("annotations", "match"),
    [
        ([(0, 60, "Sleep stage W"), (90, 30, "Sleep stage 2")], "1 gap"),
        ([(0, 60, "Sleep stage W"), (30, 60, "Sleep stage 2")], "1 overlap"),
        ([(0, 45, "Sleep stage W"), (45, 30, "Sleep stage 2")], "whole number of 30-s"),
        ([(0, 60, "Sleep stage W"), (60, 30, "Sleep stage 5")], "Unknown sleep stage"),
        ([(0, None, "Lights off")], "no annotation with a duration"),
    ],
)
def test_bad_edf(tmp_path, annotations, match):
    path = write_edf(tmp_path / "x.edf", annotations)
    with pytest.raises(HypnogramError, match=match) as exc:
        read_hypnogram(path)
    assert str(path) in str(exc.value)


def test_truncated_edf(tmp_path):
    data = (DATA / "P01_p1_baseline.edf").read_bytes()
    path = tmp_path / "t.edf"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(HypnogramError, match="truncated"):
        read_hypnogram(path)


def test_edf_with_20_s_epochs(tmp_path):
    path = write_edf(tmp_path / "x.edf", [(0, 40, "Sleep stage W"), (40, 20, "Sleep stage R")])
    assert read_hypnogram(path, epoch_length=20)["stage"].tolist() == ["W", "W", "R"]
    with pytest.raises(HypnogramError, match="whole number of 30-s"):
        read_hypnogram(path)


def test_annotations_not_starting_at_zero_keep_onsets(tmp_path):
    path = write_edf(tmp_path / "x.edf", [(60, 30, "Sleep stage W"), (90, 60, "Sleep stage 2")])
    table = read_hypnogram(path)
    assert table["epoch"].tolist() == [0, 1, 2]
    assert table["onset_s"].tolist() == [60.0, 90.0, 120.0]


def test_nsrr_declared_epoch_length_must_match(tmp_path):
    text = (
        (DATA / "P01_p1_post1.xml")
        .read_text()
        .replace("<EpochLength>30</EpochLength>", "<EpochLength>20</EpochLength>")
    )
    path = tmp_path / "x.xml"
    path.write_text(text)
    with pytest.raises(HypnogramError, match="declares 20-s epochs.*epoch_length=20"):
        read_hypnogram(path)


def test_truncated_xml(tmp_path):
    for name in ("P01_p1_post1.xml", "P02_p1_baseline.xml"):
        data = (DATA / name).read_bytes()
        path = tmp_path / name
        path.write_bytes(data[: len(data) - 40])
        with pytest.raises(HypnogramError, match="truncated"):
            read_hypnogram(path)


def test_nsrr_gap_between_stage_events(tmp_path):
    text = (DATA / "P01_p1_post1.xml").read_text()
    # remove the 'Movement|6' stage event: leaves a 30-s gap at 450 s
    start = text.index("<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>Movement")
    end = text.index("</ScoredEvent>", start) + len("</ScoredEvent>")
    path = tmp_path / "x.xml"
    path.write_text(text[:start] + text[end:])
    with pytest.raises(HypnogramError, match=r"gap.*450 s to 480 s"):
        read_hypnogram(path)


def test_nsrr_without_staging(tmp_path):
    path = tmp_path / "x.xml"
    path.write_text("<PSGAnnotation><ScoredEvents></ScoredEvents></PSGAnnotation>")
    with pytest.raises(HypnogramError, match="no sleep staging"):
        read_hypnogram(path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("", "empty"),
        ("\n\n", "empty"),
        ("# only a comment\n", "no data lines"),
        ("W\n\nN2\n", "blank line"),
        ("W\nN2\nSleep stag", "Unknown sleep stage.*line 3"),
        ("stage\n", "header but no epoch"),
        ("epoch,stage\n0,W\n1\n", "truncated"),
        ("epoch,stage\n0,W\n2,N2\n", "not consecutive"),
        ("onset_s,stage\n0,W\n20,N2\n", "not spaced by epoch_length=30"),
        ("epoch,label_x\n0,W\n", "no stage column"),
        ("onset,duration,stage\n0,30,W\n60,30,N2\n", "gap"),
        ("epoch,stage\n0,W\n1,\n", "empty stage"),
    ],
)
def test_bad_text_files(tmp_path, content, match):
    path = tmp_path / "x.csv"
    path.write_text(content)
    with pytest.raises(HypnogramError, match=match):
        read_hypnogram(path)


def test_text_variants(tmp_path):
    cases = {
        "a.txt": "stage\nW\nN1\n4\n",
        "b.txt": "W\r\nN1\r\nREM\r\n",
        "c.csv": "Epoch;Stage\n1;W\n2;N1\n3;R\n",
        "d.tsv": "onset\tduration\tstage\n0\t30\tW\n30\t30\tN1\n60\t30\tR\n",
    }
    for name, content in cases.items():
        (tmp_path / name).write_text(content)
        assert read_hypnogram(tmp_path / name)["stage"].tolist() == ["W", "N1", "R"], name
    (tmp_path / "e.txt").write_bytes("\ufeffW\nN2\n".encode())
    assert read_hypnogram(tmp_path / "e.txt")["stage"].tolist() == ["W", "N2"]
    (tmp_path / "f.txt").write_text("0\n5\n6\n")
    assert read_hypnogram(tmp_path / "f.txt", scheme="rk")["stage"].tolist() == ["W", "R", "MT"]


def test_missing_file_directory_and_bad_format(tmp_path):
    with pytest.raises(HypnogramError, match="no such file"):
        read_hypnogram(tmp_path / "nope.csv")
    with pytest.raises(HypnogramError, match="directory"):
        read_hypnogram(tmp_path)
    with pytest.raises(HypnogramError, match="Invalid format"):
        read_hypnogram(DATA / "P02_p2_baseline.csv", format="xls")
    path = tmp_path / "x.xml"
    path.write_text("<Other/>")
    with pytest.raises(HypnogramError, match="neither NSRR"):
        read_hypnogram(path)


def test_input_frame_round_trip(tmp_path):
    """An epoch table written as CSV reads back identically."""
    table = read_hypnogram(DATA / "P01_p1_baseline.edf")
    table.to_csv(tmp_path / "r.csv", index=False)
    again = read_hypnogram(tmp_path / "r.csv")
    pd.testing.assert_frame_equal(table, again, check_like=False)


def test_damaged_utf16_text_is_a_clear_error(tmp_path):
    # a UTF-16 byte-order mark, then an odd number of bytes (a truncated file): this was an
    # "internal error" (UnicodeDecodeError, exit 1) before
    p = tmp_path / "P01_p1_baseline.csv"
    p.write_bytes(b"\xff\xfee\x00p\x00o\x00\x00\xd8")
    with pytest.raises(HypnogramError, match="UTF-16 byte-order mark but is not valid UTF-16"):
        read_hypnogram(p)


def test_fifo_is_refused_without_reading(tmp_path):
    # reading a named pipe would wait forever
    p = tmp_path / "P01_p1_baseline.csv"
    os.mkfifo(p)
    with pytest.raises(HypnogramError, match="FIFO"):
        read_hypnogram(p)


def test_scanner_refuses_links_leaving_the_folder_and_special_files(tmp_path):
    from studykit.hypnogram.files import scan_hypnograms

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "P09_p1_baseline.csv").write_text("epoch,onset_s,stage\n1,0,W\n")
    study = tmp_path / "hypnograms"
    study.mkdir()
    (study / "P09_p1_baseline.csv").symlink_to(outside / "P09_p1_baseline.csv")
    (study / "loop").symlink_to(study)
    os.mkfifo(study / "P02_p1_baseline.csv")
    problems = scan_hypnograms(study).problems
    refused = problems[problems["rule"] == "refused"]
    assert sorted(Path(f).name for f in refused["file"]) == [
        "P02_p1_baseline.csv",
        "P09_p1_baseline.csv",
        "loop",
    ]
    assert (refused["severity"] == "error").all()
