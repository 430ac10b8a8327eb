"""models.inference: THE p-value and interval of studykit (t / z Wald tests, correlations).

Expected numbers: R 4.x calls written next to each (pt, qt, qnorm, cor.test), and two
independent implementations: scipy.stats.pearsonr and pingouin.corr (test dependency).
"""

import math

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
from scipy import stats

from studykit.errors import ModelError
from studykit.models.inference import (
    confidence_interval,
    correlation_test,
    fisher_interval,
    wald_test,
)


@pytest.mark.parametrize(
    ("alt", "expected"),
    [
        ("two-sided", 2 * stats.t.sf(2.0, 10)),  # R: 2 * pt(-2, 10) = 0.07338803
        ("greater", stats.t.sf(2.0, 10)),  # R: pt(2, 10, lower.tail = FALSE)
        ("less", stats.t.cdf(2.0, 10)),  # R: pt(2, 10)
    ],
)
def test_wald_t_test(alt, expected):
    t, p = wald_test(4.0, 2.0, 10.0, alt)
    assert float(t) == 2.0
    assert float(p) == pytest.approx(expected, rel=1e-12)
    assert float(wald_test(4.0, 2.0, 10.0)[1]) == pytest.approx(0.07338803, rel=1e-6)


def test_wald_z_test_and_degenerate_se():
    _, p = wald_test(np.array([1.959964, -1.0]), 1.0, np.inf)
    assert p[0] == pytest.approx(0.05, rel=1e-6)  # R: 2 * pnorm(-1.959964)
    t, p = wald_test(1.0, 0.0, 5.0)
    assert math.isnan(float(t)) and math.isnan(float(p))
    with pytest.raises(ModelError, match="Invalid 'alternative'"):
        wald_test(1.0, 1.0, 5.0, "one-sided")


def test_intervals_two_and_one_sided():
    lo, hi = confidence_interval(10.0, 2.0, 20.0, 0.95)
    q = stats.t.ppf(0.975, 20)  # R: qt(0.975, 20) = 2.085963
    assert (float(lo), float(hi)) == pytest.approx((10 - 2 * q, 10 + 2 * q), rel=1e-12)
    lo, hi = confidence_interval(10.0, 2.0, 20.0, 0.95, "greater")
    assert float(lo) == pytest.approx(10 - 2 * stats.t.ppf(0.95, 20)) and math.isinf(hi)
    lo, hi = confidence_interval(10.0, 2.0, np.inf, 0.95, "less")
    assert math.isinf(lo) and float(hi) == pytest.approx(10 + 2 * 1.644854, rel=1e-6)
    with pytest.raises(ModelError, match="level"):
        confidence_interval(1.0, 1.0, 5.0, 95)


@pytest.fixture
def xy():
    rng = np.random.default_rng(11)
    x = rng.normal(size=25)
    return x, 0.4 * x + rng.normal(size=25)


@pytest.mark.parametrize("alt", ["two-sided", "greater", "less"])
def test_correlation_matches_scipy(xy, alt):
    x, y = xy
    r = float(np.corrcoef(x, y)[0, 1])
    ours = correlation_test(r, len(x), alternative=alt, level=0.9)
    ref = stats.pearsonr(x, y, alternative=alt)
    assert ours["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    lo, hi = stats.pearsonr(x, y).confidence_interval(0.9)  # two-sided Fisher z
    assert (ours["conf_low"], ours["conf_high"]) == pytest.approx((lo, hi), rel=1e-9)


def test_correlation_matches_pingouin(xy):
    x, y = xy
    r = float(np.corrcoef(x, y)[0, 1])
    ours = correlation_test(r, len(x))
    ref = pg.corr(pd.Series(x), pd.Series(y))
    assert ours["p_value"] == pytest.approx(float(ref["p_val"].iloc[0]), rel=1e-9)
    ci = ref["CI95"].iloc[0]  # pingouin rounds its interval to 2 decimals
    assert (ours["conf_low"], ours["conf_high"]) == pytest.approx(tuple(ci), abs=0.005)


def test_fisher_interval_edges():
    assert all(math.isnan(v) for v in fisher_interval(0.5, 3, 0.95))  # n <= 3
    out = correlation_test(1.0, 10, alternative="less")
    assert out["statistic"] == math.inf and out["p_value"] == 1.0
