"""Cumulative link mixed models against ordinal::clmm.

Reference numbers: tests/data/clmm/*.json from tests/data/clmm/make_references.R (ordinal
2022.11.16; PROVENANCE.md there). Tolerances: SEs rtol 1e-3 and log-likelihood atol 1e-4 (as
tests/data/lme4); estimates atol 5e-5, because clmm itself stops at max|gradient| up to 3e-4
(printed in its summary) while studykit's optimum has a gradient below 1e-6.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from studykit import clmm
from studykit.errors import ModelError
from studykit.models.clmm import fit_clmm

DATA = Path(__file__).parent / "data" / "clmm"
CASES = [
    "wine_logit_laplace",
    "wine_probit_laplace",
    "wine_logit_agq10",
    "kss_logit_laplace",
    "kss_probit_agq7",
]
LEVELS = {"treatment": ["placebo", "ketamine"]}  # as the R script's factor()


def reference(name: str) -> tuple[dict, pd.DataFrame]:
    ref = json.loads((DATA / f"{name}.json").read_text())
    return ref, pd.read_csv(DATA / ref["data"])


@pytest.fixture(scope="module", params=CASES)
def case(request):
    ref, data = reference(request.param)
    levels = LEVELS if ref["data"] == "kss_sim.csv" else None
    fit = clmm(ref["formula"], data, link=ref["link"], nagq=ref["nagq"], levels=levels)
    return ref, fit


def test_estimates_and_loglik_match_clmm(case):
    ref, fit = case
    rc = pd.DataFrame(ref["coef"])
    assert list(fit.thresholds.index) + fit.columns == list(rc["term"])
    est = np.r_[fit.thresholds.to_numpy(), fit.beta]
    np.testing.assert_allclose(est, rc["Estimate"], atol=5e-5, rtol=0)
    assert fit.sd_group == pytest.approx(ref["sd_group"], abs=5e-5)
    assert fit.loglik == pytest.approx(ref["logLik"], abs=1e-4)
    assert fit.aic == pytest.approx(ref["AIC"], abs=2e-4)
    assert fit.bic == pytest.approx(ref["BIC"], abs=2e-4)
    assert fit.df_loglik == ref["df_logLik"] and fit.nobs == ref["nobs"]
    assert {fit.group: fit.ngroups} == ref["ngroups"]
    assert fit.converged and not fit.singular


def test_standard_errors_and_tests_match_clmm(case):
    ref, fit = case
    np.testing.assert_allclose(
        np.sqrt(np.diag(fit.vcov_all.to_numpy())), np.sqrt(np.diag(ref["vcov"])), rtol=1e-3
    )
    rc = pd.DataFrame(ref["coef"]).set_index("term")
    tab = fit.coef_table().set_index("term")
    np.testing.assert_allclose(tab["std_error"], rc.loc[tab.index, "Std. Error"], rtol=1e-3)
    np.testing.assert_allclose(tab["statistic"], rc.loc[tab.index, "z value"], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(tab["p_value"], rc.loc[tab.index, "Pr(>|z|)"], rtol=5e-3)
    assert (tab["df_method"] == "z").all() and np.isinf(tab["df"]).all()
    th = fit.threshold_table().set_index("term")
    np.testing.assert_allclose(th["statistic"], rc.loc[th.index, "z value"], rtol=1e-3)


def test_conditional_modes_match_clmm(case):
    ref, fit = case
    # both in sorted level order (judges 1-9, participants P01-P48)
    assert [str(x) for x in fit.ranef.index] == [str(x) for x in ref["ranef_levels"]]
    np.testing.assert_allclose(fit.ranef.to_numpy(), ref["ranef"], atol=1e-3)


def test_kss_rows_with_missing_ratings_are_counted():
    ref, data = reference("kss_logit_laplace")
    fit = clmm(ref["formula"], data, levels=LEVELS)
    assert fit.n_excluded == 3 and fit.nobs == len(data) - 3  # R: 3 observations deleted
    assert any("3 of 288 rows excluded" in w for w in fit.warnings)


def test_summary_and_repr():
    ref, data = reference("wine_logit_laplace")
    fit = clmm(ref["formula"], data)
    text = str(fit.summary())
    assert "Cumulative link mixed model fitted with the Laplace approximation" in text
    assert "Threshold coefficients:" in text and "1|2" in text and "Pr(>|z|)" in text
    assert "Number of obs: 72, groups:  judge, 9" in text
    assert repr(fit).startswith("<CLMMResult 'rating ~ temp + contact + (1 | judge)', ordinal")
    assert "<table>" in fit._repr_html_()
    a = fit.anova()  # Wald chi-square / df for each term (z reference)
    assert list(a["term"]) == ["temp", "contact"]
    z = fit.coef_table().set_index("term")["statistic"]
    np.testing.assert_allclose(a["statistic"], z.to_numpy() ** 2, rtol=1e-10)


def test_response_order_and_errors():
    ref, data = reference("wine_logit_laplace")
    # text categories ordered explicitly: reversing the order flips the coefficients' sign
    rev = clmm(ref["formula"], data, response_levels=[5, 4, 3, 2, 1])
    fit = clmm(ref["formula"], data)
    np.testing.assert_allclose(rev.beta, -fit.beta, atol=1e-4)
    assert list(rev.thresholds.index)[0] == "5|4"
    with pytest.raises(ModelError, match="not among its ordered categories"):
        clmm(ref["formula"], data, response_levels=[1, 2, 3, 4])
    with pytest.raises(ModelError, match="at least 3"):
        clmm(ref["formula"], data.assign(rating=(data["rating"] > 2).astype(int)))
    with pytest.raises(ModelError, match="Invalid link"):
        clmm(ref["formula"], data, link="cloglog")
    with pytest.raises(ModelError, match="one random intercept"):
        clmm("rating ~ temp + (temp | judge)", data)
    # a category that never occurs is dropped with a warning
    cat = data.assign(rating=pd.Categorical(data["rating"], categories=[1, 2, 3, 4, 5, 6]))
    levels = {"temp": ["cold", "warm"], "contact": ["no", "yes"]}
    with_empty = fit_clmm(cat, "rating", ["temp", "contact"], group="judge", levels=levels)
    assert any("never observed" in w for w in with_empty.warnings)
    np.testing.assert_allclose(with_empty.beta, fit.beta, atol=1e-6)


def test_emmeans_latent_scale_match_r(case):
    # R: as.data.frame(emmeans(fit, ~ specs)) (mode "latent": x'beta - mean(thresholds))
    ref, fit = case
    # emmeans recovers the clmm's data without dropping the 3 rows with a missing rating, so
    # its grid holds 'period' at the mean over all 288 rows (1.5); studykit uses the model rows
    # (as emmeans does for lmer). Compare on R's grid.
    at = {"period": 1.5} if "period" in fit.design.numeric else None
    for key in ("emmeans_cells", "emmeans_main"):
        r = pd.DataFrame(ref[key])
        specs = [c for c in r.columns if c not in ("emmean", "SE", "df", "asymp.LCL", "asymp.UCL")]
        em = fit.emmeans(specs, at=at)
        for s in specs:
            assert list(em[s]) == [str(v) for v in r[s]]
        np.testing.assert_allclose(em["estimate"], r["emmean"], atol=5e-5)
        np.testing.assert_allclose(em["std_error"], r["SE"], rtol=1e-3)
        np.testing.assert_allclose(em["conf_low"], r["asymp.LCL"], atol=2e-3)
        assert (em["scale"] == "latent").all() and np.isinf(em["df"]).all()
