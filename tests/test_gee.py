"""Poisson GEE (sensitivity analysis): checks against quantities computed by hand from the data.

Data: ``tests/data/glmm/trial_sim_awakenings.csv`` (the SIMULATED 40-participant trial; see
``tests/data/glmm/README.md``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from studykit.errors import ModelError
from studykit.models.gee import fit_gee

DATA = Path(__file__).parent / "data" / "glmm"
LEVELS = {"arm": ["placebo", "ketamine"], "night": ["baseline", "post1", "post2"]}
TERMS = ["arm", "night", "arm:night"]


@pytest.fixture(scope="module")
def trial() -> pd.DataFrame:
    return pd.read_csv(DATA / "trial_sim_awakenings.csv")


def test_saturated_model_reproduces_cell_means(trial):
    # balanced data + saturated arm x night mean model: whatever the working correlation, the
    # estimating equations are solved by the observed cell means (hand check with groupby)
    fit = fit_gee(trial, "awakenings", TERMS, group="id", levels=LEVELS)
    assert fit.converged and fit.warnings == []
    assert (fit.nobs, fit.ngroups, fit.family, fit.link) == (120, 40, "poisson", "log")
    assert 0.0 < fit.correlation < 1.0
    means = trial.groupby(["arm", "night"]).awakenings.mean()
    grid = means.index.to_frame(index=False)
    rate = fit.contrast(fit.design.matrix_for(grid), exponentiate=True)
    np.testing.assert_allclose(rate.estimate, means.to_numpy(), rtol=1e-8)
    # DiD log rate ratio = log of the ratio of cell-mean ratios
    m = means.to_dict()
    did = math.log(
        (m["ketamine", "post1"] / m["ketamine", "baseline"])
        / (m["placebo", "post1"] / m["placebo", "baseline"])
    )
    got = fit.coef_table().set_index("term").loc["armketamine:nightpost1"]
    assert got.estimate == pytest.approx(did, abs=1e-8)
    assert got.df == math.inf and got.df_method == "z"
    assert fit.contrast_df([0] * 6) == math.inf


def test_independence_sandwich_matches_hand_computation(trial):
    # independence working correlation = Poisson GLM; robust covariance = bread meat bread with
    # per-participant score sums (Liang & Zeger 1986), computed here with numpy
    fit = fit_gee(trial, "awakenings", TERMS, group="id", levels=LEVELS, cov_struct="independence")
    X = fit.design.X
    y = trial.awakenings.to_numpy(float)
    mu = np.exp(X @ fit.beta)
    np.testing.assert_allclose(X.T @ (y - mu), 0.0, atol=1e-6)  # GLM score equations
    bread = np.linalg.inv(X.T @ (X * mu[:, None]))
    scores = pd.DataFrame(X * (y - mu)[:, None]).groupby(trial.id.to_numpy()).sum().to_numpy()
    sandwich = bread @ (scores.T @ scores) @ bread
    np.testing.assert_allclose(fit.vcov, sandwich, rtol=1e-6)
    assert fit.correlation == 0.0


def test_bias_reduced_is_larger(trial):
    robust = fit_gee(trial, "awakenings", TERMS, group="id", levels=LEVELS)
    br = fit_gee(trial, "awakenings", TERMS, group="id", levels=LEVELS, cov_type="bias_reduced")
    assert np.all(np.diag(br.vcov) > np.diag(robust.vcov))
    np.testing.assert_allclose(br.beta, robust.beta)


def test_gee_input_errors(trial):
    bad = trial.astype({"awakenings": float})
    bad.loc[0, "awakenings"] = -2
    with pytest.raises(ModelError, match="non-negative integers"):
        fit_gee(bad, "awakenings", TERMS, group="id", levels=LEVELS)
    with pytest.raises(ModelError, match="cov_struct"):
        fit_gee(trial, "awakenings", TERMS, group="id", levels=LEVELS, cov_struct="ar1")
    with pytest.raises(ModelError, match="cov_type"):
        fit_gee(trial, "awakenings", TERMS, group="id", levels=LEVELS, cov_type="hc3")
    empty_cell = trial.assign(awakenings=trial.awakenings.where(trial.night != "post2", 0))
    with pytest.raises(ModelError, match="cannot be estimated"):
        fit_gee(empty_cell, "awakenings", TERMS, group="id", levels=LEVELS)
    with pytest.raises(ModelError, match="group column"):
        fit_gee(trial, "awakenings", TERMS, group="subject", levels=LEVELS)
