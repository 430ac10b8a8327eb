"""Crossed and multi-term linear mixed models against lme4 / lmerTest / pbkrtest.

References: tests/data/lme4/crossed/ (made by make_crossed.R there; see
tests/data/lme4/PROVENANCE.md). Tolerances are those of tests/data/lme4/PROVENANCE.md: fixed
effects rtol 1e-6, SEs and variance components rtol 1e-3, log-likelihood atol 1e-4,
Satterthwaite df rtol 1e-4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from studykit.errors import ModelError
from studykit.models.lmm import fit_lmm
from studykit.models.random_effects import RandomEffect

DATA = Path(__file__).parent / "data" / "lme4" / "crossed"
LEVELS = {"arm": ["placebo", "ketamine"], "Information": ["1", "2"], "Gender": ["1", "2"]}


def _crossed() -> pd.DataFrame:
    return pd.read_csv(DATA / "crossed_sim.csv")  # SIMULATED


def _ham() -> pd.DataFrame:
    ham = pd.read_csv(DATA / "ham.csv", dtype={"Consumer": str, "Product": str})
    ham = ham.astype({"Information": str, "Gender": str})
    return ham.rename(columns={"Informed.liking": "liking"})


MODELS = {
    "crossed_ri": (_crossed, "y", ["arm", "x"], [("id", ["1"]), ("scorer", ["1"])]),
    "crossed_rs": (_crossed, "y", ["arm", "x"], [("id", ["1", "x"]), ("scorer", ["1"])]),
    "crossed_uncor": (
        _crossed,
        "y",
        ["arm", "x"],
        [RandomEffect("id", ("1", "x"), correlated=False), RandomEffect("scorer")],
    ),
    "ham": (
        _ham,
        "liking",
        ["Information", "Gender", "Information:Gender"],
        [("Consumer", ["1"]), ("Product", ["1"]), ("Consumer:Product", ["1"])],
    ),
}
CASES = [(m, reml) for m in MODELS for reml in (True, False)]


@pytest.fixture(scope="module")
def fits() -> dict[str, object]:
    out = {}
    for name, (load, y, fixed, random) in MODELS.items():
        data = load()
        for reml in (True, False):
            key = f"{name}_{'reml' if reml else 'ml'}"
            out[key] = fit_lmm(data, y, fixed, random=random, levels=LEVELS, reml=reml)
    return out


@pytest.mark.parametrize(("name", "reml"), CASES)
def test_crossed_matches_lmertest(fits, name: str, reml: bool) -> None:
    key = f"{name}_{'reml' if reml else 'ml'}"
    fit = fits[key]
    ref = pd.read_csv(DATA / "r_fixef.csv").query("model == @key")
    stats = pd.read_csv(DATA / "r_fit_stats.csv").query("model == @key").iloc[0]
    assert fit.converged and not fit.singular
    np.testing.assert_allclose(fit.beta, ref["estimate"], rtol=1e-6)
    table = fit.coef_table()
    np.testing.assert_allclose(table["std_error"], ref["std_error"], rtol=1e-3)
    np.testing.assert_allclose(table["df"], ref["df"], rtol=1e-4)
    np.testing.assert_allclose(table["p_value"], ref["p_value"], rtol=1e-3)
    assert fit.loglik == pytest.approx(stats["loglik"], abs=1e-4)
    assert fit.sigma == pytest.approx(stats["sigma"], rel=1e-3)
    vc = pd.read_csv(DATA / "r_varcorr.csv").query("model == @key")
    ours = fit.varcorr()
    r_var = vc[vc["var2"].isna()].groupby("grp")["vcov"].sum().sort_index()
    o_var = ours[ours["var2"].isna()].groupby("group")["vcov"].sum().sort_index()
    # lme4 names the terms of (1 + x || id) "id" and "id.1"; compare per grouping column
    r_var.index = [g.split(".")[0] for g in r_var.index]
    r_var = r_var.groupby(level=0).sum().sort_index()
    np.testing.assert_allclose(o_var.to_numpy(), r_var.to_numpy(), rtol=1e-3)
    if reml:
        kr = fit.coef_table(df_method="kenward-roger")
        np.testing.assert_allclose(kr["std_error"], ref["std_error_kr"], rtol=1e-3)
        np.testing.assert_allclose(kr["df"], ref["df_kr"], rtol=1e-4)


def test_crossed_ranef_sum_to_the_blups(fits) -> None:
    """ranef() returns one row per level of every term; fitted values use all of them."""
    fit = fits["crossed_ri_reml"]
    re = fit.ranef()
    assert set(re["group"]) == {"id", "scorer"}
    assert (re["group"] == "id").sum() == 60 and (re["group"] == "scorer").sum() == 12
    # the conditional modes are centred (an identity of the penalized least squares solution)
    assert abs(re.loc[re["group"] == "scorer", "(Intercept)"].mean()) < 0.5


def test_refit_crossed_matches_fresh_fit(fits) -> None:
    data = _crossed()
    fit = fits["crossed_ri_reml"]
    y2 = data["y"].to_numpy() * 1.5 + 3.0
    fresh = fit_lmm(
        data.assign(y=y2), "y", ["arm", "x"], random=MODELS["crossed_ri"][3], levels=LEVELS
    )
    np.testing.assert_allclose(fit.refit(y2).beta, fresh.beta, rtol=1e-8)


@pytest.mark.parametrize(
    ("random", "message"),
    [
        ([("id", ["1"]), ("rater", ["1"])], "Grouping column .rater. of the random effect"),
        ([("id", ["1", "const"])], "no variation"),
        ([("id", ["1", "per_id"])], "does not vary within any level"),
        ([(["id", "scorer"], ["1"]), ("bogus group!", ["1"])], "not a column name"),
        ([{"group": ["id", 3]}], "must be one column name"),
    ],
)
def test_bad_random_effects_are_model_errors(random, message: str) -> None:
    data = _crossed().assign(const=1.0)
    data["per_id"] = data["id"].str[1:].astype(float)
    with pytest.raises(ModelError, match=message):
        fit_lmm(data, "y", ["arm"], random=random, levels=LEVELS)


def _simulated_crossed_with_slopes() -> pd.DataFrame:
    """SIMULATED: 40 participants x 12 scorers, 3 periods, a covariate, 20 % rows dropped."""
    rng = np.random.default_rng(3)
    ids = np.repeat(np.arange(40), 12)
    sc = np.tile(np.arange(12), 40)
    x = rng.normal(size=ids.size)
    y = (
        1.0
        + x
        + 2.0 * rng.normal(size=40)[ids]
        + rng.normal(size=40)[ids] * x
        + rng.normal(size=12)[sc] * (1.0 + x)
        + rng.normal(size=ids.size)
    )
    keep = rng.random(ids.size) > 0.2
    per = rng.integers(0, 3, ids.size)
    return pd.DataFrame({"id": ids, "sc": sc, "x": x, "y": y, "per": per})[keep]


@pytest.mark.parametrize(
    "random",
    [
        [("Consumer", ["1"]), ("Product", ["1"]), ("Consumer:Product", ["1"])],
        [("id", ["1", "x"]), ("sc", ["1"])],
        [("id", ["1"]), ("sc", ["1", "x"])],
        [RandomEffect("id", ("1", "x"), correlated=False), ("sc", ["1", "x"])],
        [("id", ["1"]), ("id:per", ["1"]), ("sc", ["1"])],
    ],
)
@pytest.mark.parametrize("reml", [True, False])
def test_analytic_gradient_equals_central_differences(random, reml: bool) -> None:
    """The crossed engine's analytic gradients of log|.| and r2 (the optimizer's) against
    central differences of the same deviance pieces (step 1e-5: error ~1e-9 here)."""
    if isinstance(random[0], tuple) and random[0][0] == "Consumer":
        data, y, fixed = _ham(), "liking", ["Information", "Gender", "Information:Gender"]
    else:
        data, y, fixed = _simulated_crossed_with_slopes(), "y", ["x"]
    fit = fit_lmm(data, y, fixed, random=random, levels=LEVELS, reml=reml)
    st = fit._struct
    h = 1e-5
    diag = np.isfinite(st.lower)
    thetas = [np.where(diag, 0.8, 0.3), np.where(diag, 1.7, -0.4)]
    if not fit.singular:
        thetas.append(fit.theta)
    for theta in thetas:
        pieces = st._pieces(theta, reml)
        got = st._analytic_gradient(pieces)
        assert got is not None
        for k in range(st.ntheta):
            e = np.zeros(st.ntheta)
            e[k] = h
            up, down = st._pieces(theta + e, reml), st._pieces(theta - e, reml)
            for piece, value in zip(("ldet", "r2"), got, strict=True):
                fd = (up[piece] - down[piece]) / (2.0 * h)
                assert value[k] == pytest.approx(fd, rel=1e-6, abs=1e-6 * max(1.0, abs(fd)))
