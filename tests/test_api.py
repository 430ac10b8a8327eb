"""lmer / glmer from formulas against R, and readable results (summary, repr, HTML).

Reference numbers: tests/data/api/*.json, written by tests/data/api/make_references.R
(lme4 1.1-31, lmerTest 3.1-3; see tests/data/api/PROVENANCE.md). Tolerances are those of
tests/data/lme4/PROVENANCE.md: fixed effects rtol 1e-6, SEs and variance components rtol 1e-3,
log-likelihood atol 1e-4, Satterthwaite df rtol 1e-4, p-values rtol 1e-3; glmer Laplace as
tests/test_glmm.py (log-scale estimates atol 1e-4, SEs rtol 5e-3).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import studykit
from studykit import glmer, lmer
from studykit.errors import FormulaError
from studykit.models.summary import ModelSummary, abbreviate, random_effects_table

DATA = Path(__file__).parent / "data" / "api"


def reference(name: str) -> tuple[dict, pd.DataFrame]:
    ref = json.loads((DATA / f"{name}.json").read_text())
    data = pd.read_csv(DATA / ref["data"])
    return ref, data


LMM_CASES = {
    "sleepstudy_slope": {},  # (Days | Subject), REML
    "sleepstudy_uncorrelated_ml": {"reml": False},  # (Days || Subject), ML
    "pastes_nested": {},  # (1 | batch/cask)
    "penicillin_crossed": {},  # (1 | plate) + (1 | sample)
    "trial_default_levels": {},  # arm * night with R's sorted factor levels
}


@pytest.fixture(scope="module", params=sorted(LMM_CASES))
def lmm_case(request):
    ref, data = reference(request.param)
    fit = lmer(ref["formula"], data, **LMM_CASES[request.param])
    return ref, fit


def _varcorr_key(frame: pd.DataFrame, group: str) -> dict:
    out = {}
    for r in frame.itertuples(index=False):
        v1 = r.var1 if isinstance(r.var1, str) else None
        v2 = r.var2 if isinstance(r.var2, str) else None
        out[(getattr(r, group), v1, v2)] = (r.vcov, r.sdcor)
    return out


def test_lmer_matches_lmertest(lmm_case):
    ref, fit = lmm_case
    rc = pd.DataFrame(ref["coef"])
    tab = fit.coef_table()
    assert fit.columns == list(rc["term"])
    np.testing.assert_allclose(tab["estimate"], rc["Estimate"], rtol=1e-6)
    np.testing.assert_allclose(tab["std_error"], rc["Std. Error"], rtol=1e-3)
    np.testing.assert_allclose(tab["df"], rc["df"], rtol=1e-4)
    # lmerTest's df come from a numerical Hessian (~1e-5 relative); at 5.5 df and t = 41
    # (penicillin) that moves p by 1.2e-3 relative: p-values at 2e-3 here
    np.testing.assert_allclose(tab["p_value"], rc["Pr(>|t|)"], rtol=2e-3)
    assert fit.loglik == pytest.approx(ref["logLik"], abs=1e-4)
    assert fit.nobs == ref["nobs"] and fit.ngroups == ref["ngrps"]
    # variance components: lme4 names the second term of (x || g) "g.1"; match by name
    ours = _varcorr_key(fit.varcorr(), "group")
    theirs = _varcorr_key(pd.DataFrame(ref["varcorr"]), "grp")
    theirs = {(g.split(".")[0], a, b): v for (g, a, b), v in theirs.items()}
    assert set(ours) == set(theirs)
    for key, (vc, sd) in theirs.items():
        np.testing.assert_allclose(ours[key], (vc, sd), rtol=1e-3, atol=1e-8)


def test_summary_numbers_match_lmertest(lmm_case):
    ref, fit = lmm_case
    s = fit.summary()
    assert isinstance(s, ModelSummary)
    np.testing.assert_allclose(s.residuals, ref["residual_quantiles"], rtol=1e-3, atol=1e-5)
    if ref["reml"]:
        assert s.criteria["REML criterion at convergence"] == pytest.approx(
            ref["REML_criterion"], abs=2e-4
        )
    else:
        assert s.criteria["AIC"] == pytest.approx(ref["AIC"], abs=2e-4)
        assert s.criteria["BIC"] == pytest.approx(ref["BIC"], abs=2e-4)
        assert s.criteria["deviance"] == pytest.approx(ref["deviance"], abs=2e-4)
        assert s.criteria["df.resid"] == ref["df_resid"]
    if s.corr is not None:
        np.testing.assert_allclose(s.corr.to_numpy(), np.array(ref["corr_fixef"]), atol=1e-4)
    text = str(s)
    for section in ("Scaled residuals:", "Random effects:", "Number of obs:", "Fixed effects:"):
        assert section in text
    assert ref["formula"] in text
    assert f"Number of obs: {ref['nobs']}, groups:" in text


def test_summary_text_layout_sleepstudy():
    ref, data = reference("sleepstudy_slope")
    text = str(lmer(ref["formula"], data).summary())
    # the lines lmerTest prints for this model (summary(lmer(Reaction ~ Days + (Days | Subject))))
    assert "Linear mixed model fit by REML. t-tests use Satterthwaite's method" in text
    assert "REML criterion at convergence: 1743.6" in text
    assert "-3.9536 -0.4634  0.0231  0.4634  5.1793" in text
    # R prints 612.10 / 24.741 (lme4's optimum differs from ours in the 5th digit)
    assert re.search(r"\n Subject  \(Intercept\) 612\.\d\d   24\.74\d\s*\n", text)
    assert "          Days         35.07    5.922   0.07" in text
    assert "Number of obs: 180, groups:  Subject, 18" in text
    assert "Estimate Std. Error     df t value Pr(>|t|)" in text
    assert "(Intercept)  251.405      6.825 17.000  36.838  < 2e-16 ***" in text
    assert "Days          10.467      1.546 17.000   6.771 3.26e-06 ***" in text
    assert "Days -0.138" in text


def test_html_and_repr_are_short_and_readable():
    ref, data = reference("trial_default_levels")
    fit = lmer(ref["formula"], data)
    line = repr(fit)
    assert line.startswith("<LMMResult 'sws_min ~ arm * night + (1 | id)'") and "\n" not in line
    assert len(line) < 200  # was 6,343 characters with the design matrix
    html = fit._repr_html_()
    assert html.startswith("<div") and "<table>" in html and "Fixed effects" in html
    assert "armplacebo:nightpost1" in html
    assert fit.summary()._repr_html_() == html
    # HTML-escaped content: a formula with '<' cannot inject markup
    assert "&lt;" in ModelSummary(
        title="t", formula="y < x", criteria={"AIC": 1.0}, residuals=None,
        random=random_effects_table(fit.varcorr()), nobs=1, ngroups={"g": 1},
        fixed=fit.coef_table(),
    ).as_html()  # fmt: skip


def test_anova_and_emmeans_match_r():
    ref, data = reference("trial_default_levels")
    fit = lmer(ref["formula"], data)
    for key, ddf in (
        ("anova_satterthwaite", "Satterthwaite"),
        ("anova_kenward_roger", "Kenward-Roger"),
    ):
        r = pd.DataFrame(ref[key]).set_index("term")
        ours = fit.anova(type=3, ddf=ddf).set_index("term").loc[r.index]
        np.testing.assert_allclose(ours["statistic"], r["F value"], rtol=1e-4)
        np.testing.assert_allclose(ours["den_df"], r["DenDF"], rtol=1e-4)
        np.testing.assert_allclose(ours["p_value"], r["Pr(>F)"], rtol=1e-3)
    em = fit.emmeans("night")
    r = pd.DataFrame(ref["emmeans_night"])
    assert list(em["night"]) == list(r["night"])
    np.testing.assert_allclose(em["estimate"], r["emmean"], rtol=1e-6)
    np.testing.assert_allclose(em["std_error"], r["SE"], rtol=1e-3)
    np.testing.assert_allclose(em["df"], r["df"], rtol=1e-4)
    with pytest.raises(studykit.StudykitError, match="Invalid ddf"):
        fit.anova(ddf="residual")


def test_glmer_poisson_offset_matches_glmer():
    ref, data = reference("trial_poisson_offset")
    fit = glmer(ref["formula"], data, family="poisson")
    rc = pd.DataFrame(ref["coef"])
    tab = fit.coef_table()
    assert fit.columns == list(rc["term"])
    np.testing.assert_allclose(tab["estimate"], rc["Estimate"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(tab["std_error"], rc["Std. Error"], rtol=5e-3)
    assert fit.loglik == pytest.approx(ref["logLik"], abs=1e-3)
    vc = fit.varcorr()
    assert vc["sdcor"].iloc[0] == pytest.approx(ref["varcorr"][0]["sdcor"], rel=1e-3)
    s = fit.summary()
    assert s.criteria["AIC"] == pytest.approx(ref["AIC"], abs=2e-3)
    assert s.criteria["df.resid"] == ref["df_resid"]
    text = str(s)
    assert "Family: poisson  ( log )" in text and "z value" in text and "Pr(>|z|)" in text
    assert repr(fit).startswith("<GLMMResult 'awakenings ~ arm * night + offset(log(hours))")
    # without the offset the estimates change (the offset reaches the engine)
    plain = glmer("awakenings ~ arm * night + (1 | id)", data)
    assert abs(plain.beta[0] - fit.beta[0]) > 0.5


def test_glmer_binomial_cbind_matches_glmer() -> None:
    """cbind binomial GLMM (lme4's cbpp example) through the formula front door."""
    ref, data = reference("cbpp_binomial")
    fit = glmer(ref["formula"], data, family="binomial", levels={"period": ["1", "2", "3", "4"]})
    rc = pd.DataFrame(ref["coef"])
    tab = fit.coef_table()
    assert fit.columns == list(rc["term"])
    np.testing.assert_allclose(tab["estimate"], rc["Estimate"], atol=1e-3, rtol=0)
    assert fit.loglik == pytest.approx(ref["logLik"], abs=1e-3)
    # SEs: glmer's default differ from the inverse-Hessian SEs by ~1 %; glmmTMB's
    # (tests/data/glmm/multi/cbpp_glmmtmb.csv, made by make_multi.R there) are the reference
    tmb = pd.read_csv(Path(__file__).parent / "data" / "glmm" / "multi" / "cbpp_glmmtmb.csv")
    np.testing.assert_allclose(tab["std_error"], tmb["se"], rtol=1e-3)
    np.testing.assert_allclose(tab["std_error"], rc["Std. Error"], rtol=2e-2)


def test_glmer_crossed_poisson_reaches_the_maximum() -> None:
    """grouseticks (crossed Poisson, unscaled HEIGHT): glmer's default fit stops 0.04 below
    the maximum that glmmTMB reaches; studykit matches glmmTMB
    (tests/data/glmm/multi/grouseticks_glmmtmb.csv, made by make_multi.R there)."""
    ref, data = reference("grouseticks_crossed")
    fit = glmer(ref["formula"], data.astype({"YEAR": "category"}), family="poisson")
    tmb = pd.read_csv(Path(__file__).parent / "data" / "glmm" / "multi" / "grouseticks_glmmtmb.csv")
    assert fit.columns == list(tmb["term"])
    np.testing.assert_allclose(fit.beta, tmb["estimate"], rtol=1e-4)
    # the intercept sits at HEIGHT = 0, far outside the data (HEIGHT 403-533): its SE is the
    # worst-conditioned number here and glmmTMB's own fit warns of NaN evaluations; 2e-3
    np.testing.assert_allclose(fit.std_errors, tmb["se"], rtol=2e-3)
    assert fit.loglik == pytest.approx(tmb["loglik"].iloc[0], abs=1e-4)
    assert fit.loglik > ref["logLik"]  # glmer's default fit


def test_glmer_binary_responses():
    # one row per animal of lme4's cbpp: Bernoulli outcomes (0/1, boolean, two-level text)
    # give the same fit as the aggregated cbind(incidence, size - incidence)
    ref, data = reference("cbpp_binomial")
    data = data.astype({"period": "category"})
    rows = []
    for r in data.itertuples(index=False):
        rows += [(r.herd, r.period, 1)] * int(r.incidence)
        rows += [(r.herd, r.period, 0)] * int(r.size - r.incidence)
    animals = pd.DataFrame(rows, columns=["herd", "period", "sick"]).astype({"period": "category"})
    agg = glmer(ref["formula"], data, family="binomial")
    for y in (
        animals["sick"],
        animals["sick"].astype(bool),
        animals["sick"].map({0: "no", 1: "yes"}),
    ):
        fit = glmer("sick ~ period + (1 | herd)", animals.assign(sick=y), family="binomial")
        np.testing.assert_allclose(fit.beta, agg.beta, atol=1e-5)
    with pytest.raises(FormulaError, match="exactly two levels"):
        glmer("herd ~ period + (1 | period)", animals.astype({"herd": str}), family="binomial")
    with pytest.raises(FormulaError, match="family='binomial'"):
        glmer(ref["formula"], data, family="poisson")


def test_lmer_input_errors():
    ref, data = reference("sleepstudy_slope")
    with pytest.raises(FormulaError, match="at least one random-effects term"):
        lmer("Reaction ~ Days", data)
    with pytest.raises(FormulaError, match="offset"):
        lmer("Reaction ~ Days + offset(Days) + (1 | Subject)", data)
    with pytest.raises(FormulaError, match="not columns"):
        lmer("Reaction ~ days + (1 | Subject)", data)
    with pytest.raises(FormulaError, match="dunder"):
        lmer("Reaction ~ __import__('os') + (1 | Subject)", data)


def test_lmer_counts_excluded_rows():
    ref, data = reference("sleepstudy_slope")
    data = data.copy()
    data.loc[[0, 5], "Reaction"] = np.nan
    fit = lmer("Reaction ~ Days + (1 | Subject)", data)
    assert fit.nobs == 178 and fit.n_excluded == 2
    assert any("2 of 180 rows excluded" in w for w in fit.warnings)


def test_levels_override_sets_reference():
    ref, data = reference("trial_default_levels")
    fit = lmer(ref["formula"], data, levels={"arm": ["placebo", "ketamine"]})
    assert "armketamine" in fit.columns
    cat = data.assign(arm=pd.Categorical(data["arm"], categories=["placebo", "ketamine"]))
    assert lmer(ref["formula"], cat).columns == fit.columns


def test_abbreviate_like_r():
    # R: abbreviate(c("(Intercept)", "period2", "armplacebo:nightpost1"), 6)
    assert [abbreviate(x) for x in ("(Intercept)", "period2", "YEAR96")] == [
        "(Intr)",
        "perid2",
        "YEAR96",
    ]


def test_top_level_namespace_is_lazy():
    assert set(studykit.__all__) == {"__version__", *studykit._LAZY}
    code = (
        "import sys, studykit; heavy = [m for m in ('pandas', 'numpy', 'scipy', 'studykit.models') "
        "if m in sys.modules]; print(heavy); print(sorted(studykit.__all__))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[1],
    ).stdout.splitlines()
    assert out[0] == "[]"
    for name in (
        "load_study",
        "load_protocol",
        "run_analysis",
        "read_hypnogram",
        "sleep_statistics",
        "lmer",
        "glmer",
    ):
        assert name in out[1]
        assert callable(getattr(studykit, name))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        studykit.nope  # noqa: B018
