"""A few per-night outcomes computed straight from simulated epochs: a validation aid only.

Private to :mod:`studykit.simulate`, used by its tests and ``benchmarks/validate_simulator.py``
to check that the configured effects reproduce. It uses the generator's own lights-off /
lights-on epoch indices and implements just enough of the AASM definitions (SOL from lights
off, TST and WASO inside the sleep period, awakenings = runs of W inside it, REM latency
from sleep onset). The study's real per-night statistics come from
:func:`studykit.hypnogram.sleep_statistics`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from studykit.simulate import SimulatedStudy

__all__: list[str] = []

_SLEEP = ("N1", "N2", "N3", "R")


def _night_outcomes(study: SimulatedStudy) -> pd.DataFrame:
    """One row per night: tib, sol, tst, waso, se, n3, rem, rem latency, awakenings."""
    params = study.night_parameters.set_index(["participant_id", "period", "night"])
    epochs = study.epochs
    stage = epochs["stage"].to_numpy(dtype=object)
    keys = epochs[["participant_id", "period", "night"]]
    bounds = np.flatnonzero((keys != keys.shift()).any(axis=1).to_numpy()).tolist() + [len(epochs)]
    rows = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        key = (
            epochs["participant_id"].iat[a],
            int(epochs["period"].iat[a]),
            epochs["night"].iat[a],
        )
        lo = int(params.at[key, "lights_off_epoch"])
        lon = int(params.at[key, "lights_on_epoch"])
        s = stage[a:b][lo:lon]
        sleep = np.isin(s, _SLEEP)
        idx = np.flatnonzero(sleep)
        row = {"participant_id": key[0], "period": key[1], "night": key[2], "tib_min": s.size / 2}
        if idx.size == 0:
            rows.append(row)
            continue
        spt = s[idx[0] : idx[-1] + 1]
        wake = spt == "W"
        starts = wake & ~np.concatenate([[False], wake[:-1]])
        rem = np.flatnonzero(spt == "R")
        row.update(
            sol_min=idx[0] / 2,
            tst_min=np.isin(spt, _SLEEP).sum() / 2,
            waso_min=wake.sum() / 2,
            n3_min=(spt == "N3").sum() / 2,
            rem_min=rem.size / 2,
            lat_rem_min=rem[0] / 2 if rem.size else np.nan,
            n_awakenings=int(starts.sum()),
        )
        row["se_pct"] = 100 * row["tst_min"] / row["tib_min"]
        rows.append(row)
    return pd.DataFrame(rows)
