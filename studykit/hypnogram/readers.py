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
import io
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from os import PathLike
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd

from studykit.errors import HypnogramError
from studykit.hypnogram.stages import STAGE_DTYPE, stage_codes

__all__ = [
    "FORMATS",
    "EXTENSIONS",
    "HypnogramSet",
    "read_hypnogram",
    "read_hypnograms",
    "parse_hypnogram_name",
]

logger = logging.getLogger(__name__)

Format = Literal["auto", "text", "edf", "nsrr", "profusion"]
FORMATS: tuple[str, ...] = ("auto", "text", "edf", "nsrr", "profusion")
#: File extensions read by :func:`read_hypnograms` when given a directory.
EXTENSIONS: tuple[str, ...] = (".csv", ".tsv", ".txt", ".edf", ".xml")

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
_NAME_RE = re.compile(r"^(?P<participant_id>.+)_p(?P<period>\d+)_(?P<night>[^_]+)$")
_EPOCHS_COLUMNS = ["epoch", "onset_s", "stage"]


def read_hypnogram(
    path: str | PathLike[str],
    *,
    epoch_length: float = 30.0,
    format: Format = "auto",
    scheme: Literal["auto", "yasa", "rk"] = "auto",
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

    Returns
    -------
    pandas.DataFrame
        Columns ``epoch`` (int64, 0 for the first scored epoch), ``onset_s`` (float64,
        seconds from the start of the recording) and ``stage`` (categorical with the
        categories :data:`STAGES`). ``.attrs`` holds ``source``, ``format``,
        ``epoch_length`` and ``events`` (annotations that are not stages).

    Raises
    ------
    HypnogramError
        Missing, empty, truncated or undecodable files; unknown stage labels; gaps or overlaps
        between stage annotations; durations that are not a multiple of the epoch length; an
        epoch length that disagrees with the file's. Nothing is dropped silently.

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
    path = Path(path)
    if not path.exists():
        raise HypnogramError(f"{path}: no such file.")
    if path.is_dir():
        raise HypnogramError(f"{path}: is a directory; use read_hypnograms() for a directory.")
    data = path.read_bytes()
    if not data.strip():
        raise HypnogramError(f"{path}: the file is empty; there is no epoch to read.")
    fmt = format if format != "auto" else _detect_format(path, data)
    try:
        if fmt == "edf":
            table, events = _read_edf(data, epoch_length)
        elif fmt == "nsrr":
            table, events = _read_nsrr(data, epoch_length)
        elif fmt == "profusion":
            table, events = _read_profusion(data, epoch_length)
        else:
            table, events = _read_text(data, path.suffix.lower(), epoch_length, scheme)
    except HypnogramError as exc:
        raise HypnogramError(f"{path}: {exc}") from None
    table.attrs = {
        "source": str(path),
        "format": fmt,
        "epoch_length": float(epoch_length),
        "events": events,
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


def _table(codes: np.ndarray, first_onset: float, epoch_length: float) -> pd.DataFrame:
    n = codes.size
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
    labels: Sequence[object],
    epoch_length: float,
    *,
    scheme: str = "auto",
) -> pd.DataFrame:
    """Expand stage annotations (onset, duration, label) to epochs; check they tile the night."""
    if len(onsets) == 0:
        raise HypnogramError("no sleep stage annotation found; there is no epoch to read.")
    onsets = np.asarray(onsets, dtype=np.float64)
    durations = np.asarray(durations, dtype=np.float64)
    labels = np.asarray(labels, dtype=object)
    codes = stage_codes(labels, scheme=scheme)  # raises on unknown labels
    if not (np.isfinite(onsets).all() and np.isfinite(durations).all()):
        bad = np.flatnonzero(~(np.isfinite(onsets) & np.isfinite(durations)))
        raise HypnogramError(
            f"{len(bad)} stage annotation(s) have a missing onset or duration (first: "
            f"annotation {int(bad[0])}, {labels[bad[0]]!r})."
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
    epoch_codes = np.repeat(codes, whole.astype(np.int64))
    return _table(epoch_codes, float(onsets[0]), epoch_length)


# ----------------------------------------------------------------------------------- EDF+ --


def _read_edf(data: bytes, epoch_length: float) -> tuple[pd.DataFrame, list[dict]]:
    import edfio  # the EDF library is needed only here

    try:
        edf = edfio.read_edf(data, lazy_load_data=True)
        annotations = list(edf.annotations)
    except Exception as exc:  # edfio raises ValueError and others on malformed files
        raise HypnogramError(
            f"cannot be read as EDF+ ({type(exc).__name__}: {exc}); the file may be truncated "
            "or not an EDF+ file."
        ) from None
    stage_ann = [a for a in annotations if a.duration is not None and a.duration > 0]
    events = [
        {"onset_s": float(a.onset), "duration_s": a.duration, "text": a.text}
        for a in annotations
        if not (a.duration is not None and a.duration > 0)
    ]
    if not stage_ann:
        raise HypnogramError(
            f"the EDF+ file has no annotation with a duration ({len(annotations)} annotation(s) "
            "in all); a hypnogram needs stage annotations such as 'Sleep stage W' lasting 30 s "
            "or more."
        )
    table = _expand_annotations(
        np.array([a.onset for a in stage_ann]),
        np.array([a.duration for a in stage_ann]),
        [a.text for a in stage_ann],
        epoch_length,
    )
    return table, events


# ------------------------------------------------------------------------------------ XML --


def _parse_xml(data: bytes) -> ET.Element:
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise HypnogramError(
            f"is not well-formed XML ({exc}); the file may be truncated."
        ) from None


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
        declared = float(node.text)
    except ValueError:
        raise HypnogramError(f"EpochLength {node.text!r} is not a number.") from None
    if abs(declared - epoch_length) > _TOL_S:
        raise HypnogramError(
            f"the file declares {declared:g}-s epochs (EpochLength) but epoch_length="
            f"{epoch_length:g}; pass epoch_length={declared:g} to read it."
        )


def _read_nsrr(data: bytes, epoch_length: float) -> tuple[pd.DataFrame, list[dict]]:
    root = _parse_xml(data)
    _declared_epoch_length(root, epoch_length)
    onsets, durations, labels = [], [], []
    other: dict[str, int] = {}
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
            continue
        try:
            onsets.append(float(fields.get("Start", "")))
            durations.append(float(fields.get("Duration", "")))
        except ValueError:
            raise HypnogramError(
                f"stage event {n_events} ({concept!r}) has a Start or Duration that is not a "
                f"number (Start={fields.get('Start')!r}, Duration={fields.get('Duration')!r})."
            ) from None
        labels.append(concept)
    if not labels:
        raise HypnogramError(
            f"no ScoredEvent with EventType 'Stages|Stages' ({n_events} scored event(s) in "
            "all); this NSRR file has no sleep staging."
        )
    table = _expand_annotations(np.array(onsets), np.array(durations), labels, epoch_length)
    events = [{"text": k, "count": v} for k, v in other.items()]
    return table, events


def _read_profusion(data: bytes, epoch_length: float) -> tuple[pd.DataFrame, list[dict]]:
    root = _parse_xml(data)
    _declared_epoch_length(root, epoch_length)
    container = _find_child(root, "SleepStages")
    if container is None:
        raise HypnogramError("Profusion XML without a SleepStages element: no staging.")
    values = [(c.text or "").strip() for c in container if _local(c.tag) == "SleepStage"]
    if not values:
        raise HypnogramError("Profusion XML with an empty SleepStages list: no epoch to read.")
    codes = stage_codes(values, scheme="rk")
    return _table(codes, 0.0, epoch_length), []


# ----------------------------------------------------------------------------------- text --


def _decode(data: bytes) -> str:
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16")
    if data[:3] == b"\xef\xbb\xbf":
        return data[3:].decode("utf-8")
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
    data: bytes, suffix: str, epoch_length: float, scheme: str
) -> tuple[pd.DataFrame, list[dict]]:
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
        delim = {".tsv": "\t", ".csv": ","}.get(suffix)
    line_numbers = [n for n, _ in numbered]
    if delim is None:
        rows = [[line.strip()] for _, line in numbered]
    else:
        rows = list(
            csv.reader(io.StringIO("\n".join(line for _, line in numbered)), delimiter=delim)
        )
    width = max(len(r) for r in rows)
    if width == 1 or all(len(r) == 1 for r in rows):
        return _one_column(rows, line_numbers, epoch_length, scheme)
    return _columns(rows, line_numbers, epoch_length, scheme)


def _one_column(
    rows: list[list[str]], line_numbers: list[int], epoch_length: float, scheme: str
) -> tuple[pd.DataFrame, list[dict]]:
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
    return _table(codes, 0.0, epoch_length), []


def _codes_with_lines(
    values: Sequence[str], line_numbers: Sequence[int], scheme: str
) -> np.ndarray:
    try:
        return stage_codes(values, scheme=scheme)  # type: ignore[arg-type]
    except HypnogramError as exc:
        m = re.search(r"position (\d+)", str(exc))
        where = f" (line {line_numbers[int(m.group(1))]})" if m else ""
        raise HypnogramError(f"{exc}{where}") from None


def _pick(columns: Sequence[str], names: Iterable[str]) -> int | None:
    lowered = [c.strip().lower() for c in columns]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None


def _columns(
    rows: list[list[str]], line_numbers: list[int], epoch_length: float, scheme: str
) -> tuple[pd.DataFrame, list[dict]]:
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
        try:
            return _expand_annotations(onsets, durations, stages, epoch_length, scheme=scheme), []
        except HypnogramError as exc:
            raise HypnogramError(f"{exc}") from None
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
    return _table(codes, first_onset, epoch_length), []


def _numbers(values: Sequence[str], column: str, lines: Sequence[int]) -> np.ndarray:
    out = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(np.float64)
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        items = [f"line {lines[i]}: {values[i]!r}" for i in bad]
        raise HypnogramError(
            f"column {column!r} has {bad.size} value(s) that are not numbers: {_fmt_list(items)}."
        )
    return out


# ------------------------------------------------------------------------- many nights ----


class HypnogramSet(NamedTuple):
    """Result of :func:`read_hypnograms`: the epochs that were read and the problems found.

    Attributes
    ----------
    epochs : pandas.DataFrame
        Long epoch table ``participant_id, period, night, epoch, onset_s, stage`` (dictionary
        table ``epochs``), nights in the order of the sorted file names. ``participant_id``
        and ``night`` are categoricals (categories in order of appearance), ``period`` int64,
        ``stage`` categorical with the categories :data:`STAGES`.
    problems : pandas.DataFrame
        One row per problem: ``file, participant_id, period, night, severity, rule,
        message``. ``severity`` is ``"error"`` (the file was not read) or ``"warning"`` (a file
        was skipped because it is not a hypnogram file).
    """

    epochs: pd.DataFrame
    problems: pd.DataFrame


def parse_hypnogram_name(path: str | PathLike[str]) -> tuple[str, int, str]:
    """Split a file name ``{participant_id}_p{period}_{night}.{ext}`` into its keys.

    Examples
    --------
    >>> parse_hypnogram_name("hypnograms/K-017_p2_post1.edf")
    ('K-017', 2, 'post1')
    """
    stem = Path(path).stem
    m = _NAME_RE.match(stem)
    if m is None:
        raise HypnogramError(
            f"{Path(path).name}: the file name does not follow "
            "{participant_id}_p{period}_{night}.{ext} (e.g. P01_p1_baseline.csv)."
        )
    return m["participant_id"], int(m["period"]), m["night"]


def _expand_paths(paths_or_dir: object) -> tuple[list[Path], list[Path]]:
    if isinstance(paths_or_dir, str | PathLike):
        items: list[object] = [paths_or_dir]
    elif isinstance(paths_or_dir, Iterable):
        items = list(paths_or_dir)
    else:
        raise HypnogramError(
            f"read_hypnograms expects a path, a directory or a list of paths, got "
            f"{type(paths_or_dir).__name__}."
        )
    files: list[Path] = []
    skipped: list[Path] = []
    for item in items:
        p = Path(item)  # type: ignore[arg-type]
        if p.is_dir():
            for child in sorted(p.iterdir()):
                if child.is_dir() or child.name.startswith("."):
                    continue
                (files if child.suffix.lower() in EXTENSIONS else skipped).append(child)
        else:
            files.append(p)
    return files, skipped


def read_hypnograms(
    paths_or_dir: str | PathLike[str] | Iterable[str | PathLike[str]],
    *,
    epoch_length: float = 30.0,
    format: Format = "auto",
    scheme: Literal["auto", "yasa", "rk"] = "auto",
) -> HypnogramSet:
    """Read many nights' hypnograms into one long epoch table, collecting every problem.

    Parameters
    ----------
    paths_or_dir : path, directory, or iterable of them
        Files named ``{participant_id}_p{period}_{night}.{ext}``; a directory contributes its
        files with a known extension (``.csv .tsv .txt .edf .xml``), others are reported as
        skipped.
    epoch_length, format, scheme
        As in :func:`read_hypnogram`, for every file.

    Returns
    -------
    HypnogramSet
        ``(epochs, problems)``. A file that cannot be read contributes no epoch and one
        ``problems`` row saying why; it does not stop the other files.

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
    >>> problems[["file", "rule"]]
                   file        rule
    0  P01_p1_post1.txt  read_error
    """
    files, skipped = _expand_paths(paths_or_dir)
    problems: list[dict[str, object]] = []
    for p in skipped:
        problems.append(
            _problem(
                p,
                None,
                "warning",
                "skipped",
                f"{p.name}: skipped, not a hypnogram file extension ({', '.join(EXTENSIONS)})",
            )
        )
    frames: list[pd.DataFrame] = []
    seen: dict[tuple[str, int, str], Path] = {}
    for p in files:
        if not p.exists():
            problems.append(_problem(p, None, "error", "missing_file", f"{p}: no such file."))
            continue
        try:
            key = parse_hypnogram_name(p)
        except HypnogramError as exc:
            problems.append(_problem(p, None, "error", "file_name", str(exc)))
            continue
        if key in seen:
            problems.append(
                _problem(
                    p,
                    key,
                    "error",
                    "duplicate_night",
                    f"{p.name}: the same night was already read from {seen[key].name}; "
                    "this file was not read.",
                )
            )
            continue
        try:
            table = read_hypnogram(p, epoch_length=epoch_length, format=format, scheme=scheme)
        except HypnogramError as exc:
            problems.append(_problem(p, key, "error", "read_error", str(exc)))
            continue
        seen[key] = p
        n = len(table)
        frames.append(
            pd.DataFrame(
                {
                    "participant_id": np.full(n, key[0], dtype=object),
                    "period": np.full(n, key[1], dtype=np.int64),
                    "night": np.full(n, key[2], dtype=object),
                    "epoch": table["epoch"].to_numpy(),
                    "onset_s": table["onset_s"].to_numpy(),
                    "stage": table["stage"].array,
                }
            )
        )
    if frames:
        epochs = pd.concat(frames, ignore_index=True)
        epochs["stage"] = epochs["stage"].astype(STAGE_DTYPE)
        for key in ("participant_id", "night"):  # categorical: compact and fast to group
            values = epochs[key].to_numpy(dtype=object)
            epochs[key] = pd.Categorical(values, categories=pd.unique(values))
    else:
        epochs = pd.DataFrame(
            {
                "participant_id": pd.Series(dtype="category"),
                "period": pd.Series(dtype=np.int64),
                "night": pd.Series(dtype="category"),
                "epoch": pd.Series(dtype=np.int64),
                "onset_s": pd.Series(dtype=np.float64),
                "stage": pd.Series(dtype=STAGE_DTYPE),
            }
        )
    problem_table = pd.DataFrame(
        problems,
        columns=["file", "participant_id", "period", "night", "severity", "rule", "message"],
    )
    for row in problems:
        logger.warning("%s", row["message"])
    return HypnogramSet(epochs, problem_table)


def _problem(
    path: Path, key: tuple[str, int, str] | None, severity: str, rule: str, message: str
) -> dict[str, object]:
    pid, period, night = key if key is not None else (None, None, None)
    return {
        "file": path.name,
        "participant_id": pid,
        "period": period,
        "night": night,
        "severity": severity,
        "rule": rule,
        "message": message,
    }
