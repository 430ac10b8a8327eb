"""Power by simulation: exact fits against R, power against R and theory, seeding, parallelism.

Reference numbers (copied here, tests never read shared/):
- R 4.2.2, lme4 1.1-31, lmerTest 3.1-3 on ``tests/data/power/trial_sim.csv`` (a copy of
  shared/reference/lme4/trial_sim.csv), ``lmerTest::lmer(sws_min ~ arm*night + (1|id),
  REML = TRUE)``: ``summary()`` (trial_fixef.csv, model ``sws_lmer_reml``), ``logLik`` and
  ``sigma`` (trial_fit_stats.csv), ``VarCorr`` (trial_varcorr.csv).
- R power: 200 replicates of (simulate n = 40 from the trial_sim truth + lmerTest fit +
  Satterthwaite test of the night-1 DiD): power 0.45, Monte Carlo SE 0.035 (issue #8; timing
  in shared/reference/lme4/large/r_timing.csv, 11.1 s for the 200 replicates).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from studykit.cli import main
from studykit.errors import InputError, ProtocolError
from studykit.models.design import build_design
from studykit.models.inference import wald_test
from studykit.models.random_effects import RandomEffect
from studykit.power import (
    TRIAL_SIM_EXAMPLE,
    design_from_dict,
    design_from_protocol,
    did_power_balanced,
    power_analysis,
    simulate_replicate,
)
from studykit.power.core import adjust_pvalues_matrix, binomial_ci
from studykit.power.engine import _engine_fit
from studykit.power.simulate import replicate_rng
from studykit.power.spec import Layout
from studykit.protocol import load_protocol
from tests.reml_oracle import fit_nested_intercepts, fit_random_intercept

DATA = Path(__file__).parent / "data" / "power"
LEVELS = {"arm": ["placebo", "ketamine"], "night": ["baseline", "post1", "post2"]}

# lmerTest summary(lmer(sws_min ~ arm*night + (1|id))), trial_fixef.csv (sws_lmer_reml)
R_COLUMNS = ["(Intercept)", "armketamine", "nightpost1", "nightpost2",
             "armketamine:nightpost1", "armketamine:nightpost2"]  # fmt: skip
R_ESTIMATE = [92.8250000000008, -4.30000000000113, -5.57500000000034, -1.65000000000034,
              11.9250000000005, 2.87500000000054]  # fmt: skip
R_SE = [4.09925916995088, 5.7972279138268, 3.77256657313731, 3.77256657313731,
        5.33521481268617, 5.33521481268617]  # fmt: skip
R_DF = [68.4787384592382, 68.4787384549824, 76.0000007389096, 76.0000007405301,
        76.000000735389, 76.0000007377968]  # fmt: skip
R_LOGLIK_REML = -484.254129130933  # trial_fit_stats.csv
R_SIGMA = 11.9299029957301  # trial_fit_stats.csv
R_SD_ID = 13.91962389438  # trial_varcorr.csv
R_POWER, R_POWER_MCSE, R_POWER_REPS = 0.45, 0.035, 200  # issue #8, lmerTest simulation


@pytest.fixture(scope="module")
def trial():
    return pd.read_csv(DATA / "trial_sim.csv")


def _fit(df):
    d = build_design(df, ["arm", "night", "arm:night"], levels=LEVELS)
    assert d.columns == R_COLUMNS
    return fit_random_intercept(df["sws_min"].to_numpy(), d.X, df["id"].to_numpy())


# --------------------------------------------------------------------------- exact REML path
def test_fast_reml_reproduces_lmertest_on_trial_sim(trial):
    fit = _fit(trial)
    np.testing.assert_allclose(fit.beta, R_ESTIMATE, rtol=1e-6)
    np.testing.assert_allclose(np.sqrt(np.diag(fit.vcov)), R_SE, rtol=1e-6)
    np.testing.assert_allclose(fit.contrast_df(np.eye(6)), R_DF, rtol=1e-6)
    assert -fit.reml_criterion / 2 == pytest.approx(R_LOGLIK_REML, abs=1e-6)
    assert fit.sigma == pytest.approx(R_SIGMA, rel=1e-6)
    assert fit.sigma * fit.theta == pytest.approx(R_SD_ID, rel=1e-6)
    # one-sided p of the night-1 DiD, trial_hypotheses.csv: p_one_sided 0.014172271575671
    L = np.eye(6)[4]
    _, p = wald_test(L @ fit.beta, math.sqrt(L @ fit.vcov @ L), fit.contrast_df(L), "greater")
    assert float(p[0]) == pytest.approx(0.014172271575671, rel=1e-5)


def test_fast_reml_unbalanced_is_a_proper_optimum(trial):
    """Missing nights: the estimate is a stationary point of the REML criterion (no closed form)."""
    df = trial.drop(index=[4, 10, 50, 51, 77])
    fit = _fit(df)
    d = build_design(df, ["arm", "night", "arm:night"], levels=LEVELS)

    def crit(theta):
        # lme4's profiled REML criterion at theta, written directly with dense matrices
        y, X = df["sws_min"].to_numpy(), d.X
        Z = pd.get_dummies(df["id"]).to_numpy(float)
        V = np.eye(len(y)) + theta**2 * Z @ Z.T
        Vi = np.linalg.inv(V)
        A = X.T @ Vi @ X
        b = np.linalg.solve(A, X.T @ Vi @ y)
        r = (y - X @ b) @ Vi @ (y - X @ b)
        N, p = X.shape
        return (
            (N - p) * (1 + np.log(2 * np.pi * r / (N - p)))
            + np.linalg.slogdet(V)[1]
            + np.linalg.slogdet(A)[1]
        )

    assert crit(fit.theta) == pytest.approx(fit.reml_criterion, abs=1e-8)
    assert crit(fit.theta * 1.001) > fit.reml_criterion
    assert crit(fit.theta * 0.999) > fit.reml_criterion


def _oracle_replicates(spec, n, reps, seed):
    """The closed-form REML oracle (tests/reml_oracle.py) on the power simulation's own
    replicate data sets (simulate_replicate is exactly what replicate ``rep`` analyses)."""
    design = design_from_dict(spec)
    hyp = design.hypotheses[0]
    rows = []
    for rep in range(reps):
        df = simulate_replicate(design, n, seed=seed, rep=rep).dropna(subset=[hyp.outcome])
        d = build_design(df, list(hyp.fixed), levels={k: list(v) for k, v in hyp.levels.items()})
        groups = [pd.factorize(df[r.group.split(":")].astype(str).agg(":".join, axis=1))[0]
                  for r in hyp.random]  # fmt: skip
        y = df[hyp.outcome].to_numpy(float)
        if len(groups) == 1:
            fit = fit_random_intercept(y, d.X, groups[0])
        else:
            fit = fit_nested_intercepts(y, d.X, groups[0], groups[1])
        for _label, weights in hyp.contrasts:
            L = np.array([weights.get(c, 0.0) for c in d.columns])
            est, se = L @ fit.beta, math.sqrt(L @ fit.vcov @ L)
            df_ = float(np.atleast_1d(fit.contrast_df(L[None, :]))[0])
            _, p = wald_test(est, se, df_, hyp.alternative)
            rows.append((rep, est, se, df_, float(p), fit.singular))
    return pd.DataFrame(rows, columns=["rep", "estimate", "std_error", "df", "p_value", "singular"])


def test_power_engine_equals_reml_oracle_on_unbalanced_replicates():
    spec = copy.deepcopy(TRIAL_SIM_EXAMPLE)
    spec["layout"]["missing"] = {"post1": 0.15, "post2": 0.25}
    ref = power_analysis(spec, n=[30], reps=6, seed=5, progress=False).replicates
    oracle = _oracle_replicates(spec, 30, 6, 5)
    for col in ("estimate", "std_error", "df", "p_value"):
        np.testing.assert_allclose(oracle[col], ref[col], rtol=1e-5, err_msg=col)


# --------------------------------------------------------------------------- analytic power
def test_analytic_did_variance_matches_r_standard_error():
    """Var(DiD) = 2 sigma^2 (1/n1 + 1/n0) = 8 sigma^2 / n: with R's sigma-hat it is R's SE."""
    assert R_SIGMA * math.sqrt(8 / 40) == pytest.approx(R_SE[4], rel=1e-6)
    r = did_power_balanced(40, effect=10, sd_residual=12, alpha=0.025)
    assert r["df"] == 76.0  # 2 (n - 2); lmerTest 76.0000007 (R_DF)
    assert r["std_error"] == pytest.approx(12 * math.sqrt(8 / 40))


def test_r_power_matches_one_sided_0025_not_005():
    """R's 0.45 is the one-sided alpha = 0.025 power (= two-sided 0.05); at 0.05 it would be 0.58."""
    p025 = did_power_balanced(40, effect=10, sd_residual=12, alpha=0.025)["power"]
    p05 = did_power_balanced(40, effect=10, sd_residual=12, alpha=0.05)["power"]
    assert abs(p025 - R_POWER) < 2 * R_POWER_MCSE
    assert abs(p05 - R_POWER) > 3 * R_POWER_MCSE


@pytest.fixture(scope="module")
def trial_power():
    return power_analysis(TRIAL_SIM_EXAMPLE, n=[40], reps=1000, seed=20261125, progress=False)


def test_simulated_power_agrees_with_r_and_analytic(trial_power):
    row = trial_power.table.iloc[0]
    assert (
        row["n"] == 40 and row["reps"] == 1000 and row["engine"] == "studykit"
    )  # the analysis engine (default)
    assert row["alpha"] == 0.025 and row["alternative"] == "greater"
    analytic = did_power_balanced(40, effect=10, sd_residual=12, alpha=0.025)["power"]
    # within Monte Carlo error of R's estimate (both simulations' errors) and of the exact value
    assert abs(row["power"] - R_POWER) < 3 * math.hypot(R_POWER_MCSE, row["mc_se"])
    assert abs(row["power"] - analytic) < 3 * row["mc_se"]
    assert row["mc_se"] == pytest.approx(math.sqrt(row["power"] * (1 - row["power"]) / 1000))
    assert row["conf_low"] < analytic < row["conf_high"]
    reps = trial_power.replicates
    assert reps["df"].median() == pytest.approx(76.0, abs=1e-4)  # balanced: 2 (n - 2)
    # one-sided 0.05 from the same replicates: the analytic 0.580
    p05 = (reps["p_value"] < 0.05).mean()
    assert abs(
        p05 - did_power_balanced(40, effect=10, sd_residual=12, alpha=0.05)["power"]
    ) < 3 * math.sqrt(0.58 * 0.42 / 1000)


def test_type_one_error_is_alpha_under_the_null():
    spec = copy.deepcopy(TRIAL_SIM_EXAMPLE)
    spec["outcomes"]["sws_min"]["coefficients"]["treatmentketamine:nightpost1"] = 0
    res = power_analysis(spec, n=[24], reps=1000, seed=7, progress=False)
    row = res.table.iloc[0]
    assert abs(row["power"] - 0.025) < 3 * math.sqrt(0.025 * 0.975 / 1000)


# --------------------------------------------------------------------------- seeding and workers
def _small(**kw):
    return power_analysis(TRIAL_SIM_EXAMPLE, n=[20, 30], reps=12, seed=11, progress=False, **kw)


def test_same_seed_same_results_whatever_the_chunking_and_workers():
    a = _small(chunk_size=12)
    b = _small(chunk_size=5)
    c = _small(n_jobs=2, chunk_size=4)
    pd.testing.assert_frame_equal(a.replicates, b.replicates)
    pd.testing.assert_frame_equal(a.replicates, c.replicates)
    pd.testing.assert_frame_equal(a.table, c.table)
    # a replicate depends on (seed, n, rep) only, not on the other sizes in the grid
    d = power_analysis(TRIAL_SIM_EXAMPLE, n=[30], reps=12, seed=11, progress=False)
    pd.testing.assert_frame_equal(
        a.replicates.query("n == 30").reset_index(drop=True), d.replicates
    )
    e = power_analysis(TRIAL_SIM_EXAMPLE, n=[30], reps=12, seed=12, progress=False)
    assert not np.allclose(d.replicates["estimate"], e.replicates["estimate"])


def test_dask_local_cluster_gives_identical_results():
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        via_dask = _small(scheduler=client, chunk_size=5)
    pd.testing.assert_frame_equal(_small().replicates, via_dask.replicates)
    assert via_dask.settings["scheduler"] is not None


def test_replicate_data_is_what_the_simulation_analyses():
    design = design_from_dict(TRIAL_SIM_EXAMPLE)
    df = simulate_replicate(design, 40, seed=3, rep=2)
    d = build_design(
        df, ["treatment", "night", "treatment:night"], levels=design.hypotheses[0].levels
    )
    fit = fit_random_intercept(df["sws_min"].to_numpy(), d.X, df["participant_id"].to_numpy())
    res = power_analysis(design, n=[40], reps=3, seed=3, progress=False).replicates
    assert res.loc[2, "estimate"] == pytest.approx(fit.beta[4], rel=1e-12)
    rng1, rng2 = replicate_rng(3, 40, 2), replicate_rng(3, 40, 2)
    assert rng1.random() == rng2.random()


# --------------------------------------------------------------------------- multiplicity
def test_holm_within_family_in_each_replicate():
    spec = copy.deepcopy(TRIAL_SIM_EXAMPLE)
    spec["outcomes"]["rem_min"] = {  # trial_truth.json "rem"
        "coefficients": {"(Intercept)": 95, "treatmentketamine:nightpost1": -6},
        "sd": {"participant_id": 12},
        "sd_residual": 15,
    }
    spec["hypotheses"].append({"id": "H3", "outcome": "rem_min", "direction": "two-sided"})
    res = power_analysis(spec, n=[40], reps=200, seed=2, progress=False)
    w = res.replicates.pivot(index="rep", columns="hypothesis_id", values="p_value")
    lo, hi = np.minimum(w.H1, w.H3), np.maximum(w.H1, w.H3)
    holm_lo, holm_hi = (
        np.minimum(1, 2 * lo),
        np.minimum(1, np.maximum(2 * lo, hi)),
    )  # hand Holm, m = 2
    adj = res.replicates.pivot(index="rep", columns="hypothesis_id", values="p_adjusted")
    expect_h1 = np.where(w.H1 <= w.H3, holm_lo, holm_hi)
    np.testing.assert_allclose(adj.H1, expect_h1, rtol=1e-12)
    rej = res.replicates.pivot(index="rep", columns="hypothesis_id", values="rejected")
    assert (rej.H1 == (adj.H1 < 0.025)).all()
    t = res.table.set_index("hypothesis_id")
    assert t.loc["H1", "power"] == pytest.approx(rej.H1.mean())
    assert (t["adjust_method"] == "holm").all()
    # adjusting costs power: unadjusted one-sided p < 0.025 rejects at least as often
    assert (w.H1 < 0.025).mean() >= t.loc["H1", "power"]


def test_adjust_matrix_hand_values():
    p = np.array([[0.01, 0.04, 0.03], [0.02, np.nan, 0.5]])
    # p.adjust(c(.01,.04,.03), "hochberg") = 0.03 0.04 0.04; bonferroni with NaN: m = 2
    np.testing.assert_allclose(adjust_pvalues_matrix(p[:1], "hochberg"), [[0.03, 0.04, 0.04]])
    np.testing.assert_allclose(adjust_pvalues_matrix(p[1:], "bonferroni"), [[0.04, np.nan, 1.0]])
    np.testing.assert_allclose(adjust_pvalues_matrix(p[1:], "fixed-sequence"), [[0.02, 1.0, 1.0]])


def test_clopper_pearson_interval():
    # R: binom.test(90, 200)$conf.int = 0.3797536 0.5217507
    lo, hi = binomial_ci(np.array([90, 0]), np.array([200, 50]))
    assert lo[0] == pytest.approx(0.3797536, abs=1e-7) and hi[0] == pytest.approx(
        0.5217507, abs=1e-7
    )
    assert lo[1] == 0.0 and hi[1] == pytest.approx(1 - 0.025 ** (1 / 50))


# --------------------------------------------------------------------------- layouts and families
def test_crossover_template_and_group_sizes():
    lay = Layout(design="crossover", time_levels=("baseline", "post1"))
    t = lay.template(5)
    assert len(t) == 5 * 2 * 2
    assert t.groupby("participant_id")["treatment"].nunique().eq(2).all()
    assert Layout(allocation=(1, 2)).group_sizes(10) == [3, 7]
    assert Layout().group_sizes(41) == [21, 20]


def test_protocol_random_effects_reach_power_as_the_one_type():
    """The protocol's RandomEffect terms reach the power engine unchanged, ``||`` included
    (the (group, terms) tuples power used to pass dropped ``correlated``)."""
    proto = load_protocol(PROTOCOL)
    uncorrelated = (RandomEffect("participant_id", ("1", "night_index"), correlated=False),)
    proto = dataclasses.replace(
        proto,
        hypotheses=tuple(
            dataclasses.replace(h, random=uncorrelated) if h.id == "H1" else h
            for h in proto.hypotheses
        ),
    )
    design = design_from_protocol(proto, EFFECTS, hypotheses=["H1"])
    (h1,) = design.hypotheses
    assert h1.random == uncorrelated
    fit = _engine_fit(h1)(simulate_replicate(design, 12, seed=1))
    vc = fit.varcorr()
    # lme4's (1 + night_index || participant_id): two variances, no correlation row
    assert vc["var2"].isna().all() and len(vc) == 3


def test_power_design_random_terms_from_yaml_keep_correlated():
    spec = copy.deepcopy(TRIAL_SIM_EXAMPLE)
    spec["hypotheses"][0]["random"] = [
        {"group": "participant_id", "slopes": ["night_index"], "correlated": False}
    ]
    (h,) = design_from_dict(spec).hypotheses
    assert [r.label for r in h.random] == ["(1 + night_index || participant_id)"]
    spec["hypotheses"][0]["random"] = [{"group": "participant_id", "slope": ["night_index"]}]
    with pytest.raises(ProtocolError, match="unknown key"):
        design_from_dict(spec)
    spec["hypotheses"][0]["random"] = ["participant id"]
    with pytest.raises(ProtocolError, match="not a column name"):
        design_from_dict(spec)


def test_did_weights_come_from_the_reference_grid():
    """The DiD weights are emmeans' (models.emmeans.did_matrix), whatever the coding: with
    post2 as the model's reference night, ketamine's change from baseline to post1 is
    ketamine:post1 - ketamine:baseline (hand derivation in treatment coding), not the one
    interaction column a name-built contrast assumed."""
    spec = copy.deepcopy(TRIAL_SIM_EXAMPLE)
    spec["hypotheses"][0]["levels"] = {"night": ["post2", "baseline", "post1"]}
    (h,) = design_from_dict(spec).hypotheses
    assert h.contrasts[0][1] == {
        "treatmentketamine:nightbaseline": -1.0,
        "treatmentketamine:nightpost1": 1.0,
    }
    spec = copy.deepcopy(TRIAL_SIM_EXAMPLE)
    spec["hypotheses"][0]["fixed"] = ["treatment", "night"]
    with pytest.raises(ProtocolError, match="no treatment x night interaction"):
        design_from_dict(spec)


def test_crossover_power_runs_with_nested_random_effects_spec():
    spec = copy.deepcopy(TRIAL_SIM_EXAMPLE)
    spec["layout"]["design"] = "crossover"
    spec["outcomes"]["sws_min"]["sd"] = {"participant_id": 15, "participant_id:period": 5}
    spec["outcomes"]["sws_min"]["coefficients"]["period2"] = 2
    d = design_from_dict(spec)
    assert "period" in d.hypotheses[0].fixed
    df = simulate_replicate(d, 6, seed=1)
    assert set(df["period"]) == {1, 2} and len(df) == 6 * 2 * 3
    # single participant intercept in the analysis: the fast path applies
    res = power_analysis(d, n=[12], reps=5, seed=1, progress=False)
    assert res.table.loc[0, "n_failed"] == 0


def test_count_simulation_has_the_assumed_rates():
    spec = copy.deepcopy(TRIAL_SIM_EXAMPLE)
    spec["outcomes"] = {
        "awakenings": {  # trial_truth.json: rate 14, rate ratio 0.75 ketamine:post1, SD 0.35 log
            "family": "negbin",
            "coefficients": {"(Intercept)": math.log(14), "ketamine:post1": math.log(0.75)},
            "sd": {"participant_id": 0.35},
            "dispersion": 8,
        }
    }
    spec["hypotheses"] = [
        {"id": "H2", "outcome": "awakenings", "family": "negbin", "direction": "less"}
    ]
    d = design_from_dict(spec)
    df = simulate_replicate(d, 4000, seed=9)
    m = df.groupby(["treatment", "night"])["awakenings"].mean()
    # E[y] = exp(b0 + eta + sd^2 / 2) for log-normal participant effects
    assert m[("placebo", "baseline")] == pytest.approx(14 * math.exp(0.35**2 / 2), rel=0.03)
    ratio = m[("ketamine", "post1")] / m[("ketamine", "baseline")]
    assert ratio == pytest.approx(0.75, rel=0.04)
    assert (df["awakenings"] == df["awakenings"].round()).all()


def test_count_power_uses_the_glmm_engine():
    spec = copy.deepcopy(TRIAL_SIM_EXAMPLE)
    spec["outcomes"] = {
        "awakenings": {
            "family": "poisson",
            "coefficients": {"(Intercept)": math.log(14), "ketamine:post1": math.log(0.75)},
            "sd": {"participant_id": 0.35},
        }
    }
    spec["hypotheses"] = [
        {"id": "H2", "outcome": "awakenings", "family": "poisson", "direction": "less"}
    ]
    res = power_analysis(spec, n=[40], reps=10, seed=1, progress=False)
    row = res.table.iloc[0]
    assert row["engine"] == "studykit" and row["df_method"] == "z (asymptotic)"
    assert res.replicates["df"].eq(np.inf).all()


def test_pilot_extend_uses_fitted_truth(trial):
    pilot = trial.rename(columns={"id": "participant_id", "arm": "treatment"})
    spec = {k: v for k, v in TRIAL_SIM_EXAMPLE.items() if k != "outcomes"}
    res = power_analysis(
        spec, pilot=pilot, n=[40], reps=5, seed=1, progress=False,
        effects={"outcomes": {"sws_min": {"coefficients": {"treatmentketamine:nightpost1": 8}}}},
    )  # fmt: skip
    truth = res.design.outcomes["sws_min"]
    assert truth.sd_residual == pytest.approx(R_SIGMA, rel=1e-6)  # lme4 sigma on the pilot
    assert truth.sd["participant_id"] == pytest.approx(R_SD_ID, rel=1e-6)
    assert truth.coefficients["nightpost1"] == pytest.approx(R_ESTIMATE[2], rel=1e-6)
    assert truth.coefficients["treatmentketamine:nightpost1"] == 8  # overridden
    assert "pilot" in res.design.source


def test_pilot_without_a_window_level_fits_the_observed_levels(trial, caplog):
    # The design has a night "post3" that the pilot (trial_sim: baseline/post1/post2) never
    # recorded: its columns would be all zero (rank deficient). The pilot fit uses the observed
    # levels, says so, and post3 is simulated at the reference mean.
    pilot = trial.rename(columns={"id": "participant_id", "arm": "treatment"})
    spec = copy.deepcopy({k: v for k, v in TRIAL_SIM_EXAMPLE.items() if k != "outcomes"})
    spec["layout"]["time"]["levels"] = ["baseline", "post1", "post2", "post3"]
    with caplog.at_level("WARNING", logger="studykit.power.pilot"):
        res = power_analysis(spec, pilot=pilot, n=[40], reps=3, seed=1, progress=False)
    assert "no night level(s) ['post3']" in caplog.text
    truth = res.design.outcomes["sws_min"]
    assert truth.coefficients["nightpost1"] == pytest.approx(R_ESTIMATE[2], rel=1e-6)
    assert not any("post3" in k for k in truth.coefficients)
    assert res.table["n_failed"].eq(0).all()


# --------------------------------------------------------------------------- errors
def test_bad_specs_raise_helpful_errors():
    spec = copy.deepcopy(TRIAL_SIM_EXAMPLE)
    spec["outcomes"]["sws_min"]["coefficients"]["ketamine:post9"] = 1
    with pytest.raises(ProtocolError, match="not a column of the true model"):
        power_analysis(spec, n=[20], reps=1, progress=False)
    spec = copy.deepcopy(TRIAL_SIM_EXAMPLE)
    del spec["outcomes"]["sws_min"]["sd_residual"]
    with pytest.raises(ProtocolError, match="sd_residual"):
        design_from_dict(spec)
    spec = copy.deepcopy(TRIAL_SIM_EXAMPLE)
    spec["hypotheses"][0]["direction"] = "up"
    with pytest.raises(ProtocolError, match="expected one of two-sided, greater, less"):
        design_from_dict(spec)
    with pytest.raises(InputError, match="integers >= 4"):
        power_analysis(TRIAL_SIM_EXAMPLE, n=[2], reps=1, progress=False)
    with pytest.raises(InputError, match="Invalid engine"):
        power_analysis(TRIAL_SIM_EXAMPLE, n=[20], reps=1, engine="lme4", progress=False)


def test_inputs_are_not_modified():
    spec = copy.deepcopy(TRIAL_SIM_EXAMPLE)
    before = copy.deepcopy(spec)
    power_analysis(
        spec, n=[20], reps=2, progress=False, effects={"outcomes": {"sws_min": {"sd_residual": 10}}}
    )
    assert spec == before


# --------------------------------------------------------------------------- outputs and CLI
def test_write_outputs_and_figure(tmp_path, capsys):
    res = power_analysis(TRIAL_SIM_EXAMPLE, n=[20, 40], reps=10, seed=1)
    assert "replicates" in capsys.readouterr().err  # progress bar on stderr
    paths = res.write(tmp_path)
    for p in paths.values():
        assert Path(p).stat().st_size > 0
    table = pd.read_csv(paths["table_csv"])
    assert list(table["n"]) == [20, 40] and table["simulated"].all()
    assert "SIMULATED" in Path(paths["table_md"]).read_text()
    assert Path(paths["figure_svg"]).read_text().lstrip().startswith("<?xml")


def test_cli_power_with_design_yaml(tmp_path, capsys):
    f = tmp_path / "design.yaml"
    f.write_text(yaml.safe_dump(TRIAL_SIM_EXAMPLE))
    out = tmp_path / "out"
    code = main(
        [
            "power",
            str(f),
            "--n",
            "20,30",
            "--reps",
            "8",
            "--seed",
            "4",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    table = pd.read_csv(out / "power.csv")
    assert table[["hypothesis_id", "n", "reps"]].values.tolist() == [["H1", 20, 8], ["H1", 30, 8]]
    assert (out / "power.png").exists() and (out / "power.svg").exists()
    assert "ms per replicate" in capsys.readouterr().out
    # same seed, same table, from the library
    lib = power_analysis(f, n=[20, 30], reps=8, seed=4, progress=False).table
    np.testing.assert_array_equal(table["power"], lib["power"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--n", "20,abc"], "comma-separated integers"),
        (["--reps", "0"], "--reps must be a positive integer"),
    ],
)
def test_cli_bad_arguments_exit_2(tmp_path, capsys, argv, message):
    f = tmp_path / "design.yaml"
    f.write_text(yaml.safe_dump(TRIAL_SIM_EXAMPLE))
    try:
        code = main(["power", str(f), "--out", str(tmp_path / "o"), *argv])
    except SystemExit as exc:  # argparse type errors
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_cli_missing_file_exit_2(tmp_path, capsys):
    assert main(["power", str(tmp_path / "nope.yaml"), "--reps", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err


# --------------------------------------------------------------------------- protocol input
PROTOCOL = Path(__file__).parents[1] / "protocols" / "ketamine_sleep.yaml"
EFFECTS = Path(__file__).parents[1] / "protocols" / "ketamine_effects.yaml"


def test_protocol_plus_effects_becomes_a_power_design(caplog):
    proto = load_protocol(PROTOCOL)
    design = design_from_protocol(proto, EFFECTS)
    byid = {h.id: h for h in design.hypotheses}
    assert set(byid) == {"H1", "H2", "H3", "E1"}  # outcomes the effects file gives a truth for
    assert "left out" in caplog.text  # the others are named, not silently dropped
    h1 = byid["H1"]
    src = proto.get("H1")
    assert h1.fixed == tuple(src.fixed) and h1.alpha == src.alpha
    assert h1.alternative == src.direction and h1.adjust_method == src.adjust_method
    assert h1.contrasts[0][1] == {"treatmentketamine:nightpost1": 1.0}
    assert design.layout.design == "crossover"
    df = simulate_replicate(design, 4, seed=1)
    assert len(df) == 4 * 2 * len(design.layout.time_levels)


def test_pilot_file_is_validated_against_the_dictionary(trial, tmp_path, caplog):
    pilot = trial.rename(columns={"id": "participant_id", "arm": "treatment", "sws_min": "n3_min"})
    pilot.assign(period=1).to_csv(tmp_path / "nights.csv", index=False)
    spec = copy.deepcopy({k: v for k, v in TRIAL_SIM_EXAMPLE.items() if k != "outcomes"})
    spec["hypotheses"][0]["outcome"] = "n3_min"
    res = power_analysis(spec, pilot=tmp_path, n=[40], reps=3, seed=1, progress=False)
    assert res.design.outcomes["n3_min"].sd_residual == pytest.approx(R_SIGMA, rel=1e-6)
    assert "awakenings" in caplog.text  # not a dictionary column: reported, not silently used


def test_fixed_sequence_follows_the_family_order():
    spec = copy.deepcopy(TRIAL_SIM_EXAMPLE)
    spec["hypotheses"] = [
        {"id": "H1", "outcome": "sws_min", "contrast": {"time_levels": ["post1"]}},
        {"id": "H1b", "outcome": "sws_min", "contrast": {"time_levels": ["post2"]}},
    ]
    spec["multiplicity"] = {
        "confirmatory": {"method": "fixed-sequence", "alpha": 0.025, "order": ["H1b", "H1"]}
    }
    res = power_analysis(spec, n=[40], reps=100, seed=3, progress=False)
    w = res.replicates.pivot(index="rep", columns="hypothesis_id", values="p_value")
    adj = res.replicates.pivot(index="rep", columns="hypothesis_id", values="p_adjusted")
    # H1b is tested first at full alpha; H1 only after H1b: p~(H1) = max(p(H1b), p(H1))
    np.testing.assert_allclose(adj.H1b, w.H1b)
    np.testing.assert_allclose(adj.H1, np.maximum(w.H1b, w.H1))
    t = res.table.set_index("hypothesis_id")
    assert t.loc["H1", "power"] <= t.loc["H1b", "power"] + 1e-12


def test_cli_selects_hypotheses(tmp_path):
    spec = copy.deepcopy(TRIAL_SIM_EXAMPLE)
    spec["hypotheses"].append(
        {"id": "H1b", "outcome": "sws_min", "contrast": {"time_levels": ["post2"]}}
    )
    f = tmp_path / "design.yaml"
    f.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    argv = [
        "power",
        str(f),
        "--n",
        "20",
        "--reps",
        "4",
        "--hypotheses",
        "H1b",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    assert pd.read_csv(out / "power.csv")["hypothesis_id"].tolist() == ["H1b"]
    assert main([*argv[:-3], "--hypotheses", "H9", "--out", str(out), "--no-progress"]) == 2


def test_power_engine_equals_reml_oracle_on_crossover_replicates():
    """(1 | participant_id) + (1 | participant_id:period), unbalanced: fit_lmm = the oracle."""
    spec = copy.deepcopy(TRIAL_SIM_EXAMPLE)
    spec["layout"]["design"] = "crossover"
    spec["layout"]["missing"] = {"post1": 0.1, "post2": 0.2}
    spec["outcomes"]["sws_min"]["sd"] = {"participant_id": 15, "participant_id:period": 4}
    spec["hypotheses"][0]["random"] = [
        {"group": "participant_id"},
        {"group": "participant_id:period"},
    ]
    res = power_analysis(spec, n=[16], reps=8, seed=4, progress=False)
    assert res.table.loc[0, "engine"] == "studykit"
    a, b = _oracle_replicates(spec, 16, 8, 4), res.replicates
    assert a["singular"].tolist() == b["singular"].tolist()
    np.testing.assert_allclose(a["estimate"], b["estimate"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a["std_error"], b["std_error"], rtol=1e-5)
    np.testing.assert_allclose(a["df"], b["df"], rtol=1e-4)  # lmerTest's own tolerance
    np.testing.assert_allclose(a["p_value"], b["p_value"], rtol=1e-4, atol=1e-8)


# --------------------------------------------------------------------------- common random numbers
def test_first_participants_are_the_same_people_at_every_n():
    design = design_from_dict(TRIAL_SIM_EXAMPLE)
    small = simulate_replicate(design, 20, seed=5, rep=3)
    large = simulate_replicate(design, 40, seed=5, rep=3)
    # same participants (allocation interleaved), same draws: the 20-participant study is the
    # first 60 rows of the 40-participant one
    np.testing.assert_array_equal(small["sws_min"].to_numpy(), large["sws_min"].to_numpy()[:60])
    assert (small["treatment"] == large["treatment"][:60]).all()


def test_power_curve_monotone_in_n_up_to_mc_error():
    res = power_analysis(TRIAL_SIM_EXAMPLE, n=[20, 30, 40, 60], reps=200, seed=7, progress=False)
    p = res.table.sort_values("n")["power"].to_numpy()
    se = res.table.sort_values("n")["mc_se"].to_numpy()
    # with nested data a decrease can only come from replicates whose p-value rises as people
    # are added; it must stay within Monte Carlo error
    assert np.all(np.diff(p) > -2 * np.maximum(se[1:], 0.01))
    assert p[-1] > p[0]


# --------------------------------------------------------------------------- verdicts, assumptions
def test_verdict_probabilities_sum_to_one_and_power_is_supported():
    res = power_analysis(TRIAL_SIM_EXAMPLE, n=[40], reps=60, seed=2, progress=False)
    row = res.table.iloc[0]
    assert row.p_supported + row.p_ruled_out + row.p_inconclusive == pytest.approx(1.0)
    assert row.p_supported == pytest.approx(row.power)  # supported = adjusted p < alpha
    verdicts = set(res.replicates["verdict"])
    assert "supported" in verdicts and "inconclusive" in verdicts


def test_ruled_out_under_the_null_with_large_n():
    # effect 0, n = 200: the one-sided upper 97.5 % bound of the DiD (SE ~ 2.4) is below the
    # effect of interest 10 in almost every replicate -> "ruled out" (analysis.verdict rule)
    spec = copy.deepcopy(TRIAL_SIM_EXAMPLE)
    spec["outcomes"]["sws_min"]["coefficients"]["treatmentketamine:nightpost1"] = 0.0
    design = design_from_dict(spec)
    h = design.hypotheses[0]
    from dataclasses import replace

    design = replace(design, hypotheses=(replace(h, effect_of_interest=10.0),))
    res = power_analysis(design, n=[200], reps=40, seed=3, progress=False)
    assert res.table.iloc[0].p_ruled_out > 0.9


def test_every_output_records_the_assumptions(tmp_path):
    res = power_analysis(TRIAL_SIM_EXAMPLE, n=[20, 40], reps=10, seed=4, progress=False)
    paths = res.write(tmp_path)
    table = pd.read_csv(paths["table_csv"])
    assert {"assumed_effect", "true_model", "alpha", "adjust_method", "reps", "seed"} <= set(table)
    assert table["assumed_effect"].eq(10.0).all()  # TRIAL_SIM_EXAMPLE: DiD +10
    assert "SD participant_id=15, residual=12" in table["true_model"].iloc[0]
    md = Path(paths["table_md"]).read_text()
    assert "Assumptions simulated" in md and "Methods." in md and "seed 4" in md
    svg = Path(paths["figure_svg"]).read_text()
    assert "assumed effect 10" in svg and "seed 4" in svg


def test_pilot_run_says_effects_were_estimated_and_shows_their_uncertainty(trial):
    pilot = trial.rename(columns={"id": "participant_id", "arm": "treatment"})
    spec = copy.deepcopy({k: v for k, v in TRIAL_SIM_EXAMPLE.items() if k != "outcomes"})
    res = power_analysis(spec, pilot=pilot, n=[40], reps=3, seed=1, progress=False)
    a = res.assumptions().iloc[0]
    assert a.effect_origin.startswith("estimated from pilot data (40 participants")
    lo, hi = (float(x) for x in a.effect_pilot_ci.strip("[]").split(","))
    assert lo < a.assumed_effect < hi


# --------------------------------------------------------------------------- target power
def test_target_power_matches_the_analytic_sample_size():
    from studykit.power import did_power_balanced
    from studykit.power.samplesize import find_sample_size

    # TRIAL_SIM_EXAMPLE (parallel, DiD +10, residual SD 12, one-sided 0.025): the analytic
    # power (noncentral t, did_power_balanced) first reaches 0.8 at n = 2 x ...
    analytic = next(
        n for n in range(4, 400, 2)
        if did_power_balanced(n, effect=10, sd_residual=12, alpha=0.025)["power"] >= 0.8
    )  # fmt: skip
    res = find_sample_size(TRIAL_SIM_EXAMPLE, target_power=0.8, reps=300, seed=11, n_start=20)
    row = res.table.iloc[0]
    assert bool(row.reached)
    found = int(row.n_required)
    # the simulated answer is right up to Monte Carlo error (SE ~0.023 at 300 replicates):
    # the analytic power at the found n is not far below 0.8, and just below it not above
    assert did_power_balanced(found, effect=10, sd_residual=12)["power"] >= 0.8 - 2.5 * 0.023
    below = did_power_balanced(found - 2, effect=10, sd_residual=12)["power"]
    assert below <= 0.8 + 2.5 * 0.023
    assert abs(found - analytic) <= 12
    assert set(res.power.settings["n"]) >= {found}


def test_cli_target_power_writes_the_sample_size_table(tmp_path, capsys):
    design = tmp_path / "design.yaml"
    design.write_text(yaml.safe_dump(TRIAL_SIM_EXAMPLE))
    argv = ["power", str(design), "--target-power", "0.5", "--n", "20", "--reps", "40",
            "--n-max", "80", "--out", str(tmp_path / "out"), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    ss = pd.read_csv(tmp_path / "out" / "sample_size.csv")
    assert ss["target"].iloc[0].startswith("H1") and ss["reached"].iloc[0]
    assert (tmp_path / "out" / "power_assumptions.csv").exists()


# --------------------------------------------------------------------------- estimator comparison
def test_compare_estimators_common_random_numbers_and_efficiency():
    from studykit.power.compare import compare_estimators_by_simulation

    res = compare_estimators_by_simulation(
        PROTOCOL, EFFECTS, hypotheses=["H1"], n=24, reps=40, seed=3
    )
    t = res.table.set_index(["estimator", "scenario"])
    assert set(t.index.get_level_values(0)) == {"did", "clda", "ancova", "post_only"}
    # null scenario: same data but no treatment effect -> true effect 0; with common random
    # numbers the estimates differ by exactly the assumed effect for the linear estimators
    eff = t.loc[("clda", "effect")]
    null = t.loc[("clda", "null")]
    assert eff.true_effect == 8.0 and null.true_effect == 0.0
    assert eff.mean_estimate - null.mean_estimate == pytest.approx(8.0, abs=1e-6)
    # the DiD subtracts a noisy baseline: more variance than the constrained baseline
    assert t.loc[("did", "effect")].relative_variance == pytest.approx(1.0)
    assert t.loc[("clda", "effect")].relative_variance < 0.8


def test_estimator_override_analyses_with_studykit_estimators(tmp_path):
    res = power_analysis(
        PROTOCOL, effects=EFFECTS, hypotheses=["H1"], estimators={"H1": "clda"},
        n=[12], reps=3, seed=1, progress=False,
    )  # fmt: skip
    assert res.table["estimator"].tolist() == ["clda"]
    with pytest.raises(InputError, match="unknown estimator"):
        power_analysis(PROTOCOL, effects=EFFECTS, hypotheses=["H1"], estimators={"H1": "x"},
                       n=[12], reps=1, progress=False)  # fmt: skip
    argv = ["power", str(PROTOCOL), "--effects", str(EFFECTS), "--hypotheses", "H1",
            "--estimator", "H1", "--n", "12", "--reps", "1", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 2
