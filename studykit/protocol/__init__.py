"""Pre-registered hypotheses: the protocol's data model, its strict YAML loader, its plans.

- :mod:`studykit.protocol.model`: what a protocol states (dataclasses, constants).
- :mod:`studykit.protocol.parse`: :func:`load_protocol` / :func:`parse_protocol` (strict YAML,
  schema and data-dictionary checks).
- :mod:`studykit.protocol.plan`: each hypothesis compiled once into a
  :class:`~studykit.protocol.plan.HypothesisPlan` that :mod:`studykit.analysis` executes.
"""

from studykit.protocol.model import (
    EVIDENCE,
    Amendment,
    AnalysisSet,
    Contrast,
    Estimand,
    Hypothesis,
    IntercurrentEvent,
    MultiplicityFamily,
    NotTested,
    Protocol,
    Source,
)
from studykit.protocol.parse import load_protocol, parse_protocol
from studykit.protocol.plan import HypothesisPlan, compile_plans

__all__ = [
    "EVIDENCE",
    "Amendment",
    "AnalysisSet",
    "Contrast",
    "Estimand",
    "Hypothesis",
    "HypothesisPlan",
    "IntercurrentEvent",
    "MultiplicityFamily",
    "NotTested",
    "Protocol",
    "Source",
    "compile_plans",
    "load_protocol",
    "parse_protocol",
]
