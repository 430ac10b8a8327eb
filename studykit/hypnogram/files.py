"""THE hypnogram file scanner: which files in a folder are hypnograms, and whose night each is.

Every part of studykit that looks for hypnogram files (``studykit derive``,
:func:`~studykit.hypnogram.read_hypnograms`, the study loader of ``studykit validate`` /
``run``) calls :func:`scan_hypnograms`; nothing else parses hypnogram file names.

A file's identity (``recording_id`` and the design keys ``participant_id, period, night``)
is decided by the first of these that applies (:data:`IDENTITY_SOURCES`):

1. ``recordings``: a recordings table (``--recordings FILE``, or ``recordings.csv`` in the
   study folder) with the columns ``file, participant_id, period, night`` and optionally
   ``recording_id``, ``lights_off`` / ``lights_on`` (clock times or date-times) or
   ``lights_off_s`` / ``lights_on_s`` (seconds from the start of the recording).
2. ``pattern``: a regular expression with named groups (any of ``participant_id``,
   ``period``, ``night``, ``recording_id``) matching the whole file name or its stem.
3. ``convention``: the project's ``{participant_id}_p{period}_{night}.{ext}``.
4. ``nsrr``: NSRR annotation files ``{cohort}[-{visit}]-{id}-nsrr.xml`` and
   ``...-profusion.xml`` (``shhs1-200001-nsrr.xml``: participant ``200001``, night
   ``shhs1``; ``mesa-sleep-0001-nsrr.xml``: ``0001``, ``mesa-sleep``).
5. ``sleep-edf``: Sleep-EDF ``SC4ssNxx-Hypnogram.edf`` / ``ST7ssNxx-Hypnogram.edf``
   (subject ``ss``, night ``N``: ``SC4001EC-Hypnogram.edf`` is subject ``00`` night ``1``).
   The signal files beside them (``*-PSG.edf``) are paired with their hypnogram and not read.
   Cassette (SC) and Telemetry (ST) number their subjects separately: a subject number found
   in both in one scan names two people, so those files are refused (``ambiguous_identity``)
   until a recordings table identifies them.
6. ``stem``: anything else with a hypnogram extension is still read, with its file stem as
   ``recording_id`` and the design keys left empty.

The ``recording_id`` is the recordings table's ``recording_id`` or ``pattern`` group when
given, otherwise the file stem; it is unique within a scan.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from os import PathLike
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from studykit.errors import HypnogramError, InputError
from studykit.io import refuse_special_file

__all__ = [
    "EXTENSIONS",
    "IDENTITY_SOURCES",
    "RECORDINGS_FILE",
    "HypnogramFile",
    "ScanResult",
    "parse_hypnogram_name",
    "identify_file",
    "read_recordings",
    "scan_hypnograms",
]

logger = logging.getLogger(__name__)

#: File extensions of hypnograms (text, EDF+, NSRR / Profusion XML).
EXTENSIONS: tuple[str, ...] = (".csv", ".tsv", ".txt", ".edf", ".xml")
#: Where a file's identity came from, in the order they are tried.
IDENTITY_SOURCES: tuple[str, ...] = (
    "recordings",
    "pattern",
    "convention",
    "nsrr",
    "sleep-edf",
    "stem",
)
#: Name of the recordings table looked for in a study folder.
RECORDINGS_FILE = "recordings.csv"
#: Columns of :attr:`ScanResult.problems`.
PROBLEM_COLUMNS = ["file", "participant_id", "period", "night", "severity", "rule", "message"]

_CONVENTION = re.compile(r"^(?P<participant_id>.+)_p(?P<period>\d+)_(?P<night>[^_]+)$")
_NSRR = re.compile(
    r"^(?P<night>[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)*)-(?P<participant_id>[A-Za-z0-9]+)"
    r"-(?P<kind>nsrr|profusion)$",
    re.IGNORECASE,
)
_SLEEP_EDF = re.compile(
    r"^(?P<pair>(?P<study>S[CT])\d(?P<participant_id>\d\d)(?P<night>\d))"
    r"(?P<scorer>[A-Z0-9]{2})-(?P<kind>Hypnogram|PSG)$",
    re.IGNORECASE,
)
_PATTERN_GROUPS = ("participant_id", "period", "night", "recording_id")
_LIGHTS_COLUMNS = ("lights_off", "lights_on", "lights_off_s", "lights_on_s", "recording_start")


@dataclass(frozen=True)
class HypnogramFile:
    """One hypnogram file and the night it records.

    Attributes
    ----------
    path : pathlib.Path
        The file.
    recording_id : str
        Unique name of the recording (the file stem unless a recordings table or a pattern
        gives one).
    participant_id, period, night : str, int, str or None
        Design keys; None where the file's name and the recordings table do not say.
    identity : str
        Which rule decided the identity, one of :data:`IDENTITY_SOURCES`.
    lights : dict
        ``lights_off`` / ``lights_on`` / ``lights_off_s`` / ``lights_on_s`` values given by
        the recordings table, and its ``recording_start`` (which places clock times when the
        file has no start time); empty without one.
    """

    path: Path
    recording_id: str
    participant_id: str | None = None
    period: int | None = None
    night: str | None = None
    identity: str = "stem"
    lights: Mapping[str, object] = field(default_factory=dict)

    @property
    def keys(self) -> tuple[str, int, str] | None:
        """``(participant_id, period, night)`` when all three are known, else None."""
        if self.participant_id is None or self.period is None or self.night is None:
            return None
        return self.participant_id, self.period, self.night


class ScanResult(NamedTuple):
    """Result of :func:`scan_hypnograms`.

    Attributes
    ----------
    files : list of HypnogramFile
        The hypnograms to read, sorted by path.
    problems : pandas.DataFrame
        ``file, participant_id, period, night, severity, rule, message``: files skipped
        (``warning``: unknown extension, a Sleep-EDF PSG file without hypnogram, a Profusion
        file beside the NSRR file of the same night) and files that cannot be used
        (``error``: listed in the recordings table but absent, duplicated night or
        recording id).
    """

    files: list[HypnogramFile]
    problems: pd.DataFrame


def parse_hypnogram_name(path: str | PathLike[str]) -> tuple[str, int, str]:
    """Split a file name ``{participant_id}_p{period}_{night}.{ext}`` into its keys.

    This is the project's own convention (identity source ``convention``); see
    :func:`identify_file` for every convention recognized.

    Raises
    ------
    HypnogramError
        The name does not follow the convention.

    Examples
    --------
    >>> parse_hypnogram_name("hypnograms/K-017_p2_post1.edf")
    ('K-017', 2, 'post1')
    """
    m = _CONVENTION.match(Path(path).stem)
    if m is None:
        raise HypnogramError(
            f"{Path(path).name}: the file name does not follow "
            "{participant_id}_p{period}_{night}.{ext} (e.g. P01_p1_baseline.csv)."
        )
    return m["participant_id"], int(m["period"]), m["night"]


def _compile_pattern(pattern: str | re.Pattern[str] | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
    except re.error as exc:
        raise InputError(
            f"--pattern {pattern!r} is not a valid regular expression: {exc}."
        ) from exc
    if not set(compiled.groupindex) & set(_PATTERN_GROUPS):
        raise InputError(
            f"--pattern {compiled.pattern!r} has no named group among "
            f"{', '.join(_PATTERN_GROUPS)}; write e.g. "
            r"'(?P<participant_id>\w+)_night(?P<night>\d+)'."
        )
    return compiled


def _period(value: object, where: str) -> int | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        number = float("nan")
    if not np.isfinite(number) or number != int(number):
        raise InputError(f"{where}: period {value!r} is not a whole number (e.g. 1, 2).")
    return int(number)


def _text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def identify_file(
    path: str | PathLike[str],
    *,
    recordings: Mapping[str, Mapping[str, object]] | None = None,
    pattern: str | re.Pattern[str] | None = None,
) -> HypnogramFile:
    """Decide one file's identity (see the module docstring for the order of the rules).

    Parameters
    ----------
    path : path-like
        The hypnogram file (it need not exist).
    recordings : mapping, optional
        Rows of a recordings table keyed by file name (as :func:`read_recordings` indexes
        them: the ``file`` value and its base name both map to the row).
    pattern : str or compiled regex, optional
        A regular expression with named groups among ``participant_id, period, night,
        recording_id``, matched against the whole file name or its stem.

    Returns
    -------
    HypnogramFile

    Examples
    --------
    >>> f = identify_file("SC4001EC-Hypnogram.edf")
    >>> f.recording_id, f.participant_id, f.period, f.night, f.identity
    ('SC4001EC-Hypnogram', '00', None, '1', 'sleep-edf')
    >>> f = identify_file("hypnograms/shhs1-200001-nsrr.xml")
    >>> f.participant_id, f.night, f.identity
    ('200001', 'shhs1', 'nsrr')
    >>> f = identify_file("subject12_night2.csv", pattern=r"subject(?P<participant_id>\\d+)_night(?P<night>\\d+)")
    >>> f.participant_id, f.night, f.identity
    ('12', '2', 'pattern')
    >>> identify_file("P01_p2_post1.txt").keys
    ('P01', 2, 'post1')
    >>> identify_file("night of 3 May.csv").identity
    'stem'
    """
    p = Path(path)
    stem = p.stem
    if recordings:
        row = recordings.get(str(p)) or recordings.get(p.name)
        if row is not None:
            rid = _text(row.get("recording_id")) or stem
            lights = {k: row[k] for k in _LIGHTS_COLUMNS if k in row and _text(row[k])}
            return HypnogramFile(
                p,
                rid,
                _text(row.get("participant_id")),
                _period(row.get("period"), f"{RECORDINGS_FILE} row of {p.name}"),
                _text(row.get("night")),
                "recordings",
                lights,
            )
    compiled = _compile_pattern(pattern)
    if compiled is not None:
        m = compiled.fullmatch(stem) or compiled.fullmatch(p.name)
        if m is not None:
            groups = {k: v for k, v in m.groupdict().items() if k in _PATTERN_GROUPS}
            return HypnogramFile(
                p,
                _text(groups.get("recording_id")) or stem,
                _text(groups.get("participant_id")),
                _period(groups.get("period"), f"{p.name} (--pattern)"),
                _text(groups.get("night")),
                "pattern",
            )
    m = _CONVENTION.match(stem)
    if m is not None:
        return HypnogramFile(
            p, stem, m["participant_id"], int(m["period"]), m["night"], "convention"
        )
    m = _NSRR.match(stem)
    if m is not None and p.suffix.lower() == ".xml":
        return HypnogramFile(p, stem, m["participant_id"], None, m["night"], "nsrr")
    m = _SLEEP_EDF.match(stem)
    if m is not None and p.suffix.lower() == ".edf":
        return HypnogramFile(p, stem, m["participant_id"], None, m["night"], "sleep-edf")
    return HypnogramFile(p, stem)


def read_recordings(path: str | PathLike[str]) -> pd.DataFrame:
    """Read a recordings table (``file, participant_id, period, night`` [+ lights]).

    Every value is read as text (identifiers keep their leading zeros); ``period`` must be a
    whole number where given.

    Raises
    ------
    InputError
        The file is missing or unreadable, lacks the ``file`` column, or lists a file twice.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "recordings.csv"
    >>> _ = p.write_text("file,participant_id,period,night,lights_off\\n"
    ...                  "a.edf,007,1,baseline,23:10\\n")
    >>> read_recordings(p).iloc[0].tolist()
    ['a.edf', '007', '1', 'baseline', '23:10']
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(
            f"recordings table {p}: no such file (it lists file, participant_id, period, night)."
        )
    try:
        table = pd.read_csv(p, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"recordings table {p}: cannot be read as CSV ({exc}).") from exc
    table.columns = [str(c).strip().lower() for c in table.columns]
    if "file" not in table.columns:
        raise InputError(
            f"recordings table {p}: no 'file' column (columns: {', '.join(table.columns)}); "
            "it needs file, participant_id, period, night and optionally lights_off, lights_on."
        )
    table = table.replace("", None)
    dup = table["file"].duplicated(keep=False) & table["file"].notna()
    if dup.any():
        raise InputError(
            f"recordings table {p}: file(s) listed more than once: "
            f"{', '.join(sorted(set(table.loc[dup, 'file'])))[:500]}."
        )
    return table


def _recordings_index(table: pd.DataFrame) -> dict[str, dict[str, object]]:
    index: dict[str, dict[str, object]] = {}
    for row in table.to_dict("records"):
        name = _text(row.get("file"))
        if name is None:
            continue
        index[name] = row
        index.setdefault(Path(name).name, row)
    return index


def _problem(
    path: Path | str, f: HypnogramFile | None, severity: str, rule: str, message: str
) -> dict[str, object]:
    return {
        "file": str(path),
        "participant_id": f.participant_id if f else None,
        "period": f.period if f else None,
        "night": f.night if f else None,
        "severity": severity,
        "rule": rule,
        "message": message,
    }


def _walk(
    item: Path, files: list[Path], skipped: list[Path], refused: list[tuple[Path, str]], root: Path
) -> None:
    for child in sorted(item.iterdir()):
        if child.name.startswith("."):
            continue
        why = refuse_special_file(child, root)
        if why is None and child.is_symlink() and child.is_dir():
            why = (
                f"{child.name} is a symbolic link to a folder: not followed (it could loop or "
                "leave the study). Put the files themselves in the folder."
            )
        if why is not None:
            refused.append((child, why))
        elif child.is_dir():
            _walk(child, files, skipped, refused, root)
        elif child.name.lower() == RECORDINGS_FILE:
            continue
        elif child.suffix.lower() in EXTENSIONS:
            files.append(child)
        else:
            skipped.append(child)


def find_recordings_table(folder: str | PathLike[str]) -> Path | None:
    """``recordings.csv`` of a study: in ``folder``, or beside it when ``folder`` is the
    study's ``hypnograms/`` subfolder; None when there is none.

    Examples
    --------
    >>> find_recordings_table("no/such/folder") is None
    True
    """
    folder = Path(folder)
    candidates = [folder / RECORDINGS_FILE]
    if folder.name == "hypnograms":
        candidates.append(folder.parent / RECORDINGS_FILE)
    return next((c for c in candidates if c.is_file()), None)


def scan_hypnograms(
    paths_or_dir: str | PathLike[str] | Iterable[str | PathLike[str]],
    *,
    recordings: str | PathLike[str] | pd.DataFrame | None = None,
    pattern: str | re.Pattern[str] | None = None,
) -> ScanResult:
    """Find the hypnogram files and decide each one's identity.

    Parameters
    ----------
    paths_or_dir : path, directory, or iterable of them
        Files are taken as given (any name, any extension); directories contribute, with
        their subfolders, every file with a hypnogram extension (:data:`EXTENSIONS`) except
        ``recordings.csv``; other files are reported as skipped.
    recordings : path or DataFrame, optional
        The recordings table. When None, ``recordings.csv`` is looked for in each directory
        given (and beside it when the directory is a study's ``hypnograms/``).
    pattern : str or compiled regex, optional
        File-name regular expression with named groups (see :func:`identify_file`).

    Returns
    -------
    ScanResult
        ``(files, problems)``.

    Notes
    -----
    Rules checked across files: a file listed in the recordings table but absent is an
    error; two files with the same ``recording_id``, or the same complete
    ``(participant_id, period, night)``, are errors for the second file (it is not read); a
    Profusion XML beside the NSRR XML of the same recording is skipped (the NSRR file is
    read); a Sleep-EDF ``*-PSG.edf`` is paired with its ``*-Hypnogram.edf`` and skipped, and
    an NSRR signal file ``X.edf`` beside ``X-nsrr.xml`` likewise. Files whose identity comes
    from no rule are logged once, together, with the fix.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ["SC4001E0-PSG.edf", "SC4001EC-Hypnogram.edf", "P01_p1_baseline.csv",
    ...              "notes.docx"]:
    ...     _ = (d / name).write_text("W\\n")
    >>> files, problems = scan_hypnograms(d)
    >>> [(f.path.name, f.identity) for f in files]
    [('P01_p1_baseline.csv', 'convention'), ('SC4001EC-Hypnogram.edf', 'sleep-edf')]
    >>> problems[["file", "rule"]].assign(file=problems["file"].map(lambda s: s[-10:]))
             file     rule
    0  notes.docx  skipped
    """
    if isinstance(paths_or_dir, str | PathLike):
        items: list[Path] = [Path(paths_or_dir)]
    elif isinstance(paths_or_dir, Iterable):
        items = [Path(i) for i in paths_or_dir]
    else:
        raise InputError(
            f"expected a path, a directory or a list of paths, got {type(paths_or_dir).__name__}."
        )
    compiled = _compile_pattern(pattern)
    files: list[Path] = []
    skipped: list[Path] = []
    refused: list[tuple[Path, str]] = []
    table_path: Path | None = None
    for item in items:
        if item.is_dir():
            _walk(item, files, skipped, refused, item)
            if recordings is None and table_path is None:
                table_path = find_recordings_table(item)
        else:
            files.append(item)
    if isinstance(recordings, pd.DataFrame):
        table: pd.DataFrame | None = recordings
        base: Path | None = None
    elif recordings is not None:
        table, base = read_recordings(recordings), Path(recordings).parent
    elif table_path is not None:
        table, base = read_recordings(table_path), table_path.parent
        logger.info("identities from the recordings table %s", table_path)
    else:
        table, base = None, None
    index = _recordings_index(table) if table is not None else None

    problems: list[dict[str, object]] = [
        _problem(p, None, "error", "refused", why) for p, why in refused
    ]
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
    identified = [identify_file(p, recordings=index, pattern=compiled) for p in files]
    identified, ambiguous = _sleep_edf_collisions(identified)
    problems.extend(ambiguous)
    if index is not None and table is not None:
        problems.extend(_absent_listed(table, base, files))
    stems = {f.path.stem.lower() for f in identified}
    out: list[HypnogramFile] = []
    unnamed: list[HypnogramFile] = []
    by_id: dict[str, HypnogramFile] = {}
    by_keys: dict[tuple[str, int, str], HypnogramFile] = {}
    for f in identified:
        if not f.path.exists():
            problems.append(
                _problem(f.path, f, "error", "missing_file", f"{f.path}: no such file.")
            )
            continue
        reason = _companion_of(f, stems)
        if reason is not None:
            if reason:
                problems.append(_problem(f.path, f, "warning", "skipped", reason))
            else:
                logger.debug("%s: signal file of a hypnogram in the scan, not read", f.path)
            continue
        if f.recording_id in by_id:
            first = by_id[f.recording_id]
            problems.append(
                _problem(
                    f.path,
                    f,
                    "error",
                    "duplicate_recording",
                    f"{f.path}: recording_id {f.recording_id!r} was already given to "
                    f"{first.path}; this file was not read. Give each file its own "
                    "recording_id (recordings table) or rename one of them.",
                )
            )
            continue
        keys = f.keys
        if keys is not None and keys in by_keys:
            problems.append(
                _problem(
                    f.path,
                    f,
                    "error",
                    "duplicate_night",
                    f"{f.path.name}: the same night ({keys[0]}, period {keys[1]}, {keys[2]}) "
                    f"was already read from {by_keys[keys].path.name}; this file was not read.",
                )
            )
            continue
        by_id[f.recording_id] = f
        if keys is not None:
            by_keys[keys] = f
        if f.identity == "stem":
            unnamed.append(f)
        out.append(f)
    if unnamed:
        shown = ", ".join(f.path.name for f in unnamed[:5])
        more = f" and {len(unnamed) - 5} more" if len(unnamed) > 5 else ""
        logger.warning(
            "%d hypnogram file(s) have names studykit cannot interpret (%s%s): they are read "
            "with their file stem as recording_id and participant_id / period / night left "
            "empty. To identify them, give a recordings table (--recordings: file, "
            "participant_id, period, night) or a file-name --pattern with named groups.",
            len(unnamed),
            shown,
            more,
        )
    return ScanResult(out, pd.DataFrame(problems, columns=PROBLEM_COLUMNS))


def _sleep_edf_collisions(
    identified: list[HypnogramFile],
) -> tuple[list[HypnogramFile], list[dict[str, object]]]:
    """Refuse Sleep-EDF names whose subject number is used by both of its studies.

    Sleep Cassette (``SC4ssN``) and Sleep Telemetry (``ST7ssN``) number their subjects
    separately: ``SC4001`` and ``ST7001`` are two different people who would both be
    participant ``00``. Such files are not read (error ``ambiguous_identity``) until a
    recordings table says whose night each is; other files are kept.
    """
    studies: dict[str, set[str]] = {}
    for f in identified:
        if f.identity == "sleep-edf" and f.participant_id is not None:
            m = _SLEEP_EDF.match(f.path.stem)
            if m is not None and m["kind"].lower() == "hypnogram":
                studies.setdefault(f.participant_id, set()).add(m["study"].upper())
    shared = {pid for pid, found in studies.items() if len(found) > 1}
    if not shared:
        return identified, []
    kept: list[HypnogramFile] = []
    problems: list[dict[str, object]] = []
    for f in identified:
        if f.identity != "sleep-edf" or f.participant_id not in shared:
            kept.append(f)
            continue
        if "-psg" in f.path.stem.lower():
            continue  # a signal file, never read: its hypnogram's error says it all
        others = sorted(
            g.path.name
            for g in identified
            if g.identity == "sleep-edf"
            and g.participant_id == f.participant_id
            and g.path.name[:2].upper() != f.path.name[:2].upper()
            and "-psg" not in g.path.stem.lower()
        )
        problems.append(
            _problem(
                f.path,
                f,
                "error",
                "ambiguous_identity",
                f"{f.path.name}: Sleep-EDF subject {f.participant_id} is also a subject of the "
                f"other Sleep-EDF study ({', '.join(others[:3])}): Sleep Cassette (SC) and "
                "Sleep Telemetry (ST) number their subjects separately, so these are two "
                "people and the file names cannot say whose night each is; this file was not "
                f"read. Give a recordings table ({RECORDINGS_FILE}: file, participant_id, "
                "period, night; e.g. participant SC00 and ST00), or keep the two studies in "
                "separate folders.",
            )
        )
    return kept, problems


def _companion_of(f: HypnogramFile, stems: set[str]) -> str | None:
    """Why ``f`` is not read although it was found: None to read it; "" for a paired signal
    file (not reported); a message for a skipped file (reported as a warning)."""
    name = f.path.name
    stem = f.path.stem
    if f.identity in ("recordings", "pattern"):
        return None
    m = _SLEEP_EDF.match(stem)
    if m is not None and m["kind"].lower() == "psg" and f.path.suffix.lower() == ".edf":
        pair = m["pair"].lower()
        if any(s.startswith(pair) and s.endswith("-hypnogram") for s in stems):
            return ""
        return (
            f"{name}: a Sleep-EDF signal file (PSG) without its *-Hypnogram.edf in the scan; "
            "skipped (studykit derives statistics from the hypnogram)."
        )
    if f.path.suffix.lower() == ".edf" and (
        f"{stem.lower()}-nsrr" in stems or f"{stem.lower()}-profusion" in stems
    ):
        return ""
    m = _NSRR.match(stem)
    if m is not None and m["kind"].lower() == "profusion":
        twin = stem[: -len("profusion")] + "nsrr"
        if twin.lower() in stems:
            return (
                f"{name}: skipped, the NSRR annotation file {twin}.xml of the same recording "
                "is read instead."
            )
    return None


def _absent_listed(
    table: pd.DataFrame, base: Path | None, files: list[Path]
) -> list[dict[str, object]]:
    found = {str(p) for p in files} | {p.name for p in files}
    out = []
    for name in table["file"].dropna():
        text = str(name)
        if text in found or Path(text).name in found:
            continue
        if base is not None and (base / text).is_file():
            continue
        f = HypnogramFile(Path(text), Path(text).stem)
        row = table.loc[table["file"] == name].iloc[0]
        f = replace(
            f,
            participant_id=_text(row.get("participant_id")),
            night=_text(row.get("night")),
        )
        out.append(
            _problem(
                text,
                f,
                "error",
                "missing_file",
                f"{text}: listed in the recordings table but not found among the hypnogram "
                "files; restore the file or remove its row.",
            )
        )
    return out
