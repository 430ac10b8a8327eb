"""Console output fits a 100-column terminal: `fit` summary, `validate` issue listing."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from studykit.cli import main
from studykit.cli.fit import WIDTH
from studykit.simulate import simulate_study, write_study

PROTOCOL = "protocols/ketamine_sleep.yaml"


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("study")
    write_study(simulate_study(seed=7, n_participants=16), d)
    return d


@pytest.fixture(scope="module")
def fit_output(study_dir, tmp_path_factory):
    import contextlib
    import io

    csv = tmp_path_factory.mktemp("fit") / "results.csv"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["fit", PROTOCOL, "--data", str(study_dir), "--csv", str(csv)])
    return code, buf.getvalue(), csv


def test_fit_summary_fits_100_columns(fit_output):
    code, out, _ = fit_output
    assert code == 0
    assert WIDTH == 100
    too_wide = [line for line in out.splitlines() if len(line) > WIDTH]
    assert not too_wide, too_wide
    assert "SIMULATED DATA" in out.splitlines()[0]


def test_fit_summary_has_every_row_and_csv_the_full_table(fit_output):
    _, out, csv = fit_output
    full = pd.read_csv(csv)
    # the CSV is the full results table (all contract columns) ...
    assert {"df", "df_method", "estimand", "verdict_rule", "model"} <= set(full.columns)
    # ... and the console shows one line per hypothesis x contrast with its verdict
    rows = [line for line in out.splitlines() if re.match(r"^[HE]\d+\s", line)]
    assert len(rows) == len(full)
    for line, verdict in zip(rows, full["verdict"], strict=True):
        assert line.rstrip().endswith(verdict)


def test_fit_summary_shows_each_alternative_and_claim_verdict(fit_output):
    # the console showed neither `alternative` nor `claim_verdict`, which the tables carry
    _, out, csv = fit_output
    full = pd.read_csv(csv, keep_default_na=False)
    alts, at = [], 0
    for line in out.splitlines():  # each family's table has its own column positions
        if line.startswith("id "):
            at = line.index("alt")
        elif re.match(r"^[HE]\d+\s", line):
            alts.append(line[at:].split("  ")[0])
    sign = {"greater": ">", "less": "<", "two-sided": "!="}
    nulls = ["1" if "ratio" in scale else "0" for scale in full["scale"]]
    want = [f"{sign[a]} {n}" for a, n in zip(full["alternative"], nulls, strict=True)]
    assert alts == want
    text = " ".join(out.split())  # undo the wrapping
    # one line per claim, with the primary analysis' claim verdict
    primary = full[full["analysis"] == "primary"]
    for claim_id, g in primary.groupby("claim_id", sort=False):
        ids = ", ".join(dict.fromkeys(g["hypothesis_id"]))
        verdict = ", ".join(dict.fromkeys(g["claim_verdict"]))
        assert f"claim {claim_id} [{ids}]: {verdict} - " in text


def test_repeated_warning_is_said_once_with_its_hypotheses(fit_output):
    _, out, _ = fit_output
    text = " ".join(out.split())  # undo the wrapping
    # the simulated study records no night 'day7': every night hypothesis warns about it
    said = re.findall(r"warning \[([^\]]+)\]: night level\(s\) \['day7'\]", text)
    assert len(said) == 1, text
    ids = said[0].split(", ")
    assert len(ids) >= 2 and "H1" in ids


def test_validate_wraps_messages_instead_of_cutting_them(tmp_path, capsys):
    roster = pd.DataFrame(
        {
            "participant_id": ["P01", "P02"],
            "sequence": ["KX", "PK"],
            "age": [30, 40],
            "sex": ["F", "M"],
            "bmi": [22.0, 24.0],
            "madrs_baseline": [25, 28],
            "status": ["completed", "completed"],
            "withdrawal_reason": ["", ""],
        }
    )
    path = tmp_path / "roster.csv"
    roster.to_csv(path, index=False)
    report = tmp_path / "issues.csv"
    assert main(["validate", str(path), "--report", str(report)]) == 2
    out = capsys.readouterr().out
    issues = pd.read_csv(report)
    message = issues.loc[issues["column"] == "sequence", "message"].iloc[0]
    assert len(message) > 90  # long enough to have been cut before
    listing = out.split("issue(s):", 1)[1]
    assert message in " ".join(listing.split())  # whole, once the wrapping is undone
    assert max(len(line) for line in listing.splitlines()) <= 100
