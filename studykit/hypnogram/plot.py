"""A plot of one night's hypnogram (matplotlib; used in notebooks and the report)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from studykit.errors import HypnogramError
from studykit.hypnogram.stages import ART, MT, N1, N2, N3, UNS, R, W, stage_codes

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_hypnogram"]

# Rows from top to bottom: wake, REM, N1, N2, N3 (the usual clinical layout), and a row above
# wake for epochs that are not staged (movement, artefact, unscored).
_ROW = {UNS: 6, ART: 6, MT: 6, W: 5, R: 4, N1: 3, N2: 2, N3: 1}
_ROW_LABELS = {6: "MT/ART/UNS", 5: "W", 4: "R", 3: "N1", 2: "N2", 1: "N3"}
_REM_COLOR = "#c0392b"
_LINE_COLOR = "#2c3e50"
_BAD_COLOR = "#95a5a6"
# Epochs that are not staged, each its own colour on the top row (never drawn as wake).
_BAD_KINDS = (
    (MT, "movement", "#e67e22"),
    (ART, "artefact", "#8e44ad"),
    (UNS, "unscored", _BAD_COLOR),
)
_LIGHTS_COLOR = "#2980b9"


def plot_hypnogram(
    stages: pd.DataFrame | pd.Series | Any,
    *,
    ax: Axes | None = None,
    epoch_length: float = 30.0,
    title: str | None = None,
    lights_off_s: float | None = None,
    lights_on_s: float | None = None,
) -> Axes:
    """Plot one night's hypnogram as a step line, REM highlighted.

    Parameters
    ----------
    stages : pandas.DataFrame or array-like
        An epoch table of one night (``stage`` and optionally ``onset_s`` columns, as
        :func:`read_hypnogram` returns) or a sequence of stage labels.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure (10 x 3 in) is created when omitted.
    epoch_length : float, default 30.0
        Seconds per epoch (used when there is no ``onset_s`` column).
    title : str, optional
        Axes title.
    lights_off_s, lights_on_s : float, optional
        Lights off / on in seconds from the start of the recording. By default taken from
        the table's ``.attrs`` (what :func:`read_hypnogram` found in the file) or from its
        ``lights_off_s`` / ``lights_on_s`` columns. Drawn as dashed vertical lines; the time
        out of bed is shaded.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.

    Notes
    -----
    Stages are drawn top to bottom W, R, N1, N2, N3 (the layout of the AASM manual's
    examples and of YASA's ``plot_hypnogram``); REM epochs are a thick red segment; movement
    (orange), artefact (purple) and unscored (grey) epochs are marks on a separate row above
    wake, so that they are not mistaken for wake, with a legend entry for each kind present.
    The x axis is hours from the start of the recording.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> ax = plot_hypnogram(["W", "N1", "N2", "N3", "N3", "R", "W", "?"], title="demo")
    >>> ax.get_title()
    'demo'
    >>> ax = plot_hypnogram(["W", "N2", "MT", "N2", "W"], lights_off_s=30, lights_on_s=120)
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['movement', 'lights off', 'lights on']
    """
    import matplotlib.pyplot as plt

    if isinstance(stages, pd.DataFrame):
        if "stage" not in stages.columns:
            raise HypnogramError("plot_hypnogram: the table has no 'stage' column.")
        for key in ("recording_id", "participant_id", "period", "night"):
            if key in stages.columns and stages[key].nunique(dropna=False) > 1:
                raise HypnogramError(
                    f"plot_hypnogram draws one night, but the table has several values of "
                    f"{key!r}; select one night first."
                )
        codes = stage_codes(stages["stage"])
        lights_off_s = _lights(lights_off_s, stages, "lights_off_s")
        lights_on_s = _lights(lights_on_s, stages, "lights_on_s")
        if "onset_s" in stages.columns:
            start = pd.to_numeric(stages["onset_s"]).to_numpy(dtype=np.float64)
        else:
            start = np.arange(codes.size) * float(epoch_length)
    else:
        codes = stage_codes(stages)
        start = np.arange(codes.size) * float(epoch_length)
    if codes.size == 0:
        raise HypnogramError("plot_hypnogram: there is no epoch to plot.")
    hours = np.append(start, start[-1] + epoch_length) / 3600.0
    rows = np.array([_ROW[int(c)] for c in range(8)])[codes].astype(float)

    if ax is None:
        _, ax = plt.subplots(figsize=(10, 3))
    staged = np.where(rows < 6, rows, np.nan)
    ax.stairs(staged, hours, baseline=None, color=_LINE_COLOR, linewidth=1.2)
    rem = np.where(codes == R, rows, np.nan)
    ax.stairs(
        rem,
        hours,
        baseline=None,
        color=_REM_COLOR,
        linewidth=4,
        label="REM" if (codes == R).any() else None,
    )
    for code, label, color in _BAD_KINDS:
        kind = np.where(codes == code, rows, np.nan)
        if np.isfinite(kind).any():
            ax.stairs(kind, hours, baseline=None, color=color, linewidth=6, label=label)
    for value, label, end in ((lights_off_s, "lights off", 0), (lights_on_s, "lights on", 1)):
        if value is None or not np.isfinite(value):
            continue
        x = float(value) / 3600.0
        ax.axvline(x, color=_LIGHTS_COLOR, linestyle="--", linewidth=1.2, label=label)
        lo, hi = (hours[0], x) if end == 0 else (x, hours[-1])
        if hi > lo:
            ax.axvspan(lo, hi, color=_LIGHTS_COLOR, alpha=0.08, linewidth=0)
    ax.set_yticks(list(_ROW_LABELS), list(_ROW_LABELS.values()))
    ax.set_ylim(0.5, 6.5)
    ax.set_xlim(hours[0], hours[-1])
    ax.set_xlabel("Time from start of recording (h)")
    ax.set_ylabel("Stage")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if title is not None:
        ax.set_title(title)
    handles, labels = ax.get_legend_handles_labels()
    if labels:
        ax.legend(handles, labels, loc="upper right", fontsize="small", ncols=len(labels))
    return ax


def _lights(given: float | None, table: pd.DataFrame, name: str) -> float | None:
    """Lights from the argument, else the table's attrs (read_hypnogram), else its column."""
    if given is not None:
        return float(given)
    value = table.attrs.get(name)
    if value is None and name in table.columns:
        values = pd.to_numeric(table[name], errors="coerce").dropna().unique()
        value = values[0] if len(values) == 1 else None
    return float(value) if value is not None else None
