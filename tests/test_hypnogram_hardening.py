"""Hostile and broken hypnogram files (issue #13 items 3, 6, 9, 12): each is a clear error
(exit 2 from the CLI), never a traceback, a silent half night or a huge allocation.

Every file is built here by the test (hand-made, SIMULATED content).
"""

import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from edfio import Edf, EdfAnnotation, EdfSignal

from studykit.cli import main
from studykit.errors import HypnogramError
from studykit.hypnogram import read_hypnogram


def edf_with_records(path: Path, n_records: int = 120) -> int:
    """An EDF+ hypnogram with a 1 Hz signal in 1-s data records (``n_records`` of them) and
    stage annotations covering the first 120 s; returns the bytes per data record."""
    signal = EdfSignal(np.zeros(n_records), sampling_frequency=1, label="EEG")
    anns = [EdfAnnotation(0, 60, "Sleep stage W"), EdfAnnotation(60, 60, "Sleep stage 2")]
    Edf([signal], annotations=anns, data_record_duration=1).write(path)
    data = path.read_bytes()
    ns = int(data[252:256])
    base = 256 + 216 * ns
    return 2 * sum(int(data[base + 8 * i : base + 8 * i + 8]) for i in range(ns))


def test_valid_edf_with_signal_reads(tmp_path):
    path = tmp_path / "ok.edf"
    edf_with_records(path)
    assert read_hypnogram(path)["stage"].astype(str).tolist() == ["W", "W", "N2", "N2"]


def test_truncated_edf_names_the_record_counts(tmp_path):
    path = tmp_path / "P01_p1_a.edf"
    record = edf_with_records(path)
    data = path.read_bytes()
    header = int(data[184:192])
    assert int(data[236:244]) == 120
    path.write_bytes(data[: header + 60 * record])  # keep 60 of the 120 data records
    with pytest.raises(HypnogramError, match=r"says 120 data records but the file holds 60 "):
        read_hypnogram(path)
    out = tmp_path / "n.csv"
    assert main(["derive", str(path), "-o", str(out)]) == 2  # no night derived: exit 2


def test_edf_header_claiming_99999999_records(tmp_path):
    path = tmp_path / "lying.edf"
    edf_with_records(path)
    data = bytearray(path.read_bytes())
    data[236:244] = b"99999999"
    path.write_bytes(bytes(data))
    with pytest.raises(HypnogramError, match=r"says 99999999 data records but the file holds 120"):
        read_hypnogram(path)


def test_edf_cut_inside_the_header(tmp_path):
    path = tmp_path / "cut.edf"
    edf_with_records(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(HypnogramError, match="truncated"):
        read_hypnogram(path)


@pytest.mark.parametrize("duration", ["3e11", "172830"])  # 3e11 s; 48 h + 30 s
def test_stage_lasting_longer_than_a_night_is_refused_without_allocating(tmp_path, duration):
    path = tmp_path / "long.csv"
    path.write_text(f"onset,duration,stage\n0,30,W\n30,{duration},N2\n")
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(HypnogramError, match="max_night_hours"):
        read_hypnogram(path)
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # 3e11 s / 30 s = 1e10 epochs: 9.3 GiB of int8 codes if expanded. Bounded: < 50 MB, < 5 s
    assert peak < 50e6 and elapsed < 5


def test_many_short_stages_adding_up_beyond_the_bound(tmp_path):
    # 97 annotations of 30 min = 48.5 h > 48 h, each plausible alone
    rows = "\n".join(f"{i * 1800},1800,N2" for i in range(97))
    path = tmp_path / "long.csv"
    path.write_text("onset,duration,stage\n" + rows + "\n")
    with pytest.raises(HypnogramError, match=r"48.5 h"):
        read_hypnogram(path)
    assert len(read_hypnogram(path, max_night_hours=49)) == 97 * 60  # a setting


def test_nsrr_stage_of_3e11_seconds(tmp_path):
    path = tmp_path / "x-1-nsrr.xml"
    path.write_text(
        "<PSGAnnotation><ScoredEvents><ScoredEvent><EventType>Stages|Stages</EventType>"
        "<EventConcept>Wake|0</EventConcept><Start>0</Start><Duration>3e11</Duration>"
        "</ScoredEvent></ScoredEvents></PSGAnnotation>"
    )
    with pytest.raises(HypnogramError, match="plausible maximum of 48 h"):
        read_hypnogram(path)


def test_unclosed_quote_in_a_csv_hypnogram(tmp_path, capsys):
    path = tmp_path / "P01_p1_a.csv"
    path.write_text('epoch,stage\n0,W\n1,"N1\n2,N2\n')
    with pytest.raises(HypnogramError, match=r"line 3 .*quote"):
        read_hypnogram(path)
    assert main(["derive", str(path), "-o", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert "quote" in err and "internal error" not in err


def test_bad_lights_date_is_a_user_error(tmp_path, capsys):
    hyp = tmp_path / "P01_p1_a.txt"
    hyp.write_text("W\nN2\n")
    lights = tmp_path / "lights.csv"
    lights.write_text(
        "participant_id,period,night,lights_off,lights_on,recording_start\n"
        "P01,1,a,2024-13-45 25:99,2024-03-02 07:00,2024-03-01 22:00\n"
    )
    code = main(["derive", str(hyp), "-o", str(tmp_path / "o.csv"), "--lights", str(lights)])
    assert code == 2
    err = capsys.readouterr().err
    assert "2024-13-45 25:99" in err and "internal error" not in err


def test_output_pointing_to_a_folder(tmp_path, capsys):
    hyp = tmp_path / "P01_p1_a.txt"
    hyp.write_text("W\nN2\n")
    assert main(["derive", str(hyp), "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and "internal error" not in err


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE PSGAnnotation [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<PSGAnnotation><ScoredEvents><ScoredEvent><EventType>Stages|Stages</EventType>
<EventConcept>&xxe;</EventConcept><Start>0</Start><Duration>30</Duration>
</ScoredEvent></ScoredEvents></PSGAnnotation>
"""
LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">]>
<PSGAnnotation><ScoredEvents>&lol2;</ScoredEvents></PSGAnnotation>
"""


@pytest.mark.parametrize("payload", [XXE, LAUGHS, XXE.decode().encode("utf-16")])
def test_xml_entity_attacks_are_named_as_such(tmp_path, payload):
    path = tmp_path / "a-1-nsrr.xml"
    path.write_bytes(payload)
    with pytest.raises(HypnogramError) as info:
        read_hypnogram(path, format="nsrr")
    message = str(info.value)
    assert "DTD" in message and "entity" in message and "truncated" not in message


def test_truncated_xml_still_says_truncated(tmp_path):
    path = tmp_path / "a-1-nsrr.xml"
    path.write_text("<PSGAnnotation><ScoredEvents><ScoredEvent><EventType>Stages")
    with pytest.raises(HypnogramError, match="truncated"):
        read_hypnogram(path)
