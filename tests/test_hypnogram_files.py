"""The hypnogram file scanner and `studykit derive` on other labs' folders (Sleep-EDF, NSRR,
free names, recordings tables), lights off / on, and parallel derivation.

Every file here is built by the test in the real formats (EDF+ written with edfio, NSRR XML
as sleepdata.org documents it); the nights are hand-made (SIMULATED, not real recordings), so
every expected number is a hand count stated beside it.
"""

import datetime as dt
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from distributed import LocalCluster
from edfio import Edf, EdfAnnotation, EdfSignal, Recording

from studykit.cli import main
from studykit.errors import InputError
from studykit.hypnogram import read_hypnogram, scan_hypnograms, sleep_statistics
from studykit.hypnogram.derive import DERIVED_COLUMNS, DeriveOptions, derive_nights
from studykit.hypnogram.statistics import OUTCOMES
from studykit.simulate import simulate_study, write_study
from studykit.validate import hypnogram_keys, load_study

DATA = Path(__file__).parent / "data" / "hypnograms"

# One hand-made night with long wake around it, as Sleep-EDF scores it (onset s, duration s,
# label): 2 h of W from the recording start (16:00), then 1 h of sleep, then 1 h of W.
#   W 0-7200 | S1 7200-7260 | S2 7260-9000 | R 9000-10800 | W 10800-14400
SLEEP_EDF_NIGHT = [
    (0, 7200, "Sleep stage W"),
    (7200, 60, "Sleep stage 1"),
    (7260, 1740, "Sleep stage 2"),
    (9000, 1800, "Sleep stage R"),
    (10800, 3600, "Sleep stage W"),
]
START = dt.datetime(1989, 4, 24, 16, 0, 0)


def write_sleep_edf_hypnogram(path, annotations=SLEEP_EDF_NIGHT, start=START, extra=()):
    anns = [EdfAnnotation(o, d, t) for o, d, t in annotations]
    anns += [EdfAnnotation(o, None, t) for o, t in extra]
    edf = Edf(
        signals=[],
        annotations=anns,
        recording=Recording(startdate=start.date()),
        starttime=start.time(),
    )
    edf.write(path)


def write_psg(path, seconds=120, start=START):
    """A signal file (Sleep-EDF *-PSG.edf / NSRR *.edf): 1 Hz, 1-s data records."""
    signal = EdfSignal(np.zeros(seconds), sampling_frequency=1, label="EEG Fpz-Cz")
    edf = Edf(
        [signal],
        recording=Recording(startdate=start.date()),
        starttime=start.time(),
        data_record_duration=1,
    )
    edf.write(path)


def nsrr_xml(stages, *, start_clock="22.00.00", extra=""):
    """NSRR PSGAnnotation XML; ``stages`` as (onset s, duration s, EventConcept)."""
    events = [
        "<ScoredEvent><EventType/><EventConcept>Recording Start Time</EventConcept>"
        f"<Start>0</Start><Duration>30000.0</Duration><ClockTime>00.00.00 {start_clock}"
        "</ClockTime></ScoredEvent>"
    ]
    events += [
        f"<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>{c}</EventConcept>"
        f"<Start>{o:.1f}</Start><Duration>{d:.1f}</Duration></ScoredEvent>"
        for o, d, c in stages
    ]
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n<PSGAnnotation>'
        "<SoftwareVersion>Compumedics</SoftwareVersion><EpochLength>30</EpochLength>"
        f"<ScoredEvents>{''.join(events)}{extra}</ScoredEvents></PSGAnnotation>\n"
    )


# NSRR night: W 0-600 | N1 600-660 | N2 660-2400 | REM 2400-3000 | W 3000-3600
NSRR_NIGHT = [
    (0, 600, "Wake|0"),
    (600, 60, "Stage 1 sleep|1"),
    (660, 1740, "Stage 2 sleep|2"),
    (2400, 600, "REM sleep|5"),
    (3000, 600, "Wake|0"),
]


def lights_event(concept, start):
    return (
        f"<ScoredEvent><EventType>Lights|Lights</EventType><EventConcept>{concept}"
        f"</EventConcept><Start>{start}</Start><Duration>0</Duration></ScoredEvent>"
    )


@pytest.fixture
def sleep_edf(tmp_path):
    d = tmp_path / "sleep-cassette"
    d.mkdir()
    write_psg(d / "SC4001E0-PSG.edf")
    write_sleep_edf_hypnogram(d / "SC4001EC-Hypnogram.edf")
    write_psg(d / "ST7011J0-PSG.edf")
    write_sleep_edf_hypnogram(d / "ST7011JP-Hypnogram.edf")
    write_psg(d / "SC4012E0-PSG.edf")  # a PSG whose hypnogram is missing
    return d


@pytest.fixture
def nsrr(tmp_path):
    root = tmp_path / "nsrr"
    ann = root / "annotations-events-nsrr" / "shhs1"
    ann.mkdir(parents=True)
    edfs = root / "edfs"
    edfs.mkdir()
    lights = lights_event("Lights Off", 300) + lights_event("Lights On", 3300)
    (ann / "shhs1-200001-nsrr.xml").write_text(nsrr_xml(NSRR_NIGHT, extra=lights))
    (ann / "shhs1-200001-profusion.xml").write_text("<CMPStudyConfig/>")
    (ann / "mesa-sleep-0001-nsrr.xml").write_text(nsrr_xml(NSRR_NIGHT))
    write_psg(edfs / "shhs1-200001.edf")
    return root


def test_scan_identifies_sleep_edf_and_pairs_psg_files(sleep_edf):
    files, problems = scan_hypnograms(sleep_edf)
    got = [(f.path.name, f.participant_id, f.period, f.night, f.identity) for f in files]
    # SC4001EC: study SC, subject 00, night 1; ST7011JP: study ST, subject 01, night 1
    assert got == [
        ("SC4001EC-Hypnogram.edf", "00", None, "1", "sleep-edf"),
        ("ST7011JP-Hypnogram.edf", "01", None, "1", "sleep-edf"),
    ]
    assert [f.recording_id for f in files] == ["SC4001EC-Hypnogram", "ST7011JP-Hypnogram"]
    # the paired PSG files are not reported; the one without hypnogram is
    assert [Path(f).name for f in problems["file"]] == ["SC4012E0-PSG.edf"]
    assert "without its *-Hypnogram.edf" in problems["message"].iloc[0]


def test_scan_identifies_nsrr_files(nsrr):
    files, problems = scan_hypnograms(nsrr)
    got = [(f.path.name, f.participant_id, f.night, f.identity) for f in files]
    assert got == [
        ("mesa-sleep-0001-nsrr.xml", "0001", "mesa-sleep", "nsrr"),
        ("shhs1-200001-nsrr.xml", "200001", "shhs1", "nsrr"),
    ]
    # the Profusion twin is skipped with a warning; the signal EDF is paired silently
    assert [Path(f).name for f in problems["file"]] == ["shhs1-200001-profusion.xml"]
    assert problems["severity"].tolist() == ["warning"]


def test_sleep_edf_night_without_lights_warns_and_keeps_whole_record(sleep_edf, tmp_path, capsys):
    out = tmp_path / "nights.csv"
    assert main(["derive", str(sleep_edf), "-o", str(out)]) == 0
    table = pd.read_csv(out, dtype={"participant_id": str})
    assert list(table.columns) == list(DERIVED_COLUMNS)
    row = table.iloc[0]
    # whole record: 14400 s = 240 min in bed; TST 3600 s = 60 min; SOL 7200 s = 120 min
    assert row[["tib_min", "tst_min", "sol_min", "se_pct"]].tolist() == [240.0, 60.0, 120.0, 25.0]
    assert row["lights_source"] == "none" and row["participant_id"] == "00"
    err = capsys.readouterr().err
    assert err.count("lights off and on not found") == 2  # one warning per file


def test_sleep_edf_lights_from_recordings_table(sleep_edf, tmp_path):
    # lights off 17:55 and on 19:05 (clock times, as Sleep-EDF's SC-subjects.xls gives them);
    # the recording starts at 16:00, so 6900 s .. 11100 s
    (sleep_edf / "recordings.csv").write_text(
        "file,participant_id,period,night,lights_off,lights_on\n"
        "SC4001EC-Hypnogram.edf,SC00,1,baseline,17:55,19:05\n"
    )
    out = tmp_path / "nights.csv"
    assert main(["derive", str(sleep_edf), "-o", str(out)]) == 0
    table = pd.read_csv(out).set_index("recording_id")
    sc = table.loc["SC4001EC-Hypnogram"]
    assert sc[["participant_id", "period", "night", "identity", "lights_source"]].tolist() == [
        "SC00",
        1,
        "baseline",
        "recordings",
        "recordings",
    ]
    # in bed 6900..11100 s = 4200 s = 70 min (whole epochs: 230..369); TST 60 min; SOL
    # 6900 -> 7200 s = 5 min; SE 60 / 70
    assert sc["lights_off_s"] == 6900.0 and sc["lights_on_s"] == 11100.0
    assert sc[["tib_min", "tst_min", "sol_min"]].tolist() == [70.0, 60.0, 5.0]
    assert sc["se_pct"] == pytest.approx(100 * 60 / 70)
    # the ST night is not in the table: Sleep-EDF identity, no lights
    st = table.loc["ST7011JP-Hypnogram"]
    assert st["identity"] == "sleep-edf" and st["lights_source"] == "none"


def test_lights_in_the_file_come_first(tmp_path):
    path = tmp_path / "night.edf"
    # "Lights off" at 7000 s and "Lights on" at 11000 s in the EDF+ annotations
    write_sleep_edf_hypnogram(path, extra=[(7000, "Lights off"), (11000, "Lights on")])
    recordings = pd.DataFrame(
        {"file": ["night.edf"], "participant_id": ["A"], "period": ["1"], "night": ["b"],
         "lights_off_s": ["0"], "lights_on_s": ["14400"]}
    )  # fmt: skip
    nights, problems, _ = derive_nights([path], recordings=recordings)
    row = nights.iloc[0]
    assert row["lights_source"] == "file"
    # epochs starting at >= 7000 s and ending <= 11000 s: 7020 .. 10980 s, 132 epochs = 66 min
    assert row["tib_min"] == 66.0 and row["sol_min"] == 3.0  # 7020 -> 7200 s
    assert len(problems) == 0
    table = read_hypnogram(path)
    assert table.attrs["lights_off_s"] == 7000.0 and table.attrs["lights_on_s"] == 11000.0
    assert table.attrs["recording_start"] == "1989-04-24T16:00:00"


def test_nsrr_folder_derives_with_lights_from_the_xml(nsrr, tmp_path):
    out = tmp_path / "nsrr.csv"
    assert main(["derive", str(nsrr), "-o", str(out)]) == 0
    table = pd.read_csv(out, dtype={"participant_id": str}).set_index("participant_id")
    shhs = table.loc["200001"]
    # Lights Off 300 s, Lights On 3300 s -> 100 epochs = 50 min; TST 2400 s = 40 min;
    # SOL 300 -> 600 s = 5 min
    assert shhs[["night", "lights_source", "tib_min", "tst_min", "sol_min"]].tolist() == [
        "shhs1",
        "file",
        50.0,
        40.0,
        5.0,
    ]
    mesa = table.loc["0001"]
    assert mesa["lights_source"] == "none" and mesa["tib_min"] == 60.0


def test_nsrr_clock_lights_from_a_nights_table(tmp_path):
    # the XML starts at 22:00:00 (Recording Start Time); lights off 22:05, on 22:55
    (tmp_path / "mesa-sleep-0001-nsrr.xml").write_text(nsrr_xml(NSRR_NIGHT))
    lights = pd.DataFrame(
        {"participant_id": ["0001"], "period": ["1"], "night": ["mesa-sleep"],
         "lights_off": ["22:05"], "lights_on": ["22:55"]}
    )  # fmt: skip
    recordings = pd.DataFrame(
        {"file": ["mesa-sleep-0001-nsrr.xml"], "participant_id": ["0001"], "period": ["1"],
         "night": ["mesa-sleep"]}
    )  # fmt: skip
    nights, problems, _ = derive_nights(tmp_path, recordings=recordings, lights=lights)
    row = nights.iloc[0]
    # 300 .. 3300 s: 50 min in bed
    assert row["lights_source"] == "nights" and row["tib_min"] == 50.0
    assert row[["lights_off_s", "lights_on_s"]].tolist() == [300.0, 3300.0]


def test_free_names_with_a_pattern_and_one_named_file(tmp_path, capsys):
    d = tmp_path / "lab"
    d.mkdir()
    (d / "subject12_night2.csv").write_text("stage\nW\nN1\nN2\nN2\nR\nW\n")
    (d / "subject7_night1.csv").write_text("stage\nW\nN2\nN2\nW\n")
    out = tmp_path / "nights.csv"
    pattern = r"subject(?P<participant_id>\d+)_night(?P<night>\d+)"
    assert main(["derive", str(d), "-o", str(out), "--pattern", pattern]) == 0
    table = pd.read_csv(out)
    assert table[["participant_id", "night", "identity", "tst_min"]].values.tolist() == [
        [12, 2, "pattern", 2.0],  # N1 N2 N2 R = 4 epochs = 2 min
        [7, 1, "pattern", 1.0],
    ]
    # one file with a free name, no pattern: still derived with its stem as recording_id
    one = tmp_path / "one.csv"
    assert main(["derive", str(d / "subject7_night1.csv"), "-o", str(one)]) == 0
    row = pd.read_csv(one).iloc[0]
    assert row["recording_id"] == "subject7_night1" and row["identity"] == "stem"
    assert pd.isna(row["participant_id"]) and pd.isna(row["period"]) and pd.isna(row["night"])
    assert capsys.readouterr().err.count("cannot interpret") == 0  # logged, see below


def test_unidentified_files_are_said_once(tmp_path, caplog):
    for i in range(7):
        (tmp_path / f"night of day {i}.txt").write_text("W\nN2\n")
    with caplog.at_level(logging.WARNING, logger="studykit.hypnogram.files"):
        files, _ = scan_hypnograms(tmp_path)
    assert len(files) == 7 and {f.identity for f in files} == {"stem"}
    said = [r.getMessage() for r in caplog.records if "cannot interpret" in r.getMessage()]
    assert len(said) == 1 and "7 hypnogram file(s)" in said[0] and "and 2 more" in said[0]


def test_recordings_table_listing_an_absent_file_is_an_error(tmp_path):
    (tmp_path / "a.txt").write_text("W\nN2\n")
    (tmp_path / "recordings.csv").write_text(
        "file,participant_id,period,night\na.txt,P1,1,base\ngone.txt,P2,1,base\n"
    )
    files, problems = scan_hypnograms(tmp_path)
    assert [(f.participant_id, f.identity) for f in files] == [("P1", "recordings")]
    assert problems[["file", "rule", "severity"]].values.tolist() == [
        ["gone.txt", "missing_file", "error"]
    ]


def test_bad_pattern_and_duplicate_nights(tmp_path):
    with pytest.raises(InputError, match="not a valid regular expression"):
        scan_hypnograms(tmp_path, pattern="(?P<participant_id")
    with pytest.raises(InputError, match="no named group"):
        scan_hypnograms(tmp_path, pattern=r"(\d+)")
    (tmp_path / "x1.txt").write_text("W\n")
    (tmp_path / "x2.txt").write_text("W\n")
    (tmp_path / "recordings.csv").write_text(
        "file,participant_id,period,night\nx1.txt,P1,1,base\nx2.txt,P1,1,base\n"
    )
    files, problems = scan_hypnograms(tmp_path)
    assert [f.path.name for f in files] == ["x1.txt"]
    assert problems["rule"].tolist() == ["duplicate_night"]
    assert "x1.txt" in problems["message"].iloc[0]


def test_derive_output_identical_whatever_the_jobs(tmp_path):
    h = tmp_path / "h"
    h.mkdir()
    # SIMULATED: 40 nights from a fixed-seed Markov chain, in EDF+ and NSRR XML
    rng = np.random.default_rng(7)
    labels = ["W", "1", "2", "3", "R"]
    concepts = {"W": "Wake|0", "1": "Stage 1 sleep|1", "2": "Stage 2 sleep|2",
                "3": "Stage 3 sleep|3", "R": "REM sleep|5"}  # fmt: skip
    for i in range(40):
        runs = rng.integers(1, 20, size=30)
        stages = rng.choice(labels, size=30)
        onsets = np.concatenate([[0], np.cumsum(runs)[:-1]]) * 30
        anns = [(float(o), float(r * 30), s) for o, r, s in zip(onsets, runs, stages, strict=True)]
        if i % 2:
            write_sleep_edf_hypnogram(
                h / f"S{i:02d}_p1_n.edf",
                [(o, d, f"Sleep stage {s}") for o, d, s in anns],
            )
        else:
            (h / f"S{i:02d}_p1_n.xml").write_text(
                nsrr_xml([(o, d, concepts[s]) for o, d, s in anns])
            )
    serial = derive_nights(h, chunk_size=3)
    parallel = derive_nights(h, jobs=2, chunk_size=3)
    assert len(serial.nights) == 40
    assert serial.nights.to_csv(index=False) == parallel.nights.to_csv(index=False)
    assert serial.problems.to_csv(index=False) == parallel.problems.to_csv(index=False)
    whole = derive_nights(h, chunk_size=100)
    assert whole.nights.to_csv(index=False) == serial.nights.to_csv(index=False)
    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        on_dask = derive_nights(h, scheduler=cluster.scheduler_address, chunk_size=3)
    assert on_dask.nights.to_csv(index=False) == serial.nights.to_csv(index=False)
    # and the CLI writes the same bytes with --jobs 2
    a, b = tmp_path / "a" / "n.csv", tmp_path / "b" / "n.csv"
    assert main(["derive", str(h), "-o", str(a), "--quiet"]) == 0
    assert main(["derive", str(h), "-o", str(b), "--jobs", "2", "--quiet"]) == 0
    assert a.read_bytes() == b.read_bytes()


def test_recording_id_groups_and_carries_empty_design_keys():
    epochs = pd.DataFrame(
        {"recording_id": ["r1", "r1", "r2", "r2"], "participant_id": [None, None, "P", "P"],
         "period": pd.array([None, None, 1, 1], dtype="Int64"), "night": [None, None, "a", "a"],
         "stage": ["W", "N2", "N2", "N2"]}
    )  # fmt: skip
    stats = sleep_statistics(epochs)
    assert stats["recording_id"].tolist() == ["r1", "r2"]
    assert stats["participant_id"].isna().tolist() == [True, False]
    assert stats["tst_min"].tolist() == [0.5, 1.0]  # one N2 epoch; two N2 epochs


def test_derive_options_validated_once(tmp_path):
    shutil.copy(DATA / "P03_p1_baseline.txt", tmp_path)
    with pytest.raises(Exception, match="min_bout_epochs"):
        derive_nights(tmp_path, options=DeriveOptions(min_bout_epochs=0))


def test_study_loader_uses_the_scanner_with_a_recordings_table(tmp_path):
    # load_study (validate / run) finds hypnograms with the one scanner: a Sleep-EDF name
    # listed in the study's recordings.csv is read as that night; an NSRR name whose period
    # is not known is reported, not read
    study = tmp_path / "study"
    shutil.copytree(Path(__file__).parent / "data" / "foundation" / "study", study)
    h = study / "hypnograms"
    h.mkdir()
    (h / "SC4001EC-Hypnogram.csv").write_text("stage\nW\nN1\nN2\n")
    (h / "shhs1-200001-nsrr.xml").write_text(nsrr_xml(NSRR_NIGHT))
    # the CSV hypnogram has no start time: the recordings table's recording_start places the
    # nights table's lights (2024-03-04T23:00 .. 2024-03-05T07:00)
    (study / "recordings.csv").write_text(
        "file,participant_id,period,night,recording_start\n"
        "SC4001EC-Hypnogram.csv,P01,1,baseline,2024-03-04T23:00\n"
    )
    s = load_study(study)
    keys = s.epochs[["participant_id", "period", "night"]].drop_duplicates().astype(str)
    assert keys.values.tolist() == [["P01", "1", "baseline"]]
    assert len(s.epochs) == 3
    # (the 3-epoch night also disagrees with the typed outcomes of nights.csv: rule
    # "derived_mismatch"; TIB = 3 epochs = 1.5 min, cropped to the nights table's lights)
    # (the other nights of nights.csv have no hypnogram: hypnogram_missing, not analysed)
    assert s.nights[["participant_id", "night", "tib_min"]].values.tolist() == [
        ["P01", "baseline", 1.5]
    ]
    found = s.issues[s.issues["rule"] == "hypnogram"]
    got = found[["file", "rule", "severity"]].values.tolist()
    assert got == [[str(h / "shhs1-200001-nsrr.xml"), "hypnogram", "warning"]]
    assert "recordings.csv" in found["message"].iloc[0]
    assert hypnogram_keys("x/P01_p2_post1.csv") == ("P01", 2, "post1")
    assert hypnogram_keys("shhs1-200001-nsrr.xml") is None  # no period: not a complete key


def test_lights_inside_the_files_reach_the_study_loader(tmp_path):
    # Gap of #12: load_study (validate, fit, run) recomputed the outcomes with the nights
    # table's lights only, so lights-off / on written only inside an EDF+ file reached
    # `studykit derive` but not fit / run. Now both read through the one path (file lights,
    # else recordings / nights table, else a warning) and agree on every night and column.
    study = tmp_path / "study"
    write_study(simulate_study(n_participants=4, seed=7, mess=False), study)  # SIMULATED
    nights = pd.read_csv(study / "nights.csv", dtype=str)
    nights = nights.drop(columns=["recording_start", "lights_off", "lights_on"])  # no lights
    hyp = study / "hypnograms"
    for old in hyp.glob("P01_p1_baseline.*"):
        old.unlink()
    # the hand-made Sleep-EDF-like night (W 0-7200 | sleep 7200-10800 | W 10800-14400) with
    # "Lights off" at 7000 s and "Lights on" at 11000 s in its EDF+ annotations
    write_sleep_edf_hypnogram(
        hyp / "P01_p1_baseline.edf", extra=[(7000, "Lights off"), (11000, "Lights on")]
    )
    derived, problems, _ = derive_nights(hyp)
    assert set(problems["rule"]) == {"no_lights"}  # every night but the EDF one
    edf = derived.set_index("file").loc[str(hyp / "P01_p1_baseline.edf")]
    # epochs starting at >= 7000 s and ending <= 11000 s: 7020 .. 10980 s, 132 epochs = 66 min;
    # SOL 7020 -> 7200 s = 3 min; TST 3600 s = 60 min; SE 60 / 66
    assert (edf["lights_source"], edf["tib_min"], edf["sol_min"], edf["tst_min"]) == (
        "file",
        66.0,
        3.0,
        60.0,
    )
    # the lab types the derived outcomes into nights.csv (as `studykit derive` writes them)
    keys = ["participant_id", "period", "night"]
    typed = derived.drop(columns=[c for c in DERIVED_COLUMNS if c not in (*keys, *OUTCOMES)])
    typed = typed.astype({"period": "int64"}).astype({"period": str})
    nights = nights[[c for c in nights.columns if c not in OUTCOMES]].merge(typed, on=keys)
    nights.to_csv(study / "nights.csv", index=False)

    s = load_study(study)
    assert s.outcomes == "hypnograms"
    rules = set(s.issues["rule"])
    assert "derived_mismatch" not in rules and "derive" not in rules, s.issues
    assert "no_lights" in rules  # the CSV nights: said, as derive says it
    got = s.nights.astype({"participant_id": object, "night": object, "period": "int64"})
    want = derived.astype({"participant_id": object, "night": object, "period": "int64"})
    both = got.merge(want, on=keys, suffixes=("", "_derive"))
    assert len(both) == len(derived) == len(s.nights)
    for c in OUTCOMES:
        a = both[c].astype("float64").to_numpy()
        b = both[f"{c}_derive"].astype("float64").to_numpy()
        np.testing.assert_array_equal(a, b, err_msg=c)
    row = both[(both["participant_id"] == "P01") & (both["night"] == "baseline")].iloc[0]
    assert (row["tib_min"], row["sol_min"], row["se_pct"]) == (66.0, 3.0, 100 * 60 / 66)


def test_sleep_edf_cassette_and_telemetry_subjects_are_not_merged(tmp_path, capsys):
    # SC4001 (Sleep Cassette subject 00) and ST7001 (Sleep Telemetry subject 00) are two
    # people; by name alone both would be participant "00", night 1. The scanner refuses
    # both files and names the fix; ST7011 (subject 01, only in Telemetry) is read.
    d = tmp_path / "sleep-edf"
    d.mkdir()
    write_sleep_edf_hypnogram(d / "SC4001EC-Hypnogram.edf")
    write_psg(d / "SC4001E0-PSG.edf")
    write_sleep_edf_hypnogram(d / "ST7001J0-Hypnogram.edf")
    write_sleep_edf_hypnogram(d / "ST7011JP-Hypnogram.edf")
    files, problems = scan_hypnograms(d)
    assert [f.path.name for f in files] == ["ST7011JP-Hypnogram.edf"]
    refused = problems[problems["rule"] == "ambiguous_identity"]
    assert sorted(Path(f).name for f in refused["file"]) == [
        "SC4001EC-Hypnogram.edf",
        "ST7001J0-Hypnogram.edf",
    ]
    assert set(refused["severity"]) == {"error"} and len(problems) == 2  # PSG: no row of its own
    message = refused.set_index(refused["file"].map(lambda f: Path(f).name)).loc[
        "SC4001EC-Hypnogram.edf", "message"
    ]
    assert "ST7001J0-Hypnogram.edf" in message and "recordings.csv" in message
    # studykit derive: exit 2, the error said, the two people not in one participant's rows
    out = tmp_path / "nights.csv"
    assert main(["derive", str(d), "-o", str(out)]) == 2
    assert "ambiguous_identity" in (tmp_path / "nights_problems.csv").read_text()
    assert pd.read_csv(out, dtype=str)["file"].map(lambda f: Path(f).name).tolist() == [
        "ST7011JP-Hypnogram.edf"
    ]
    # the fix: a recordings table says whose night each file is
    (d / "recordings.csv").write_text(
        "file,participant_id,period,night\n"
        "SC4001EC-Hypnogram.edf,SC00,1,1\nST7001J0-Hypnogram.edf,ST00,1,1\n"
    )
    files, problems = scan_hypnograms(d)
    got = sorted((f.path.name, f.participant_id, f.identity) for f in files)
    assert got == [
        ("SC4001EC-Hypnogram.edf", "SC00", "recordings"),
        ("ST7001J0-Hypnogram.edf", "ST00", "recordings"),
        ("ST7011JP-Hypnogram.edf", "01", "sleep-edf"),
    ]
    assert "ambiguous_identity" not in set(problems["rule"])
