"""Intercurrent events with their timing, and the hypothetical strategy that keeps the data
before the event (``handling: exclude_after_event``).

Studies are built here (``make_crossover`` of tests/test_analysis.py: a balanced, SIMULATED
crossover with nights baseline, post1, post2, day7 = night_index 0, 1, 2, 7 and diary days
0-4) or simulated by studykit.simulate; every expected count below is a hand count of the rows
those builders write.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import studykit.analysis as A
from studykit.dictionary import load_dictionary
from studykit.errors import ProtocolError
from studykit.protocol import parse_protocol
from studykit.simulate import simulate_study
from studykit.validate import validate_table
from tests.test_analysis import make_crossover

ROOT = Path(__file__).resolve().parents[1]
#: Version 1.0 of the shipped protocol (archived when amendment 1.1 replaced it): whole-period
#: exclusion for intercurrent events, difference in differences, no sensitivity section; the
#: tests switch its pieces on a copy (1.1 already uses exclude_after_event and a sensitivity list).
V10 = (ROOT / "protocols" / "archive" / "ketamine_sleep_v1.0.yaml").read_text(encoding="utf-8")
DD = load_dictionary()

SEDATIVE_ICE = """      variable: sedative_use
      table: periods
      strategy: hypothetical
      handling: exclude_period"""
ALCOHOL_ICE = """      variable: alcohol_use
      table: periods
      strategy: hypothetical
      handling: exclude_period"""


def after_event_protocol(text: str = V10):
    """Protocol 1.0 with both events handled by exclude_after_event (a copy)."""
    for old, flag in ((SEDATIVE_ICE, "sedative"), (ALCOHOL_ICE, "alcohol")):
        if old in text:
            new = old.replace("handling: exclude_period", "handling: exclude_after_event")
            new = new.replace("table: periods", f"timing: {flag}_first_night\n      table: periods")
            text = text.replace(old, new)
    assert "exclude_after_event" in text
    return parse_protocol(text, dictionary=DD)


PROTO = after_event_protocol()


def _period(s, pid, period):
    return (s.periods["participant_id"] == pid) & (s.periods["period"] == period)


# ------------------------------------------------------------------ dictionary
@pytest.mark.parametrize("flag", ["sedative", "alcohol"])
def test_timing_columns_are_defined_on_the_night_index_scale(flag):
    v = DD.get("periods", f"{flag}_first_night")
    night_index = DD.get("nights", "night_index")
    day = DD.get("diary", "day")
    assert v.type == "integer" and v.unit == "nights"
    # the same range as the observations' own times (night_index and diary day: 0-14)
    assert (v.minimum, v.maximum) == (night_index.minimum, night_index.maximum)
    assert (v.minimum, v.maximum) == (day.minimum, day.maximum)
    assert not v.required  # required only when the event happened (a validation rule)
    assert f"{flag}_use" in v.description and "night_index" in v.description


# ------------------------------------------------------------------ validation
def _periods_csv(tmp_path, rows):
    p = tmp_path / "periods.csv"
    head = "participant_id,period,treatment,dose_mg_kg,sedative_use,sedative_first_night,alcohol_use,alcohol_first_night\n"
    p.write_text(head + "".join(r + "\n" for r in rows), encoding="utf-8")
    return p


def test_timing_validated_with_file_row_column_value_and_rule(tmp_path):
    p = _periods_csv(
        tmp_path,
        [
            "P01,1,ketamine,0.5,1,1,0,",  # row 2: fine
            "P01,2,placebo,0,0,2,0,",  # row 3: timing without the event
            "P02,1,ketamine,0.5,1,,0,",  # row 4: event without timing
            "P02,2,placebo,0,0,,1,20",  # row 5: out of range (0-14 nights)
            "P03,1,ketamine,0.5,0,,,3",  # row 6: timing, flag empty
            "P03,2,placebo,0,0,,1,x",  # row 7: not an integer
        ],
    )
    r = validate_table(p, "periods", dictionary=DD)
    got = r.issues[["file", "row", "column", "value", "rule", "severity"]].values.tolist()
    got = [[Path(f).name, *rest] for f, *rest in got]
    assert ["periods.csv", 5, "alcohol_first_night", "20", "range", "error"] in got
    assert [row for row in got if row[1] == 7][0][2:3] == ["alcohol_first_night"]
    timing = [row for row in got if row[4] == "event_timing"]
    assert timing == [
        [
            "periods.csv",
            3,
            "sedative_use, sedative_first_night",
            "sedative_use=False; sedative_first_night=2",
            "event_timing",
            "error",
        ],
        [
            "periods.csv",
            4,
            "sedative_use, sedative_first_night",
            "sedative_use=True; sedative_first_night=",
            "event_timing",
            "warning",
        ],
        [
            "periods.csv",
            6,
            "alcohol_use, alcohol_first_night",
            "alcohol_use=; alcohol_first_night=3",
            "event_timing",
            "warning",
        ],
        # 'x' did not parse (an error of its own): the event is then without its timing
        [
            "periods.csv",
            7,
            "alcohol_use, alcohol_first_night",
            "alcohol_use=True; alcohol_first_night=",
            "event_timing",
            "warning",
        ],
    ]
    # the timing without its event is rejected; the others are accepted (warnings only)
    assert sorted(r.rejected.index.tolist()) == [3, 5, 7]


# ------------------------------------------------------------------ simulator
def test_simulator_records_when_each_event_happened():
    s = simulate_study(seed=3, n_participants=8)  # SIMULATED
    (sed_pid, sed_period), (alc_pid, alc_period) = (
        s.mess["sedative_use"][0],
        s.mess["alcohol_use"][0],
    )
    p = s.periods.set_index(["participant_id", "period"])
    assert p.loc[(sed_pid, sed_period), "sedative_first_night"] == 1
    assert p.loc[(alc_pid, alc_period), "alcohol_first_night"] == 0
    # exactly the flagged periods carry a timing
    assert p["sedative_first_night"].notna().tolist() == (p["sedative_use"] == 1).tolist()
    assert p["alcohol_first_night"].notna().tolist() == (p["alcohol_use"] == 1).tolist()
    # the simulated sedative acts on the nights from its first night on, not before
    clean = simulate_study(seed=3, n_participants=8, mess=False)
    key = ["participant_id", "period", "night"]
    a = s.night_parameters.set_index(key)["sol_min"]
    b = clean.night_parameters.set_index(key)["sol_min"]
    assert a.loc[(sed_pid, sed_period, "baseline")] == b.loc[(sed_pid, sed_period, "baseline")]
    for night in ("post1", "post2"):
        assert a.loc[(sed_pid, sed_period, night)] == pytest.approx(
            0.6 * b.loc[(sed_pid, sed_period, night)]
        )


# ------------------------------------------------------------------ protocol
def test_exclude_after_event_needs_a_numeric_timing_of_the_events_table():
    with pytest.raises(ProtocolError, match="exclude_after_event' needs 'timing'"):
        parse_protocol(
            V10.replace(
                SEDATIVE_ICE, SEDATIVE_ICE.replace("exclude_period", "exclude_after_event")
            ),
            dictionary=DD,
        )
    swap = SEDATIVE_ICE.replace("table: periods", "timing: treatment\n      table: periods")
    with pytest.raises(ProtocolError, match="'treatment' is 'categorical'"):
        parse_protocol(V10.replace(SEDATIVE_ICE, swap), dictionary=DD)
    swap = SEDATIVE_ICE.replace("table: periods", "timing: n3_min\n      table: periods")
    with pytest.raises(ProtocolError, match="'n3_min' is not a variable of the event's table"):
        parse_protocol(V10.replace(SEDATIVE_ICE, swap), dictionary=DD)
    ice = PROTO.get("H1").estimand.intercurrent_events[0]
    assert (ice.handling, ice.timing) == ("exclude_after_event", "sedative_first_night")
    assert "earlier data kept" in PROTO.get("H1").estimand.text()
    # the plan reads the timing and the nights' own time
    assert {"sedative_first_night", "night_index"} <= set(PROTO.plan("H1").selection.columns)


# ------------------------------------------------------------------ analysis
def _with_event(night=None, *, flag="sedative", pid="P03", period=2):
    s = make_crossover()
    for f in ("sedative", "alcohol"):
        s.periods[f"{f}_first_night"] = pd.array([None] * len(s.periods), dtype="Int64")
    s.periods.loc[_period(s, pid, period), f"{flag}_use"] = True
    s.periods.loc[_period(s, pid, period), f"{flag}_first_night"] = night
    return s


def test_nights_before_the_event_are_kept_and_later_ones_excluded_with_reason():
    s = _with_event(2)  # first night after the sedative: post2 (night_index 2)
    r = A.run_analysis(PROTO, s, hypotheses=["H1"]).hypotheses.iloc[0]
    # make_crossover: 16 participants x 2 periods x 4 nights = 128; P03 period 2 loses
    # post2 (2) and day7 (7), keeps baseline (0) and post1 (1)
    assert (r["n_observations"], r["n_excluded"]) == (126, 2)
    assert r["excluded_reasons"] == (
        "concomitant sedative use within 72 h of the infusion (hypothetical strategy: "
        "observations from the event on excluded, sedative_first_night): 2 obs "
        "(1 participant-periods, 1 participants)"
    )
    kept = A.run_analysis(PROTO, s, hypotheses=["H1"]).fit("H1").data
    kept = kept[(kept["participant_id"] == "P03") & (kept["period"].astype(str) == "2")]
    assert sorted(kept["night"]) == ["baseline", "post1"]


def test_event_before_the_baseline_night_excludes_the_whole_period():
    res = A.run_analysis(PROTO, _with_event(0), hypotheses=["H1"])
    assert res.hypotheses.loc[0, "n_excluded"] == 4  # all four nights of P03 period 2


def test_diary_days_from_the_events_night_on_are_excluded():
    res = A.run_analysis(PROTO, _with_event(3), hypotheses=["E3"])
    ex = res.exclusions()
    # days 0-4 per period; first night after the event 3 -> days 3 and 4 excluded
    assert ex["n_observations"].tolist() == [2]
    data = res.fit("E3").data
    days = data.loc[(data["participant_id"] == "P03") & (data["period"].astype(str) == "2"), "day"]
    assert sorted(days.astype(int)) == [0, 1, 2]


def test_event_without_a_recorded_time_excludes_the_period_with_a_warning():
    res = A.run_analysis(PROTO, _with_event(None), hypotheses=["H1"])
    r = res.hypotheses.iloc[0]
    assert r["n_excluded"] == 4
    assert "sedative_first_night not recorded, period excluded): 4 obs" in r["excluded_reasons"]
    assert (
        "sedative_first_night not recorded for 1 affected period(s): the whole period "
        "excluded (conservative)"
    ) in r["warnings"]


def test_period_level_correlation_uses_the_latest_night_it_reads():
    # E7 reads nights baseline and post1 (night_index 1) of ketamine periods: an event from
    # night 2 on leaves the period in, an event from night 1 takes it out
    pid = "P01"  # sequence KP: ketamine in period 1
    late = A.run_analysis(PROTO, _with_event(2, pid=pid, period=1), hypotheses=["E7"])
    early = A.run_analysis(PROTO, _with_event(1, pid=pid, period=1), hypotheses=["E7"])
    assert late.hypotheses.loc[0, "n_observations"] == 16 and len(late.exclusions()) == 0
    assert early.hypotheses.loc[0, "n_observations"] == 15
    assert early.exclusions()["participant_id"].tolist() == [pid]


def test_treatment_policy_sensitivity_still_uses_every_observation():
    text = V10 + (
        "\nsensitivity:\n  - name: treatment_policy\n    description: as observed\n"
        "    intercurrent_events: treatment_policy\n    hypotheses: [H1]\n"
    )
    res = A.run_analysis(after_event_protocol(text), _with_event(1), hypotheses=["H1"])
    t = res.hypotheses.set_index("analysis")
    assert t.loc["primary", "n_observations"] == 125  # post1, post2, day7 of P03 period 2
    assert t.loc["treatment_policy", "n_observations"] == 128


def test_keeping_pre_event_data_changes_the_estimate_only_through_those_rows():
    """The estimate with exclude_after_event equals the estimate on the data with exactly
    the post-event rows removed by hand (and differs from dropping the whole period)."""
    s = _with_event(1)
    after = A.run_analysis(PROTO, s, hypotheses=["H1"]).hypotheses.loc[0, "estimate"]
    by_hand = make_crossover()
    drop = (
        (by_hand.nights["participant_id"] == "P03")
        & (by_hand.nights["period"] == 2)
        & (by_hand.nights["night_index"] >= 1)
    )
    by_hand.nights = by_hand.nights[~drop].reset_index(drop=True)
    hand = A.run_analysis(PROTO, by_hand, hypotheses=["H1"]).hypotheses.loc[0, "estimate"]
    assert after == pytest.approx(hand, rel=1e-10)
    whole = A.run_analysis(PROTO, _with_event(0), hypotheses=["H1"]).hypotheses.loc[0, "estimate"]
    assert not np.isclose(after, whole)


def test_timing_in_other_units_than_nights_is_refused():
    # a lab's dictionary recording the sedative in hours after the infusion: compared with a
    # night_index it would be misread, so the protocol refuses it
    from studykit.dictionary import DataDictionary

    frame = DD.to_frame()
    row = frame[(frame["name"] == "sedative_first_night")].copy()
    row["name"], row["unit"], row["maximum"] = "sedative_hours", "h", 336
    lab = DataDictionary.from_frame(pd.concat([frame, row], ignore_index=True))
    v10 = (ROOT / "protocols" / "archive" / "ketamine_sleep_v1.0.yaml").read_text("utf-8")
    swap = SEDATIVE_ICE.replace("exclude_period", "exclude_after_event").replace(
        "table: periods", "timing: sedative_hours\n      table: periods"
    )
    with pytest.raises(ProtocolError, match="'sedative_hours' has unit 'h'.*nights, days"):
        parse_protocol(v10.replace(SEDATIVE_ICE, swap), dictionary=lab)
