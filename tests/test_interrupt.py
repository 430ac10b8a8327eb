"""Ctrl-C: exit 130, one line saying what is left, no traceback, no partial output.

Each command runs in a subprocess (``python -m studykit``, cwd = repository root) and gets a
real SIGINT, as a terminal sends it on Ctrl-C. To interrupt at a known point (not a race
with the machine's load), ``_interrupt_after`` runs the command in a child Python that
wraps one library function so the process sends itself SIGINT right after that function
returns: the rest is the real signal path (Python's handler raises KeyboardInterrupt at the
next bytecode, the command line catches it).
"""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd

from studykit.outdir import OutputGuard

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "protocols" / "ketamine_sleep.yaml"


def _interrupt_after(target: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``studykit ARGV``; SIGINT the process once ``target`` (module:function) returns."""
    module, name = target.split(":")
    code = textwrap.dedent(
        f"""
        import importlib, os, signal, sys
        mod = importlib.import_module({module!r})
        original = getattr(mod, {name!r})
        def wrapped(*args, **kwargs):
            result = original(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, once this call has written
            return result
        setattr(mod, {name!r}, wrapped)
        from studykit.cli import main
        raise SystemExit(main({argv!r}))
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _said(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ": interrupted" in ln]
    assert len(lines) == 1, proc.stderr  # one line
    return lines[0]


def test_run_sent_sigint_exits_130_and_leaves_no_folder(tmp_path):
    # a real `python -m studykit run`, SIGINT once its first stage has printed
    out = tmp_path / "results"
    proc = subprocess.Popen(
        [sys.executable, "-m", "studykit", "run", str(PROTOCOL), "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # "[1/9] simulate ..." (printed and flushed per stage)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert "[1/9]" in first, first + stdout + stderr
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert proc.returncode == 130, stderr
    assert _said(done) == "studykit run: interrupted; no results were written"
    # no results folder, no staging folder, no lock file: nothing beside --out either
    assert sorted(os.listdir(tmp_path)) == []


def test_simulate_interrupted_while_writing_removes_its_folder(tmp_path):
    out = tmp_path / "new" / "demo"  # neither folder exists: both are the command's
    proc = _interrupt_after(
        "studykit.simulate._write:_write_csv",  # after roster.csv, before the other tables
        ["simulate", "--out", str(out)],
    )
    assert proc.returncode == 130, proc.stderr
    assert _said(proc) == "studykit simulate: interrupted; partial output removed"
    assert sorted(os.listdir(tmp_path)) == []


def test_derive_interrupted_after_the_problems_file_removes_it(tmp_path):
    hyp = tmp_path / "hyp"
    hyp.mkdir()
    (hyp / "P01_p1_baseline.csv").write_text("stage\nW\nN1\nN2\nN2\n")  # no lights: a warning
    keep = tmp_path / "keep.csv"
    keep.write_text("a file of the user's, beside the output\n")
    proc = _interrupt_after(
        "studykit.cli.derive:_summarize",  # nights_problems.csv written, nights.csv not yet
        ["derive", str(hyp), "-o", str(tmp_path / "nights.csv")],
    )
    assert proc.returncode == 130, proc.stderr
    assert _said(proc) == "studykit derive: interrupted; partial output removed"
    assert sorted(os.listdir(tmp_path)) == ["hyp", "keep.csv"]


def test_validate_report_interrupted_before_writing_says_nothing_was_written(tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    for name in ("roster", "periods", "nights"):
        src = ROOT / "tests" / "data" / "foundation" / "study" / f"{name}.csv"
        (study / f"{name}.csv").write_text(src.read_text())
    report = tmp_path / "issues.csv"
    proc = _interrupt_after(
        "studykit.cli.validate:load_study",  # interrupted before the report is written
        ["validate", str(study), "--no-diary", "--report", str(report)],
    )
    assert proc.returncode == 130, proc.stderr
    assert _said(proc) == "studykit validate: interrupted; no results were written"
    assert not report.exists()


def test_output_guard_undo(tmp_path):
    # an existing folder: new entries go, old ones stay; a changed file is said, not restored
    folder = tmp_path / "power"
    folder.mkdir()
    (folder / "old.csv").write_text("1\n")
    (folder / "same.csv").write_text("2\n")
    existing = tmp_path / "issues.csv"
    existing.write_text("x\n")
    guard = OutputGuard([folder, existing, tmp_path / "a" / "b" / "out.csv"])
    (folder / "new.csv").write_text("3\n")
    (folder / "old.csv").write_text("1 and more\n")
    existing.write_text("x, half rewritten")
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "out.csv").write_text("partial")
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "issues_problems.csv")
    removed, changed = guard.undo()
    assert sorted(p.relative_to(tmp_path).as_posix() for p in removed) == [
        "a",  # the folders made for out.csv (mkdir -p) go with it
        "issues_problems.csv",  # a companion <stem>_*.csv of an output file
        "power/new.csv",
    ]
    assert [p.relative_to(tmp_path).as_posix() for p in changed] == ["power/old.csv", "issues.csv"]
    assert sorted(os.listdir(tmp_path)) == ["issues.csv", "power"]
    assert sorted(os.listdir(folder)) == ["old.csv", "same.csv"]
