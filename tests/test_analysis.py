"""run_analysis with the project's engines: data building, exclusions, contrasts, multiplicity,
verdicts, the R reference trial, the simulated demo study end to end and the command line.

Models are fitted by the real engines (studykit.models.lmm.fit_lmm, studykit.models.glmm.fit_glmm)
and names are checked against the real data dictionary (studykit.dictionary.load_dictionary).
Estimates are compared with numbers computed independently of the analysis layer: cell means by
hand on balanced data, numpy correlations, the emmeans module on the same fitted model, and R
(lme4 / lmerTest / emmeans / glmer / glmmTMB) reference values copied below with provenance.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import studykit.analysis as A
from studykit.dictionary import load_dictionary
from studykit.errors import ProtocolError, ValidationError
from studykit.models.emmeans import did_contrast, emmeans
from studykit.models.multiplicity import adjust_pvalues
from studykit.protocol import load_protocol, parse_protocol
from studykit.protocol.plan import claim_verdict, verdict

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "protocols"
SHIPPED = ROOT / "protocols" / "ketamine_sleep.yaml"
#: Version 1.0 of the shipped protocol, archived byte for byte when 1.1 replaced it: difference
#: in differences for every DiD hypothesis, Holm in the confirmatory family, linear E3/E4, no
#: sensitivity section. The mechanics tests on hand-built studies run it (it exercises the
#: DiD / Holm paths); the shipped 1.1 is tested on the demo study below.
V10 = ROOT / "protocols" / "archive" / "ketamine_sleep_v1.0.yaml"
DD = load_dictionary()
PROTO = load_protocol(V10, dictionary=DD)
PROTO11 = load_protocol(SHIPPED, dictionary=DD)


# ------------------------------------------------------------------ study inputs built here
@dataclass
class HandStudy:
    """A study given as tables built in the test (the attributes run_analysis reads)."""

    roster: pd.DataFrame
    periods: pd.DataFrame
    nights: pd.DataFrame
    diary: pd.DataFrame
    epochs: pd.DataFrame | None = None
    simulated: bool = True


NIGHTS = ["baseline", "post1", "post2", "day7"]


def make_crossover(n=16, seed=7):
    """A complete, balanced crossover (SIMULATED here, for plumbing tests).

    Half the participants get ketamine in period 1 (sequence KP), half in period 2 (PK). Effects
    are loosely the LITERATURE assumptions (N3 +8 on post1 under ketamine ...).
    """
    rng = np.random.default_rng(seed)
    pids = [f"P{i + 1:02d}" for i in range(n)]
    seq = ["KP" if i % 2 == 0 else "PK" for i in range(n)]
    roster = pd.DataFrame(
        {
            "participant_id": pids,
            "sequence": seq,
            "age": rng.integers(20, 65, n),
            "sex": np.where(rng.random(n) < 0.5, "F", "M"),
            "madrs_baseline": rng.integers(20, 40, n),
            "status": "completed",
        }
    )
    prow, nrow, drow = [], [], []
    for pid, s in zip(pids, seq, strict=True):
        u = rng.normal(0, 20)
        for period in (1, 2):
            trt = "ketamine" if (s == "KP") == (period == 1) else "placebo"
            k = trt == "ketamine"
            v = rng.normal(0, 8)
            m0 = int(rng.integers(20, 40))
            dn3 = 0.0
            for night, idx in zip(NIGHTS, [0, 1, 2, 7], strict=True):
                eff = 8.0 if (k and night == "post1") else 0.0
                n3 = max(0.0, 60 + u + v + eff + rng.normal(0, 10))
                if night == "baseline":
                    n3_base = n3
                if night == "post1":
                    dn3 = n3 - n3_base
                nrow.append(
                    {
                        "participant_id": pid,
                        "period": period,
                        "night": night,
                        "night_index": idx,
                        "treatment": trt,
                        "n3_min": n3,
                        "tst_min": 360 + u + v + (10.0 if k and night == "post1" else 0) + rng.normal(0, 40),
                        "rem_min": 70 + rng.normal(0, 15),
                        "sol_min": max(0.0, 18 + (5.0 if k and night == "post1" else 0) + rng.normal(0, 6)),
                        "waso_min": max(0.0, 70 + rng.normal(0, 20)),
                        "n_awakenings": int(rng.poisson(20 * (0.85 if k and night == "post1" else 1))),
                    }
                )  # fmt: skip
            prow.append(
                {
                    "participant_id": pid,
                    "period": period,
                    "treatment": trt,
                    "sedative_use": False,
                    "alcohol_use": False,
                    "madrs_day0": m0,
                    "madrs_day1": m0 - (6 if k else 1) - 0.2 * dn3 + rng.normal(0, 3),
                }
            )
            for day in range(5):
                bump = {1: 1.5, 2: 0.7, 3: 0.2}.get(day, 0.0) if k else 0.0
                drow.append(
                    {
                        "participant_id": pid,
                        "period": period,
                        "day": day,
                        "kss": float(np.clip(np.round(4 + bump + rng.normal(0, 1)), 1, 9)),
                        "dream_vividness": float(np.clip(np.round(1.5 + (0.8 if k and day == 1 else 0) + rng.normal(0, 1)), 0, 4)),
                        "nightmares": int(rng.poisson(0.5 * (1.8 if k and day == 1 else 1))),
                    }
                )  # fmt: skip
    return HandStudy(roster, pd.DataFrame(prow), pd.DataFrame(nrow), pd.DataFrame(drow))


@pytest.fixture(scope="module")
def study():
    return make_crossover()


@pytest.fixture(scope="module")
def results(study):
    return A.run_analysis(PROTO, study)


def hand_did(df, outcome, time_var, level, ref):
    """(ket[level] - ket[ref]) - (pla[level] - pla[ref]) from raw cell means."""
    m = df.groupby(["treatment", time_var])[outcome].mean()
    return (m["ketamine", level] - m["ketamine", ref]) - (m["placebo", level] - m["placebo", ref])


def ref_quantile(df, level=0.95):
    """Two-sided quantile of the row's reference distribution (t with df, or normal)."""
    return stats.norm.ppf(0.5 + level / 2) if np.isinf(df) else stats.t.ppf(0.5 + level / 2, df)


# ------------------------------------------------------------------ table shape
def test_columns_exactly_as_architecture(results):
    assert list(results.hypotheses.columns) == A.HYPOTHESIS_COLUMNS
    assert len(A.HYPOTHESIS_COLUMNS) == 43


def test_one_row_per_hypothesis_and_contrast(results):
    ids = list(results.hypotheses["hypothesis_id"])
    # E3 has three contrasts (days 1, 2, 3)
    assert ids == ["H1", "H2", "H3", "E1", "E2", "E3", "E3", "E3", "E4", "E5", "E6", "E7"]


def test_protocol_hash_and_simulated_in_every_row(results):
    assert (results.hypotheses["protocol_sha256"] == PROTO.sha256).all()
    assert (results.hypotheses["protocol_id"] == "ketamine_sleep").all()
    assert results.hypotheses["simulated"].all()


def test_simulated_flag_can_be_overridden(study):
    res = A.run_analysis(PROTO, study, simulated=False, hypotheses=["E1"])
    assert not res.hypotheses["simulated"].any()


# ------------------------------------------------------------------ estimates
@pytest.mark.parametrize("hid", ["H1", "H3", "E1", "E2", "E6"])
def test_did_equals_cell_mean_did_on_balanced_data(results, study, hid):
    # complete, balanced crossover: GLS = OLS and the model DiD equals the raw DiD of means
    h = PROTO.get(hid)
    row = results.hypotheses.set_index("hypothesis_id").loc[hid]
    expected = hand_did(study.nights, h.outcome, "night", "post1", "baseline")
    assert row["estimate"] == pytest.approx(expected, rel=1e-6)
    assert row["n_ketamine"] == row["n_placebo"] == row["n_participants"] == 16
    assert row["n_observations"] == 16 * 2 * 4


def test_diary_contrasts_per_day(results, study):
    rows = results.hypotheses[results.hypotheses["hypothesis_id"] == "E3"]
    diary = study.diary.merge(study.periods[["participant_id", "period", "treatment"]])
    for day, est in zip([1, 2, 3], rows["estimate"], strict=True):
        assert est == pytest.approx(hand_did(diary, "kss", "day", day, 0), rel=1e-6)
    assert rows["contrast"].str.endswith(("1", "2", "3")).all()


def test_p_value_and_interval_follow_direction(results):
    # t with the row's (Satterthwaite) df for the LMM rows, normal for z rows
    for _, r in results.hypotheses.iterrows():
        if r["scale"] != "difference":
            continue
        assert np.isfinite(r["df"]) and r["df_method"] == "satterthwaite"
        dist = stats.t(r["df"])
        z = r["estimate"] / r["std_error"]
        assert r["statistic"] == pytest.approx(z)
        expected = {
            "greater": dist.sf(z),
            "less": dist.cdf(z),
            "two-sided": 2 * dist.sf(abs(z)),
        }[r["alternative"]]
        assert r["p_value"] == pytest.approx(expected)
        q = ref_quantile(r["df"])  # 95% two-sided interval (conf_level 0.95)
        assert r["conf_low"] == pytest.approx(r["estimate"] - q * r["std_error"])
        assert r["conf_level"] == pytest.approx(0.95)


@pytest.mark.parametrize("hid", ["H1", "E1", "E2"])
def test_did_matches_emmeans_module_on_the_same_model(results, hid):
    # the analysis layer builds its own contrast rows; emmeans.did_contrast builds them from
    # the reference grid independently: same estimate, SE and Satterthwaite df
    fit = results.fit(hid)
    ref = did_contrast(fit.model, treatment="treatment", time="night", at_times=["post1"])
    row = results.hypotheses.set_index("hypothesis_id").loc[hid]
    assert row["estimate"] == pytest.approx(ref["estimate"].iloc[0], rel=1e-10)
    assert row["std_error"] == pytest.approx(ref["std_error"].iloc[0], rel=1e-10)
    assert row["df"] == pytest.approx(ref["df"].iloc[0], rel=1e-10)


def test_counts_are_rate_ratios_tested_on_log_scale(results):
    # H2: negative-binomial GLMM (participant random intercept, Laplace), Wald z on the log scale
    r = results.hypotheses.set_index("hypothesis_id").loc["H2"]
    assert r["scale"] == "rate ratio" and r["family"] == "negbin"
    assert r["df"] == np.inf and r["df_method"] == "z (asymptotic Wald)"
    log_rr = math.log(r["estimate"])
    assert r["statistic"] == pytest.approx(log_rr / r["std_error"])
    assert r["p_value"] == pytest.approx(stats.norm.cdf(r["statistic"]))  # direction "less"
    q = stats.norm.ppf(0.975)
    assert r["conf_low"] == pytest.approx(math.exp(log_rr - q * r["std_error"]))
    assert r["conf_high"] == pytest.approx(math.exp(log_rr + q * r["std_error"]))
    # the same ratio of rate ratios from the emmeans module on the fitted GLMM
    model = results.fit("H2").model
    assert model.family == "negbin" and model.converged
    ref = did_contrast(
        model, treatment="treatment", time="night", at_times=["post1"], type="response"
    )
    assert r["estimate"] == pytest.approx(ref["estimate"].iloc[0], rel=1e-10)
    assert ref["df_method"].iloc[0] == "z"
    # and close to the ratio of raw cell-mean ratios (balanced data, no period imbalance)
    s = make_crossover()
    m = s.nights.groupby(["treatment", "night"])["n_awakenings"].mean()
    raw = (m["ketamine", "post1"] / m["ketamine", "baseline"]) / (
        m["placebo", "post1"] / m["placebo", "baseline"]
    )
    assert r["estimate"] == pytest.approx(raw, rel=0.02)


def test_correlation_hypothesis(results, study):
    # E7: changes computed here independently of the analysis code
    n = study.nights.set_index(["participant_id", "period", "night"])["n3_min"].unstack()
    dn3 = (n["post1"] - n["baseline"]).rename("dn3")
    per = study.periods.set_index(["participant_id", "period"])
    ket = per[per["treatment"] == "ketamine"]
    dm = (ket["madrs_day1"] - ket["madrs_day0"]).rename("dm")
    both = pd.concat([dm, dn3], axis=1, join="inner")
    r_expected = np.corrcoef(both["dn3"], both["dm"])[0, 1]
    row = results.hypotheses.set_index("hypothesis_id").loc["E7"]
    assert row["estimate"] == pytest.approx(r_expected)
    assert row["n_observations"] == 16 and row["df"] == 14
    z, h = math.atanh(r_expected), stats.norm.ppf(0.975) / math.sqrt(16 - 3)
    assert row["conf_low"] == pytest.approx(math.tanh(z - h))
    assert row["conf_high"] == pytest.approx(math.tanh(z + h))
    t = r_expected * math.sqrt(14) / math.sqrt(1 - r_expected**2)
    assert row["p_value"] == pytest.approx(stats.t.cdf(t, 14))


def test_emmeans_and_coefficients_kept_for_figures(results, study):
    fit = results.fit("H1")
    emm = fit.emmeans
    assert list(emm["treatment"].unique()) == ["placebo", "ketamine"]
    assert list(emm["night"].unique()) == ["baseline", "post1", "post2", "day7"]
    # cell means of a balanced design, period averaged with equal weights = raw cell means
    raw = study.nights.groupby(["treatment", "night"])["n3_min"].mean()
    ref = emmeans(fit.model, ["treatment", "night"]).set_index(["treatment", "night"])
    for _, r in emm.iterrows():
        assert r["estimate"] == pytest.approx(raw[r["treatment"], r["night"]], rel=1e-6)
        cell = ref.loc[(r["treatment"], r["night"])]
        assert r["std_error"] == pytest.approx(cell["std_error"], rel=1e-10)
        assert r["df"] == pytest.approx(cell["df"], rel=1e-10)
    assert fit.coefficients is not None and "term" in fit.coefficients
    assert fit.model.columns[:2] == ["(Intercept)", "treatmentketamine"]


def test_long_emmeans_table(results):
    em = results.emmeans
    assert list(em.columns[:5]) == [
        "hypothesis_id",
        "outcome",
        "treatment",
        "time_variable",
        "time",
    ]
    # 8 nights cells for H1, H2, H3, E1, E2, E6; 10 day cells for E3, E4, E5; none for E7
    assert em.groupby("hypothesis_id", sort=False).size().to_dict() == {
        "H1": 8, "H2": 8, "H3": 8, "E1": 8, "E2": 8, "E3": 10, "E4": 10, "E5": 10, "E6": 8,
    }  # fmt: skip
    assert set(em.loc[em["hypothesis_id"] == "H2", "scale"]) == {"rate"}
    assert em.loc[em["hypothesis_id"] == "E3", "time"].tolist()[:5] == ["0", "1", "2", "3", "4"]


def test_effect_size_is_d_z_of_within_participant_differences(results, study):
    # d_z (Lakens 2013): the estimate over the SD of each participant's own
    # difference-in-differences, computed here from the nights table by hand
    r = results.hypotheses.set_index("hypothesis_id").loc["H1"]
    n = study.nights.assign(n3=pd.to_numeric(study.nights["n3_min"]))
    cell = n.pivot_table(index="participant_id", columns=["treatment", "night"], values="n3")
    did = (
        cell[("ketamine", "post1")]
        - cell[("ketamine", "baseline")]
        - cell[("placebo", "post1")]
        + cell[("placebo", "baseline")]
    ).dropna()
    assert r["effect_size"] == pytest.approx(r["estimate"] / did.std(ddof=1))
    assert r["effect_size_definition"].startswith("d_z: estimate / SD of the participants' own")
    assert f"n = {len(did)} participants" in r["effect_size_definition"]


def test_no_effect_size_for_counts_and_correlations(results):
    t = results.hypotheses.set_index("hypothesis_id")
    for hid in ("H2", "E5", "E7"):
        assert math.isnan(t.loc[hid, "effect_size"])
        assert t.loc[hid, "effect_size_definition"].startswith("none:")


def test_claim_verdict_combines_a_claims_rows(results):
    t = results.hypotheses
    for _claim, g in t.groupby("claim_id"):
        assert g["claim_verdict"].nunique() == 1
        roles = g["role"].tolist()
        assert g["claim_verdict"].iloc[0] == claim_verdict(g["verdict"].tolist(), roles)
    assert set(t["analysis"]) == {"primary"}


@pytest.mark.parametrize(
    ("verdicts", "roles", "expected"),
    [
        (["supported", "effect ruled out"], ["exploratory"] * 2, "supported (exploratory)"),
        (["effect ruled out"] * 3, ["exploratory"] * 3, "effect ruled out (exploratory)"),
        (["inconclusive", "effect ruled out"], ["exploratory"] * 2, "inconclusive (exploratory)"),
        # a confirmatory row decides; the exploratory one does not count
        (["inconclusive", "supported"], ["confirmatory", "exploratory"], "inconclusive"),
        (["supported", "effect ruled out"], ["confirmatory", "exploratory"], "supported"),
    ],
)
def test_claim_verdict_rule(verdicts, roles, expected):
    assert claim_verdict(verdicts, roles) == expected


def test_ruling_out_uses_the_simultaneous_interval():
    # H1-H3 are a Holm family of 3: an effect is ruled out only when the Bonferroni
    # simultaneous interval excludes it. Check every confirmatory 'effect ruled out' /
    # 'inconclusive' row against the adjusted interval of models.multiplicity.
    s = make_crossover()
    res = A.run_analysis(PROTO, s, hypotheses=["H1", "H2", "H3"])
    adj = res.adjusted_intervals().set_index("hypothesis_id")
    t = res.hypotheses.set_index("hypothesis_id")
    for hid in ("H1", "H3"):
        d = PROTO.get(hid).effect_of_interest
        ruled_out = adj.loc[hid, "conf_high_adjusted"] < d
        if t.loc[hid, "verdict"] != "supported":
            assert (t.loc[hid, "verdict"] == "effect ruled out") == ruled_out
    assert "multiplicity-adjusted (simultaneous Bonferroni) interval" in t.loc["H1", "verdict_rule"]


def test_per_protocol_correlation_keeps_participants_with_both_treatments(demo_dir):
    # issue #14: E7 uses ketamine periods only; the per-protocol 'observed under both
    # treatments' must look at the participant's periods, not at the ketamine rows
    from studykit.validate import load_study

    pp = A.run_analysis(PROTO, load_study(demo_dir), hypotheses=["E7"], analysis_set="per_protocol")
    r = pp.hypotheses.iloc[0]
    assert r["n_participants"] > 20 and not math.isnan(r["estimate"])
    assert r["analysis"] == "per_protocol"


# ------------------------------------------------------------------ multiplicity
def test_holm_within_confirmatory_family(results):
    t = results.hypotheses
    conf = t[t["multiplicity_family"] == "confirmatory"]
    np.testing.assert_allclose(conf["p_adjusted"], adjust_pvalues(conf["p_value"], "holm"))
    expl = t[t["multiplicity_family"] == "exploratory"]
    np.testing.assert_allclose(expl["p_adjusted"], expl["p_value"])
    assert set(conf["adjust_method"]) == {"holm"} and set(expl["adjust_method"]) == {"none"}


def test_subset_keeps_family_adjustment(results, study):
    sub = A.run_analysis(PROTO, study, hypotheses=["H3"])
    assert list(sub.hypotheses["hypothesis_id"]) == ["H3"]
    full = results.hypotheses.set_index("hypothesis_id").loc["H3"]
    assert sub.hypotheses.loc[0, "p_adjusted"] == pytest.approx(full["p_adjusted"])


def test_unknown_hypothesis_subset(study):
    with pytest.raises(ProtocolError, match="no hypothesis 'H7'"):
        A.run_analysis(PROTO, study, hypotheses=["H7"])


def test_adjusted_intervals_bonferroni(results):
    ai = results.adjusted_intervals().set_index("hypothesis_id")
    r = results.hypotheses.set_index("hypothesis_id").loc["H1"]
    level = 1 - 2 * 0.025 / 3
    q = ref_quantile(r["df"], level)
    assert ai.loc["H1", "conf_level_adjusted"] == pytest.approx(level)
    assert ai.loc["H1", "conf_low_adjusted"] == pytest.approx(r["estimate"] - q * r["std_error"])
    assert ai.loc["E1", "ci_adjustment"] == "unadjusted"


def test_failed_fit_is_inconclusive_and_counts_in_family():
    # no awakenings at all in the ketamine/post1 cell: the ML log rate ratio is infinite and
    # the GLMM engine refuses the fit (a real failure, not a stand-in)
    s = make_crossover()
    cell = (s.nights["treatment"] == "ketamine") & (s.nights["night"] == "post1")
    s.nights.loc[cell, "n_awakenings"] = 0
    res = A.run_analysis(PROTO, s, hypotheses=["H1", "H2", "H3"])
    t = res.hypotheses.set_index("hypothesis_id")
    assert t.loc["H2", "verdict"] == "inconclusive"
    assert math.isnan(t.loc["H2", "p_value"]) and math.isnan(t.loc["H2", "p_adjusted"])
    assert "model could not be fitted" in t.loc["H2", "warnings"]
    assert not t.loc["H2", "converged"]
    assert res.fit("H2").model is None and res.fit("H2").error
    # H2 enters Holm with p = 1: the family still has 3 members
    p = [t.loc["H1", "p_value"], 1.0, t.loc["H3", "p_value"]]
    np.testing.assert_allclose(
        t.loc[["H1", "H3"], "p_adjusted"], adjust_pvalues(p, "holm")[[0, 2]], rtol=1e-12
    )


# ------------------------------------------------------------------ exclusions
def test_sedative_period_excluded_with_reason(study):
    s = make_crossover()
    s.periods.loc[
        (s.periods["participant_id"] == "P03") & (s.periods["period"] == 2), "sedative_use"
    ] = True
    s.nights.loc[
        (s.nights["participant_id"] == "P05") & (s.nights["night"] == "post2"), "n3_min"
    ] = np.nan
    res = A.run_analysis(PROTO, s, hypotheses=["H1"])
    r = res.hypotheses.loc[0]
    assert r["n_excluded"] == 4 + 2  # 4 nights of P03 period 2, P05's two post2 nights
    assert r["n_observations"] == 128 - 6
    assert (
        "sedative use within 72 h of the infusion (hypothetical strategy: period excluded): 4 obs"
        in r["excluded_reasons"]
    )
    assert "n3_min missing: 2 obs (2 participant-periods, 1 participants)" in r["excluded_reasons"]
    ex = res.exclusions()
    assert set(ex.columns) == {
        "hypothesis_id",
        "participant_id",
        "period",
        "n_observations",
        "reason",
    }
    assert ex[ex["participant_id"] == "P03"]["period"].tolist() == ["2"]
    # P03 keeps the other period: still counted in both arms? P03 is KP -> period 2 placebo
    assert r["n_ketamine"] == 16 and r["n_placebo"] == 15
    # inputs not modified
    assert s.nights["n3_min"].isna().sum() == 2
    assert "_period" not in s.nights.columns


def test_withdrawn_excluded_only_in_per_protocol_set(study):
    s = make_crossover()
    s.roster.loc[s.roster["participant_id"] == "P02", "status"] = "withdrawn"
    r_fas = A.run_analysis(PROTO, s, hypotheses=["H1"]).hypotheses.loc[0]
    r_pp = A.run_analysis(PROTO, s, hypotheses=["H1"], analysis_set="per_protocol").hypotheses.loc[
        0
    ]
    assert r_fas["n_participants"] == 16 and r_fas["n_excluded"] == 0
    assert r_pp["n_participants"] == 15 and r_pp["n_excluded"] == 8
    assert "status withdrawn (analysis set per_protocol)" in r_pp["excluded_reasons"]


def test_per_protocol_leaves_out_flagged_nights():
    s = make_crossover()
    s.nights["quality_flag"] = False
    post2 = s.nights.index[s.nights["night"].astype(str) == "post2"][0]
    s.nights.loc[post2, "quality_flag"] = True  # one post2 night with > 10 % artefact
    r_fas = A.run_analysis(PROTO, s, hypotheses=["H1"]).hypotheses.loc[0]
    r_pp = A.run_analysis(PROTO, s, hypotheses=["H1"], analysis_set="per_protocol").hypotheses.loc[
        0
    ]
    assert r_fas["n_excluded"] == 0  # the full analysis set keeps flagged nights
    assert r_pp["n_observations"] == r_fas["n_observations"] - 1
    assert "quality_flag; analysis set per_protocol" in r_pp["excluded_reasons"]


def test_missing_code_is_missing_and_invalid_values_refused():
    s = make_crossover()
    s.diary.loc[3, "kss"] = -99  # the dictionary's missing-value code for kss
    r = A.run_analysis(PROTO, s, hypotheses=["E3"]).hypotheses.iloc[0]
    assert r["n_excluded"] == 1 and r["n_observations"] == 159
    assert "kss missing (missing-value code): 1 obs" in r["excluded_reasons"]
    s.diary.loc[4, "kss"] = 12  # outside the dictionary range 1-9: data not validated
    with pytest.raises(ValidationError, match="outcome 'kss' has values outside.*12.*load_study"):
        A.run_analysis(PROTO, s, hypotheses=["E3"])


def test_window_level_without_data_is_dropped_with_a_note(study):
    # the demo design records baseline, post1, post2 only; the protocol's window adds day7
    s = make_crossover()
    s.nights = s.nights[s.nights["night"] != "day7"].reset_index(drop=True)
    res = A.run_analysis(PROTO, s, hypotheses=["H1"])
    r = res.hypotheses.iloc[0]
    assert "night level(s) ['day7'] of the protocol's window have no observations" in r["warnings"]
    assert r["estimate"] == pytest.approx(
        hand_did(s.nights, "n3_min", "night", "post1", "baseline"), rel=1e-6
    )
    assert list(res.fit("H1").emmeans["night"].unique()) == ["baseline", "post1", "post2"]


def test_window_rows_not_counted_as_exclusions():
    s = make_crossover()
    extra = s.diary[s.diary["day"] == 4].assign(day=6)
    s.diary = pd.concat([s.diary, extra], ignore_index=True)
    r = A.run_analysis(PROTO, s, hypotheses=["E3"]).hypotheses.iloc[0]
    assert r["n_excluded"] == 0 and r["n_observations"] == 160
    assert "outside the modelled day window" in r["warnings"]


def test_missing_outcome_column_is_a_clear_error():
    s = make_crossover()
    s.nights = s.nights.drop(columns="n3_min")
    with pytest.raises(ProtocolError, match="needs column\\(s\\) n3_min.*studykit derive"):
        A.run_analysis(PROTO, s, hypotheses=["H1"])


def test_missing_table_is_a_clear_error():
    s = make_crossover()
    s.diary = None
    with pytest.raises(ProtocolError, match="no 'diary' table"):
        A.run_analysis(PROTO, s, hypotheses=["E3"])


def test_arm_without_data_is_inconclusive():
    s = make_crossover()
    s.nights = s.nights[~((s.nights["treatment"] == "ketamine") & (s.nights["night"] == "post1"))]
    r = A.run_analysis(PROTO, s, hypotheses=["E2"]).hypotheses.iloc[0]
    assert r["verdict"] == "inconclusive"
    assert "no observations left in cell(s) ketamine/post1" in r["warnings"]
    assert "not estimable" in r["warnings"]


# ------------------------------------------------------------------ verdicts
@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        (dict(p_adjusted=0.01, conf_low=1, conf_high=20, direction="greater"), "supported"),
        (dict(p_adjusted=0.03, conf_low=-1, conf_high=20, direction="greater"), "inconclusive"),
        (dict(p_adjusted=0.5, conf_low=-9, conf_high=4.9, direction="greater"), "effect ruled out"),
        # significant in the opposite direction and excluding +5: effect ruled out
        (
            dict(p_adjusted=0.999, conf_low=-20, conf_high=-3, direction="greater"),
            "effect ruled out",
        ),
        (dict(p_adjusted=0.5, conf_low=-4.9, conf_high=9, direction="less"), "effect ruled out"),
        (dict(p_adjusted=0.5, conf_low=-5.1, conf_high=9, direction="less"), "inconclusive"),
        (dict(p_adjusted=0.2, conf_low=-4, conf_high=4, direction="two-sided"), "effect ruled out"),
        (dict(p_adjusted=0.2, conf_low=-6, conf_high=4, direction="two-sided"), "inconclusive"),
        (dict(p_adjusted=0.01, conf_low=-20, conf_high=-6, direction="two-sided"), "supported"),
        (
            dict(p_adjusted=float("nan"), conf_low=1, conf_high=2, direction="greater"),
            "inconclusive",
        ),
    ],
)
def test_verdict_difference(kw, expected):
    assert verdict(alpha=0.025, effect_of_interest=5, scale="difference", **kw) == expected


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        (dict(p_adjusted=0.01, conf_low=0.6, conf_high=0.95, direction="less"), "supported"),
        (dict(p_adjusted=0.3, conf_low=0.91, conf_high=1.2, direction="less"), "effect ruled out"),
        (dict(p_adjusted=0.3, conf_low=0.85, conf_high=1.2, direction="less"), "inconclusive"),
        (
            dict(p_adjusted=0.3, conf_low=0.92, conf_high=1.05, direction="two-sided"),
            "effect ruled out",
        ),
        (dict(p_adjusted=0.3, conf_low=0.92, conf_high=1.2, direction="two-sided"), "inconclusive"),
    ],
)
def test_verdict_rate_ratio(kw, expected):
    assert verdict(alpha=0.025, effect_of_interest=0.9, scale="rate ratio", **kw) == expected


def test_unconverged_is_inconclusive():
    v = verdict(
        p_adjusted=0.001, alpha=0.025, conf_low=1, conf_high=2, direction="greater",
        effect_of_interest=5, scale="difference", usable=False,
    )  # fmt: skip
    assert v == "inconclusive"


def test_verdicts_follow_rule_in_table(results):
    for _, r in results.hypotheses.iterrows():
        h = PROTO.get(r["hypothesis_id"])
        assert r["verdict"] in ("supported", "effect ruled out", "inconclusive")
        if r["verdict"] == "supported":
            assert r["p_adjusted"] < h.alpha
        assert r["verdict_rule"] == h.verdict_rule


# ------------------------------------------------------------------ R reference (trial_sim)
# R 4.2.2, lme4 1.1-31, lmerTest 3.1-3, emmeans 1.8.4, glmmTMB 1.1.5 on trial_sim.csv
# (tests/data/protocols/README.md). Tolerances: shared/reference/lme4/README.md.
#
# shared/reference/lme4/trial_hypotheses.csv (lmer(y ~ arm*night + (1|id)), REML; emmeans
# difference-in-differences "ketamine-placebo change from baseline at post1/post2",
# Satterthwaite df; glmer(awakenings ~ arm*night + (1|id), poisson) Laplace, Wald z):
#   columns estimate, se, df, p (one-sided for H1 / H2, two-sided for H3)
R_HYP = {
    "H1": [
        (11.9250000000005, 5.33521481268617, 76.000000735389, 0.014172271575671),
        (2.87500000000054, 5.33521481268617, 76.0000007377968, 0.295774966035697),
    ],
    "H3": [
        (-4.80000000000011, 7.93264681935122, 76.0000004508782, 0.546918846120176),
        (-2.50000000000011, 7.93264681935122, 76.0000004540393, 0.753508943622508),
    ],
    # log rate-ratio scale; df Inf
    "H2": [
        (-0.283554308358006, 0.118033770862518, math.inf, 0.00814583448027639),
        (-0.0333911632389985, 0.115473533117272, math.inf, 0.386226698824751),
    ],
}
# shared/reference/lme4/trial_contrasts.csv, sws_lmer_reml satterthwaite DiD rows: 95% CI
R_SWS_CI = [(1.29899879266578, 22.5510012073353), (-7.75100120732877, 13.5010012073299)]
# shared/reference/lme4/trial_glmmTMB.csv: glmmTMB(awakenings ~ arm*night + (1|id), poisson),
# coefficient armketamine:nightpost1 (= the DiD in this parameterization): estimate, se
R_TMB_POST1 = (-0.283544298438152, 0.11848447952551)
# shared/reference/lme4/trial_emmeans.csv, sws_lmer_reml satterthwaite: arm, night, estimate,
# se, df; awakenings_glmer_poisson_laplace response(rate): arm, night, rate, se
R_EMM_SWS = [
    ("placebo", "baseline", 92.8250000000008, 4.09925916995088, 68.4787384592382),
    ("ketamine", "baseline", 88.5249999999996, 4.09925916995086, 68.478738452536),
    ("placebo", "post1", 87.2500000000004, 4.09925916995087, 68.4787384440849),
    ("ketamine", "post1", 94.8749999999998, 4.09925916995087, 68.4787384418136),
    ("placebo", "post2", 91.1750000000004, 4.09925916995087, 68.4787384414629),
    ("ketamine", "post2", 89.7499999999998, 4.09925916995087, 68.4787384392767),
]
R_EMM_AWAK = [
    ("placebo", "baseline", 14.3412551329189, 1.34169990164927),
    ("ketamine", "baseline", 14.7637094743819, 1.37424698690488),
    ("placebo", "post1", 14.4356597875153, 1.34888364418463),
    ("ketamine", "post1", 11.1917730597375, 1.10146152503741),
    ("placebo", "post2", 13.7280964983453, 1.29499174359263),
    ("ketamine", "post2", 13.6683802967874, 1.29098497750565),
]


def trial_study():
    """The R reference trial (SIMULATED, tests/data/protocols/trial_sim.csv) as a study."""
    df = pd.read_csv(DATA / "trial_sim.csv")
    nights = pd.DataFrame(
        {
            "participant_id": df["id"],
            "period": 1,
            "night": df["night"],
            "night_index": df["night_index"],
            "treatment": df["arm"],
            "n3_min": df["sws_min"],
            "rem_min": df["rem_min"],
            "n_awakenings": df["awakenings"],
        }
    )
    arms = df.drop_duplicates("id")
    periods = pd.DataFrame(
        {"participant_id": arms["id"], "period": 1, "treatment": arms["arm"], "sedative_use": False}
    )
    roster = pd.DataFrame(
        {
            "participant_id": arms["id"],
            "sequence": np.where(arms["arm"] == "ketamine", "K", "P"),
            "status": "completed",
        }
    )
    return HandStudy(roster, periods, nights, pd.DataFrame(), simulated=True)


@pytest.fixture(scope="module")
def trial():
    return A.run_analysis(load_protocol(DATA / "trial_sim.yaml", dictionary=DD), trial_study())


def test_trial_lmm_hypotheses_match_lmertest_emmeans(trial):
    t = trial.hypotheses
    for hid in ("H1", "H3"):
        rows = t[t["hypothesis_id"] == hid]
        ref = np.array(R_HYP[hid])
        np.testing.assert_allclose(rows["estimate"], ref[:, 0], rtol=1e-6)
        np.testing.assert_allclose(rows["std_error"], ref[:, 1], rtol=1e-3)
        np.testing.assert_allclose(rows["df"], ref[:, 2], rtol=1e-4)
        np.testing.assert_allclose(rows["p_value"], ref[:, 3], rtol=1e-3)
        assert (rows["df_method"] == "satterthwaite").all()
        assert rows["converged"].all() and not rows["singular"].any()
    h1 = t[t["hypothesis_id"] == "H1"]
    assert (h1["alternative"] == "greater").all()  # one-sided p, two-sided 95% CI as in R
    np.testing.assert_allclose(h1["conf_low"], [lo for lo, _ in R_SWS_CI], rtol=1e-3)
    np.testing.assert_allclose(h1["conf_high"], [hi for _, hi in R_SWS_CI], rtol=1e-3)
    assert (t["n_ketamine"] == 20).all() and (t["n_placebo"] == 20).all()
    assert (t["n_observations"] == 120).all() and (t["n_excluded"] == 0).all()


def test_kenward_roger_df_method_matches_pbkrtest(tmp_path):
    # Same trial protocol with defaults.df_method: kenward-roger. R reference:
    # shared/reference/lme4/trial_contrasts.csv, sws_lmer_reml, df_method kenward-roger
    # (pbkrtest 0.5.2 via emmeans 1.8.4, lmer REML): DiD at post1 / post2.
    text = (DATA / "trial_sim.yaml").read_text()
    text = text.replace(
        "schema_version: 1\n", "schema_version: 1\ndefaults: {df_method: kenward-roger}\n"
    )
    path = tmp_path / "trial_kr.yaml"
    path.write_text(text)
    res = A.run_analysis(load_protocol(path, dictionary=DD), trial_study(), hypotheses=["H1"])
    h1 = res.hypotheses[res.hypotheses["hypothesis_id"] == "H1"]
    assert (h1["df_method"] == "kenward-roger").all()
    np.testing.assert_allclose(h1["std_error"], [5.33521481268617] * 2, rtol=1e-3)
    np.testing.assert_allclose(h1["df"], [75.9999999999999, 76.0000000000003], rtol=1e-4)
    # two-sided p from R, halved for the one-sided (greater) test with a positive t
    np.testing.assert_allclose(
        h1["p_value"], [0.0283445431801688 / 2, 0.591549932086651 / 2], rtol=1e-3
    )


def test_trial_poisson_hypothesis_matches_glmer(trial):
    rows = trial.hypotheses[trial.hypotheses["hypothesis_id"] == "H2"]
    ref = np.array(R_HYP["H2"])
    log_rr = np.log(rows["estimate"].to_numpy())
    # README: Poisson GLMM log-scale estimates atol 1e-4, SEs rtol 5e-3 (glmer's Laplace and
    # glmmTMB differ by that much); the p-values follow the SEs, so compare them on the log
    # scale with a tolerance of the same order
    np.testing.assert_allclose(log_rr, ref[:, 0], atol=1e-4, rtol=0)
    np.testing.assert_allclose(rows["std_error"], ref[:, 1], rtol=5e-3)
    np.testing.assert_allclose(np.log(rows["p_value"]), np.log(ref[:, 3]), rtol=1e-2)
    assert np.isinf(rows["df"]).all() and (rows["df_method"] == "z (asymptotic Wald)").all()
    # glmmTMB's Laplace fit of the same model agrees more closely (its SE is computed like ours)
    assert log_rr[0] == pytest.approx(R_TMB_POST1[0], abs=2e-5)
    assert rows["std_error"].iloc[0] == pytest.approx(R_TMB_POST1[1], rel=1e-4)
    assert rows["scale"].iloc[0] == "rate ratio"
    # the confirmatory family here has 4 rows (H1 and H2 at post1 and post2): H2 post1 has the
    # smallest p, Holm multiplies it by 4 (0.0334 > 0.025) and its CI still includes 0.9
    assert rows["p_adjusted"].iloc[0] == pytest.approx(4 * rows["p_value"].iloc[0])
    assert rows["verdict"].iloc[0] == "inconclusive"


def test_trial_emmeans_match_r(trial):
    emm = trial.fit("H1").emmeans.set_index(["treatment", "night"])
    for arm, night, est, se, df in R_EMM_SWS:
        row = emm.loc[(arm, night)]
        assert row["estimate"] == pytest.approx(est, rel=1e-6)
        assert row["std_error"] == pytest.approx(se, rel=1e-3)
        assert row["df"] == pytest.approx(df, rel=1e-4)
    rates = trial.fit("H2").emmeans.set_index(["treatment", "night"])
    assert (rates["scale"] == "rate").all()
    for arm, night, rate, se in R_EMM_AWAK:
        row = rates.loc[(arm, night)]
        assert math.log(row["estimate"]) == pytest.approx(math.log(rate), abs=1e-4)
        assert row["std_error"] == pytest.approx(se, rel=5e-3)


def test_emmeans_module_labels_glmm_rows_z(trial):
    # a count GLMM has Wald z tests (df = inf): the emmeans module must say "z", not
    # "satterthwaite", even with its default df_method
    from studykit.models.emmeans import emm_contrast

    model = trial.fit("H2").model
    for tab in (
        emmeans(model, ["treatment", "night"]),
        emmeans(model, "treatment", type="response"),
        did_contrast(model, treatment="treatment", time="night"),
        emm_contrast(model, "night", by="treatment", type="response"),
    ):
        assert np.isinf(tab["df"]).all() and (tab["df_method"] == "z").all()
    # the LMM keeps Satterthwaite
    lmm = emmeans(trial.fit("H1").model, "treatment")
    assert (lmm["df_method"] == "satterthwaite").all() and np.isfinite(lmm["df"]).all()


# ------------------------------------------------------------------ the demo study, end to end
# The demo is SIMULATED (studykit.simulate, seed 20261125, 36 participants): written as a study
# directory, loaded back with load_study, analysed with the shipped protocol (version 1.1:
# cLDA for H1/H3/E1, fixed sequence H1 -> H2 -> H3, ordinal E3/E4, seven sensitivity analyses). The simulator's
# assumptions (its README): N3 +8 min on post1 under ketamine, awakenings rate ratio 0.85,
# TST unchanged, KSS +1.5 / +0.7 / +0.2 on days 1-3, dream vividness +1 on day 1.
@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    from studykit.simulate import simulate_study, write_study

    return write_study(simulate_study(seed=20261125), tmp_path_factory.mktemp("sim") / "demo")


@pytest.fixture(scope="module")
def demo(demo_dir):
    from studykit.validate import load_study

    study = load_study(demo_dir)
    return A.run_analysis(load_protocol(SHIPPED), study)


def _primary(res):
    t = res.hypotheses
    return t[t["analysis"] == "primary"].reset_index(drop=True)


def test_demo_every_hypothesis_fits_and_converges(demo):
    t = _primary(demo)
    assert t["hypothesis_id"].tolist() == [h.id for h in PROTO11.hypotheses for _ in
                                           h.contrast.labels()]  # fmt: skip
    assert all(f.error is None for f in demo.fits.values())
    assert all(f.error is None for fits in demo.sensitivity_fits.values() for f in fits.values())
    assert demo.hypotheses["converged"].all()
    assert t["converged"].all()
    assert t[["estimate", "std_error", "p_value", "p_adjusted"]].notna().all().all()
    # the simulated file's README says SIMULATED: every row is labelled simulated
    assert t["simulated"].all()
    # the demo has no day7 night: the modelled window drops it, with a note
    nights = t[t["outcome"].isin(["n3_min", "tst_min", "n_awakenings"])]
    assert nights["warnings"].str.contains("['day7']", regex=False).all()
    # singular fits are flagged in both columns, never silently
    assert (t["singular"] == t["warnings"].str.contains("singular", case=False)).all()


def test_demo_exclusions_follow_the_planted_mess(demo):
    # README of the demo: sedative use P14 period 2 (from night 1 on), alcohol use P05 period 1
    # (from night 0, the evening before the baseline night), 3 nights each; P16 withdrew after
    # period 1 (kept in the full analysis set: one placebo-less person). Protocol 1.1 excludes
    # the data from the event on: P14's baseline night is kept, P05's period is excluded whole.
    ex = demo.exclusions()
    h1 = ex[ex["hypothesis_id"] == "H1"].set_index("participant_id")
    assert sorted(h1.index) == ["P05", "P14"]
    assert h1.loc["P14", "period"] == "2" and "sedative" in h1.loc["P14", "reason"]
    assert h1.loc["P05", "period"] == "1" and "alcohol" in h1.loc["P05", "reason"]
    assert (h1.loc["P14", "n_observations"], h1.loc["P05", "n_observations"]) == (2, 3)
    assert "from the event on excluded" in h1.loc["P14", "reason"]
    r = _primary(demo).set_index("hypothesis_id").loc["H1"]
    assert r["n_excluded"] == 5 and r["n_participants"] == 36
    # 211 nights recorded (README) - 5 excluded
    assert r["n_observations"] == 206


def test_demo_verdicts_plausible_under_the_simulation(demo):
    t = _primary(demo)
    by = t.drop_duplicates("hypothesis_id").set_index("hypothesis_id")
    # N3 up, awakenings down: estimates in the simulated direction
    assert by.loc["H1", "estimate"] > 0 and by.loc["H2", "estimate"] < 1
    # TST is not increased in the simulation: H3 must not come out supported
    assert by.loc["H3", "verdict"] in ("effect ruled out", "inconclusive")
    assert by.loc["H3", "conf_low"] < 0 < by.loc["H3", "conf_high"]
    # sleepiness up on day 1 (simulated +1.5): supported; fades by day 3 (odds ratios, CLMM)
    kss = t[t["hypothesis_id"] == "E3"]
    assert kss["verdict"].iloc[0] == "supported"
    assert (kss["scale"] == "odds ratio").all()
    assert kss["estimate"].iloc[0] > kss["estimate"].iloc[2]
    # fixed sequence H1 -> H2 -> H3 (one row each, in that order in the protocol)
    conf = t[t["multiplicity_family"] == "confirmatory"]
    assert conf["hypothesis_id"].tolist() == ["H1", "H2", "H3"]
    assert set(conf["adjust_method"]) == {"fixed-sequence"}
    np.testing.assert_allclose(
        conf["p_adjusted"], adjust_pvalues(conf["p_value"], "fixed-sequence")
    )


def test_demo_results_of_protocol_1_1(demo):
    """The shipped protocol's primary results on the SIMULATED demo, as `studykit run
    protocols/ketamine_sleep.yaml --out results` writes them (tables/hypotheses.csv) and the
    docs quote them (docs/protocols.md). studykit's output at the amendment (the cLDA matches
    lmerTest/emmeans on tests/data/estimators; issue 14 reported 10.06, SE 3.95 for H1 when the
    whole period of an intercurrent event was excluded; 1.1 keeps P14's pre-event baseline
    night), pinned so that a change of the demo's results is a visible decision."""
    t = _primary(demo)
    by = t.drop_duplicates("hypothesis_id").set_index("hypothesis_id")
    assert by.loc["H1", "estimate"] == pytest.approx(10.08, abs=0.005)
    assert by.loc["H1", "std_error"] == pytest.approx(3.93, abs=0.005)
    got = {h: by.loc[h, "verdict"] for h in ("H1", "H2", "H3")}
    assert got == {"H1": "supported", "H2": "inconclusive", "H3": "effect ruled out"}
    # under the fixed sequence H1 is tested at the full one-sided 0.025: adjusted p = raw p
    assert by.loc["H1", "p_adjusted"] == by.loc["H1", "p_value"] < 0.025
    assert by.loc["H2", "estimate"] == pytest.approx(0.905, abs=0.0005)  # rate ratio
    assert by.loc["H3", "estimate"] == pytest.approx(-14.27, abs=0.005)
    # ordinal E3 (days 1-3) and E4 (day 1): cumulative odds ratios
    e3 = t[t["hypothesis_id"] == "E3"]
    np.testing.assert_allclose(e3["estimate"], [23.60, 5.03, 1.25], atol=0.005)
    assert e3["verdict"].tolist() == ["supported", "supported", "inconclusive"]
    assert by.loc["E4", "estimate"] == pytest.approx(8.92, abs=0.005)
    # the version 1.0 analysis, as a sensitivity analysis (the estimands helper's note: 8.3329)
    did = demo.hypotheses.set_index(["analysis", "hypothesis_id"]).loc[("did_version_1_0", "H1")]
    assert did["estimate"] == pytest.approx(8.333, abs=0.0005)


def test_demo_prespecified_sensitivity_analyses(demo, demo_dir):
    from studykit.validate import load_study

    t = demo.hypotheses
    names = [sa.name for sa in PROTO11.sensitivity]
    assert names == ["did_version_1_0", "ancova_kr2010", "post_only", "linear_kss",
                     "linear_dream_vividness", "tipping_point_n3", "tipping_point_tst",
                     "per_protocol", "treatment_policy"]  # fmt: skip
    assert t["analysis"].drop_duplicates().tolist() == ["primary", *names]
    rows = {a: g.set_index(["hypothesis_id", "contrast"]) for a, g in t.groupby("analysis")}
    assert rows["did_version_1_0"].index.get_level_values(0).unique().tolist() == ["H1", "H3", "E1"]
    assert rows["linear_kss"].index.get_level_values(0).unique().tolist() == ["E3"]
    assert set(rows["per_protocol"].index.get_level_values(0)) == {h.id for h in PROTO11.hypotheses}
    # the model column says which analysis ran
    assert rows["primary"].loc["H1", "model"].str.contains("cLDA").all()
    assert rows["did_version_1_0"].loc["H1", "model"].str.contains(r"n3_min ~ treatment").all()
    assert rows["ancova_kr2010"].loc["H1", "model"].str.contains("Kenward-Roger 2010").all()
    assert rows["post_only"].loc["H1", "model"].str.contains("post nights only").all()
    assert (rows["linear_kss"]["scale"] == "difference").all()
    assert (rows["primary"].loc["E3", "scale"] == "odds ratio").all()
    # restated analyses equal the version 1.0 primary analysis on the same rows (same
    # estimator / family / model): did_version_1_0 for H1, H3, E1; linear_* for E3, E4. 1.1
    # keeps pre-event data of a period with an intercurrent event (1.0 dropped the period), so
    # both are compared on the demo with the intercurrent-event flags cleared.
    study = load_study(demo_dir)
    study.periods[["sedative_use", "alcohol_use"]] = False
    study.periods[["sedative_first_night", "alcohol_first_night"]] = pd.NA
    rows = {a: g.set_index(["hypothesis_id", "contrast"])
            for a, g in A.run_analysis(PROTO11, study).hypotheses.groupby("analysis")}  # fmt: skip
    v10 = A.run_analysis(PROTO, study, sensitivity=False).hypotheses
    v10 = v10.set_index(["hypothesis_id", "contrast"])
    cols = ["estimate", "std_error", "df", "p_value", "conf_low", "conf_high"]
    for name, hids in (("did_version_1_0", ["H1", "H3", "E1"]), ("linear_kss", ["E3"]),
                       ("linear_dream_vividness", ["E4"])):  # fmt: skip
        for hid in hids:
            np.testing.assert_allclose(
                rows[name].loc[hid, cols].to_numpy(float),
                v10.loc[hid, cols].to_numpy(float),
                rtol=1e-10,
                err_msg=f"{name} {hid}",
            )
    # a restated hypothesis keeps its verdict rule on its own scale: 1 KSS point (1.0's value)
    assert "1 or more is ruled out" in rows["linear_kss"]["verdict_rule"].iloc[0]
    assert "odds ratio of 2.5" in rows["primary"].loc["E3", "verdict_rule"].iloc[0]


def test_demo_per_protocol_sensitivity(demo_dir, demo):
    from studykit.validate import load_study

    sens = A.run_analysis(PROTO11, load_study(demo_dir), analysis_set="per_protocol")
    t = sens.hypotheses.set_index("hypothesis_id")
    fas = _primary(demo).set_index("hypothesis_id")
    # per protocol drops the withdrawn P16, and P17 / P32 (missing nights) where the set
    # requires a baseline night and both treatments (demo README)
    assert t.loc["H1", "n_participants"] < fas.loc["H1", "n_participants"]
    assert "status withdrawn (analysis set per_protocol)" in t.loc["H1", "excluded_reasons"]
    assert "not observed under both treatments" in t.loc["H1", "excluded_reasons"]
    assert sens.hypotheses["warnings"].str.startswith("sensitivity analysis: analysis set").all()
    assert (sens.hypotheses["protocol_sha256"] == PROTO11.sha256).all()
    assert sens.protocol is PROTO11  # the locked protocol, not modified
    assert PROTO11.get("H1").analysis_set.name == "full_analysis_set"
    with pytest.raises(ProtocolError, match="no analysis set 'pp'.*per_protocol"):
        A.run_analysis(PROTO11, make_crossover(), analysis_set="pp")


def test_shipped_protocol_hash_in_every_result_row(demo):
    sha = hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    assert PROTO11.sha256 == sha
    assert (demo.hypotheses["protocol_sha256"] == sha).all()
    assert (demo.hypotheses["protocol_id"] == "ketamine_sleep").all()


# ------------------------------------------------------------------ command line
def test_cli_fit_on_a_study_directory(demo_dir, tmp_path, capsys):
    from studykit.cli import main

    out_csv = tmp_path / "h.csv"
    code = main(
        ["fit", str(SHIPPED), "--data", str(demo_dir), "--hypothesis", "H1", "--csv",
         str(out_csv)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "SIMULATED DATA" in out and PROTO11.sha256 in out
    table = out.split("sha256")[1].split("\n\n")[0]
    assert "H1" in table and "H2" not in table
    written = pd.read_csv(out_csv)
    assert list(written.columns) == A.HYPOTHESIS_COLUMNS
    # H1's primary row, then its rows under the sensitivity analyses that apply to it
    assert set(written["hypothesis_id"]) == {"H1"}
    assert written["analysis"].tolist() == [
        "primary", "did_version_1_0", "ancova_kr2010", "post_only", *["tipping_point_n3"] * 4,
        "per_protocol", "treatment_policy",
    ]  # fmt: skip
    assert written["protocol_sha256"].iloc[0] == PROTO11.sha256


def test_cli_fit_bad_data_dir(tmp_path, capsys):
    from studykit.cli import main

    code = main(["fit", str(SHIPPED), "--data", str(tmp_path / "nope")])
    assert code == 2
    assert "is not a directory" in capsys.readouterr().err
    code = main(["fit", str(SHIPPED), "--data", str(tmp_path)])  # a directory, but no study
    assert code == 2
    assert "has no roster table" in capsys.readouterr().err


def test_cli_fit_malformed_protocol(demo_dir, tmp_path, capsys):
    from studykit.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: 1\nprotocol: [\n", encoding="utf-8")
    assert main(["fit", str(bad), "--data", str(demo_dir)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    code = main(["fit", str(tmp_path / "missing.yaml"), "--data", str(demo_dir)])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err
    typo = tmp_path / "typo.yaml"  # valid YAML, but a key the schema does not know
    typo.write_text(SHIPPED.read_text(encoding="utf-8") + "\nmultiplicty: {}\n", encoding="utf-8")
    assert main(["fit", str(typo), "--data", str(demo_dir)]) == 2
    assert "multiplicty" in capsys.readouterr().err


# ------------------------------------------------------------------ pre-specified sensitivity
SENSITIVITY = """
sensitivity:
  - name: per_protocol
    description: the per-protocol set for every hypothesis
    analysis_set: per_protocol
    hypotheses: [H1, E7]
  - name: treatment_policy
    description: periods with sedative or alcohol use analysed as observed
    intercurrent_events: treatment_policy
    hypotheses: [H1]
"""


def test_prespecified_sensitivity_rows_beside_primary():
    s = make_crossover()
    s.periods.loc[0, "sedative_use"] = True  # one period with an intercurrent event
    text = V10.read_text(encoding="utf-8")
    proto = parse_protocol(text + SENSITIVITY)
    assert [a.name for a in proto.sensitivity] == ["per_protocol", "treatment_policy"]
    res = A.run_analysis(proto, s, hypotheses=["H1", "E7"])
    t = res.hypotheses
    assert t["analysis"].tolist() == ["primary"] * 2 + ["per_protocol"] * 2 + ["treatment_policy"]
    prim = t[t["analysis"] == "primary"].set_index("hypothesis_id")
    tp = t[t["analysis"] == "treatment_policy"].set_index("hypothesis_id")
    # the hypothetical strategy excludes the period; treatment policy keeps it as observed
    assert "hypothetical strategy" in prim.loc["H1", "excluded_reasons"]
    assert tp.loc["H1", "n_observations"] > prim.loc["H1", "n_observations"]
    assert "hypothetical strategy" not in tp.loc["H1", "excluded_reasons"]
    assert tp.loc["H1", "warnings"].startswith("sensitivity analysis 'treatment_policy'")
    # each analysis adjusts within its own families: the treatment-policy H1 is Holm-adjusted
    # over that analysis' H1-H3 (fitted for the adjustment though only H1 is reported)
    assert tp.loc["H1", "p_adjusted"] > tp.loc["H1", "p_value"] or tp.loc["H1", "p_adjusted"] == 1
    assert set(res.sensitivity_fits) == {"per_protocol", "treatment_policy"}
    # run_analysis(..., sensitivity=False) gives the primary rows only
    only = A.run_analysis(proto, s, hypotheses=["H1"], sensitivity=False).hypotheses
    assert only["analysis"].tolist() == ["primary"]


def test_sensitivity_section_is_checked():
    text = V10.read_text(encoding="utf-8")
    bad = SENSITIVITY.replace("analysis_set: per_protocol", "analysis_set: pp")
    with pytest.raises(ProtocolError, match="'pp' is not defined in analysis_sets"):
        parse_protocol(text + bad)
    bad = SENSITIVITY.replace("hypotheses: [H1]", "hypotheses: [H9]")
    with pytest.raises(ProtocolError, match="H9 are not hypotheses"):
        parse_protocol(text + bad)
    bad = SENSITIVITY.replace("intercurrent_events: treatment_policy", "intercurrent_events: x")
    with pytest.raises(ProtocolError, match="invalid value 'x'"):
        parse_protocol(text + bad)


RESTATED = """
sensitivity:
  - name: did_h1
    description: H1 by the difference in differences
    hypotheses: [H1]
    estimator: did
  - name: linear_e3
    description: E3 by the linear mixed model
    hypotheses: [E3]
    family: gaussian
    effect_of_interest: 1
"""


def _with_clda_and_ordinal(text):
    """Version 1.0 with H1 by cLDA and E3 as an ordinal rating (as 1.1 states them)."""
    text = text.replace(
        "    effect_of_interest: 5\n", "    effect_of_interest: 5\n    estimator: clda\n", 1
    )
    e3 = text.index("  - id: E3")
    head, tail = text[:e3], text[e3:]
    tail = tail.replace("    family: gaussian\n    model: *diary_model\n", (
        "    family: ordinal\n    model:\n"
        "      formula: kss ~ treatment * day + period + (1 | participant_id)\n"
        "      levels: {period: [1, 2]}\n"), 1).replace(
        "    effect_of_interest: 1\n", "    effect_of_interest: 2.5\n", 1)  # fmt: skip
    return head + tail


def test_sensitivity_restates_estimator_and_family():
    # a sensitivity entry may restate its listed hypotheses (estimator, family, model, effect
    # of interest); the restated hypothesis is checked and compiled as a protocol's are
    s = make_crossover()
    proto = parse_protocol(_with_clda_and_ordinal(V10.read_text(encoding="utf-8")) + RESTATED)
    assert proto.get("H1").estimator == "clda" and proto.get("E3").family == "ordinal"
    did, lin = proto.sensitivity
    assert (did.estimator, did.family, [h.id for h in did.variants]) == ("did", None, ["H1"])
    assert lin.family == "gaussian" and lin.variant("E3").effect_of_interest == 1
    assert lin.variant("H1") is None
    res = A.run_analysis(proto, s, hypotheses=["H1", "E3"])
    t = res.hypotheses.set_index(["analysis", "hypothesis_id"])
    assert "cLDA" in t.loc[("primary", "H1"), "model"]
    assert "cLDA" not in t.loc[("did_h1", "H1"), "model"]
    # the restated analysis equals version 1.0's primary analysis of the same rows
    v10 = A.run_analysis(PROTO, s, hypotheses=["H1", "E3"], sensitivity=False).hypotheses
    v10 = v10.set_index("hypothesis_id")
    assert t.loc[("did_h1", "H1"), "estimate"] == pytest.approx(
        v10.loc["H1", "estimate"], rel=1e-10
    )
    lin_rows = t.loc[("linear_e3", "E3")]
    assert (lin_rows["scale"] == "difference").all()
    np.testing.assert_allclose(lin_rows["estimate"], v10.loc["E3", "estimate"], rtol=1e-10)
    assert (t.loc[("primary", "E3"), "scale"] == "odds ratio").all()
    assert ("linear_e3", "H1") not in t.index  # only the listed hypotheses are reported


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        # a family whose scale differs needs the effect of interest on that scale
        ("    effect_of_interest: 1\n", "", "reports E3 on the difference scale.*effect_of_interest"),
        # restating needs the hypotheses it applies to
        ("    hypotheses: [H1]\n", "", "list the hypotheses it applies to"),
        ("estimator: did", "estimator: magic", r"sensitivity\[0\] \('did_h1'\): restating hypothesis 'H1'.*invalid value 'magic'"),
        ("family: gaussian", "family: poisson", r"restating hypothesis 'E3'.*needs a count outcome"),
        ("    family: gaussian\n", "    family: gaussian\n    seed: 3\n", r"unknown key\(s\) seed"),
    ],
)  # fmt: skip
def test_restating_sensitivity_entries_are_checked(old, new, match):
    text = _with_clda_and_ordinal(V10.read_text(encoding="utf-8"))
    assert old in RESTATED
    with pytest.raises(ProtocolError, match=match):
        parse_protocol(text + RESTATED.replace(old, new, 1))


# ------------------------------------------------------------------ estimator per hypothesis
def test_protocol_names_an_estimator_and_the_analysis_dispatches_to_it():
    # H1 with the constrained-baseline estimator (studykit.estimators, helper 'design'): the
    # analysis must give what studykit.estimators.estimate gives on the same rows (complete,
    # balanced SIMULATED crossover without intercurrent events: every night is analysed)
    from studykit import estimators

    text = V10.read_text(encoding="utf-8")
    text = text.replace(
        "    effect_of_interest: 5\n", "    effect_of_interest: 5\n    estimator: clda\n", 1
    )
    proto = parse_protocol(text)
    assert proto.plan("H1").model.estimator == "clda"
    s = make_crossover()
    r = A.run_analysis(proto, s, hypotheses=["H1"]).hypotheses.iloc[0]
    data = s.nights.copy()
    data["period"] = data["period"].astype(str)
    spec = estimators.CrossoverSpec(
        "n3_min", window=("baseline", "post1", "post2", "day7"), period_levels=("1", "2")
    )
    ref = estimators.estimate(data, "clda", spec, alternative="greater").table.iloc[0]
    assert r["estimate"] == pytest.approx(ref["estimate"], rel=1e-8)
    assert r["std_error"] == pytest.approx(ref["std_error"], rel=1e-8)
    assert r["p_value"] == pytest.approx(ref["p_value"], rel=1e-6)
    assert "cLDA" in r["model"]
    with pytest.raises(ProtocolError, match="estimator"):
        parse_protocol(text.replace("estimator: clda", "estimator: magic"))


def test_fit_warnings_are_in_the_rows_not_logged_per_fit(caplog, tmp_path):
    # `studykit run` on the SIMULATED demo printed the same "Singular (boundary) fit" sentence
    # once per fit; the warnings belong in each row's `warnings` (the console says each once)
    import logging

    from studykit.simulate import simulate_study, write_study
    from studykit.validate import load_study

    write_study(simulate_study(), tmp_path / "demo")
    demo = load_study(tmp_path / "demo")
    with caplog.at_level(logging.WARNING, logger="studykit.models"):
        res = A.run_analysis(PROTO, demo)
    assert res.hypotheses["warnings"].fillna("").str.contains("ingular").any()
    assert not [r for r in caplog.records if r.name.startswith("studykit.models")]
    # and the models' logger is left as it was
    assert logging.getLogger("studykit.models").level == logging.NOTSET
