"""`studykit run`: stages, outputs, byte-identical reruns, no identifiers, errors per stage.

Every test runs the real modules on a small real study (tests/conftest.py: 8 simulated
participants with identifier columns added, three hypotheses of the demo protocol); one test
runs the README's main job (the 36-participant demo study) end to end.
"""

import csv
import io
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import INITIALS, SCREENING

from studykit.cli import main
from studykit.errors import InputError, ProtocolError, ValidationError
from studykit.manifest import sha256_file
from studykit.pipeline import run
from studykit.protocol import load_protocol
from studykit.tables import SIMULATED_LABEL, read_table_csv
from studykit.verify import verify

TEXT_SUFFIXES = {".csv", ".md", ".html", ".tex", ".json", ".yaml", ".svg"}
ROOT = Path(__file__).resolve().parents[1]


def test_run_writes_every_output(small_run):
    res, lines = small_run
    out = res.out
    # one progress line per stage, numbered, with its time (no simulate stage with --data)
    stage_lines = [ln for ln in lines if ln.startswith("[")]
    assert [ln.split()[1] for ln in stage_lines] == [
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
    # the study's README says SIMULATED: the run says so
    assert any("SIMULATED" in ln for ln in lines)
    for name in (
        "hypotheses",
        "table1_baseline",
        "descriptive_nights",
        "descriptive_diary",
        "validation_summary",
        "consort_flow",
        "emmeans",
        "hypotheses_adjusted_ci",
        "exclusions",
    ):
        for suffix in (".csv", ".md", ".html", ".tex"):
            assert (out / "tables" / f"{name}{suffix}").is_file(), name + suffix
    assert (out / "tables" / "analysis_nights.csv").is_file()
    # participants and nights are never counted in one column: the CONSORT crossover tables
    # replace the old participant_flow table (which mixed them), so it is not written
    assert not list((out / "tables").glob("participant_flow.*"))
    families = list(
        dict.fromkeys(read_table_csv(out / "tables" / "hypotheses.csv")["multiplicity_family"])
    )
    forests = [f"forest_{f}" for f in families]  # one forest plot per multiplicity family
    for name in (*forests, "consort_flow", "trajectories_n3_min", "emmeans", "hypnograms"):
        for suffix in (".png", ".svg"):
            assert (out / "figures" / f"{name}{suffix}").is_file(), name + suffix
    assert (out / "figures" / "sleepiness.png").is_file()
    assert (out / "protocol" / "small_protocol.yaml").is_file()
    assert not (out / "data").exists()  # --data is read in place, never copied
    page = (out / "report.html").read_text()
    assert 'id="simulated-banner"' in page
    for f in families:
        assert f'id="table-hypotheses-{f}"' in page and f'id="fig-forest_{f}"' in page
    # the hypotheses table: 5 rows (H1, H2, E3 with days 1-3), each says simulated
    hyp = read_table_csv(out / "tables" / "hypotheses.csv")
    assert hyp["hypothesis_id"].tolist() == ["H1", "H2", "E3", "E3", "E3"]
    assert set(hyp["simulated"]) == {"True"}
    assert set(res.timings) == {ln.split()[1] for ln in stage_lines}


def test_manifest_hashes_every_input_and_output(small_run, small_study_template, small_protocol):
    res, _ = small_run
    m = json.loads(res.manifest.read_text())
    out = res.out
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert set(m["outputs"]) == files - {"manifest.json", "manifest.json.sha256"}
    data_files = {
        p.relative_to(small_study_template).as_posix()
        for p in small_study_template.rglob("*")
        if p.is_file()
    }
    assert set(m["inputs"]["files"]) == data_files
    assert m["outputs"]["tables/hypotheses.csv"] == sha256_file(out / "tables/hypotheses.csv")
    assert m["protocol"]["sha256"] == sha256_file(small_protocol)
    assert len(m["dictionary"]["sha256"]) == 64
    assert m["seeds"] == {"simulate": None} and m["simulated"] is True
    assert m["arguments"]["allow_errors"] is False
    assert m["command"] == [
        "studykit",
        "run",
        str(small_protocol),
        "--data",
        str(small_study_template),
        "--out",
        str(out),
        "--seed",
        "20261125",
    ]
    assert m["environment"]["packages"]["numpy"]
    assert m["tolerance"] == {"rtol": 1e-6, "atol": 1e-9}


def test_rerun_replaces_previous_results_byte_identically(
    small_study_template, small_protocol, small_run, tmp_path
):
    first = small_run[0].out
    out = Path(shutil.copytree(first, tmp_path / "b"))
    (out / "tables" / "stale.csv").write_text("x\n1\n")
    run(small_protocol, data=small_study_template, out=out, progress=False)
    assert not (out / "tables" / "stale.csv").exists()
    for sub, pattern in (("tables", "*"), ("figures", "*.svg"), ("figures", "*.png")):
        a = sorted((first / sub).glob(pattern))
        assert a
        assert [f.name for f in a] == sorted(f.name for f in (out / sub).glob(pattern))
        for f in a:
            assert f.read_bytes() == (out / sub / f.name).read_bytes(), f.name
    # the report differs only by the output path it cites (command, verify hint)
    ra = (first / "report.html").read_text().replace(str(first), "OUT")
    rb = (out / "report.html").read_text().replace(str(out), "OUT")
    assert ra == rb


def test_identifier_fields_appear_in_no_export(small_run, small_study_template):
    out = small_run[0].out
    roster = (small_study_template / "roster.csv").read_text()
    assert INITIALS[0] in roster and SCREENING[0] in roster  # the inputs do hold them
    checked = 0
    for f in out.rglob("*"):
        if f.is_file() and f.suffix in TEXT_SUFFIXES:
            text = f.read_text()
            for forbidden in ("initials", "screening_date", *INITIALS[:8], *SCREENING[:8]):
                assert forbidden not in text, (f, forbidden)
            checked += 1
    assert checked > 30


def test_run_on_given_data_is_not_labelled_simulated(small_study, small_protocol, tmp_path):
    (small_study / "README.md").write_text("# Site 3 export\n")
    res = run(small_protocol, data=small_study, out=tmp_path / "out", progress=False)
    assert "simulated-banner" not in res.report.read_text()
    m = json.loads(res.manifest.read_text())
    assert m["simulated"] is False and m["arguments"]["data"] == str(small_study.resolve())
    assert set(read_table_csv(res.tables["hypotheses"])["simulated"]) == {"False"}
    for f in (res.out / "tables").iterdir():  # real data: no SIMULATED label anywhere
        assert "SIMULATED" not in f.read_text(), f


def test_protocol_error_names_stage_file_and_fix(small_study_template, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("INVALID\n")
    lines = []
    with pytest.raises(ProtocolError) as exc:
        run(bad, data=small_study_template, out=tmp_path / "out", progress=lines.append)
    msg = str(exc.value)
    assert "stage 'protocol' failed" in msg and str(bad) in msg and "what to do" in msg
    assert "expected a mapping" in msg  # the underlying message is kept
    assert lines[-1].startswith("[1/8] protocol  FAILED")


def _break_roster(study: Path) -> None:
    """Row 1 of the roster: age 'abc' (an error) and an invalid screening date (an error in
    an identifier field, whose value must never be exported)."""
    lines = (study / "roster.csv").read_text().splitlines()
    header = lines[0].split(",")
    row = lines[1].split(",")
    row[header.index("age")] = "abc"
    row[header.index("screening_date")] = "1999-13-45"
    lines[1] = ",".join(row)
    (study / "roster.csv").write_text("\n".join(lines) + "\n")


def test_validation_error_stops_the_run_and_writes_redacted_issues(
    small_study, small_protocol, tmp_path
):
    _break_roster(small_study)
    with pytest.raises(ValidationError) as exc:
        run(small_protocol, data=small_study, out=tmp_path / "out", progress=False)
    msg = str(exc.value)
    assert "stage 'validate' failed" in msg and "--allow-errors" in msg
    # the results folder is not created by a failed run: the issue table goes beside it
    issues = tmp_path / "out.validation_issues.csv"
    assert str(issues) in msg and not (tmp_path / "out").exists()
    text = issues.read_text()
    assert "1999-13-45" not in text and "[redacted" in text
    # row 1 is damaged (an implausible cell), so any of its cells could be a misplaced
    # identifier: 'abc' is masked too, but file, row (2 = first data row) and column remain
    assert "roster.csv,2,P01,,age," in text


def test_allow_errors_is_recorded_in_manifest_and_report(small_study, small_protocol, tmp_path):
    _break_roster(small_study)
    res = run(
        small_protocol, data=small_study, out=tmp_path / "out", progress=False, allow_errors=True
    )
    m = json.loads(res.manifest.read_text())
    assert m["arguments"]["allow_errors"] is True and m["command"][-1] == "--allow-errors"
    page = res.report.read_text()
    assert "--allow-errors" in page
    assert verify(res.out) == []  # the re-run also allows the errors


def test_missing_inputs_and_foreign_out_dir(small_study_template, small_protocol, tmp_path):
    with pytest.raises(InputError, match="not found"):
        run(tmp_path / "nope.yaml", out=tmp_path / "o1", progress=False)
    with pytest.raises(InputError, match="is not a directory"):
        run(small_protocol, data=tmp_path / "nodata", out=tmp_path / "o2", progress=False)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(InputError, match="holds no studykit results"):
        run(small_protocol, data=small_study_template, out=foreign, progress=False)
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_cli_run_then_verify(small_study_template, small_protocol, tmp_path, capsys):
    out = tmp_path / "res"
    args = ["run", str(small_protocol), "--data", str(small_study_template), "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "[8/8] manifest" in printed
    assert main(["verify", str(out)]) == 0
    assert "verified" in capsys.readouterr().out
    # tamper with one number: verify exits 1 and names file, row and column
    f = out / "tables" / "hypotheses.csv"
    rows = list(csv.reader(io.StringIO(f.read_text())))  # rows[0]: the SIMULATED label
    j = rows[1].index("n_observations")
    rows[2][j] = str(int(rows[2][j]) + 1)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    f.write_text(buf.getvalue())
    assert main(["verify", str(out)]) == 1
    cap = capsys.readouterr()
    assert "tables/hypotheses.csv row 1 column 'n_observations': number" in cap.out
    assert "tables/hypotheses.csv: hash" in cap.out  # and its SHA-256 differs from the manifest


def test_cli_run_error_exit_code_2(small_study_template, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("INVALID\n")
    args = ["run", str(bad), "--data", str(small_study_template), "--out", str(tmp_path / "o")]
    assert main([*args, "--quiet"]) == 2
    assert "stage 'protocol' failed" in capsys.readouterr().err


def test_real_demo_run_end_to_end(tmp_path):
    """The README's main job: the simulated demo study (36 participants), then verify."""
    lines = []
    res = run(
        ROOT / "protocols" / "ketamine_sleep.yaml", out=tmp_path / "out", progress=lines.append
    )
    assert [ln.split()[1] for ln in lines if ln.startswith("[")][0] == "simulate"
    assert (res.out / "data" / "roster.csv").is_file()
    assert res.report.is_file() and res.manifest.is_file()
    manifest = json.loads(res.manifest.read_text())
    assert manifest["seeds"] == {"simulate": 20261125}
    # the protocol's version (1.1, amended) is recorded, and its copy stored with the results
    # loads: the archived version 1.0 its amendment log names is copied beside it
    assert (manifest["protocol"]["id"], manifest["protocol"]["version"]) == (
        "ketamine_sleep",
        "1.1",
    )
    copy = res.out / manifest["protocol"]["copy"]
    archived = res.out / "protocol" / "archive" / "ketamine_sleep_v1.0.yaml"
    assert (
        archived.read_bytes() == (ROOT / "protocols/archive/ketamine_sleep_v1.0.yaml").read_bytes()
    )
    assert load_protocol(copy).amendments[0].replaces_sha256 == sha256_file(archived)
    assert "ketamine_sleep, version 1.1: 10 hypotheses" in "\n".join(lines)
    assert verify(tmp_path / "out") == []


def test_every_table_format_of_simulated_data_says_simulated(small_run):
    """#17: CSV (first comment line), Markdown, HTML and LaTeX (caption) all say SIMULATED."""
    out = small_run[0].out
    files = sorted((out / "tables").iterdir())
    assert len(files) > 30
    for f in files:
        text = f.read_text()
        if f.suffix == ".csv":
            assert text.splitlines()[0] == f"# {SIMULATED_LABEL}", f
        elif f.suffix == ".tex":
            assert "\\caption{SIMULATED DATA" in text, f
        else:
            assert "SIMULATED DATA" in text, f
    m = json.loads((out / "manifest.json").read_text())
    assert m["simulated"] is True and m["data_label"].startswith("SIMULATED DATA")


def test_a_failed_rerun_leaves_the_previous_results_intact(
    small_run, small_study, small_protocol, tmp_path
):
    out = Path(shutil.copytree(small_run[0].out, tmp_path / "out"))
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    _break_roster(small_study)
    with pytest.raises(ValidationError):
        run(small_protocol, data=small_study, out=out, progress=False)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "out",
        "out.validation_issues.csv",
        "study",
    ]


def test_out_pointing_to_a_file_is_a_user_error(small_study_template, small_protocol, tmp_path):
    f = tmp_path / "results.txt"
    f.write_text("mine")
    with pytest.raises(InputError, match="is a file, not a folder"):
        run(small_protocol, data=small_study_template, out=f, progress=False)
    assert f.read_text() == "mine"
    code = main(["run", str(small_protocol), "--data", str(small_study_template), "-o", str(f)])
    assert code == 2
