"""Figures of a study: CONSORT flow, trajectories, marginal means, forest plots, model
diagnostics, within-participant differences, hypnograms, sleepiness.

Every function takes tidy data frames with the columns named in the data dictionary and
returns a :class:`matplotlib.figure.Figure` built without ``pyplot`` (so no global figure
state and no GUI backend is touched); :func:`save_figure` writes it as PNG and SVG with fixed
metadata (``svg.hashsalt``, no date), so re-running gives byte-identical files, and labels
every figure of simulated data (a watermark on the figure, and the file's metadata).

seaborn gives the palette and draws the residual scatter of the diagnostics; figures whose
intervals come from a model (marginal means, forest plots) are drawn with matplotlib from
those intervals, so they show exactly what the tables report; the box plot and the jittered
points are matplotlib's too (seaborn 0.13's box plot uses an argument matplotlib 3.11
deprecates, its jitter draws from numpy's global random state: files would differ per run).
Colours: seaborn's colour-blind palette (:data:`COLORBLIND`), the reference arm first.
Numbers printed on figures use the tables' formatter (``studykit.tables.format_number`` /
``format_p``), so a figure and a table never print the same number differently.
"""

from __future__ import annotations

import logging
import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator
from scipy import stats

from studykit.errors import InputError
from studykit.hypnogram import plot_hypnogram
from studykit.models.multiplicity import adjusted_intervals
from studykit.protocol.plan import VERDICTS
from studykit.tables import format_number, format_p

__all__ = [
    "save_figure",
    "mark_simulated",
    "SIMULATED_LABEL",
    "plot_trajectories",
    "plot_emmeans",
    "plot_forest",
    "plot_consort_flow",
    "plot_within_differences",
    "plot_diagnostics",
    "plot_hypnograms",
    "plot_sleepiness",
    "COLORBLIND",
    "VERDICT_COLORS",
]

logger = logging.getLogger(__name__)


#: seaborn's "colorblind" palette (10 colours), as hex.
COLORBLIND: tuple[str, ...] = tuple(c.upper() for c in sns.color_palette("colorblind").as_hex())

#: Marker colour of each verdict in forest plots (the verdicts of protocol.plan.VERDICTS:
#: supported, effect ruled out, inconclusive).
VERDICT_COLORS: dict[str, str] = dict(
    zip(VERDICTS, (COLORBLIND[2], COLORBLIND[3], COLORBLIND[7]), strict=True)
)

#: Text of the watermark and of the file metadata of figures of simulated data.
SIMULATED_LABEL = "SIMULATED DATA - not evidence"

#: ``gid`` of the watermark artists (``<g id="simulated-watermark">`` in the SVG).
_WATERMARK_GID = "simulated-watermark"


def _palette(n: int) -> list[str]:
    return [COLORBLIND[i % len(COLORBLIND)] for i in range(max(n, 2))]


def _order(values: pd.Series, order: Sequence[object] | None) -> list:
    present = list(dict.fromkeys(v for v in values.tolist() if pd.notna(v)))
    if order is None:
        return sorted(present, key=str)
    return [v for v in order if v in present] + sorted(
        (v for v in present if v not in order), key=str
    )


def _require(data: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise InputError(
            f"Cannot draw {what}: column(s) {missing} missing. Columns are "
            f"{list(data.columns)[:25]}."
        )


def mark_simulated(fig: Figure) -> Figure:
    """Label a figure as showing simulated data: a diagonal watermark and a red footer.

    Parameters
    ----------
    fig : matplotlib.figure.Figure

    Returns
    -------
    matplotlib.figure.Figure
        The same figure (marked once, however often this is called).

    Examples
    --------
    >>> fig = mark_simulated(Figure(figsize=(3, 2)))
    >>> sorted(t.get_text() for t in fig.texts)
    ['SIMULATED DATA', 'SIMULATED DATA - not evidence']
    """
    if any(t.get_gid() == _WATERMARK_GID for t in fig.texts):
        return fig
    w, h = fig.get_size_inches()
    engine = fig.get_layout_engine()
    if isinstance(engine, ConstrainedLayoutEngine):
        strip = 0.2 / h  # keep the footer clear of the axes' labels
        engine.set(rect=(0.0, strip, 1.0, 1.0 - strip))
    fig.text(
        0.5,
        0.5,
        "SIMULATED DATA",
        fontsize=max(14.0, min(60.0, 7.0 * min(w, 1.6 * h))),
        color="#b00020",
        alpha=0.13,
        rotation=math.degrees(math.atan2(h, w)),
        ha="center",
        va="center",
        zorder=100,
        gid=_WATERMARK_GID,
    )
    fig.text(
        0.005,
        0.004,
        SIMULATED_LABEL,
        fontsize=7,
        color="#b00020",
        fontweight="bold",
        ha="left",
        va="bottom",
        zorder=100,
        gid=_WATERMARK_GID,
    )
    return fig


def save_figure(
    fig: Figure,
    directory: str | Path,
    name: str,
    *,
    simulated: bool,
    formats: Sequence[str] = ("png", "svg"),
    dpi: int = 150,
) -> dict[str, Path]:
    """Save a figure as PNG and SVG, deterministically; label simulated data.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    directory : str or Path
        Output directory (created if needed).
    name : str
        File stem.
    simulated : bool
        Whether the figure shows simulated data: then it gets the watermark of
        :func:`mark_simulated` and the files say so in their metadata (PNG ``Description``
        text chunk, SVG ``<dc:description>``). Keyword-only and without default, so no caller
        can forget it.
    formats : sequence of str, default ("png", "svg")
        Any of ``"png"``, ``"svg"``, ``"pdf"``.
    dpi : int, default 150
        Resolution of the PNG.

    Returns
    -------
    dict
        Format -> written path.

    Notes
    -----
    SVG ids are hashed with a fixed salt (``svg.hashsalt``) and the ``Date`` metadata is
    left out; the PNG carries no ``Software`` version. Same data, same library versions:
    same bytes.

    Examples
    --------
    >>> import tempfile
    >>> fig = Figure(figsize=(2, 2)); _ = fig.subplots().plot([0, 1], [0, 1])
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     a = save_figure(fig, tmp, "a", simulated=True)["svg"].read_bytes()
    ...     b = save_figure(fig, tmp, "b", simulated=True)["svg"].read_bytes()
    >>> a == b, b"simulated-watermark" in a
    (True, True)
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    note = {"Description": SIMULATED_LABEL} if simulated else {}
    meta: dict[str, dict[str, Any]] = {
        "png": {"Software": None, **note},
        "svg": {"Date": None, **note},
        "pdf": {
            "CreationDate": None,
            "ModDate": None,
            **({"Subject": SIMULATED_LABEL} if simulated else {}),
        },
    }
    if simulated:
        mark_simulated(fig)
    out: dict[str, Path] = {}
    # fixed rcParams while saving, for byte-identical SVG output
    with mpl.rc_context(
        {"svg.hashsalt": "studykit", "svg.fonttype": "path", "path.simplify": True}
    ):
        for fmt in formats:
            if fmt not in meta:
                raise InputError(f"Invalid figure format {fmt!r}. Expected one of {sorted(meta)}.")
            path = directory / f"{name}.{fmt}"
            fig.savefig(path, format=fmt, dpi=dpi, metadata=meta[fmt], bbox_inches=None)
            out[fmt] = path
    return out


# --------------------------------------------------------------------------------------
# individual trajectories
# --------------------------------------------------------------------------------------


def plot_trajectories(
    data: pd.DataFrame,
    *,
    outcome: str,
    arm: str = "treatment",
    time: str = "night",
    subject: str = "participant_id",
    period: str | None = "period",
    arm_order: Sequence[str] | None = None,
    time_order: Sequence[object] | None = None,
    label: str | None = None,
) -> Figure:
    """Individual trajectories of an outcome over nights, one panel per arm, with arm means.

    Parameters
    ----------
    data : pandas.DataFrame
        Long data: one row per subject x period x time point.
    outcome : str
        Column to plot.
    arm, time, subject : str
        Column names of the arm, the time point (x axis) and the subject.
    period : str or None, default "period"
        Period column: in a crossover a subject has one line per period. ``None`` or an
        absent column: one line per subject and arm.
    arm_order, time_order : sequence, optional
        Explicit orders (reference arm first; nights in protocol order).
    label : str, optional
        Axis label (e.g. from the dictionary: "N3 (slow-wave sleep) minutes (min)").

    Returns
    -------
    matplotlib.figure.Figure

    Notes
    -----
    Thin lines: one participant (and period); thick line with markers: the arm mean of
    the observed values at each time point (complete-case, descriptive; the model-based
    means are in :func:`plot_emmeans`).

    Examples
    --------
    >>> d = pd.DataFrame({"participant_id": ["P1", "P1", "P2", "P2"],
    ...     "period": [1, 1, 1, 1], "treatment": ["placebo", "placebo", "ketamine", "ketamine"],
    ...     "night": ["baseline", "post1"] * 2, "n3_min": [60.0, 62.0, 58.0, 70.0]})
    >>> fig = plot_trajectories(d, outcome="n3_min", arm_order=["placebo", "ketamine"],
    ...                         time_order=["baseline", "post1"])
    >>> len(fig.axes)
    2
    """
    _require(data, [outcome, arm, time, subject], "trajectories")
    arms = _order(data[arm], arm_order)
    times = _order(data[time], time_order)
    xpos = {t: i for i, t in enumerate(times)}
    colors = _palette(len(arms))
    keys = [subject] + ([period] if period and period in data.columns else [])
    fig = Figure(figsize=(3.2 * max(len(arms), 1) + 0.6, 3.6), layout="constrained")
    axes = fig.subplots(1, max(len(arms), 1), sharey=True, squeeze=False)[0]
    for ax, a, color in zip(axes, arms, colors, strict=False):
        sub = data[data[arm] == a]
        for _, g in sub.groupby(keys, sort=True):
            g = g[g[time].isin(xpos)]
            g = g.assign(_x=g[time].map(xpos)).sort_values("_x")
            ax.plot(g["_x"], g[outcome], color=color, alpha=0.3, linewidth=0.8)
        means = (
            sub.assign(_y=pd.to_numeric(sub[outcome], errors="coerce"))
            .groupby(time, sort=False)["_y"]
            .mean()
        )
        xs = [xpos[t] for t in times if t in means.index]
        ys = [means[t] for t in times if t in means.index]
        ax.plot(xs, ys, color=color, linewidth=2.5, marker="o", label=f"{a} mean")
        ax.set_title(str(a))
        ax.set_xticks(range(len(times)), [str(t) for t in times])
        ax.set_xlabel(str(time))
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(label or outcome)
    fig.suptitle(f"{label or outcome}: individual trajectories and arm means")
    return fig


# --------------------------------------------------------------------------------------
# estimated marginal means
# --------------------------------------------------------------------------------------


def plot_emmeans(
    emmeans: pd.DataFrame,
    *,
    arm: str = "treatment",
    time: str | None = "night",
    arm_order: Sequence[str] | None = None,
    time_order: Sequence[object] | None = None,
    label: str | None = None,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Estimated marginal means with confidence intervals by night and arm.

    Parameters
    ----------
    emmeans : pandas.DataFrame
        Marginal means (``studykit.models.emmeans.emmeans``): columns ``estimate,
        conf_low, conf_high`` and the factor columns ``arm`` and (optionally) ``time``.
    arm, time : str
        Factor columns; ``time=None`` (or absent) plots means by arm only.
    arm_order, time_order : sequence, optional
        Explicit orders.
    label, title : str, optional
        Y-axis label and title.
    ax : matplotlib.axes.Axes, optional
        Draw into this axes (e.g. one panel of a grid); default a new figure.

    Returns
    -------
    matplotlib.figure.Figure
        The new figure, or the figure of ``ax``.

    Notes
    -----
    Points are dodged horizontally per arm; bars are the confidence intervals of the
    marginal means as reported (unadjusted, level from the analysis).

    Examples
    --------
    >>> e = pd.DataFrame({"treatment": ["placebo", "ketamine"], "night": ["post1", "post1"],
    ...     "estimate": [60.0, 68.0], "conf_low": [55.0, 63.0], "conf_high": [65.0, 73.0]})
    >>> fig = plot_emmeans(e, arm_order=["placebo", "ketamine"])
    >>> len(fig.axes[0].lines) >= 2
    True
    """
    _require(emmeans, ["estimate", "conf_low", "conf_high", arm], "marginal means")
    use_time = time is not None and time in emmeans.columns
    arms = _order(emmeans[arm], arm_order)
    times = _order(emmeans[time], time_order) if use_time else [None]
    colors = _palette(len(arms))
    width = 0.24
    offsets = np.linspace(-width / 2, width / 2, len(arms)) if len(arms) > 1 else [0.0]
    if ax is None:
        fig = Figure(figsize=(max(4.0, 1.3 * len(times) + 2), 3.6), layout="constrained")
        ax = fig.subplots()
    else:
        root = ax.get_figure(root=True)
        if root is None:
            raise InputError("Cannot draw marginal means into an axes without a figure.")
        fig = root
    for a, color, off in zip(arms, colors, offsets, strict=False):
        sub = emmeans[emmeans[arm] == a]
        xs, ys, lo, hi = [], [], [], []
        for i, t in enumerate(times):
            row = sub if t is None else sub[sub[time] == t]
            if row.empty:
                continue
            r = row.iloc[0]
            xs.append(i + off)
            ys.append(float(r["estimate"]))
            lo.append(float(r["conf_low"]))
            hi.append(float(r["conf_high"]))
        ys_a = np.asarray(ys)
        err = np.vstack([ys_a - np.asarray(lo), np.asarray(hi) - ys_a]) if ys else None
        ax.errorbar(
            xs, ys, yerr=err, color=color, marker="o", capsize=3, linewidth=1.5, label=str(a)
        )
    ax.set_xticks(range(len(times)), ["" if t is None else str(t) for t in times])
    if use_time:
        ax.set_xlabel(str(time))
    ax.set_ylabel(label or "estimated marginal mean")
    ax.legend(title=arm, frameon=False, fontsize=7, title_fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or "Estimated marginal means with confidence intervals", fontsize=9)
    return fig


# --------------------------------------------------------------------------------------
# forest plot
# --------------------------------------------------------------------------------------

_RATIO_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)


def _ratio_ticks(lo: float, hi: float) -> list[float]:
    """Readable ticks of a log axis: 0.5, 1, 2 ... (powers of two) when at least three fit,
    1-2-5 per decade on wide ranges, round linear steps (0.8, 0.9, 1, 1.1) on narrow ones."""
    k0, k1 = math.floor(math.log2(lo)), math.ceil(math.log2(hi))
    if k1 - k0 > 7:
        return [t for t in _RATIO_TICKS if lo <= t <= hi]
    twos = [2.0**k for k in range(k0, k1 + 1) if lo <= 2.0**k <= hi]
    if len(twos) >= 3:
        return twos
    return [
        float(t)
        for t in MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
        if lo <= t <= hi
    ]


def _tick_label(v: float, _pos: object = None) -> str:
    return f"{v:g}"


def _kind(scale: object, unit: str) -> str:
    sc = str(scale or "").lower()
    if "ratio" in sc:
        return f"{sc} (log scale)"
    if "correlation" in sc:
        return "correlation"
    return f"difference ({unit})" if unit else "difference"


def _short_contrast(contrast: object, width: int = 58) -> str:
    text = str(contrast)
    if ", change from " in text:
        head, _, tail = text.partition(", change from ")
        text = f"{head}, change {tail}"
    return "\n".join(textwrap.wrap(text, width)[:2])


def plot_forest(
    hypotheses: pd.DataFrame,
    *,
    labels: Mapping[str, str] | None = None,
    units: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Figure:
    """Forest plot of one multiplicity family: estimates, adjusted intervals and verdicts.

    Parameters
    ----------
    hypotheses : pandas.DataFrame
        Rows of the hypothesis results table (``studykit.analysis.HYPOTHESIS_COLUMNS``),
        typically one multiplicity family. The adjusted intervals are computed from these
        rows by ``studykit.models.multiplicity.adjusted_intervals``, the function the results
        tables use, so figure and table agree by construction.
    labels : mapping, optional
        Display label per outcome (the dictionary's labels, e.g. "N3 (slow-wave sleep)
        minutes"); default the variable name.
    units : mapping, optional
        Unit per outcome (from the dictionary); differences in the same unit share a panel.
    title : str, optional
        Figure title; default names the family and its p-value adjustment.

    Returns
    -------
    matplotlib.figure.Figure
        One panel per kind of effect (differences per unit; rate ratios on a log axis with
        ticks 0.5, 1, 2 ...; correlations), one row per hypothesis x contrast in input
        order: the estimate (a diamond coloured by verdict), the unadjusted interval (thin
        black) and the multiplicity-adjusted interval (thick blue), a dashed line at no
        effect and, on the right, the estimate with its adjusted interval, the adjusted
        p-value and the verdict, formatted as in the tables.

    Examples
    --------
    >>> from studykit.analysis import HYPOTHESIS_COLUMNS
    >>> h = pd.DataFrame({c: [None] for c in HYPOTHESIS_COLUMNS})
    >>> h.loc[0, ["hypothesis_id", "outcome", "contrast", "scale", "estimate", "conf_low",
    ...           "conf_high", "conf_level", "df", "alternative", "adjust_method",
    ...           "multiplicity_family", "verdict"]] = [
    ...     "H1", "n3_min", "ketamine - placebo", "difference", 8.0, 2.0, 14.0, 0.95,
    ...     30.0, "two-sided", "none", "confirmatory", "supported"]
    >>> len(plot_forest(h, labels={"n3_min": "N3 minutes"}, units={"n3_min": "min"}).axes)
    1
    """
    if len(hypotheses) == 0:
        raise InputError("Cannot draw a forest plot: the hypothesis results table is empty.")
    h = hypotheses.reset_index(drop=True)
    adj = adjusted_intervals(h).reset_index(drop=True)
    labels = labels or {}
    units = units or {}
    keys = [
        _kind(h.loc[i, "scale"], units.get(str(h.loc[i, "outcome"]), "")) for i in range(len(h))
    ]
    panels = list(dict.fromkeys(keys))
    row_in, gap_in, top_in, foot_in = 0.5, 0.62, 0.95, 0.75
    sizes = [keys.count(k) for k in panels]
    height = sum(n * row_in + gap_in for n in sizes) + top_in + foot_in
    left_in, plot_in = 3.9, 3.4
    columns_in = (0.0, 1.75, 2.55)  # estimate [CI], adjusted p, verdict: offsets in inches
    width = left_in + plot_in + 0.25 + columns_in[-1] + 1.0
    fig = Figure(figsize=(width, height))
    text_x = (left_in + plot_in + 0.25) / width
    offsets = [c / width for c in columns_in]
    y_top = height - top_in
    family = str(h.loc[0, "multiplicity_family"] or "")
    methods = ", ".join(dict.fromkeys(str(m) for m in h["adjust_method"].dropna())) or "none"
    fig.suptitle(
        title or f"{family.capitalize()} hypotheses (p adjustment: {methods})",
        fontsize=10,
        x=0.02,
        ha="left",
        y=1 - 0.18 / height,
    )
    header_y = 1 - (top_in - 0.22) / height
    for x, text in zip(
        (text_x + o for o in offsets),
        ("Estimate [adjusted CI]", "Adjusted p", "Verdict"),
        strict=True,
    ):
        fig.text(x, header_y, text, fontsize=7.5, fontweight="bold", va="bottom")
    for key, n in zip(panels, sizes, strict=True):
        rows = [i for i, k in enumerate(keys) if k == key]
        ax = fig.add_axes(
            (left_in / width, (y_top - n * row_in) / height, plot_in / width, n * row_in / height)
        )
        y_top -= n * row_in + gap_in
        ratio = "ratio" in key
        null = 1.0 if ratio else 0.0
        values = [null]
        ticks = []
        # x in figure coordinates, y in the panel's rows: the text columns right of the plot
        row_tr = mpl.transforms.blended_transform_factory(fig.transFigure, ax.transData)
        for j, i in enumerate(rows):
            r = h.loc[i]
            y = n - 1 - j
            est, lo, hi = (
                float(r[c]) if pd.notna(r[c]) else math.nan
                for c in ("estimate", "conf_low", "conf_high")
            )
            alo, ahi = (
                float(adj.loc[i, c]) if pd.notna(adj.loc[i, c]) else math.nan
                for c in ("conf_low_adjusted", "conf_high_adjusted")
            )
            values += [
                v for v in (est, lo, hi, alo, ahi) if math.isfinite(v) and (v > 0 or not ratio)
            ]
            ax.hlines(y, alo, ahi, color=COLORBLIND[0], linewidth=6, alpha=0.45)
            ax.hlines(y, lo, hi, color="black", linewidth=1.2)
            verdict = str(r.get("verdict") or "")
            ax.plot(
                [est],
                [y],
                marker="D",
                color=VERDICT_COLORS.get(verdict, "black"),
                markeredgecolor="black",
                markersize=7,
                linestyle="none",
            )
            outcome = str(r["outcome"])
            ticks.append(
                (
                    y,
                    f"{r['hypothesis_id']}  {labels.get(outcome, outcome)}\n{_short_contrast(r['contrast'])}",
                )
            )
            p_adj = r.get("p_adjusted")
            cells = (
                f"{format_number(est)} [{format_number(alo)}, {format_number(ahi)}]",
                format_p(float(p_adj)) if p_adj is not None and pd.notna(p_adj) else "",
                verdict,
            )
            for x_off, cell in zip(offsets, cells, strict=True):
                fig.text(text_x + x_off, y, cell, fontsize=7.5, va="center", transform=row_tr)
        finite = [v for v in values if math.isfinite(v)]
        lo_v, hi_v = min(finite), max(finite)
        if ratio:
            ax.set_xscale("log")
            pad = (hi_v / lo_v) ** 0.06 if hi_v > lo_v else 1.2
            ax.set_xlim(lo_v / pad, hi_v * pad)
            ax.xaxis.set_major_locator(FixedLocator(_ratio_ticks(lo_v / pad, hi_v * pad)))
            ax.xaxis.set_major_formatter(FuncFormatter(_tick_label))
            ax.xaxis.set_minor_locator(NullLocator())
        else:
            pad = 0.06 * (hi_v - lo_v) if hi_v > lo_v else 1.0
            ax.set_xlim(lo_v - pad, hi_v + pad)
        ax.axvline(null, color="grey", linestyle="--", linewidth=0.8)
        ax.set_ylim(-0.6, n - 0.4)
        ax.set_yticks([y for y, _ in ticks], [t for _, t in ticks], fontsize=7.5)
        ax.tick_params(axis="x", labelsize=7.5)
        ax.set_xlabel(key, fontsize=8, labelpad=2)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    methods_ci = "; ".join(dict.fromkeys(str(m) for m in adj["ci_adjustment"].dropna()))
    levels = sorted({float(v) for v in h["conf_level"].dropna()})
    level = f"{levels[0]:.0%}" if len(levels) == 1 else "reported"
    fig.text(
        0.02,
        (foot_in - 0.12) / height,
        "\n".join(
            textwrap.wrap(
                f"Thin line: {level} CI; thick band: multiplicity-adjusted CI ({methods_ci}). "
                "Diamond colour: verdict (green supported, red effect ruled out, grey "
                "inconclusive). Dashed line: no effect.",
                150,
            )
        ),
        fontsize=7,
        va="top",
    )
    return fig


# --------------------------------------------------------------------------------------
# CONSORT flow diagram of a crossover
# --------------------------------------------------------------------------------------


def _box(
    ax: Axes,
    x: float,
    y: float,
    text: str,
    *,
    width: int = 34,
    color: str = "#f3f6fa",
    edge: str = "#4a5a6a",
) -> None:
    lines = []
    for part in text.split("\n"):
        lines += textwrap.wrap(part, width) or [""]
    ax.text(
        x,
        y,
        "\n".join(lines),
        ha="center",
        va="center",
        fontsize=7.5,
        bbox={
            "boxstyle": "round,pad=0.45",
            "facecolor": color,
            "edgecolor": edge,
            "linewidth": 0.8,
        },
    )


def _arrow(ax: Axes, x0: float, y0: float, x1: float, y1: float, text: str = "") -> None:
    ax.annotate(
        "",
        xy=(x1, y1),
        xytext=(x0, y0),
        arrowprops={"arrowstyle": "-|>", "color": "#4a5a6a", "linewidth": 0.8},
    )
    if text:
        ax.text(
            (x0 + x1) / 2 + 0.01,
            (y0 + y1) / 2,
            text,
            fontsize=7,
            ha="left",
            va="center",
            color="#333333",
            style="italic",
        )


def plot_consort_flow(
    flow: pd.DataFrame,
    *,
    washout: pd.DataFrame | None = None,
    analysed: pd.DataFrame | None = None,
    sequence_labels: Mapping[str, str] | None = None,
) -> Figure:
    """CONSORT flow diagram of a crossover trial, drawn from :func:`studykit.consort.crossover_flow`.

    Parameters
    ----------
    flow : pandas.DataFrame
        ``studykit.consort.crossover_flow`` output.
    washout : pandas.DataFrame, optional
        ``studykit.consort.washout`` output: the washout per sequence labels the arrow
        between periods.
    analysed : pandas.DataFrame, optional
        ``studykit.consort.analysed_by_period`` output of one hypothesis (the first one's
        rows are shown when several are given): participants analysed and
        participant-periods excluded, with the reasons, per sequence and period.
    sequence_labels : mapping, optional
        Display label per sequence code (e.g. ``{"KP": "Ketamine then placebo"}``).

    Returns
    -------
    matplotlib.figure.Figure
        Randomised participants on top, one column per sequence with a box per period
        (participants who received the period's treatment, nights recorded of planned,
        nights missing by night, the washout before it), participants lost before a period
        with the reasons in a red box and the analysed counts at the bottom.
        Participant counts and night counts are on separate, labelled lines.

    Examples
    --------
    >>> from studykit.consort import crossover_flow
    >>> roster = pd.DataFrame({"participant_id": ["P1", "P2"], "sequence": ["KP", "PK"]})
    >>> periods = pd.DataFrame({"participant_id": ["P1", "P1", "P2", "P2"], "period": [1, 2, 1, 2],
    ...     "treatment": ["ketamine", "placebo", "placebo", "ketamine"]})
    >>> fig = plot_consort_flow(crossover_flow(roster, periods))
    >>> any("Randomised" in t.get_text() for t in fig.axes[0].texts)
    True
    """
    _require(flow, ["step", "sequence", "period", "unit", "n", "reason"], "the CONSORT flow")
    labels = dict(sequence_labels or {})
    seqs = [s for s in dict.fromkeys(flow["sequence"]) if s != "all"]
    periods = sorted(int(p) for p in flow["period"].unique() if int(p) > 0)
    lost_before = [p for p in periods if ((flow["step"] == "lost") & (flow["period"] == p)).any()]
    hid = None
    if analysed is not None and len(analysed):
        hid = str(analysed["hypothesis_id"].iloc[0])
        analysed = analysed[analysed["hypothesis_id"] == hid]
    n_rows = 2 + len(periods) + len(lost_before) + (1.6 if hid is not None else 0)
    row_in = 1.05
    fig = Figure(figsize=(max(7.5, 3.8 * len(seqs)), row_in * n_rows + 0.5))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    step = row_in / (row_in * n_rows + 0.5)
    gap = 0.36 * step  # half the height reserved for a box

    def get(step_name: str, seq: str, period: int = 0) -> pd.DataFrame:
        return flow[
            (flow["step"] == step_name) & (flow["sequence"] == seq) & (flow["period"] == period)
        ]

    y = 1 - 0.65 * step
    total = get("randomised", "all")
    n_all = (
        int(total["n"].sum())
        if len(total)
        else int(flow.loc[flow["step"] == "randomised", "n"].sum())
    )
    _box(ax, 0.5, y, f"Randomised\n{n_all} participants", color="#e8eef6")
    xs = [(k + 0.5) / len(seqs) for k in range(len(seqs))]
    y_seq = y - step
    for x, s in zip(xs, seqs, strict=True):
        _arrow(ax, 0.5, y - gap, x, y_seq + gap)
        n = int(get("randomised", s)["n"].sum())
        name = f"Sequence {s}" + (f": {labels[s]}" if s in labels else "")
        _box(ax, x, y_seq, f"{name}\nallocated: {n} participants")
    for x, s in zip(xs, seqs, strict=True):
        yy = y_seq
        for p in periods:
            if p in lost_before:
                y_lost = yy - step
                lost = get("lost", s, p)
                if len(lost):
                    n_lost = int(lost["n"].sum())
                    why = "; ".join(
                        str(r) if len(lost) == 1 else f"{r} ({int(c)})"
                        for r, c in zip(lost["reason"], lost["n"], strict=True)
                    )
                    _box(
                        ax,
                        x + 0.24 / len(seqs),
                        y_lost,
                        f"Lost before period {p}: {n_lost} "
                        f"participant{'s' if n_lost != 1 else ''}\n{why}",
                        width=32,
                        color="#fdecea",
                        edge="#b00020",
                    )
                y_p = yy - 2 * step
            else:
                y_p = yy - step
            _arrow(ax, x - 0.12 / len(seqs), yy - gap, x - 0.12 / len(seqs), y_p + gap)
            got = get("received", s, p)
            treat = str(got["treatment"].iloc[0]) if len(got) else ""
            lines = [f"Period {p}: {treat}"]
            w = (
                washout[(washout["sequence"] == s) & (washout["to_period"] == p)]
                if washout is not None and len(washout)
                else pd.DataFrame()
            )
            if len(w) and int(w["n"].iloc[0]) > 0:
                lines.append(
                    f"after a washout of {format_number(float(w['median_days'].iloc[0]), 1)} days "
                    f"(median; {format_number(float(w['min_days'].iloc[0]), 1)}-"
                    f"{format_number(float(w['max_days'].iloc[0]), 1)})"
                )
            lines.append(f"received: {int(got['n'].sum())} participants")
            planned = get("nights planned", s, p)
            if len(planned):
                rec = int(get("nights recorded", s, p)["n"].sum())
                lines.append(f"nights recorded: {rec} of {int(planned['n'].sum())} planned")
                miss = get("nights missing", s, p)
                if len(miss):
                    lines.append(
                        "missing nights: "
                        + ", ".join(
                            f"{str(r).replace(' not recorded', '')} {int(c)}"
                            for r, c in zip(miss["reason"], miss["n"], strict=True)
                        )
                    )
            _box(ax, x - 0.12 / len(seqs), y_p, "\n".join(lines), width=44)
            yy = y_p
        if hid is not None and analysed is not None:
            a = analysed[analysed["sequence"] == s]
            y_a = yy - 1.25 * step
            _arrow(ax, x - 0.12 / len(seqs), yy - gap, x - 0.12 / len(seqs), y_a + gap)
            parts = [f"Analysed for {hid}"]
            for p in periods:
                ap = a[a["period"] == p]
                if not len(ap):
                    continue
                r = ap.iloc[0]
                text = f"period {p}: {int(r['participants'])} participants"
                if int(r["periods_excluded"]):
                    why = re.sub(r" \([^()]*strategy[^()]*\)", "", str(r["excluded_reasons"]))
                    text += f"; {int(r['periods_excluded'])} excluded: {why}"
                parts.append(text)
            _box(
                ax,
                x - 0.12 / len(seqs),
                y_a,
                "\n".join(parts),
                width=48,
                color="#eef6ee",
                edge="#2e6b3a",
            )
    return fig


# --------------------------------------------------------------------------------------
# within-participant differences
# --------------------------------------------------------------------------------------


def plot_within_differences(
    differences: pd.DataFrame,
    *,
    label: str,
    sequence_order: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Within-participant treatment differences by sequence (box plot and points).

    Parameters
    ----------
    differences : pandas.DataFrame
        ``studykit.consort.within_participant_differences`` output (``sequence,
        difference``).
    label : str
        What the difference is, with its unit (x-axis label).
    sequence_order : sequence of str, optional
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> w = pd.DataFrame({"sequence": ["KP", "KP", "PK", "PK"], "difference": [4.0, 6, 1, -2]})
    >>> len(plot_within_differences(w, label="N3 (min)").axes)
    1
    """
    _require(differences, ["sequence", "difference"], "within-participant differences")
    order = _order(differences["sequence"].astype(str), sequence_order)
    d = differences.assign(sequence=differences["sequence"].astype(str))
    fig = Figure(figsize=(6.0, 1.0 + 0.7 * max(len(order), 1)), layout="constrained")
    ax = fig.subplots()
    # the box plot is matplotlib's: seaborn 0.13's passes the deprecated ``vert`` argument
    ax.boxplot(
        [d.loc[d["sequence"] == s_, "difference"].to_numpy(dtype=float) for s_ in order],
        positions=list(range(len(order))),
        orientation="horizontal",
        widths=0.5,
        showfliers=False,
        patch_artist=True,
        boxprops={"facecolor": "#dde6f0", "linewidth": 0.8},
        medianprops={"color": "#333333"},
    )
    # points with a fixed (seeded) vertical jitter: the same data give the same file
    rng = np.random.default_rng(0)
    for k, s_ in enumerate(order):
        x = d.loc[d["sequence"] == s_, "difference"].to_numpy(dtype=float)
        ax.scatter(
            x, k + rng.uniform(-0.15, 0.15, len(x)), s=16, color=COLORBLIND[0], alpha=0.8, zorder=3
        )
    ax.axvline(0, color="grey", linestyle="--", linewidth=0.8)
    ax.set_yticks(range(len(order)), order)
    ax.set_xlabel(label)
    ax.set_ylabel("sequence")
    ax.set_title(title or "Within-participant differences by sequence", fontsize=9)
    return fig


# --------------------------------------------------------------------------------------
# model diagnostics
# --------------------------------------------------------------------------------------


def _random_effects(model: Any) -> dict[str, np.ndarray]:
    """Grouping factor (and term) -> conditional modes of the random effects."""
    re = model.ranef() if callable(getattr(model, "ranef", None)) else model.ranef
    if isinstance(re, pd.Series):
        return {f"{getattr(model, 'group', 'group')}": re.to_numpy(dtype=float)}
    out = {}
    for group, g in re.groupby("group", sort=False):
        for col in [c for c in g.columns if c not in ("group", "level")]:
            name = str(group) if col == "(Intercept)" else f"{group}: {col}"
            out[name] = g[col].to_numpy(dtype=float)
    return out


def _conditional_fit(model: Any, data: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, str]:
    """Fitted values (conditional on the random effects) and residuals of a fitted model.

    LMM: ``y - (X beta + Z b)``. GLMM: Pearson residuals ``(y - mu) / sqrt(V(mu))`` with
    ``mu = exp(X beta + b)`` (log link; Poisson ``V = mu``, negative binomial
    ``V = mu + mu^2 / theta``).
    """
    eta = model.design.X @ model.beta
    y = pd.to_numeric(data[model.outcome], errors="coerce").to_numpy(dtype=float)
    re = model.ranef() if callable(getattr(model, "ranef", None)) else None
    if re is not None:
        for group, g in re.groupby("group", sort=False):
            parts = str(group).split(":")
            key = data[parts].astype(str).agg(":".join, axis=1)
            for col in [c for c in g.columns if c not in ("group", "level")]:
                b = key.map(dict(zip(g["level"].astype(str), g[col], strict=True))).to_numpy(
                    dtype=float
                )
                x = (
                    1.0
                    if col == "(Intercept)"
                    else pd.to_numeric(data[col], errors="coerce").to_numpy(dtype=float)
                )
                eta = eta + b * x
        return eta, y - eta, "residual"
    b = data[model.group].astype(str).map(model.ranef.rename(index=str)).to_numpy(dtype=float)
    mu = np.exp(eta + b)
    theta = getattr(model, "theta", None)
    var = mu + (mu**2 / theta if theta else 0.0)
    return mu, (y - mu) / np.sqrt(var), "Pearson residual"


def plot_diagnostics(model: Any, data: pd.DataFrame, *, title: str) -> Figure:
    """Residuals vs fitted, normal QQ of the residuals and of the random effects.

    Parameters
    ----------
    model : LMMResult or GLMMResult
        A fitted model of ``studykit.models`` (``design.X``, ``beta``, ``outcome``, ``ranef``).
    data : pandas.DataFrame
        The data the model was fitted to, in the fitted row order (``HypothesisFit.data``).
    title : str
        Figure title (hypothesis and outcome).

    Returns
    -------
    matplotlib.figure.Figure
        Three panels. Residuals are conditional on the random effects (Pearson residuals
        for count models); QQ plots compare sorted values with normal quantiles at
        ``(i - 0.5) / n``, with a line through the quartiles.
    """
    fitted, resid, what = _conditional_fit(model, data)
    ok = np.isfinite(fitted) & np.isfinite(resid)
    fitted, resid = fitted[ok], resid[ok]
    fig = Figure(figsize=(11.0, 3.3), layout="constrained")
    a1, a2, a3 = fig.subplots(1, 3)
    sns.scatterplot(
        x=fitted,
        y=resid,
        ax=a1,
        s=12,
        color=COLORBLIND[0],
        edgecolor="none",
        alpha=0.7,
        rasterized=True,  # hundreds of points: a bitmap inside the SVG keeps it small
    )
    a1.axhline(0, color="grey", linestyle="--", linewidth=0.8)
    a1.set_xlabel("fitted value" + (" (mean)" if what.startswith("Pearson") else ""))
    a1.set_ylabel(what)
    a1.set_title("Residuals vs fitted", fontsize=9)
    _qq(a2, {what: resid})
    a2.set_title(f"Normal QQ: {what}s", fontsize=9)
    _qq(a3, _random_effects(model))
    a3.set_title("Normal QQ: random effects", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


def _qq(ax: Axes, series: Mapping[str, np.ndarray]) -> None:
    for (name, v), color in zip(series.items(), COLORBLIND, strict=False):
        v = np.sort(np.asarray(v, dtype=float)[np.isfinite(v)])
        if len(v) < 2:
            continue
        q = stats.norm.ppf((np.arange(1, len(v) + 1) - 0.5) / len(v))
        ax.plot(
            q, v, "o", markersize=3, color=color, label=f"{name} (n = {len(v)})", rasterized=True
        )
        q1, q3 = np.quantile(v, [0.25, 0.75])
        z1, z3 = stats.norm.ppf([0.25, 0.75])
        slope = (q3 - q1) / (z3 - z1)
        ax.plot(q[[0, -1]], q1 + slope * (q[[0, -1]] - z1), color=color, linewidth=0.8)
    ax.set_xlabel("normal quantile")
    ax.set_ylabel("sample quantile")
    ax.legend(fontsize=7, frameon=False)


# --------------------------------------------------------------------------------------
# hypnograms
# --------------------------------------------------------------------------------------


def plot_hypnograms(
    epochs: pd.DataFrame,
    *,
    participant_id: str,
    period: int | None = None,
    nights: Sequence[str] = ("baseline", "post1"),
    epoch_length: float = 30.0,
) -> Figure:
    """One participant's hypnograms, e.g. baseline night vs first night after infusion.

    Parameters
    ----------
    epochs : pandas.DataFrame
        Epoch table (columns ``participant_id, period, night, epoch, stage``).
    participant_id : str
        Participant to show.
    period : int, optional
        Period (crossover); default the participant's first period with all ``nights``.
    nights : sequence of str, default ("baseline", "post1")
        Nights to stack, top to bottom.
    epoch_length : float, default 30.0
        Seconds per epoch.

    Returns
    -------
    matplotlib.figure.Figure
        One panel per night drawn by ``studykit.hypnogram.plot_hypnogram``, on a shared
        time axis long enough for the longest night.

    Examples
    --------
    >>> e = pd.DataFrame({"participant_id": "P1", "period": 1,
    ...     "night": ["baseline"] * 4 + ["post1"] * 6, "epoch": [0, 1, 2, 3, 0, 1, 2, 3, 4, 5],
    ...     "stage": ["W", "N1", "N2", "N3", "W", "N2", "N3", "R", "R", "W"]})
    >>> fig = plot_hypnograms(e, participant_id="P1")
    >>> len(fig.axes), bool(fig.axes[0].get_xlim()[1] == 6 * 30 / 3600)
    (2, True)
    """
    _require(epochs, ["participant_id", "night", "stage"], "hypnograms")
    sub = epochs[epochs["participant_id"] == participant_id]
    if sub.empty:
        raise InputError(
            f"Cannot draw hypnograms: participant {participant_id!r} has no epochs. "
            f"Participants with epochs: {sorted(map(str, epochs['participant_id'].unique()))[:10]}."
        )
    if "period" in sub.columns:
        if period is None:
            for p in sorted(sub["period"].dropna().unique()):
                if set(nights) <= set(sub.loc[sub["period"] == p, "night"]):
                    period = p
                    break
            else:
                period = sorted(sub["period"].dropna().unique())[0]
        sub = sub[sub["period"] == period]
    fig = Figure(figsize=(8, 2.0 * len(nights) + 0.6), layout="constrained")
    axes = fig.subplots(len(nights), 1, sharex=True, squeeze=False)[:, 0]
    longest = 0.0
    for ax, night in zip(axes, nights, strict=True):
        night_epochs = sub[sub["night"] == night]
        if "epoch" in night_epochs.columns:
            night_epochs = night_epochs.sort_values("epoch")
        title = f"{participant_id}, period {period}, night {night}"
        if night_epochs.empty:
            ax.text(0.5, 0.5, f"no epochs for night {night}", ha="center", transform=ax.transAxes)
            ax.set_title(title, fontsize=9)
            continue
        plot_hypnogram(
            night_epochs["stage"].astype(str).tolist(),
            ax=ax,
            epoch_length=epoch_length,
            title=title,
        )
        ax.title.set_fontsize(9)
        longest = max(longest, len(night_epochs) * epoch_length / 3600.0)
    if longest > 0:
        axes[0].set_xlim(0, longest)  # shared: every night fits, none is clipped
    return fig


# --------------------------------------------------------------------------------------
# daytime sleepiness
# --------------------------------------------------------------------------------------


def plot_sleepiness(
    diary: pd.DataFrame,
    *,
    outcome: str = "kss",
    day: str = "day",
    arm: str = "treatment",
    days: Sequence[int] = (0, 1, 2, 3, 4),
    arm_order: Sequence[str] | None = None,
    label: str | None = "Karolinska Sleepiness Scale (1-9)",
    conf_level: float = 0.95,
) -> Figure:
    """Daytime sleepiness over days after infusion: arm means with t-based CIs.

    Parameters
    ----------
    diary : pandas.DataFrame
        Diary rows joined with the period's treatment (columns ``day``, ``arm``,
        ``outcome``).
    outcome, day, arm : str
        Column names.
    days : sequence of int, default 0-4
        Days to show (0 = baseline day before the infusion).
    arm_order : sequence of str, optional
        Explicit arm order (placebo first).
    label : str, optional
        Y-axis label.
    conf_level : float, default 0.95
        Level of the descriptive intervals ``mean +/- t(n-1) SD / sqrt(n)``.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> d = pd.DataFrame({"day": [0, 0, 1, 1] * 2, "kss": [3, 4, 6, 7, 3, 3, 4, 4],
    ...                   "treatment": ["ketamine"] * 4 + ["placebo"] * 4})
    >>> len(plot_sleepiness(d, arm_order=["placebo", "ketamine"]).axes[0].lines) >= 2
    True
    """
    _require(diary, [outcome, day, arm], "daytime sleepiness")
    d = diary[diary[day].isin(list(days))]
    arms = _order(d[arm], arm_order)
    colors = _palette(len(arms))
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    offsets = np.linspace(-0.08, 0.08, len(arms)) if len(arms) > 1 else [0.0]
    for a, color, off in zip(arms, colors, offsets, strict=False):
        sub = d[d[arm] == a]
        xs, ys, err = [], [], []
        for k in days:
            x = pd.to_numeric(sub.loc[sub[day] == k, outcome], errors="coerce").dropna()
            if x.empty:
                continue
            n = len(x)
            m = float(x.mean())
            half = (
                float(stats.t.ppf(0.5 + conf_level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
                if n > 1
                else 0.0
            )
            xs.append(k + off)
            ys.append(m)
            err.append(half)
        ax.errorbar(xs, ys, yerr=err, color=color, marker="o", capsize=3, label=str(a))
    ax.set_xticks(list(days), [str(k) for k in days])
    ax.set_xlabel("day after infusion (0 = baseline)")
    ax.set_ylabel(label or outcome)
    ax.legend(title=arm, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"Daytime sleepiness: mean and {conf_level:.0%} CI per day")
    return fig
