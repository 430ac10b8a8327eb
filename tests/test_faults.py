"""Fault injection (#13): nothing lost, nothing leaked, nothing forged.

Faults injected into `studykit run` and `studykit verify` on a small real study
(tests/conftest.py): truncated and bit-flipped inputs and outputs, permission and disk
errors (monkeypatched: the tests may run as root, for whom chmod does not stop a write),
interrupts and bugs raised at every stage, and concurrent runs into one folder. After every
failed run, the previous results must be byte-for-byte what they were and nothing may be
left beside them (no temporary folder, no lock).
"""

from __future__ import annotations

import errno
import json
import shutil
import threading
from pathlib import Path

import pytest

import studykit.outdir
import studykit.pipeline as pipeline
from studykit.cli import main
from studykit.errors import InputError
from studykit.manifest import DIGEST_NAME, MANIFEST_NAME, load_manifest
from studykit.outdir import StagedOutput
from studykit.pipeline import run
from studykit.verify import stored_output_differences, verify


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture
def old(small_run, tmp_path):
    """A copy of a finished run's results, alone in its parent folder."""
    parent = tmp_path / "parent"
    parent.mkdir()
    out = Path(shutil.copytree(small_run[0].out, parent / "out"))
    return out, _snapshot(out)


def _assert_intact(out: Path, before: dict[str, bytes]) -> None:
    assert _snapshot(out) == before
    leftovers = sorted(p.name for p in out.parent.iterdir() if p.name != "out")
    assert leftovers == [], leftovers


# ------------------------------------------------------------------ interrupts and bugs


#: Where each stage can be interrupted: a library call the stage makes (derive makes none:
#: load_study derives the outcomes; it is interrupted between stages below).
STAGE_CALLS = {
    "protocol": (pipeline, "load_protocol"),
    "validate": (pipeline, "load_study"),
    "fit": (pipeline, "run_analysis"),
    "tables": (pipeline.T, "write_table"),
    "figures": (pipeline.P, "save_figure"),
    "report": (pipeline, "write_report"),
    "manifest": (pipeline, "build_manifest"),
}


@pytest.mark.parametrize("stage", list(STAGE_CALLS))
def test_interrupt_at_every_stage_leaves_old_results_intact(
    stage, old, small_study_template, small_protocol, monkeypatch
):
    out, before = old
    module, name = STAGE_CALLS[stage]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, name, interrupted)
    lines: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run(small_protocol, data=small_study_template, out=out, progress=lines.append)
    assert lines[-1].split()[1] == stage and "FAILED" in lines[-1]
    _assert_intact(out, before)


@pytest.mark.parametrize("stage", ["derive", "manifest"])
def test_interrupt_between_stages_leaves_old_results_intact(
    stage, old, small_study_template, small_protocol
):
    """Ctrl-C right after a stage finished (the progress line is the hook)."""
    out, before = old

    def progress(line: str) -> None:
        if line.startswith("[") and line.split()[1] == stage:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(small_protocol, data=small_study_template, out=out, progress=progress)
    _assert_intact(out, before)


@pytest.mark.parametrize("stage", ["validate", "tables", "manifest"])
def test_a_bug_keeps_its_cause_and_the_old_results(
    stage, old, small_study_template, small_protocol, monkeypatch
):
    out, before = old
    module, name = STAGE_CALLS[stage]

    def bug(*args, **kwargs):
        raise ZeroDivisionError("injected bug")

    monkeypatch.setattr(module, name, bug)
    with pytest.raises(ZeroDivisionError) as exc:  # a bug stays a bug (exit 1), not exit 2
        run(small_protocol, data=small_study_template, out=out, progress=False)
    assert any(f"stage '{stage}'" in note for note in exc.value.__notes__)
    _assert_intact(out, before)


def test_interrupt_while_moving_the_results_into_place(
    old, small_study_template, small_protocol, monkeypatch
):
    out, before = old
    real_rename = studykit.outdir.os.rename
    calls: list[str] = []

    def rename(src, dst):
        # the new results into place (after the old ones moved aside): interrupted once
        if Path(dst) == out and not calls:
            calls.append(str(src))
            raise KeyboardInterrupt
        return real_rename(src, dst)

    monkeypatch.setattr(studykit.outdir.os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        run(small_protocol, data=small_study_template, out=out, progress=False)
    assert calls and ".studykit-tmp-" in calls[0]
    _assert_intact(out, before)


# ------------------------------------------------------------------ disk and permission errors


@pytest.mark.parametrize(
    ("stage", "err", "says"),
    [
        ("figures", errno.ENOSPC, "no space left"),
        ("tables", errno.EACCES, "permission denied"),
        ("report", errno.EROFS, "read-only"),
        ("manifest", errno.EDQUOT, "no space left"),
    ],
)
def test_disk_and_permission_errors_are_user_errors(
    stage, err, says, old, small_study_template, small_protocol, monkeypatch, capsys
):
    out, before = old
    module, name = STAGE_CALLS[stage]

    def fail(*args, **kwargs):
        raise OSError(err, "injected", str(out.parent / ".out.studykit-tmp-x" / "file"))

    monkeypatch.setattr(module, name, fail)
    args = ["run", str(small_protocol), "--data", str(small_study_template), "--out", str(out)]
    assert main([*args, "--quiet"]) == 2
    err_text = capsys.readouterr().err
    assert says in err_text and f"stage '{stage}' failed" in err_text
    assert "internal error" not in err_text and "Traceback" not in err_text
    _assert_intact(out, before)


def test_read_only_output_folder(old, small_study_template, small_protocol, monkeypatch):
    out, before = old

    def mkdtemp(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(out.parent))

    monkeypatch.setattr(studykit.outdir.tempfile, "mkdtemp", mkdtemp)
    with pytest.raises(InputError, match="read-only"):
        run(small_protocol, data=small_study_template, out=out, progress=False)
    _assert_intact(out, before)


def test_not_writable_output_folder_for_real(small_study_template, small_protocol, tmp_path):
    """With real permissions (skipped as root, who may write anywhere)."""
    import os

    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions")
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with pytest.raises(InputError, match="permission denied"):
            run(small_protocol, data=small_study_template, out=parent / "out", progress=False)
    finally:
        parent.chmod(0o755)


# ------------------------------------------------------------------ concurrent runs


def test_a_second_run_into_the_same_folder_is_refused(
    old, small_study_template, small_protocol, capsys
):
    out, before = old
    with StagedOutput(out, owned=["tables"]):  # another run holds the folder
        with pytest.raises(InputError, match="another 'studykit run' is writing"):
            run(small_protocol, data=small_study_template, out=out, progress=False)
        args = ["run", str(small_protocol), "--data", str(small_study_template), "-o", str(out)]
        assert main(args) == 2
        assert "another 'studykit run'" in capsys.readouterr().err
    _assert_intact(out, before)


def test_concurrent_runs_do_not_interleave(old, small_study_template, small_protocol, monkeypatch):
    out, _ = old
    inside = threading.Event()
    release = threading.Event()
    real_fit = pipeline.run_analysis

    def slow_fit(*args, **kwargs):
        inside.set()
        assert release.wait(60)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(pipeline, "run_analysis", slow_fit)
    errors: list[BaseException] = []

    def first() -> None:
        try:
            run(small_protocol, data=small_study_template, out=out, seed=1, progress=False)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=first)
    t.start()
    try:
        assert inside.wait(120)
        with pytest.raises(InputError, match="another 'studykit run' is writing"):
            run(small_protocol, data=small_study_template, out=out, seed=2, progress=False)
    finally:
        release.set()
        t.join(120)
    assert not errors
    m = load_manifest(out)
    assert m["arguments"]["seed"] == 1  # the manifest and the tables are the first run's
    assert stored_output_differences(out, m) == []
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]


# ------------------------------------------------------------------ truncated / flipped inputs


def _flip(path: Path, at: float, bit: int = 0x20) -> None:
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    data[i] ^= bit
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("file", "fault"),
    [
        ("roster.csv", "truncate"),
        ("periods.csv", "truncate"),
        ("nights.csv", "flip"),
        ("roster.csv", "flip"),
        ("diary.csv", "garbage"),
    ],
)
def test_damaged_inputs_are_user_errors_or_valid_runs(
    file, fault, old, small_study, small_protocol, capsys
):
    out, before = old
    p = small_study / file
    if fault == "truncate":
        p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    elif fault == "flip":
        _flip(p, 0.37)
    else:
        p.write_bytes(b"\x00\xff\xfe" * 100)
    args = ["run", str(small_protocol), "--data", str(small_study), "--out", str(out)]
    code = main([*args, "--quiet"])
    err = capsys.readouterr().err
    assert code in (0, 2), err  # never an internal error
    assert "internal error" not in err and "Traceback" not in err
    if code == 2:
        assert "error:" in err
        assert _snapshot(out) == before


def test_verify_names_a_changed_input(small_run, small_study_template, tmp_path):
    """The data a result was computed from changed afterwards (one bit of a hypnogram)."""
    data = Path(shutil.copytree(small_study_template, tmp_path / "study"))
    out = tmp_path / "out"
    run(
        Path(__file__).parent / "data/outputs/small_protocol.yaml",
        data=data,
        out=out,
        progress=False,
    )
    hyp = sorted((data / "hypnograms").iterdir())[0]
    _flip(hyp, 0.5, bit=0x01)
    diffs = verify(out)
    assert any(d.kind == "input" and d.file.endswith(hyp.name) for d in diffs)


# ------------------------------------------------------------------ tampered outputs


def _kinds(out: Path) -> set[tuple[str, str]]:
    return {(d.file, d.kind) for d in stored_output_differences(out, load_manifest(out))}


def test_every_tampered_output_is_named(old):
    out, _ = old
    assert _kinds(out) == set()
    # an edited verdict in the report, numbers in Markdown / LaTeX / HTML tables
    page = (out / "report.html").read_text()
    (out / "report.html").write_text(page.replace("inconclusive", "supported", 1))
    md = out / "tables" / "hypotheses.md"
    md.write_bytes(md.read_bytes()[:-40])  # truncated
    _flip(out / "tables" / "hypotheses.tex", 0.6, bit=0x01)
    html = out / "tables" / "table1_baseline.html"
    html.write_text(html.read_text().replace("<td>", "<td>9", 1))
    png = sorted((out / "figures").glob("forest*.png"))[0]
    _flip(png, 0.5)  # a bit flip in a figure
    png.with_suffix(".svg").unlink()  # a deleted figure
    (out / "tables" / "forged.csv").write_text("x\n1\n")  # a file the run did not write
    assert _kinds(out) == {
        ("report.html", "hash"),
        ("tables/hypotheses.md", "hash"),
        ("tables/hypotheses.tex", "hash"),
        ("tables/table1_baseline.html", "hash"),
        (f"figures/{png.name}", "hash"),
        (f"figures/{png.stem}.svg", "deleted"),
        ("tables/forged.csv", "unlisted"),
    }


def test_a_changed_hash_in_the_manifest_is_found_by_verify(old, capsys):
    out, _ = old
    m = json.loads((out / MANIFEST_NAME).read_text())
    m["outputs"]["report.html"] = "0" * 64
    (out / MANIFEST_NAME).write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
    assert main(["verify", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "DIFFERENCE manifest.json: manifest" in printed
    assert "DIFFERENCE report.html: hash" in printed


@pytest.mark.parametrize(
    "damage",
    ["truncate", "flip", "wrong-type", "digest-gone", "not-a-folder"],
)
def test_a_damaged_manifest_cannot_be_verified_exit_2(damage, old, capsys):
    out, _ = old
    path = out / MANIFEST_NAME
    target = str(out)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "flip":
        _flip(path, 0.0, bit=0x40)  # '{' -> ';': no longer JSON
    elif damage == "wrong-type":
        path.write_text(json.dumps({"arguments": "x", "outputs": 3}))
    elif damage == "digest-gone":
        (out / DIGEST_NAME).unlink()
        path.write_text("[]")
    else:
        target = str(path)
    code = main(["verify", target])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "studykit verify: error:" in err and "internal error" not in err
    if damage in ("truncate", "flip", "wrong-type"):
        assert "changed after the run" in err  # the digest says the manifest was edited


def test_verify_of_a_folder_without_results(tmp_path, capsys):
    assert main(["verify", str(tmp_path)]) == 2
    assert "No manifest.json" in capsys.readouterr().err


def test_a_killed_run_is_cleaned_up_by_the_next(old, small_study_template, small_protocol):
    """A run killed (SIGKILL: no cleanup) after moving the old results aside, with its
    temporary folder left: the next run puts the old results back and deletes the rest."""
    out, before = old
    aside = out.parent / ".out.studykit-old-killed"
    out.rename(aside)
    (out.parent / ".out.studykit-tmp-killed").mkdir()
    (out.parent / ".out.studykit-tmp-killed" / "half.csv").write_text("x\n")
    with StagedOutput(out, owned=["tables"]):
        assert _snapshot(out) == before  # the old results are back before anything else
    _assert_intact(out, before)
