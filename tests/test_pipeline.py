"""`studykit run`: stages, outputs, byte-identical reruns, no identifiers, errors per stage.

Most tests run the orchestration over small stand-ins of the upstream modules
(tests/data/outputs/fake_upstream.py), so they test this module's job (order of stages,
files written, determinism, error messages) whatever the state of the others. The last test
runs the real demo study end to end with the real modules.
"""

import csv
import importlib.util
import io
import json
import re
import sys
from pathlib import Path

import pytest

from studykit.cli import main
from studykit.errors import InputError, ProtocolError, ValidationError
from studykit.pipeline import run

FAKES = Path(__file__).parent / "data" / "outputs" / "fake_upstream.py"
TEXT_SUFFIXES = {".csv", ".md", ".html", ".tex", ".json", ".yaml"}


def _load_fakes():
    spec = importlib.util.spec_from_file_location("studykit_outputs_fake_upstream", FAKES)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses need the module registered
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def fakes(monkeypatch):
    mod = _load_fakes()
    mod.install(monkeypatch)
    return mod


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One simulated demo run (seed 7) shared by the tests that only read its outputs."""
    tmp = tmp_path_factory.mktemp("demo")
    proto = tmp / "demo_protocol.yaml"
    proto.write_text("id: demo_protocol\n")
    lines = []
    with pytest.MonkeyPatch.context() as mp:
        _load_fakes().install(mp)
        res = run(proto, out=tmp / "out", seed=7, progress=lines.append)
    return res, lines, proto


@pytest.fixture
def protocol(tmp_path):
    p = tmp_path / "demo_protocol.yaml"
    p.write_text("id: demo_protocol\n")
    return p


def test_demo_run_writes_every_output(demo_run):
    res, lines, _ = demo_run
    out = res.out
    # one progress line per stage, numbered, with its time
    stage_lines = [ln for ln in lines if ln.startswith("[")]
    assert [ln.split()[1] for ln in stage_lines] == [
        "simulate",
        "protocol",
        "validate",
        "derive",
        "fit",
        "tables",
        "figures",
        "report",
        "manifest",
    ]
    assert all(re.search(r"\d+\.\d\d s", ln) for ln in stage_lines)
    assert any("SIMULATED" in ln for ln in lines)
    # tables in four formats (analysis data and issue list: CSV only)
    for name in (
        "hypotheses",
        "table1_baseline",
        "descriptive_nights",
        "descriptive_diary",
        "validation_summary",
        "participant_flow",
        "emmeans",
        "hypotheses_adjusted_ci",
    ):
        for suffix in (".csv", ".md", ".html", ".tex"):
            assert (out / "tables" / f"{name}{suffix}").is_file(), name + suffix
    assert (out / "tables" / "analysis_nights.csv").is_file()
    for name in ("forest", "trajectories_n3_min", "emmeans", "hypnograms", "sleepiness"):
        for suffix in (".png", ".svg"):
            assert (out / "figures" / f"{name}{suffix}").is_file(), name + suffix
    assert (out / "data" / "roster.csv").is_file()
    assert (out / "protocol" / "demo_protocol.yaml").is_file()
    page = (out / "report.html").read_text()
    assert 'id="simulated-banner"' in page and 'id="table-hypotheses"' in page
    assert page.count("<figure") == 6  # 2 trajectories, emmeans, forest, hypnograms, KSS
    # the hypotheses table says the data are simulated
    hyp = (out / "tables" / "hypotheses.csv").read_text().splitlines()
    assert hyp[0].split(",")[-1] == "simulated" and hyp[1].endswith(",True")
    assert set(res.timings) == {ln.split()[1] for ln in stage_lines}


def test_manifest_hashes_every_input_and_output(demo_run):
    from studykit.manifest import sha256_file

    res, _, protocol = demo_run
    m = json.loads(res.manifest.read_text())
    out = res.out
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    outputs = {f for f in files if not f.startswith("data/") and f != "manifest.json"}
    assert set(m["outputs"]) == outputs
    assert set(m["inputs"]["files"]) == {f[5:] for f in files if f.startswith("data/")}
    assert m["outputs"]["tables/hypotheses.csv"] == sha256_file(out / "tables/hypotheses.csv")
    assert m["protocol"]["sha256"] == sha256_file(protocol)
    assert len(m["dictionary"]["sha256"]) == 64
    assert m["seeds"] == {"simulate": 7} and m["simulated"] is True
    assert m["command"] == ["studykit", "run", str(protocol), "--out", str(out), "--seed", "7"]
    assert m["environment"]["packages"]["numpy"]
    assert m["tolerance"] == {"rtol": 1e-6, "atol": 1e-9}


def test_two_runs_give_byte_identical_tables_and_figures(fakes, protocol, tmp_path):
    run(protocol, out=tmp_path / "a", progress=False)
    run(protocol, out=tmp_path / "b", progress=False)
    for sub, pattern in (("tables", "*.csv"), ("figures", "*.svg"), ("figures", "*.png")):
        a = sorted((tmp_path / "a" / sub).glob(pattern))
        assert a
        for f in a:
            assert f.read_bytes() == (tmp_path / "b" / sub / f.name).read_bytes(), f.name
    # the report differs only by the output path it cites (command, verify hint)
    ra = (tmp_path / "a/report.html").read_text().replace(str(tmp_path / "a"), "OUT")
    rb = (tmp_path / "b/report.html").read_text().replace(str(tmp_path / "b"), "OUT")
    assert ra == rb


def test_identifier_fields_appear_in_no_export(demo_run):
    out = demo_run[0].out
    roster = (out / "data" / "roster.csv").read_text()
    assert "Q.A." in roster and "1999-12-30" in roster  # the inputs do hold them
    checked = 0
    for f in out.rglob("*"):
        if f.is_file() and "data" not in f.relative_to(out).parts and f.suffix in TEXT_SUFFIXES:
            text = f.read_text()
            for forbidden in ("initials", "screening_date", "Q.A.", "Q.B.", "1999-12-3"):
                assert forbidden not in text, (f, forbidden)
            checked += 1
    assert checked > 30


def test_run_on_given_data_is_not_labelled_simulated(fakes, protocol, tmp_path):
    study = fakes.simulate_study(seed=3)
    fakes.write_study(study, tmp_path / "study")
    (tmp_path / "study" / "README.md").write_text("# Site 3 export\n")
    res = run(protocol, data=tmp_path / "study", out=tmp_path / "out", progress=False)
    assert "simulated-banner" not in res.report.read_text()
    m = json.loads(res.manifest.read_text())
    assert m["simulated"] is False and m["arguments"]["data"] == str((tmp_path / "study").resolve())
    assert not (tmp_path / "out" / "data").exists()


def test_given_data_labelled_simulated_by_readme_stay_labelled(fakes, protocol, tmp_path):
    study = fakes.simulate_study(seed=3)
    fakes.write_study(study, tmp_path / "study")  # README heading: "SIMULATED data ..."
    lines = []
    res = run(protocol, data=tmp_path / "study", out=tmp_path / "out", progress=lines.append)
    assert 'id="simulated-banner"' in res.report.read_text()
    assert json.loads(res.manifest.read_text())["simulated"] is True
    assert (tmp_path / "out/tables/hypotheses.csv").read_text().splitlines()[1].endswith(",True")
    assert any("SIMULATED" in ln for ln in lines)
    assert [ln.split()[1] for ln in lines if ln.startswith("[")][0] == "protocol"  # no simulate


def test_protocol_error_names_stage_file_and_fix(fakes, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("INVALID\n")
    lines = []
    with pytest.raises(ProtocolError) as exc:
        run(bad, out=tmp_path / "out", progress=lines.append)
    msg = str(exc.value)
    assert "stage 'protocol' failed" in msg and str(bad) in msg and "what to do" in msg
    assert "foo_min" in msg  # the underlying message is kept
    assert lines[-1].startswith("[2/9] protocol  FAILED")


def test_validation_error_writes_redacted_issue_table(fakes, protocol, tmp_path):
    study = fakes.simulate_study(seed=3)
    fakes.write_study(study, tmp_path / "study")
    (tmp_path / "study" / "FAIL_VALIDATION").write_text("")
    with pytest.raises(ValidationError) as exc:
        run(protocol, data=tmp_path / "study", out=tmp_path / "out", progress=False)
    msg = str(exc.value)
    assert "stage 'validate' failed" in msg and "validation_issues.csv" in msg
    text = (tmp_path / "out" / "validation_issues.csv").read_text()
    assert "Q.A." not in text and "[redacted: identifier field]" in text
    assert "roster.csv,2" in text


def test_missing_inputs_and_foreign_out_dir(fakes, protocol, tmp_path):
    with pytest.raises(InputError, match="not found"):
        run(tmp_path / "nope.yaml", out=tmp_path / "o1", progress=False)
    with pytest.raises(InputError, match="is not a directory"):
        run(protocol, data=tmp_path / "nodata", out=tmp_path / "o2", progress=False)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(InputError, match="holds no studykit results"):
        run(protocol, out=foreign, progress=False)
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_rerun_into_same_out_replaces_previous_results(fakes, protocol, tmp_path):
    out = tmp_path / "out"
    run(protocol, out=out, progress=False)
    (out / "tables" / "stale.csv").write_text("x\n1\n")
    run(protocol, out=out, progress=False)
    assert not (out / "tables" / "stale.csv").exists()


def test_cli_run_then_verify(fakes, protocol, tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["run", str(protocol), "--out", str(out), "--seed", "11"]) == 0
    printed = capsys.readouterr().out
    assert "[9/9] manifest" in printed
    assert main(["verify", str(out)]) == 0
    assert "verified" in capsys.readouterr().out
    # tamper with one number: verify exits 1 and names file, row and column
    f = out / "tables" / "hypotheses.csv"
    rows = list(csv.reader(io.StringIO(f.read_text())))
    j = rows[0].index("n_observations")
    rows[1][j] = str(int(rows[1][j]) + 1)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    f.write_text(buf.getvalue())
    assert main(["verify", str(out)]) == 1
    cap = capsys.readouterr()
    assert "tables/hypotheses.csv row 1 column 'n_observations': number" in cap.out
    assert "1 difference(s)" in cap.err


def test_cli_run_error_exit_code_2(fakes, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("INVALID\n")
    assert main(["run", str(bad), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "stage 'protocol' failed" in capsys.readouterr().err


def test_real_demo_run_end_to_end(tmp_path):
    """The README's main job with the real modules (needs every upstream part merged)."""
    for name in ("simulate", "validate", "hypnogram", "protocol", "analysis"):
        pytest.importorskip(f"studykit.{name}")
    proto = Path(__file__).resolve().parents[1] / "protocols" / "ketamine_sleep.yaml"
    if not proto.is_file():
        pytest.skip("protocols/ketamine_sleep.yaml not merged yet")
    res = run(proto, out=tmp_path / "out", progress=False)
    assert res.report.is_file() and res.manifest.is_file()
    from studykit.manifest import verify

    assert verify(tmp_path / "out") == []
