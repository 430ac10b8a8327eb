"""Figures of a study: trajectories, marginal means, forest plot, hypnograms, sleepiness.

Every function takes tidy data frames with the columns named in the data dictionary and
returns a :class:`matplotlib.figure.Figure` built without ``pyplot`` (so no global figure
state and no GUI backend is touched); :func:`save_figure` writes it as PNG and SVG with fixed
metadata (``svg.hashsalt``, no date), so re-running gives byte-identical files.

Colours come from seaborn's colour-blind palette (:data:`COLORBLIND`), the reference arm
(placebo) first.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from studykit.errors import InputError
from studykit.models.multiplicity import adjusted_intervals

__all__ = [
    "save_figure",
    "plot_trajectories",
    "plot_emmeans",
    "plot_forest",
    "plot_hypnograms",
    "plot_sleepiness",
    "HYPNOGRAM_ORDER",
    "COLORBLIND",
]

logger = logging.getLogger(__name__)

#: Vertical order of stages in a hypnogram, top to bottom (wake on top, N3 at the bottom).
HYPNOGRAM_ORDER: tuple[str, ...] = ("W", "R", "N1", "N2", "N3")

#: rcParams fixed while saving, for byte-identical SVG output.
_SAVE_RC = {"svg.hashsalt": "studykit", "svg.fonttype": "path", "path.simplify": True}


#: seaborn's "colorblind" palette (10 colours), as hex: fixed here so drawing a figure does
#: not import seaborn (about a second of start-up) for eight numbers.
COLORBLIND = (
    "#0173B2",
    "#DE8F05",
    "#029E73",
    "#D55E00",
    "#CC78BC",
    "#CA9161",
    "#FBAFE4",
    "#949494",
    "#ECE133",
    "#56B4E9",
)


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


def save_figure(
    fig: Figure,
    directory: str | Path,
    name: str,
    *,
    formats: Sequence[str] = ("png", "svg"),
    dpi: int = 150,
) -> dict[str, Path]:
    """Save a figure as PNG and SVG, deterministically.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    directory : str or Path
        Output directory (created if needed).
    name : str
        File stem.
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
    ...     a = save_figure(fig, tmp, "a")["svg"].read_bytes()
    ...     b = save_figure(fig, tmp, "b")["svg"].read_bytes()
    >>> a == b
    True
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {
        "png": {"Software": None},
        "svg": {"Date": None},
        "pdf": {"CreationDate": None, "ModDate": None},
    }
    out: dict[str, Path] = {}
    with mpl.rc_context(_SAVE_RC):
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
        ax.set_xlabel(time)
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
        fig = ax.get_figure()
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
        ax.set_xlabel(time)
    ax.set_ylabel(label or "estimated marginal mean")
    ax.legend(title=arm, frameon=False, fontsize=7, title_fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or "Estimated marginal means with confidence intervals", fontsize=9)
    return fig


# --------------------------------------------------------------------------------------
# forest plot
# --------------------------------------------------------------------------------------


def _forest_panel_key(scale: object, unit: str) -> str:
    sc = str(scale or "").lower()
    if "ratio" in sc:
        return f"{sc} (log scale)"
    if sc in ("", "difference", "mean difference"):
        return f"difference ({unit})" if unit else "difference"
    return sc


def plot_forest(
    hypotheses: pd.DataFrame,
    *,
    adjusted: pd.DataFrame | None = None,
    units: Mapping[str, str] | None = None,
) -> Figure:
    """Forest plot of the hypothesis effects with multiplicity-adjusted intervals.

    Parameters
    ----------
    hypotheses : pandas.DataFrame
        Hypothesis results (contract columns, see ``studykit.tables.HYPOTHESIS_COLUMNS``).
    adjusted : pandas.DataFrame, optional
        Adjusted intervals (columns ``conf_low_adjusted, conf_high_adjusted``) in the same
        row order, e.g. from ``AnalysisResults.adjusted_intervals()``; computed with
        ``studykit.models.multiplicity.adjusted_intervals`` when not given.
    units : mapping, optional
        Unit per outcome (from the dictionary): differences in the same unit share a panel.

    Returns
    -------
    matplotlib.figure.Figure
        One panel per kind of effect (differences per unit, rate ratios on a log axis,
        correlations), one row per hypothesis x contrast in the input order: the point
        estimate, the unadjusted interval (thin black) and the adjusted interval (thick
        blue), a dashed line at no effect (0, or 1 for ratios) and, on the right, the
        estimate with its adjusted interval and adjusted p-value.

    Examples
    --------
    >>> from studykit.tables import HYPOTHESIS_COLUMNS
    >>> h = pd.DataFrame({c: [None] for c in HYPOTHESIS_COLUMNS})
    >>> h.loc[0, ["hypothesis_id", "outcome", "contrast", "scale", "estimate", "conf_low",
    ...           "conf_high", "conf_level", "df", "alternative", "adjust_method"]] = [
    ...     "H1", "n3_min", "ketamine - placebo", "difference", 8.0, 2.0, 14.0, 0.95,
    ...     30.0, "two-sided", "none"]
    >>> len(plot_forest(h).axes)
    1
    """
    import textwrap

    if len(hypotheses) == 0:
        raise InputError("Cannot draw a forest plot: the hypothesis results table is empty.")
    h = hypotheses.reset_index(drop=True)
    adj = adjusted_intervals(h) if adjusted is None else adjusted.reset_index(drop=True)
    if len(adj) != len(h):
        raise InputError(
            f"Adjusted intervals have {len(adj)} rows for {len(h)} hypothesis rows; pass them "
            "in the same row order."
        )
    units = units or {}
    keys = [
        _forest_panel_key(h.loc[i, "scale"], units.get(str(h.loc[i, "outcome"]), ""))
        for i in range(len(h))
    ]
    panels = list(dict.fromkeys(keys))
    row_in = 0.42  # inches per row
    gap_in = 0.75  # inches for a panel's x axis and title
    sizes = [keys.count(k) for k in panels]
    height = sum(n * row_in + gap_in for n in sizes) + 0.5
    fig = Figure(figsize=(10.0, height))
    ratios = []
    for n in sizes:
        ratios += [n * row_in, gap_in]
    gs = fig.add_gridspec(
        len(ratios),
        1,
        height_ratios=ratios,
        hspace=0.0,
        left=0.37,
        right=0.75,
        top=1 - 0.45 / height,
        bottom=0.02,
    )
    for p, key in enumerate(panels):
        ax = fig.add_subplot(gs[2 * p, 0])
        rows = [i for i, k in enumerate(keys) if k == key]
        ratio = "ratio" in key
        null = 1.0 if ratio else 0.0
        values = [null]
        labels = []
        for j, i in enumerate(rows):
            r = h.loc[i]
            y = len(rows) - 1 - j
            est = float(r["estimate"]) if pd.notna(r["estimate"]) else math.nan
            lo, hi = (
                float(r[c]) if pd.notna(r[c]) else math.nan for c in ("conf_low", "conf_high")
            )
            alo, ahi = (
                float(adj.loc[i, c]) if pd.notna(adj.loc[i, c]) else math.nan
                for c in ("conf_low_adjusted", "conf_high_adjusted")
            )
            values += [
                v for v in (est, lo, hi, alo, ahi) if math.isfinite(v) and (v > 0 or not ratio)
            ]
            ax.hlines(y, alo, ahi, color="C0", linewidth=5, alpha=0.45)
            ax.hlines(y, lo, hi, color="black", linewidth=1.2)
            ax.plot([est], [y], marker="D", color="black", markersize=5, linestyle="none")
            contrast = textwrap.shorten(str(r["contrast"]), width=70, placeholder=" ...")
            labels.append(
                (
                    y,
                    f"{r['hypothesis_id']} {r['outcome']}\n"
                    + "\n".join(textwrap.wrap(contrast, 44)[:2]),
                )
            )
            p_adj = r.get("p_adjusted")
            text = f"{est:.3g} [{alo:.3g}, {ahi:.3g}]"
            if p_adj is not None and pd.notna(p_adj):
                text += f"  p adj {float(p_adj):.3g}"
            ax.text(1.02, y, text, transform=ax.get_yaxis_transform(), fontsize=7, va="center")
        lo_v, hi_v = min(values), max(values)
        if ratio:
            ax.set_xscale("log")
            pad = (hi_v / lo_v) ** 0.06 if hi_v > lo_v else 1.2
            ax.set_xlim(lo_v / pad, hi_v * pad)
        else:
            pad = 0.06 * (hi_v - lo_v) if hi_v > lo_v else 1.0
            ax.set_xlim(lo_v - pad, hi_v + pad)
        ax.axvline(null, color="grey", linestyle="--", linewidth=0.8)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_yticks([y for y, _ in labels], [t for _, t in labels], fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlabel(key, fontsize=8, labelpad=2)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    fig.suptitle(
        "Hypothesis effects: estimate, unadjusted CI (thin), multiplicity-adjusted CI (thick)",
        fontsize=9,
    )
    return fig


# --------------------------------------------------------------------------------------
# hypnograms
# --------------------------------------------------------------------------------------


def _fallback_plot_hypnogram(stages: Sequence[str], *, ax, epoch_length: float, title):
    """Step plot of a hypnogram (W top ... N3 bottom); MT/ART/UNS drawn as gaps."""
    level = {s: i for i, s in enumerate(reversed(HYPNOGRAM_ORDER))}
    y = np.array([level.get(str(s), np.nan) for s in stages], dtype=float)
    hours = np.arange(len(y) + 1) * epoch_length / 3600.0
    ax.step(hours, np.append(y, y[-1] if len(y) else np.nan), where="post", color="black", lw=0.8)
    rem = np.where(np.array([str(s) for s in stages]) == "R", y, np.nan)
    ax.step(hours, np.append(rem, np.nan), where="post", color="C3", lw=2.5)
    ax.set_yticks(range(len(HYPNOGRAM_ORDER)), list(reversed(HYPNOGRAM_ORDER)))
    ax.set_xlabel("hours from recording start")
    if title:
        ax.set_title(title, fontsize=9)
    return ax


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

    Notes
    -----
    Uses ``studykit.hypnogram.plot_hypnogram`` when available, else a step plot with
    stages ordered W, R, N1, N2, N3 from the top (movement, artefact and unscored epochs
    left as gaps).

    Examples
    --------
    >>> e = pd.DataFrame({"participant_id": "P1", "period": 1,
    ...     "night": ["baseline"] * 4 + ["post1"] * 4, "epoch": [0, 1, 2, 3] * 2,
    ...     "stage": ["W", "N1", "N2", "N3", "W", "N2", "N3", "R"]})
    >>> len(plot_hypnograms(e, participant_id="P1").axes)
    2
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
    try:
        from studykit.hypnogram import plot_hypnogram as _plot
    except ImportError:
        _plot = None
    fig = Figure(figsize=(8, 2.0 * len(nights) + 0.6), layout="constrained")
    axes = fig.subplots(len(nights), 1, sharex=True, squeeze=False)[:, 0]
    for ax, night in zip(axes, nights, strict=True):
        night_epochs = sub[sub["night"] == night]
        if "epoch" in night_epochs.columns:
            night_epochs = night_epochs.sort_values("epoch")
        stages = night_epochs["stage"].astype(str).tolist()
        title = f"{participant_id}, period {period}, night {night}"
        if not stages:
            ax.text(0.5, 0.5, f"no epochs for night {night}", ha="center", transform=ax.transAxes)
            ax.set_title(title, fontsize=9)
            continue
        if _plot is not None:
            _plot(stages, ax=ax, epoch_length=epoch_length, title=title)
        else:
            _fallback_plot_hypnogram(stages, ax=ax, epoch_length=epoch_length, title=title)
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
    from scipy import stats

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
