"""The study design as a REDCap longitudinal project: arms, events, instrument mapping.

A studykit study has four tables that people enter in REDCap: ``roster`` (one row per
participant), ``periods`` (participant x period), ``nights`` (participant x period x night)
and ``diary`` (participant x period x day). REDCap holds them as *instruments* (forms) on
*events*. :func:`design_events` lays the design out as REDCap expects it:

==================  =========================================  =======================
event               instruments on it                          keys the event supplies
==================  =========================================  =======================
``screening``       roster                                     (none)
``period_<p>``      periods, diary (a repeating instrument)    period = p
``p<p>_<night>``    nights                                     period = p, night
==================  =========================================  =======================

The diary repeats within its period event; its ``day`` is a field of the form. The same
layout is written as the studykit *event map* (``redcap_event_name, table, period, night,
day``), which :func:`studykit.redcap.records.import_records` reads to turn a REDCap export
back into study tables. A lab whose REDCap project is laid out differently writes its own
event map with the same columns (see :func:`read_event_map`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from studykit.dictionary import DataDictionary
from studykit.errors import InputError
from studykit.io import read_table_or_frame

__all__ = [
    "EVENT_TABLES",
    "EVENT_MAP_COLUMNS",
    "RedcapDesign",
    "design_events",
    "read_event_map",
    "unique_event_name",
]

#: The study tables a REDCap project holds (epoch-by-epoch hypnograms are files, not forms).
EVENT_TABLES = ("roster", "periods", "nights", "diary")

#: Columns of the studykit event map; ``period``, ``night`` and ``day`` may be empty (the
#: form then supplies the key) or ``instance`` / ``instance-1`` (the repeat instance number,
#: optionally offset).
EVENT_MAP_COLUMNS = ("redcap_event_name", "table", "period", "night", "day", "event_label")

_KEY_COLUMNS = ("period", "night", "day")
_INSTANCE_RE = re.compile(r"^instance\s*(?:([+-])\s*(\d+))?$", re.IGNORECASE)


def unique_event_name(event_name: str, arm: int = 1) -> str:
    """REDCap's unique event name for an event label in an arm.

    REDCap lower-cases the label, turns runs of other characters into ``_``, keeps the
    first 18 characters and appends ``_arm_<n>``.

    Examples
    --------
    >>> unique_event_name("P1 night baseline")
    'p1_night_baseline_arm_1'
    >>> unique_event_name("Screening", arm=2)
    'screening_arm_2'
    """
    base = re.sub(r"[^a-z0-9]+", "_", event_name.lower()).strip("_")[:18].rstrip("_")
    return f"{base}_arm_{arm}"


@dataclass(frozen=True)
class RedcapDesign:
    """A REDCap longitudinal layout of the study.

    Attributes
    ----------
    arms : DataFrame
        ``arm_num, name`` (REDCap's arms import format).
    events : DataFrame
        ``event_name, arm_num, unique_event_name, custom_event_label`` (REDCap's events
        import format; REDCap derives ``unique_event_name`` from ``event_name``).
    instrument_events : DataFrame
        ``arm_num, unique_event_name, form`` (REDCap's instrument-event mapping format).
    repeating : DataFrame
        ``event_name, form_name, custom_form_label`` (REDCap's repeating instruments format).
    event_map : DataFrame
        The studykit event map (:data:`EVENT_MAP_COLUMNS`).
    """

    arms: pd.DataFrame
    events: pd.DataFrame
    instrument_events: pd.DataFrame
    repeating: pd.DataFrame
    event_map: pd.DataFrame

    def write(self, stem: str | Path) -> dict[str, Path]:
        """Write the five files as ``<stem>_arms.csv`` ... ``<stem>_event_map.csv``.

        Returns
        -------
        dict
            ``{"arms": path, "events": path, "instrument_events": path, "repeating": path,
            "event_map": path}``.
        """
        stem = Path(stem)
        out: dict[str, Path] = {}
        for name in ("arms", "events", "instrument_events", "repeating", "event_map"):
            path = stem.with_name(f"{stem.name}_{name}.csv")
            getattr(self, name).to_csv(path, index=False, encoding="utf-8", lineterminator="\n")
            out[name] = path
        return out


def design_events(
    dictionary: DataDictionary,
    *,
    periods: list[int] | None = None,
    nights: list[str] | None = None,
    arm: int = 1,
) -> RedcapDesign:
    """Lay the study design out as REDCap arms, events and instrument mapping.

    Parameters
    ----------
    dictionary : DataDictionary
        Gives the tables (forms) and the design: the periods (``periods.period`` range) and
        the night labels (``nights.night`` codes), unless given explicitly.
    periods : list of int, optional
        Treatment periods (default: ``periods.period`` minimum to maximum).
    nights : list of str, optional
        Night labels (default: the codes of ``nights.night``).
    arm : int
        The REDCap arm number (default 1).

    Returns
    -------
    RedcapDesign

    Raises
    ------
    InputError
        Two events would get the same REDCap unique name (night labels that agree in their
        first characters); pass shorter ``nights``.

    Examples
    --------
    >>> from studykit.dictionary import load_dictionary
    >>> d = design_events(load_dictionary())
    >>> d.event_map.head(4).to_dict("records")[1]
    {'redcap_event_name': 'period_1_arm_1', 'table': 'periods', 'period': '1', 'night': '', 'day': '', 'event_label': 'Period 1'}
    >>> sorted(set(d.instrument_events["form"]))
    ['diary', 'nights', 'periods', 'roster']
    """
    tables = [t for t in EVENT_TABLES if t in dictionary.tables]
    if periods is None:
        if "periods" in tables:
            v = dictionary.get("periods", "period")
            lo = int(v.minimum) if isinstance(v.minimum, float) else 1
            hi = int(v.maximum) if isinstance(v.maximum, float) else lo
            periods = list(range(lo, hi + 1))
        else:
            periods = [1]
    if nights is None:
        nights = dictionary.levels("nights", "night") if "nights" in tables else []
    events: list[dict[str, object]] = []
    mapping: list[dict[str, object]] = []
    emap: list[dict[str, str]] = []

    def add(label: str, forms: Sequence[tuple[str, dict[str, str]]]) -> None:
        name = unique_event_name(label, arm)
        if any(e["unique_event_name"] == name for e in events):
            raise InputError(
                f"Two REDCap events would both be named {name!r}: REDCap keeps the first 18 "
                "characters of an event's name. Use shorter night labels (--nights)."
            )
        events.append(
            {
                "event_name": label,
                "arm_num": arm,
                "unique_event_name": name,
                "custom_event_label": "",
            }
        )
        for form, keys in forms:
            mapping.append({"arm_num": arm, "unique_event_name": name, "form": form})
            emap.append(
                {
                    "redcap_event_name": name,
                    "table": form,
                    **{k: keys.get(k, "") for k in _KEY_COLUMNS},
                    "event_label": label,
                }
            )

    if "roster" in tables:
        add("Screening", [("roster", {})])
    repeating = []
    for p in periods:
        forms = [(t, {"period": str(p)}) for t in ("periods", "diary") if t in tables]
        if forms:
            add(f"Period {p}", forms)
            if "diary" in tables:
                repeating.append(
                    {
                        "event_name": unique_event_name(f"Period {p}", arm),
                        "form_name": "diary",
                        "custom_form_label": "Day [day]",
                    }
                )
        for night in nights:
            add(f"P{p} night {night}", [("nights", {"period": str(p), "night": night})])
    return RedcapDesign(
        arms=pd.DataFrame([{"arm_num": arm, "name": f"Arm {arm}"}]),
        events=pd.DataFrame(events),
        instrument_events=pd.DataFrame(mapping),
        repeating=pd.DataFrame(repeating, columns=["event_name", "form_name", "custom_form_label"]),
        event_map=pd.DataFrame(emap, columns=list(EVENT_MAP_COLUMNS)),
    )


def read_event_map(
    path_or_frame: str | Path | pd.DataFrame, dictionary: DataDictionary
) -> pd.DataFrame:
    """Read and check a studykit event map (which REDCap event feeds which study table).

    Parameters
    ----------
    path_or_frame : str, Path or DataFrame
        CSV with columns ``redcap_event_name, table`` and optionally ``period, night, day,
        event_label``. A key column may be empty (the form supplies it), a value, or
        ``instance`` / ``instance-1`` (the repeat instance number, offset).
    dictionary : DataDictionary
        The study's data dictionary (tables and key codes are checked against it).

    Returns
    -------
    DataFrame
        One row per (event, table), every column of :data:`EVENT_MAP_COLUMNS` as strings.

    Raises
    ------
    InputError
        Missing columns, an unknown table, an event mapped twice to one table, or a key
        value the dictionary does not allow (e.g. a night label that is not a code).

    Examples
    --------
    >>> from studykit.dictionary import load_dictionary
    >>> m = read_event_map(pd.DataFrame({"redcap_event_name": ["visit_1_arm_1"],
    ...                                  "table": ["periods"], "period": ["1"]}),
    ...                    load_dictionary())
    >>> m.loc[0, ["table", "period", "night"]].tolist()
    ['periods', '1', '']
    """
    frame, source = read_table_or_frame(path_or_frame, name="<event map>")
    frame = frame.rename(columns=lambda c: str(c).strip().lower())
    missing = [c for c in ("redcap_event_name", "table") if c not in frame.columns]
    if missing:
        raise InputError(
            f"{source} is not an event map: it lacks the column(s) {', '.join(missing)}. An "
            "event map has one row per REDCap event and study table, with columns "
            "redcap_event_name, table (roster|periods|nights|diary), period, night, day "
            "(empty where the form supplies the value). `studykit dictionary export-redcap` "
            "writes one for the studykit layout."
        )
    for c in EVENT_MAP_COLUMNS:
        if c not in frame.columns:
            frame[c] = ""
    frame = frame[list(EVENT_MAP_COLUMNS)].map(lambda x: str(x).strip())
    problems: list[str] = []
    for i, rec in enumerate(frame.to_dict("records")):
        where = f"row {i + 2}"
        table = rec["table"]
        if table not in dictionary.tables or table not in EVENT_TABLES:
            problems.append(
                f"{where}: table {table!r} is not one of {', '.join(EVENT_TABLES)} "
                "(the study tables a REDCap project holds)"
            )
            continue
        if not rec["redcap_event_name"]:
            problems.append(f"{where}: redcap_event_name is empty")
        keys = set(dictionary.keys(table))
        for k in _KEY_COLUMNS:
            value = rec[k]
            if not value:
                continue
            if k not in keys:
                problems.append(
                    f"{where}: column {k} is {value!r} but table {table!r} has no key {k!r}; "
                    "leave it empty"
                )
            elif _INSTANCE_RE.match(value):
                continue
            else:
                v = dictionary.get(table, k)
                if v.codes and value not in v.levels:
                    problems.append(f"{where}: {k} {value!r} is not one of {', '.join(v.levels)}")
                elif v.type == "integer" and not re.fullmatch(r"-?\d+", value):
                    problems.append(f"{where}: {k} {value!r} is not a whole number")
    dup = frame.duplicated(["redcap_event_name", "table"], keep=False)
    if dup.any():
        pairs = sorted(
            set(zip(frame.loc[dup, "redcap_event_name"], frame.loc[dup, "table"], strict=True))
        )
        problems.append(
            "an event is mapped to the same table twice: "
            + ", ".join(f"{e} -> {t}" for e, t in pairs[:8])
        )
    if problems:
        raise InputError(
            f"Event map {source} has {len(problems)} problem(s):\n  - "
            + "\n  - ".join(problems[:20])
            + ("\n  ..." if len(problems) > 20 else "")
            + "\nFix the event map and run again."
        )
    return frame.reset_index(drop=True)


def instance_key(spec: str, instance: str) -> str | None:
    """The key value an event-map cell gives for a repeat instance, or None if not computed.

    Examples
    --------
    >>> instance_key("instance-1", "3"), instance_key("instance", "2"), instance_key("2", "5")
    ('2', '2', None)
    """
    m = _INSTANCE_RE.match(spec)
    if not m:
        return None
    if not re.fullmatch(r"\d+", instance or ""):
        return ""
    n = int(instance)
    if m.group(1):
        n = n + int(m.group(2)) if m.group(1) == "+" else n - int(m.group(2))
    return str(n)
