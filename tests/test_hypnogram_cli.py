"""`studykit derive`: hypnogram files -> nights table; problems reported, exit codes."""

import shutil
from pathlib import Path

import pandas as pd

from studykit.cli import main
from studykit.hypnogram.derive import DERIVED_COLUMNS

DATA = Path(__file__).parent / "data" / "hypnograms"


def test_derive_directory(tmp_path, capsys):
    out = tmp_path / "out" / "nights.csv"
    assert main(["derive", str(DATA), "-o", str(out), "--min-bout-epochs", "2"]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == list(DERIVED_COLUMNS)
    assert len(table) == 6
    # hand count of the fixture night (tests/test_hypnogram_statistics.py)
    assert (table["tst_min"] == 6.5).all() and (table["waso_min"] == 0.5).all()
    # the EDF+ fixture has a "Lights off" annotation at 5 s: its first epoch (0-30 s, W) is
    # out of bed; lights on is nowhere, so the night runs to the end (make_fixtures.py)
    lights = table.set_index("file")[["tib_min", "lights_off_s", "lights_source"]]
    edf = lights.loc[str(DATA / "P01_p1_baseline.edf")]
    assert edf.tolist() == [9.0, 5.0, "file/none"]
    others = lights.drop(str(DATA / "P01_p1_baseline.edf"))
    assert (others["tib_min"] == 9.5).all() and (others["lights_source"] == "none").all()
    assert (table["n_awakenings"] == 0).all()  # its only wake bout is 1 epoch < 2
    assert set(table["quality_flag"]) == {1}
    captured = capsys.readouterr()
    assert "wrote 6 night(s)" in captured.out and "min_bout_epochs=2" in captured.out
    assert (tmp_path / "out" / "nights_problems.csv").exists()  # make_fixtures.py skipped


def test_derive_reports_bad_files_and_exits_2(tmp_path, capsys):
    src = tmp_path / "h"
    src.mkdir()
    shutil.copy(DATA / "P02_p2_baseline.csv", src)
    (src / "P09_p1_baseline.txt").write_text("W\nN8\n")
    out = tmp_path / "nights.csv"
    assert main(["derive", str(src), "-o", str(out)]) == 2
    assert len(pd.read_csv(out)) == 1  # the good night is still written
    problems = pd.read_csv(tmp_path / "nights_problems.csv")
    problems = problems[problems["severity"] == "error"]
    assert problems["file"].tolist() == [str(src / "P09_p1_baseline.txt")]
    assert "1 file(s) could not be read" in capsys.readouterr().err
    assert main(["derive", str(src), "-o", str(out), "--allow-problems"]) == 0


def test_derive_with_lights(tmp_path):
    lights = tmp_path / "lights.csv"
    pd.DataFrame(
        {"participant_id": ["P02"], "period": [2], "night": ["baseline"],
         "lights_off_s": [60.0], "lights_on_s": [510.0]}
    ).to_csv(lights, index=False)  # fmt: skip
    out = tmp_path / "nights.csv"
    assert main(["derive", str(DATA / "P02_p2_baseline.csv"), "-o", str(out),
                 "--lights", str(lights)]) == 0  # fmt: skip
    row = pd.read_csv(out).iloc[0]
    # epochs 2..16 of the fixture night: 15 epochs, sleep from the first one
    assert row["tib_min"] == 7.5 and row["sol_min"] == 0.0 and row["unscored_min"] == 0.0


def test_derive_nothing_readable_is_an_error(tmp_path, capsys):
    code = main(["derive", str(tmp_path / "missing_p1_x.csv"), "-o", str(tmp_path / "o.csv")])
    assert code == 2
    assert "no hypnogram could be read" in capsys.readouterr().err
