"""Delta-adjusted multiple imputation and the tipping point (studykit.missing and its
``sensitivity: missing_data`` entry in a protocol).

Numbers: Rubin's rules and the Barnard-Rubin df are checked against hand computations written
out below; the imputation is checked against a SIMULATED random-intercept study with known
parameters and MAR missingness (the complete-case mean is biased, the imputation is not);
the protocol analyses use ``make_crossover`` of tests/test_analysis.py (SIMULATED).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import studykit.analysis as A
from studykit.errors import ProtocolError
from studykit.missing import (
    ImputationModel,
    barnard_rubin_df,
    delta_adjusted_analysis,
    impute_mar,
    rubin_pool,
    tipping_point,
)
from studykit.models.random_effects import RandomEffect
from studykit.protocol import parse_protocol
from tests.test_analysis import make_crossover

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = (ROOT / "protocols" / "ketamine_sleep.yaml").read_text(encoding="utf-8")


def with_tipping(deltas="[0, 20, 40, 60, 80]", hypotheses="[H1]", imputations=5, seed=11):
    return parse_protocol(
        SHIPPED
        + f"""
sensitivity:
  - name: tipping_point
    description: delta-adjusted multiple imputation of missing post-infusion outcomes
    missing_data: {{method: delta_adjusted, deltas: {deltas}, imputations: {imputations}, seed: {seed}}}
    hypotheses: {hypotheses}
"""
    )


# ------------------------------------------------------------------ Rubin's rules
def test_rubins_rules_against_a_hand_computation():
    # m = 3 estimates 1, 2, 3 with variances 0.5 each, complete-data df 20:
    # Qbar = 2; U = 0.5; B = ((1-2)^2 + 0 + (3-2)^2) / 2 = 1; T = 0.5 + (1 + 1/3) * 1 = 1.83333
    # lambda = (4/3) / 1.83333 = 0.727273; nu_old = 2 / lambda^2 = 3.78125
    # nu_obs = (21 / 23) * 20 * (1 - 0.727273) = 4.980237; nu = 1 / (1/3.78125 + 1/4.980237)
    p = rubin_pool([1.0, 2.0, 3.0], [0.5, 0.5, 0.5], 20.0)
    assert p.estimate == 2.0 and p.within == 0.5 and p.between == 1.0 and p.m == 3
    assert p.total == pytest.approx(0.5 + 4.0 / 3.0, rel=1e-12)
    assert p.std_error == pytest.approx(math.sqrt(11.0 / 6.0), rel=1e-12)
    lam = (4.0 / 3.0) / (11.0 / 6.0)
    assert p.lambda_ == pytest.approx(lam, rel=1e-12)
    nu_old = 2.0 / lam**2
    nu_obs = 21.0 / 23.0 * 20.0 * (1.0 - lam)
    assert nu_old == pytest.approx(3.78125, rel=1e-12)
    assert p.df == pytest.approx(1.0 / (1.0 / nu_old + 1.0 / nu_obs), rel=1e-12)
    assert p.df == pytest.approx(2.14935, abs=1e-5)  # 1 / (0.264463 + 0.200794)
    # a z test (infinite complete-data df): Rubin's (1987) nu_old
    assert barnard_rubin_df(3, 1.0, 0.5, math.inf) == pytest.approx(3.78125, rel=1e-12)
    # no between-imputation variance: nu_obs alone, (nu + 1) / (nu + 3) nu
    assert barnard_rubin_df(5, 0.0, 0.5, 20.0) == pytest.approx(21.0 / 23.0 * 20.0)
    with pytest.raises(ValueError, match="at least 2"):
        rubin_pool([1.0], [0.5], 20.0)


def test_tipping_point_is_the_smallest_shift_whose_verdict_differs():
    assert tipping_point(
        [0.0, -5.0, -10.0], ["supported", "inconclusive", "inconclusive"], "supported"
    ) == (-5.0, "inconclusive")
    # the MAR analysis itself (shift 0) may already differ from the primary verdict
    assert tipping_point([0.0, -5.0], ["inconclusive"] * 2, "supported") == (0.0, "inconclusive")
    assert tipping_point([0.0, 5.0], ["supported"] * 2, "supported") == (None, None)


# ------------------------------------------------------------------ the imputation
def _mar_study(n=300, seed=5):
    """SIMULATED: y_pre, y_post of n participants, participant intercept SD 2, residual SD 1,
    true means 0 (pre) and 1 (post); post missing with probability 0.8 when y_pre > 1 (MAR:
    depends on the observed pre value only)."""
    rng = np.random.default_rng(seed)
    u = rng.normal(0, 2, n)
    pre = u + rng.normal(0, 1, n)
    post = 1.0 + u + rng.normal(0, 1, n)
    ids = [f"S{i:03d}" for i in range(n)]
    d = pd.DataFrame(
        {
            "participant_id": np.repeat(ids, 2),
            "time": ["pre", "post"] * n,
            "y": np.column_stack([pre, post]).ravel(),
        }
    )
    gone = (pre > 1.0) & (rng.random(n) < 0.8)
    miss = (d["time"] == "post").to_numpy() & np.repeat(gone, 2)
    return d, miss


MODEL = ImputationModel(
    "y", ("time",), (RandomEffect("participant_id"),), {"time": ("pre", "post")}
)


def test_imputation_under_mar_recovers_the_mean_the_complete_cases_miss():
    d, miss = _mar_study()
    imputed = impute_mar(d[~miss], d[miss].assign(y=np.nan), MODEL, imputations=20, seed=3)
    assert imputed.shape == (20, int(miss.sum()))
    post = (d["time"] == "post").to_numpy()
    complete_case = d.loc[post & ~miss, "y"].mean()
    # mean of the post values with the missing ones imputed, per imputation, then averaged
    filled = []
    for row in imputed:
        y = d["y"].to_numpy().copy()
        y[miss] = row
        filled.append(y[post].mean())
    mi_mean = float(np.mean(filled))
    truth = d.loc[post, "y"].mean()  # the simulated values before deletion
    # complete cases lose the high-pre participants (bias about -0.8 here); MI does not
    assert complete_case < truth - 0.5
    assert abs(mi_mean - truth) < 0.15
    # the same seed gives the same draws; another seed others
    again = impute_mar(d[~miss], d[miss].assign(y=np.nan), MODEL, imputations=20, seed=3)
    np.testing.assert_array_equal(imputed, again)
    other = impute_mar(d[~miss], d[miss].assign(y=np.nan), MODEL, imputations=20, seed=4)
    assert not np.allclose(imputed, other)


def test_imputation_model_must_be_random_intercepts_within_participant():
    bad = ImputationModel("y", ("time",), (RandomEffect("site"),), {"time": ("pre", "post")})
    d, miss = _mar_study(n=20)
    with pytest.raises(Exception, match="random intercepts of groups nested in participant_id"):
        impute_mar(d[~miss], d[miss], bad, imputations=2, seed=1)


def test_nothing_missing_returns_the_complete_data_analysis():
    d, _ = _mar_study(n=30)
    calls = []

    def analyse(full):
        calls.append(len(full))
        w = full.pivot(index="participant_id", columns="time", values="y")
        ch = w["post"] - w["pre"]
        return np.array([ch.mean()]), np.array([ch.var() / len(ch)]), np.array([len(ch) - 1.0])

    res = delta_adjusted_analysis(
        d, d.iloc[:0], model=MODEL, shifted=np.zeros(0, bool), deltas=[0.0, -3.0], analyse=analyse
    )
    ch = d.pivot(index="participant_id", columns="time", values="y")
    ch = ch["post"] - ch["pre"]
    assert calls == [60]  # analysed once, no imputation
    assert res.n_imputed == 0 and res.table["m"].tolist() == [1, 1]
    assert res.table["estimate"].tolist() == [ch.mean()] * 2
    assert res.table["df"].tolist() == [29.0, 29.0]


# ------------------------------------------------------------------ in the protocol
def _crossover_with_missing(n=40, seed=7, k=8):
    """make_crossover (SIMULATED) with the post1 N3 of the first k ketamine periods missing."""
    s = make_crossover(n=n, seed=seed)
    n = s.nights
    ket_post1 = n.index[(n["treatment"] == "ketamine") & (n["night"] == "post1")][:k]
    s.nights.loc[ket_post1, "n3_min"] = np.nan
    return s


def test_delta_adjusted_rows_beside_the_primary_with_the_tipping_point():
    s = _crossover_with_missing()
    res = A.run_analysis(with_tipping(), s, hypotheses=["H1"])
    t = res.hypotheses
    assert t["analysis"].tolist() == ["primary"] + ["tipping_point"] * 5
    prim, mi = t.iloc[0], t.iloc[1:].reset_index(drop=True)
    assert prim["verdict"] == "supported"
    # direction greater: the ketamine imputations are shifted down (against the claim)
    assert [c.split("; ")[1].split(" (")[0] for c in mi["contrast"]] == [
        f"imputed ketamine values {d}" for d in ("+0", "-20", "-40", "-60", "-80")
    ]
    # monotone: a larger shift against the claim never raises the estimate
    assert (np.diff(mi["estimate"].to_numpy()) < 0).all()
    # the tipping point: the first shift whose verdict is not the primary's
    changed = mi.index[mi["verdict"] != "supported"]
    assert len(changed) and (mi.loc[changed[0] :, "verdict"] != "supported").all()
    tip = mi.loc[changed[0]]
    assert tip["contrast"].endswith("(tipping point)")
    shift = tip["contrast"].split("values ")[1].split(" ")[0]
    assert f"tipping point: shift {shift} (supported -> {tip['verdict']})" in tip["warnings"]
    assert mi["contrast"].str.endswith("(tipping point)").sum() == 1
    # what was done is in every row: imputed values, imputations, seed, the df method
    assert (
        "8 missing post-infusion n3_min values imputed under MAR (8 in ketamine periods"
        in mi.loc[0, "warnings"]
    )
    assert "5 imputations, seed 11" in mi.loc[0, "warnings"]
    assert (
        mi.loc[0, "df_method"]
        == "Rubin's rules, Barnard-Rubin df (5 imputations; complete data: satterthwaite)"
    )
    # the multiplicity family of the primary analysis applies (Holm over H1-H3)
    assert (mi["p_adjusted"] >= mi["p_value"]).all()
    assert (
        set(res.missing_data) == {"tipping_point"}
        and res.missing_data["tipping_point"]["H1"].n_imputed == 8
    )


def test_shift_zero_is_close_to_the_likelihood_analysis_under_mar():
    s = _crossover_with_missing()
    res = A.run_analysis(with_tipping(deltas="[0]", imputations=40, seed=2), s, hypotheses=["H1"])
    prim, mi = res.hypotheses.iloc[0], res.hypotheses.iloc[1]
    # both are valid under MAR: they differ by Monte Carlo error, a small part of the SE
    assert abs(mi["estimate"] - prim["estimate"]) < 0.25 * prim["std_error"]
    assert mi["std_error"] == pytest.approx(prim["std_error"], rel=0.25)


def test_without_missing_data_the_result_is_the_primary_analysis():
    s = make_crossover()
    res = A.run_analysis(with_tipping(deltas="[0, 10]"), s, hypotheses=["H1"])
    prim, mi = res.hypotheses.iloc[0], res.hypotheses.iloc[1:]
    for col in ("estimate", "std_error", "df", "p_value", "conf_low", "conf_high", "p_adjusted"):
        assert (mi[col] == prim[col]).all(), col
    assert (
        "no missing post-infusion outcome: the primary analysis, unchanged"
        in mi.iloc[0]["warnings"]
    )
    assert mi.iloc[0]["df_method"] == prim["df_method"]
    # the verdict cannot change (nothing is imputed): said in the last row's contrast
    assert mi["contrast"].tolist()[-1].endswith("-10 (no tipping point within the grid)")
    assert "no tipping point within the grid (shifts 0 to 10; verdict" in mi.iloc[0]["warnings"]


def test_event_excluded_nights_are_imputed_and_whole_missing_periods_are_not():
    s = make_crossover()
    # a sedative period (hypothetical strategy, whole period excluded): its post nights are
    # imputed (post1, post2, day7); a participant's period with no night rows at all is not
    s.periods.loc[0, "sedative_use"] = True
    gone = (s.nights["participant_id"] == "P02") & (s.nights["period"] == 2)
    s.nights = s.nights[~gone].reset_index(drop=True)
    res = A.run_analysis(with_tipping(deltas="[0]"), s, hypotheses=["H1"])
    assert res.missing_data["tipping_point"]["H1"].n_imputed == 3


def test_same_seed_same_rows_and_the_seed_matters():
    s = _crossover_with_missing()
    a = A.run_analysis(with_tipping(deltas="[0, 40]"), s, hypotheses=["H1"]).hypotheses
    b = A.run_analysis(with_tipping(deltas="[0, 40]"), s, hypotheses=["H1"]).hypotheses
    pd.testing.assert_frame_equal(a, b)
    c = A.run_analysis(with_tipping(deltas="[0, 40]", seed=12), s, hypotheses=["H1"]).hypotheses
    assert c.iloc[1]["estimate"] != a.iloc[1]["estimate"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"hypotheses": "[H2]"},
            "H2 is a negbin difference in differences: the delta-adjusted imputation is for Gaussian outcomes",
        ),
        ({"hypotheses": "[E7]"}, "E7 is a gaussian change correlation"),
        ({"deltas": "[5, 0]"}, "shift sizes must be finite, >= 0 and increasing"),
        ({"deltas": "[-5]"}, "shift sizes must be finite, >= 0 and increasing"),
        ({"deltas": "[]"}, "expected a list of shift sizes"),
        ({"imputations": 1}, "an integer from 2 to 1000"),
        ({"seed": -1}, "a non-negative integer"),
    ],
)
def test_missing_data_entry_is_checked(change, message):
    with pytest.raises(ProtocolError, match=message):
        with_tipping(**change)


def test_missing_data_keeps_the_primary_set_and_estimand():
    text = SHIPPED + (
        "\nsensitivity:\n  - name: x\n    description: d\n    analysis_set: per_protocol\n"
        "    missing_data: {method: delta_adjusted, deltas: [0], seed: 1}\n"
    )
    with pytest.raises(ProtocolError, match="keeps the primary analysis set and estimand"):
        parse_protocol(text)
    text = SHIPPED + (
        "\nsensitivity:\n  - name: x\n    description: d\n"
        "    missing_data: {method: multiple, deltas: [0], seed: 1}\n"
    )
    with pytest.raises(ProtocolError, match="invalid value 'multiple'"):
        parse_protocol(text)


def test_without_a_list_every_gaussian_difference_in_differences_is_analysed():
    proto = parse_protocol(
        SHIPPED + "\nsensitivity:\n  - name: mi\n    description: d\n"
        "    missing_data: {method: delta_adjusted, deltas: [0], imputations: 2, seed: 1}\n"
    )
    s = make_crossover(n=12)
    t = A.run_analysis(proto, s, hypotheses=["H1", "H2", "E7"]).hypotheses
    # H2 (negative binomial) and E7 (a correlation) have no delta-adjusted rows
    assert t.loc[t["analysis"] == "mi", "hypothesis_id"].tolist() == ["H1"]
