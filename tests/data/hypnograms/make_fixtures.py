"""Write the hypnogram fixtures: ONE hand-made night (not real data) in every supported format.

Run from the repository root: ``python tests/data/hypnograms/make_fixtures.py``. The files are
committed; this script documents exactly how they were made.

The night (19 epochs of 30 s), as Sleep-EDF annotations (onset s, duration s, label):

    0 60 W | 60 30 S1 | 90 90 S2 | 180 60 S3 | 240 60 S4 | 300 30 S2 | 330 30 W |
    360 90 R | 450 30 Movement time | 480 30 R | 510 60 ?

Epoch by epoch (studykit codes):
    W W N1 N2 N2 N2 N3 N3 N3 N3 N2 W R R R MT R UNS UNS
"""

from pathlib import Path

from edfio import Edf, EdfAnnotation

HERE = Path(__file__).parent

SLEEP_EDF = [
    (0, 60, "Sleep stage W"),
    (60, 30, "Sleep stage 1"),
    (90, 90, "Sleep stage 2"),
    (180, 60, "Sleep stage 3"),
    (240, 60, "Sleep stage 4"),
    (300, 30, "Sleep stage 2"),
    (330, 30, "Sleep stage W"),
    (360, 90, "Sleep stage R"),
    (450, 30, "Movement time"),
    (480, 30, "Sleep stage R"),
    (510, 60, "Sleep stage ?"),
]
NSRR = {
    "Sleep stage W": "Wake|0",
    "Sleep stage 1": "Stage 1 sleep|1",
    "Sleep stage 2": "Stage 2 sleep|2",
    "Sleep stage 3": "Stage 3 sleep|3",
    "Sleep stage 4": "Stage 4 sleep|4",
    "Sleep stage R": "REM sleep|5",
    "Movement time": "Movement|6",
    "Sleep stage ?": "Unscored|9",
}
PROFUSION = {
    "Sleep stage W": 0,
    "Sleep stage 1": 1,
    "Sleep stage 2": 2,
    "Sleep stage 3": 3,
    "Sleep stage 4": 4,
    "Sleep stage R": 5,
    "Movement time": 6,
    "Sleep stage ?": 9,
}
EPOCHS = "W W N1 N2 N2 N2 N3 N3 N3 N3 N2 W R R R MT R UNS UNS".split()


def main() -> None:
    # Sleep-EDF style EDF+ with only an annotation signal (plus one point event).
    anns = [EdfAnnotation(o, d, t) for o, d, t in SLEEP_EDF]
    anns.append(EdfAnnotation(5.0, None, "Lights off"))
    Edf(signals=[], annotations=anns).write(HERE / "P01_p1_baseline.edf")

    # NSRR XML (PSGAnnotation), with a recording-start event and an arousal that are not stages.
    events = [
        "<ScoredEvent><EventType/><EventConcept>Recording Start Time</EventConcept>"
        "<Start>0</Start><Duration>570.0</Duration>"
        "<ClockTime>00.00.00 22.00.00</ClockTime></ScoredEvent>"
    ]
    for o, d, t in SLEEP_EDF:
        events.append(
            f"<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>{NSRR[t]}"
            f"</EventConcept><Start>{o:.1f}</Start><Duration>{d:.1f}</Duration></ScoredEvent>"
        )
    events.append(
        "<ScoredEvent><EventType>Arousals|Arousals</EventType><EventConcept>"
        "Arousal|Arousal ()</EventConcept><Start>200.5</Start><Duration>5.0</Duration>"
        "</ScoredEvent>"
    )
    (HERE / "P01_p1_post1.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n<PSGAnnotation>\n'
        "<SoftwareVersion>Compumedics</SoftwareVersion>\n<EpochLength>30</EpochLength>\n"
        "<ScoredEvents>\n" + "\n".join(events) + "\n</ScoredEvents>\n</PSGAnnotation>\n"
    )

    # Compumedics Profusion XML.
    stages = []
    for _o, d, t in SLEEP_EDF:
        stages += [f"<SleepStage>{PROFUSION[t]}</SleepStage>"] * (d // 30)
    (HERE / "P02_p1_baseline.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<CMPStudyConfig>\n<EpochLength>30</EpochLength>\n'
        "<SleepStages>\n" + "\n".join(stages) + "\n</SleepStages>\n</CMPStudyConfig>\n"
    )

    # studykit CSV (columns epoch, onset_s, stage).
    lines = ["epoch,onset_s,stage"] + [f"{i},{30.0 * i:.1f},{s}" for i, s in enumerate(EPOCHS)]
    (HERE / "P02_p2_baseline.csv").write_text("\n".join(lines) + "\n")

    # Plain text, one R&K label per line, UTF-16 with BOM (a vendor export).
    rk = {"W": "W", "N1": "S1", "N2": "S2", "N3": "S3", "R": "REM", "MT": "MT", "UNS": "?"}
    (HERE / "P03_p1_baseline.txt").write_text(
        "\n".join(rk[s] for s in EPOCHS) + "\n", encoding="utf-16"
    )

    # BIDS-proposal style TSV of annotations (onset, duration, stage).
    rows = ["onset\tduration\tstage"] + [f"{o}\t{d}\t{t}" for o, d, t in SLEEP_EDF]
    (HERE / "P03_p1_post1.tsv").write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
