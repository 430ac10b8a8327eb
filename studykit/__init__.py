"""studykit: pre-registered, reproducible analysis of clinical-trial style sleep studies.

The pipeline runs one way: data dictionary -> validated data -> per-night sleep statistics
from hypnograms -> protocol hypotheses -> mixed-effects models -> tables, figures, report and
manifest. The stages are available from the top level::

    import studykit as sk

    study = sk.load_study("demo")                          # validated tables
    nights = sk.sleep_statistics(sk.read_hypnogram("P01_p1_1.csv"))
    fit = sk.lmer("sws_min ~ arm * night + (1 | participant_id)", study.nights)
    fit.summary()
    res = sk.run_analysis(sk.load_protocol("protocols/ketamine_sleep.yaml"), study)

Importing ``studykit`` is cheap and has no side effects: each name is imported from its module
(``studykit.validate``, ``studykit.hypnogram``, ``studykit.models`` ...) on first use.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("studykit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0+source"

# public name -> module that defines it (imported on first access)
_LAZY = {
    # data dictionary and validated data
    "load_dictionary": "studykit.dictionary",
    "validate_table": "studykit.validate",
    "load_study": "studykit.validate",
    # hypnograms
    "read_hypnogram": "studykit.hypnogram",
    "sleep_statistics": "studykit.hypnogram",
    "plot_hypnogram": "studykit.hypnogram",
    # the simulated demo study
    "simulate_study": "studykit.simulate",
    "write_study": "studykit.simulate",
    # protocol and analysis
    "load_protocol": "studykit.protocol",
    "run_analysis": "studykit.analysis",
    # models
    "lmer": "studykit.models.api",
    "glmer": "studykit.models.api",
    "clmm": "studykit.models.api",
    "fit_lmm": "studykit.models.lmm",
    "fit_glmm": "studykit.models.glmm",
    "fit_clmm": "studykit.models.clmm",
    "parse_formula": "studykit.models.formula",
    "emmeans": "studykit.models.emmeans",
    # errors
    "StudykitError": "studykit.errors",
}

__all__ = [
    "__version__",
    "load_dictionary",
    "validate_table",
    "load_study",
    "read_hypnogram",
    "sleep_statistics",
    "plot_hypnogram",
    "simulate_study",
    "write_study",
    "load_protocol",
    "run_analysis",
    "lmer",
    "glmer",
    "clmm",
    "fit_lmm",
    "fit_glmm",
    "fit_clmm",
    "parse_formula",
    "emmeans",
    "StudykitError",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from studykit.analysis import run_analysis
    from studykit.dictionary import load_dictionary
    from studykit.errors import StudykitError
    from studykit.hypnogram import plot_hypnogram, read_hypnogram, sleep_statistics
    from studykit.models.api import clmm, glmer, lmer
    from studykit.models.clmm import fit_clmm
    from studykit.models.emmeans import emmeans
    from studykit.models.formula import parse_formula
    from studykit.models.glmm import fit_glmm
    from studykit.models.lmm import fit_lmm
    from studykit.protocol import load_protocol
    from studykit.simulate import simulate_study, write_study
    from studykit.validate import load_study, validate_table


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'studykit' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
