"""Figures: deterministic files, and the plotted numbers are the data's (hand-computed)."""

import math
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection

from studykit.errors import InputError
from studykit.plotting import (
    plot_emmeans,
    plot_forest,
    plot_hypnograms,
    plot_sleepiness,
    plot_trajectories,
    save_figure,
)
from studykit.tables import HYPOTHESIS_COLUMNS


def _nights():
    return pd.DataFrame(
        {
            "participant_id": ["P1"] * 4 + ["P2"] * 4,
            "period": [1, 1, 2, 2] * 2,
            "treatment": ["placebo", "placebo", "ketamine", "ketamine"]
            + ["ketamine", "ketamine", "placebo", "placebo"],
            "night": ["baseline", "post1"] * 4,
            "n3_min": [60.0, 62.0, 58.0, 70.0, 50.0, 66.0, 52.0, 50.0],
        }
    )


def _hyp(rows):
    h = pd.DataFrame({c: [None] * len(rows) for c in HYPOTHESIS_COLUMNS})
    for i, r in enumerate(rows):
        for k, v in r.items():
            h.loc[i, k] = v
    return h


def test_save_figure_is_byte_identical_across_runs(tmp_path):
    a = save_figure(plot_trajectories(_nights(), outcome="n3_min"), tmp_path / "a", "f")
    b = save_figure(plot_trajectories(_nights(), outcome="n3_min"), tmp_path / "b", "f")
    assert a["png"].read_bytes() == b["png"].read_bytes()
    assert a["svg"].read_bytes() == b["svg"].read_bytes()
    svg = a["svg"].read_text()
    assert "<dc:date>" not in svg
    assert a["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_save_figure_rejects_unknown_format(tmp_path):
    with pytest.raises(InputError, match="Invalid figure format"):
        save_figure(
            plot_sleepiness(pd.DataFrame({"day": [0], "kss": [3], "treatment": ["placebo"]})),
            tmp_path,
            "x",
            formats=["bmp"],
        )


def test_trajectories_means_per_arm():
    fig = plot_trajectories(
        _nights(),
        outcome="n3_min",
        arm_order=["placebo", "ketamine"],
        time_order=["baseline", "post1"],
    )
    placebo_ax, ketamine_ax = fig.axes
    assert placebo_ax.get_title() == "placebo"
    # last line of each panel is the arm mean. Hand: placebo baseline (60+52)/2 = 56,
    # post1 (62+50)/2 = 56; ketamine baseline (58+50)/2 = 54, post1 (70+66)/2 = 68.
    assert list(placebo_ax.lines[-1].get_ydata()) == [56.0, 56.0]
    assert list(ketamine_ax.lines[-1].get_ydata()) == [54.0, 68.0]
    # one thin line per participant x period in each panel: 2
    assert len(ketamine_ax.lines) == 3


def test_emmeans_points_and_intervals():
    e = pd.DataFrame(
        {
            "treatment": ["ketamine", "placebo", "ketamine", "placebo"],
            "night": ["post1", "post1", "baseline", "baseline"],
            "estimate": [68.0, 60.0, 55.0, 56.0],
            "conf_low": [63.0, 55.0, 50.0, 51.0],
            "conf_high": [73.0, 65.0, 60.0, 61.0],
        }
    )
    fig = plot_emmeans(e, arm_order=["placebo", "ketamine"], time_order=["baseline", "post1"])
    ax = fig.axes[0]
    data_lines = [ln for ln in ax.lines if len(ln.get_ydata()) == 2 and ln.get_marker() == "o"]
    ys = [list(ln.get_ydata()) for ln in data_lines]
    assert ys == [[56.0, 60.0], [55.0, 68.0]]  # placebo first, nights in order
    segs = [c for c in ax.collections if isinstance(c, LineCollection)]
    spans = sorted(tuple(s[:, 1]) for c in segs for s in c.get_segments())
    assert (63.0, 73.0) in spans and (51.0, 61.0) in spans


def test_emmeans_requires_interval_columns():
    with pytest.raises(InputError, match="conf_low"):
        plot_emmeans(pd.DataFrame({"treatment": ["placebo"], "estimate": [1.0]}))


def test_forest_adjusted_interval_and_log_axis_for_ratios():
    h = _hyp(
        [
            dict(
                hypothesis_id="H1",
                outcome="n3_min",
                contrast="k - p",
                scale="difference",
                estimate=8.0,
                conf_low=4.0,
                conf_high=12.0,
                conf_level=0.95,
                df=math.inf,
                alternative="two-sided",
                adjust_method="holm",
                multiplicity_family="primary",
                p_adjusted=0.01,
            ),
            dict(
                hypothesis_id="H2",
                outcome="n_awakenings",
                contrast="k / p",
                scale="rate ratio",
                estimate=0.85,
                conf_low=0.72,
                conf_high=1.0,
                conf_level=0.95,
                df=math.inf,
                alternative="two-sided",
                adjust_method="holm",
                multiplicity_family="primary",
                p_adjusted=0.1,
            ),
        ]
    )
    fig = plot_forest(h)
    ax1, ax2 = fig.axes
    assert ax1.get_xscale() == "linear" and ax2.get_xscale() == "log"
    # thick (adjusted) line of H1: Bonferroni m = 2, normal quantiles (df inf):
    # 8 -/+ 4 * z(0.9875) / z(0.975) = 8 -/+ 4 * 2.241403 / 1.959964
    thick = ax1.collections[0].get_segments()[0][:, 0]
    f = 2.2414027276049473 / 1.959963984540054
    assert thick == pytest.approx([8 - 4 * f, 8 + 4 * f])
    thin = ax1.collections[1].get_segments()[0][:, 0]
    assert list(thin) == [4.0, 12.0]
    # reference line at 1 for the ratio
    assert any(list(ln.get_xdata()) == [1.0, 1.0] for ln in ax2.lines)


def test_forest_empty_table_raises():
    with pytest.raises(InputError, match="empty"):
        plot_forest(_hyp([]))


def _epochs():
    return pd.DataFrame(
        {
            "participant_id": "P1",
            "period": [1] * 8 + [2] * 8,
            "night": (["baseline"] * 4 + ["post1"] * 4) * 2,
            "epoch": [0, 1, 2, 3] * 4,
            "stage": ["W", "N1", "N2", "N3", "W", "ART", "N3", "R"] * 2,
        }
    )


def test_hypnograms_fallback_step_plot(monkeypatch):
    monkeypatch.setitem(sys.modules, "studykit.hypnogram", None)  # forces ImportError
    fig = plot_hypnograms(_epochs(), participant_id="P1")
    top, bottom = fig.axes
    assert "night baseline" in top.get_title() and "period 1" in top.get_title()
    # levels bottom-up N3=0, N2=1, N1=2, R=3, W=4; ART is a gap (NaN); last value repeated
    y = bottom.lines[0].get_ydata()
    assert y[0] == 4 and math.isnan(y[1]) and y[2] == 0 and y[3] == 3
    assert [t.get_text() for t in top.get_yticklabels()] == ["N3", "N2", "N1", "R", "W"]


def test_hypnograms_period_and_unknown_participant():
    e = _epochs()
    fig = plot_hypnograms(e, participant_id="P1", period=2)
    assert "period 2" in fig.axes[0].get_title()
    with pytest.raises(InputError, match="P9"):
        plot_hypnograms(e, participant_id="P9")


def test_sleepiness_means_and_t_intervals():
    d = pd.DataFrame(
        {
            "day": [0, 0, 1, 1, 5, 0, 0, 1, 1],
            "kss": [3, 5, 6, 8, 9, 3, 3, 4, 4],
            "treatment": ["ketamine"] * 5 + ["placebo"] * 4,
        }
    )
    fig = plot_sleepiness(d, arm_order=["placebo", "ketamine"])
    ax = fig.axes[0]
    lines = [ln for ln in ax.lines if ln.get_marker() == "o"]
    # placebo: day 0 mean 3, day 1 mean 4; ketamine: day 0 mean 4, day 1 mean 7 (day 5 not shown)
    assert list(lines[0].get_ydata()) == [3.0, 4.0]
    assert list(lines[1].get_ydata()) == [4.0, 7.0]
    # ketamine day 1: values 6, 8 -> SD sqrt(2), n 2: half-width t(0.975, 1) * sqrt(2)/sqrt(2)
    segs = [s for c in ax.collections if isinstance(c, LineCollection) for s in c.get_segments()]
    widths = sorted(np.round(s[1, 1] - s[0, 1], 6) for s in segs)
    assert widths[-1] == pytest.approx(2 * 12.706204736, rel=1e-6)


def test_palette_is_seaborns_colorblind():
    import seaborn as sns

    from studykit.plotting import COLORBLIND

    expected = [
        "#" + "".join(f"{round(c * 255):02X}" for c in rgb)
        for rgb in sns.color_palette("colorblind")
    ]
    assert list(COLORBLIND) == expected
