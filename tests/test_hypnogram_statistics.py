"""Per-night sleep statistics: hand-counted nights, YASA 0.8.1 equality, vectorized grouping.

Reference: YASA 0.8.1 (test-only dependency) -- ``yasa.sleep_statistics(hypno, sf_hyp)`` for
TIB, SPT, WASO, TST, N1..REM, %N1..%REM, SOL, Lat_*, SE, SME (unrounded), and
``yasa.Hypnogram(...).sleep_statistics()`` for SFI and SOL_5min (rounded by YASA to 4
decimals, so compared after rounding ours the same way).
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studykit.errors import HypnogramError
from studykit.hypnogram import OUTCOMES, STAGES, sleep_statistics, to_yasa_int

yasa = pytest.importorskip("yasa")

# Our column <- YASA's key, for yasa.sleep_statistics (the function; values not rounded).
YASA_FUNCTION = {
    "tib_min": "TIB",
    "spt_min": "SPT",
    "waso_min": "WASO",
    "tst_min": "TST",
    "n1_min": "N1",
    "n2_min": "N2",
    "n3_min": "N3",
    "rem_min": "REM",
    "sol_min": "SOL",
    "lat_n1_lo_min": "Lat_N1",
    "lat_n2_lo_min": "Lat_N2",
    "lat_n3_lo_min": "Lat_N3",
    "lat_rem_lo_min": "Lat_REM",
    "n1_pct": "%N1",
    "n2_pct": "%N2",
    "n3_pct": "%N3",
    "rem_pct": "%REM",
    "se_pct": "SE",
    "sme_pct": "SME",
}
# ... and from yasa.Hypnogram.sleep_statistics (rounded to 4 decimals by YASA).
YASA_METHOD = {"sfi_per_h": "SFI", "sol_persistent_min": "SOL_5min"}
YASA_LABELS = {0: "WAKE", 1: "N1", 2: "N2", 3: "N3", 4: "REM", -1: "ART", -2: "UNS"}


def yasa_function(stages, epoch_length):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated in 0.8, still the reference
        return yasa.sleep_statistics(to_yasa_int(stages), sf_hyp=1 / epoch_length)


def yasa_method(stages, epoch_length):
    labels = [YASA_LABELS[int(i)] for i in to_yasa_int(stages)]
    return yasa.Hypnogram(labels, n_stages=5, freq=f"{int(epoch_length)}s").sleep_statistics()


def assert_equal_to_yasa(row, stages, epoch_length):
    ref = yasa_function(stages, epoch_length)
    for ours, theirs in YASA_FUNCTION.items():
        a, b = float(row[ours]), ref[theirs]
        assert (np.isnan(a) and np.isnan(b)) or abs(a - b) <= 1e-9, (ours, a, theirs, b)
    ref = yasa_method(stages, epoch_length)
    if row.get("_persistent_sleep_min") != 5:  # YASA's SOL_5min: persistent sleep of 5 min
        row = sleep_statistics(stages, epoch_length=epoch_length, persistent_sleep_min=5).iloc[0]
    for ours, theirs in YASA_METHOD.items():
        a, b = round(float(row[ours]), 4), float(ref.get(theirs, np.nan))
        assert (np.isnan(a) and np.isnan(b)) or abs(a - b) <= 1e-9, (ours, a, theirs, b)


# --------------------------------------------------------------------- hand-counted nights --

YASA_EXAMPLE = [0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 2, 3, 3, 4, 4, 4, 4, 0, 0]


def test_yasa_docstring_example_hand_counted():
    # Expected values: YASA 0.8.1 sleep_statistics docstring (also yasa/tests), re-counted by hand.
    row = sleep_statistics(YASA_EXAMPLE).iloc[0]
    expected = {
        "tib_min": 10.0,
        "spt_min": 8.0,
        "waso_min": 0.0,
        "tst_min": 8.0,
        "n1_min": 1.5,
        "n2_min": 2.0,
        "n3_min": 2.5,
        "rem_min": 2.0,
        "sol_min": 1.0,
        "lat_n1_lo_min": 1.0,
        "lat_n2_lo_min": 2.5,
        "lat_n3_lo_min": 4.0,
        "lat_rem_lo_min": 7.0,
        "n1_pct": 18.75,
        "n2_pct": 25.0,
        "n3_pct": 31.25,
        "rem_pct": 25.0,
        "se_pct": 80.0,
        "sme_pct": 100.0,
        # hand count, not in YASA's function: latencies from sleep onset = Lat_* - SOL
        "lat_n1_min": 0.0,
        "lat_n2_min": 1.5,
        "lat_n3_min": 3.0,
        "lat_rem_min": 6.0,
        # transitions inside epochs 2..17: N1>N2, N2>N3, N3>N2, N2>N3, N3>R
        "n_transitions": 5,
        # one sleep->wake transition (epoch 17 R -> 18 W) per 8/60 h of TST
        "sfi_per_h": 7.5,
        "n_awakenings": 0,
    }
    for name, value in expected.items():
        assert row[name] == pytest.approx(value, abs=1e-12), name
    assert_equal_to_yasa(row, YASA_EXAMPLE, 30.0)


# The fixture night of tests/data/hypnograms (hand-made, see make_fixtures.py):
FIXTURE_NIGHT = "W W N1 N2 N2 N2 N3 N3 N3 N3 N2 W R R R MT R UNS UNS".split()


def test_fixture_night_hand_counted():
    row = sleep_statistics(FIXTURE_NIGHT).iloc[0]
    # Hand count: epochs 0..18; first sleep 2, last sleep 16; N1 1, N2 4, N3 4, R 4 epochs.
    expected = {
        "tib_min": 9.5,  # 19 epochs
        "sol_min": 1.0,  # 2 epochs
        "spt_min": 7.5,  # epochs 2..16
        "tst_min": 6.5,  # 13 epochs
        "waso_min": 0.5,  # epoch 11; MT (15) is not wake
        "se_pct": 100 * 6.5 / 9.5,
        "sme_pct": 100 * 13 / 15,
        "n1_min": 0.5,
        "n2_min": 2.0,
        "n3_min": 2.0,
        "rem_min": 2.0,
        "n3_pct": 100 * 4 / 13,
        "lat_n1_min": 0.0,
        "lat_n2_min": 0.5,
        "lat_n3_min": 2.0,
        "lat_rem_min": 5.0,
        "lat_rem_lo_min": 6.0,
        "n_awakenings": 1,
        "awakenings_per_h": 1 / (6.5 / 60),
        # N1>N2, N2>N3, N3>N2, N2>W, W>R, R>MT, MT>R (pairs inside epochs 2..16)
        "n_transitions": 7,
        "sfi_per_h": 1 / (6.5 / 60),  # N2 -> W at 10 -> 11; R -> UNS does not count
        "movement_min": 0.5,
        "artefact_min": 0.0,
        "unscored_min": 1.0,
        "quality_flag": True,  # 3 of 19 epochs > 10 %
    }
    for name, value in expected.items():
        assert row[name] == pytest.approx(value, abs=1e-12), name
    assert np.isnan(row["sol_persistent_min"])  # longest sleep bout: epochs 2..10 = 4.5 min
    row4 = sleep_statistics(FIXTURE_NIGHT, persistent_sleep_min=4.5).iloc[0]
    assert row4["sol_persistent_min"] == 1.0
    assert_equal_to_yasa(row, FIXTURE_NIGHT, 30.0)


def test_columns_are_the_dictionary_outcomes():
    out = sleep_statistics(YASA_EXAMPLE)
    assert list(out.columns) == list(OUTCOMES)
    assert out["n_awakenings"].dtype == np.int64
    assert out["quality_flag"].dtype == bool


def test_night_without_sleep_gives_missing_latencies():
    row = sleep_statistics(["W"] * 10 + ["UNS"] * 2).iloc[0]
    assert row["tib_min"] == 6.0 and row["tst_min"] == 0.0 and row["spt_min"] == 0.0
    assert row["se_pct"] == 0.0 and row["n_awakenings"] == 0 and row["n_transitions"] == 0
    for name in ("sol_min", "waso_min", "sme_pct", "lat_rem_min", "lat_rem_lo_min", "n1_pct"):
        assert np.isnan(row[name]), name
    assert np.isnan(row["sfi_per_h"]) and np.isnan(row["awakenings_per_h"])
    assert_equal_to_yasa(row, ["W"] * 10 + ["UNS"] * 2, 30.0)


def test_min_bout_epochs_counts_longer_wake_bouts_only():
    # hand count: wake bouts inside SPT of 1, 2 and 3 epochs; final wake is outside the SPT
    night = "W N2 W N2 W W N2 W W W N2 W W".split()
    assert sleep_statistics(night).loc[0, "n_awakenings"] == 3
    assert sleep_statistics(night, min_bout_epochs=2).loc[0, "n_awakenings"] == 2
    assert sleep_statistics(night, min_bout_epochs=3).loc[0, "n_awakenings"] == 1
    assert sleep_statistics(night, min_bout_epochs=4).loc[0, "n_awakenings"] == 0
    # WASO: 6 wake epochs inside the SPT; until lights on adds the final 2
    assert sleep_statistics(night).loc[0, "waso_min"] == 3.0
    assert sleep_statistics(night, waso_until_lights_on=True).loc[0, "waso_min"] == 4.0


def test_wake_interrupted_by_artefact_is_two_bouts():
    night = "N2 W ART W N2".split()
    row = sleep_statistics(night).iloc[0]
    assert row["n_awakenings"] == 2 and row["waso_min"] == 1.0 and row["artefact_min"] == 0.5


def test_persistent_sleep_threshold():
    # 5 epochs of sleep, wake, then 20 epochs (10 min) of sleep starting at epoch 8
    night = ["W"] * 2 + ["N1"] * 5 + ["W"] + ["N2"] * 10 + ["N3"] * 10
    assert sleep_statistics(night).loc[0, "sol_persistent_min"] == 4.0
    assert sleep_statistics(night, persistent_sleep_min=2.5).loc[0, "sol_persistent_min"] == 1.0
    assert np.isnan(sleep_statistics(night, persistent_sleep_min=10.5).loc[0, "sol_persistent_min"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epoch_length": 0}, "epoch_length"),
        ({"min_bout_epochs": 0}, "min_bout_epochs"),
        ({"persistent_sleep_min": -1}, "persistent_sleep_min"),
        ({"max_bad_fraction": 2}, "max_bad_fraction"),
    ],
)
def test_invalid_parameters(kwargs, match):
    with pytest.raises(HypnogramError, match=match):
        sleep_statistics(YASA_EXAMPLE, **kwargs)


def test_unknown_stage_and_empty_table():
    with pytest.raises(HypnogramError, match="Unknown sleep stage label"):
        sleep_statistics(["W", "N5"])
    with pytest.raises(HypnogramError, match="empty"):
        sleep_statistics(pd.DataFrame({"stage": []}))
    with pytest.raises(HypnogramError, match="no 'stage' column"):
        sleep_statistics(pd.DataFrame({"x": [1]}))


# ------------------------------------------------------------------------- several nights --


def long_table(nights):
    """Epoch table of several nights (participant i, period 1, night 'baseline')."""
    frames = []
    for i, stages in enumerate(nights):
        frames.append(
            pd.DataFrame(
                {
                    "participant_id": f"P{i:03d}",
                    "period": 1,
                    "night": "baseline",
                    "epoch": np.arange(len(stages)),
                    "onset_s": 30.0 * np.arange(len(stages)),
                    "stage": pd.Categorical(stages, categories=STAGES),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_rows_per_night_keep_keys_and_order():
    table = long_table([YASA_EXAMPLE_LABELS := [STAGES[i] for i in YASA_EXAMPLE], FIXTURE_NIGHT])
    out = sleep_statistics(table)
    assert out[["participant_id", "period", "night"]].to_dict("list") == {
        "participant_id": ["P000", "P001"],
        "period": [1, 1],
        "night": ["baseline", "baseline"],
    }
    single = sleep_statistics(YASA_EXAMPLE_LABELS)
    pd.testing.assert_frame_equal(
        out.iloc[[0]][list(OUTCOMES)].reset_index(drop=True), single, check_like=False
    )


def test_shuffled_rows_give_the_same_result_and_input_is_not_modified():
    table = long_table([FIXTURE_NIGHT, [STAGES[i] for i in YASA_EXAMPLE], ["W", "N2", "W"]])
    shuffled = table.sample(frac=1.0, random_state=1)
    before = shuffled.copy()
    out = sleep_statistics(shuffled)
    pd.testing.assert_frame_equal(shuffled, before)
    expected = sleep_statistics(table)
    key = ["participant_id", "period", "night"]
    pd.testing.assert_frame_equal(
        out.sort_values(key).reset_index(drop=True),
        expected.sort_values(key).reset_index(drop=True),
    )


def test_duplicated_and_missing_epochs_are_errors():
    table = long_table([FIXTURE_NIGHT])
    with pytest.raises(HypnogramError, match="duplicated"):
        sleep_statistics(pd.concat([table, table.iloc[[3]]]))
    with pytest.raises(HypnogramError, match="missing"):
        sleep_statistics(table.drop(index=5))


def test_missing_key_is_an_error():
    table = long_table([FIXTURE_NIGHT])
    table["participant_id"] = table["participant_id"].astype(object)
    table.loc[3, "participant_id"] = None
    with pytest.raises(HypnogramError, match="participant_id"):
        sleep_statistics(table)


# ------------------------------------------------------------------- lights off / lights on --


def test_crop_with_offsets_equals_sliced_night():
    table = long_table([FIXTURE_NIGHT, [STAGES[i] for i in YASA_EXAMPLE]])
    nights = pd.DataFrame(
        {
            "participant_id": ["P000", "P001"],
            "period": [1, 1],
            "night": ["baseline", "baseline"],
            "lights_off_s": [30.0, np.nan],  # P001: no crop at the start
            "lights_on_s": [15 * 30.0, 18 * 30.0],
        }
    )
    out = sleep_statistics(table, nights=nights)
    assert out["participant_id"].tolist() == ["P000", "P001"]  # keys follow the crop
    first = sleep_statistics(FIXTURE_NIGHT[1:15])
    second = sleep_statistics([STAGES[i] for i in YASA_EXAMPLE[:18]])
    pd.testing.assert_frame_equal(out.loc[[0], list(OUTCOMES)], first)
    pd.testing.assert_frame_equal(out.loc[[1], list(OUTCOMES)].reset_index(drop=True), second)


def test_crop_with_clock_times_and_partial_epochs():
    table = long_table([FIXTURE_NIGHT])
    start = pd.Timestamp("2026-01-10 22:00:00")
    nights = pd.DataFrame(
        {
            "participant_id": ["P000"],
            "period": [1],
            "night": ["baseline"],
            "recording_start": [start],
            # lights off 10 s into epoch 1: epochs start at or after it -> from epoch 2
            "lights_off": [start + pd.Timedelta(seconds=40)],
            # lights on 20 s into epoch 16: epoch 16 does not end before it -> up to epoch 15
            "lights_on": [start + pd.Timedelta(seconds=16 * 30 + 20)],
        }
    )
    out = sleep_statistics(table, nights=nights)
    pd.testing.assert_frame_equal(out[list(OUTCOMES)], sleep_statistics(FIXTURE_NIGHT[2:16]))


def test_crop_errors():
    table = long_table([FIXTURE_NIGHT])
    keys = {"participant_id": ["P000"], "period": [1], "night": ["baseline"]}
    with pytest.raises(HypnogramError, match="recording_start"):
        sleep_statistics(table, nights=pd.DataFrame({**keys, "lights_off": [pd.Timestamp(0)]}))
    with pytest.raises(HypnogramError, match="no epoch between lights off"):
        sleep_statistics(table, nights=pd.DataFrame({**keys, "lights_off_s": [10_000.0]}))
    with pytest.raises(HypnogramError, match="at or before lights off"):
        sleep_statistics(
            table, nights=pd.DataFrame({**keys, "lights_off_s": [100.0], "lights_on_s": [50.0]})
        )
    with pytest.raises(HypnogramError, match="none of lights_off_s"):
        sleep_statistics(table, nights=pd.DataFrame(keys))


# --------------------------------------------------------------- property tests vs YASA ----

codes = st.sampled_from(range(8))
iid_night = st.lists(codes, min_size=2, max_size=200)
run_night = (
    st.lists(
        st.tuples(st.sampled_from([0, 1, 2, 3, 4, 0, 2, 5, 6, 7]), st.integers(1, 40)),
        min_size=1,
        max_size=30,
    )
    .map(lambda runs: [c for c, n in runs for _ in range(n)])
    .filter(lambda x: len(x) >= 2)
)
nights_strategy = st.one_of(iid_night, run_night).map(lambda c: [STAGES[i] for i in c])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(night=nights_strategy, epoch_length=st.sampled_from([30.0, 20.0, 60.0]))
def test_equals_yasa_on_generated_nights(night, epoch_length):
    row = sleep_statistics(night, epoch_length=epoch_length, persistent_sleep_min=5).iloc[0]
    assert_equal_to_yasa(
        pd.concat([row, pd.Series({"_persistent_sleep_min": 5})]), night, epoch_length
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nights=st.lists(nights_strategy, min_size=1, max_size=8))
def test_vectorized_nights_equal_yasa_night_by_night(nights):
    out = sleep_statistics(long_table(nights), persistent_sleep_min=5)
    assert len(out) == len(nights)
    for i, night in enumerate(nights):
        assert out.loc[i, "participant_id"] == f"P{i:03d}"
        row = pd.concat([out.loc[i], pd.Series({"_persistent_sleep_min": 5})])
        assert_equal_to_yasa(row, night, 30.0)


def naive(night, min_bout):
    """Direct per-epoch transcription of the dictionary definitions (independent of runs)."""
    sleep = [s in ("N1", "N2", "N3", "R") for s in night]
    idx = [i for i, s in enumerate(sleep) if s]
    if not idx:
        return {"n_awakenings": 0, "n_transitions": 0}
    first, last = idx[0], idx[-1]
    trans = sum(night[i] != night[i - 1] for i in range(first + 1, last + 1))
    bouts, run = 0, 0
    for i in range(first, last + 1):
        if night[i] == "W":
            run += 1
        else:
            bouts += run >= min_bout
            run = 0
    return {"n_awakenings": bouts, "n_transitions": trans}


@settings(max_examples=200, deadline=None)
@given(night=nights_strategy, min_bout=st.integers(1, 4))
def test_counts_match_a_direct_transcription(night, min_bout):
    row = sleep_statistics(night, min_bout_epochs=min_bout).iloc[0]
    expected = naive(night, min_bout)
    assert row["n_awakenings"] == expected["n_awakenings"]
    assert row["n_transitions"] == expected["n_transitions"]


@settings(max_examples=100, deadline=None)
@given(
    nights=st.lists(
        st.tuples(nights_strategy, st.integers(0, 10), st.integers(0, 10)), min_size=1, max_size=5
    )
)
def test_cropping_equals_slicing_each_night(nights):
    """Lights off / on (seconds, on epoch boundaries) crop exactly like slicing the night."""
    kept = [(n, lo, len(n) - hi) for n, lo, hi in nights if len(n) - hi > lo]
    if not kept:
        return
    table = long_table([n for n, _, _ in kept])
    lights = pd.DataFrame(
        {
            "participant_id": [f"P{i:03d}" for i in range(len(kept))],
            "period": 1,
            "night": "baseline",
            "lights_off_s": [30.0 * lo for _, lo, _ in kept],
            "lights_on_s": [30.0 * hi for _, _, hi in kept],
        }
    )
    out = sleep_statistics(table, nights=lights)
    assert out["participant_id"].tolist() == lights["participant_id"].tolist()
    for i, (night, lo, hi) in enumerate(kept):
        expected = sleep_statistics(night[lo:hi])
        pd.testing.assert_frame_equal(
            out.loc[[i], list(OUTCOMES)].reset_index(drop=True), expected, check_exact=True
        )


def test_cropping_keeps_each_night_with_its_own_keys():
    # Two nights of different length, both cropped by lights off/on: the key columns of the
    # result must still name each night once (regression: keys were read at cropped offsets).
    import pandas as pd

    from studykit.hypnogram import sleep_statistics

    stages = ["W", "W", "N1", "N2", "N2", "W"] + ["W", "N2", "N3", "R", "W", "W", "W", "W"]
    ep = pd.DataFrame(
        {
            "participant_id": ["P01"] * 6 + ["P02"] * 8,
            "period": 1,
            "night": "baseline",
            "epoch": list(range(6)) + list(range(8)),
            "stage": stages,
        }
    )
    ep["onset_s"] = ep["epoch"] * 30.0
    nights = pd.DataFrame(
        {
            "participant_id": ["P01", "P02"],
            "period": 1,
            "night": "baseline",
            "lights_off_s": [30.0, 0.0],
            "lights_on_s": [180.0, 150.0],
        }
    )
    out = sleep_statistics(ep, nights=nights)
    assert out["participant_id"].tolist() == ["P01", "P02"]
    # hand count: P01 keeps epochs 1-5 (W N1 N2 N2 W): TIB 2.5 min, TST 1.5 min;
    # P02 keeps epochs 0-4 (W N2 N3 R W): TIB 2.5 min, TST 1.5 min, N3 0.5 min
    assert out["tib_min"].tolist() == [2.5, 2.5]
    assert out["tst_min"].tolist() == [1.5, 1.5]
    assert out["n3_min"].tolist() == [0.0, 0.5]
