"""Tables: stable CSV bytes, identifier fields never exported, Table 1 / descriptives numbers.

Every expected number below is a hand computation on the small frames built in this file
(stated next to it); none comes from running the code under test.
"""

import csv
import math

import numpy as np
import pandas as pd
import pytest

from studykit.errors import InputError
from studykit.privacy import identifier_columns
from studykit.tables import (
    HYPOTHESIS_COLUMNS,
    baseline_characteristics,
    descriptive_outcomes,
    format_baseline_table,
    format_descriptive_table,
    format_hypothesis_table,
    hypothesis_table,
    to_csv_text,
    validation_summary,
    write_table,
)


def _roster():
    return pd.DataFrame(
        {
            "participant_id": ["P01", "P02", "P03", "P04", "P05"],
            "initials": ["AB", "CD", "EF", "GH", "IJ"],
            "screening_date": ["2025-01-02"] * 5,
            "sequence": ["KP", "PK", "KP", "PK", "PK"],
            "age": [30, 40, 50, 20, np.nan],
            "sex": ["F", "M", "F", "F", "M"],
            "status": ["completed", "completed", "withdrawn", "completed", "withdrawn"],
            "withdrawal_reason": [None, None, "adverse event", None, "moved away"],
        }
    )


def _hypotheses(n=2):
    rows = []
    for i in range(n):
        rows.append({c: None for c in HYPOTHESIS_COLUMNS})
        rows[-1].update(
            protocol_id="demo",
            protocol_sha256="0" * 64,
            hypothesis_id=f"H{[10, 2, 1][i % 3]}",
            claim="C2",
            outcome="n3_min",
            contrast="ketamine - placebo, post1",
            role="confirmatory",
            multiplicity_family="primary",
            family="gaussian",
            scale="difference",
            n_ketamine=18,
            n_placebo=18,
            n_participants=18,
            n_observations=72,
            n_excluded=1,
            excluded_reasons="P07: withdrawn before post1",
            estimate=8.0 + i,
            std_error=2.0,
            df=30.5,
            df_method="satterthwaite",
            statistic=4.0,
            alternative="two-sided",
            conf_level=0.95,
            conf_low=4.0,
            conf_high=12.0,
            p_value=0.0004,
            p_adjusted=0.0008,
            adjust_method="holm",
            effect_size=0.5,
            effect_size_definition="d = estimate / residual SD",
            verdict="supported",
            verdict_rule="p_adjusted < 0.05 and estimate > 0",
            model="lmm",
            converged=True,
            singular=False,
            warnings="",
            simulated=True,
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- identifiers


def test_identifier_columns_are_the_dictionary_phi_flags():
    # data_dictionary.csv: rows with identifier == yes are initials and screening_date
    # (hand count of the CSV); participant_id is pseudonymous (identifier == no).
    assert identifier_columns() == {"initials", "screening_date"}


@pytest.mark.parametrize("fmt", ["csv", "md", "html", "tex"])
def test_identifier_fields_never_exported(tmp_path, fmt):
    roster = _roster()
    paths = write_table(roster, tmp_path, "roster", formats=[fmt])
    text = paths[fmt].read_text()
    for forbidden in ("initials", "screening_date", "AB", "2025-01-02"):
        assert forbidden not in text
    assert "P01" in text  # the pseudonymous key is kept


def test_identifier_dropped_from_custom_display(tmp_path):
    data = pd.DataFrame({"variable": ["age"], "initials": ["AB"], "n": [5]})
    display = pd.DataFrame({"Variable": ["age"], "initials": ["AB"]})
    paths = write_table(data, tmp_path, "t", display=display)
    for p in paths.values():
        assert "initials" not in p.read_text() and "AB" not in p.read_text()
    assert paths["csv"].read_text() == "variable,n\nage,5\n"


def test_summary_of_an_identifier_is_refused(tmp_path):
    data = pd.DataFrame({"variable": ["age", "initials"], "level": ["", "AB"], "n": [5, 1]})
    with pytest.raises(InputError, match="initials"):
        write_table(data, tmp_path, "t")
    assert not list(tmp_path.iterdir())  # nothing written


def test_explicit_identifier_list_is_honoured(tmp_path):
    d = pd.DataFrame({"a": [1], "secret": ["x"]})
    text = write_table(d, tmp_path, "t", formats=["csv"], identifiers={"secret"})["csv"]
    assert text.read_text() == "a\n1\n"


# ---------------------------------------------------------------- writer


def test_csv_bytes_are_stable_and_fixed_format(tmp_path):
    d = pd.DataFrame({"x": ["b", "a"], "y": [1 / 3, -0.0], "z": [np.nan, 2.5e-12]})
    a = write_table(d, tmp_path / "a", "t", formats=["csv"])["csv"].read_bytes()
    b = write_table(d.copy(), tmp_path / "b", "t", formats=["csv"])["csv"].read_bytes()
    assert a == b
    # 1/3 to 10 significant digits; -0.0 written as 0; NaN as empty; \n line ends
    assert a == b"x,y,z\nb,0.3333333333,\na,0,2.5e-12\n"


def test_sort_by_is_natural_and_stable(tmp_path):
    d = pd.DataFrame({"hypothesis_id": ["H10", "H2", "H1", "H2"], "k": [1, 2, 3, 4]})
    text = write_table(d, tmp_path, "t", formats=["csv"], sort_by=["hypothesis_id"])["csv"]
    assert text.read_text() == "hypothesis_id,k\nH1,3\nH2,2\nH2,4\nH10,1\n"


def test_list_cells_joined(tmp_path):
    d = pd.DataFrame({"k": [1, 2], "warnings": [["singular fit", "boundary"], []]})
    assert to_csv_text(d) == "k,warnings\n1,singular fit; boundary\n2,\n"


def test_all_formats_written_with_title_and_latex_escaping(tmp_path):
    d = pd.DataFrame({"tst_min": [401.25], "p_value": [0.0001]})
    paths = write_table(d, tmp_path, "demo", title="TST & more", notes="50% of nights")
    assert set(paths) == {"csv", "md", "html", "tex"}
    tex = paths["tex"].read_text()
    assert r"tst\_min" in tex and r"TST \& more" in tex and r"\toprule" in tex
    md = paths["md"].read_text()
    assert "**TST & more**" in md and "401.25" in md and "<0.001" in md
    html = paths["html"].read_text()
    assert 'id="table-demo"' in html and "TST &amp; more" in html


def test_unknown_format_and_sort_column_raise(tmp_path):
    d = pd.DataFrame({"a": [1]})
    with pytest.raises(InputError, match="Invalid table format"):
        write_table(d, tmp_path, "t", formats=["xlsx"])
    with pytest.raises(InputError, match="no such column"):
        write_table(d, tmp_path, "t", sort_by=["b"])


# ---------------------------------------------------------------- hypotheses


def test_hypothesis_table_orders_columns_and_rows():
    h = _hypotheses(3)
    h["extra"] = 1
    shuffled = h[list(reversed(h.columns))]
    out = hypothesis_table(shuffled)
    assert list(out.columns) == [*HYPOTHESIS_COLUMNS, "extra"]
    # protocol (analysis) order is kept, not re-sorted
    assert out["hypothesis_id"].tolist() == ["H10", "H2", "H1"]


def test_hypothesis_table_missing_columns_named():
    with pytest.raises(InputError, match="p_adjusted"):
        hypothesis_table(_hypotheses().drop(columns=["p_adjusted"]))


def test_format_hypothesis_table_shows_ratio_and_method():
    h = _hypotheses(1)
    h.loc[0, ["scale", "estimate", "conf_low", "conf_high"]] = ["rate ratio", 0.85, 0.7, 1.03]
    row = format_hypothesis_table(h).iloc[0]
    assert row["Estimate [CI]"] == "0.85 (ratio) [0.70, 1.03]"
    assert row["Adjusted p"] == "<0.001 (holm)"
    assert row["n (K/P)"] == "18/18"


def test_baseline_characteristics_numbers():
    t = baseline_characteristics(
        _roster(), variables=["age", "sex"], group_order=["KP", "PK"], levels={"sex": ["F", "M"]}
    )
    age_pk = t.query("variable == 'age' and group == 'PK'").iloc[0]
    # PK ages 40, 20, missing: n 2, mean 30, SD sqrt(200) = 14.142..., 1 missing
    assert (age_pk["n"], age_pk["mean"], age_pk["n_missing"]) == (2, 30, 1)
    assert age_pk["sd"] == pytest.approx(math.sqrt(200))
    # overall ages 30, 40, 50, 20: median 35, type-7 quartiles 27.5 and 42.5
    age_all = t.query("variable == 'age' and group == 'overall'").iloc[0]
    assert (age_all["median"], age_all["q1"], age_all["q3"]) == (35, 27.5, 42.5)
    sex_f_pk = t.query("variable == 'sex' and level == 'F' and group == 'PK'").iloc[0]
    # PK: F, F? -> P02 M, P04 F, P05 M: 1 of 3 female
    assert (sex_f_pk["count"], sex_f_pk["percent"]) == (1, pytest.approx(100 / 3))
    assert "p_value" not in t.columns  # CONSORT: no baseline significance tests
    sizes = t.query("variable == 'participants'").set_index("group")["n"].to_dict()
    assert sizes == {"KP": 2, "PK": 3, "overall": 5}


def test_format_baseline_table_layout():
    t = baseline_characteristics(
        _roster(),
        variables=["age", "sex"],
        group_order=["KP", "PK"],
        labels={"age": "Age", "sex": "Sex"},
        units={"age": "years"},
        levels={"sex": ["F", "M"]},
    )
    f = format_baseline_table(t, group_labels={"KP": "Ketamine then placebo"})
    assert list(f.columns) == [
        "Characteristic",
        "Ketamine then placebo (n = 2)",
        "PK (n = 3)",
        "Overall (n = 5)",
    ]
    assert f.iloc[0].tolist()[:3] == ["Age (years), mean (SD)", "40.0 (14.1)", "30.0 (14.1)"]
    assert "    missing, n" in f["Characteristic"].tolist()
    assert f.loc[f["Characteristic"] == "    F", "PK (n = 3)"].item() == "1 (33.3)"


def test_table1_never_lists_identifier_variables(tmp_path):
    t = baseline_characteristics(_roster(), variables=["age", "initials"])
    with pytest.raises(InputError, match="identifier"):
        write_table(t, tmp_path, "table1", display=format_baseline_table(t))
    assert not list(tmp_path.iterdir())


def test_baseline_missing_variable_is_named():
    with pytest.raises(InputError, match="bmi"):
        baseline_characteristics(_roster(), variables=["bmi"])


# ---------------------------------------------------------------- descriptives


def test_descriptive_outcomes_per_arm_and_night():
    d = pd.DataFrame(
        {
            "treatment": ["ketamine", "placebo"] * 4,
            "night": ["post1"] * 4 + ["baseline"] * 4,
            "n3_min": [90.0, 80.0, 100.0, 70.0, 60.0, 65.0, np.nan, 75.0],
        }
    )
    t = descriptive_outcomes(
        d,
        outcomes=["n3_min"],
        arm_order=["placebo", "ketamine"],
        time_order=["baseline", "post1"],
    )
    assert t[["treatment", "night"]].to_numpy().tolist() == [
        ["placebo", "baseline"],
        ["placebo", "post1"],
        ["ketamine", "baseline"],
        ["ketamine", "post1"],
    ]
    # ketamine baseline: values 60 and missing -> n 1, missing 1, SD undefined
    kb = t.iloc[2]
    assert (kb["n"], kb["n_missing"], kb["mean"]) == (1, 1, 60)
    assert math.isnan(kb["sd"])
    # placebo post1: 80, 70 -> mean 75, SD sqrt(50), quartiles 72.5 / 77.5
    pp = t.iloc[1]
    assert (pp["mean"], pp["q1"], pp["q3"]) == (75, 72.5, 77.5)
    assert pp["sd"] == pytest.approx(math.sqrt(50))
    f = format_descriptive_table(t)
    assert f.iloc[1].tolist() == [
        "n3_min",
        "placebo",
        "post1",
        "2",
        "75.0 (7.1)",
        "75.0 [72.5, 77.5]",
    ]


# ---------------------------------------------------------------- validation / flow


def test_validation_summary_counts_without_values():
    iss = pd.DataFrame(
        {
            "file": ["roster.csv", "nights.csv", "nights.csv", "roster.csv"],
            "row": [4, 9, 2, 5],
            "participant_id": ["P03", "P01", "P01", "P04"],
            "night": [None, "post1", "post2", None],
            "column": ["initials", "tst_min", "tst_min", "age"],
            "value": ["ZZ", "-1", "2000", "abc"],
            "rule": ["type", "range", "range", "type"],
            "severity": ["warning", "error", "error", "error"],
            "message": ["m1", "below 0", "above 1440", "not an integer"],
        }
    )
    s = validation_summary(iss)
    assert s[
        ["file", "column", "severity", "n_issues", "n_participants", "first_row"]
    ].to_numpy().tolist() == [
        ["nights.csv", "tst_min", "error", 2, 1, 2],
        ["roster.csv", "age", "error", 1, 1, 5],
        ["roster.csv", "initials", "warning", 1, 1, 4],
    ]
    assert "value" not in s.columns and "ZZ" not in to_csv_text(s)
    assert s.loc[0, "example"] == "above 1440"  # message of the first row (row 2)
    assert validation_summary(None).empty


def test_exports_neutralize_formulas_and_escape_markup(tmp_path):
    """#13 item 7: OWASP CSV injection; Markdown / HTML / LaTeX injection (hand-made cells)."""
    d = pd.DataFrame(
        {
            "claim": ['=HYPERLINK("http://evil")', "+1+cmd|' /C calc'!A0", "@SUM(A1)"],
            "note": ["\tTAB", "\rCR", "-2+3"],
            "text_number": ["-5", "+1.5e3", "-inf"],  # numbers written as text: unchanged
            "estimate": [-1.5, 2.0, -0.25],  # negative numbers stay numbers
            "markup": ["a | b", "<script>alert(1)</script>", "\\input{/etc/passwd}"],
        }
    )
    paths = write_table(d, tmp_path, "t", title="<b>T|itle</b>")
    with open(paths["csv"], newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert [r[0] for r in rows[1:]] == [
        '\'=HYPERLINK("http://evil")',
        "'+1+cmd|' /C calc'!A0",
        "'@SUM(A1)",
    ]
    assert [r[1] for r in rows[1:]] == ["'\tTAB", "'\nCR", "'-2+3"]  # CR: a quoted LF
    assert [r[2] for r in rows[1:]] == ["-5", "+1.5e3", "-inf"]
    assert [r[3] for r in rows[1:]] == ["-1.5", "2", "-0.25"]
    md = paths["md"].read_text()
    assert "a \\| b" in md and "<script>" not in md and "&lt;script>" in md
    assert "&lt;b>T\\|itle&lt;/b>" in md
    assert all(line.count("|") - line.count("\\|") == 6 for line in md.splitlines()[2:5])
    html = paths["html"].read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;" in html
    tex = paths["tex"].read_text()
    assert "\\input{" not in tex and "\\textbackslash" in tex
