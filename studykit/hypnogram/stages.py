"""The stage vocabulary of studykit and the mapping of every common scoring scheme to it.

Polysomnography is scored in epochs (30 s by default). Whatever a file calls a stage, studykit
stores one of eight codes (the ``stage`` column of the data dictionary's ``epochs`` table):

====  =========================================================================
code  meaning
====  =========================================================================
W     wake
N1    stage N1 (R&K stage 1)
N2    stage N2 (R&K stage 2)
N3    stage N3, slow-wave sleep (R&K stages 3 and 4 together)
R     REM sleep
MT    movement time (R&K); neither sleep nor wake
ART   artefact: the epoch could not be scored because of artefact
UNS   unscored (``?`` in Sleep-EDF, ``Unscored|9`` in NSRR)
====  =========================================================================

Movement, artefact and unscored epochs are kept as their own states: they are never turned
into wake or sleep.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Literal

import numpy as np
import pandas as pd

from studykit.errors import HypnogramError

__all__ = [
    "STAGES",
    "SLEEP_STAGES",
    "STAGE_DTYPE",
    "normalize_stages",
    "stage_codes",
    "to_yasa_int",
]

logger = logging.getLogger(__name__)

#: The stage codes, in this order (the integer code of a stage is its index here).
STAGES: tuple[str, ...] = ("W", "N1", "N2", "N3", "R", "MT", "ART", "UNS")

#: The stages that count as sleep (total sleep time).
SLEEP_STAGES: tuple[str, ...] = ("N1", "N2", "N3", "R")

#: The pandas dtype of a ``stage`` column (unordered categorical, categories :data:`STAGES`).
STAGE_DTYPE = pd.CategoricalDtype(list(STAGES), ordered=False)

W, N1, N2, N3, R, MT, ART, UNS = range(8)

Scheme = Literal["auto", "yasa", "rk"]
SCHEMES: tuple[str, ...] = ("auto", "yasa", "rk")

# Integer codes.
# YASA (yasa.hypno_int_to_str): 0 W, 1 N1, 2 N2, 3 N3, 4 REM, -1 artefact (or movement), -2 unscored.
_YASA_INT = {0: W, 1: N1, 2: N2, 3: N3, 4: R, -1: ART, -2: UNS}
# R&K numbering as used by NSRR (EventConcept "...|k") and Compumedics Profusion
# (CMPStudyConfig SleepStage): 0 W, 1-4 S1-S4, 5 REM, 6 movement, 9 unscored, 10 artefact.
_RK_INT = {0: W, 1: N1, 2: N2, 3: N3, 4: N3, 5: R, 6: MT, 9: UNS, 10: ART}

# Text labels, compared after lower-casing, turning "_" into " " and collapsing white space.
_LABELS: dict[str, int] = {}


def _add(code: int, *labels: str) -> None:
    for label in labels:
        _LABELS[label] = code


# AASM labels, YASA's string labels, R&K labels, Sleep-EDF annotations, NSRR concepts.
_add(W, "w", "wake", "wk", "stage w", "sleep stage w", "wake|0", "stage 0")
_add(N1, "n1", "s1", "stage 1", "stage n1", "sleep stage 1", "sleep stage n1", "nrem1")
_add(N1, "stage 1 sleep", "stage 1 sleep|1")
_add(N2, "n2", "s2", "stage 2", "stage n2", "sleep stage 2", "sleep stage n2", "nrem2")
_add(N2, "stage 2 sleep", "stage 2 sleep|2")
_add(N3, "n3", "s3", "stage 3", "stage n3", "sleep stage 3", "sleep stage n3", "nrem3")
_add(N3, "stage 3 sleep", "stage 3 sleep|3", "s4", "stage 4", "sleep stage 4")
_add(N3, "stage 4 sleep", "stage 4 sleep|4")
_add(R, "r", "rem", "stage r", "stage rem", "sleep stage r", "sleep stage rem", "rem sleep")
_add(R, "rem sleep|5")
_add(MT, "mt", "movement", "movement time", "movement|6", "sleep stage mt")
_add(ART, "art", "artefact", "artifact")
_add(UNS, "uns", "unscored", "?", "sleep stage ?", "unscored|9", "sleep stage unscored")

_INT_RE = re.compile(r"^[+-]?\d+(\.0*)?$")
_SPACE_RE = re.compile(r"\s+")


def _clean_label(value: str) -> str:
    return _SPACE_RE.sub(" ", value.replace("_", " ").strip().lower())


def _map_unique(value: object, scheme: str) -> int | None:
    """Code of one distinct input value, or None when it is not a known stage."""
    if isinstance(value, bool | np.bool_):
        return None
    as_int: int | None = None
    if isinstance(value, int | np.integer):
        as_int = int(value)
    elif isinstance(value, float | np.floating):
        if np.isfinite(value) and float(value).is_integer():
            as_int = int(value)
        else:
            return None
    elif isinstance(value, str):
        text = value.strip()
        if _INT_RE.match(text):
            as_int = int(float(text))
        else:
            return _LABELS.get(_clean_label(text))
    else:
        return None
    table = _RK_INT if scheme == "rk" else _YASA_INT
    return table.get(as_int)


def stage_codes(values: Iterable[object] | pd.Series, *, scheme: Scheme = "auto") -> np.ndarray:
    """Map stage labels to integer codes (indices into :data:`STAGES`), as an ``int8`` array.

    This is :func:`normalize_stages` without the categorical wrapper; see there for the
    accepted labels.

    Examples
    --------
    >>> stage_codes(["W", "S1", "Sleep stage 4", 4, "?"]).tolist()
    [0, 1, 3, 4, 7]
    """
    if scheme not in SCHEMES:
        raise HypnogramError(
            f"Invalid scheme {scheme!r}. Expected one of {', '.join(map(repr, SCHEMES))}."
        )
    if isinstance(values, pd.Series | pd.Index) and isinstance(values.dtype, pd.CategoricalDtype):
        cat = values.array
    elif isinstance(values, pd.Categorical):
        cat = values
    else:
        cat = None
    if cat is not None:
        # Categorical (what the readers return): map the categories, then index by the codes.
        codes_in = np.asarray(cat.codes)
        if codes_in.size and codes_in.min() < 0:
            _raise_missing(np.flatnonzero(codes_in < 0))
        if list(cat.categories) == list(STAGES):
            return codes_in.astype(np.int8)
        return _map_through(codes_in, np.asarray(cat.categories, dtype=object), scheme)

    if (
        isinstance(values, np.ndarray | pd.Series | pd.Index)
        and isinstance(values.dtype, np.dtype)
        and values.dtype.kind in "iu"
        and len(values) > 0
    ):
        # Integer codes (numpy, no missing values): a lookup table over the (small) range of
        # values instead of hashing every epoch.
        ints = np.asarray(values)
        lo, hi = int(ints.min()), int(ints.max())
        if hi - lo < 4096:
            offsets = np.subtract(ints, lo, dtype=np.intp)
            return _map_through(offsets, np.arange(lo, hi + 1, dtype=np.int64), scheme)

    if isinstance(values, pd.Series | pd.Index) and len(values) > 1:
        by_runs = _codes_by_runs(values, scheme)
        if by_runs is not None:
            return by_runs

    if isinstance(values, pd.Series | pd.Index | np.ndarray | pd.Categorical):
        arr = values
    else:
        arr = np.asarray(list(values), dtype=object)
    codes_in, uniques = pd.factorize(arr, use_na_sentinel=True)
    codes_in = np.asarray(codes_in)
    if (codes_in < 0).any():
        _raise_missing(np.flatnonzero(codes_in < 0))
    return _map_through(codes_in, np.asarray(uniques, dtype=object), scheme)


def _codes_by_runs(values: pd.Series | pd.Index, scheme: str) -> np.ndarray | None:
    """Codes of a column of text labels, hashing only the first epoch of each run.

    Stages change every few epochs, so comparing neighbours (vectorized in Arrow for the
    pandas >= 3 string dtype, element-wise for objects) and hashing the run heads is several
    times faster than hashing every epoch. Returns None when the column is neither, or has a
    missing or unknown label: the general path then gives the exact error report.
    """
    array = values.array
    if hasattr(array, "__arrow_array__") and getattr(values.dtype, "storage", None) == "pyarrow":
        import pyarrow.compute as pc  # pandas' own string backend

        arrow = array.__arrow_array__()
        changed = pc.fill_null(pc.not_equal(arrow[1:], arrow[:-1]), True)
    elif values.dtype == object:
        labels = values.to_numpy()
        changed = labels[1:] != labels[:-1]
    else:
        return None
    is_head = np.empty(len(values), dtype=bool)
    is_head[0] = True
    is_head[1:] = np.asarray(changed, dtype=bool)
    heads = np.flatnonzero(is_head)
    head_codes, uniques = pd.factorize(values.take(heads), use_na_sentinel=True)
    lookup = [_map_unique(u, scheme) for u in np.asarray(uniques, dtype=object).tolist()]
    if (np.asarray(head_codes) < 0).any() or None in lookup:
        return None
    run_len = np.diff(np.append(heads, len(values)))
    return np.repeat(np.array(lookup, dtype=np.int8)[head_codes], run_len)


def _map_through(codes_in: np.ndarray, uniques: np.ndarray, scheme: str) -> np.ndarray:
    """Stage codes of ``uniques[codes_in]``, mapping each distinct value once.

    A value of ``uniques`` that is not a stage is an error only if some epoch uses it.
    """
    lookup = np.empty(len(uniques), dtype=np.int8)
    unknown = False
    for i, value in enumerate(uniques.tolist()):
        code = _map_unique(value, scheme)
        lookup[i] = -1 if code is None else code
        unknown |= code is None
    out = lookup[codes_in]
    if unknown:
        used = np.zeros(len(uniques), dtype=bool)
        used[codes_in[out < 0]] = True
        if used.any():
            bad_values = [u for u, b in zip(uniques.tolist(), used, strict=True) if b]
            _raise_unknown(bad_values, codes_in, lookup, scheme)
    return out


def _raise_missing(positions: np.ndarray) -> None:
    shown = ", ".join(str(p) for p in positions[:10])
    more = f" and {len(positions) - 10} more" if len(positions) > 10 else ""
    raise HypnogramError(
        f"{len(positions)} epoch(s) have no stage (empty or missing value) at position(s) "
        f"{shown}{more} (0-based). Every epoch needs a stage: write '?' or 'UNS' for an epoch "
        "that was not scored."
    )


def _raise_unknown(
    unknown: list[object], codes_in: np.ndarray, lookup: np.ndarray, scheme: str
) -> None:
    bad = np.flatnonzero(lookup[codes_in] < 0)
    shown = ", ".join(repr(u) for u in unknown[:10])
    more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
    ints = [u for u in unknown if _map_unique(u, "rk") is not None]
    hint = ""
    if ints and scheme != "rk":
        hint = (
            " Integer codes are read as YASA's (0 W, 1 N1, 2 N2, 3 N3, 4 REM, -1 artefact, "
            "-2 unscored); if the file uses R&K / NSRR / Profusion numbering (0 W, 1-4 S1-S4, "
            "5 REM, 6 movement, 9 unscored, 10 artefact) pass scheme='rk'."
        )
    raise HypnogramError(
        f"Unknown sleep stage label(s) {shown}{more} in {len(bad)} epoch(s), first at position "
        f"{int(bad[0])} (0-based). Allowed: AASM (W, N1, N2, N3, R), R&K (S1-S4, REM, MT), "
        "YASA integers (0-4, -1 artefact, -2 unscored) or labels (WAKE, ART, UNS), Sleep-EDF "
        "('Sleep stage W', 'Sleep stage 1'..'4', 'Sleep stage R', 'Sleep stage ?', "
        "'Movement time'), NSRR concepts ('Wake|0', 'Stage 1 sleep|1' .. 'REM sleep|5', "
        f"'Movement|6', 'Unscored|9'), ART/artefact, UNS/unscored/?.{hint}"
    )


def normalize_stages(
    values: Iterable[object] | pd.Series, *, scheme: Scheme = "auto"
) -> pd.Categorical:
    """Map sleep stage labels of any common scheme to the studykit codes.

    Parameters
    ----------
    values : array-like
        One label per epoch: strings, integers, or a categorical.
    scheme : {"auto", "yasa", "rk"}, default "auto"
        How *integer* codes are read (text labels are unambiguous and accepted with every
        scheme). ``"auto"`` and ``"yasa"``: YASA's integers (0 W, 1 N1, 2 N2, 3 N3, 4 REM,
        -1 artefact, -2 unscored). ``"rk"``: Rechtschaffen & Kales numbering as used by NSRR
        and Compumedics Profusion (0 W, 1-4 S1-S4 with 3 and 4 -> N3, 5 REM, 6 movement,
        9 unscored, 10 artefact).

    Returns
    -------
    pandas.Categorical
        Categories :data:`STAGES` (``W, N1, N2, N3, R, MT, ART, UNS``), same length as
        ``values``.

    Raises
    ------
    HypnogramError
        When a value is missing or not a known label; the message lists the unknown labels.

    Notes
    -----
    Accepted text labels (case-insensitive; ``_`` is read as a space):

    * AASM [1]_: ``W``, ``N1``, ``N2``, ``N3``, ``R``; YASA's labels ``WAKE``, ``REM``,
      ``ART``, ``UNS``.
    * Rechtschaffen & Kales [2]_: ``S1``-``S4`` (``S3`` and ``S4`` are both N3, as the
      AASM manual prescribes), ``REM``, ``MT`` (movement time, kept as ``MT``).
    * Sleep-EDF annotations [3]_: ``Sleep stage W``, ``Sleep stage 1`` .. ``4``,
      ``Sleep stage R``, ``Sleep stage ?`` (unscored), ``Movement time``.
    * NSRR event concepts [4]_: ``Wake|0``, ``Stage 1 sleep|1`` .. ``Stage 4 sleep|4``,
      ``REM sleep|5``, ``Movement|6``, ``Unscored|9``.
    * ``artefact`` / ``artifact``, ``unscored`` / ``?``.

    Movement, artefact and unscored epochs are never turned into wake or sleep. YASA
    merges movement into its artefact code (-1); :func:`to_yasa_int` does the same when
    exporting.

    References
    ----------
    .. [1] Berry RB et al. The AASM Manual for the Scoring of Sleep and Associated Events:
       Rules, Terminology and Technical Specifications, version 2.6. American Academy of
       Sleep Medicine, 2020.
    .. [2] Rechtschaffen A, Kales A. A Manual of Standardized Terminology, Techniques and
       Scoring System for Sleep Stages of Human Subjects. UCLA Brain Information Service, 1968.
    .. [3] Kemp B et al. Analysis of a sleep-dependent neuronal feedback loop: the slow-wave
       microcontinuity of the EEG. IEEE Trans Biomed Eng 2000;47:1185-94 (Sleep-EDF database,
       PhysioNet).
    .. [4] Zhang GQ et al. The National Sleep Research Resource: towards a sleep data
       commons. J Am Med Inform Assoc 2018;25:1351-8.

    Examples
    --------
    >>> list(normalize_stages(["Sleep stage W", "Sleep stage 3", "Sleep stage 4", "REM"]))
    ['W', 'N3', 'N3', 'R']
    >>> list(normalize_stages([0, 1, 2, 3, 4, -1, -2]))
    ['W', 'N1', 'N2', 'N3', 'R', 'ART', 'UNS']
    >>> list(normalize_stages([0, 4, 5, 6, 9], scheme="rk"))
    ['W', 'N3', 'R', 'MT', 'UNS']
    >>> normalize_stages(["W", "N5"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    studykit.errors.HypnogramError: Unknown sleep stage label(s) 'N5' in 1 epoch(s), ...
    """
    codes = stage_codes(values, scheme=scheme)
    return pd.Categorical.from_codes(codes, dtype=STAGE_DTYPE)


def to_yasa_int(values: Iterable[object] | pd.Series) -> np.ndarray:
    """Convert stages to YASA's integer codes (movement time becomes -1, like artefact).

    Examples
    --------
    >>> to_yasa_int(["W", "N1", "N3", "R", "MT", "ART", "UNS"]).tolist()
    [0, 1, 3, 4, -1, -1, -2]
    """
    table = np.array([0, 1, 2, 3, 4, -1, -1, -2], dtype=np.int8)
    return table[stage_codes(values)]
