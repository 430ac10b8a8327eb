"""Lights off / on of a recording: where they come from and where they fall on the hypnogram.

Each end is taken from the first source that gives it (:data:`LIGHTS_SOURCES`): the hypnogram
file itself ("Lights off" / "Lights on" annotations of EDF+ and NSRR XML files), the recordings
table, the nights table (``studykit derive --lights``); otherwise the night is not cropped at
that end and a warning says so. Values are seconds from the start of the recording
(``onset_s`` scale), converted from clock times or date-times with the recording's start.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import pandas as pd

from studykit.errors import HypnogramError

__all__ = ["LIGHTS_SOURCES", "lights_seconds", "resolve_lights"]

#: Where lights off / on were found, in order of precedence; ``none`` when nowhere.
LIGHTS_SOURCES: tuple[str, ...] = ("file", "recordings", "nights", "none")

_TIME_ONLY = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}(?:\.\d*)?))?\s*$")
_DAY = 86400.0


def _time_of_day(value: str) -> float | None:
    m = _TIME_ONLY.match(value)
    if m is None:
        return None
    h, mi, sec = int(m[1]), int(m[2]), float(m[3] or 0)
    if h > 24 or mi > 59 or sec >= 60:
        return None
    return h * 3600.0 + mi * 60.0 + sec


def _timestamp(value: str, what: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise HypnogramError(
            f"{what} {value!r} is not a date-time or clock time; write e.g. 2024-03-01 23:10 "
            "or 23:10 (or give seconds from the recording start in lights_off_s / lights_on_s)."
        ) from exc
    if ts is pd.NaT:
        raise HypnogramError(f"{what} {value!r} is not a date-time or clock time.")
    return ts.tz_localize(None) if ts.tzinfo is not None else ts


def lights_seconds(
    value: object, recording_start: str | None, *, what: str, after: float | None = None
) -> float:
    """One lights time as seconds from the start of the recording.

    Parameters
    ----------
    value : number, str or None
        Seconds (a number), a clock time (``23:10``, ``07:02:30``) or a date-time
        (``2024-03-01 23:10``). None / NaN / empty -> NaN.
    recording_start : str or None
        The clock time or date-time of ``onset_s = 0`` (ISO text, e.g. from the EDF header).
    what : str
        Names the value in error messages (e.g. ``"lights_off of SC4001EC-Hypnogram.edf"``).
    after : float, optional
        For lights on: the lights-off time (seconds); a clock time is placed after it.

    Returns
    -------
    float

    Notes
    -----
    A clock time without a date is placed on the recording's 24-h clock: lights off within
    12 h either side of the recording start, lights on in the 24 h after lights off (or after
    the start). A date-time with a date-time start is their difference.

    Examples
    --------
    >>> lights_seconds("23:10", "2024-03-01T22:40:00", what="lights_off")
    1800.0
    >>> lights_seconds("06:40", "22:40:00", what="lights_on", after=1800.0)
    28800.0
    >>> lights_seconds(95.0, None, what="lights_off_s")
    95.0
    >>> lights_seconds(pd.Timestamp("2024-03-01 23:10"), "2024-03-01T22:40:00", what="lights_off")
    1800.0
    >>> lights_seconds(pd.NaT, "22:40:00", what="lights_off")
    nan
    """
    if _missing(value):
        return math.nan
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if not text:
        return math.nan
    try:
        return float(text)
    except ValueError:
        pass
    if recording_start is None:
        raise HypnogramError(
            f"{what} {text!r} is a clock time, but the recording's start time is unknown (not "
            "in the file, no recording_start column): give lights_off_s / lights_on_s in "
            "seconds from the start of the recording, or a recording_start."
        )
    tod = _time_of_day(text)
    start_tod = _time_of_day(recording_start)
    if tod is None or start_tod is None:
        when = _timestamp(text, what)
        start = _timestamp(recording_start, "recording_start") if start_tod is None else None
        if tod is None and start is not None:
            return float((when - start).total_seconds())
        tod = tod if tod is not None else _seconds_of_day(when)
        start_tod = start_tod if start_tod is not None else _seconds_of_day(start)
    if after is None:
        return ((tod - start_tod + _DAY / 2) % _DAY) - _DAY / 2
    ref = max(after, 0.0) if not math.isnan(after) else 0.0
    offset = (tod - start_tod) % _DAY
    while offset <= ref:
        offset += _DAY
    return offset


def _seconds_of_day(ts: pd.Timestamp | None) -> float:
    assert ts is not None
    return ts.hour * 3600.0 + ts.minute * 60.0 + ts.second + ts.microsecond / 1e6


def resolve_lights(
    file_lights: tuple[float, float],
    recording_start: str | None,
    tables: Mapping[str, Mapping[str, object] | None],
    *,
    name: str,
) -> tuple[float, float, str]:
    """Lights off / on (seconds) of one recording and where they came from.

    Parameters
    ----------
    file_lights : (float, float)
        Lights off / on found in the file (NaN where not).
    recording_start : str or None
        Clock time of ``onset_s = 0`` from the file.
    tables : mapping
        ``{"recordings": row or None, "nights": row or None}``: rows with any of
        ``lights_off_s, lights_on_s, lights_off, lights_on, recording_start``.
    name : str
        The file, for messages.

    Returns
    -------
    (off, on, source)
        ``source`` is one of :data:`LIGHTS_SOURCES` when both ends come from the same place,
        else ``"<off source>/<on source>"`` (e.g. ``"file/none"``).

    Examples
    --------
    >>> resolve_lights((60.0, float("nan")), None, {"recordings": {"lights_on_s": "900"}},
    ...                name="a.edf")
    (60.0, 900.0, 'file/recordings')
    >>> resolve_lights((float("nan"), float("nan")), None,
    ...                {"recordings": {"recording_start": "22:40"},
    ...                 "nights": {"lights_off": "23:10", "lights_on": "06:40"}}, name="a.csv")
    (1800.0, 28800.0, 'nights')
    """
    off, on = file_lights
    off_src = "file" if not math.isnan(off) else "none"
    on_src = "file" if not math.isnan(on) else "none"
    # the start: the file's, else the first table's that gives one (a recordings table's
    # recording_start also places the nights table's clock times)
    starts = [_clean(row.get("recording_start")) for row in tables.values() if row]
    recording_start = recording_start or next((s for s in starts if s), None)
    for source in ("recordings", "nights"):
        row = tables.get(source)
        if not row:
            continue
        start = recording_start
        if off_src == "none":
            value = _pick(row, "off")
            off = lights_seconds(value, start, what=f"lights_off of {name} ({source} table)")
            off_src = source if not math.isnan(off) else "none"
        if on_src == "none":
            value = _pick(row, "on")
            on = lights_seconds(
                value, start, what=f"lights_on of {name} ({source} table)", after=off
            )
            on_src = source if not math.isnan(on) else "none"
    source = off_src if off_src == on_src else f"{off_src}/{on_src}"
    return off, on, source


def _missing(value: object) -> bool:
    """None, NaN, NaT or pandas' NA (a typed table's empty cell)."""
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _clean(value: object) -> str | None:
    if _missing(value):
        return None
    text = str(value).strip()
    return text or None


def _pick(row: Mapping[str, object], end: str) -> object:
    seconds = _clean(row.get(f"lights_{end}_s"))
    return seconds if seconds is not None else _clean(row.get(f"lights_{end}"))
