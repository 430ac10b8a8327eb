"""The delta-adjusted imputation analysed with a crossover estimator other than the
difference in differences (cLDA): each completed data set goes through the primary estimator,
refitted to the new response when its design is unchanged.

Data: ``make_crossover`` of tests/test_analysis.py (SIMULATED). Protocol: version 1.0 of the
shipped protocol (archived), with H1's estimator set to cLDA on a copy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import studykit.analysis as A
from studykit.errors import ProtocolError
from studykit.protocol import parse_protocol
from tests.test_analysis import make_crossover

ROOT = Path(__file__).resolve().parents[1]
V10 = (ROOT / "protocols" / "archive" / "ketamine_sleep_v1.0.yaml").read_text(encoding="utf-8")
CLDA = V10.replace(
    "    effect_of_interest: 5\n", "    effect_of_interest: 5\n    estimator: clda\n", 1
) + (
    "\nsensitivity:\n  - name: tipping_point\n    description: delta-adjusted MI\n"
    "    missing_data: {method: delta_adjusted, deltas: [0, 20, 40], imputations: 4, seed: 5}\n"
    "    hypotheses: [H1]\n"
)


@pytest.fixture(scope="module")
def proto():
    p = parse_protocol(CLDA)
    assert p.plan("H1").model.estimator == "clda"
    return p


def _with_missing():
    s = make_crossover(n=24, seed=7)
    n = s.nights
    gone = n.index[(n["treatment"] == "ketamine") & (n["night"] == "post1")][:5]
    s.nights.loc[gone, "n3_min"] = np.nan
    return s


def test_refit_of_an_unchanged_design_equals_a_new_fit(proto):
    plan = proto.plan("H1")
    df, _, _, plan_fit = A._select(plan, make_crossover(n=24, seed=7))
    prep, model, first = A._estimator_contrasts(plan_fit, df)
    other = df.assign(n3_min=df["n3_min"] + np.random.default_rng(1).normal(0, 5, len(df)))
    _, _, fresh = A._estimator_contrasts(plan_fit, other)
    _, _, reused = A._estimator_contrasts(plan_fit, other, (prep, model))
    for col in ("estimate", "std_error", "df"):
        assert reused[col].iloc[0] == pytest.approx(fresh[col].iloc[0], rel=1e-6), col
    assert fresh["estimate"].iloc[0] != pytest.approx(first["estimate"].iloc[0])


def test_clda_primary_gives_delta_adjusted_rows(proto):
    res = A.run_analysis(proto, _with_missing(), hypotheses=["H1"])
    t = res.hypotheses
    assert t["analysis"].tolist() == ["primary"] + ["tipping_point"] * 3
    mi = t.iloc[1:]
    assert "cLDA" in mi.iloc[0]["model"]
    assert (
        "5 missing post-infusion n3_min values imputed under MAR (5 in ketamine"
        in (mi.iloc[0]["warnings"])
    )
    assert (np.diff(mi["estimate"].to_numpy()) < 0).all()
    # shift 0 is close to the cLDA likelihood analysis (Monte Carlo error only)
    assert abs(mi.iloc[0]["estimate"] - t.iloc[0]["estimate"]) < 0.3 * t.iloc[0]["std_error"]


def test_tipping_points_table_matches_the_rows(proto):
    res = A.run_analysis(proto, _with_missing(), hypotheses=["H1"])
    tp = res.tipping_points
    assert tp[["analysis", "hypothesis_id", "shifts"]].values.tolist() == [
        ["tipping_point", "H1", "+0, -20, -40"]
    ]
    t = res.hypotheses
    assert tp.loc[0, "primary_verdict"] == t.iloc[0]["verdict"]
    mi = t.iloc[1:].reset_index(drop=True)
    differs = mi.index[mi["verdict"] != t.iloc[0]["verdict"]]
    if len(differs):
        assert tp.loc[0, "tipping_verdict"] == mi.loc[differs[0], "verdict"]
        assert mi.loc[differs[0], "contrast"].endswith(
            f"values {tp.loc[0, 'tipping_shift']:+g} (tipping point)"
        )
    else:
        assert np.isnan(tp.loc[0, "tipping_shift"]) and tp.loc[0, "tipping_verdict"] == ""


def test_random_slopes_are_refused_for_the_imputation():
    old = '    random:\n      - {group: participant_id}\n      - {group: "participant_id:period"}\n'
    assert old in V10
    slopes = V10.replace(
        old,
        "    random:\n      - {group: participant_id, slopes: [period]}\n",
        1,  # the nights model (H1, H3, E1, E2, E6)
    )
    entry = (
        "\nsensitivity:\n  - name: tp\n    description: d\n"
        "    missing_data: {method: delta_adjusted, deltas: [0], imputations: 2, seed: 1}\n"
    )
    with pytest.raises(ProtocolError, match="H1.s model has random slopes"):
        parse_protocol(slopes + entry + "    hypotheses: [H1]\n")
    # without a list, such hypotheses are simply not imputed (E3's diary model still is)
    proto = parse_protocol(slopes + entry)
    t = A.run_analysis(proto, make_crossover(n=12), hypotheses=["H1", "E3"]).hypotheses
    assert set(t.loc[t["analysis"] == "tp", "hypothesis_id"]) == {"E3"}
