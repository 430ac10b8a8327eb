"""REDCap longitudinal round trip: design -> records export -> study tables -> validation.

The exports here are built from a small SIMULATED study with studykit's own
``export_records`` (the layout of ``studykit dictionary export-redcap``), then edited the
way real exports differ: incomplete forms, repeat instances, checkbox columns, a data access
group, a label export, a form on an event it does not belong to, a key that disagrees.
Every expected count below is a hand count of those edits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from studykit.analysis import run_analysis
from studykit.cli import main
from studykit.dictionary import load_dictionary
from studykit.errors import InputError
from studykit.io import read_table
from studykit.protocol import load_protocol
from studykit.redcap.design import design_events, read_event_map, unique_event_name
from studykit.redcap.dictionary import to_redcap
from studykit.redcap.records import export_records, import_records
from studykit.simulate import simulate_study, write_study
from studykit.validate import load_study

TABLES = ("roster", "periods", "nights", "diary")
PROTOCOL = Path(__file__).parents[1] / "protocols" / "ketamine_sleep.yaml"


@pytest.fixture(scope="module")
def dd():
    return load_dictionary()


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "study"
    write_study(simulate_study(seed=11, n_participants=8), out)
    return out


@pytest.fixture(scope="module")
def tables(study_dir) -> dict[str, pd.DataFrame]:
    return {t: read_table(study_dir / f"{t}.csv").reset_index(drop=True) for t in TABLES}


@pytest.fixture(scope="module")
def records(tables, dd) -> pd.DataFrame:
    return export_records(tables, dd)


def _sorted(frame: pd.DataFrame, dd, table: str) -> pd.DataFrame:
    keys = dd.keys(table)
    return frame.sort_values(keys, key=lambda s: s.astype(str)).reset_index(drop=True)


def test_design_events_layout(dd):
    d = design_events(dd)
    # 1 screening + 2 periods + 2 x 4 nights = 11 events (the dictionary's periods 1-2 and
    # night codes baseline, post1, post2, day7)
    assert len(d.events) == 11
    assert d.events["unique_event_name"].tolist()[:3] == [
        "screening_arm_1",
        "period_1_arm_1",
        "p1_night_baseline_arm_1",
    ]
    assert set(d.repeating["form_name"]) == {"diary"}
    # the event map accepts what design_events writes: one row per event and table,
    # 1 roster + 2 x (periods + diary) + 8 nights = 13
    assert len(read_event_map(d.event_map, dd)) == len(d.event_map) == 13


def test_unique_event_name_truncates_as_redcap():
    # REDCap keeps 18 characters of the lower-cased label
    assert unique_event_name("A very long event label indeed") == "a_very_long_event_arm_1"


def test_round_trip_equals_the_study(records, tables, dd, tmp_path):
    res = import_records(records, design_events(dd).event_map, dd, out=tmp_path / "in")
    assert (res.report["action"] == "imported").sum() == len(records)
    for t in TABLES:
        back = read_table(tmp_path / "in" / f"{t}.csv").reset_index(drop=True)
        orig = tables[t][list(back.columns)]
        assert set(back.columns) == set(tables[t].columns)
        pd.testing.assert_frame_equal(_sorted(back, dd, t), _sorted(orig, dd, t))


def _messy(records: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Edit an export as real ones differ; return it and the hand-counted expectations."""
    rec = records.copy()
    counts = {}
    night = rec.index[rec["redcap_event_name"].str.startswith("p1_night_post2")]
    rec.loc[night[:2], "nights_complete"] = "1"  # two nights Unverified
    rec.loc[night[2:3], "nights_complete"] = "0"  # one night Incomplete
    counts["incomplete"] = 3
    diary = rec.index[rec["redcap_repeat_instrument"] == "diary"]
    rec.loc[diary[:1], "diary_complete"] = "0"
    counts["incomplete"] += 1
    # a data access group per participant
    rec.insert(4, "redcap_data_access_group", rec["participant_id"].map(lambda p: f"site_{p[-1]}"))
    # nights data entered on the screening event by mistake
    screen = rec.index[rec["redcap_event_name"] == "screening_arm_1"][0]
    rec.loc[screen, "tst_min"] = "400"
    counts["not_on_event"] = 1
    # a night whose form says period 2 on a period-1 event
    p1 = rec.index[rec["redcap_event_name"] == "p1_night_post1_arm_1"][0]
    rec.loc[p1, "nights_period"] = "2"
    counts["key_conflict"] = 1
    return rec, counts


def test_messy_export_accounts_for_every_row_and_form(records, dd, tmp_path):
    rec, counts = _messy(records)
    res = import_records(rec, design_events(dd).event_map, dd, out=tmp_path / "in")
    report = res.report
    acts = report["action"].value_counts().to_dict()
    assert acts.get("skipped_incomplete") == counts["incomplete"]
    assert acts.get("not_on_event") == counts["not_on_event"]
    assert acts.get("key_conflict") == counts["key_conflict"]
    # every export row appears in the report
    assert set(report["export_row"]) == set(rec.index + 2)
    # imported + not imported forms = the forms the records carried
    assert acts["imported"] == len(records) - counts["incomplete"] - counts["key_conflict"]
    assert set(report["redcap_data_access_group"]) - {""} == {
        f"site_{p[-1]}" for p in rec["participant_id"]
    }
    on_disk = read_table(tmp_path / "in" / "import_report.csv")
    assert len(on_disk) == len(report)
    # with --include-incomplete the incomplete forms come in too
    res2 = import_records(
        rec, design_events(dd).event_map, dd, include_incomplete=True, out=tmp_path / "in2"
    )
    assert (res2.report["action"] == "imported").sum() == acts["imported"] + counts["incomplete"]


def test_messy_import_validates_and_analyses(records, dd, tmp_path):
    rec, _ = _messy(records)
    out = tmp_path / "study"
    import_records(rec, design_events(dd).event_map, dd, out=out)
    study = load_study(out)
    errors = study.issues[study.issues["severity"] == "error"]
    assert errors.empty, errors.to_string()
    assert len(study.roster) == 8
    assert import_records(rec, design_events(dd).event_map, dd).tables["nights"].shape[0] == len(
        study.nights
    ) + len(study.rejected.get("nights", []))
    res = run_analysis(load_protocol(PROTOCOL), study, sensitivity=False)
    h1 = res.hypotheses.set_index("hypothesis_id").loc["H1"]
    assert np.isfinite(h1["estimate"]) and h1["n_participants"] == 8


def test_checkboxes_labels_and_lab_dictionary(records, dd, tmp_path):
    """A lab's REDCap dictionary: sedative_use as a one-choice checkbox, sex as radio with
    its own labels; the export in label form (choice labels, Checked/Unchecked)."""
    rc = to_redcap(dd, tables=list(TABLES))
    rc = rc.assign(**{"Field Annotation": ""})  # a lab's own dictionary has no studykit tags
    sed = rc["Variable / Field Name"] == "sedative_use"
    rc.loc[sed, "Field Type"] = "checkbox"
    rc.loc[sed, "Choices, Calculations, OR Slider Labels"] = "1, Sedative taken"
    rec = records.copy()
    use = rec.pop("sedative_use")
    pos = list(records.columns).index("sedative_use")
    rec.insert(
        pos, "sedative_use___1", use.map({"1": "Checked", "0": "Unchecked", "": "Unchecked"})
    )
    rec["sex"] = rec["sex"].map({"F": "Female", "M": "Male", "": ""})
    rec["periods_complete"] = rec["periods_complete"].map({"2": "Complete", "": ""})
    # label exports name events by label and arm; this event map has no event_label column
    labels = dict(zip(design_events(dd).events["unique_event_name"],
                      design_events(dd).events["event_name"], strict=True))  # fmt: skip
    rec["redcap_event_name"] = rec["redcap_event_name"].map(lambda e: f"{labels[e]} (Arm 1: Arm 1)")
    rec["redcap_repeat_instrument"] = rec["redcap_repeat_instrument"].str.title()
    emap = design_events(dd).event_map.drop(columns="event_label")
    res = import_records(rec, emap, dd, redcap_dictionary=rc)
    assert (res.report["action"] == "imported").sum() == len(records)
    periods = res.tables["periods"]
    orig = _sorted(read_table_frame(records, "period_", "sedative_use"), dd, "periods")
    got = _sorted(periods, dd, "periods")
    assert got["sedative_use"].tolist() == orig["sedative_use"].tolist()
    assert set(res.tables["roster"]["sex"]) <= {"F", "M"}


def read_table_frame(records: pd.DataFrame, event_prefix: str, column: str) -> pd.DataFrame:
    rows = records[
        records["redcap_event_name"].str.startswith(event_prefix)
        & (records["redcap_repeat_instrument"] == "")
    ]
    return pd.DataFrame(
        {
            "participant_id": rows["participant_id"],
            "period": rows["redcap_event_name"].str.extract(r"period_(\d)")[0],
            column: rows[column],
        }
    )


def test_unknown_event_and_field_are_errors(records, dd):
    emap = design_events(dd).event_map
    bad = records.copy()
    bad.loc[0, "redcap_event_name"] = "followup_arm_1"
    with pytest.raises(InputError, match="not in the event map: .followup_arm_1"):
        import_records(bad, emap, dd)
    bad = records.assign(favourite_colour="")
    with pytest.raises(InputError, match="favourite_colour"):
        import_records(bad, emap, dd)


def test_event_map_checks(dd):
    with pytest.raises(InputError, match="not one of baseline"):
        read_event_map(
            pd.DataFrame({"redcap_event_name": ["x"], "table": ["nights"], "night": ["post9"]}), dd
        )
    with pytest.raises(InputError, match="lacks the column"):
        read_event_map(pd.DataFrame({"event": ["x"]}), dd)


def test_cli_round_trip(study_dir, tmp_path, capsys):
    dd_csv = tmp_path / "rc" / "dd.csv"
    dd_csv.parent.mkdir()
    assert main(["dictionary", "export-redcap", str(dd_csv)]) == 0
    emap = tmp_path / "rc" / "dd_event_map.csv"
    assert emap.exists() and (tmp_path / "rc" / "dd_instrument_events.csv").exists()
    records = tmp_path / "records.csv"
    assert main(["redcap", "export", str(study_dir), "--out", str(records)]) == 0
    out = tmp_path / "imported"
    code = main(
        ["redcap", "import", str(records), "--events", str(emap), "--out", str(out),
         "--redcap-dictionary", str(dd_csv)]
    )  # fmt: skip
    assert code == 0
    assert main(["validate", str(out)]) == 0
    # a second import into the same folder needs --force
    again = ["redcap", "import", str(records), "--events", str(emap), "--out", str(out)]
    assert main(again) == 2
    assert "--force" in capsys.readouterr().err


def test_import_report_is_not_taken_for_a_table(records, dd, tmp_path):
    out = tmp_path / "study"
    import_records(records, design_events(dd).event_map, dd, out=out)
    study = load_study(out)
    assert not (study.issues["rule"] == "file").any(), study.issues.to_string()
