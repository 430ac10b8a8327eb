"""studykit's LMM engine against lme4 / lmerTest reference numbers.

Every expected number is read from tests/data/lme4/ (copied from the R reference runs; see
tests/data/lme4/PROVENANCE.md for the R calls). Tolerances are those of the reference README:
fixed effects rtol 1e-6, SEs and variance components rtol 1e-3, logLik atol 1e-4,
Satterthwaite df rtol 1e-4, p-values rtol 1e-3.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from studykit.models.lmm import fit_lmm

DATA = Path(__file__).parent / "data" / "lme4"
TRIAL_LEVELS = {"arm": ["placebo", "ketamine"], "night": ["baseline", "post1", "post2"]}

SLEEP_MODELS = {
    # model name in the reference files -> (random terms, REML)
    "slopes_reml": (["1", "Days"], True),
    "intercept_reml": (["1"], True),
    "slopes_ml": (["1", "Days"], False),
    "intercept_ml": (["1"], False),
}


@pytest.fixture(scope="module")
def sleepstudy() -> pd.DataFrame:
    return pd.read_csv(DATA / "sleepstudy.csv", dtype={"Subject": str})


@pytest.fixture(scope="module")
def trial() -> pd.DataFrame:
    return pd.read_csv(DATA / "trial_sim.csv")


def _sleep_fit(sleepstudy: pd.DataFrame, model: str):
    terms, reml = SLEEP_MODELS[model]
    return fit_lmm(sleepstudy, "Reaction", ["Days"], random=[("Subject", terms)], reml=reml)


@pytest.mark.parametrize("model", list(SLEEP_MODELS))
def test_sleepstudy_fixef_and_satterthwaite(sleepstudy, model):
    # R: summary(lmerTest::lmer(Reaction ~ Days + (Days | Subject), sleepstudy, REML = ...))
    ref = pd.read_csv(DATA / "sleepstudy_fixef.csv").query("model == @model")
    fit = _sleep_fit(sleepstudy, model)
    tab = fit.coef_table()
    assert tab["term"].tolist() == ref["term"].tolist()
    np.testing.assert_allclose(tab["estimate"], ref["estimate"], rtol=1e-6)
    np.testing.assert_allclose(tab["std_error"], ref["se"], rtol=1e-3)
    np.testing.assert_allclose(tab["statistic"], ref["t"], rtol=1e-3)
    np.testing.assert_allclose(tab["df"], ref["df_satterthwaite"], rtol=1e-4)
    np.testing.assert_allclose(np.log(tab["p_value"]), np.log(ref["p_satterthwaite"]), rtol=1e-3)
    np.testing.assert_allclose(tab["conf_low"], ref["ci_low_satterthwaite"], rtol=1e-4)
    np.testing.assert_allclose(tab["conf_high"], ref["ci_high_satterthwaite"], rtol=1e-4)
    z = fit.coef_table(df_method="z")
    assert np.isinf(z["df"]).all()
    np.testing.assert_allclose(z["conf_low"], ref["ci_low_wald_z"], rtol=1e-4)
    ok = (ref["p_wald_z"] > 1e-300).to_numpy()  # R underflows to 0 for |z| > 38
    np.testing.assert_allclose(np.log(z["p_value"][ok]), np.log(ref["p_wald_z"][ok]), rtol=1e-3)
    assert (z["p_value"][~ok] < 1e-300).all()


@pytest.mark.parametrize("model", list(SLEEP_MODELS))
def test_sleepstudy_fit_stats_varcorr_vcov(sleepstudy, model):
    # R: logLik(), AIC(), BIC(), sigma(), getME(, "theta"), isSingular(), VarCorr(), vcov()
    stats = pd.read_csv(DATA / "sleepstudy_fit_stats.csv").set_index("model").loc[model]
    fit = _sleep_fit(sleepstudy, model)
    assert fit.loglik == pytest.approx(stats["logLik"], abs=1e-4)
    assert fit.aic == pytest.approx(stats["AIC"], abs=2e-4)
    assert fit.bic == pytest.approx(stats["BIC"], abs=2e-4)
    assert fit.sigma == pytest.approx(stats["sigma"], rel=1e-3)
    theta = [float(x) for x in stats["theta"].split(";")]
    np.testing.assert_allclose(fit.theta, theta, rtol=1e-3, atol=1e-4)
    assert fit.singular == bool(stats["singular"])
    assert fit.nobs == stats["nobs"] and fit.ngroups == {"Subject": stats["ngroups"]}
    assert fit.converged and fit.reml == bool(stats["REML"])
    vc = pd.read_csv(DATA / "sleepstudy_ranef_varcorr.csv").query("model == @model")
    ours = fit.varcorr()
    np.testing.assert_allclose(ours["vcov"], vc["variance_or_cov"], rtol=1e-3)
    np.testing.assert_allclose(ours["sdcor"], vc["sd_or_cor"], rtol=1e-3, atol=1e-4)
    assert ours["group"].tolist() == vc["group"].tolist()
    vb = json.loads((DATA / "sleepstudy_vcov_beta.json").read_text())[model]
    np.testing.assert_allclose(fit.vcov, vb, rtol=1e-3)


TRIAL_MODELS = {
    "sws_lmer_reml": ("sws_min", True),
    "sws_lmer_ml": ("sws_min", False),
    "rem_lmer_reml": ("rem_min", True),
}


def _trial_fit(trial, model):
    y, reml = TRIAL_MODELS[model]
    return fit_lmm(
        trial, y, ["arm", "night", "arm:night"], random="id", levels=TRIAL_LEVELS, reml=reml
    )


@pytest.mark.parametrize("model", list(TRIAL_MODELS))
def test_trial_fixef(trial, model):
    # R: summary(lmerTest::lmer(y ~ arm * night + (1 | id), trial_sim, REML = ...))
    ref = pd.read_csv(DATA / "trial_fixef.csv").query("model == @model")
    tab = _trial_fit(trial, model).coef_table()
    assert tab["term"].tolist() == ref["term"].tolist()
    np.testing.assert_allclose(tab["estimate"], ref["estimate"], rtol=1e-6)
    np.testing.assert_allclose(tab["std_error"], ref["se"], rtol=1e-3)
    np.testing.assert_allclose(tab["df"], ref["df_satterthwaite"], rtol=1e-4)
    np.testing.assert_allclose(tab["p_value"], ref["p_satterthwaite"], rtol=1e-3)
    np.testing.assert_allclose(tab["conf_low"], ref["ci_low_satterthwaite"], rtol=1e-4)
    np.testing.assert_allclose(tab["conf_high"], ref["ci_high_satterthwaite"], rtol=1e-4)


@pytest.mark.parametrize("model", list(TRIAL_MODELS))
def test_trial_fit_stats_and_varcorr(trial, model):
    # R: logLik, AIC, BIC, sigma, isSingular; as.data.frame(VarCorr(fit))
    stats = pd.read_csv(DATA / "trial_fit_stats.csv").set_index("model").loc[model]
    fit = _trial_fit(trial, model)
    assert fit.loglik == pytest.approx(stats["logLik"], abs=1e-4)
    assert fit.aic == pytest.approx(stats["AIC"], abs=2e-4)
    assert fit.bic == pytest.approx(stats["BIC"], abs=2e-4)
    assert fit.sigma == pytest.approx(stats["sigma"], rel=1e-3)
    assert fit.nobs == stats["nobs"] and fit.singular == bool(stats["singular"])
    vc = pd.read_csv(DATA / "trial_varcorr.csv").query("model == @model")
    np.testing.assert_allclose(fit.varcorr()["vcov"], vc["variance"], rtol=1e-3)
    np.testing.assert_allclose(fit.varcorr()["sdcor"], vc["sd"], rtol=1e-3)


@pytest.mark.parametrize("model", ["sws_lmer_reml", "rem_lmer_reml"])
def test_trial_anova_type3_satterthwaite(trial, model):
    # R: anova(fit, type = 3, ddf = "Satterthwaite")  (lmerTest)
    ref = pd.read_csv(DATA / "trial_anova_type3.csv").query(
        "model == @model and ddf_method == 'Satterthwaite'"
    )
    tab = _trial_fit(trial, model).anova()
    assert tab["term"].tolist() == ref["term"].tolist()
    np.testing.assert_allclose(tab["statistic"], ref["F"], rtol=1e-5)
    np.testing.assert_allclose(tab["num_df"], ref["NumDF"])
    np.testing.assert_allclose(tab["den_df"], ref["DenDF"], rtol=1e-4)
    np.testing.assert_allclose(tab["p_value"], ref["p"], rtol=1e-3)
    np.testing.assert_allclose(tab["sum_sq"], ref["SumSq"], rtol=1e-3)
    np.testing.assert_allclose(tab["mean_sq"], ref["MeanSq"], rtol=1e-3)


def _large(name):
    return pd.read_csv(DATA / "large" / f"{name}.csv")


@pytest.mark.parametrize(
    ("name", "fixed", "random"),
    [
        ("large_ri", ["arm", "night", "arm:night"], [("id", ["1"])]),
        ("large_rs", ["arm", "night_index", "arm:night_index"], [("id", ["1", "night_index"])]),
    ],
)
def test_large_cohort(name, fixed, random):
    # R: lme4::lmer(y ~ arm*night + (1|id)) / lmer(y ~ arm*night_index + (night_index|id)), REML
    fit = fit_lmm(_large(name), "y", fixed, random=random, levels=TRIAL_LEVELS)
    fx = pd.read_csv(DATA / "large" / "r_large_fixef.csv").query("data == @name")
    assert fit.columns == fx["term"].tolist()
    np.testing.assert_allclose(fit.beta, fx["estimate"], rtol=1e-6)
    np.testing.assert_allclose(np.sqrt(np.diag(fit.vcov)), fx["se"], rtol=1e-3)
    vc = pd.read_csv(DATA / "large" / "r_large_varcorr.csv").query("data == @name")
    np.testing.assert_allclose(fit.varcorr()["vcov"], vc["vcov"], rtol=1e-3)
    np.testing.assert_allclose(fit.varcorr()["sdcor"], vc["sdcor"], rtol=1e-3)
    st = pd.read_csv(DATA / "large" / "r_large_fit_stats.csv").set_index("data").loc[name]
    assert fit.loglik == pytest.approx(st["REML_logLik"], abs=1e-4)
    assert fit.singular == bool(st["singular"]) and fit.converged
    # Satterthwaite df exist and are finite for every coefficient
    assert np.isfinite(fit.coef_table()["df"]).all()


@pytest.mark.parametrize("model", ["slopes_reml", "intercept_reml"])
def test_sleepstudy_kenward_roger(sleepstudy, model):
    # R: pbkrtest 0.5.2 via lmerTest summary(fit, ddf = "Kenward-Roger")
    ref = pd.read_csv(DATA / "sleepstudy_fixef.csv").query("model == @model")
    tab = _sleep_fit(sleepstudy, model).coef_table(df_method="kenward-roger")
    np.testing.assert_allclose(tab["std_error"], ref["se_kr"], rtol=1e-3)
    np.testing.assert_allclose(tab["df"], ref["df_kr"], rtol=1e-4)
    np.testing.assert_allclose(np.log(tab["p_value"]), np.log(ref["p_kr"]), rtol=1e-3)
    assert (tab["df_method"] == "kenward-roger").all()


@pytest.mark.parametrize("model", ["sws_lmer_reml", "rem_lmer_reml"])
def test_trial_kenward_roger(trial, model):
    # R: lmerTest summary(fit, ddf = "Kenward-Roger"); anova(fit, type = 3, ddf = "Kenward-Roger")
    ref = pd.read_csv(DATA / "trial_fixef.csv").query("model == @model")
    fit = _trial_fit(trial, model)
    tab = fit.coef_table(df_method="kenward-roger")
    np.testing.assert_allclose(tab["std_error"], ref["se_kr"], rtol=1e-3)
    np.testing.assert_allclose(tab["df"], ref["df_kr"], rtol=1e-4)
    np.testing.assert_allclose(tab["p_value"], ref["p_kr"], rtol=1e-3)
    aov = pd.read_csv(DATA / "trial_anova_type3.csv").query(
        "model == @model and ddf_method == 'Kenward-Roger'"
    )
    ours = fit.anova(ddf="Kenward-Roger")
    np.testing.assert_allclose(ours["statistic"], aov["F"], rtol=1e-5)
    np.testing.assert_allclose(ours["den_df"], aov["DenDF"], rtol=1e-4)
    np.testing.assert_allclose(ours["p_value"], aov["p"], rtol=1e-3)


def test_kenward_roger_refuses_ml_fit(trial):
    from studykit.errors import ModelError

    with pytest.raises(ModelError, match="REML"):
        _trial_fit(trial, "sws_lmer_ml").coef_table(df_method="kenward-roger")
