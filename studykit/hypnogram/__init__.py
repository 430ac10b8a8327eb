"""Hypnograms: the stage vocabulary, readers of the common formats, per-night statistics, plot.

>>> from studykit.hypnogram import STAGES, sleep_statistics
>>> STAGES
('W', 'N1', 'N2', 'N3', 'R', 'MT', 'ART', 'UNS')

The submodules are ``files`` (THE scanner: which files are hypnograms and whose night each
is), ``readers`` (files -> epoch tables), ``lights`` (lights off / on and their source),
``stages`` (labels -> codes), ``statistics`` (epoch tables -> per-night outcomes), ``derive``
(a folder of nights -> one table, in parallel) and ``plot``. matplotlib is imported only
when :func:`plot_hypnogram` draws.
"""

from __future__ import annotations

from studykit.hypnogram.files import (
    HypnogramFile,
    identify_file,
    parse_hypnogram_name,
    scan_hypnograms,
)
from studykit.hypnogram.plot import plot_hypnogram
from studykit.hypnogram.readers import (
    MAX_NIGHT_HOURS,
    HypnogramSet,
    read_hypnogram,
    read_hypnograms,
)
from studykit.hypnogram.stages import (
    SLEEP_STAGES,
    STAGE_DTYPE,
    STAGES,
    normalize_stages,
    stage_codes,
    to_yasa_int,
)
from studykit.hypnogram.statistics import KEYS, OUTCOMES, sleep_statistics

__all__ = [
    "STAGES",
    "SLEEP_STAGES",
    "STAGE_DTYPE",
    "KEYS",
    "OUTCOMES",
    "MAX_NIGHT_HOURS",
    "HypnogramSet",
    "HypnogramFile",
    "scan_hypnograms",
    "identify_file",
    "normalize_stages",
    "stage_codes",
    "to_yasa_int",
    "read_hypnogram",
    "read_hypnograms",
    "parse_hypnogram_name",
    "sleep_statistics",
    "plot_hypnogram",
]
