"""The data dictionary: content the protocols need, checks on load, REDCap and Table Schema.

Expected values are read off data_dictionary.csv (the source of truth) or, for the REDCap
format, the 18 standard columns of a REDCap data dictionary download.
"""

import json
from pathlib import Path

import pandas as pd
import pytest

from studykit.cli import main
from studykit.dictionary import (
    DICTIONARY_COLUMNS,
    DataDictionary,
    load_dictionary,
    parse_codes,
)
from studykit.errors import DictionaryError, InputError
from studykit.redcap import REDCAP_COLUMNS, export_redcap, import_redcap, to_redcap
from studykit.schema import table_schema

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dd():
    return load_dictionary()


def test_packaged_copy_is_the_repo_root_file(dd):
    root = load_dictionary(ROOT / "data_dictionary.csv")
    assert root.to_frame().equals(dd.to_frame())
    assert dd.tables == ("roster", "periods", "nights", "epochs", "diary")


def test_keys_of_every_table(dd):
    # docs/ARCHITECTURE.md, "Study directory layout"
    assert dd.keys("roster") == ["participant_id"]
    assert dd.keys("periods") == ["participant_id", "period"]
    assert dd.keys("nights") == ["participant_id", "period", "night"]
    assert dd.keys("epochs") == ["participant_id", "period", "night", "epoch"]
    assert dd.keys("diary") == ["participant_id", "period", "day"]


def test_reference_levels_come_first(dd):
    assert dd.levels("nights", "treatment")[0] == "placebo"
    assert dd.levels("periods", "treatment")[0] == "placebo"
    assert dd.levels("nights", "night")[0] == "baseline"
    assert dd.levels("epochs", "stage") == ["W", "N1", "N2", "N3", "R", "MT", "ART", "UNS"]
    assert dd.levels("diary", "kss") == [str(k) for k in range(1, 10)]


def test_variables_the_issue_asks_for_are_defined(dd):
    wanted = {
        "roster": ["participant_id", "sequence", "age", "sex", "bmi", "madrs_baseline"],
        "periods": [
            "period",
            "treatment",
            "infusion_datetime",
            "dose_mg_kg",
            "madrs_day1",
            "sedative_use",
            "alcohol_use",
        ],
        "nights": [
            "night",
            "night_index",
            "lights_off",
            "lights_on",
            "tib_min",
            "spt_min",
            "tst_min",
            "se_pct",
            "sol_min",
            "waso_min",
            "n_awakenings",
            "n1_min",
            "n2_min",
            "n3_min",
            "rem_min",
            "n1_pct",
            "n2_pct",
            "n3_pct",
            "rem_pct",
            "lat_rem_min",
            "lat_n3_min",
        ],
        "epochs": ["participant_id", "night", "epoch", "onset_s", "stage"],
        "diary": ["kss", "dream_vividness", "nightmares"],
    }
    for table, names in wanted.items():
        assert set(names) <= set(dd.names(table)), (table, set(names) - set(dd.names(table)))
    # the awakening count states its minimum wake-bout length
    assert "min_bout_epochs" in dd.get("nights", "n_awakenings").description


def test_every_variable_is_well_formed(dd):
    for v in dd:
        assert len(v.paramcd) <= 8
        if v.key:
            assert v.required
        if v.role == "derived" and v.table == "nights":
            assert v.derivation, v.name
        if v.type == "categorical":
            assert v.codes


def test_identifier_columns_are_phi_only(dd):
    assert dd.identifier_columns() == {"initials", "screening_date"}


def test_unknown_table_and_variable_messages(dd):
    with pytest.raises(DictionaryError, match="Unknown table 'night'.*roster, periods, nights"):
        dd.variables("night")
    with pytest.raises(DictionaryError, match="no variable 'TST_min'.*Did you mean 'tst_min'"):
        dd.get("nights", "TST_min")
    with pytest.raises(DictionaryError, match="has no codes"):
        dd.levels("nights", "tst_min")


def test_parse_codes_label_with_commas_and_errors():
    assert parse_codes("1, Yes | 0, No") == (("1", "Yes"), ("0", "No"))
    assert parse_codes("8, Sleepy, some effort") == (("8", "Sleepy, some effort"),)
    with pytest.raises(ValueError, match="no comma"):
        parse_codes("a | b")
    with pytest.raises(ValueError, match="appears twice"):
        parse_codes("a, A | a, B")


HEADER = ",".join(DICTIONARY_COLUMNS)
GOOD = "x,An x,t,outcome,number,min,0,10,,yes,no,no,,XX,,,"


def _write(tmp_path, *lines):
    p = tmp_path / "dd.csv"
    p.write_text("\n".join([HEADER, *lines]) + "\n")
    return p


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("x,An x,t,outcome,float,,,,,no,no,no,,,,,", r"line 3: type 'float' of 'x' is unknown"),
        ("x,An x,t,result,number,,,,,no,no,no,,,,,", r"line 3: role 'result' of 'x' is unknown"),
        ("x,An x,t,outcome,number,,10,1,,no,no,no,,,,,", r"line 3: minimum 10 of 'x' is above"),
        ("x,An x,t,outcome,number,,ten,,,no,no,no,,,,,", r"minimum 'ten' is not a number"),
        ("x,An x,t,outcome,categorical,,,,a | b,no,no,no,,,,,", r"codes of 'x' are malformed"),
        ("x,An x,t,outcome,categorical,,,,,no,no,no,,,,,", r"categorical but has no codes"),
        ('x,An x,t,outcome,boolean,,,,"2, Yes | 3, No",no,no,no,,,,,', r"boolean; its codes"),
        ('x,An x,t,outcome,integer,,,,"a, A",no,no,no,,,,,', r"codes \['a'\] are not integers"),
        ("x,An x,t,design,integer,,,,,no,yes,no,,,,,", r"key column and must be required"),
        ("x,An x,t,outcome,number,,,,,maybe,no,no,,,,,", r"required is 'maybe'; write yes or no"),
        ("x,An x,t,outcome,number,,,,,no,no,no,,TOOLONGCODE,,,", r"paramcd 'TOOLONGCODE'"),
        ("1x,An x,t,outcome,number,,,,,no,no,no,,,,,", r"name '1x' is not a valid name"),
        ("x,An x,t,outcome,string,,0,,,no,no,no,,,,,", r"type string and cannot have a minimum"),
        (GOOD, r"line 3: variable 'x' of table 't' is defined twice \(first at line 2\)"),
    ],
)
def test_malformed_dictionary_lines_are_reported_with_line_numbers(tmp_path, line, message):
    with pytest.raises(DictionaryError, match=message):
        load_dictionary(_write(tmp_path, GOOD, line))


def test_all_problems_reported_at_once(tmp_path):
    p = _write(
        tmp_path,
        "x,An x,t,outcome,float,,,,,no,no,no,,,,,",
        "y,A y,t,outcome,number,,5,1,,no,no,no,,,,,",
    )
    with pytest.raises(DictionaryError, match=r"2 problem\(s\)(?s:.*)line 2(?s:.*)line 3"):
        load_dictionary(p)


def test_dictionary_file_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_dictionary(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DictionaryError, match="is empty"):
        load_dictionary(tmp_path / "empty.csv")
    (tmp_path / "cols.csv").write_text("name,label,table\nx,X,t\n")
    with pytest.raises(DictionaryError, match="lacks the column\\(s\\) role, type"):
        load_dictionary(tmp_path / "cols.csv")
    (tmp_path / "head.csv").write_text(HEADER + "\n")
    with pytest.raises(DictionaryError, match="no variables"):
        load_dictionary(tmp_path / "head.csv")


def test_optional_columns_may_be_absent(tmp_path):
    p = tmp_path / "small.csv"
    p.write_text("name,label,table,role,type\nid,Id,t,identifier,string\nv,V,t,outcome,number\n")
    small = load_dictionary(p)
    assert small.names("t") == ["id", "v"]
    assert small.keys("t") == []


# -- REDCap ---------------------------------------------------------------------------
def test_redcap_export_has_the_18_standard_columns(dd):
    rc = to_redcap(dd)
    assert list(rc.columns) == list(REDCAP_COLUMNS)
    assert len(REDCAP_COLUMNS) == 18
    names = rc["Variable / Field Name"].tolist()
    assert len(names) == len(set(names))  # REDCap field names are unique per project
    assert names[0] == "participant_id" and names.count("participant_id") == 1
    assert "nights_period" in names and "periods_period" not in names  # first use keeps name
    row = rc.set_index("Variable / Field Name").loc["sedative_use"]
    assert row["Field Type"] == "yesno" and row["Form Name"] == "periods"
    kss = rc.set_index("Variable / Field Name").loc["kss"]
    assert kss["Field Type"] == "radio"
    assert kss["Choices, Calculations, OR Slider Labels"].startswith("1, Extremely alert | 2, ")
    tst = rc.set_index("Variable / Field Name").loc["tst_min"]
    assert (tst["Text Validation Type OR Show Slider Number"], tst["Field Note"]) == (
        "number",
        "min",
    )
    assert (tst["Text Validation Min"], tst["Text Validation Max"]) == ("0", "1440")
    assert rc.set_index("Variable / Field Name").loc["initials", "Identifier?"] == "y"


def test_redcap_round_trip_is_exact(dd, tmp_path):
    path = export_redcap(dd, tmp_path / "rc.csv")
    back = import_redcap(path)
    assert back.to_frame().equals(dd.to_frame())


def test_redcap_import_of_a_native_dictionary(tmp_path):
    # a dictionary as REDCap itself writes it (no studykit annotations)
    rows = [
        [
            "record_id",
            "baseline",
            "",
            "text",
            "Record ID",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        ],
        [
            "dob",
            "baseline",
            "",
            "text",
            "Date of birth",
            "",
            "",
            "date_ymd",
            "",
            "",
            "y",
            "",
            "y",
            "",
            "",
            "",
            "",
            "",
        ],
        [
            "weight",
            "baseline",
            "",
            "text",
            "Weight",
            "",
            "kg",
            "number",
            "30",
            "250",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        ],
        [
            "arm",
            "baseline",
            "",
            "dropdown",
            "Arm",
            "K, Ketamine | P, Placebo",
            "",
            "",
            "",
            "",
            "",
            "",
            "y",
            "",
            "",
            "",
            "",
            "",
        ],
        [
            "kss",
            "daily",
            "",
            "radio",
            "<b>KSS</b>",
            "1, Alert | 9, Sleepy",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        ],
        [
            "alcohol",
            "daily",
            "",
            "yesno",
            "Alcohol?",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        ],
        [
            "meds",
            "daily",
            "",
            "checkbox",
            "Medication",
            "1, Zolpidem | 2, Lorazepam",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        ],
        [
            "bmi",
            "baseline",
            "",
            "calc",
            "BMI",
            "[weight]/([height]/100)^2",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        ],
        [
            "note",
            "daily",
            "",
            "descriptive",
            "Please fill in",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        ],
    ]
    path = tmp_path / "redcap.csv"
    pd.DataFrame(rows, columns=list(REDCAP_COLUMNS)).to_csv(path, index=False)
    dd = import_redcap(path)
    assert dd.tables == ("baseline", "daily")
    assert dd.names("daily") == ["record_id", "kss", "alcohol", "meds___1", "meds___2"]
    assert dd.keys("daily") == ["record_id"]
    assert dd.get("baseline", "dob").type == "date"
    assert dd.get("baseline", "dob").identifier and dd.get("baseline", "dob").required
    w = dd.get("baseline", "weight")
    assert (w.type, w.unit, w.minimum, w.maximum) == ("number", "kg", 30.0, 250.0)
    assert dd.get("baseline", "arm").type == "categorical"
    assert dd.levels("baseline", "arm") == ["K", "P"]
    assert dd.get("daily", "kss").type == "integer"  # integer codes
    assert dd.get("daily", "kss").label == "KSS"  # HTML stripped
    assert dd.get("daily", "alcohol").codes == (("1", "Yes"), ("0", "No"))
    assert dd.get("daily", "meds___2").label == "Medication: Lorazepam"
    bmi = dd.get("baseline", "bmi")
    assert (bmi.type, bmi.role, bmi.derivation) == (
        "number",
        "derived",
        "[weight]/([height]/100)^2",
    )
    assert dd.identifier_columns() == {"dob"}


def test_redcap_import_rejects_other_csv(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(
        DictionaryError, match="not a REDCap data dictionary.*'Variable / Field Name'"
    ):
        import_redcap(p)


# -- Frictionless -----------------------------------------------------------------------
def test_table_schema(dd):
    schema = table_schema(dd, "nights")
    json.dumps(schema)  # JSON-ready
    fields = {f["name"]: f for f in schema["fields"]}
    assert schema["primaryKey"] == ["participant_id", "period", "night"]
    assert schema["foreignKeys"] == [
        {
            "fields": ["participant_id"],
            "reference": {"resource": "roster", "fields": ["participant_id"]},
        },
        {
            "fields": ["participant_id", "period"],
            "reference": {"resource": "periods", "fields": ["participant_id", "period"]},
        },
    ]
    assert fields["treatment"]["type"] == "string"
    assert fields["treatment"]["constraints"] == {"required": True, "enum": ["placebo", "ketamine"]}
    assert fields["tst_min"]["constraints"] == {"minimum": 0, "maximum": 1440}
    assert fields["tst_min"]["unit"] == "min"
    assert fields["lights_off"]["type"] == "datetime"
    diary = {f["name"]: f for f in table_schema(dd, "diary")["fields"]}
    assert diary["kss"]["constraints"]["enum"] == list(range(1, 10))
    assert diary["kss"]["missingValues"] == ["", "-99"]
    periods = {f["name"]: f for f in table_schema(dd, "periods")["fields"]}
    assert periods["sedative_use"]["trueValues"] == ["1"]
    assert periods["sedative_use"]["falseValues"] == ["0"]


def test_dictionary_from_frame_round_trip(dd):
    again = DataDictionary.from_frame(dd.to_frame())
    assert again.to_frame().equals(dd.to_frame())


# -- CLI -----------------------------------------------------------------------------------
def test_cli_dictionary_actions(tmp_path, capsys):
    assert main(["dictionary", "check"]) == 0
    # data_dictionary.csv: 74 rows after the header (wc -l: 75 lines)
    assert "74 variables" in capsys.readouterr().out
    out = tmp_path / "rc.csv"
    assert main(["dictionary", "export-redcap", str(out), "--tables", "roster", "diary"]) == 0
    rc = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert set(rc["Form Name"]) == {"roster", "diary"}
    dd_out = tmp_path / "dd.csv"
    assert main(["dictionary", "import-redcap", str(out), "-o", str(dd_out)]) == 0
    assert load_dictionary(dd_out).tables == ("roster", "diary")
    assert main(["dictionary", "import-redcap", str(out), "-o", str(dd_out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["dictionary", "import-redcap", str(out), "-o", str(dd_out), "--force"]) == 0
    capsys.readouterr()
    assert main(["dictionary", "schema", "epochs"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "epochs"
    assert main(["dictionary", "schema", "nope"]) == 2
    assert "Unknown table 'nope'" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "\nx,X,t,outcome,float,,,,,no,no,no,,,,,\n")
    assert main(["dictionary", "check", str(bad)]) == 2
    assert "type 'float'" in capsys.readouterr().err
