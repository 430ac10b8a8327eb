"""Protocol model specifications written as lme4 formulas, and ordinal (CLMM) hypotheses."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from conftest import PROTOCOL, hyp, parse

from studykit.analysis import run_analysis
from studykit.errors import ProtocolError
from studykit.models.clmm import CLMMResult
from studykit.simulate import simulate_study, write_study
from studykit.validate import load_study

ROOT = Path(__file__).resolve().parents[1]


def test_formula_gives_the_same_plan_as_lists(doc):
    lists = parse(doc).plan("H1").model
    h = hyp(doc, "H1")
    levels = h["model"].get("levels")
    h["model"] = {
        "formula": "n3_min ~ treatment * night + period + (1 | participant_id/period)",
        "levels": levels,
    }
    formula = parse(doc).plan("H1").model
    assert set(formula.terms) == set(lists.terms)
    assert [r.label for r in formula.random] == [r.label for r in lists.random]
    assert dict(formula.levels) == dict(lists.levels)


@pytest.mark.parametrize(
    ("formula", "match"),
    [
        ("sws ~ treatment * night + (1 | participant_id)", "not the hypothesis' outcome"),
        ("n3_min ~ treatment * night + __import__('os') + (1 | participant_id)", "dunder"),
        ("n3_min ~ treatment * night + age.real + (1 | participant_id)", "attribute access"),
        ("n3_min ~ treatment * night + nosuch + (1 | participant_id)", "nosuch"),
        ("n3_min ~ treatment + night + (1 | participant_id)", "difference_in_differences needs"),
        ("n3_min ~ treatment * night + (1 | site)", "random effects group by"),
        ("log(n3_min) ~ treatment * night + (1 | participant_id)", "the outcome"),
        ("n3_min ~ 0 + treatment * night + (1 | participant_id)", "intercept"),
    ],
)
def test_formula_is_checked_against_the_dictionary(doc, formula, match):
    hyp(doc, "H1")["model"] = {"formula": formula}
    with pytest.raises(ProtocolError, match=match):
        parse(doc)


def test_formula_or_lists_not_both(doc):
    hyp(doc, "H1")["model"]["formula"] = "n3_min ~ treatment * night + (1 | participant_id)"
    with pytest.raises(ProtocolError, match="either as a formula or"):
        parse(doc)


def test_ordinal_hypotheses_and_linear_sensitivity(doc):
    # protocol 1.1 (amendment): E3 and E4 by a CLMM, the 1.0 linear models as sensitivity
    proto = parse(doc)
    linear = {s.name: s for s in proto.sensitivity}
    for hid, name in (("E3", "linear_kss"), ("E4", "linear_dream_vividness")):
        h = proto.get(hid)
        assert h.family == "ordinal" and h.scale == "odds ratio"
        assert proto.plan(hid).model.kind == "clmm" and proto.plan(hid).model.df_method == "z"
        assert [r.label for r in h.random] == ["(1 | participant_id)"]
        sens = linear[name].variant(hid)
        assert (
            sens.family == "gaussian" and sens.outcome == h.outcome and sens.scale == "difference"
        )
        assert len(sens.random) == 2  # 1.0's participant and participant x period intercepts
        assert "odds ratio of 2.5 or more" in h.verdict_rule


def test_ordinal_effect_of_interest_is_an_odds_ratio(doc):
    hyp(doc, "E3")["effect_of_interest"] = 0.5  # direction greater needs an odds ratio > 1
    with pytest.raises(ProtocolError, match="odds ratio"):
        parse(doc)
    doc = yaml.safe_load(PROTOCOL.read_text(encoding="utf-8"))
    h = hyp(doc, "H1")
    h["family"] = "ordinal"  # N3 minutes: a number, not a bounded integer rating
    with pytest.raises(ProtocolError, match="family 'ordinal' needs a rating"):
        parse(doc)


def test_ordinal_hypothesis_is_analysed_with_clmm(tmp_path, doc):
    # the SIMULATED demo study, small
    write_study(simulate_study(n_participants=16), tmp_path / "demo")
    study = load_study(tmp_path / "demo")
    proto = parse(doc)
    res = run_analysis(proto, study, hypotheses=["E3"])
    fit = res.fit("E3")
    assert isinstance(fit.model, CLMMResult) and fit.model.converged
    t = res.hypotheses
    e3 = t[t["analysis"] == "primary"]
    assert (e3["scale"] == "odds ratio").all() and (e3["df_method"].str.startswith("z")).all()
    # the odds ratio is exp of the model's log-odds contrast; its interval contains it
    assert ((e3["conf_low"] < e3["estimate"]) & (e3["estimate"] < e3["conf_high"])).all()
    tab = fit.model.contrast(
        [0.0] * len(fit.model.columns), names=["zero"]
    )  # z tests on the latent scale
    assert math.isinf(tab["df"].iloc[0])
    assert (fit.emmeans["scale"] == "latent").all()
    lin = t[t["analysis"] == "linear_kss"]
    assert (lin["scale"] == "difference").all()
    # both analyses see the same rows
    assert fit.model.nobs == res.sensitivity_fits["linear_kss"]["E3"].model.nobs
