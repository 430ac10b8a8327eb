"""studykit: pre-registered, reproducible analysis of clinical-trial style sleep studies.

The pipeline runs one way: data dictionary -> validated data -> per-night sleep statistics
from hypnograms -> protocol hypotheses -> mixed-effects models -> tables, figures, report and
manifest. Import the pieces from their modules (``studykit.dictionary``,
``studykit.hypnogram``, ``studykit.models`` ...); importing ``studykit`` itself is cheap and
has no side effects.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("studykit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0+source"

__all__ = ["__version__"]
