"""A folder of nights -> one table of per-night sleep statistics, serially or in parallel.

The scan (:func:`~studykit.hypnogram.files.scan_hypnograms`) runs once; the files are then
cut into chunks in path order, and each chunk is read and derived on its own
(:func:`~studykit.hypnogram.readers.read_files`, lights, then
:func:`~studykit.hypnogram.statistics.sleep_statistics`): in this process, on local cores
(joblib), or on a Dask cluster. Every night's statistics depend on that night alone and the
chunks are put back in path order, so the table is the same whatever the number of jobs or
the scheduler.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any, NamedTuple

import pandas as pd

from studykit.errors import HypnogramError, InputError
from studykit.hypnogram.files import PROBLEM_COLUMNS, HypnogramFile, scan_hypnograms
from studykit.hypnogram.readers import MAX_NIGHT_HOURS, Format, read_files
from studykit.hypnogram.statistics import KEYS, OUTCOMES, sleep_statistics

__all__ = [
    "DERIVED_COLUMNS",
    "DerivedNights",
    "DeriveOptions",
    "derive_nights",
    "recording_statistics",
]

#: Columns of :attr:`DerivedNights.nights`, in order.
DERIVED_COLUMNS: tuple[str, ...] = (
    "recording_id",
    *KEYS,
    "file",
    "identity",
    "lights_off_s",
    "lights_on_s",
    "lights_source",
    *OUTCOMES,
)


@dataclass(frozen=True)
class DeriveOptions:
    """Reader and statistics settings applied to every file (see :func:`derive_nights`)."""

    epoch_length: float = 30.0
    format: Format = "auto"
    scheme: str = "auto"
    max_night_hours: float = MAX_NIGHT_HOURS
    min_bout_epochs: int = 1
    persistent_sleep_min: float = 10.0
    waso_until_lights_on: bool = False
    max_bad_fraction: float = 0.10


class DerivedNights(NamedTuple):
    """Result of :func:`derive_nights`.

    Attributes
    ----------
    nights : pandas.DataFrame
        One row per recording read (:data:`DERIVED_COLUMNS`), in path order.
    problems : pandas.DataFrame
        ``file, participant_id, period, night, severity, rule, message`` (from the scan, the
        readers, the lights and the statistics).
    parameters : dict
        The statistics' parameters (``sleep_statistics(...).attrs["parameters"]``).
    """

    nights: pd.DataFrame
    problems: pd.DataFrame
    parameters: Mapping[str, object]


def _chunk_table(
    files: Sequence[HypnogramFile], lights: pd.DataFrame | None, options: DeriveOptions
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read and derive one chunk of files: ``(nights, problems)``."""
    read = read_files(
        files,
        epoch_length=options.epoch_length,
        format=options.format,
        scheme=options.scheme,  # type: ignore[arg-type]
        lights=lights,
        max_night_hours=options.max_night_hours,
    )
    stats, problems = recording_statistics(read.epochs, read.recordings, options)
    problem_table = pd.concat(
        [p for p in (read.problems, problems) if len(p)] or [read.problems], ignore_index=True
    )
    return stats, problem_table


def recording_statistics(
    epochs: pd.DataFrame, recordings: pd.DataFrame, options: DeriveOptions | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-recording statistics of epochs read by :func:`~studykit.hypnogram.readers.read_files`.

    The one step from read hypnograms to per-night outcomes, shared by ``studykit derive``
    (:func:`derive_nights`) and the study loader (:func:`studykit.validate.load_study`), so
    that both crop each night to the same lights (file, else recordings table, else nights
    table: :func:`~studykit.hypnogram.lights.resolve_lights`) and give the same numbers.

    Parameters
    ----------
    epochs : pandas.DataFrame
        ``recording_id, participant_id, period, night, epoch, onset_s, stage`` (the
        ``epochs`` of a :class:`~studykit.hypnogram.readers.HypnogramSet`).
    recordings : pandas.DataFrame
        One row per recording with its lights (``HypnogramSet.recordings``).
    options : DeriveOptions, optional
        Statistics settings (default :class:`DeriveOptions`).

    Returns
    -------
    (nights, problems)
        ``nights``: one row per recording (:data:`DERIVED_COLUMNS`). ``problems``: one
        ``derive_error`` row per recording whose statistics cannot be computed (e.g. its
        lights leave no epoch); the other recordings are kept.

    Examples
    --------
    >>> from studykit.hypnogram.readers import read_files
    >>> import tempfile, pathlib
    >>> from studykit.hypnogram.files import scan_hypnograms
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "P01_p1_baseline.txt").write_text("W\\nN1\\nN2\\nN2\\n")
    >>> read = read_files(scan_hypnograms(d).files)
    >>> nights, problems = recording_statistics(read.epochs, read.recordings)
    >>> nights[["participant_id", "tib_min", "tst_min", "lights_source"]].values.tolist()
    [['P01', 2.0, 1.5, 'none']]
    >>> len(problems)
    0
    """
    options = options or DeriveOptions()
    recs = recordings
    problems: list[pd.DataFrame] = []
    if not len(recs):
        return _empty_nights(), pd.DataFrame(columns=PROBLEM_COLUMNS)
    try:
        stats = _statistics(epochs, recs, options)
    except HypnogramError:  # a night's lights leave no epoch, ...: find it, keep the others
        parts = []
        for rid in recs["recording_id"]:
            one = epochs[epochs["recording_id"] == rid]
            try:
                parts.append(_statistics(one, recs[recs["recording_id"] == rid], options))
            except HypnogramError as exc:
                row = recs[recs["recording_id"] == rid].iloc[0]
                problems.append(
                    pd.DataFrame(
                        [
                            {
                                "file": row["file"],
                                "participant_id": row["participant_id"],
                                "period": row["period"],
                                "night": row["night"],
                                "severity": "error",
                                "rule": "derive_error",
                                "message": f"{row['file']}: {exc}",
                            }
                        ],
                        columns=PROBLEM_COLUMNS,
                    )
                )
        stats = pd.concat(parts, ignore_index=True) if parts else _empty_nights()
    problem_table = (
        pd.concat(problems, ignore_index=True)
        if problems
        else pd.DataFrame(columns=PROBLEM_COLUMNS)
    )
    return stats, problem_table


def _statistics(epochs: pd.DataFrame, recs: pd.DataFrame, options: DeriveOptions) -> pd.DataFrame:
    stats = sleep_statistics(
        epochs,
        nights=recs[["recording_id", "lights_off_s", "lights_on_s"]],
        epoch_length=options.epoch_length,
        min_bout_epochs=options.min_bout_epochs,
        persistent_sleep_min=options.persistent_sleep_min,
        waso_until_lights_on=options.waso_until_lights_on,
        max_bad_fraction=options.max_bad_fraction,
    )
    info = recs[
        ["recording_id", "file", "identity", "lights_off_s", "lights_on_s", "lights_source"]
    ]
    stats["recording_id"] = stats["recording_id"].astype(str)
    for k in ("participant_id", "night"):
        stats[k] = stats[k].astype(object).where(stats[k].notna(), None)
    stats["period"] = stats["period"].astype("Int64")
    merged = stats.merge(info.astype({"recording_id": str}), on="recording_id", how="left")
    return merged[list(DERIVED_COLUMNS)]


def _empty_nights() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in DERIVED_COLUMNS})


def _chunks(files: list[HypnogramFile], size: int) -> list[list[HypnogramFile]]:
    return [files[i : i + size] for i in range(0, len(files), size)]


def _progress(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="night",
        desc="derive",
        file=sys.stderr,
        disable=not enabled,
        dynamic_ncols=True,
    )


def _run_local(
    chunks: list[list[HypnogramFile]],
    lights: pd.DataFrame | None,
    options: DeriveOptions,
    jobs: int,
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    if jobs == 1:
        for chunk in chunks:
            yield _chunk_table(chunk, lights, options)
        return
    from joblib import Parallel, delayed

    parallel = Parallel(n_jobs=jobs, return_as="generator")  # results in submission order
    yield from parallel(delayed(_chunk_table)(c, lights, options) for c in chunks)


def _run_dask(
    chunks: list[list[HypnogramFile]],
    lights: pd.DataFrame | None,
    options: DeriveOptions,
    scheduler: str,
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    try:
        from distributed import Client
    except ImportError as exc:
        raise InputError(
            "--scheduler needs dask.distributed: pip install 'studykit[cluster]'."
        ) from exc
    try:
        client = Client(scheduler, timeout="20s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise InputError(
            f"cannot connect to the Dask scheduler at {scheduler!r} ({exc}); check the address "
            "(e.g. tcp://10.0.0.5:8786) and that the scheduler is running."
        ) from exc
    try:
        futures = client.map(
            _chunk_table, chunks, lights=lights, options=options, pure=False, key=None
        )
        for future in futures:  # in submission order
            yield future.result()
    finally:
        client.close()


def derive_nights(
    paths_or_dir: str | PathLike[str] | Iterable[str | PathLike[str]],
    *,
    recordings: str | PathLike[str] | pd.DataFrame | None = None,
    pattern: str | re.Pattern[str] | None = None,
    lights: pd.DataFrame | None = None,
    options: DeriveOptions | None = None,
    jobs: int = 1,
    scheduler: str | None = None,
    progress: bool = False,
    chunk_size: int | None = None,
    on_scan: Callable[[int], None] | None = None,
) -> DerivedNights:
    """Derive the per-night sleep statistics of every hypnogram in a folder (or a file list).

    Parameters
    ----------
    paths_or_dir : path, directory, or iterable of them
        As in :func:`~studykit.hypnogram.files.scan_hypnograms` (files with any names).
    recordings, pattern
        Identity of the files (see :func:`~studykit.hypnogram.files.scan_hypnograms`).
    lights : pandas.DataFrame, optional
        Nights table with lights off / on (see :func:`~studykit.hypnogram.read_hypnograms`).
    options : DeriveOptions, optional
        Reader and statistics settings.
    jobs : int, default 1
        Local worker processes (joblib); -1 for one per core. Ignored with ``scheduler``.
    scheduler : str, optional
        Address of a Dask distributed scheduler (``tcp://host:8786``): the chunks run on
        its workers, which need studykit installed.
    progress : bool, default False
        Show a progress bar on stderr (nights done / total).
    chunk_size : int, optional
        Files per task; by default enough chunks for 8 per worker, at most 256 files each.
    on_scan : callable, optional
        Called with the number of files found, before reading starts.

    Returns
    -------
    DerivedNights
        ``(nights, problems, parameters)``; the same whatever ``jobs`` / ``scheduler``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "subject12_night2.txt").write_text("W\\nN1\\nN2\\nN2\\nW\\n")
    >>> nights, problems, _ = derive_nights(
    ...     d, pattern=r"subject(?P<participant_id>\\d+)_night(?P<night>\\d+)")
    >>> nights[["recording_id", "participant_id", "night", "tst_min", "lights_source"]]
           recording_id participant_id night  tst_min lights_source
    0  subject12_night2             12     2      1.5          none
    >>> problems["rule"].tolist()
    ['no_lights']
    """
    options = options or DeriveOptions()
    if not (isinstance(jobs, int) and (jobs >= 1 or jobs == -1)):
        raise InputError(f"--jobs must be a whole number >= 1 (or -1 for all cores), got {jobs!r}.")
    sleep_statistics(  # the parameters are checked once, here, not in every chunk
        ["W"],
        epoch_length=options.epoch_length,
        min_bout_epochs=options.min_bout_epochs,
        persistent_sleep_min=options.persistent_sleep_min,
        max_bad_fraction=options.max_bad_fraction,
    )
    files, scan_problems = scan_hypnograms(paths_or_dir, recordings=recordings, pattern=pattern)
    if on_scan is not None:
        on_scan(len(files))
    workers = jobs if jobs > 0 else (os.cpu_count() or 1)
    if chunk_size is None:
        chunk_size = max(1, min(256, math.ceil(len(files) / (8 * workers)) if files else 1))
    chunks = _chunks(files, chunk_size)
    if scheduler is not None:
        results = _run_dask(chunks, lights, options, scheduler)
    else:
        results = _run_local(chunks, lights, options, workers)
    tables: list[pd.DataFrame] = []
    problems: list[pd.DataFrame] = [scan_problems]
    with _progress(len(files), progress) as bar:
        for chunk, (table, chunk_problems) in zip(chunks, results, strict=True):
            tables.append(table)
            problems.append(chunk_problems)
            bar.update(len(chunk))
    nonempty = [t for t in tables if len(t)]
    nights = pd.concat(nonempty, ignore_index=True) if nonempty else _empty_nights()
    nights["period"] = nights["period"].astype("Int64")
    problem_table = pd.concat([p for p in problems if len(p)] or [scan_problems], ignore_index=True)
    parameters = {
        "epoch_length": float(options.epoch_length),
        "min_bout_epochs": int(options.min_bout_epochs),
        "persistent_sleep_min": float(options.persistent_sleep_min),
        "waso_until_lights_on": bool(options.waso_until_lights_on),
        "max_bad_fraction": float(options.max_bad_fraction),
        "max_night_hours": float(options.max_night_hours),
    }
    return DerivedNights(nights, problem_table, parameters)
