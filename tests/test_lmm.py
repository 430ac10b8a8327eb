"""Behaviour of the LMM engine: API, diagnostics, errors, and independent cross-checks.

Cross-checks: statsmodels MixedLM (independent implementation) and pingouin's mixed ANOVA
(classical sums of squares, equal to the LMM's F tests for a balanced split-plot design).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from studykit.errors import ModelError
from studykit.models.lmm import LMMResult, RandomEffect, fit_lmm, parse_random

DATA = Path(__file__).parent / "data" / "lme4"
LEVELS = {"arm": ["placebo", "ketamine"], "night": ["baseline", "post1", "post2"]}
FIXED = ["arm", "night", "arm:night"]


@pytest.fixture(scope="module")
def trial() -> pd.DataFrame:
    return pd.read_csv(DATA / "trial_sim.csv")


def _statsmodels_fit(formula, data, reml=True, **kw):
    import statsmodels.formula.api as smf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' own convergence chatter
        return smf.mixedlm(formula, data, **kw).fit(reml=reml, method=["lbfgs"])


def test_result_interface(trial):
    fit = fit_lmm(trial, "sws_min", FIXED, random="id", levels=LEVELS)
    assert isinstance(fit, LMMResult)
    assert fit.family == "gaussian" and fit.link == "identity"
    assert fit.columns[0] == "(Intercept)" and fit.design.columns == fit.columns
    assert fit.vcov.shape == (6, 6) and fit.beta.shape == (6,)
    assert fit.ngroups == {"id": 40} and fit.nobs == 120 and fit.n_excluded == 0
    assert fit.warnings == [] and fit.converged and not fit.singular
    tab = fit.coef_table()
    assert list(tab.columns) == [
        "term", "estimate", "std_error", "statistic", "df", "p_value",
        "conf_low", "conf_high", "df_method", "alternative",
    ]  # fmt: skip
    assert fit.contrast_df(np.eye(6)[4]) == pytest.approx(tab["df"][4])
    c = fit.contrast([0, 0, 0, 0, 1, -1], names=["post1 vs post2 DiD"], alternative="greater")
    assert c["term"].item() == "post1 vs post2 DiD" and np.isinf(c["conf_high"].item())
    assert "REML" in str(fit.summary())
    re = fit.ranef()
    assert len(re) == 40 and re["(Intercept)"].abs().sum() > 0


def test_inputs_not_modified(trial):
    before = trial.copy()
    fit_lmm(trial, "sws_min", FIXED, random="id", levels=LEVELS)
    pd.testing.assert_frame_equal(trial, before)


def test_unbalanced_matches_statsmodels_and_df_not_integer(trial):
    # drop 11 nights (missing data): Satterthwaite df are no longer integers
    rng = np.random.default_rng(11)
    data = trial.drop(index=rng.choice(len(trial), 11, replace=False)).reset_index(drop=True)
    fit = fit_lmm(data, "sws_min", FIXED, random="id", levels=LEVELS)
    df = fit.coef_table()["df"].to_numpy()
    assert np.all(np.abs(df - np.round(df)) > 1e-3)
    d2 = data.assign(
        arm=pd.Categorical(data["arm"], LEVELS["arm"]),
        night=pd.Categorical(data["night"], LEVELS["night"]),
    )
    sm = _statsmodels_fit("sws_min ~ arm * night", d2, groups="id")
    np.testing.assert_allclose(fit.beta, sm.fe_params.to_numpy(), rtol=1e-5)
    assert fit.loglik == pytest.approx(sm.llf, abs=1e-4)
    # vcov(beta) = (X' V^-1 X)^-1 with V built densely from statsmodels' variance estimates
    # (statsmodels' own bse_fe come from the joint Hessian and differ slightly when unbalanced)
    ids = data["id"].to_numpy()
    Z = (ids[:, None] == np.unique(ids)[None, :]).astype(float)
    V = sm.scale * np.eye(len(data)) + sm.cov_re.iloc[0, 0] * Z @ Z.T
    X = fit.design.X
    np.testing.assert_allclose(fit.vcov, np.linalg.inv(X.T @ np.linalg.solve(V, X)), rtol=1e-3)


def test_nested_participant_and_period_matches_statsmodels():
    # SIMULATED crossover-like data: participant and participant x period random intercepts
    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        u = rng.normal(0, 2)
        for period in (1, 2):
            v = rng.normal(0, 1)
            for night in range(3):
                rows.append((f"P{i:02d}", period, night, u + v + 0.3 * night + rng.normal()))
    d = pd.DataFrame(rows, columns=["id", "period", "night_index", "y"])
    d = d.drop(index=[3, 50, 51, 100]).reset_index(drop=True)  # unbalanced too
    fit = fit_lmm(d, "y", ["night_index"], random=[("id", ["1"]), ("id:period", ["1"])])
    sm = _statsmodels_fit(
        "y ~ night_index", d, groups="id", re_formula="1", vc_formula={"period": "0 + C(period)"}
    )
    assert fit.loglik == pytest.approx(sm.llf, abs=1e-4)
    np.testing.assert_allclose(fit.beta, sm.fe_params.to_numpy(), rtol=1e-5)
    vc = fit.varcorr().set_index("group")["vcov"]
    assert vc["id"] == pytest.approx(sm.cov_re.iloc[0, 0] * sm.scale / sm.scale, rel=1e-3)
    assert vc["id:period"] == pytest.approx(sm.vcomp[0], rel=1e-3)
    assert vc["Residual"] == pytest.approx(sm.scale, rel=1e-3)
    assert fit.ngroups == {"id": 30, "id:period": 60}
    assert len(fit.ranef()) == 90


def test_random_slope_ml_matches_statsmodels():
    ss = pd.read_csv(DATA / "sleepstudy.csv", dtype={"Subject": str})
    fit = fit_lmm(ss, "Reaction", ["Days"], random=[("Subject", ["1", "Days"])], reml=False)
    sm = _statsmodels_fit("Reaction ~ Days", ss, reml=False, groups="Subject", re_formula="~Days")
    assert fit.loglik == pytest.approx(sm.llf, abs=1e-4)
    vc = fit.varcorr()
    np.testing.assert_allclose(vc["vcov"][:2], np.diag(sm.cov_re), rtol=1e-3)


def test_balanced_f_tests_match_pingouin_mixed_anova(trial):
    # classical split-plot ANOVA (pingouin) = LMM Type III F for balanced data, when the
    # participant variance is not on its boundary
    import pingouin as pg

    fit = fit_lmm(trial, "sws_min", FIXED, random="id", levels=LEVELS)
    ours = fit.anova().set_index("term")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pingouin uses pandas' deprecated inplace= (pandas 3.1)
        aov = pg.mixed_anova(trial, dv="sws_min", within="night", subject="id", between="arm")
    aov = aov.set_index("Source")
    assert ours.loc["arm", "statistic"] == pytest.approx(aov.loc["arm", "F"], rel=1e-6)
    assert ours.loc["night", "statistic"] == pytest.approx(aov.loc["night", "F"], rel=1e-6)
    assert ours.loc["arm:night", "statistic"] == pytest.approx(
        aov.loc["Interaction", "F"], rel=1e-6
    )
    assert ours.loc["arm:night", "den_df"] == pytest.approx(aov.loc["Interaction", "DF2"])
    assert ours.loc["arm", "den_df"] == pytest.approx(aov.loc["arm", "DF2"], rel=1e-6)
    assert ours.loc["arm:night", "p_value"] == pytest.approx(
        aov.loc["Interaction", "p_unc"], rel=1e-6
    )


def test_singular_fit_flagged_and_between_effect_not_zeroed():
    # SIMULATED: no participant variance at all -> boundary fit. The between-participant
    # arm effect must equal its OLS value, not be zeroed (statsmodels' known failure).
    rng = np.random.default_rng(2)
    n = 40
    d = pd.DataFrame(
        {
            "id": np.repeat(np.arange(n), 3),
            "arm": np.repeat(["placebo", "ketamine"] * (n // 2), 3),
            "night": ["baseline", "post1", "post2"] * n,
        }
    )
    d["y"] = 50 + 8.0 * (d["arm"] == "ketamine") + rng.normal(0, 5, len(d))
    d.loc[d["id"] % 2 == 1, "y"] -= 0.0
    fit = fit_lmm(d, "y", FIXED, random="id", levels=LEVELS)
    if not fit.singular:  # the draw may give a tiny positive variance; force a boundary case
        d["y"] = (
            d["y"] - d.groupby("id")["y"].transform("mean") + 50 + 8.0 * (d["arm"] == "ketamine")
        )
        fit = fit_lmm(d, "y", FIXED, random="id", levels=LEVELS)
    assert fit.singular and fit.theta[0] < 1e-4
    assert any("singular" in w.lower() for w in fit.warnings)
    X = fit.design.X
    ols = np.linalg.lstsq(X, d["y"].to_numpy(), rcond=None)[0]
    np.testing.assert_allclose(fit.beta, ols, rtol=1e-6, atol=1e-8)
    assert abs(fit.beta[1]) > 1.0


def test_missing_rows_are_excluded_and_reported(trial):
    d = trial.copy()
    d.loc[[0, 5], "sws_min"] = np.nan
    fit = fit_lmm(d, "sws_min", FIXED, random="id", levels=LEVELS)
    assert fit.nobs == 118 and fit.n_excluded == 2
    assert any("2 of 120 rows excluded" in w for w in fit.warnings)


def test_parse_random_forms():
    assert parse_random(RandomEffect("id")) == [RandomEffect("id", ("1",))]
    assert parse_random({"group": "id", "terms": ["1", "x"]}) == [RandomEffect("id", ("1", "x"))]
    assert parse_random(("id", "1")) == [RandomEffect("id", ("1",))]
    with pytest.raises(ModelError, match="not a column name"):
        RandomEffect("id; import os")
    with pytest.raises(ModelError, match="at least one random effect"):
        parse_random([])


def test_user_errors(trial):
    with pytest.raises(ModelError, match="not columns of the data"):
        fit_lmm(trial, "sws_min", ["dose"], random="id", levels=LEVELS)
    with pytest.raises(ModelError, match="Outcome"):
        fit_lmm(trial, "swsmin", FIXED, random="id", levels=LEVELS)
    with pytest.raises(ModelError, match="levels were not declared"):
        fit_lmm(trial, "sws_min", ["arm"], random="id")
    with pytest.raises(ModelError, match="rank deficient"):
        fit_lmm(trial.assign(arm2=trial["arm"]), "sws_min", ["arm", "arm2"], random="id",
                levels={"arm": LEVELS["arm"], "arm2": LEVELS["arm"]})  # fmt: skip
    with pytest.raises(ModelError, match="cannot be told apart from the residual"):
        fit_lmm(trial.assign(row=range(120)), "sws_min", FIXED, random="row", levels=LEVELS)
    fit = fit_lmm(trial, "sws_min", FIXED, random="id", levels=LEVELS)
    with pytest.raises(ModelError, match="Invalid 'df_method'"):
        fit.coef_table(df_method="containment")
    with pytest.raises(ModelError, match="6 fixed effects"):
        fit.contrast([1, 0])


def test_refit_equals_fresh_fit(trial):
    fit = fit_lmm(trial, "sws_min", FIXED, random="id", levels=LEVELS)
    re = fit.refit(trial["rem_min"].to_numpy())
    fresh = fit_lmm(trial, "rem_min", FIXED, random="id", levels=LEVELS)
    np.testing.assert_allclose(re.beta, fresh.beta, rtol=1e-10)
    np.testing.assert_allclose(re.vcov, fresh.vcov, rtol=1e-8)
    assert re.loglik == pytest.approx(fresh.loglik, abs=1e-8)
    np.testing.assert_allclose(re.coef_table()["df"], fresh.coef_table()["df"], rtol=1e-8)
    with pytest.raises(ModelError, match="refit needs 120"):
        fit.refit(np.ones(5))
