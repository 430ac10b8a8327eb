"""Manifest: hashes, environment, tolerant comparison of tables, and verify()."""

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from studykit.errors import InputError
from studykit.manifest import (
    ATOL,
    PACKAGES,
    RTOL,
    build_manifest,
    hash_tree,
    load_manifest,
    sha256_file,
    write_manifest,
)
from studykit.pipeline import run
from studykit.verify import Difference, compare_csv, compare_results, verify


def _write(p: Path, text: str) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_sha256_known_vectors(tmp_path):
    # FIPS 180-2, appendix B.1: SHA-256("abc"); and SHA-256 of the empty string
    assert (
        sha256_file(_write(tmp_path / "abc", "abc"))
        == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert (
        sha256_file(_write(tmp_path / "empty", ""))
        == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


def test_hash_tree_is_sorted_relative_and_excludes(tmp_path):
    _write(tmp_path / "b.csv", "1")
    _write(tmp_path / "a" / "x.csv", "2")
    _write(tmp_path / "data" / "roster.csv", "3")
    h = hash_tree(tmp_path, exclude=["data"])
    assert list(h) == ["a/x.csv", "b.csv"]
    assert h["b.csv"] == sha256_file(tmp_path / "b.csv")


# ---------------------------------------------------------------- comparing


@pytest.mark.parametrize(
    ("stored", "recomputed", "equal"),
    [
        ("1.0000005", "1", True),  # |diff| 5e-7 <= 1e-9 + 1e-6 * 1
        ("1.000002", "1", False),  # 2e-6 > 1e-6
        ("1e-10", "0", True),  # within atol 1e-9
        ("2e-9", "0", False),
        ("nan", "nan", True),
        ("inf", "inf", True),
        ("inf", "1e308", False),
        ("", "", True),
        ("", "0", False),  # missing vs a number is a difference
        ("True", "True", True),
        ("supported", "Supported", False),  # text exactly
    ],
)
def test_cell_tolerance(tmp_path, stored, recomputed, equal):
    a = _write(tmp_path / "a.csv", f"k,v\nx,{stored}\n")
    b = _write(tmp_path / "b.csv", f"k,v\nx,{recomputed}\n")
    assert (compare_csv(a, b) == []) is equal


def test_default_tolerances_are_the_documented_ones():
    assert (RTOL, ATOL) == (1e-6, 1e-9)


def test_compare_reports_columns_rows_and_cells(tmp_path):
    a = _write(tmp_path / "a.csv", "k,v\nx,1\ny,2\n")
    assert [d.kind for d in compare_csv(a, _write(tmp_path / "b.csv", "k,w\nx,1\ny,2\n"))] == [
        "columns"
    ]
    d = compare_csv(a, _write(tmp_path / "c.csv", "k,v\nx,1\n"))
    assert [x.kind for x in d] == ["rows"] and (d[0].stored, d[0].recomputed) == ("2", "1")
    d = compare_csv(a, _write(tmp_path / "d.csv", "k,v\nx,1\nz,2.5\n"), name="t.csv")
    assert [str(x) for x in d] == [
        "t.csv row 2 column 'k': text: stored 'y', re-computed 'z'",
        "t.csv row 2 column 'v': number: stored '2', re-computed '2.5'",
    ]


def test_compare_results_missing_and_extra(tmp_path):
    _write(tmp_path / "s" / "tables" / "a.csv", "x\n1\n")
    _write(tmp_path / "s" / "tables" / "gone.csv", "x\n1\n")
    _write(tmp_path / "s" / "data" / "roster.csv", "input, not compared\n")
    _write(tmp_path / "r" / "tables" / "a.csv", "x\n1\n")
    _write(tmp_path / "r" / "tables" / "new.csv", "x\n1\n")
    d = compare_results(tmp_path / "s", tmp_path / "r")
    assert [(x.file, x.kind) for x in d] == [
        ("tables/gone.csv", "missing"),
        ("tables/new.csv", "extra"),
    ]


def test_difference_str_names_everything():
    d = Difference("tables/h.csv", "number", 3, "estimate", "1.5", "1.6")
    assert str(d) == "tables/h.csv row 3 column 'estimate': number: stored '1.5', re-computed '1.6'"


# ---------------------------------------------------------------- building / loading


def test_build_manifest_records_hashes_env_and_command(tmp_path):
    out = tmp_path / "out"
    _write(out / "tables" / "h.csv", "x\n1\n")
    _write(out / "data" / "roster.csv", "participant_id\nP01\n")
    proto = _write(tmp_path / "p.yaml", "id: p\n")
    dd = _write(tmp_path / "dd.csv", "name\n")
    m = build_manifest(
        out_dir=out,
        command=["studykit", "run", "p.yaml"],
        arguments={"protocol": str(proto), "data": None, "out": str(out), "seed": 1},
        protocol_path=proto,
        protocol_id="p",
        protocol_copy=None,
        dictionary_path=dd,
        data_dir=out / "data",
        simulated=True,
        seeds={"simulate": 1},
        timings={"fit": 1.23456},
    )
    assert m["outputs"] == {"tables/h.csv": sha256_file(out / "tables" / "h.csv")}
    assert m["inputs"]["files"] == {"roster.csv": sha256_file(out / "data" / "roster.csv")}
    assert m["protocol"]["sha256"] == sha256_file(proto)
    assert m["dictionary"]["sha256"] == sha256_file(dd)
    assert m["environment"]["python"].count(".") == 2
    assert {"numpy", "pandas", "scipy", "matplotlib"} <= set(m["environment"]["packages"])
    assert m["timings_s"] == {"fit": 1.235}
    assert m["command"] == ["studykit", "run", "p.yaml"]
    assert m["git"]["protocol_repository"] is None  # tmp_path is not a git repository
    src = m["git"]["studykit_source"]  # None for an installed (non-git) copy
    assert src is None or (len(src["commit"]) == 40 and isinstance(src["dirty"], bool))
    path = write_manifest(m, out)
    assert json.loads(path.read_text()) == m
    assert load_manifest(out) == m


def test_load_manifest_errors(tmp_path):
    with pytest.raises(InputError, match="No manifest.json"):
        load_manifest(tmp_path)
    _write(tmp_path / "manifest.json", "{not json")
    with pytest.raises(InputError, match="Cannot read"):
        load_manifest(tmp_path)
    _write(tmp_path / "manifest.json", "{}")
    with pytest.raises(InputError, match="not a usable studykit run manifest"):
        load_manifest(tmp_path)
    _write(tmp_path / "manifest.json", "[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError, match="nested too deeply|not a usable"):
        load_manifest(tmp_path)
    with pytest.raises(InputError, match="is not a folder"):
        load_manifest(tmp_path / "manifest.json")


def _valid_manifest() -> dict:
    return {
        "arguments": {"protocol": "p.yaml", "data": None, "out": "o", "seed": 1},
        "command": ["studykit", "run", "p.yaml"],
        "simulated": True,
        "protocol": {"path": "p.yaml", "sha256": "a" * 64, "copy": "protocol/p.yaml"},
        "inputs": {"data_dir": "o/data", "files": {"roster.csv": "b" * 64}},
        "outputs": {"tables/h.csv": "c" * 64},
        "tolerance": {"rtol": 1e-6, "atol": 1e-9},
    }


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda m: m.update(arguments="p.yaml"), "'arguments' is a str"),
        (lambda m: m["arguments"].update(seed="7"), "'arguments.seed' is a str"),
        (lambda m: m["arguments"].update(seed=True), "'arguments.seed' is a bool"),
        (lambda m: m.update(outputs=["tables/h.csv"]), "'outputs' is a list"),
        (lambda m: m["outputs"].update({"tables/x.csv": 5}), "not SHA-256 hex digests"),
        (lambda m: m["outputs"].update({"../../etc/passwd": "d" * 64}), "outside the results"),
        (lambda m: m["protocol"].update(copy="/etc/passwd"), "'protocol.copy'"),
        (lambda m: m["protocol"].update(sha256=None), "'protocol.sha256' is a NoneType"),
        (lambda m: m.update(command="studykit run"), "'command' is a str"),
        (lambda m: m.update(tolerance={"rtol": -1}), "finite number >= 0"),
        (lambda m: m.pop("inputs"), "'inputs' is missing"),
    ],
)
def test_wrong_typed_manifest_is_named_not_a_crash(tmp_path, edit, named):
    """#13 item 9: a wrong-typed manifest is a user error (exit 2) naming the field."""
    m = _valid_manifest()
    _write(tmp_path / "manifest.json", json.dumps(m))
    assert load_manifest(tmp_path) == m
    edit(m)
    _write(tmp_path / "manifest.json", json.dumps(m))
    with pytest.raises(InputError, match="not a usable studykit run manifest") as exc:
        load_manifest(tmp_path)
    assert named in str(exc.value)


# ---------------------------------------------------------------- verify (a small real study)


@pytest.fixture
def demo(small_study, small_protocol, tmp_path):
    proto = Path(shutil.copyfile(small_protocol, tmp_path / "proto.yaml"))
    run(proto, data=small_study, out=tmp_path / "out", progress=False)
    return tmp_path / "out", proto, small_study


def test_verify_identical_then_detects_changes(demo):
    out, proto, study = demo
    assert verify(out) == []
    # a changed result number beyond tolerance
    f = out / "tables" / "descriptive_nights.csv"
    text = f.read_text()
    lines = text.splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0] + ",12345"  # first row, last column: max
    f.write_text("\n".join(lines) + "\n")
    # a changed input file, and a changed protocol (a comment added: same analysis)
    (study / "README.md").write_text((study / "README.md").read_text() + "edited\n")
    proto.write_text(proto.read_text() + "# edited after the run\n")
    diffs = verify(out)
    kinds = {(d.file, d.kind) for d in diffs}
    assert ("tables/descriptive_nights.csv", "number") in kinds
    assert (f"{study.resolve()}/README.md", "input") in kinds  # differs from the manifest
    assert (str(proto), "protocol") in kinds


def test_verify_uses_protocol_copy_when_original_is_gone(demo):
    out, proto, _ = demo
    proto.unlink()
    assert verify(out) == []


_RUN_IMPORTS = """
import importlib.metadata, json, logging, sys
logging.disable(logging.CRITICAL)
from studykit.pipeline import run
run("protocols/ketamine_sleep.yaml", data=None, out=sys.argv[1], seed=20261125,
    command=["studykit", "run"], progress=False)
dists = importlib.metadata.packages_distributions()
print(json.dumps(sorted({d.lower() for m in list(sys.modules) if "." not in m
                         for d in dists.get(m, [])})))
"""


def test_manifest_records_the_versions_of_what_the_run_imports(tmp_path):
    """PACKAGES = studykit + the runtime dependencies (pyproject.toml) that a fresh
    ``studykit run`` process has imported when it ends: none missing, none it does not use
    (pingouin is test-only; joblib and tqdm serve power and derive)."""
    root = Path(__file__).parents[1]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    runtime = {re.split(r"[<>=!~\[ ]", d, maxsplit=1)[0].lower() for d in deps}
    out = subprocess.run(
        [sys.executable, "-c", _RUN_IMPORTS, str(tmp_path / "results")],
        cwd=root, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    imported = set(json.loads(out.strip().splitlines()[-1]))
    assert {p.lower() for p in PACKAGES} == {"studykit"} | (runtime & imported)
    assert "pingouin" not in {p.lower() for p in PACKAGES}
