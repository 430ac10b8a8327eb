"""CONSORT crossover items computed from study tables (studykit.consort).

Expected numbers are hand counts of the small tables written in each test, or identities
that hold for any study (received + lost = randomised per sequence and period).
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from studykit import consort as C
from studykit.errors import InputError
from studykit.simulate import simulate_study


def _tables():
    # 4 participants, AB/BA; P4 (PK) withdrew after period 1; P2 misses post1 of period 2.
    roster = pd.DataFrame(
        {
            "participant_id": ["P1", "P2", "P3", "P4"],
            "sequence": ["KP", "KP", "PK", "PK"],
            "status": ["completed", "completed", "completed", "withdrawn"],
            "withdrawal_reason": [None, None, None, "adverse event"],
        }
    )
    periods = pd.DataFrame(
        {
            "participant_id": ["P1", "P1", "P2", "P2", "P3", "P3", "P4"],
            "period": [1, 2, 1, 2, 1, 2, 1],
            "treatment": ["ketamine", "placebo"] * 2 + ["placebo", "ketamine", "placebo"],
            "infusion_datetime": [
                "2025-01-01T10:00",
                "2025-01-15T10:00",
                "2025-01-02T10:00",
                "2025-01-23T10:00",
                "2025-01-03T10:00",
                "2025-01-24T22:00",
                "2025-01-04T10:00",
            ],
        }
    )
    rows = []
    for pid, per, tr in periods[["participant_id", "period", "treatment"]].itertuples(index=False):
        for night in ("baseline", "post1"):
            if (pid, per, night) == ("P2", 2, "post1"):
                continue
            rows.append((pid, per, tr, night))
    nights = pd.DataFrame(rows, columns=["participant_id", "period", "treatment", "night"])
    base = {"P1": 60.0, "P2": 50.0, "P3": 40.0, "P4": 30.0}
    effect = {"ketamine": 10.0, "placebo": 0.0}
    nights["n3_min"] = [
        base[p] + (effect[t] if n == "post1" else 0.0) + per
        for p, per, t, n in nights[["participant_id", "period", "treatment", "night"]].itertuples(
            index=False
        )
    ]
    return roster, periods, nights


def _get(flow, **where):
    sel = pd.Series(True, index=flow.index)
    for k, v in where.items():
        sel &= flow[k] == v
    return flow[sel]


def test_flow_by_sequence_and_period_hand_counts():
    roster, periods, nights = _tables()
    f = C.crossover_flow(roster, periods, nights, sequence_order=["KP", "PK"])
    assert list(f.columns) == list(C.FLOW_COLUMNS)
    # hand counts: 2 per sequence randomised, 4 in all
    assert _get(f, step="randomised").set_index("sequence")["n"].to_dict() == {
        "KP": 2,
        "PK": 2,
        "all": 4,
    }
    received = _get(f, step="received").set_index(["sequence", "period"])
    assert received["n"].to_dict() == {("KP", 1): 2, ("KP", 2): 2, ("PK", 1): 2, ("PK", 2): 1}
    assert received["treatment"].to_dict()[("PK", 2)] == "ketamine"
    lost = _get(f, step="lost")
    assert lost[["sequence", "period", "n", "reason"]].to_numpy().tolist() == [
        ["PK", 2, 1, "adverse event"]
    ]
    # nights: KP period 2 planned 2 x 2 = 4, recorded 3, missing 1 post1
    kp2 = _get(f, sequence="KP", period=2)
    assert _get(kp2, step="nights planned")["n"].tolist() == [4]
    assert _get(kp2, step="nights recorded")["n"].tolist() == [3]
    assert _get(kp2, step="nights missing")[["n", "reason"]].to_numpy().tolist() == [
        [1, "post1 not recorded"]
    ]


def test_participants_and_nights_are_never_mixed():
    roster, periods, nights = _tables()
    f = C.crossover_flow(roster, periods, nights)
    units = f.groupby("step")["unit"].unique().map(list).to_dict()
    for step, unit in units.items():
        assert len(unit) == 1, step  # one unit per step
        assert (unit[0] == "nights") == step.startswith("nights"), step


def test_flow_identities_on_a_simulated_study():
    study = simulate_study(seed=11, n_participants=12)
    f = C.crossover_flow(study.roster, study.periods, study.nights)
    randomised = _get(f, step="randomised").set_index("sequence")["n"]
    assert randomised["all"] == len(study.roster) == 12
    for (seq, period), g in f[f["period"] > 0].groupby(["sequence", "period"]):
        got = int(_get(g, step="received")["n"].sum())
        lost = int(_get(g, step="lost")["n"].sum())
        assert got + lost == randomised[seq], (seq, period)
        planned = int(_get(g, step="nights planned")["n"].sum())
        recorded = int(_get(g, step="nights recorded")["n"].sum())
        missing = int(_get(g, step="nights missing")["n"].sum())
        assert planned == recorded + missing
    n_recorded = int(_get(f, step="nights recorded")["n"].sum())
    assert n_recorded == len(study.nights.drop_duplicates(["participant_id", "period", "night"]))


def test_washout_days_hand_computed():
    roster, periods, _ = _tables()
    w = C.washout(periods, roster).set_index("sequence")
    # KP: 14 and 21 days; PK: P3 21.5 days (P4 has no period 2)
    assert w.loc["KP", ["n", "median_days", "min_days", "max_days"]].tolist() == [2, 17.5, 14, 21]
    assert w.loc["PK", ["n", "median_days"]].tolist() == [1, 21.5]
    assert w.loc["all", "n"] == 3


def test_baseline_and_cell_means_by_sequence_and_period():
    roster, _, nights = _tables()
    base = C.sequence_period_means(
        nights, roster, outcomes=["n3_min"], time="night", times=["baseline"]
    )
    # baseline n3 = participant level + period: KP period 1 = (61 + 51) / 2
    kp1 = base[(base["sequence"] == "KP") & (base["period"] == 1)].iloc[0]
    assert (kp1["n"], kp1["mean"], kp1["treatment"]) == (2, 56.0, "ketamine")
    pk2 = base[(base["sequence"] == "PK") & (base["period"] == 2)].iloc[0]
    assert (pk2["n"], pk2["mean"]) == (1, 42.0) and math.isnan(pk2["sd"])
    post = C.sequence_period_means(
        nights, roster, outcomes=["n3_min"], time="night", times=["post1"]
    )
    kp2 = post[(post["sequence"] == "KP") & (post["period"] == 2)].iloc[0]
    assert kp2["n"] == 1  # P2 missed post1 of period 2


def test_within_participant_differences_change_from_baseline():
    roster, _, nights = _tables()
    w = C.within_participant_differences(
        nights, roster, outcome="n3_min", time="night", at="post1", baseline="baseline"
    )
    # changes: ketamine +10, placebo 0 -> difference 10 for P1 and P3; P2 lacks period-2
    # post1, P4 lacks period 2: both dropped
    assert w[["participant_id", "sequence", "difference"]].to_numpy().tolist() == [
        ["P1", "KP", 10.0],
        ["P3", "PK", 10.0],
    ]
    s = C.summarise_differences(w, sequence_order=["KP", "PK"]).set_index("sequence")
    assert s.loc["all", "n"] == 2 and s.loc["all", "mean"] == 10.0


def test_analysed_by_period_counts_units_separately():
    roster, _, nights = _tables()
    data = nights[~((nights["participant_id"] == "P1") & (nights["period"] == 2))]
    ex = pd.DataFrame(
        {
            "hypothesis_id": ["H1"],
            "participant_id": ["P1"],
            "period": ["2"],  # the analysis writes periods as text
            "n_observations": [2],
            "reason": ["sedative use"],
        }
    )
    t = C.analysed_by_period({"H1": data}, roster, exclusions=ex).set_index(["sequence", "period"])
    assert t.loc[("KP", 2), ["participants", "observations", "periods_excluded"]].tolist() == [
        1,
        1,
        1,
    ]
    assert t.loc[("KP", 2), "excluded_reasons"] == "sedative use (1)"


def test_missing_columns_are_input_errors():
    roster, periods, _ = _tables()
    with pytest.raises(InputError, match="roster table has no column"):
        C.crossover_flow(roster.drop(columns="sequence"), periods)
    with pytest.raises(InputError, match="no night 'post9'"):
        C.within_participant_differences(
            _tables()[2], roster, outcome="n3_min", time="night", at="post9"
        )
