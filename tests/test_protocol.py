"""Loading protocols: the shipped protocol, strict schema, dictionary checks, no code."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import DD, PROTOCOL, hyp, parse

from studykit.errors import ProtocolError
from studykit.protocol import EVIDENCE, load_protocol, parse_protocol

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def proto():
    return load_protocol(PROTOCOL, dictionary=DD)


# ------------------------------------------------------------------ the shipped protocol
def test_shipped_protocol_loads(proto):
    assert proto.id == "ketamine_sleep"
    assert [h.id for h in proto.hypotheses] == [
        "H1", "H2", "H3", "E1", "E2", "E3", "E4", "E5", "E6", "E7",
    ]  # fmt: skip
    assert proto.sha256 == hashlib.sha256(PROTOCOL.read_bytes()).hexdigest()


def test_confirmatory_family(proto):
    conf = [h for h in proto.hypotheses if h.role == "confirmatory"]
    assert [(h.id, h.claim_id, h.outcome, h.direction, h.family) for h in conf] == [
        ("H1", "C2", "n3_min", "greater", "gaussian"),
        ("H2", "C4", "n_awakenings", "less", "negbin"),
        ("H3", "C3", "tst_min", "greater", "gaussian"),
    ]
    assert {h.multiplicity_family for h in conf} == {"confirmatory"}
    fam = proto.families["confirmatory"]
    # amendment 1.1: fixed sequence H1 -> H2 -> H3 (version 1.0: Holm)
    assert (fam.method, fam.alpha, fam.order) == ("fixed-sequence", 0.025, ("H1", "H2", "H3"))
    assert all(h.conf_level == pytest.approx(0.95) for h in proto.hypotheses)


def test_shipped_protocol_is_version_1_1_with_its_amendment(proto):
    """Version 1.1 replaces 1.0, archived byte for byte: the hash stated in the amendment is
    `sha256sum protocols/archive/ketamine_sleep_v1.0.yaml` (a4f28c00...), the file the 1.0
    results of the previous session were computed from."""
    archive = PROTOCOL.parent / "archive" / "ketamine_sleep_v1.0.yaml"
    assert proto.version == "1.1"
    (a,) = proto.amendments
    assert (a.version, a.replaces_version, a.replaces_file) == (
        "1.1", "1.0", "archive/ketamine_sleep_v1.0.yaml",
    )  # fmt: skip
    assert a.replaces_sha256 == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert a.replaces_sha256.startswith("a4f28c00d853")
    assert len(a.changes) == 5 and "studykit power" in a.rationale
    v10 = load_protocol(archive, dictionary=DD)
    assert v10.version == "1.0" and v10.families["confirmatory"].method == "holm"
    assert {h.estimator for h in v10.hypotheses} == {"did"}
    # what 1.1 changed: the estimator of H1, H3, E1; ordinal E3, E4
    assert {h.id for h in proto.hypotheses if h.estimator == "clda"} == {"H1", "H3", "E1"}
    assert {h.id for h in proto.hypotheses if h.family == "ordinal"} == {"E3", "E4"}
    assert proto.get("E3").effect_of_interest == 2.5 and proto.get("E4").scale == "odds ratio"
    assert [s.name for s in proto.sensitivity] == [
        "did_version_1_0", "ancova_kr2010", "post_only", "linear_kss",
        "linear_dream_vividness", "tipping_point_n3", "tipping_point_tst", "per_protocol",
        "treatment_policy",
    ]  # fmt: skip
    # the restated E3 of the linear sensitivity analysis is 1.0's E3, field for field, but for
    # the estimand (its summary measure is the sensitivity analysis' description)
    lin = proto.sensitivity[3]
    e3 = lin.variant("E3")
    assert e3.estimand.summary_measure == lin.description
    for f in dataclasses.fields(e3):
        if f.name != "estimand":
            assert getattr(e3, f.name) == getattr(v10.get("E3"), f.name), f.name


def test_every_claim_is_tested_or_explained(proto):
    tested = {h.claim_id for h in proto.hypotheses}
    untested = {n.claim_id for n in proto.not_tested}
    assert tested | untested == {f"C{i}" for i in range(1, 12)}
    assert not tested & untested
    for n in proto.not_tested:
        assert len(n.reason) > 40


def test_claims_without_primary_research_say_so(proto):
    # LITERATURE: no PSG study for C1, C6, C7 -> "from the articles, not from primary research"
    for h in proto.hypotheses:
        if h.claim_id in ("C1", "C6", "C7"):
            assert h.source.evidence == "none"
            assert h.source.evidence_text == "from the articles, not from primary research"
    assert EVIDENCE["none"] == "from the articles, not from primary research"


def test_reference_levels_are_explicit(proto):
    h1 = proto.get("H1")
    assert h1.levels["treatment"] == ("placebo", "ketamine")
    assert h1.levels["night"] == ("baseline", "post1", "post2", "day7")
    assert h1.levels["period"] == ("1", "2")
    e3 = proto.get("E3")
    assert e3.levels["day"] == ("0", "1", "2", "3", "4")
    assert e3.contrast.time_levels == ("1", "2", "3")


def test_structured_random_effects_and_estimand(proto):
    h1 = proto.get("H1")
    assert [r.label for r in h1.random] == [
        "(1 | participant_id)",
        "(1 | participant_id:period)",
    ]
    ices = h1.estimand.intercurrent_events
    # amendment 1.1: the data before the event are kept (1.0: exclude_period)
    assert [(e.variable, e.strategy, e.handling, e.timing) for e in ices] == [
        ("sedative_use", "hypothetical", "exclude_after_event", "sedative_first_night"),
        ("alcohol_use", "hypothetical", "exclude_after_event", "alcohol_first_night"),
    ]
    assert "hypothetical strategy" in h1.estimand.text()


def test_verdict_rule_names_its_numbers(proto):
    rule = proto.get("H2").verdict_rule
    assert "fixed-sequence-adjusted" in rule and "< 0.025" in rule and "above 0.9" in rule
    assert "95% CI" in rule


def test_get_unknown_hypothesis(proto):
    with pytest.raises(ProtocolError, match="no hypothesis 'H9'"):
        proto.get("H9")


def test_summary_table(proto):
    s = proto.summary()
    assert list(s["hypothesis_id"]) == [h.id for h in proto.hypotheses]


def test_hash_changes_with_one_byte():
    text = PROTOCOL.read_bytes()
    a = parse_protocol(text, dictionary=DD, base_dir=PROTOCOL.parent)
    b = parse_protocol(text + b"\n", dictionary=DD, base_dir=PROTOCOL.parent)
    assert a.sha256 != b.sha256
    assert a.sha256 == hashlib.sha256(text).hexdigest()


# ------------------------------------------------------------------ strict schema
def test_unknown_top_level_key(doc):
    doc["hypothesis"] = []
    with pytest.raises(ProtocolError, match=r"top level: unknown key\(s\) hypothesis"):
        parse(doc)


def test_unknown_hypothesis_key_names_hypothesis(doc):
    hyp(doc, "H1")["directon"] = "greater"
    with pytest.raises(ProtocolError, match=r"hypothesis 'H1': unknown key\(s\) directon"):
        parse(doc)


def test_missing_field(doc):
    del hyp(doc, "H3")["direction"]
    with pytest.raises(
        ProtocolError, match=r"hypothesis 'H3': missing required field\(s\) direction"
    ):
        parse(doc)


def test_missing_estimand_attribute(doc):
    del hyp(doc, "H1")["estimand"]["summary_measure"]
    with pytest.raises(
        ProtocolError, match=r"estimand: missing required field\(s\) summary_measure"
    ):
        parse(doc)


def test_outcome_not_in_dictionary(doc):
    hyp(doc, "H1")["outcome"]["variable"] = "sws_min"
    with pytest.raises(ProtocolError, match="'sws_min' is not a variable of table 'nights'"):
        parse(doc)


def test_outcome_in_wrong_table(doc):
    hyp(doc, "H1")["outcome"] = {"table": "diary", "variable": "n3_min"}
    with pytest.raises(ProtocolError, match="not a variable of table 'diary'"):
        parse(doc)


@pytest.mark.parametrize("variable", ["kss", "dream_vividness"])
def test_poisson_on_non_count_refused(doc, variable):
    h = hyp(doc, "E3")
    h["outcome"]["variable"] = variable
    h["family"] = "poisson"
    h["effect_of_interest"] = 1.2
    with pytest.raises(ProtocolError, match="family 'poisson' needs a count outcome"):
        parse(doc)


def test_negbin_on_minutes_refused(doc):
    hyp(doc, "H2")["outcome"]["variable"] = "tst_min"
    with pytest.raises(
        ProtocolError, match="family 'negbin' needs a count outcome.*'tst_min' is type 'number'"
    ):
        parse(doc)


def test_categorical_outcome_refused(doc):
    hyp(doc, "H1")["outcome"]["variable"] = "night"
    with pytest.raises(ProtocolError, match="only numeric outcomes"):
        parse(doc)


@pytest.mark.parametrize("alpha", [0, -0.05, 0.8, "0.05", True])
def test_invalid_alpha(doc, alpha):
    doc["multiplicity"]["confirmatory"]["alpha"] = alpha
    with pytest.raises(ProtocolError, match=r"multiplicity\.confirmatory\.alpha"):
        parse(doc)


def test_hypothesis_alpha_must_match_adjusted_family(doc):
    hyp(doc, "H1")["alpha"] = 0.05
    with pytest.raises(
        ProtocolError, match="differs from the alpha 0.025 of its multiplicity family"
    ):
        parse(doc)


def test_unknown_multiplicity_method(doc):
    doc["multiplicity"]["confirmatory"]["method"] = "BH"
    with pytest.raises(
        ProtocolError,
        match="invalid value 'BH'. Allowed: holm, bonferroni, hochberg, fixed-sequence, none",
    ):
        parse(doc)


def test_fixed_sequence_needs_order(doc):
    del doc["multiplicity"]["confirmatory"]["order"]
    with pytest.raises(ProtocolError, match="needs 'order' listing each of its hypotheses"):
        parse(doc)
    doc["multiplicity"]["confirmatory"]["order"] = ["H1", "H3"]
    with pytest.raises(ProtocolError, match="needs 'order' listing each of its hypotheses"):
        parse(doc)
    doc["multiplicity"]["confirmatory"]["order"] = ["H1", "H3", "H2"]
    assert parse(doc).families["confirmatory"].order == ("H1", "H3", "H2")
    doc["multiplicity"]["confirmatory"]["method"] = "holm"
    with pytest.raises(ProtocolError, match="'order' is only used with method fixed-sequence"):
        parse(doc)


def test_confirmatory_family_needs_adjustment(doc):
    doc["multiplicity"]["confirmatory"]["method"] = "none"
    del doc["multiplicity"]["confirmatory"]["order"]
    with pytest.raises(ProtocolError, match="needs a multiplicity method"):
        parse(doc)


def test_reference_level_not_among_codes(doc):
    hyp(doc, "H1")["contrast"]["time"]["reference"] = "pre"
    with pytest.raises(
        ProtocolError, match="level 'pre' of 'night' is not among its dictionary codes"
    ):
        parse(doc)


def test_treatment_level_not_among_codes(doc):
    hyp(doc, "H1")["contrast"]["treatment"]["level"] = "esketamine"
    with pytest.raises(ProtocolError, match="'esketamine' of 'treatment' is not among"):
        parse(doc)


def test_integer_level_out_of_range(doc):
    hyp(doc, "E3")["contrast"]["time"]["levels"] = [1, 2, 30]
    with pytest.raises(ProtocolError, match="level 30 of 'day' is outside its dictionary range"):
        parse(doc)


def test_factor_without_reference_refused(doc):
    h = hyp(doc, "H1")
    h["model"] = copy.deepcopy(h["model"])
    h["model"]["covariates"] = ["sex"]
    del doc["defaults"]["reference_levels"]["sex"]
    with pytest.raises(ProtocolError, match="factor 'sex' needs an explicit reference level"):
        parse(doc)


def test_covariates_allowed_from_roster(doc, proto):
    h = hyp(doc, "H1")
    h["model"] = copy.deepcopy(h["model"])
    h["model"]["covariates"] = ["age", "sex"]
    p = parse(doc)
    assert p.get("H1").terms[-2:] == ["age", "sex"]
    assert p.get("H1").levels["sex"] == ("F", "M")


def test_identifier_refused_in_model(doc):
    h = hyp(doc, "H1")
    h["model"] = copy.deepcopy(h["model"])
    h["model"]["covariates"] = ["initials"]
    with pytest.raises(ProtocolError, match="direct identifier"):
        parse(doc)


def test_term_not_in_dictionary(doc):
    h = hyp(doc, "H1")
    h["model"] = copy.deepcopy(h["model"])
    h["model"]["covariates"] = ["weight"]
    with pytest.raises(ProtocolError, match="'weight' is not a variable of the data dictionary"):
        parse(doc)


@pytest.mark.parametrize(
    "term",
    [
        "__import__('os')",
        "__import__",
        "I(x**2)",
        "np.log(tst_min)",
        "tst_min + 1",
        "treatment*night",
        "os.system('rm -rf /')",
        "exec",
    ],
)
def test_code_in_terms_refused(doc, term):
    h = hyp(doc, "H1")
    h["model"] = copy.deepcopy(h["model"])
    h["model"]["fixed"] = [*h["model"]["fixed"], term]
    with pytest.raises(ProtocolError, match=r"looks like code|is not a variable"):
        parse(doc)


def test_code_in_random_group_refused(doc):
    h = hyp(doc, "H1")
    h["model"] = copy.deepcopy(h["model"])
    h["model"]["random"] = [{"group": "participant_id:eval('1')"}]
    with pytest.raises(ProtocolError, match="looks like code"):
        parse(doc)


def test_python_yaml_tags_refused():
    bad = "protocol: !!python/object/apply:os.system ['echo pwned']\n"
    with pytest.raises(ProtocolError, match="not valid YAML"):
        parse_protocol(bad, dictionary=DD)


def test_interaction_needs_main_effects(doc):
    h = hyp(doc, "H1")
    h["model"] = copy.deepcopy(h["model"])
    h["model"]["fixed"] = ["treatment", "night", "treatment:night", "treatment:period"]
    with pytest.raises(ProtocolError, match="needs its main effect 'period'"):
        parse(doc)


def test_did_needs_interaction(doc):
    h = hyp(doc, "H1")
    h["model"] = copy.deepcopy(h["model"])
    h["model"]["fixed"] = ["treatment", "night", "period"]
    with pytest.raises(
        ProtocolError, match="needs the terms 'treatment', 'night' and 'treatment:night'"
    ):
        parse(doc)


def test_count_model_one_random_intercept(doc):
    h = hyp(doc, "H2")
    h["model"]["random"] = [{"group": "participant_id"}, {"group": "participant_id:period"}]
    with pytest.raises(ProtocolError, match="supports one random intercept"):
        parse(doc)


def test_random_group_must_be_participant(doc):
    h = hyp(doc, "H1")
    h["model"] = copy.deepcopy(h["model"])
    h["model"]["random"] = [{"group": "period"}]
    with pytest.raises(ProtocolError, match="random effects group by 'participant_id'"):
        parse(doc)


def test_duplicate_hypothesis_id(doc):
    hyp(doc, "H3")["id"] = "H1"
    with pytest.raises(ProtocolError, match="duplicate hypothesis id 'H1'"):
        parse(doc)


def test_handling_must_implement_strategy(doc):
    h = hyp(doc, "H1")
    h["estimand"] = copy.deepcopy(h["estimand"])
    h["estimand"]["intercurrent_events"][0]["strategy"] = "treatment_policy"
    with pytest.raises(ProtocolError, match="does not implement the 'treatment_policy' strategy"):
        parse(doc)


@pytest.mark.parametrize(("hid", "value"), [("H2", 1.1), ("H2", 0), ("H1", -5), ("E7", 1.5)])
def test_effect_of_interest_on_the_right_scale(doc, hid, value):
    hyp(doc, hid)["effect_of_interest"] = value
    with pytest.raises(ProtocolError, match="effect_of_interest"):
        parse(doc)


def test_unknown_analysis_set(doc):
    hyp(doc, "H1")["analysis_set"] = "itt"
    with pytest.raises(ProtocolError, match="'itt' is not defined in analysis_sets"):
        parse(doc)


def test_analysis_set_status_codes(doc):
    doc["analysis_sets"]["per_protocol"]["exclude_status"] = ["dropped"]
    with pytest.raises(ProtocolError, match="not among roster status codes"):
        parse(doc)


def test_source_article_must_be_declared(doc):
    hyp(doc, "H1")["source"]["articles"] = ["C"]
    with pytest.raises(ProtocolError, match="not among the protocol's articles"):
        parse(doc)


def test_not_a_mapping():
    with pytest.raises(ProtocolError, match="top level: expected a mapping"):
        parse_protocol("- just\n- a list\n", dictionary=DD)


def test_file_errors(tmp_path):
    with pytest.raises(ProtocolError, match="does not exist"):
        load_protocol(tmp_path / "nope.yaml", dictionary=DD)
    with pytest.raises(ProtocolError, match="is a directory"):
        load_protocol(tmp_path, dictionary=DD)
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("protocol: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ProtocolError, match="not UTF-8"):
        load_protocol(bad, dictionary=DD)


def test_messages_name_the_file(tmp_path, doc):
    hyp(doc, "H1")["family"] = "gamma"  # not a family studykit fits
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(ProtocolError, match=re.escape(f"Protocol {path}, hypothesis 'H1'.family")):
        load_protocol(path, dictionary=DD)


# --------------------------------------------------------------------------- strict YAML (#13)
TEXT = PROTOCOL.read_text(encoding="utf-8")


def test_duplicate_key_is_refused_with_its_line():
    # YAML would keep the last 'direction' silently (H1 'greater' -> 'less')
    text = TEXT.replace(
        "    direction: greater\n", "    direction: greater\n    direction: less\n", 1
    )
    line = text.splitlines().index("    direction: less") + 1  # 1-based, counted here
    with pytest.raises(ProtocolError, match=rf"key 'direction' is given twice \(line {line},"):
        parse_protocol(text, dictionary=DD)


def test_duplicate_top_level_key_is_refused():
    with pytest.raises(ProtocolError, match="key 'multiplicity' is given twice"):
        parse_protocol(TEXT + "\nmultiplicity: {}\n", dictionary=DD)


def test_merge_keys_may_be_overridden():
    # '<<: *population' then an explicit key is YAML's override, not a duplicate
    proto = parse_protocol(TEXT, dictionary=DD, base_dir=PROTOCOL.parent)
    assert proto.get("H1").estimand.population.startswith("Adults with depression")


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", ".NaN", "+.Inf"])
def test_non_finite_numbers_are_refused(value):
    text = TEXT.replace("    effect_of_interest: 5\n", f"    effect_of_interest: {value}\n", 1)
    with pytest.raises(ProtocolError, match="not a finite number"):
        parse_protocol(text, dictionary=DD)


def test_deep_yaml_is_a_protocol_error(tmp_path):
    # 50,000 nested lists: a clear protocol error (exit 2), not a RecursionError (exit 1)
    deep = "a: " + "[" * 50_000 + "]" * 50_000 + "\n"
    with pytest.raises(ProtocolError, match="nested too deeply"):
        parse_protocol(deep, dictionary=DD)
    path = tmp_path / "deep.yaml"
    path.write_text(deep, encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "studykit", "fit", str(path), "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 2, out.stderr
    assert "nested too deeply" in out.stderr and "Traceback" not in out.stderr


def test_plans_compiled_once_at_load(proto):
    plans = {p.id: p for p in proto.plans}
    assert list(plans) == [h.id for h in proto.hypotheses]
    h2 = plans["H2"]
    assert (h2.model.kind, h2.model.df_method, h2.test.df_label) == (
        "glmm",
        "z",
        "z (asymptotic Wald)",
    )
    assert plans["E7"].model.kind == "correlation"
    assert plans["E7"].selection.model_variables == ("madrs_day0",)
    # the engine's random-effects type (models.lmm.RandomEffect) is the protocol's
    assert [r.label for r in plans["H1"].model.random] == [
        "(1 | participant_id)",
        "(1 | participant_id:period)",
    ]
