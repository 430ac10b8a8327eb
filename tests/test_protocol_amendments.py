"""Protocol amendment logs: parsed into ``Protocol.amendments``, versions ordered, every
replaced version archived unchanged (its SHA-256 checked on loading).

Fixtures: tests/data/protocols/amendments/ (written by its make_amendment_fixtures.py from the small
trial_sim protocol; SIMULATED-data protocol, no real rationale). The hashes stated in the
fixtures are `sha256sum` of the archived files beside them.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from studykit.dictionary import load_dictionary
from studykit.errors import ProtocolError
from studykit.protocol import Amendment, load_protocol, parse_protocol

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "protocols" / "amendments"
V12 = DATA / "trial_v1.2.yaml"
DD = load_dictionary()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_amendment_log_is_read_oldest_first():
    proto = load_protocol(V12, dictionary=DD)
    assert proto.version == "1.2"
    assert all(isinstance(a, Amendment) for a in proto.amendments)
    a11, a12 = proto.amendments
    assert (a11.version, a11.date, a11.replaces_version) == ("1.1", "2026-02-01", "1.0")
    assert (a12.version, a12.date, a12.replaces_version) == ("1.2", "2026-03-01", "1.1")
    assert a11.changes == ("H1 effect of interest 5 -> 6 minutes.",)
    assert a11.rationale.startswith("Fixture")
    # the stated hashes are those of the archived files (relative to the protocol file)
    assert a11.replaces_sha256 == sha(DATA / "archive" / "trial_v1.0.yaml")
    assert a12.replaces_sha256 == sha(DATA / "archive" / "trial_v1.1.yaml")
    assert a12.replaces_file == "archive/trial_v1.1.yaml"
    assert "replacing version 1.1" in a12.text() and a12.replaces_sha256 in a12.text()


def test_archived_versions_still_load():
    # archive/trial_v1.1.yaml names 'archive/trial_v1.0.yaml' (relative to where it was in
    # force); read from the archive folder it finds trial_v1.0.yaml beside it
    v10 = load_protocol(DATA / "archive" / "trial_v1.0.yaml", dictionary=DD)
    v11 = load_protocol(DATA / "archive" / "trial_v1.1.yaml", dictionary=DD)
    assert (v10.version, v10.amendments) == ("1.0", ())
    assert v11.version == "1.1" and [a.version for a in v11.amendments] == ["1.1"]
    assert v10.get("H1").effect_of_interest == 5 and v11.get("H1").effect_of_interest == 6


@pytest.mark.parametrize(
    ("fixture", "match"),
    [
        # archived file edited after the amendment: both hashes and the file are named
        (
            "bad_tampered_archive.yaml",
            r"archive/trial_v1.0_edited.yaml' of version '1.0' has SHA-256 "
            r"[0-9a-f]{64}, but the amendment states 4f3b98ed",
        ),
        ("bad_missing_file.yaml", r"archive/trial_v0.9.yaml' of the replaced version '1.0' does not exist"),
        ("bad_version_order.yaml", r"amendments\[1\].replaces.version: .*oldest first"),
        ("bad_version_not_increasing.yaml", r"'0.9' does not come after the version it replaces"),
        ("bad_unknown_key.yaml", r"amendments\[0\]: unknown key\(s\) reason"),
    ],
)  # fmt: skip
def test_broken_amendment_logs_are_refused(fixture, match):
    with pytest.raises(ProtocolError, match=match) as info:
        load_protocol(DATA / fixture, dictionary=DD)
    assert fixture in str(info.value)  # the message names the protocol file


def test_tampered_archive_message_names_both_hashes():
    edited = DATA / "archive" / "trial_v1.0_edited.yaml"
    with pytest.raises(ProtocolError) as info:
        load_protocol(DATA / "bad_tampered_archive.yaml", dictionary=DD)
    msg = str(info.value)
    assert sha(edited) in msg and sha(DATA / "archive" / "trial_v1.0.yaml") in msg


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(DATA / "archive", tmp_path / "archive")
    return Path(shutil.copy(V12, tmp_path / V12.name))


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ('reference\n  version: "1.2"', 'reference\n  version: "1.3"', "newest amendment produced version '1.2'"),
        ('date: "2026-03-01"', 'date: "1 March 2026"', "not an ISO date"),
        ('date: "2026-03-01"', 'date: "2026-01-01"', "before the date of the amendment before it"),
        ("sha256: 540aafc4", "sha256: 540aafc", "not a SHA-256"),
        ('  - version: "1.2"', '  - version: "v1.2"', "not a version number"),
        ("      - H1 effect of interest 5 -> 6 minutes.\n", "      []\n", "changes"),
        ("      file: archive/trial_v1.1.yaml\n", "", r"missing required field\(s\) file"),
        # the archived file must be the replaced version (here 1.0 is stated as 1.1)
        ("file: archive/trial_v1.1.yaml", "file: archive/trial_v1.0.yaml", "SHA-256"),
    ],
)  # fmt: skip
def test_bad_amendment_fields_are_refused(tmp_path, old, new, match):
    path = _copy(tmp_path)
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ProtocolError, match=match):
        load_protocol(path, dictionary=DD)


def test_archive_with_another_version_is_refused(tmp_path):
    path = _copy(tmp_path)
    # the archived 1.1 file is replaced by one that says it is version 1.5; the hash is updated
    archived = tmp_path / "archive" / "trial_v1.1.yaml"
    old_sha = sha(archived)
    archived.write_text(
        archived.read_text(encoding="utf-8").replace('  version: "1.1"\n', '  version: "1.5"\n', 1),
        encoding="utf-8",
    )
    path.write_text(
        path.read_text(encoding="utf-8").replace(old_sha, sha(archived)), encoding="utf-8"
    )
    with pytest.raises(ProtocolError, match="is version '1.5' of the protocol, not the replaced"):
        load_protocol(path, dictionary=DD)


def test_text_with_amendments_needs_the_folder_of_its_archive():
    text = V12.read_text(encoding="utf-8")
    with pytest.raises(ProtocolError, match="cannot be checked for a protocol given as text"):
        parse_protocol(text, dictionary=DD)
    proto = parse_protocol(text, dictionary=DD, base_dir=DATA)
    assert [a.version for a in proto.amendments] == ["1.1", "1.2"]
    assert proto.sha256 == sha(V12)


def test_cli_exit_code_2_for_a_tampered_archive(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "studykit", "run", str(DATA / "bad_tampered_archive.yaml"),
         "--out", str(tmp_path / "out")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "trial_v1.0_edited.yaml" in r.stderr and "Traceback" not in r.stderr
