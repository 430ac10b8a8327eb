"""Shared fixtures: small REAL studies for the output tests (pipeline, manifest, verify, faults).

``studykit.simulate`` makes a small SIMULATED crossover study (8 participants, seed 3: the
smallest study the simulator's realistic mess allows); identifier columns of the data
dictionary (``initials``, ``screening_date``) are added to its roster with recognizable
values, so tests can check that no export ever contains them. The protocol
``tests/data/outputs/small_protocol.yaml`` holds three hypotheses of the demo protocol (LMM,
negative-binomial GLMM, diary with three contrasts), so a full run takes a few seconds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from studykit.dictionary import load_dictionary
from studykit.pipeline import run
from studykit.protocol import Protocol, parse_protocol
from studykit.simulate import simulate_study, write_study

#: The shipped protocol and the packaged data dictionary (tests that break a copy of it).
PROTOCOL = Path(__file__).resolve().parents[1] / "protocols" / "ketamine_sleep.yaml"
DD = load_dictionary()
SMALL_PROTOCOL = Path(__file__).parent / "data" / "outputs" / "small_protocol.yaml"
#: Identifier values written into the small study's roster (never to appear in an export).
INITIALS = [f"Q.{chr(65 + i)}." for i in range(26)]
SCREENING = [f"1999-12-{10 + i:02d}" for i in range(26)]


def write_small_study(directory: Path, *, seed: int = 3, n_participants: int = 8) -> Path:
    """Simulate a small study into ``directory`` and add identifier columns to its roster."""
    write_study(simulate_study(seed=seed, n_participants=n_participants), directory)
    roster_path = directory / "roster.csv"
    roster = pd.read_csv(roster_path, dtype=str, keep_default_na=False)
    roster.insert(1, "initials", INITIALS[: len(roster)])
    roster.insert(2, "screening_date", SCREENING[: len(roster)])
    roster.to_csv(roster_path, index=False, lineterminator="\n")
    return directory


@pytest.fixture(scope="session")
def small_study_template(tmp_path_factory) -> Path:
    """A small study directory, written once per session (copy it before changing it)."""
    return write_small_study(tmp_path_factory.mktemp("small_study") / "study")


@pytest.fixture
def small_study(small_study_template, tmp_path) -> Path:
    """A private copy of the small study (tests may edit it)."""
    return Path(shutil.copytree(small_study_template, tmp_path / "study"))


@pytest.fixture(scope="session")
def small_protocol() -> Path:
    return SMALL_PROTOCOL


@pytest.fixture(scope="session")
def small_run(small_study_template, tmp_path_factory):
    """One run of the small protocol on the small study, shared by read-only tests."""
    out = tmp_path_factory.mktemp("small_run") / "out"
    lines: list[str] = []
    res = run(SMALL_PROTOCOL, data=small_study_template, out=out, progress=lines.append)
    return res, lines


@pytest.fixture
def doc() -> dict:
    """The shipped protocol as a plain dict (anchors expanded), to break in tests."""
    return yaml.safe_load(PROTOCOL.read_text(encoding="utf-8"))


def parse(d: dict) -> Protocol:
    """Parse a protocol dict as the shipped protocol would be parsed."""
    # base_dir: the amendment log's archived 1.0 is relative to the shipped protocol's folder
    return parse_protocol(
        yaml.safe_dump(d, sort_keys=False),
        dictionary=DD,
        source="test.yaml",
        base_dir=PROTOCOL.parent,
    )


def hyp(d: dict, hid: str) -> dict:
    """Hypothesis ``hid`` of a protocol dict."""
    return next(h for h in d["hypotheses"] if h["id"] == hid)
