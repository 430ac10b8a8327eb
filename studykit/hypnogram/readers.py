"""Readers of the hypnogram formats researchers have, all giving one epoch table.

Formats (``format=`` of :func:`read_hypnogram`; ``"auto"`` picks by extension and content):

* ``"text"``: ``.csv``, ``.tsv``, ``.txt``. Either one stage per line (labels or integers,
  an optional header line such as ``stage``), or columns with a header naming a stage column
  (``stage``, ``sleep_stage``, ``hypnogram``, ``label``, ``description``, ``annotation``,
  ``event``), optionally ``epoch`` and ``onset_s`` / ``onset``; with ``onset`` and
  ``duration`` columns (the BIDS ``_hypnogram.tsv`` proposal, vendor start / duration
  exports) rows are annotations that are expanded to epochs. UTF-8 (with or without BOM) and
  UTF-16 with BOM are read; comment lines start with ``#``.
* ``"edf"``: EDF+ files with stage annotations (Sleep-EDF ``*-Hypnogram.edf``), read with
  edfio. Annotations without duration are point events: they are kept in
  ``.attrs["events"]``, not turned into epochs.
* ``"nsrr"``: NSRR XML (``PSGAnnotation/ScoredEvents/ScoredEvent`` with ``EventType``
  ``Stages|Stages``); other scored events (arousals, apnoeas ...) are counted in
  ``.attrs["events"]``.
* ``"profusion"``: Compumedics Profusion XML (``CMPStudyConfig``: ``EpochLength`` and a list
  of ``SleepStage`` integers, 0 W, 1-4 S1-S4, 5 REM, 6 movement, 9 unscored, 10 artefact).
"""

from __future__ import annotations

import csv
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd

from studykit.errors import HypnogramError
from studykit.hypnogram.files import (
    PROBLEM_COLUMNS,
    HypnogramFile,
    scan_hypnograms,
)
from studykit.hypnogram.lights import resolve_lights
from studykit.hypnogram.stages import STAGE_DTYPE, stage_codes
from studykit.io import refuse_special_file

__all__ = [
    "FORMATS",
    "MAX_NIGHT_HOURS",
    "RECORDING_COLUMNS",
    "HypnogramSet",
    "read_hypnogram",
    "read_hypnograms",
    "read_files",
]

logger = logging.getLogger(__name__)

Format = Literal["auto", "text", "edf", "nsrr", "profusion"]
FORMATS: tuple[str, ...] = ("auto", "text", "edf", "nsrr", "profusion")

_STAGE_COLUMNS = (
    "stage",
    "stages",
    "sleep_stage",
    "sleepstage",
    "sleep stage",
    "hypnogram",
    "label",
    "description",
    "annotation",
    "event",
    "eventconcept",
)
_ONSET_COLUMNS = ("onset_s", "onset", "start_s", "start")
_DURATION_COLUMNS = ("duration_s", "duration", "dur")
_TOL_S = 1e-3  # EDF+ onsets have 100 ns resolution; XML and text files a few decimals
_EPOCHS_COLUMNS = ["epoch", "onset_s", "stage"]
#: Default bound on a stage annotation and on a whole scored recording (hours).
MAX_NIGHT_HOURS = 48.0
_LIGHTS_OFF = re.compile(r"^\s*lights?[\s_-]*(off|out)\b", re.IGNORECASE)
_LIGHTS_ON = re.compile(r"^\s*lights?[\s_-]*on\b", re.IGNORECASE)


class _FileInfo(NamedTuple):
    """What a reader learns from a file besides the epochs."""

    events: list[dict]
    recording_start: str | None = None
    lights_off_s: float = float("nan")
    lights_on_s: float = float("nan")


def _lights(points: Iterable[tuple[float, str]]) -> tuple[float, float]:
    """Lights off / on (seconds) from point annotations ``(onset, text)``: the first "Lights
    off" and the last "Lights on" (NaN where the file has none)."""
    off = [t for t, text in points if _LIGHTS_OFF.match(text)]
    on = [t for t, text in points if _LIGHTS_ON.match(text)]
    if len(off) > 1 or len(on) > 1:
        logger.info("several lights off / on annotations: the first off and last on are used")
    return (min(off) if off else float("nan")), (max(on) if on else float("nan"))


def read_hypnogram(
    path: str | PathLike[str],
    *,
    epoch_length: float = 30.0,
    format: Format = "auto",
    scheme: Literal["auto", "yasa", "rk"] = "auto",
    max_night_hours: float = MAX_NIGHT_HOURS,
) -> pd.DataFrame:
    """Read one night's hypnogram file into an epoch table.

    Parameters
    ----------
    path : str or path-like
        The file.
    epoch_length : float, default 30.0
        Seconds per epoch. A file that declares another epoch length (NSRR / Profusion XML
        ``EpochLength``, an ``onset`` column spaced differently) is rejected with an error
        saying which value to pass.
    format : {"auto", "text", "edf", "nsrr", "profusion"}, default "auto"
        File format; ``"auto"`` decides from the extension (``.edf``; ``.xml`` by its root
        element; anything else as text).
    scheme : {"auto", "yasa", "rk"}, default "auto"
        How integer stage codes in text files are read (see :func:`normalize_stages`).
    max_night_hours : float, default 48
        The longest plausible recording: a stage annotation, or the scored night as a whole,
        lasting longer is an error (a corrupt or hostile file would otherwise make the
        reader allocate an epoch array of its claimed length).

    Returns
    -------
    pandas.DataFrame
        Columns ``epoch`` (int64, 0 for the first scored epoch), ``onset_s`` (float64,
        seconds from the start of the recording) and ``stage`` (categorical with the
        categories :data:`STAGES`). ``.attrs`` holds ``source``, ``format``,
        ``epoch_length``, ``events`` (annotations that are not stages),
        ``recording_start`` (the clock time of ``onset_s = 0`` as an ISO string when the
        file says: EDF+ header, NSRR ``Recording Start Time``; else None) and
        ``lights_off_s`` / ``lights_on_s`` (seconds, from "Lights off" / "Lights on"
        annotations of EDF+ and NSRR files; NaN when the file has none).

    Raises
    ------
    HypnogramError
        Missing, empty, truncated or undecodable files; an EDF+ header whose number of data
        records disagrees with the file size; XML with a DTD or entity declaration (refused:
        XML entity attacks); unknown stage labels; gaps or overlaps between stage
        annotations; durations that are not a multiple of the epoch length or exceed
        ``max_night_hours``; an epoch length that disagrees with the file's. Nothing is
        dropped silently.

    Notes
    -----
    Stage annotations (EDF+, NSRR XML, onset / duration tables) span one or more epochs: each
    is expanded to ``duration / epoch_length`` epochs. The annotations must tile the night:
    each starts where the previous ends (tolerance 1 ms). R&K stages 3 and 4 become N3;
    movement time, artefact and unscored epochs keep their own codes (see
    :func:`normalize_stages`). Epochs are numbered from the first stage annotation; when it
    does not start at 0 s, ``onset_s`` keeps the true offset from the recording start.
    Formats: Sleep-EDF [1]_, NSRR [2]_.

    References
    ----------
    .. [1] Kemp B et al. Sleep-EDF Database Expanded, PhysioNet.
       https://physionet.org/content/sleep-edfx/
    .. [2] National Sleep Research Resource, annotation XML (``PSGAnnotation``).
       https://sleepdata.org/

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "P01_p1_baseline.txt"
    >>> _ = path.write_text("W\\nN1\\nN2\\nSleep stage 4\\nREM\\n")
    >>> read_hypnogram(path)
       epoch  onset_s stage
    0      0      0.0     W
    1      1     30.0    N1
    2      2     60.0    N2
    3      3     90.0    N3
    4      4    120.0     R
    """
    if format not in FORMATS:
        raise HypnogramError(
            f"Invalid format {format!r}. Expected one of {', '.join(map(repr, FORMATS))}."
        )
    if not (np.isfinite(epoch_length) and epoch_length > 0):
        raise HypnogramError(
            f"epoch_length must be a positive number of seconds, got {epoch_length!r}."
        )
    if not (np.isfinite(max_night_hours) and max_night_hours > 0):
        raise HypnogramError(
            f"max_night_hours must be a positive number of hours, got {max_night_hours!r}."
        )
    max_s = float(max_night_hours) * 3600.0
    if epoch_length > max_s:
        raise HypnogramError(
            f"epoch_length={epoch_length:g} s is longer than max_night_hours="
            f"{max_night_hours:g} h; epochs last seconds (30 s in AASM scoring)."
        )
    path = Path(path)
    if not path.exists():
        raise HypnogramError(f"{path}: no such file.")
    if path.is_dir():
        raise HypnogramError(f"{path}: is a directory; use read_hypnograms() for a directory.")
    special = refuse_special_file(path)
    if special is not None:
        raise HypnogramError(f"{path}: {special}")
    data = path.read_bytes()
    if not data.strip():
        raise HypnogramError(f"{path}: the file is empty; there is no epoch to read.")
    fmt = format if format != "auto" else _detect_format(path, data)
    try:
        if fmt == "edf":
            table, info = _read_edf(data, epoch_length, max_s)
        elif fmt == "nsrr":
            table, info = _read_nsrr(data, epoch_length, max_s)
        elif fmt == "profusion":
            table, info = _read_profusion(data, epoch_length, max_s)
        else:
            table, info = _read_text(data, path.suffix.lower(), epoch_length, scheme, max_s)
    except HypnogramError as exc:
        raise HypnogramError(f"{path}: {exc}") from exc.__cause__
    table.attrs = {
        "source": str(path),
        "format": fmt,
        "epoch_length": float(epoch_length),
        "events": info.events,
        "recording_start": info.recording_start,
        "lights_off_s": info.lights_off_s,
        "lights_on_s": info.lights_on_s,
    }
    logger.debug("read %s (%s): %d epochs", path, fmt, len(table))
    return table


def _detect_format(path: Path, data: bytes) -> str:
    suffix = path.suffix.lower()
    if suffix in (".edf", ".rec") or data[:8] == b"0       ":
        return "edf"
    if suffix == ".xml" or data.lstrip()[:5] == b"<?xml":
        head = data[:4096].decode("utf-8", errors="replace")
        if "CMPStudyConfig" in head:
            return "profusion"
        if "PSGAnnotation" in head or "ScoredEvent" in head:
            return "nsrr"
        raise HypnogramError(
            f"{path}: XML file that is neither NSRR (PSGAnnotation) nor Compumedics Profusion "
            "(CMPStudyConfig); pass format='nsrr' or format='profusion' if it is one of them."
        )
    return "text"


def _check_night(n_epochs: float, epoch_length: float, max_s: float) -> None:
    if n_epochs * epoch_length > max_s:
        raise HypnogramError(
            f"the scored night lasts {n_epochs * epoch_length / 3600:.4g} h "
            f"({n_epochs:.0f} epochs of {epoch_length:g} s), more than the plausible maximum "
            f"of {max_s / 3600:g} h (max_night_hours); the file is corrupt, or pass a larger "
            "max_night_hours for a longer recording."
        )


def _table(
    codes: np.ndarray, first_onset: float, epoch_length: float, max_s: float = np.inf
) -> pd.DataFrame:
    n = codes.size
    _check_night(n, epoch_length, max_s)
    epoch = np.arange(n, dtype=np.int64)
    return pd.DataFrame(
        {
            "epoch": epoch,
            "onset_s": first_onset + epoch * float(epoch_length),
            "stage": pd.Categorical.from_codes(codes, dtype=STAGE_DTYPE),
        }
    )


def _fmt_list(items: Sequence[object], cap: int = 5) -> str:
    shown = "; ".join(str(i) for i in items[:cap])
    return shown + (f"; and {len(items) - cap} more" if len(items) > cap else "")


def _expand_annotations(
    onsets: np.ndarray,
    durations: np.ndarray,
    labels: Sequence[object] | np.ndarray,
    epoch_length: float,
    *,
    scheme: str = "auto",
    max_s: float = np.inf,
) -> pd.DataFrame:
    """Expand stage annotations (onset, duration, label) to epochs; check they tile the night.

    Durations are bounded by ``max_s`` before anything of the night's length is allocated.
    """
    if len(onsets) == 0:
        raise HypnogramError("no sleep stage annotation found; there is no epoch to read.")
    onsets = np.asarray(onsets, dtype=np.float64)
    durations = np.asarray(durations, dtype=np.float64)
    labels = np.asarray(list(labels), dtype=object)
    codes = stage_codes(labels, scheme=scheme)  # type: ignore[arg-type]  # checked by callers
    if not (np.isfinite(onsets).all() and np.isfinite(durations).all()):
        bad = np.flatnonzero(~(np.isfinite(onsets) & np.isfinite(durations)))
        raise HypnogramError(
            f"{len(bad)} stage annotation(s) have a missing onset or duration (first: "
            f"annotation {int(bad[0])}, {labels[bad[0]]!r})."
        )
    long = np.flatnonzero(durations > max_s)
    if long.size:
        i = int(long[0])
        raise HypnogramError(
            f"{long.size} stage annotation(s) last longer than the plausible maximum of "
            f"{max_s / 3600:g} h (max_night_hours), first {labels[i]!r} at {onsets[i]:g} s "
            f"lasting {durations[i]:g} s; the file is corrupt, or pass a larger max_night_hours."
        )
    order = np.argsort(onsets, kind="stable")
    onsets, durations, labels, codes = onsets[order], durations[order], labels[order], codes[order]
    if onsets[0] < -_TOL_S:
        raise HypnogramError(f"a stage annotation starts before the recording ({onsets[0]} s).")
    n_epochs = durations / epoch_length
    whole = np.rint(n_epochs)
    bad = np.flatnonzero((np.abs(n_epochs - whole) * epoch_length > _TOL_S) | (whole < 1))
    if bad.size:
        items = [f"{labels[i]!r} at {onsets[i]:g} s lasting {durations[i]:g} s" for i in bad]
        raise HypnogramError(
            f"{bad.size} stage annotation(s) do not last a whole number of {epoch_length:g}-s "
            f"epochs: {_fmt_list(items)}. If the scoring used another epoch length pass "
            "epoch_length=...; otherwise the file is inconsistent."
        )
    ends = onsets + durations
    step = onsets[1:] - ends[:-1]
    gaps = np.flatnonzero(step > _TOL_S)
    overlaps = np.flatnonzero(step < -_TOL_S)
    if gaps.size or overlaps.size:
        parts = []
        if gaps.size:
            items = [f"{ends[i]:g} s to {onsets[i + 1]:g} s (after {labels[i]!r})" for i in gaps]
            parts.append(f"{gaps.size} gap(s) between stage annotations: {_fmt_list(items)}")
        if overlaps.size:
            items = [
                f"{labels[i + 1]!r} at {onsets[i + 1]:g} s starts before {labels[i]!r} ends at "
                f"{ends[i]:g} s"
                for i in overlaps
            ]
            parts.append(f"{overlaps.size} overlap(s): {_fmt_list(items)}")
        raise HypnogramError(
            "; ".join(parts) + ". Stage annotations must follow each other without gap or "
            "overlap; score missing time as unscored ('Sleep stage ?') explicitly."
        )
    counts = whole.astype(np.int64)
    _check_night(float(counts.sum()), epoch_length, max_s)
    epoch_codes = np.repeat(codes, counts)
    return _table(epoch_codes, float(onsets[0]), epoch_length, max_s)


# ----------------------------------------------------------------------------------- EDF+ --


def _edf_header_check(data: bytes) -> None:
    """The data-record count of the EDF header must match the file size.

    EDF header (256 bytes + 256 per signal): bytes 184-192 header size, 236-244 number of
    data records (-1: unknown), 252-256 number of signals; per signal, the samples per data
    record at ``256 + 216 ns + 8 i``. Each sample is 2 bytes, so the file holds exactly
    ``header + records x 2 x sum(samples)`` bytes.
    """
    size = len(data)
    if size < 256:
        raise HypnogramError(
            f"is {size} bytes long, shorter than the 256-byte EDF header: truncated or not EDF."
        )

    def field(lo: int, hi: int, what: str) -> int:
        text = data[lo:hi].decode("ascii", errors="replace").strip()
        try:
            return int(text)
        except ValueError as exc:
            raise HypnogramError(
                f"EDF header field {what!r} (bytes {lo}-{hi}) is {text!r}, not a whole number: "
                "the file is corrupt or not EDF."
            ) from exc

    n_signals = field(252, 256, "number of signals")
    header_bytes = field(184, 192, "number of bytes in header")
    n_records = field(236, 244, "number of data records")
    expected_header = 256 * (n_signals + 1)
    if n_signals < 0 or header_bytes != expected_header:
        raise HypnogramError(
            f"EDF header says {header_bytes} header bytes for {n_signals} signal(s) "
            f"(expected {expected_header}): the file is corrupt or not EDF."
        )
    if size < header_bytes:
        raise HypnogramError(
            f"the EDF header declares {header_bytes} header bytes but the file has only {size} "
            "bytes: truncated."
        )
    base = 256 + 216 * n_signals
    samples = [
        field(base + 8 * i, base + 8 * i + 8, f"samples of signal {i + 1}")
        for i in range(n_signals)
    ]
    record_bytes = 2 * sum(samples)
    if record_bytes <= 0:
        raise HypnogramError("EDF header declares no sample per data record: nothing to read.")
    body = size - header_bytes
    held, extra = divmod(body, record_bytes)
    if n_records == -1:  # allowed while recording; the size decides
        if extra:
            raise HypnogramError(
                f"the EDF file holds {held} complete data records and {extra} extra bytes "
                "(the header leaves the record count open): truncated."
            )
        return
    if n_records < 0 or held != n_records or extra:
        part = f" and {extra} bytes of an incomplete one" if extra else ""
        raise HypnogramError(
            f"the EDF header says {n_records} data records but the file holds {held}{part} "
            f"({size} bytes; {record_bytes} bytes per record): the file is truncated or its "
            "header is wrong. Re-export or re-copy the file."
        )


def _read_edf(data: bytes, epoch_length: float, max_s: float) -> tuple[pd.DataFrame, _FileInfo]:
    import warnings

    import edfio  # the EDF library is needed only here

    _edf_header_check(data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            edf = edfio.read_edf(data, lazy_load_data=True)
            annotations = list(edf.annotations)
        except (ValueError, IndexError, UnicodeDecodeError, TypeError) as exc:
            # edfio's errors for malformed files (the header was checked above)
            raise HypnogramError(
                f"cannot be read as EDF+ ({type(exc).__name__}: {exc}); the file is corrupt "
                "or not an EDF+ file."
            ) from exc
    if caught:  # edfio warns about inconsistencies it reads past: never ignore them
        raise HypnogramError(
            "edfio warns while reading it: "
            + "; ".join(str(w.message) for w in caught[:3])
            + ". The file is inconsistent; re-export it."
        )
    stage_ann = [a for a in annotations if a.duration is not None and a.duration > 0]
    points = [a for a in annotations if not (a.duration is not None and a.duration > 0)]
    events = [{"onset_s": float(a.onset), "duration_s": a.duration, "text": a.text} for a in points]
    if not stage_ann:
        raise HypnogramError(
            f"the EDF+ file has no annotation with a duration ({len(annotations)} annotation(s) "
            "in all); a hypnogram needs stage annotations such as 'Sleep stage W' lasting 30 s "
            "or more."
        )
    lights = [(float(a.onset), a.text) for a in annotations if _is_lights(a.text)]
    stage_ann = [a for a in stage_ann if not _is_lights(a.text)]
    table = _expand_annotations(
        np.array([a.onset for a in stage_ann]),
        np.array([a.duration for a in stage_ann]),
        [a.text for a in stage_ann],
        epoch_length,
        max_s=max_s,
    )
    try:
        start: str | None = edf.startdatetime.isoformat()
    except (ValueError, TypeError, AttributeError):  # anonymized start date ("X")
        start = None
    return table, _FileInfo(events, start, *_lights(lights))


def _is_lights(text: str) -> bool:
    return bool(_LIGHTS_OFF.match(text) or _LIGHTS_ON.match(text))


# ------------------------------------------------------------------------------------ XML --


class _RootReached(Exception):
    """The prolog of an XML document is over (no DTD can follow)."""


def _refuse_dtd(data: bytes) -> None:
    """Refuse a document type declaration or entity declaration in the prolog.

    Hypnogram XML (NSRR, Profusion) never declares a DTD; one that does is either broken or an
    entity attack (XXE, "billion laughs"). Only the prolog is scanned: expat stops at the
    root element.
    """
    import xml.parsers.expat as expat

    parser = expat.ParserCreate()

    def refuse(name: str, *_: object) -> None:
        raise HypnogramError(
            f"declares a document type / entities ({name!r}); studykit refuses XML with a "
            "DTD or entity declarations (XML entity attacks: XXE, entity expansion). NSRR and "
            "Profusion files have none: remove the <!DOCTYPE ...> block."
        )

    def root(*_: object) -> None:
        raise _RootReached

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.StartElementHandler = root
    try:
        parser.Parse(data, True)
    except _RootReached:
        return
    except expat.ExpatError:
        return  # not well-formed: ElementTree reports it with its position


def _parse_xml(data: bytes) -> ET.Element:
    _refuse_dtd(data)
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise HypnogramError(
            f"is not well-formed XML ({exc}); the file is truncated or corrupt."
        ) from exc


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find_child(elem: ET.Element, name: str) -> ET.Element | None:
    for child in elem.iter():
        if _local(child.tag) == name:
            return child
    return None


def _declared_epoch_length(root: ET.Element, epoch_length: float) -> None:
    node = _find_child(root, "EpochLength")
    if node is None or not (node.text or "").strip():
        return
    try:
        declared = float(node.text or "")
    except ValueError as exc:
        raise HypnogramError(f"EpochLength {node.text!r} is not a number.") from exc
    if abs(declared - epoch_length) > _TOL_S:
        raise HypnogramError(
            f"the file declares {declared:g}-s epochs (EpochLength) but epoch_length="
            f"{epoch_length:g}; pass epoch_length={declared:g} to read it."
        )


def _read_nsrr(data: bytes, epoch_length: float, max_s: float) -> tuple[pd.DataFrame, _FileInfo]:
    root = _parse_xml(data)
    _declared_epoch_length(root, epoch_length)
    onsets, durations, labels = [], [], []
    other: dict[str, int] = {}
    points: list[tuple[float, str]] = []
    start: str | None = None
    n_events = 0
    for ev in root.iter():
        if _local(ev.tag) != "ScoredEvent":
            continue
        n_events += 1
        fields = {_local(c.tag): (c.text or "").strip() for c in ev}
        etype = fields.get("EventType", "")
        concept = fields.get("EventConcept", "")
        if not etype.startswith("Stages|"):
            other[concept or etype] = other.get(concept or etype, 0) + 1
            if concept.lower().startswith("recording start time"):
                start = _nsrr_clock(fields.get("ClockTime", ""))
            elif _is_lights(concept) or _is_lights(etype):
                try:
                    points.append((float(fields.get("Start", "")), concept or etype))
                except ValueError as exc:
                    raise HypnogramError(
                        f"event {n_events} ({concept or etype!r}) has a Start that is not a "
                        f"number ({fields.get('Start')!r})."
                    ) from exc
            continue
        try:
            onsets.append(float(fields.get("Start", "")))
            durations.append(float(fields.get("Duration", "")))
        except ValueError as exc:
            raise HypnogramError(
                f"stage event {n_events} ({concept!r}) has a Start or Duration that is not a "
                f"number (Start={fields.get('Start')!r}, Duration={fields.get('Duration')!r})."
            ) from exc
        labels.append(concept)
    if not labels:
        raise HypnogramError(
            f"no ScoredEvent with EventType 'Stages|Stages' ({n_events} scored event(s) in "
            "all); this NSRR file has no sleep staging."
        )
    table = _expand_annotations(
        np.array(onsets), np.array(durations), labels, epoch_length, max_s=max_s
    )
    events = [{"text": k, "count": v} for k, v in other.items()]
    return table, _FileInfo(events, start, *_lights(points))


def _nsrr_clock(text: str) -> str | None:
    """NSRR ``ClockTime`` (``00.00.00 22.15.00``: a dummy date, then the time) -> ``22:15:00``."""
    m = re.search(r"(\d{1,2})[.:](\d{2})[.:](\d{2})\s*$", text)
    if m is None:
        return None
    return f"{int(m[1]):02d}:{m[2]}:{m[3]}"


def _read_profusion(
    data: bytes, epoch_length: float, max_s: float
) -> tuple[pd.DataFrame, _FileInfo]:
    root = _parse_xml(data)
    _declared_epoch_length(root, epoch_length)
    container = _find_child(root, "SleepStages")
    if container is None:
        raise HypnogramError("Profusion XML without a SleepStages element: no staging.")
    values = [(c.text or "").strip() for c in container if _local(c.tag) == "SleepStage"]
    if not values:
        raise HypnogramError("Profusion XML with an empty SleepStages list: no epoch to read.")
    _check_night(len(values), epoch_length, max_s)
    codes = stage_codes(values, scheme="rk")
    return _table(codes, 0.0, epoch_length, max_s), _FileInfo([])


# ----------------------------------------------------------------------------------- text --


def _decode(data: bytes) -> str:
    bom = (
        "utf-16"
        if data[:2] in (b"\xff\xfe", b"\xfe\xff")
        else "utf-8"
        if data[:3] == b"\xef\xbb\xbf"
        else None
    )
    if bom is not None:
        try:
            return data.decode("utf-8-sig" if bom == "utf-8" else bom)
        except UnicodeDecodeError as exc:
            raise HypnogramError(
                f"starts with a {bom.upper()} byte-order mark but is not valid {bom.upper()} "
                f"text (byte {exc.start}: {exc.reason}); the file may be truncated or damaged. "
                "Export the hypnogram again (UTF-8 is safest)."
            ) from exc
    if b"\x00" in data[:1000]:
        raise HypnogramError(
            "looks binary (NUL bytes) and is not EDF or XML; for UTF-16 text, save it with a "
            "byte-order mark or as UTF-8."
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        logger.info("not UTF-8: decoded as Latin-1")
        return data.decode("latin-1")


def _read_text(
    data: bytes, suffix: str, epoch_length: float, scheme: str, max_s: float
) -> tuple[pd.DataFrame, _FileInfo]:
    text = _decode(data)
    raw_lines = text.splitlines()
    numbered = [
        (i + 1, line) for i, line in enumerate(raw_lines) if not line.lstrip().startswith("#")
    ]
    while numbered and not numbered[-1][1].strip():
        numbered.pop()  # trailing blank lines
    while numbered and not numbered[0][1].strip():
        numbered.pop(0)
    if not numbered:
        raise HypnogramError("has no data lines (only blank or comment lines).")
    first = numbered[0][1]
    # The first line decides (a .csv exported with a localized ';' separator is common).
    for delim in ("\t", ",", ";"):
        if delim in first:
            break
    else:
        delim = {".tsv": "\t", ".csv": ","}.get(suffix)  # type: ignore[assignment]
    line_numbers = [n for n, _ in numbered]
    if delim is None:
        rows = [[line.strip()] for _, line in numbered]
    else:
        rows = _split_rows(numbered, delim)
    width = max(len(r) for r in rows)
    if width == 1 or all(len(r) == 1 for r in rows):
        table = _one_column(rows, line_numbers, epoch_length, scheme, max_s)
    else:
        table = _columns(rows, line_numbers, epoch_length, scheme, max_s)
    return table, _FileInfo([])


def _split_rows(numbered: list[tuple[int, str]], delim: str) -> list[list[str]]:
    """Split each line into fields; a quote left open is an error naming its line (a quoted
    field may not run over into the next epoch's line)."""
    lines = [line for _, line in numbered]
    try:
        rows = list(csv.reader(lines, delimiter=delim, strict=True))
    except csv.Error:
        rows = []
    if len(rows) == len(lines):
        return rows
    for n, line in numbered:
        try:
            next(csv.reader([line], delimiter=delim, strict=True))
        except (csv.Error, StopIteration) as exc:
            raise HypnogramError(
                f"line {n} cannot be split into fields ({exc}): {line[:80]!r}; a quote "
                '(") is opened and not closed. Close or remove the quote.'
            ) from exc
    raise HypnogramError(  # every line splits alone, so a quoted field spans lines
        "a quoted field runs over several lines; each line must hold one epoch. Close or "
        "remove the quote."
    )


def _one_column(
    rows: list[list[str]], line_numbers: list[int], epoch_length: float, scheme: str, max_s: float
) -> pd.DataFrame:
    values = [r[0].strip() if r else "" for r in rows]
    if values[0].lower() in _STAGE_COLUMNS:
        values, line_numbers = values[1:], line_numbers[1:]
    if not values:
        raise HypnogramError("has a header but no epoch lines.")
    blank = [ln for v, ln in zip(values, line_numbers, strict=True) if not v]
    if blank:
        raise HypnogramError(
            f"{len(blank)} blank line(s) among the epochs (line(s) {_fmt_list(blank)}): each "
            "line is one epoch, so a blank line would shift the night. Write '?' for an "
            "unscored epoch."
        )
    codes = _codes_with_lines(values, line_numbers, scheme)
    return _table(codes, 0.0, epoch_length, max_s)


def _codes_with_lines(
    values: Sequence[str], line_numbers: Sequence[int], scheme: str
) -> np.ndarray:
    try:
        return stage_codes(values, scheme=scheme)  # type: ignore[arg-type]
    except HypnogramError as exc:
        m = re.search(r"position (\d+)", str(exc))
        where = f" (line {line_numbers[int(m.group(1))]})" if m else ""
        raise HypnogramError(f"{exc}{where}") from exc


def _pick(columns: Sequence[str], names: Iterable[str]) -> int | None:
    lowered = [c.strip().lower() for c in columns]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None


def _columns(
    rows: list[list[str]], line_numbers: list[int], epoch_length: float, scheme: str, max_s: float
) -> pd.DataFrame:
    header = [c.strip() for c in rows[0]]
    body, lines = rows[1:], line_numbers[1:]
    if not body:
        raise HypnogramError("has a header but no epoch rows.")
    stage_i = _pick(header, _STAGE_COLUMNS)
    if stage_i is None:
        raise HypnogramError(
            f"no stage column among {header}; name it one of "
            f"{', '.join(_STAGE_COLUMNS[:4])} (or give one stage per line without columns)."
        )
    short = [ln for r, ln in zip(body, lines, strict=True) if len(r) != len(header)]
    if short:
        raise HypnogramError(
            f"{len(short)} row(s) do not have the {len(header)} columns of the header (line(s) "
            f"{_fmt_list(short)}); the file may be truncated."
        )
    stages = [r[stage_i].strip() for r in body]
    onset_i = _pick(header, _ONSET_COLUMNS)
    dur_i = _pick(header, _DURATION_COLUMNS)
    epoch_i = _pick(header, ("epoch",))
    if onset_i is not None:
        onsets = _numbers([r[onset_i] for r in body], header[onset_i], lines)
    if onset_i is not None and dur_i is not None:
        durations = _numbers([r[dur_i] for r in body], header[dur_i], lines)
        return _expand_annotations(
            onsets, durations, stages, epoch_length, scheme=scheme, max_s=max_s
        )
    missing = [ln for s, ln in zip(stages, lines, strict=True) if not s]
    if missing:
        raise HypnogramError(
            f"{len(missing)} row(s) have an empty stage (line(s) {_fmt_list(missing)}); write "
            "'?' for an unscored epoch."
        )
    codes = _codes_with_lines(stages, lines, scheme)
    first_onset = 0.0
    if epoch_i is not None:
        epochs = _numbers([r[epoch_i] for r in body], header[epoch_i], lines)
        step = np.diff(epochs)
        bad = np.flatnonzero(step != 1)
        if bad.size:
            items = [f"line {lines[i + 1]}: {epochs[i]:g} -> {epochs[i + 1]:g}" for i in bad]
            raise HypnogramError(
                f"the epoch column is not consecutive ({bad.size} break(s): {_fmt_list(items)}); "
                "missing or duplicated epochs would shift the night."
            )
    if onset_i is not None:
        step = np.diff(onsets)
        bad = np.flatnonzero(np.abs(step - epoch_length) > _TOL_S)
        if bad.size:
            items = [f"line {lines[i + 1]}: {onsets[i]:g} -> {onsets[i + 1]:g}" for i in bad]
            spacing = np.median(step) if step.size else float("nan")
            raise HypnogramError(
                f"the {header[onset_i]!r} column is not spaced by epoch_length="
                f"{epoch_length:g} s ({bad.size} step(s): {_fmt_list(items)}; median spacing "
                f"{spacing:g} s). Pass the file's epoch length, or fix the gaps / overlaps."
            )
        first_onset = float(onsets[0])
    return _table(codes, first_onset, epoch_length, max_s)


def _numbers(values: list[str], column: str, lines: list[int]) -> np.ndarray:
    out = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(np.float64)
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        items = [f"line {lines[i]}: {values[i]!r}" for i in bad]
        raise HypnogramError(
            f"column {column!r} has {bad.size} value(s) that are not numbers: {_fmt_list(items)}."
        )
    return out


# ------------------------------------------------------------------------- many nights ----


#: Columns of :attr:`HypnogramSet.recordings` (one row per recording read).
RECORDING_COLUMNS = [
    "recording_id",
    "file",
    "participant_id",
    "period",
    "night",
    "identity",
    "recording_start",
    "lights_off_s",
    "lights_on_s",
    "lights_source",
]


@dataclass(frozen=True)
class HypnogramSet:
    """Result of :func:`read_hypnograms`; unpacks as ``epochs, problems``.

    Attributes
    ----------
    epochs : pandas.DataFrame
        Long epoch table ``recording_id, participant_id, period, night, epoch, onset_s,
        stage`` (dictionary table ``epochs`` plus the recording id), recordings in the order
        of the sorted file paths. ``recording_id``, ``participant_id`` and ``night`` are
        categoricals (categories in order of appearance), ``period`` nullable Int64 (empty
        where the file's identity does not give it), ``stage`` categorical with the
        categories :data:`STAGES`.
    problems : pandas.DataFrame
        One row per problem: ``file, participant_id, period, night, severity, rule,
        message``. ``severity`` is ``"error"`` (the file was not read) or ``"warning"``
        (skipped files, lights not found).
    recordings : pandas.DataFrame
        One row per recording read (:data:`RECORDING_COLUMNS`): its identity (and which rule
        gave it), the file, its start time and lights off / on in seconds from the start of
        the recording with ``lights_source`` (see :func:`~studykit.hypnogram.lights.resolve_lights`).
        Passing it as ``nights=`` to :func:`sleep_statistics` crops each night to the lights.
    """

    epochs: pd.DataFrame
    problems: pd.DataFrame
    recordings: pd.DataFrame

    def __iter__(self) -> Iterator[pd.DataFrame]:
        return iter((self.epochs, self.problems))


def read_hypnograms(
    paths_or_dir: str | PathLike[str] | Iterable[str | PathLike[str]] | Sequence[HypnogramFile],
    *,
    epoch_length: float = 30.0,
    format: Format = "auto",
    scheme: Literal["auto", "yasa", "rk"] = "auto",
    recordings: str | PathLike[str] | pd.DataFrame | None = None,
    pattern: str | re.Pattern[str] | None = None,
    lights: pd.DataFrame | None = None,
    max_night_hours: float = MAX_NIGHT_HOURS,
) -> HypnogramSet:
    """Read many nights' hypnograms into one long epoch table, collecting every problem.

    Parameters
    ----------
    paths_or_dir : path, directory, iterable of them, or scanned files
        Files with any names; a directory contributes its hypnogram files (see
        :func:`~studykit.hypnogram.files.scan_hypnograms`, which decides each file's
        identity: recordings table, ``pattern``, the project's
        ``{participant_id}_p{period}_{night}``, NSRR and Sleep-EDF names, else the stem).
        A list of :class:`HypnogramFile` (already scanned) is read as it is.
    epoch_length, format, scheme, max_night_hours
        As in :func:`read_hypnogram`, for every file.
    recordings, pattern
        As in :func:`~studykit.hypnogram.files.scan_hypnograms`.
    lights : pandas.DataFrame, optional
        A nights table with ``participant_id, period, night`` and lights off / on
        (``lights_off_s`` / ``lights_on_s``, or ``lights_off`` / ``lights_on`` clock times or
        date-times, optionally ``recording_start``), used where neither the file nor the
        recordings table gives them.

    Returns
    -------
    HypnogramSet
        ``(epochs, problems)`` and ``.recordings``. A file that cannot be read contributes no
        epoch and one ``problems`` row saying why; it does not stop the other files. A
        recording without lights off / on anywhere gets a warning row (``rule``
        ``no_lights``): its time in bed is the whole recording.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "P01_p1_baseline.txt").write_text("W\\nN1\\nN2\\n")
    >>> _ = (d / "P01_p1_post1.txt").write_text("W\\nN7\\n")
    >>> epochs, problems = read_hypnograms(d)
    >>> epochs[["participant_id", "period", "night", "epoch", "stage"]]
      participant_id  period     night  epoch stage
    0            P01       1  baseline      0     W
    1            P01       1  baseline      1    N1
    2            P01       1  baseline      2    N2
    >>> problems[["rule", "severity"]]
             rule severity
    0   no_lights  warning
    1  read_error    error
    """
    if (
        isinstance(paths_or_dir, Sequence)
        and all(isinstance(f, HypnogramFile) for f in paths_or_dir)
        and len(paths_or_dir)
    ):
        files = [f for f in paths_or_dir if isinstance(f, HypnogramFile)]
        scan_problems = pd.DataFrame(columns=PROBLEM_COLUMNS)
    else:
        files, scan_problems = scan_hypnograms(
            paths_or_dir,  # type: ignore[arg-type]
            recordings=recordings,
            pattern=pattern,
        )
    result = read_files(
        files,
        epoch_length=epoch_length,
        format=format,
        scheme=scheme,
        lights=lights,
        max_night_hours=max_night_hours,
    )
    if len(scan_problems):
        problems = pd.concat([scan_problems, result.problems], ignore_index=True)
        result = HypnogramSet(result.epochs, problems, result.recordings)
    for row in result.problems.itertuples():
        logger.warning("%s", row.message)
    return result


def read_files(
    files: Sequence[HypnogramFile],
    *,
    epoch_length: float = 30.0,
    format: Format = "auto",
    scheme: Literal["auto", "yasa", "rk"] = "auto",
    lights: pd.DataFrame | None = None,
    max_night_hours: float = MAX_NIGHT_HOURS,
) -> HypnogramSet:
    """Read scanned hypnogram files (the work of :func:`read_hypnograms` after the scan).

    Nothing is logged: the problems are returned. Used per chunk of files by
    :func:`studykit.hypnogram.derive.derive_nights`.

    Examples
    --------
    >>> read_files([]).epochs.columns.tolist()[:3]
    ['recording_id', 'participant_id', 'period']
    """
    lights_index = _lights_index(lights) if lights is not None else {}
    read: list[HypnogramFile] = []
    epoch_parts: list[np.ndarray] = []
    onset_parts: list[np.ndarray] = []
    code_parts: list[np.ndarray] = []
    rows: list[dict[str, object]] = []
    problems: list[dict[str, object]] = []
    for f in files:
        try:
            table = read_hypnogram(
                f.path,
                epoch_length=epoch_length,
                format=format,
                scheme=scheme,
                max_night_hours=max_night_hours,
            )
        except HypnogramError as exc:
            problems.append(_problem(f, "error", "read_error", str(exc)))
            continue
        start = table.attrs["recording_start"]
        try:
            off, on, source = resolve_lights(
                (table.attrs["lights_off_s"], table.attrs["lights_on_s"]),
                start,
                {"recordings": f.lights, "nights": lights_index.get(f.keys) if f.keys else None},
                name=f.path.name,
            )
        except HypnogramError as exc:  # the file reads, but its lights cannot be placed
            problems.append(_problem(f, "error", "lights_error", str(exc)))
            continue
        if "none" in source:
            which = (
                "lights off and on"
                if source == "none"
                else ("lights off" if source.startswith("none") else "lights on")
            )
            problems.append(
                _problem(
                    f,
                    "warning",
                    "no_lights",
                    f"{f.path}: {which} not found in the file, the recordings table or the "
                    "nights table: time in bed runs to the "
                    + ("ends" if source == "none" else "end")
                    + " of the recording, which inflates TIB and SOL and lowers SE. Add "
                    "lights_off / lights_on to the recordings table.",
                )
            )
        read.append(f)
        epoch_parts.append(table["epoch"].to_numpy())
        onset_parts.append(table["onset_s"].to_numpy())
        code_parts.append(np.asarray(table["stage"].array.codes))
        rows.append(
            {
                "recording_id": f.recording_id,
                "file": str(f.path),
                "participant_id": f.participant_id,
                "period": f.period,
                "night": f.night,
                "identity": f.identity,
                "recording_start": start,
                "lights_off_s": off,
                "lights_on_s": on,
                "lights_source": source,
            }
        )
    if read:
        # one column per key, built from the per-recording values: categoricals (compact and
        # fast to group) whose codes repeat each recording's value over its epochs
        sizes = np.array([p.size for p in code_parts], dtype=np.intp)
        recording_of = np.repeat(np.arange(len(read), dtype=np.intp), sizes)

        def repeated(values: list[object]) -> pd.Categorical:
            codes, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
            return pd.Categorical.from_codes(
                np.asarray(codes)[recording_of], categories=pd.Index(uniques, dtype=object)
            )

        periods = pd.array([f.period for f in read], dtype="Int64")
        epochs = pd.DataFrame(
            {
                "recording_id": repeated([f.recording_id for f in read]),
                "participant_id": repeated([f.participant_id for f in read]),
                "period": periods.take(recording_of),
                "night": repeated([f.night for f in read]),
                "epoch": np.concatenate(epoch_parts),
                "onset_s": np.concatenate(onset_parts),
                "stage": pd.Categorical.from_codes(np.concatenate(code_parts), dtype=STAGE_DTYPE),
            }
        )
    else:
        epochs = pd.DataFrame(
            {
                "recording_id": pd.Series(dtype="category"),
                "participant_id": pd.Series(dtype="category"),
                "period": pd.Series(dtype="Int64"),
                "night": pd.Series(dtype="category"),
                "epoch": pd.Series(dtype=np.int64),
                "onset_s": pd.Series(dtype=np.float64),
                "stage": pd.Series(dtype=STAGE_DTYPE),
            }
        )
    recording_table = pd.DataFrame(rows, columns=RECORDING_COLUMNS)
    recording_table["period"] = recording_table["period"].astype("Int64")
    return HypnogramSet(epochs, pd.DataFrame(problems, columns=PROBLEM_COLUMNS), recording_table)


def _lights_index(table: pd.DataFrame) -> dict[tuple[str, int, str], dict[str, object]]:
    """Rows of a nights table with lights, keyed by ``(participant_id, period, night)``."""
    missing = [k for k in ("participant_id", "period", "night") if k not in table.columns]
    if missing:
        raise HypnogramError(
            f"the lights table lacks the column(s) {', '.join(missing)} that match its rows to "
            "the hypnograms."
        )
    if not any(
        c in table.columns for c in ("lights_off_s", "lights_on_s", "lights_off", "lights_on")
    ):
        raise HypnogramError(
            "the lights table has none of lights_off_s, lights_on_s, lights_off, lights_on."
        )
    index: dict[tuple[str, int, str], dict[str, object]] = {}
    for row in table.to_dict("records"):
        try:
            period = int(float(row["period"]))
        except (TypeError, ValueError):
            continue
        index[(str(row["participant_id"]), period, str(row["night"]))] = row
    return index


def _problem(f: HypnogramFile, severity: str, rule: str, message: str) -> dict[str, object]:
    return {
        "file": str(f.path),
        "participant_id": f.participant_id,
        "period": f.period,
        "night": f.night,
        "severity": severity,
        "rule": rule,
        "message": message,
    }
