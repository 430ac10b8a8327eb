"""Poisson / negative-binomial mixed models against glmer, glmmTMB and emmeans.

Reference numbers: ``tests/data/glmm/`` (copied from the R reference set; provenance and the R
calls are in ``tests/data/glmm/README.md``). Model in every case:
``awakenings ~ arm * night + (1 | id)`` on the SIMULATED 40-participant trial, reference levels
arm = placebo, night = baseline.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studykit.errors import ModelError
from studykit.models.glmm import GLMMResult, _Problem, fit_glmm
from studykit.models.quadrature import GaussHermite

DATA = Path(__file__).parent / "data" / "glmm"
LEVELS = {"arm": ["placebo", "ketamine"], "night": ["baseline", "post1", "post2"]}
TERMS = ["arm", "night", "arm:night"]
COLUMNS = [
    "(Intercept)",
    "armketamine",
    "nightpost1",
    "nightpost2",
    "armketamine:nightpost1",
    "armketamine:nightpost2",
]
# DiD "ketamine - placebo change from baseline" at post1 / post2 = the interaction coefficients
L_DID = np.array([[0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 1]], dtype=float)
# within-arm changes (emmeans pairs "post / baseline | arm")
L_WITHIN = {
    "post1 / baseline | arm = placebo": [0, 0, 1, 0, 0, 0],
    "post2 / baseline | arm = placebo": [0, 0, 0, 1, 0, 0],
    "post1 / baseline | arm = ketamine": [0, 0, 1, 0, 1, 0],
    "post2 / baseline | arm = ketamine": [0, 0, 0, 1, 0, 1],
}


@pytest.fixture(scope="module")
def trial() -> pd.DataFrame:
    return pd.read_csv(DATA / "trial_sim_awakenings.csv")


@pytest.fixture(scope="module")
def r_fixef() -> pd.DataFrame:
    return pd.read_csv(DATA / "r_fixef.csv")


@pytest.fixture(scope="module")
def r_stats() -> pd.DataFrame:
    return pd.read_csv(DATA / "r_fit_stats.csv").set_index("model")


def _fit(trial: pd.DataFrame, family: str = "poisson", nagq: int = 1) -> GLMMResult:
    return fit_glmm(trial, "awakenings", TERMS, group="id", family=family, levels=LEVELS, nagq=nagq)


@pytest.fixture(scope="module")
def laplace(trial: pd.DataFrame) -> GLMMResult:
    return _fit(trial)


@pytest.fixture(scope="module")
def agq25(trial: pd.DataFrame) -> GLMMResult:
    return _fit(trial, nagq=25)


@pytest.fixture(scope="module")
def nb2(trial: pd.DataFrame) -> GLMMResult:
    return _fit(trial, family="negbin")


def _ref(r_fixef: pd.DataFrame, model: str) -> pd.DataFrame:
    ref = r_fixef[r_fixef.model == model].set_index("term").loc[COLUMNS]
    assert len(ref) == 6
    return ref


# ------------------------------------------------------------------------------------------
# glmer Poisson, Laplace (nAGQ = 1)
# ------------------------------------------------------------------------------------------
def test_poisson_laplace_matches_glmer(laplace, r_fixef, r_stats):
    ref = _ref(r_fixef, "awakenings_glmer_poisson_laplace")
    assert laplace.columns == COLUMNS
    assert laplace.converged and not laplace.singular and laplace.warnings == []
    assert (laplace.family, laplace.link, laplace.nagq) == ("poisson", "log", 1)
    assert (laplace.nobs, laplace.ngroups) == (120, {"id": 40})
    # README tolerances: log-scale estimates atol 1e-4, SEs rtol 5e-3
    np.testing.assert_allclose(laplace.beta, ref.estimate, atol=1e-4, rtol=0)
    np.testing.assert_allclose(laplace.std_errors, ref.se, rtol=5e-3)
    st = r_stats.loc["awakenings_glmer_poisson_laplace"]
    # glmer stops 2.3e-5 short of the maximum that glmmTMB and studykit reach
    assert laplace.loglik == pytest.approx(st.logLik, abs=1e-4)
    assert laplace.loglik >= st.logLik - 1e-9
    assert laplace.loglik_lme4 == laplace.loglik
    assert laplace.df_loglik == st.df_logLik == 7
    assert laplace.aic == pytest.approx(st.AIC, abs=2e-4)
    assert laplace.bic == pytest.approx(st.BIC, abs=2e-4)
    assert laplace.sd_group == pytest.approx(st.sd_id, rel=1e-4)
    assert laplace.theta is None


def test_poisson_laplace_coef_table_matches_glmer_summary(laplace, r_fixef):
    ref = _ref(r_fixef, "awakenings_glmer_poisson_laplace")
    tab = laplace.coef_table()
    assert list(tab.columns) == [
        "term",
        "estimate",
        "std_error",
        "statistic",
        "df",
        "p_value",
        "conf_low",
        "conf_high",
        "df_method",
        "alternative",
    ]
    assert tab.term.tolist() == COLUMNS
    assert (tab.df == np.inf).all() and (tab.df_method == "z").all()
    assert (tab.alternative == "two-sided").all()
    np.testing.assert_allclose(tab.statistic, ref.stat, rtol=5e-3, atol=1e-3)
    # p-values follow the SEs (rtol 5e-3); on the log scale log p ~ -z^2/2 doubles that
    np.testing.assert_allclose(np.log(tab.p_value), np.log(ref.p_wald_z), atol=2e-2, rtol=1e-2)
    np.testing.assert_allclose(tab.conf_low, ref.ci_low_wald_z, atol=2e-3)
    np.testing.assert_allclose(tab.conf_high, ref.ci_high_wald_z, atol=2e-3)


def test_poisson_laplace_matches_glmmtmb_closely(laplace, r_fixef, r_stats):
    # glmmTMB optimises the same Laplace likelihood to full precision and takes SEs from the
    # joint Hessian (sdreport), as studykit does: agreement is much tighter than with glmer
    ref = _ref(r_fixef, "awakenings_glmmTMB_poisson")
    np.testing.assert_allclose(laplace.beta, ref.estimate, atol=1e-5, rtol=0)
    np.testing.assert_allclose(laplace.std_errors, ref.se, rtol=1e-4)
    np.testing.assert_allclose(
        np.log(laplace.coef_table().p_value), np.log(ref.p_wald_z), rtol=1e-3
    )
    st = r_stats.loc["awakenings_glmmTMB_poisson"]
    assert laplace.loglik == pytest.approx(st.logLik, abs=1e-5)
    assert laplace.aic == pytest.approx(st.AIC, abs=2e-5)
    assert laplace.sd_group == pytest.approx(st.sd_id, rel=1e-4)


# ------------------------------------------------------------------------------------------
# glmer Poisson, adaptive Gauss-Hermite quadrature (nAGQ = 25)
# ------------------------------------------------------------------------------------------
def test_poisson_agq25_matches_glmer(agq25, laplace, r_fixef, r_stats, trial):
    ref = _ref(r_fixef, "awakenings_glmer_poisson_agq25")
    assert agq25.converged and agq25.nagq == 25 and agq25.method == "AGQ(25)"
    np.testing.assert_allclose(agq25.beta, ref.estimate, atol=1e-4, rtol=0)
    # glmer's nAGQ > 1 SEs come from the joint (theta, beta) Hessian, as ours
    np.testing.assert_allclose(agq25.std_errors, ref.se, rtol=1e-3)
    st = r_stats.loc["awakenings_glmer_poisson_agq25"]
    assert agq25.sd_group == pytest.approx(st.sd_id, rel=1e-4)
    # lme4's AGQ logLik omits the saturated log-likelihood: loglik_lme4 reproduces it ...
    assert agq25.loglik_lme4 == pytest.approx(st.logLik, abs=1e-4)
    assert -2 * agq25.loglik_lme4 + 2 * agq25.df_loglik == pytest.approx(st.AIC, abs=2e-4)
    # ... and the full log-likelihood is on the Laplace scale (close to, above, Laplace's)
    y = trial.awakenings.to_numpy(float)
    pos = y > 0
    saturated = np.sum(y[pos] * np.log(y[pos])) - y.sum() - np.sum([math.lgamma(v + 1) for v in y])
    assert agq25.loglik == pytest.approx(st.logLik + saturated, abs=1e-4)
    assert abs(agq25.loglik - laplace.loglik) < 0.05


# ------------------------------------------------------------------------------------------
# glmmTMB negative binomial (nbinom2)
# ------------------------------------------------------------------------------------------
def test_negbin_matches_glmmtmb_nbinom2(nb2, r_fixef, r_stats):
    ref = _ref(r_fixef, "awakenings_glmmTMB_nbinom2")
    assert nb2.converged and nb2.family == "negbin" and nb2.warnings == []
    np.testing.assert_allclose(nb2.beta, ref.estimate, atol=1e-5, rtol=0)
    np.testing.assert_allclose(nb2.std_errors, ref.se, rtol=1e-4)
    np.testing.assert_allclose(np.log(nb2.coef_table().p_value), np.log(ref.p_wald_z), rtol=1e-3)
    st = r_stats.loc["awakenings_glmmTMB_nbinom2"]
    assert nb2.theta == pytest.approx(st.theta, rel=1e-4)
    assert nb2.sd_group == pytest.approx(st.sd_id, rel=1e-4)
    assert nb2.loglik == pytest.approx(st.logLik, abs=1e-5)
    assert nb2.df_loglik == 8
    assert nb2.aic == pytest.approx(st.AIC, abs=2e-5)
    assert list(nb2.vcov_params.index) == COLUMNS + ["sd_group", "log_theta"]


# ------------------------------------------------------------------------------------------
# contrasts (emmeans / pre-registered H2)
# ------------------------------------------------------------------------------------------
def test_did_contrasts_log_and_ratio_scale(laplace):
    ref = pd.read_csv(DATA / "r_contrasts.csv")
    ref = ref[ref.model == "awakenings_glmer_poisson_laplace"].set_index(["scale", "contrast"])
    names = [f"ketamine-placebo change from baseline at {n}" for n in ("post1", "post2")]
    log = laplace.contrast(L_DID, names=names)
    r = ref.loc["log"].loc[names]
    assert log.term.tolist() == names
    np.testing.assert_allclose(log.estimate, r.estimate, atol=1e-4, rtol=0)
    np.testing.assert_allclose(log.std_error, r.se, rtol=5e-3)
    np.testing.assert_allclose(log.statistic, r.stat, rtol=5e-3)
    ratio = laplace.contrast(L_DID, names=names, exponentiate=True)
    r = ref.loc["ratio"].loc[names]
    np.testing.assert_allclose(ratio.estimate, r.estimate, rtol=1e-4)
    np.testing.assert_allclose(ratio.std_error, r.se, rtol=5e-3)  # delta method, as emmeans
    np.testing.assert_allclose(ratio.conf_low, r.ci_low, rtol=2e-3)
    np.testing.assert_allclose(ratio.conf_high, r.ci_high, rtol=2e-3)
    # the test stays on the log scale
    np.testing.assert_array_equal(ratio.statistic, log.statistic)
    np.testing.assert_array_equal(ratio.p_value, log.p_value)
    np.testing.assert_allclose(ratio.conf_low, np.exp(log.conf_low), rtol=1e-12)


def test_within_arm_rate_ratios(laplace, agq25):
    ref = pd.read_csv(DATA / "r_contrasts.csv")
    for fit, model, se_rtol in (
        (laplace, "awakenings_glmer_poisson_laplace", 5e-3),
        (agq25, "awakenings_glmer_poisson_agq25", 1e-3),
    ):
        r = ref[(ref.model == model) & (ref.scale == "ratio")].set_index("contrast")
        frame = pd.DataFrame(L_WITHIN, index=COLUMNS).T
        got = fit.contrast(frame, exponentiate=True).set_index("term")
        r = r.loc[got.index]
        np.testing.assert_allclose(got.estimate, r.estimate, rtol=1e-4)
        np.testing.assert_allclose(got.std_error, r.se, rtol=se_rtol)
        np.testing.assert_allclose(got.p_value, r.p_two_sided, rtol=20 * se_rtol)


def test_h2_one_sided_did(laplace):
    # H2: awakenings decrease, log rate-ratio DiD < 0, one-sided z (trial_hypotheses.csv)
    ref = pd.read_csv(DATA / "r_hypotheses.csv").set_index("contrast")
    names = [f"ketamine-placebo change from baseline at {n}" for n in ("post1", "post2")]
    got = laplace.contrast(L_DID, names=names, alternative="less").set_index("term")
    r = ref.loc[names]
    np.testing.assert_allclose(got.estimate, r.estimate, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got.std_error, r.se, rtol=5e-3)
    np.testing.assert_allclose(got.statistic, r.stat, rtol=5e-3)
    # glmer's Laplace SE is 0.38 % below ours (and glmmTMB's): at z = -2.4 that moves p by 2.5 %
    np.testing.assert_allclose(np.log(got.p_value), np.log(r.p_one_sided), atol=3e-2)
    assert (got.alternative == "less").all()
    assert np.isneginf(got.conf_low).all() and (got.conf_high > got.estimate).all()
    # one-sided p is half the two-sided one when the estimate points the hypothesised way
    two = laplace.contrast(L_DID, names=names).set_index("term")
    assert got.p_value.iloc[0] == pytest.approx(two.p_value.iloc[0] / 2, rel=1e-12)
    assert laplace.contrast_df(L_DID[0]) == math.inf


def test_cell_means_on_reference_grid(laplace):
    # the emmeans use case: rows of the design for an arm x night grid
    ref = pd.read_csv(DATA / "r_emmeans.csv")
    ref = ref[ref.model == "awakenings_glmer_poisson_laplace"]
    grid = ref[ref.scale == "log"][["arm", "night"]].reset_index(drop=True)
    Lgrid = laplace.design.matrix_for(grid)
    log = laplace.contrast(Lgrid)
    r = ref[ref.scale == "log"]
    np.testing.assert_allclose(log.estimate, r.estimate, atol=1e-4, rtol=0)
    np.testing.assert_allclose(log.std_error, r.se, rtol=5e-3)
    rate = laplace.contrast(Lgrid, exponentiate=True)
    r = ref[ref.scale == "response(rate)"]
    np.testing.assert_allclose(rate.estimate, r.estimate, rtol=1e-4)
    np.testing.assert_allclose(rate.std_error, r.se, rtol=5e-3)
    np.testing.assert_allclose(rate.conf_low, r.ci_low, rtol=2e-3)
    np.testing.assert_allclose(rate.conf_high, r.ci_high, rtol=2e-3)


def test_contrast_input_forms(laplace):
    one = laplace.contrast(L_DID[0])
    assert one.term.tolist() == ["c1"]
    by_name = laplace.contrast(pd.Series({"armketamine:nightpost1": 1.0}, name="did1"))
    assert by_name.term.tolist() == ["did1"]
    assert by_name.estimate.iloc[0] == pytest.approx(one.estimate.iloc[0], rel=1e-15)
    greater = laplace.contrast(L_DID[0], alternative="greater", alpha=0.1)
    assert np.isposinf(greater.conf_high.iloc[0])
    assert greater.p_value.iloc[0] == pytest.approx(1 - one.p_value.iloc[0] / 2, rel=1e-12)
    with pytest.raises(ModelError, match="needs 6 weights"):
        laplace.contrast([1, 0, 0])
    with pytest.raises(ModelError, match="not model coefficients"):
        laplace.contrast(pd.DataFrame({"armplacebo": [1.0]}))
    with pytest.raises(ModelError, match="Invalid 'alternative'"):
        laplace.contrast(L_DID, alternative="one-sided")
    with pytest.raises(ModelError, match="alpha"):
        laplace.contrast(L_DID, alpha=5)
    with pytest.raises(ModelError, match="2 contrasts"):
        laplace.contrast(L_DID, names=["a"])


# ------------------------------------------------------------------------------------------
# behaviour
# ------------------------------------------------------------------------------------------
def test_row_order_and_input_untouched(trial, laplace):
    shuffled = trial.sample(frac=1.0, random_state=3)
    before = shuffled.copy()
    fit = _fit(shuffled)
    pd.testing.assert_frame_equal(shuffled, before)
    np.testing.assert_allclose(fit.beta, laplace.beta, atol=1e-8)
    np.testing.assert_allclose(fit.vcov, laplace.vcov, rtol=1e-5, atol=1e-12)
    assert fit.loglik == pytest.approx(laplace.loglik, abs=1e-9)
    pd.testing.assert_series_equal(fit.ranef, laplace.ranef, atol=1e-6)


def test_random_effects_are_conditional_modes(laplace, trial):
    # per participant the mode solves sum_j (y - mu) = b / sd^2 (glmer's ranef)
    b = laplace.ranef
    assert b.index.name == "id" and len(b) == 40
    eta = laplace.design.X @ laplace.beta + b.loc[trial.id].to_numpy()
    resid = pd.Series(trial.awakenings - np.exp(eta)).groupby(trial.id.to_numpy()).sum()
    np.testing.assert_allclose(resid.loc[b.index], b / laplace.sd_group**2, atol=1e-6)


def test_offset_shifts_intercept_only(trial, laplace):
    d = trial.assign(log_hours=math.log(7.5))
    fit = fit_glmm(d, "awakenings", TERMS, group="id", levels=LEVELS, offset="log_hours")
    np.testing.assert_allclose(fit.beta[0], laplace.beta[0] - math.log(7.5), atol=1e-7)
    np.testing.assert_allclose(fit.beta[1:], laplace.beta[1:], atol=1e-7)
    assert fit.loglik == pytest.approx(laplace.loglik, abs=1e-8)


def test_nagq_increasing_converges(trial, agq25):
    # AGQ with many nodes approaches the exact integral: 25 and 40 nodes agree closely
    fit40 = _fit(trial, nagq=40)
    assert fit40.loglik == pytest.approx(agq25.loglik, abs=1e-7)
    np.testing.assert_allclose(fit40.beta, agq25.beta, atol=1e-6)


def test_singular_fit_reduces_to_glm():
    # every participant has the same total count (nights shift by -1/0/+1 and compensate):
    # no between-participant variation at all, so the ML estimate of the SD is 0
    pattern = {"baseline": 12, "post1": 15, "post2": 9}
    shift = {"baseline": 1, "post1": -1, "post2": 0}
    rows = [
        {
            "id": f"P{i:02d}",
            "arm": arm,
            "night": n,
            "y": pattern[n] + (arm == "ketamine") + shift[n] * (i % 3 - 1),
        }
        for i, arm in enumerate(["placebo", "ketamine"] * 10)
        for n in pattern
    ]
    df = pd.DataFrame(rows)
    fit = fit_glmm(df, "y", TERMS, group="id", levels=LEVELS)
    assert fit.singular and fit.sd_group < 1e-4
    assert fit.converged
    assert any("Singular (boundary) fit" in w for w in fit.warnings)
    glm = sm.GLM(df.y, fit.design.X, family=sm.families.Poisson()).fit()
    np.testing.assert_allclose(fit.beta, glm.params, atol=1e-6)
    np.testing.assert_allclose(fit.std_errors, glm.bse, rtol=1e-4)
    assert fit.loglik == pytest.approx(glm.llf, abs=1e-6)


def test_negbin_on_equidispersed_data_hits_poisson_limit():
    # SIMULATED Poisson counts without overdispersion: theta runs to its bound and the NB fit
    # equals the Poisson one
    rng = np.random.default_rng(11)
    n = 60
    df = pd.DataFrame(
        {
            "id": np.repeat([f"P{i}" for i in range(n)], 3),
            "arm": np.repeat(["placebo", "ketamine"] * (n // 2), 3),
            "night": LEVELS["night"] * n,
        }
    )
    df["y"] = rng.poisson(9.0, size=len(df))
    pois = fit_glmm(df, "y", TERMS, group="id", levels=LEVELS)
    nb = fit_glmm(df, "y", TERMS, group="id", levels=LEVELS, family="negbin")
    assert nb.theta > 1e5
    np.testing.assert_allclose(nb.beta, pois.beta, atol=1e-3)
    assert nb.loglik == pytest.approx(pois.loglik, abs=1e-3)
    assert nb.loglik >= pois.loglik - 1e-6


def test_gradient_is_exact():
    # the analytic gradient of the Laplace / AGQ log-likelihood against central differences
    rng = np.random.default_rng(2)
    G, m = 15, 4
    X = np.column_stack([np.ones(G * m), rng.normal(size=G * m)])
    y = rng.poisson(np.exp(1.0 + 0.3 * X[:, 1] + np.repeat(rng.normal(0, 0.5, G), m)))
    gidx = np.repeat(np.arange(G), m)
    starts = np.arange(0, G * m, m)
    for negbin in (False, True):
        for k in (1, 7):
            rule = GaussHermite.rule(k)
            prob = _Problem(y.astype(float), X, np.zeros(G * m), gidx, starts, negbin, rule)
            phi = np.array([0.9, 0.25, 0.6] + ([math.log(4.0)] if negbin else []))
            _, grad = prob.evaluate(phi)
            num = np.empty_like(phi)
            for j in range(len(phi)):
                e = np.zeros_like(phi)
                e[j] = 1e-6
                num[j] = (prob.evaluate(phi + e)[0] - prob.evaluate(phi - e)[0]) / 2e-6
            np.testing.assert_allclose(grad, num, atol=2e-6, rtol=1e-6)


# ------------------------------------------------------------------------------------------
# input checks
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "match"),
    [
        (-1, "non-negative integers"),
        (2.5, "non-negative integers"),
        (np.nan, "missing"),
    ],
)
def test_bad_counts_refused(trial, value, match):
    bad = trial.astype({"awakenings": float})
    bad.loc[5, "awakenings"] = value
    with pytest.raises(ModelError, match=match):
        _fit(bad)


def test_other_input_errors(trial):
    with pytest.raises(ModelError, match="non-numeric"):
        _fit(trial.assign(awakenings=trial.awakenings.astype(str).replace("14", "many")))
    with pytest.raises(ModelError, match="Invalid family"):
        _fit(trial, family="gaussian")
    with pytest.raises(ModelError, match="must be 0/1 for a Bernoulli"):
        _fit(trial, family="binomial")
    for nagq in (0, 1.5, True, 101):
        with pytest.raises(ModelError, match="Invalid nagq"):
            _fit(trial, nagq=nagq)
    with pytest.raises(ModelError, match="Grouping column 'subject'"):
        fit_glmm(trial, "awakenings", TERMS, group="subject", levels=LEVELS)
    with pytest.raises(ModelError, match="missing"):
        _fit(trial.assign(id=trial.id.where(trial.index != 3)))
    with pytest.raises(ModelError, match="at least two groups"):
        _fit(trial.assign(id="P01"))
    with pytest.raises(ModelError, match="zero in every row"):
        _fit(trial.assign(awakenings=0))
    with pytest.raises(ModelError, match="rank deficient"):
        _fit(trial[~((trial.arm == "ketamine") & (trial.night == "post2"))])
    with pytest.raises(
        ModelError, match=r"cannot be estimated.*arm=ketamine & night=post1 \(20 rows\)"
    ):
        # zero events in a whole cell: the ML log rate ratio is -inf (separation)
        _fit(trial.assign(awakenings=trial.awakenings.where(
            (trial.arm != "ketamine") | (trial.night != "post1"), 0)))  # fmt: skip
    with pytest.raises(ModelError, match="levels were not declared"):
        fit_glmm(trial, "awakenings", TERMS, group="id")
    with pytest.raises(ModelError, match="DataFrame"):
        fit_glmm(trial.to_dict(), "awakenings", TERMS, group="id", levels=LEVELS)


# ------------------------------------------------------------------------------------------
# independent checks of the likelihood (no R reference needed)
# ------------------------------------------------------------------------------------------
def _exact_loglik(fit: GLMMResult, data: pd.DataFrame) -> float:
    """Marginal log-likelihood at the fitted parameters by adaptive numerical integration
    (scipy.integrate.quad around each conditional mode), one participant at a time."""
    from scipy import integrate
    from scipy.special import gammaln

    eta = fit.design.X @ fit.beta
    total = 0.0
    for gid, rows in data.groupby(fit.group).indices.items():
        y = data[fit.outcome].to_numpy(float)[rows]
        e = eta[rows]

        # textbook log pmfs (Poisson; NB2 with size theta) and the N(0, sd^2) log density
        def logf(b, y=y, e=e, th=fit.theta, sd=fit.sd_group):
            mu = np.exp(e + b)
            if th is None:
                ll = np.sum(y * np.log(mu) - mu - gammaln(y + 1))
            else:
                ll = np.sum(
                    gammaln(y + th)
                    - gammaln(th)
                    - gammaln(y + 1)
                    + th * np.log(th / (th + mu))
                    + y * np.log(mu / (th + mu))
                )
            return ll - 0.5 * (b / sd) ** 2 - math.log(sd * math.sqrt(2 * math.pi))

        mode = fit.ranef.loc[gid]
        peak = logf(mode)
        width = 1.0 / math.sqrt(np.exp(e + mode).sum() + 1.0 / fit.sd_group**2)
        val, _ = integrate.quad(
            lambda b, logf=logf, peak=peak: math.exp(logf(b) - peak),
            mode - 15 * width,
            mode + 15 * width,
            epsabs=0.0,
            epsrel=1e-11,
            limit=200,
        )
        total += peak + math.log(val)
    return total


@pytest.mark.parametrize("family", ["poisson", "negbin"])
def test_agq_loglik_equals_numerical_integral(trial, family):
    # 25-node adaptive quadrature is exact to ~1e-8 here; Laplace is off by ~0.03
    fit = _fit(trial, family=family, nagq=25)
    exact = _exact_loglik(fit, trial)
    assert fit.loglik == pytest.approx(exact, abs=1e-6)
    lap = _fit(trial, family=family)
    assert abs(_exact_loglik(lap, trial) - lap.loglik) > 1e-3  # Laplace is an approximation


def test_unbalanced_data_missing_nights(trial):
    # drop 13 nights at random (unbalanced, as with missed PSG nights): the fit is still an
    # interior maximum and invariant to row order; AGQ and Laplace stay close
    rng = np.random.default_rng(7)
    keep = np.ones(len(trial), bool)
    keep[rng.choice(len(trial), 13, replace=False)] = False
    sub = trial[keep]
    fit = _fit(sub)
    assert fit.converged and fit.nobs == 107 and fit.ngroups == {"id": 40}
    again = _fit(sub.iloc[::-1])
    np.testing.assert_allclose(again.beta, fit.beta, atol=1e-7)
    agq = _fit(sub, nagq=25)
    np.testing.assert_allclose(agq.beta, fit.beta, atol=2e-3)
    np.testing.assert_allclose(agq.std_errors, fit.std_errors, rtol=5e-3)


def test_numeric_covariate_and_covariate_means(trial):
    # a numeric covariate (SIMULATED age, unrelated to the counts) enters as one column and its
    # mean is recorded for emmeans' reference grid; the treatment effects barely move
    rng = np.random.default_rng(3)
    age = pd.Series(rng.uniform(20, 60, 40), index=sorted(trial.id.unique()))
    d = trial.assign(age=age.loc[trial.id].to_numpy())
    fit = fit_glmm(d, "awakenings", TERMS + ["age"], group="id", levels=LEVELS)
    assert fit.columns == COLUMNS + ["age"]  # term order, as lme4 for this term list
    assert fit.covariate_means == {"age": pytest.approx(d.age.mean(), rel=1e-12)}
    assert fit.converged
    base = fit_glmm(trial, "awakenings", TERMS, group="id", levels=LEVELS)
    did = fit.coef_table().set_index("term").loc["armketamine:nightpost1", "estimate"]
    assert did == pytest.approx(base.beta[4], abs=1e-3)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n_id=st.integers(4, 30),
    sd=st.sampled_from([0.0, 0.2, 1.0]),
    log_rate=st.floats(-1.0, 3.0),
)
def test_fit_is_a_maximum_at_least_the_glm(seed, n_id, sd, log_rate):
    # SIMULATED data of many shapes (small rates with many zeros, few participants, no
    # between-participant variance): the fit converges, and since SD = 0 is the Poisson GLM,
    # the maximised log-likelihood can never be below the GLM's
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "id": np.repeat([f"P{i}" for i in range(n_id)], 3),
            "arm": np.repeat(["placebo", "ketamine"] * (n_id // 2) + ["placebo"] * (n_id % 2), 3),
            "night": LEVELS["night"] * n_id,
        }
    )
    b = np.repeat(rng.normal(0.0, sd, n_id), 3)
    df["y"] = rng.poisson(np.exp(log_rate + b))
    if df.y.sum() == 0:
        df.loc[0, "y"] = 1
    empty_level = (df.groupby("arm").y.sum() == 0).any() or (df.groupby("night").y.sum() == 0).any()
    if empty_level:
        # a level with no events at all: the ML estimate is infinite and must be refused
        with pytest.raises(ModelError, match="cannot be estimated"):
            fit_glmm(df, "y", ["arm", "night"], group="id", levels=LEVELS)
        return
    fit = fit_glmm(df, "y", ["arm", "night"], group="id", levels=LEVELS)
    glm = sm.GLM(df.y, fit.design.X, family=sm.families.Poisson()).fit()
    assert fit.converged, fit.warnings
    assert fit.loglik >= glm.llf - 1e-6
    assert np.all(np.isfinite(fit.std_errors))
