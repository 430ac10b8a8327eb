"""Multiplicity adjustment: values checked against R's p.adjust, computed by hand here.

Every expected vector below was worked out by hand from the definitions in
``adjust_pvalues``' Notes (the same formulas as R's ``p.adjust`` source); the R call that gives
the same numbers is written next to each one.
"""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from studykit.errors import ModelError
from studykit.models.multiplicity import adjust_pvalues, adjusted_intervals

P_EQUAL = [0.01, 0.02, 0.03, 0.04, 0.05]
P_MIXED = [0.04, 0.001, 0.03, 0.2]


@pytest.mark.parametrize(
    ("p", "method", "expected"),
    [
        # p.adjust(c(.01,.02,.03,.04,.05), "holm"): 5p, 4p, 3p, 2p, p = .05 .08 .09 .08 .05,
        # running max -> .05 .08 .09 .09 .09
        (P_EQUAL, "holm", [0.05, 0.08, 0.09, 0.09, 0.09]),
        # "hochberg": from the largest, running min of 1p, 2p, 3p, 4p, 5p -> all .05
        (P_EQUAL, "hochberg", [0.05, 0.05, 0.05, 0.05, 0.05]),
        # "bonferroni": 5p
        (P_EQUAL, "bonferroni", [0.05, 0.10, 0.15, 0.20, 0.25]),
        # p.adjust(c(.04,.001,.03,.2), "holm"): sorted .001 .03 .04 .2 times 4 3 2 1 =
        # .004 .09 .08 .2, running max .004 .09 .09 .2, back to input order:
        (P_MIXED, "holm", [0.09, 0.004, 0.09, 0.2]),
        # "hochberg": decreasing .2 .04 .03 .001 times 1 2 3 4 = .2 .08 .09 .004, running
        # min .2 .08 .08 .004, back to input order:
        (P_MIXED, "hochberg", [0.08, 0.004, 0.08, 0.2]),
        # "bonferroni": 4p, capped at 1
        (P_MIXED, "bonferroni", [0.16, 0.004, 0.12, 0.8]),
        (P_MIXED, "none", P_MIXED),
        # p.adjust(c(.5,.6,.7), "holm"): 1.5, 1.2, .7 -> capped at 1 -> 1 1 1
        ([0.5, 0.6, 0.7], "holm", [1.0, 1.0, 1.0]),
    ],
)
def test_matches_r_p_adjust(p, method, expected):
    np.testing.assert_allclose(adjust_pvalues(p, method=method), expected, rtol=1e-12)


def test_holm_is_default():
    np.testing.assert_allclose(adjust_pvalues(P_MIXED), [0.09, 0.004, 0.09, 0.2])


def test_missing_values_stay_missing_and_do_not_count():
    # p.adjust(c(.01, NA, .04), "bonferroni") = .02 NA .08 (n = 2 non-missing)
    out = adjust_pvalues([0.01, np.nan, 0.04], method="bonferroni")
    assert np.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2]], [0.02, 0.08])


def test_fixed_sequence_stops_at_first_non_rejection():
    # order H1, H2, H3, H4: H1 .01 rejected at .05; H2 .03 rejected; H3 .20 not rejected, so
    # testing stops: H4 (p .001) can no longer be rejected although its own p is tiny.
    adj = adjust_pvalues([0.01, 0.03, 0.20, 0.001], method="fixed-sequence")
    np.testing.assert_allclose(adj, [0.01, 0.03, 0.20, 0.20])
    assert list(adj < 0.05) == [True, True, False, False]


def test_fixed_sequence_missing_breaks_the_chain():
    adj = adjust_pvalues([0.01, np.nan, 0.001], method="fixed-sequence")
    np.testing.assert_allclose(adj, [0.01, 1.0, 1.0])


def test_adjusted_never_below_raw_and_holm_between():
    rng = np.random.default_rng(1)
    p = rng.uniform(size=12)
    holm = adjust_pvalues(p, method="holm")
    bonf = adjust_pvalues(p, method="bonferroni")
    hoch = adjust_pvalues(p, method="hochberg")
    assert np.all(holm >= p) and np.all(hoch >= p)
    assert np.all(holm <= bonf + 1e-15) and np.all(hoch <= holm + 1e-15)


def test_input_not_modified():
    p = np.array([0.04, 0.001, 0.03])
    adjust_pvalues(p)
    np.testing.assert_array_equal(p, [0.04, 0.001, 0.03])


@pytest.mark.parametrize(
    ("p", "method", "match"),
    [
        ([0.1], "BH-ish", "Invalid multiplicity method 'BH-ish'"),
        ([0.1, 1.5], "holm", r"must lie in \[0, 1\]"),
        ([[0.1]], "holm", "one-dimensional"),
    ],
)
def test_errors(p, method, match):
    with pytest.raises(ModelError, match=match):
        adjust_pvalues(p, method=method)


# --------------------------------------------------------------------------- adjusted intervals
def _results(**cols):
    base = {
        "hypothesis_id": ["H1", "H2", "H3"],
        "contrast": ["c"] * 3,
        "multiplicity_family": ["confirmatory"] * 3,
        "adjust_method": ["holm"] * 3,
        "scale": ["difference"] * 3,
        "estimate": [8.35, 1.0, 2.0],
        "std_error": [5.36, 1.0, 1.0],
        "df": [40.0, 40.0, 40.0],
        "conf_level": [0.95] * 3,
        "alternative": ["greater"] * 3,
    }
    base.update(cols)
    h = pd.DataFrame(base)
    q = stats.t.ppf(0.975, h["df"])
    h["conf_low"] = h["estimate"] - q * h["std_error"]
    h["conf_high"] = h["estimate"] + q * h["std_error"]
    return h


def test_one_sided_holm_interval_has_its_stated_level():
    # issue #14: one-sided tests at alpha = 0.025 (reported with two-sided 95 % intervals),
    # Holm over m = 3. The Bonferroni companion interval is the two-sided 1 - 2 * 0.025 / 3
    # interval: estimate -/+ qt(1 - 0.025 / 3, df) * SE (R), labelled 0.98333.
    h = _results()
    a = adjusted_intervals(h)
    q = stats.t.ppf(1 - 0.025 / 3, 40.0)
    assert a.loc[0, "conf_level_adjusted"] == pytest.approx(1 - 0.05 / 3)
    assert a.loc[0, "conf_low_adjusted"] == pytest.approx(8.35 - q * 5.36, rel=1e-12)
    assert a.loc[0, "conf_high_adjusted"] == pytest.approx(8.35 + q * 5.36, rel=1e-12)
    # the old tables.py computation labelled the interval 0.9833 but used the one-tailed
    # quantile at 1 - 0.05 / 3 (a two-sided 0.9667 interval): it must not come back
    wrong = stats.t.ppf(1 - 0.05 / 3, 40.0)
    assert a.loc[0, "conf_high_adjusted"] != pytest.approx(8.35 + wrong * 5.36, rel=1e-6)
    assert a.loc[0, "ci_adjustment"] == "Bonferroni-adjusted over 3 tests of family 'confirmatory'"


def test_ratio_interval_widened_on_log_scale_and_unadjusted_rows_kept():
    h = _results(scale=["rate ratio"] * 3, estimate=[0.8, 1.0, 1.2], df=[np.inf] * 3)
    h["conf_low"] = np.exp(np.log(h["estimate"]) - 1.959964 * h["std_error"] / 10)
    h["conf_high"] = np.exp(np.log(h["estimate"]) + 1.959964 * h["std_error"] / 10)
    a = adjusted_intervals(h)
    f = stats.norm.ppf(1 - 0.05 / 6) / stats.norm.ppf(0.975)  # hand: quantile ratio
    lo = math.exp(math.log(0.8) - (math.log(0.8) - math.log(h.loc[0, "conf_low"])) * f)
    assert a.loc[0, "conf_low_adjusted"] == pytest.approx(lo, rel=1e-12)
    h["adjust_method"] = "none"
    a = adjusted_intervals(h)
    assert a["conf_low_adjusted"].tolist() == pytest.approx(h["conf_low"].tolist())
    assert set(a["ci_adjustment"]) == {"unadjusted"}
    assert a["conf_level_adjusted"].tolist() == [0.95] * 3


def test_fixed_sequence_intervals_are_unadjusted():
    h = _results(adjust_method=["fixed-sequence"] * 3)
    a = adjusted_intervals(h)
    assert a["conf_low_adjusted"].tolist() == pytest.approx(h["conf_low"].tolist())
    assert a.loc[0, "ci_adjustment"].startswith("fixed sequence")


def test_correlation_interval_adjusted_on_fisher_z():
    # r = 0.5 from n = 20 pairs (df = 18): Fisher interval tanh(atanh(r) -/+ z / sqrt(17))
    z = math.atanh(0.5)
    h = _results(scale=["correlation"] * 3, estimate=[0.5, 0.1, 0.2], df=[18.0] * 3)
    h.loc[0, "conf_low"] = math.tanh(z - stats.norm.ppf(0.975) / math.sqrt(17))
    h.loc[0, "conf_high"] = math.tanh(z + stats.norm.ppf(0.975) / math.sqrt(17))
    a = adjusted_intervals(h)
    q = stats.norm.ppf(1 - 0.05 / 6)
    assert a.loc[0, "conf_low_adjusted"] == pytest.approx(math.tanh(z - q / math.sqrt(17)))
    assert a.loc[0, "conf_high_adjusted"] == pytest.approx(math.tanh(z + q / math.sqrt(17)))


def test_adjusted_intervals_need_the_result_columns():
    with pytest.raises(ModelError, match="column"):
        adjusted_intervals(pd.DataFrame({"hypothesis_id": ["H1"]}))
