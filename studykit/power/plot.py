"""The power-curve figure."""

from __future__ import annotations

from typing import Any

__all__ = ["plot_power_curve"]


def plot_power_curve(result: Any, *, ax: Any = None, target: float | None = 0.8) -> Any:
    """Power against the number of participants, one line per hypothesis x contrast.

    Parameters
    ----------
    result : PowerResult
    ax : matplotlib.axes.Axes, optional
        Draw into this axes (default: a new figure).
    target : float or None, default 0.8
        Draw a dashed horizontal line at this power.

    Returns
    -------
    matplotlib.figure.Figure

    Notes
    -----
    Points are the simulated power, error bars the Clopper-Pearson 95% intervals; the title
    states the number of replicates and that the data are simulated.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    else:
        fig = ax.figure
    t = result.table
    multi = t.groupby("hypothesis_id", sort=False)["contrast"].nunique()
    groups = list(t.groupby(["hypothesis_id", "contrast"], sort=False))
    ns = sorted(t["n"].unique())
    gap = min(np.diff(ns)) if len(ns) > 1 else 1.0
    for i, ((hid, contrast), g) in enumerate(groups):
        g = g.sort_values("n")
        label = (
            f"{hid}: {contrast}"
            if multi[hid] > 1
            else f"{hid} ({g['outcome'].iloc[0]}, {g['alternative'].iloc[0]}, "
            f"alpha {g['alpha'].iloc[0]:g}, {g['adjust_method'].iloc[0]})"
        )
        dodge = (i - (len(groups) - 1) / 2) * 0.04 * gap  # keep intervals apart
        yerr = [g["power"] - g["conf_low"], g["conf_high"] - g["power"]]
        ax.errorbar(g["n"] + dodge, g["power"], yerr=yerr, marker="o", capsize=3, label=label)
    if target is not None:
        ax.axhline(target, color="0.5", linestyle="--", linewidth=1)
    ax.set_xlabel("participants (n)")
    ax.set_ylabel("power")
    ax.set_ylim(0, 1)
    reps = result.settings.get("reps", "")
    ax.set_title(f"Power by simulation ({reps} SIMULATED replicates per n; 95% CI)", fontsize=10)
    ax.set_xticks(ns)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    ax.grid(alpha=0.3)
    if hasattr(result, "assumptions"):
        a = result.assumptions()
        lines = [
            f"{r.hypothesis_id}: assumed effect {r.assumed_effect:.3g} ({r.effect_origin}"
            f"{', pilot 95% CI ' + r.effect_pilot_ci if r.effect_pilot_ci else ''}); "
            f"{r.true_model}"
            for r in a.drop_duplicates(["hypothesis_id", "contrast"]).itertuples()
        ]
        lines.append(
            f"seed {result.settings.get('seed')}, {reps} replicates per n, common random "
            "numbers across n; alpha and multiplicity as in the legend"
        )
        import textwrap

        wrapped = [textwrap.fill(x, 110) for x in lines]
        fig.text(0.0, -0.02, "\n".join(wrapped), fontsize=6, va="top", ha="left")
    return fig
