"""The notebooks under notebooks/: stored clean, executable, and equal to `studykit run`.

Every notebook is executed with nbclient in a python3 kernel (the current environment's
ipykernel) after a papermill-style parameter injection: the cell tagged ``parameters`` is
followed by a cell that overrides its values (small studies, so the whole module runs in
about a minute on two cores). The analysis notebook (03) writes its hypothesis table to
``hypotheses.csv`` in the output directory it is given; the test compares it with the table
``studykit run`` writes for the same data (``tables/hypotheses.csv``): numbers to 1e-9
relative (the pipeline's CSV keeps 10 significant digits), text exactly.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from studykit.tables.write import SIMULATED_LABEL

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
PROTOCOL = ROOT / "protocols" / "ketamine_sleep.yaml"
#: The demo seed (studykit.simulate.simulate_study's default and `studykit run`'s).
DEMO_SEED = 20261125
EXPECTED = {
    "01_dictionary_and_validation.ipynb",
    "02_hypnograms_to_outcomes.ipynb",
    "03_testing_the_claims.ipynb",
    "04_power_and_design.ipynb",
}


def _names() -> list[str]:
    return [p.name for p in NOTEBOOKS]


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK_DIR / name, as_version=4)


def inject_parameters(nb: nbformat.NotebookNode, parameters: dict) -> nbformat.NotebookNode:
    """Return a copy of ``nb`` with a cell assigning ``parameters`` after the "parameters" cell.

    The same convention as papermill: the injected cell is tagged ``injected-parameters`` and
    its assignments override the defaults of the tagged cell.
    """
    nb = nbformat.from_dict(nb)  # deep copy
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    if len(tagged) != 1:
        raise AssertionError(f"expected exactly one cell tagged 'parameters', found {len(tagged)}")
    source = "# Injected parameters\n" + "".join(
        f"{key} = {value!r}\n" for key, value in parameters.items()
    )
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(tagged[0] + 1, cell)
    return nb


def execute(name: str, parameters: dict, monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    """Execute a notebook (working directory: notebooks/) and return it with its outputs."""
    from nbclient import NotebookClient

    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH")] if p)
    )
    nb = inject_parameters(_read(name), parameters)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=600,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    return nb


def _stdout(nb: nbformat.NotebookNode) -> str:
    return "".join(
        o.get("text", "")
        for c in nb.cells
        for o in c.get("outputs", [])
        if o.output_type == "stream" and o.get("name") == "stdout"
    )


# ------------------------------------------------------------------ stored form
def test_every_notebook_of_the_issue_is_present():
    assert EXPECTED <= set(_names())


@pytest.mark.parametrize("name", _names())
def test_stored_without_outputs(name):
    nb = _read(name)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name}: a code cell has stored outputs"
            assert cell.execution_count is None, f"{name}: a code cell has an execution count"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("name", _names())
def test_structure_parameters_and_public_api_only(name):
    nb = _read(name)
    assert nb.cells[0].cell_type == "markdown", "the first cell says what the notebook does"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    params = ast.parse(tagged[0].source)
    assigned = {t.id for node in params.body if isinstance(node, ast.Assign) for t in node.targets}
    assert {"data_dir", "seed"} <= assigned, f"{name}: parameters must name data_dir and seed"
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        for node in ast.walk(tree):
            # nothing reusable is defined in a notebook: it belongs in the package
            assert not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef), (
                f"{name}: defines {node.name}"
            )
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("studykit"):
                module = importlib.import_module(node.module)
                public = set(getattr(module, "__all__", ()))
                for alias in node.names:
                    assert alias.name in public, (
                        f"{name}: {node.module}.{alias.name} is not in that module's __all__"
                    )
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not any(part.startswith("_") for part in alias.name.split(".")), (
                        f"{name}: imports private module {alias.name}"
                    )


def test_injector_follows_the_parameters_cell():
    nb = inject_parameters(_read(NOTEBOOKS[0].name), {"seed": 7, "data_dir": None})
    i = next(k for k, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    injected = nb.cells[i + 1]
    assert injected.metadata["tags"] == ["injected-parameters"]
    assert "seed = 7\n" in injected.source and "data_dir = None\n" in injected.source
    assert len(nb.cells) == len(_read(NOTEBOOKS[0].name).cells) + 1


# ------------------------------------------------------------------ execution
def test_dictionary_and_validation_notebook_runs(monkeypatch):
    nb = execute(
        "01_dictionary_and_validation.ipynb",
        {"seed": 3, "n_participants": 8},
        monkeypatch,
    )
    out = _stdout(nb)
    assert "SIMULATED demo study (seed 3, 8 participants)" in out
    # the broken copy is fixed completely, leaving the original study's warnings
    assert "errors left: 0" in out
    assert "same warnings as the original study: True" in out


def test_hypnograms_notebook_runs(monkeypatch):
    nb = execute("02_hypnograms_to_outcomes.ipynb", {"seed": 5, "n_participants": 8}, monkeypatch)
    out = _stdout(nb)
    # one night in each format was read (the demo writes CSV, EDF+ and NSRR XML)
    for fmt in ("format text", "format edf", "format nsrr"):
        assert fmt in out
    if importlib.util.find_spec("yasa") is not None:
        assert "AASM REM latency (from sleep onset)" in out
    # the shared x axis spans the longest night (it used to clip to the last night drawn)
    m = re.search(r"x axis 0 to ([0-9.]+) h; night lengths \(h\): ([0-9., ]+)", out)
    assert m, out[-2000:]
    lengths = [float(v) for v in m.group(2).split(",")]
    assert len(lengths) >= 2 and float(m.group(1)) == max(lengths)


def test_power_notebook_runs(monkeypatch):
    nb = execute(
        "04_power_and_design.ipynb",
        {"seed": 11, "reps": 20, "sample_sizes": [24, 48], "n_participants": 8},
        monkeypatch,
    )
    out = _stdout(nb)
    assert "closed form: power 0.452" in out  # did_power_balanced(40, effect=10, sd_residual=12)
    assert "20 replicates per n" in out and "simulated: True" in out


# ------------------------------------------------------------------ notebook 03 == studykit run
def test_analysis_notebook_equals_studykit_run(tmp_path, monkeypatch):
    from studykit.simulate import simulate_study, write_study

    # a small SIMULATED demo study (its README says so: both sides label the results simulated)
    data_dir = tmp_path / "data"
    write_study(simulate_study(seed=DEMO_SEED, n_participants=12), data_dir)
    run_out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    cmd = [sys.executable, "-m", "studykit", "run", str(PROTOCOL), "--data", str(data_dir)]
    cmd += ["--out", str(run_out), "--quiet"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr

    nb_out = tmp_path / "notebook"
    execute(
        "03_testing_the_claims.ipynb",
        {"data_dir": str(data_dir), "out_dir": str(nb_out)},
        monkeypatch,
    )
    for name in ("hypotheses.csv", "emmeans.csv"):  # tables of simulated data say so, line 1
        first = (nb_out / name).read_text(encoding="utf-8").splitlines()[0]
        assert first == f"# {SIMULATED_LABEL}", (name, first)
    ours = pd.read_csv(nb_out / "hypotheses.csv", keep_default_na=False, na_values=[""], skiprows=1)
    theirs = pd.read_csv(  # line 1 of a table of simulated data: the SIMULATED label
        run_out / "tables" / "hypotheses.csv", keep_default_na=False, na_values=[""], skiprows=1
    )
    assert list(ours.columns) == list(theirs.columns)
    assert len(ours) == len(theirs) > 0
    assert ours[["hypothesis_id", "contrast"]].equals(theirs[["hypothesis_id", "contrast"]])
    assert ours["simulated"].astype(str).eq("True").all()  # the demo data are labelled simulated
    numeric = [
        c
        for c in ours.columns
        if pd.api.types.is_numeric_dtype(theirs[c].dtype)
        and not pd.api.types.is_bool_dtype(theirs[c].dtype)
    ]
    assert {"estimate", "std_error", "df", "p_value", "p_adjusted", "conf_low"} <= set(numeric)
    for column in ours.columns:
        if column in numeric:
            np.testing.assert_allclose(
                ours[column].to_numpy(dtype=float),
                theirs[column].to_numpy(dtype=float),
                rtol=1e-9,
                atol=0,
                equal_nan=True,
                err_msg=f"column {column}",
            )
        else:
            a = ours[column].fillna("").astype(str).tolist()
            b = theirs[column].fillna("").astype(str).tolist()
            assert a == b, f"column {column} differs"
    figures = ["emmeans"] + [f"forest_{f}" for f in dict.fromkeys(theirs["multiplicity_family"])]
    for name in figures:  # one forest plot per multiplicity family, as `studykit run` draws
        for suffix in (".png", ".svg"):
            assert (nb_out / (name + suffix)).stat().st_size > 0
            assert (run_out / "figures" / (name + suffix)).is_file()
