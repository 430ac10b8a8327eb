"""Per-night sleep statistics from epoch-by-epoch hypnograms, vectorized across nights.

All nights are processed at once (no Python loop over nights): one chunked scan of the rows
finds the night starts and checks the epoch numbers, the concatenated stage codes are
run-length encoded once, and every statistic is computed from the runs, per night, with
``searchsorted`` positions of the night bounds in sorted run indices and cumulative run
lengths (see :class:`_Runs`). docs/hypnogram.md ("Speed") has the design and the benchmark.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import NamedTuple

import numpy as np
import pandas as pd

from studykit.errors import HypnogramError
from studykit.hypnogram.stages import ART, MT, N1, N2, N3, STAGES, UNS, R, W, stage_codes

__all__ = ["KEYS", "OUTCOMES", "sleep_statistics"]

logger = logging.getLogger(__name__)

#: Columns that identify a night (dictionary table ``nights``), in this order.
KEYS: tuple[str, ...] = ("participant_id", "period", "night")

#: The outcome columns of :func:`sleep_statistics`, named as in the data dictionary.
OUTCOMES: tuple[str, ...] = (
    "tib_min",
    "sol_min",
    "sol_persistent_min",
    "spt_min",
    "tst_min",
    "waso_min",
    "se_pct",
    "sme_pct",
    "n1_min",
    "n2_min",
    "n3_min",
    "rem_min",
    "n1_pct",
    "n2_pct",
    "n3_pct",
    "rem_pct",
    "lat_n1_min",
    "lat_n2_min",
    "lat_n3_min",
    "lat_rem_min",
    "lat_n1_lo_min",
    "lat_n2_lo_min",
    "lat_n3_lo_min",
    "lat_rem_lo_min",
    "n_awakenings",
    "awakenings_per_h",
    "n_transitions",
    "sfi_per_h",
    "movement_min",
    "artefact_min",
    "unscored_min",
    "quality_flag",
)

_STAGE_NAMES = {N1: "n1", N2: "n2", N3: "n3", R: "rem"}
_TOL_S = 1e-6  # tolerance (seconds) when comparing lights off / on with epoch boundaries


def sleep_statistics(
    epochs: pd.DataFrame | pd.Series | Sequence[object] | np.ndarray,
    *,
    nights: pd.DataFrame | None = None,
    epoch_length: float = 30.0,
    min_bout_epochs: int = 1,
    persistent_sleep_min: float = 10.0,
    waso_until_lights_on: bool = False,
    max_bad_fraction: float = 0.10,
) -> pd.DataFrame:
    """Derive the per-night sleep statistics of the data dictionary from hypnograms.

    Parameters
    ----------
    epochs : pandas.DataFrame or array-like
        The epoch table: a ``stage`` column (any label :func:`normalize_stages` accepts;
        fastest as the categorical :func:`read_hypnogram` returns), optionally ``epoch``
        (consecutive integers within a night), ``onset_s`` and the night keys
        ``participant_id``, ``period``, ``night`` (whichever of them are present identify
        the night; with a ``recording_id`` column, it alone identifies the night and the
        other keys, which may be empty, are carried to the result). An array-like of stages
        is one night.
    nights : pandas.DataFrame, optional
        Lights off / on per night, to crop each night to time in bed (e.g. the
        ``recordings`` table of :func:`read_hypnograms`): the key columns present in
        ``epochs`` (``recording_id``, else ``participant_id, period, night``) plus either ``lights_off_s`` / ``lights_on_s`` (seconds from the start
        of the recording, i.e. on the ``onset_s`` scale) or the datetimes ``lights_off`` /
        ``lights_on`` with ``recording_start`` (the clock time of ``onset_s = 0``). Missing
        values mean "no crop at that end". Nights absent from this table are not cropped.
    epoch_length : float, default 30.0
        Seconds per epoch.
    min_bout_epochs : int, default 1
        Minimum length (epochs) of a wake bout counted in ``n_awakenings``.
    persistent_sleep_min : float, default 10.0
        Minutes of uninterrupted sleep that define persistent sleep (5 gives YASA's
        ``SOL_5min``; 10 is Luna's ``SOL_PER``).
    waso_until_lights_on : bool, default False
        If True, WASO runs from sleep onset to lights on (includes the final wake: the NSRR
        ``waso`` definition) instead of stopping at the last sleep epoch.
    max_bad_fraction : float, default 0.10
        ``quality_flag`` is True when movement + artefact + unscored time exceeds this
        fraction of time in bed.

    Returns
    -------
    pandas.DataFrame
        One row per night (in order of first appearance), the key columns present in
        ``epochs`` followed by :data:`OUTCOMES`: ``tib_min, sol_min, sol_persistent_min,
        spt_min, tst_min, waso_min, se_pct, sme_pct, n1_min, n2_min, n3_min, rem_min,
        n1_pct, n2_pct, n3_pct, rem_pct, lat_n1_min, lat_n2_min, lat_n3_min, lat_rem_min,
        lat_n1_lo_min, lat_n2_lo_min, lat_n3_lo_min, lat_rem_lo_min, n_awakenings,
        awakenings_per_h, n_transitions, sfi_per_h, movement_min, artefact_min,
        unscored_min, quality_flag``. Durations in minutes, efficiencies and stage shares in
        percent, rates per hour of TST. The parameters used are in ``.attrs["parameters"]``.

    Raises
    ------
    HypnogramError
        Unknown or missing stages, duplicated or missing epochs within a night, missing night
        keys, lights off / on that leave no epoch, or invalid parameters.

    Notes
    -----
    Definitions follow the AASM manual [1]_ (sleep = N1, N2, N3, R). Time in bed (TIB) is the
    record cropped to lights off .. lights on (the whole record when not given); an epoch is
    in bed when it starts at or after lights off and ends at or before lights on.

    * ``tib_min``: number of epochs in bed x epoch length.
    * ``sol_min``: lights off to the first sleep epoch. ``sol_persistent_min``: lights off to
      the start of the first run of at least ``persistent_sleep_min`` minutes of
      consecutive sleep epochs of any stage (rounded up to whole epochs).
    * ``spt_min`` (sleep period time): first to last sleep epoch inclusive; 0 without sleep.
    * ``tst_min``: N1 + N2 + N3 + R epochs (all inside the SPT by construction).
    * ``waso_min``: W epochs inside the SPT (or, with ``waso_until_lights_on``, from sleep
      onset to lights on). Movement, artefact and unscored epochs are not wake.
    * ``se_pct`` = 100 TST / TIB; ``sme_pct`` = 100 TST / SPT.
    * ``n1_min`` .. ``rem_min`` and ``n1_pct`` .. ``rem_pct`` (percent of TST).
    * ``lat_*_min``: first sleep epoch to the first epoch of the stage (AASM: REM latency from
      sleep onset). ``lat_*_lo_min``: lights off to the first epoch of the stage, YASA's
      ``Lat_*`` convention [2]_, named distinctly.
    * ``n_awakenings``: runs of consecutive W epochs inside the SPT of at least
      ``min_bout_epochs`` epochs (Luna's WASO bout count [3]_ with a minimum length). A wake
      run interrupted by a movement / artefact / unscored epoch counts as two runs.
      ``awakenings_per_h`` = ``n_awakenings`` / TST in hours.
    * ``n_transitions``: pairs of consecutive epochs, both inside the SPT, with different
      codes (any of the eight codes, so N2 -> ART -> N2 is two transitions).
    * ``sfi_per_h`` (sleep fragmentation index): sleep epochs directly followed by a W epoch,
      per hour of TST. As in YASA's ``Hypnogram.sleep_statistics`` the final awakening (last
      sleep epoch followed by wake) counts; sleep -> artefact -> wake does not.
    * ``movement_min``, ``artefact_min``, ``unscored_min``: MT, ART, UNS epochs in bed. They
      count in TIB (so they lower SE) and, inside the SPT, in SPT (so they lower SME), but
      never in TST or WASO: the convention of YASA >= 0.5 [2]_.
    * ``quality_flag``: (movement + artefact + unscored) / TIB > ``max_bad_fraction``.

    A night without sleep gives TST 0, SPT 0, SE 0 and missing (NaN) SOL, WASO, SME,
    latencies, stage percentages and rates: no error. Every statistic YASA 0.8.1's
    ``sleep_statistics`` also computes equals it on the same (cropped) hypnogram when stages
    are mapped with :func:`to_yasa_int`: TIB, SPT, WASO, TST, N1..REM, %N1..%REM, SE, SME,
    SOL (= ``sol_min``), ``Lat_*`` (= ``lat_*_lo_min``), and from ``yasa.Hypnogram``: SFI,
    ``SOL_5min`` (= ``sol_persistent_min`` with ``persistent_sleep_min=5``). NSRR's
    ``waso`` corresponds to ``waso_until_lights_on=True`` [4]_.

    References
    ----------
    .. [1] Berry RB et al. The AASM Manual for the Scoring of Sleep and Associated Events,
       version 2.6. American Academy of Sleep Medicine, 2020.
    .. [2] Vallat R, Walker MP. An open-source, high-performance tool for automated sleep
       staging. eLife 2021;10:e70092 (YASA ``sleep_statistics``).
    .. [3] Purcell SM. Luna, HYPNO command: https://zzz.bwh.harvard.edu/luna/ref/hypnograms/
    .. [4] National Sleep Research Resource, SHHS / MESA variable dictionaries
       (``timebedp``, ``slplatp``, ``waso``, ``remlaip``).

    Examples
    --------
    YASA's own example night (20 epochs of 30 s):

    >>> stats = sleep_statistics([0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 2, 3, 3, 4, 4, 4, 4, 0, 0])
    >>> stats[["tib_min", "spt_min", "tst_min", "waso_min", "sol_min", "se_pct"]]
       tib_min  spt_min  tst_min  waso_min  sol_min  se_pct
    0     10.0      8.0      8.0       0.0      1.0    80.0
    >>> float(stats.loc[0, "lat_rem_min"]), float(stats.loc[0, "lat_rem_lo_min"])
    (6.0, 7.0)

    Several nights at once, one row each:

    >>> epochs = pd.DataFrame({"participant_id": ["P01"] * 4 + ["P02"] * 3,
    ...                        "stage": ["W", "N1", "N2", "W", "W", "W", "W"]})
    >>> sleep_statistics(epochs)[["participant_id", "tst_min", "sol_min"]]
      participant_id  tst_min  sol_min
    0            P01      1.0      0.5
    1            P02      0.0      NaN
    """
    _check_parameters(epoch_length, min_bout_epochs, persistent_sleep_min, max_bad_fraction)
    frame = _as_frame(epochs)
    carry: list[str] = []
    if "recording_id" in frame.columns:  # one recording = one night; design keys carried
        keys = ["recording_id"]
        carry = [k for k in KEYS if k in frame.columns]
    else:
        keys = [k for k in KEYS if k in frame.columns]
    codes = stage_codes(frame["stage"])
    order, starts, night_keys = _night_blocks(frame, keys)
    if order is not None:
        frame = frame.iloc[order]
        codes = codes[order]
    for k in carry:
        night_keys[k] = frame[k].iloc[starts[:-1]].reset_index(drop=True)
    if nights is not None:
        match = keys if (not carry or "recording_id" in nights.columns) else carry
        codes, starts = _crop(frame, match, codes, starts, nights, epoch_length)
    out = _compute(
        codes,
        starts,
        epoch_length=float(epoch_length),
        min_bout_epochs=int(min_bout_epochs),
        persistent_epochs=int(np.ceil(persistent_sleep_min * 60.0 / epoch_length - 1e-9)),
        waso_until_lights_on=bool(waso_until_lights_on),
        max_bad_fraction=float(max_bad_fraction),
    )
    columns = {k: night_keys[k] for k in (*keys, *carry)}  # Series: keys keep their dtype
    result = pd.DataFrame({**columns, **out}, columns=[*keys, *carry, *OUTCOMES])
    result.attrs["parameters"] = {
        "epoch_length": float(epoch_length),
        "min_bout_epochs": int(min_bout_epochs),
        "persistent_sleep_min": float(persistent_sleep_min),
        "waso_until_lights_on": bool(waso_until_lights_on),
        "max_bad_fraction": float(max_bad_fraction),
        "cropped_to_lights": nights is not None,
    }
    return result


def _check_parameters(
    epoch_length: float, min_bout_epochs: int, persistent_sleep_min: float, max_bad: float
) -> None:
    problems = []
    if not (np.isfinite(epoch_length) and epoch_length > 0):
        problems.append(f"epoch_length must be a positive number of seconds, got {epoch_length!r}")
    if int(min_bout_epochs) != min_bout_epochs or min_bout_epochs < 1:
        problems.append(f"min_bout_epochs must be an integer >= 1, got {min_bout_epochs!r}")
    if not (np.isfinite(persistent_sleep_min) and persistent_sleep_min > 0):
        problems.append(
            f"persistent_sleep_min must be a positive number of minutes, got "
            f"{persistent_sleep_min!r}"
        )
    if not (0 <= max_bad <= 1):
        problems.append(f"max_bad_fraction must be between 0 and 1, got {max_bad!r}")
    if problems:
        raise HypnogramError("Invalid sleep_statistics parameters: " + "; ".join(problems) + ".")


def _as_frame(epochs: object) -> pd.DataFrame:
    if isinstance(epochs, pd.DataFrame):
        if "stage" not in epochs.columns:
            raise HypnogramError(
                "The epoch table has no 'stage' column (columns: "
                f"{', '.join(map(str, epochs.columns[:20]))}). Expected the columns of "
                "read_hypnogram / read_hypnograms: participant_id, period, night, epoch, "
                "onset_s, stage."
            )
        frame = epochs
    elif isinstance(epochs, pd.Series):
        frame = pd.DataFrame({"stage": epochs.to_numpy()})
    elif isinstance(epochs, str | bytes):
        raise HypnogramError(
            "sleep_statistics expects an epoch table or a sequence of stages, not a string; "
            "read a file first with read_hypnogram(path)."
        )
    elif isinstance(epochs, Iterable):
        frame = pd.DataFrame({"stage": pd.Series(list(epochs), dtype=object)})
    else:
        raise HypnogramError(
            f"sleep_statistics expects a DataFrame or a sequence of stages, got "
            f"{type(epochs).__name__}."
        )
    if len(frame) == 0:
        raise HypnogramError("The epoch table is empty: there is no epoch to derive from.")
    return frame


def _missing_key(name: str, rows: np.ndarray) -> HypnogramError:
    return HypnogramError(
        f"Column {name!r} is missing in {len(rows)} row(s) of the epoch table (first at "
        f"row {int(rows[0])}); every epoch needs its night keys."
    )


class _Key(NamedTuple):
    """A night key column as :func:`_scan_rows` compares it."""

    values: np.ndarray  # adjacent values differ where the key changes, or (if changes) ...
    changes: bool  # ... a boolean array of length n - 1, True where row i + 1 differs


def _key_values(col: pd.Series) -> _Key:
    """The cheapest exact representation of a key column for finding where it changes.

    Categorical codes or numeric values as they are (no copy). Other columns (Arrow-backed
    strings, the pandas >= 3 default, or objects) are compared element-wise here, once
    (object comparison is faster than hashing every row). A missing value always differs
    from the previous row (NaN != NaN, code -1 after another code, null -> changed), so every
    row with a missing key starts a block or continues a block that starts with it: checking
    the block starts (see :func:`_night_blocks`) finds them all.
    """
    dtype = col.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return _Key(np.asarray(col.array.codes), changes=False)
    if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
        return _Key(col.to_numpy(), changes=False)
    array = col.array
    if hasattr(array, "__arrow_array__") and getattr(dtype, "storage", None) == "pyarrow":
        import pyarrow.compute as pc  # pandas' own string backend

        arrow = array.__arrow_array__()
        changed = np.asarray(pc.fill_null(pc.not_equal(arrow[1:], arrow[:-1]), True), dtype=bool)
    else:
        values = col.to_numpy(dtype=object)
        changed = np.asarray(values[1:] != values[:-1], dtype=bool)
    return _Key(changed, changes=True)


_CHUNK = 1 << 18  # rows per chunk in _scan_rows: the temporaries stay in the CPU cache


def _scan_rows(n: int, keys: list[_Key], epoch: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """One pass over the ``n`` rows, chunk by chunk (no temporary of the table's length).

    Returns the sorted positions ``i`` where a key changes between rows ``i`` and ``i + 1``,
    and those where ``epoch[i + 1] != epoch[i] + 1`` (both are few: about one per night in
    an ordered table).
    """
    n_steps = n - 1
    size = min(_CHUNK, max(n_steps, 0))
    changed, tmp = np.empty(size, dtype=bool), np.empty(size, dtype=bool)
    step = np.empty(size, dtype=epoch.dtype) if epoch is not None else None
    key_changes, epoch_breaks = [np.empty(0, dtype=np.intp)], [np.empty(0, dtype=np.intp)]
    for lo in range(0, n_steps, _CHUNK):
        k = min(_CHUNK, n_steps - lo)
        for i, (values, changes) in enumerate(keys):
            out = changed[:k] if i == 0 else tmp[:k]
            if changes:
                np.copyto(out, values[lo : lo + k])
            else:
                np.not_equal(values[lo + 1 : lo + 1 + k], values[lo : lo + k], out=out)
            if i:
                np.logical_or(changed[:k], out, out=changed[:k])
        if keys:
            key_changes.append(np.flatnonzero(changed[:k]) + lo)
        if epoch is not None:
            assert step is not None  # allocated with epoch
            np.subtract(epoch[lo + 1 : lo + 1 + k], epoch[lo : lo + k], out=step[:k])
            np.not_equal(step[:k], 1, out=tmp[:k])
            epoch_breaks.append(np.flatnonzero(tmp[:k]) + lo)
    return np.concatenate(key_changes), np.concatenate(epoch_breaks)


def _night_blocks(
    frame: pd.DataFrame, keys: list[str]
) -> tuple[np.ndarray | None, np.ndarray, pd.DataFrame]:
    """Contiguous night blocks.

    Returns the row order to apply (None when the table is already ordered by night and
    epoch), the block starts followed by ``n`` in the (re)ordered row order, and the key
    columns of the first row of each block (index 0 .. n_nights - 1). Raises when a night
    key is missing or the epochs of a night are not consecutive.
    """
    n = len(frame)
    epoch = None
    if "epoch" in frame.columns:
        epoch = frame["epoch"].to_numpy()
        if epoch.dtype.kind not in "iu":
            epoch = pd.to_numeric(frame["epoch"], errors="coerce").to_numpy(dtype=np.float64)
            if not np.isfinite(epoch).all():
                rows = np.flatnonzero(~np.isfinite(epoch))
                raise HypnogramError(
                    f"Column 'epoch' is missing or not a number in {len(rows)} row(s) (first "
                    f"at row {int(rows[0])})."
                )
    values = [_key_values(frame[k]) for k in keys]
    order = None
    for attempt in range(2):
        key_changes, breaks = _scan_rows(n, values, epoch)
        starts = np.concatenate([[0], key_changes + 1])
        head = frame[keys].iloc[starts if order is None else order[starts]]
        if attempt == 0 and keys:
            for k in keys:  # a missing key starts a block (see _key_values)
                if head[k].isna().any():
                    raise _missing_key(k, np.flatnonzero(frame[k].isna().to_numpy()))
        contiguous = not keys or not head.duplicated().any()
        inner = breaks[~np.isin(breaks, key_changes, assume_unique=True)]  # within a night
        ordered = True
        if inner.size:  # epoch breaks exist only with an epoch column
            assert epoch is not None
            ordered = not (epoch[inner + 1] <= epoch[inner]).any()
        if (contiguous and ordered) or attempt == 1:
            break  # after the sort, blocks are contiguous; duplicates are reported below
        key_codes = [np.asarray(pd.factorize(frame[k])[0]) for k in keys]
        sort_by = [epoch] if epoch is not None else []
        order = np.lexsort([*sort_by, *reversed(key_codes)])
        values = [_Key(c[order], changes=False) for c in key_codes]
        if epoch is not None:
            epoch = epoch[order]
        logger.info("epoch table not ordered by night and epoch: sorted before deriving")
    if inner.size:
        assert epoch is not None
        rows = inner + 1
        dup = rows[epoch[rows] == epoch[rows - 1]]
        kind = "duplicated" if dup.size else "missing (a gap in the epoch numbers)"
        first = int(rows[0])
        where = _describe_row(frame, keys, order, first)
        raise HypnogramError(
            f"{len(rows)} epoch(s) are {kind} within a night, first at {where} (epoch "
            f"{epoch[first - 1]:g} followed by {epoch[first]:g}). Epochs of a night must be "
            "consecutive integers; write '?' (unscored) for epochs that were not scored."
        )
    night_keys = head.reset_index(drop=True)  # no columns when there are no keys
    return order, np.append(starts, n), night_keys


def _describe_row(frame: pd.DataFrame, keys: list[str], order: np.ndarray | None, i: int) -> str:
    """Row ``i`` of the (re)ordered table, named by its original row number and keys."""
    row = int(order[i]) if order is not None else i
    parts = [f"{k}={frame[k].iloc[row]!r}" for k in keys]
    return f"row {row}" + (f" ({', '.join(parts)})" if parts else "")


def _crop(
    frame: pd.DataFrame,
    keys: list[str],
    codes: np.ndarray,
    starts: np.ndarray,
    nights: pd.DataFrame,
    epoch_length: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the epochs between lights off and lights on of each night."""
    n_groups = len(starts) - 1
    missing = [k for k in keys if k not in nights.columns]
    if missing:
        raise HypnogramError(
            f"The nights table lacks the key column(s) {', '.join(missing)} needed to match "
            "its rows to the epoch table."
        )
    off, on = _lights_seconds(nights)
    lights = pd.DataFrame({"off": off, "on": on})
    if keys:
        left = frame[keys].iloc[starts[:-1]].reset_index(drop=True)
        right = pd.concat([nights[keys].reset_index(drop=True), lights], axis=1)
        dup = right.duplicated(keys, keep=False)
        if dup.any():
            raise HypnogramError(
                f"The nights table has {int(dup.sum())} rows with duplicated keys "
                f"({', '.join(keys)}), e.g. {right.loc[dup, keys].iloc[0].tolist()}."
            )
        for k in keys:  # align dtypes so that e.g. period 1 matches "1"
            if left[k].dtype != right[k].dtype:
                left[k] = left[k].astype(str)
                right[k] = right[k].astype(str)
        merged = left.merge(right, on=keys, how="left", validate="one_to_one")
        off_g = merged["off"].to_numpy(dtype=np.float64)
        on_g = merged["on"].to_numpy(dtype=np.float64)
    else:
        if len(lights) != 1:
            raise HypnogramError(
                f"The epochs are one night (no participant_id / period / night columns) but "
                f"the nights table has {len(lights)} rows; give exactly one."
            )
        off_g = lights["off"].to_numpy(dtype=np.float64)
        on_g = lights["on"].to_numpy(dtype=np.float64)
    bad = np.isfinite(off_g) & np.isfinite(on_g) & (on_g <= off_g)
    if bad.any():
        raise HypnogramError(
            f"{int(bad.sum())} night(s) have lights on at or before lights off "
            f"(first: night {_group_label(frame, keys, starts, int(np.flatnonzero(bad)[0]))})."
        )
    sizes = np.diff(starts)
    group = np.repeat(np.arange(n_groups), sizes)
    if "onset_s" in frame.columns:
        onset = pd.to_numeric(frame["onset_s"], errors="coerce").to_numpy(dtype=np.float64)
    elif "epoch" in frame.columns:
        onset = frame["epoch"].to_numpy(dtype=np.float64) * epoch_length
    else:
        onset = (np.arange(len(codes)) - starts[group]) * epoch_length
    lo = np.where(np.isfinite(off_g), off_g, -np.inf)[group]
    hi = np.where(np.isfinite(on_g), on_g, np.inf)[group]
    keep = (onset >= lo - _TOL_S) & (onset + epoch_length <= hi + _TOL_S)
    counts = np.bincount(group[keep], minlength=n_groups)
    if (counts == 0).any():
        empty = np.flatnonzero(counts == 0)
        raise HypnogramError(
            f"{len(empty)} night(s) have no epoch between lights off and lights on, e.g. "
            f"{_group_label(frame, keys, starts, int(empty[0]))}: check lights_off / lights_on "
            "(and recording_start) against the hypnogram."
        )
    return codes[keep], np.concatenate([[0], np.cumsum(counts)])


def _group_label(frame: pd.DataFrame, keys: list[str], starts: np.ndarray, g: int) -> str:
    if not keys:
        return "the night"
    row = frame.iloc[int(starts[g])]
    return ", ".join(f"{k}={row[k]!r}" for k in keys)


def _lights_seconds(nights: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    out = []
    for end in ("off", "on"):
        sec_col, dt_col = f"lights_{end}_s", f"lights_{end}"
        if sec_col in nights.columns:
            values = pd.to_numeric(nights[sec_col], errors="coerce").to_numpy(dtype=np.float64)
        elif dt_col in nights.columns:
            when = pd.to_datetime(nights[dt_col])
            if "recording_start" not in nights.columns:
                raise HypnogramError(
                    f"The nights table gives {dt_col} as a clock time but no recording_start: "
                    f"add recording_start (clock time of the first epoch) or give {sec_col} in "
                    "seconds from the start of the recording."
                )
            start = pd.to_datetime(nights["recording_start"])
            has = when.notna().to_numpy()
            if (has & start.isna().to_numpy()).any():
                raise HypnogramError(
                    f"recording_start is missing for a night that has {dt_col}; both are needed "
                    "to place lights off / on on the hypnogram."
                )
            values = (when - start).dt.total_seconds().to_numpy(dtype=np.float64)
        else:
            values = np.full(len(nights), np.nan)
        out.append(values)
    if not any(
        c in nights.columns for c in ("lights_off_s", "lights_on_s", "lights_off", "lights_on")
    ):
        raise HypnogramError(
            "The nights table has none of lights_off_s, lights_on_s, lights_off, lights_on: "
            "nothing to crop with. Pass nights=None to use the whole recording."
        )
    return out[0], out[1]


class _Selection:
    """A sorted set of run indices, located once against the night bounds.

    ``at[g]`` is the position in ``runs`` of the first selected run at or after the first
    run of night ``g`` (``at[-1] == runs.size``), so the selected runs of night ``g`` are
    ``runs[at[g]:at[g + 1]]``. ``cum_len`` (optional) is the cumulative sum of their lengths
    in epochs, starting at 0.
    """

    def __init__(self, runs: np.ndarray, bounds: np.ndarray, cum_len: np.ndarray | None = None):
        self.runs = runs
        self.cum_len = cum_len
        self._bounds = bounds

    @cached_property
    def at(self) -> np.ndarray:
        return np.searchsorted(self.runs, self._bounds)  # located only when needed

    def night_epochs(self) -> np.ndarray:
        """Epochs in the selected runs, per night (float64)."""
        assert self.cum_len is not None  # built with run lengths
        return (self.cum_len[self.at[1:]] - self.cum_len[self.at[:-1]]).astype(np.float64)

    def first(self) -> tuple[np.ndarray, np.ndarray]:
        """First selected run of each night, and whether the night has one.

        Where it has none the run returned is meaningless (but a valid index).
        """
        found = self.at[:-1] < self.at[1:]
        if not self.runs.size:
            return np.zeros(found.size, dtype=np.intp), found
        return self.runs[np.minimum(self.at[:-1], self.runs.size - 1)], found

    def last(self) -> np.ndarray:
        """Last selected run of each night (meaningful only where :meth:`first` found one)."""
        if not self.runs.size:
            return np.zeros(self.at.size - 1, dtype=np.intp)
        return self.runs[np.maximum(self.at[1:] - 1, 0)]

    def between(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions in ``runs`` of the selected runs ``r`` with ``lo <= r < hi`` (per night):
        they are ``runs[i:j]`` for the returned ``(i, j)``."""
        return np.searchsorted(self.runs, lo), np.searchsorted(self.runs, hi)

    def epochs_between(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Epochs in ``runs[i:j]`` (per night, float64), ``(i, j)`` from :meth:`between`."""
        assert self.cum_len is not None  # built with run lengths
        return (self.cum_len[j] - self.cum_len[i]).astype(np.float64)


class _Runs:
    """Run-length encoding of the concatenated nights, with per-night run ranges.

    A run is a maximal sequence of epochs of one code within one night. The runs of night
    ``g`` are ``r0[g] <= r < r1[g]``, so every per-night quantity is a ``searchsorted`` of
    the night bounds into a sorted array of run indices (see :class:`_Selection`), or a
    difference of a cumulative sum at those positions. After the encoding no array of the
    length of the record is built, and no Python loop runs over nights.
    """

    def __init__(self, codes: np.ndarray, starts: np.ndarray) -> None:
        n = codes.size
        is_start = np.empty(n, dtype=bool)
        is_start[0] = True
        np.not_equal(codes[1:], codes[:-1], out=is_start[1:])
        is_start[starts[:-1]] = True  # runs never cross a night boundary
        # All index arrays are intp: mixing int32 and int64 makes numpy convert whole arrays
        # (e.g. the haystack of every searchsorted).
        self.start = np.flatnonzero(is_start)
        self.code = codes[self.start]
        self.len = np.empty_like(self.start)
        np.subtract(self.start[1:], self.start[:-1], out=self.len[:-1])
        self.len[-1] = n - self.start[-1]
        self.bounds = np.searchsorted(self.start, starts.astype(np.intp))  # n_runs at the end
        self.r0, self.r1 = self.bounds[:-1], self.bounds[1:]
        self.night_start = starts[:-1]

    def select(self, mask: np.ndarray) -> _Selection:
        """The runs where the run-level boolean ``mask`` is True."""
        return _Selection(np.flatnonzero(mask), self.bounds)

    def by_code(self) -> list[_Selection]:
        """The runs of each stage code, with their lengths (index = code)."""
        # One stable (radix) sort of the int8 codes: within a code, run indices stay sorted.
        order = np.argsort(self.code, kind="stable")
        cum_len = np.zeros(order.size + 1, dtype=np.int64)
        np.cumsum(self.len[order], out=cum_len[1:])
        out, lo = [], 0
        for code in range(len(STAGES)):
            hi = lo + int(np.count_nonzero(self.code == code))
            out.append(_Selection(order[lo:hi], self.bounds, cum_len[lo : hi + 1]))
            lo = hi
        return out

    def position(self, run: np.ndarray) -> np.ndarray:
        """Epoch position within its night of the first epoch of ``run`` (float64)."""
        return (self.start[run] - self.night_start).astype(np.float64)


def _compute(
    codes: np.ndarray,
    starts: np.ndarray,
    *,
    epoch_length: float,
    min_bout_epochs: int,
    persistent_epochs: int,
    waso_until_lights_on: bool,
    max_bad_fraction: float,
) -> dict[str, np.ndarray]:
    """All statistics for the concatenated nights ``codes`` split at ``starts``.

    The only passes over the epochs are the run-length encoding in :class:`_Runs`; everything
    else works on runs (about a tenth of the epochs in real hypnograms) and, per night, on
    ``searchsorted`` positions. Counts are exact integers until the conversion to minutes.
    """
    to_min = epoch_length / 60.0
    runs = _Runs(codes, starts)
    r0, r1 = runs.r0, runs.r1

    of_code = runs.by_code()
    stage_n = {c: of_code[c].night_epochs() for c in range(len(STAGES)) if c != W}
    tib_n = np.diff(starts).astype(np.float64)

    # Sleep period: first sleep run .. last sleep run of each night.
    run_sleep = (runs.code >= N1) & (runs.code <= R)
    sleep = runs.select(run_sleep)
    first_run, has_sleep = sleep.first()
    last_run = sleep.last()
    first_sleep = np.where(has_sleep, runs.position(first_run), np.nan)
    last_sleep = runs.position(last_run) + runs.len[last_run] - 1
    tst_n = stage_n[N1] + stage_n[N2] + stage_n[N3] + stage_n[R]
    spt_n = np.where(has_sleep, last_sleep - first_sleep + 1, 0.0)
    # Runs strictly inside the SPT: first_run < r < last_run (none without sleep).
    inner_lo = np.where(has_sleep, first_run + 1, r0)
    inner_hi = np.where(has_sleep, last_run, r0)

    # Wake after sleep onset and awakenings (wake runs strictly inside the SPT).
    wake = of_code[W]
    i, j = wake.between(inner_lo, inner_hi)
    if waso_until_lights_on:
        j_waso = np.searchsorted(wake.runs, np.where(has_sleep, r1, r0))
        waso_n = np.where(has_sleep, wake.epochs_between(i, j_waso), np.nan)
    else:
        waso_n = np.where(has_sleep, wake.epochs_between(i, j), np.nan)
    if min_bout_epochs > 1:
        long_wake = _Selection(wake.runs[runs.len[wake.runs] >= min_bout_epochs], runs.bounds)
        i, j = long_wake.between(inner_lo, inner_hi)
    n_awake = j - i

    # Stage changes inside the SPT: every run after the first sleep run, up to and including
    # the last sleep run, begins with a change from the previous epoch of the same night.
    n_trans = np.where(has_sleep, last_run - first_run, 0)

    # Sleep -> wake transitions (YASA's SFI numerator): a wake run w preceded by a sleep run
    # of the same night. The wake runs preceded by a sleep run are counted per night, minus
    # the night's first run when it was counted because of the previous night's last run
    # (for run 0, "run -1" is the last run: the same wrap-around in both terms).
    s2w = _Selection(wake.runs[run_sleep[wake.runs - 1]], runs.bounds)
    across = (runs.code[r0] == W) & run_sleep[r0 - 1]
    n_s2w = np.diff(s2w.at) - across

    # Persistent sleep: consecutive sleep runs of a night form a sleep bout.
    sleep_runs = sleep.runs
    bout_start = np.ones(sleep_runs.size, dtype=bool)
    if sleep_runs.size:
        np.not_equal(sleep_runs[1:] - sleep_runs[:-1], 1, out=bout_start[1:])
        bout_start[sleep.at[:-1][has_sleep]] = True  # each night's first sleep run
    first_of_bout = np.flatnonzero(bout_start)
    last_of_bout = np.append(first_of_bout[1:] - 1, sleep_runs.size - 1)
    bout_first_run = sleep_runs[first_of_bout]
    bout_last_run = sleep_runs[last_of_bout] if sleep_runs.size else bout_first_run
    bout_len = runs.start[bout_last_run] + runs.len[bout_last_run] - runs.start[bout_first_run]
    long_bouts = _Selection(bout_first_run[bout_len >= persistent_epochs], runs.bounds)
    run, found = long_bouts.first()
    sol_persistent = np.where(found, runs.position(run), np.nan)

    # First epoch of each sleep stage (from lights off).
    first_stage = {}
    for code in _STAGE_NAMES:
        run, found = of_code[code].first()
        first_stage[code] = np.where(found, runs.position(run), np.nan)

    with np.errstate(divide="ignore", invalid="ignore"):
        tst_min = tst_n * to_min
        tst_h = np.where(tst_n > 0, tst_min / 60.0, np.nan)
        out: dict[str, np.ndarray] = {
            "tib_min": tib_n * to_min,
            "sol_min": first_sleep * to_min,
            "sol_persistent_min": sol_persistent * to_min,
            "spt_min": spt_n * to_min,
            "tst_min": tst_min,
            "waso_min": waso_n * to_min,
            "se_pct": 100.0 * tst_min / (tib_n * to_min),
            "sme_pct": np.where(has_sleep, 100.0 * tst_min / (spt_n * to_min), np.nan),
        }
        for code, name in _STAGE_NAMES.items():
            out[f"{name}_min"] = stage_n[code] * to_min
        for name in _STAGE_NAMES.values():
            out[f"{name}_pct"] = np.where(has_sleep, 100.0 * out[f"{name}_min"] / tst_min, np.nan)
        for code, name in _STAGE_NAMES.items():
            out[f"lat_{name}_min"] = (first_stage[code] - first_sleep) * to_min
        for code, name in _STAGE_NAMES.items():
            out[f"lat_{name}_lo_min"] = first_stage[code] * to_min
        out["n_awakenings"] = n_awake.astype(np.int64)
        out["awakenings_per_h"] = n_awake / tst_h
        out["n_transitions"] = n_trans.astype(np.int64)
        out["sfi_per_h"] = n_s2w / tst_h
        out["movement_min"] = stage_n[MT] * to_min
        out["artefact_min"] = stage_n[ART] * to_min
        out["unscored_min"] = stage_n[UNS] * to_min
        bad_n = stage_n[MT] + stage_n[ART] + stage_n[UNS]
        out["quality_flag"] = bad_n / tib_n > max_bad_fraction
    return out
