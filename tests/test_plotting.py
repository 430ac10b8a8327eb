"""Figures: deterministic files, and the plotted numbers are the data's (hand-computed)."""

import math

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
    a = save_figure(
        plot_trajectories(_nights(), outcome="n3_min"), tmp_path / "a", "f", simulated=True
    )
    b = save_figure(
        plot_trajectories(_nights(), outcome="n3_min"), tmp_path / "b", "f", simulated=True
    )
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
            simulated=False,
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


def _forest_rows():
    return _hyp(
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
                verdict="supported",
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
                verdict="inconclusive",
            ),
        ]
    )


def test_forest_adjusted_interval_and_log_axis_for_ratios():
    fig = plot_forest(
        _forest_rows(),
        labels={"n3_min": "N3 (slow-wave sleep) minutes", "n_awakenings": "Number of awakenings"},
        units={"n3_min": "min", "n_awakenings": "count"},
    )
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
    # dictionary labels, not variable names; unit on the axis
    assert "N3 (slow-wave sleep) minutes" in ax1.get_yticklabels()[0].get_text()
    assert "n3_min" not in ax1.get_yticklabels()[0].get_text()
    assert ax1.get_xlabel() == "difference (min)"
    # readable ratio ticks (no 10^0): plain numbers
    labels = [t.get_text() for t in ax2.get_xticklabels()]
    assert labels and all("$" not in t and "^" not in t for t in labels)
    assert "1" in labels


def test_forest_prints_the_tables_numbers_and_verdicts():
    from studykit.models.multiplicity import adjusted_intervals
    from studykit.tables import format_number, format_p

    h = _forest_rows()
    texts = [t.get_text() for t in plot_forest(h).texts]
    adj = adjusted_intervals(h)
    for i in range(len(h)):
        cell = (
            f"{format_number(h.loc[i, 'estimate'])} "
            f"[{format_number(adj.loc[i, 'conf_low_adjusted'])}, "
            f"{format_number(adj.loc[i, 'conf_high_adjusted'])}]"
        )
        assert cell in texts
        assert format_p(h.loc[i, "p_adjusted"]) in texts
        assert h.loc[i, "verdict"] in texts


def test_ratio_ticks_are_readable():
    from studykit.plotting import _ratio_ticks

    assert _ratio_ticks(0.3, 3.5) == [0.5, 1.0, 2.0]
    assert _ratio_ticks(0.7, 1.2) == [0.8, 0.9, 1.0, 1.1, 1.2] or 1.0 in _ratio_ticks(0.7, 1.2)
    assert _ratio_ticks(0.01, 200) == [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]


def test_simulated_figures_are_labelled_in_every_file(tmp_path):
    paths = save_figure(
        plot_forest(_forest_rows()), tmp_path, "forest", simulated=True, formats=["png", "svg"]
    )
    svg = paths["svg"].read_text()
    assert 'id="simulated-watermark' in svg and "SIMULATED DATA" in svg
    assert b"SIMULATED DATA" in paths["png"].read_bytes()  # PNG tEXt Description chunk
    real = save_figure(plot_forest(_forest_rows()), tmp_path, "real", simulated=False)
    assert "simulated-watermark" not in real["svg"].read_text()
    assert b"SIMULATED" not in real["png"].read_bytes()


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


def test_hypnograms_use_the_hypnogram_plot_and_fit_the_longest_night():
    e = _epochs()
    longer = e[(e["night"] == "post1") & (e["period"] == 1)].assign(epoch=lambda d: d["epoch"] + 4)
    e = pd.concat([e, longer], ignore_index=True)  # post1 of period 1: 8 epochs, baseline 4
    fig = plot_hypnograms(e, participant_id="P1")
    top, bottom = fig.axes
    assert "night baseline" in top.get_title() and "period 1" in top.get_title()
    # studykit.hypnogram.plot_hypnogram's layout: a row for MT/ART/UNS above W
    assert "MT/ART/UNS" in [t.get_text() for t in top.get_yticklabels()]
    # shared axis: the 8-epoch night (8 x 30 s = 4 min) is not clipped to the 4-epoch one
    assert top.get_xlim()[1] == pytest.approx(8 * 30 / 3600)


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


def test_every_verdict_has_its_colour():
    # the forest plot colours markers by the analysis' verdict labels (protocol.plan.VERDICTS);
    # a label without a colour was drawn black ("effect ruled out" was once missing)
    from studykit.plotting import VERDICT_COLORS
    from studykit.protocol.plan import VERDICTS

    assert set(VERDICT_COLORS) == set(VERDICTS)
    assert len(set(VERDICT_COLORS.values())) == len(VERDICTS)
