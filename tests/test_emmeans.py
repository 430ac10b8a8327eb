"""Marginal means and contrasts against R's emmeans on the simulated trial.

Expected numbers: tests/data/lme4/trial_emmeans.csv, trial_contrasts.csv and
trial_hypotheses.csv (R: emmeans 1.8.4 on lmerTest::lmer(y ~ arm*night + (1|id)) fits with
lmer.df = "satterthwaite"; see tests/data/lme4/PROVENANCE.md).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from studykit.errors import ModelError
from studykit.models.emmeans import (
    did_contrast,
    emm_contrast,
    emmeans,
    emmeans_matrix,
    reference_grid,
)
from studykit.models.lmm import fit_lmm

DATA = Path(__file__).parent / "data" / "lme4"
LEVELS = {"arm": ["placebo", "ketamine"], "night": ["baseline", "post1", "post2"]}
OUTCOME = {"sws_lmer_reml": "sws_min", "rem_lmer_reml": "rem_min"}


@pytest.fixture(scope="module")
def fits():
    trial = pd.read_csv(DATA / "trial_sim.csv")
    return {
        m: fit_lmm(trial, y, ["arm", "night", "arm:night"], random="id", levels=LEVELS)
        for m, y in OUTCOME.items()
    }


@pytest.mark.parametrize("model", list(OUTCOME))
def test_emmeans_cells_match_r(fits, model):
    # R: summary(emmeans(fit, ~ arm * night, lmer.df = "satterthwaite"))
    ref = pd.read_csv(DATA / "trial_emmeans.csv").query(
        "model == @model and df_method == 'satterthwaite'"
    )
    tab = emmeans(fits[model], ["arm", "night"])
    assert tab[["arm", "night"]].values.tolist() == ref[["arm", "night"]].values.tolist()
    np.testing.assert_allclose(tab["estimate"], ref["estimate"], rtol=1e-6)
    np.testing.assert_allclose(tab["std_error"], ref["se"], rtol=1e-3)
    np.testing.assert_allclose(tab["df"], ref["df"], rtol=1e-4)
    np.testing.assert_allclose(tab["conf_low"], ref["ci_low"], rtol=1e-4)
    np.testing.assert_allclose(tab["conf_high"], ref["ci_high"], rtol=1e-4)
    assert (tab["df_method"] == "satterthwaite").all()


@pytest.mark.parametrize("model", list(OUTCOME))
def test_emmeans_kenward_roger_match_r(fits, model):
    # R: emmeans(fit, ~ arm * night, lmer.df = "kenward-roger")
    ref = pd.read_csv(DATA / "trial_emmeans.csv").query(
        "model == @model and df_method == 'kenward-roger'"
    )
    tab = emmeans(fits[model], ["arm", "night"], df_method="kenward-roger")
    np.testing.assert_allclose(tab["std_error"], ref["se"], rtol=1e-3)
    np.testing.assert_allclose(tab["df"], ref["df"], rtol=1e-4)
    np.testing.assert_allclose(tab["conf_low"], ref["ci_low"], rtol=1e-4)
    kr = pd.read_csv(DATA / "trial_contrasts.csv").query(
        "model == @model and df_method == 'kenward-roger'"
    )
    did = did_contrast(fits[model], treatment="arm", time="night", df_method="kenward-roger")
    ref_did = kr[kr["contrast"].str.contains("change from baseline")]
    np.testing.assert_allclose(did["df"], ref_did["df"], rtol=1e-4)
    np.testing.assert_allclose(did["p_value"], ref_did["p_two_sided"], rtol=1e-3)


@pytest.mark.parametrize("model", list(OUTCOME))
def test_contrasts_match_r(fits, model):
    # R: contrast(emm, interaction = c("trt.vs.ctrl", "trt.vs.ctrl")) (DiD);
    #    contrast(emm, "trt.vs.ctrl", by = "arm") and by = "night"; all unadjusted
    ref = pd.read_csv(DATA / "trial_contrasts.csv").query(
        "model == @model and df_method == 'satterthwaite'"
    )
    fit = fits[model]
    ours = pd.concat(
        [
            did_contrast(fit, treatment="arm", time="night"),
            emm_contrast(fit, "night", by="arm"),
            emm_contrast(fit, "arm", by="night"),
        ],
        ignore_index=True,
    ).set_index("term")
    for _, row in ref.iterrows():
        label = row["contrast"]
        if " | " in label and label.split(" | ")[1].count(" - "):
            continue  # interaction-contrast form of the same DiD, checked below
        got = ours.loc[label]
        assert got["estimate"] == pytest.approx(row["estimate"], rel=1e-6)
        assert got["std_error"] == pytest.approx(row["se"], rel=1e-3)
        assert got["df"] == pytest.approx(row["df"], rel=1e-4)
        assert got["statistic"] == pytest.approx(row["stat"], rel=1e-3)
        assert got["p_value"] == pytest.approx(row["p_two_sided"], rel=1e-3)
        assert got["conf_low"] == pytest.approx(row["ci_low"], rel=1e-4, abs=1e-6)
        assert got["conf_high"] == pytest.approx(row["ci_high"], rel=1e-4, abs=1e-6)
    # "ketamine - placebo | post1 - baseline" is the same DiD as emmeans' interaction contrast
    same = ref.set_index("contrast")
    for t in ("post1", "post2"):
        a = same.loc[f"ketamine - placebo | {t} - baseline"]
        assert ours.loc[f"ketamine-placebo change from baseline at {t}", "estimate"] == (
            pytest.approx(a["estimate"], rel=1e-6)
        )


def test_hypotheses_h1_h3(fits):
    # R reference: trial_hypotheses.csv (H1 one-sided greater t test, H3 two-sided)
    ref = pd.read_csv(DATA / "trial_hypotheses.csv")
    h1 = did_contrast(fits["sws_lmer_reml"], treatment="arm", time="night", alternative="greater")
    r1 = ref[ref["hypothesis"].str.startswith("H1")]
    np.testing.assert_allclose(h1["estimate"], r1["estimate"], rtol=1e-6)
    np.testing.assert_allclose(h1["std_error"], r1["se"], rtol=1e-3)
    np.testing.assert_allclose(h1["df"], r1["df"], rtol=1e-4)
    np.testing.assert_allclose(h1["p_value"], r1["p_one_sided"], rtol=1e-3)
    assert np.isinf(h1["conf_high"]).all() and (h1["alternative"] == "greater").all()
    h3 = did_contrast(fits["rem_lmer_reml"], treatment="arm", time="night")
    r3 = ref[ref["hypothesis"].str.startswith("H3")]
    np.testing.assert_allclose(h3["estimate"], r3["estimate"], rtol=1e-6)
    np.testing.assert_allclose(h3["df"], r3["df"], rtol=1e-4)
    np.testing.assert_allclose(h3["statistic"], r3["stat"], rtol=1e-3)
    np.testing.assert_allclose(h3["p_value"], r3["p_two_sided"], rtol=1e-3)
    # one-sided "less" is the complement of "greater" for the same contrast
    less = did_contrast(fits["sws_lmer_reml"], treatment="arm", time="night", alternative="less")
    np.testing.assert_allclose(less["p_value"] + h1["p_value"], 1.0)


def test_marginal_means_average_over_other_factor(fits):
    fit = fits["sws_lmer_reml"]
    cells = emmeans(fit, ["arm", "night"])
    arm = emmeans(fit, "arm")
    for lv in LEVELS["arm"]:
        expect = cells.loc[cells["arm"] == lv, "estimate"].mean()  # equal weights over nights
        assert arm.loc[arm["arm"] == lv, "estimate"].item() == pytest.approx(expect)


def test_reference_grid_numeric_covariate_at_mean():
    rng = np.random.default_rng(5)
    n = 30
    df = pd.DataFrame(
        {
            "id": np.repeat(np.arange(n), 3),
            "arm": np.repeat(rng.permutation(["placebo", "ketamine"] * (n // 2)), 3),
            "age": np.repeat(rng.uniform(20, 60, n), 3),
        }
    )
    df["y"] = 0.1 * df["age"] + rng.normal(size=n)[df["id"]] + rng.normal(size=3 * n)
    fit = fit_lmm(df, "y", ["arm", "age"], random="id", levels={"arm": ["placebo", "ketamine"]})
    grid = reference_grid(fit)
    assert grid["age"].unique().tolist() == [pytest.approx(df["age"].mean())]
    cells, L = emmeans_matrix(fit, "arm", at={"age": 40.0})
    np.testing.assert_allclose(L, [[1, 0, 40.0], [1, 1, 40.0]])


def test_log_link_response_scale_is_exp():
    # a stand-in GLMM-like result: only the interface emmeans needs (design, beta, vcov,
    # contrast_df, link); z tests because contrast_df is infinite
    from studykit.models.design import build_design

    df = pd.DataFrame({"arm": ["placebo", "ketamine"]})
    d = build_design(df, ["arm"], levels={"arm": ["placebo", "ketamine"]})
    res = SimpleNamespace(
        design=d,
        columns=d.columns,
        beta=np.array([np.log(10.0), np.log(0.5)]),
        vcov=np.diag([0.01, 0.02]),
        contrast_df=lambda L: np.inf,
        link="log",
        covariate_means={},
    )
    link = emmeans(res, "arm", df_method="z")
    resp = emmeans(res, "arm", df_method="z", type="response")
    np.testing.assert_allclose(resp["estimate"], [10.0, 5.0])
    np.testing.assert_allclose(resp["conf_low"], np.exp(link["conf_low"]))
    ratio = emm_contrast(res, "arm", df_method="z", type="response")
    assert ratio["term"].tolist() == ["ketamine / placebo"]
    assert ratio["estimate"].item() == pytest.approx(0.5)


def test_bad_specs_are_clear_errors(fits):
    fit = fits["sws_lmer_reml"]
    with pytest.raises(ModelError, match="not factors of the model"):
        emmeans(fit, "dose")
    with pytest.raises(ModelError, match="not a level"):
        did_contrast(fit, treatment="arm", time="night", treated="ketamin")
    with pytest.raises(ModelError, match="Invalid 'alternative'"):
        did_contrast(fit, treatment="arm", time="night", alternative="bigger")
    with pytest.raises(ModelError, match="Invalid contrast method"):
        emm_contrast(fit, "arm", method="helmert")


def test_emmeans_on_glmm_result_rate_scale():
    # emmeans works on the GLMM engine's result through the shared interface; R reference:
    # emmeans(glmer(awakenings ~ arm*night + (1|id), poisson), ~ arm*night, type = "response")
    from studykit.models.glmm import fit_glmm

    trial = pd.read_csv(DATA / "trial_sim.csv")
    g = fit_glmm(
        trial, "awakenings", ["arm", "night", "arm:night"], group="id", family="poisson",
        levels=LEVELS,
    )  # fmt: skip
    ref = pd.read_csv(DATA / "trial_emmeans.csv").query(
        "model == 'awakenings_glmer_poisson_laplace' and scale == 'response(rate)'"
    )
    tab = emmeans(g, ["arm", "night"], df_method="z", type="response")
    assert tab[["arm", "night"]].values.tolist() == ref[["arm", "night"]].values.tolist()
    np.testing.assert_allclose(tab["estimate"], ref["estimate"], rtol=1e-4)
    np.testing.assert_allclose(tab["std_error"], ref["se"], rtol=5e-3)
    np.testing.assert_allclose(tab["conf_low"], ref["ci_low"], rtol=5e-3)
    assert np.isinf(tab["df"]).all()
