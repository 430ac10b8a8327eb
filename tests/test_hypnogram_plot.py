"""plot_hypnogram draws one night and returns the Axes (Agg backend, no display)."""

from pathlib import Path

import matplotlib
import numpy as np
import pytest

from studykit.errors import HypnogramError
from studykit.hypnogram import read_hypnogram, read_hypnograms
from studykit.hypnogram.plot import plot_hypnogram

matplotlib.use("Agg")
import matplotlib.pyplot as plt

DATA = Path(__file__).parent / "data" / "hypnograms"


def test_plot_epoch_table_on_given_axes(tmp_path):
    fig, ax = plt.subplots()
    table = read_hypnogram(DATA / "P01_p1_baseline.edf")
    out = plot_hypnogram(table, ax=ax, title="P01 baseline")
    assert out is ax and ax.get_title() == "P01 baseline"
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "MT/ART/UNS",
        "W",
        "R",
        "N1",
        "N2",
        "N3",
    ]
    # 19 epochs of 30 s = 0.158 h
    assert ax.get_xlim() == pytest.approx((0.0, 19 * 30 / 3600))
    fig.savefig(tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 1000
    plt.close(fig)


def test_plot_sequence_creates_figure():
    ax = plot_hypnogram(["W", "N2", "N3", "R"], epoch_length=60)
    assert ax.get_xlim() == pytest.approx((0.0, 4 / 60))
    # the staged line: W row 5, N2 row 2, N3 row 1, R row 4
    np.testing.assert_array_equal(ax.patches[0].get_data().values, [5, 2, 1, 4])
    plt.close(ax.figure)


def test_plot_rejects_several_nights_and_empty():
    epochs, _ = read_hypnograms(DATA)
    with pytest.raises(HypnogramError, match="one night"):
        plot_hypnogram(epochs)
    with pytest.raises(HypnogramError, match="no epoch"):
        plot_hypnogram([])


def test_plot_shows_unstaged_kinds_and_lights():
    # the fixture night has movement (epoch 15) and unscored epochs (17, 18) and a
    # "Lights off" annotation at 5 s (make_fixtures.py)
    table = read_hypnogram(DATA / "P01_p1_baseline.edf")
    ax = plot_hypnogram(table, lights_on_s=540)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["REM", "movement", "unscored", "lights off", "lights on"]
    lines = {line.get_label(): line.get_xdata()[0] for line in ax.get_lines()}
    assert lines == {"lights off": pytest.approx(5 / 3600), "lights on": pytest.approx(0.15)}
    colors = {p.get_label(): matplotlib.colors.to_hex(p.get_edgecolor()) for p in ax.patches
              if p.get_label() in ("movement", "unscored")}  # fmt: skip
    assert len(set(colors.values())) == 2  # each kind its own colour
    plt.close(ax.figure)
