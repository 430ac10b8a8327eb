"""studykit.estimators against R (lmerTest / emmeans / pbkrtest / glmer) on SIMULATED data.

Reference numbers: tests/data/estimators/reference.csv, made by
``Rscript tests/data/estimators/reference.R`` (R 4.2.2, lme4 1.1-31, lmerTest 3.1-3, emmeans
1.8.4-1, pbkrtest 0.5.2; see tests/data/estimators/PROVENANCE.md). Tolerances as in
tests/data/lme4/PROVENANCE.md: estimates rtol 1e-6 (atol 1e-6 for near-zero), SEs rtol 1e-3,
Satterthwaite/KR df rtol 1e-4 (KR 1e-3), p-values rtol 1e-3.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from studykit.errors import ModelError
from studykit.estimators import (
    ESTIMATORS,
    CrossoverSpec,
    compare_estimators,
    estimate,
    example_data,
    prepare,
)

DATA = Path(__file__).parent / "data" / "estimators"
REF = pd.read_csv(DATA / "reference.csv")

CASES = {
    "demo_n3_post1": ("demo_nights.csv", "n3_min", ("baseline", "post1", "post2"), ("post1",), "gaussian"),
    "demo_n3_single": ("demo_nights.csv", "n3_min", ("baseline", "post1"), ("post1",), "gaussian"),
    "generic_mean_post": ("generic_crossover.csv", "n3_min", ("baseline", "post1", "post2"), ("post1", "post2"), "gaussian"),
    "generic_single": ("generic_crossover.csv", "n3_min", ("baseline", "post1"), ("post1",), "gaussian"),
    "demo_awakenings_poisson": ("demo_nights.csv", "n_awakenings", ("baseline", "post1", "post2"), ("post1",), "poisson"),
}  # fmt: skip


def _rows():
    for r in REF.itertuples(index=False):
        yield pytest.param(r, id=f"{r.case}-{r.estimator}-{r.df_method}")


@pytest.mark.parametrize("ref", list(_rows()))
def test_estimator_matches_r(ref):
    file, outcome, window, levels, family = CASES[ref.case]
    data = pd.read_csv(DATA / file)
    spec = CrossoverSpec(outcome, family=family, window=window, levels=levels)
    df_method = "satterthwaite" if ref.df_method == "z" else ref.df_method
    row = estimate(data, ref.estimator, spec, df_method=df_method).table.iloc[0]
    if ref.df_method == "z":
        # glmer (Laplace): tests/data/glmm tolerances - log-scale estimates atol 1e-4, SEs
        # rtol 5e-3 (glmer's vcov comes from its finite-difference Hessian)
        assert np.isinf(row.df) and row.df_method == "z"
        assert row.estimate == pytest.approx(ref.estimate, abs=1e-4)
        assert row.std_error == pytest.approx(ref.std_error, rel=5e-3)
        assert np.log(row.p_value) == pytest.approx(np.log(ref.p_value), rel=1e-2, abs=2e-2)
        assert row.conf_low == pytest.approx(ref.conf_low, abs=2e-3)
        assert row.conf_high == pytest.approx(ref.conf_high, abs=2e-3)
        return
    assert row.estimate == pytest.approx(ref.estimate, rel=1e-6, abs=1e-6)
    assert row.std_error == pytest.approx(ref.std_error, rel=1e-3)
    assert row.df == pytest.approx(ref.df, rel=1e-4 if ref.df_method == "satterthwaite" else 1e-3)
    assert row.p_value == pytest.approx(ref.p_value, rel=1e-3)
    assert row.conf_low == pytest.approx(ref.conf_low, rel=1e-3, abs=1e-3)
    assert row.conf_high == pytest.approx(ref.conf_high, rel=1e-3, abs=1e-3)


def test_every_gaussian_estimator_has_a_reference():
    assert set(REF.loc[REF.df_method == "satterthwaite", "estimator"]) == set(ESTIMATORS)


def test_ancova_covariates_by_hand():
    # participant a: baselines 30 (period 1) and 31 (period 2) -> mean 30.5, deviations -0.5/+0.5
    df = pd.DataFrame({
        "participant_id": ["a"] * 4 + ["b"] * 2,
        "period": [1, 1, 2, 2, 1, 1],
        "treatment": ["placebo", "placebo", "ketamine", "ketamine", "ketamine", "ketamine"],
        "night": ["baseline", "post1"] * 3,
        "y": [30.0, 32, 31, 40, 25, 33],
    })  # fmt: skip
    prep = prepare(df, "ancova", CrossoverSpec("y", window=("baseline", "post1")))
    got = prep.data.set_index(["participant_id", "period"])[["bl_within", "bl_mean"]]
    assert got.loc[("a", 1)].tolist() == [-0.5, 30.5]
    assert got.loc[("b", 1)].tolist() == [0.0, 25.0]  # one period: deviation 0


def test_ancova_drops_a_period_without_baseline_and_counts_it():
    df = example_data(seed=2, n=8, nights=("baseline", "post1"))
    df.loc[
        (df.participant_id == "S001") & (df.period == 1) & (df.night == "baseline"), "n3_min"
    ] = np.nan
    prep = prepare(df, "ancova", CrossoverSpec("n3_min", window=("baseline", "post1")))
    assert prep.n_excluded == 1
    assert len(prep.data) == 15


def test_clda_indicator_is_ketamine_on_post_nights_only():
    df = example_data(seed=3, n=4)
    prep = prepare(df, "clda", CrossoverSpec("n3_min", window=("baseline", "post1", "post2")))
    d = prep.data
    expected = ((d.treatment == "ketamine") & (d.night == "post1")).astype(float)
    assert (d["tx_post1"] == expected).all()
    assert "treatment" not in prep.fixed


def test_missing_contrast_level_is_a_clear_error():
    df = example_data(seed=3, n=4, nights=("baseline", "post1"))
    with pytest.raises(ModelError, match="post2"):
        prepare(
            df,
            "did",
            CrossoverSpec("n3_min", window=("baseline", "post1", "post2"), levels=("post2",)),
        )


def test_window_levels_not_recorded_are_dropped():
    df = example_data(seed=3, n=6, nights=("baseline", "post1"))
    a = estimate(df, "did", CrossoverSpec("n3_min", window=("baseline", "post1", "day7")))
    b = estimate(df, "did", CrossoverSpec("n3_min", window=("baseline", "post1")))
    assert a.table.estimate.iloc[0] == b.table.estimate.iloc[0]


def test_ancova_refused_for_counts():
    df = pd.read_csv(DATA / "demo_nights.csv")
    spec = CrossoverSpec("n_awakenings", family="poisson")
    with pytest.raises(ModelError, match="Gaussian"):
        prepare(df, "ancova", spec)
    assert "ancova" not in compare_estimators(df, spec)["estimator"].tolist()


def test_one_sided_alternative_reaches_the_table():
    df = example_data(seed=5, n=12)
    spec = CrossoverSpec("n3_min")
    two = estimate(df, "clda", spec).table.iloc[0]
    one = estimate(df, "clda", spec, alternative="greater").table.iloc[0]
    assert one.alternative == "greater"
    assert one.p_value == pytest.approx(
        two.p_value / 2 if two.statistic > 0 else 1 - two.p_value / 2
    )
