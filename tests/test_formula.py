"""lme4 formulas: parsing (R's term expansion), refusal of code, binding to data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from studykit.errors import FormulaError, StudykitError
from studykit.models.formula import model_frame, parse_formula


def labels(text: str) -> list[str]:
    return [r.label for r in parse_formula(text).random]


# Term labels below are R's: attr(terms(f), "term.labels") (R 4.2.2), and lme4's findbars().
@pytest.mark.parametrize(
    ("text", "fixed", "intercept"),
    [
        ("y ~ b:a + a + b", ("a", "b", "b:a"), True),
        ("y ~ a*b*c - a:b:c", ("a", "b", "c", "a:b", "a:c", "b:c"), True),
        ("y ~ (a + b + c)^2", ("a", "b", "c", "a:b", "a:c", "b:c"), True),
        ("y ~ a/b", ("a", "a:b"), True),
        ("y ~ (a + b)/c", ("a", "b", "a:b:c"), True),
        ("y ~ c:a*b", ("b", "c:a", "c:a:b"), True),
        ("y ~ x + a:x", ("x", "x:a"), True),
        ("y ~ a*b - 1", ("a", "b", "a:b"), False),
        ("y ~ 0 + a", ("a",), False),
        ("y ~ -1 + a", ("a",), False),
        ("y ~ 1", (), True),
        ("y ~ a + b - b", ("a",), True),
        ("y ~ `class` + x", ("class", "x"), True),
    ],
)
def test_fixed_terms_follow_r(text, fixed, intercept):
    f = parse_formula(text)
    assert f.fixed == fixed
    assert f.intercept is intercept


def test_random_terms_follow_lme4():
    # lme4::findbars / expandDoubleVerts: (x || g) -> (1 | g) + (0 + x | g); a/b -> a, b:a
    assert labels("y ~ x + (x | g)") == ["(1 + x | g)"]
    assert labels("y ~ x + (x || g)") == ["(1 + x || g)"]
    (bar,) = parse_formula("y ~ x + (x || g)").random
    assert [r.label for r in bar.expand()] == ["(1 | g)", "(0 + x | g)"]
    assert labels("y ~ (0 + x | g)") == ["(0 + x | g)"]
    assert labels("y ~ (1 | a/b)") == ["(1 | a)", "(1 | b:a)"]
    assert labels("y ~ (1 | a/b/c)") == ["(1 | a)", "(1 | b:a)", "(1 | c:b:a)"]
    assert labels("y ~ (1 | a:b)") == ["(1 | a:b)"]
    assert labels("y ~ (1 | id) + (1 | scorer)") == ["(1 | id)", "(1 | scorer)"]
    f = parse_formula("y ~ x + (1 | id) + (1 | scorer)")
    assert f.fixed == ("x",) and f.groups == ("id", "scorer")


def test_response_offset_and_cbind():
    f = parse_formula("ticks ~ year + offset(log(hours)) + (1 | brood)")
    assert f.response.label == "ticks" and f.fixed == ("year",)
    assert [o.label for o in f.offsets] == ["log(hours)"]
    f = parse_formula("cbind(incidence, size - incidence) ~ period + (1 | herd)")
    assert f.response.label == "cbind(incidence, size - incidence)"
    assert f.response.columns == ("incidence", "size")
    f = parse_formula("cbind(s, f) ~ 1 + (1 | g)")
    assert f.response.failures is not None and not f.response.failures_from_total
    assert parse_formula("log(y) ~ x + (1 | g)").response.label == "log(y)"


ATTACKS = [
    "y ~ __import__('os').system('echo pwned')",
    "__import__('os').system('echo pwned') ~ x",
    "y ~ x.__class__.__bases__",
    "y ~ os.system('ls')",
    "y ~ open('/etc/passwd')",
    "y ~ (lambda: 1)()",
    "y ~ lambda",
    "y ~ x[0]",
    "y ~ getattr(x, 'y')",
    "y ~ exec('1')",
    "y ~ eval('1')",
    "y ~ x; import os",
    "y ~ x\nimport os",
    "y ~ I(x**2)",
    "y ~ {x}",
    "y ~ x if x else x",
    'y ~ "x"',
    "y ~ `__class__`",
    "y ~ `os.system('ls')`",
    "y ~ `a b`",
    "y ~ ``",
    "y ~ x\x00",
    "y ~ ｘ",
    "y ~ (1 | g) + (1 | `x; rm -rf`)",
    "y ~ f'{x}'",
    "y ~ x @ z",
    "y ~ log(x).real",
    "y ~ offset(__import__('os'))",
    "cbind(__import__('os'), x) ~ z",
    "y ~ (1 | g.__dict__)",
    "y ~ x + import",
    "y ~ " + "(" * 500 + "x" + ")" * 500,
    "y ~ " + " + ".join(["x"] * 5000),
]


@pytest.mark.parametrize("text", ATTACKS)
def test_code_is_refused_and_never_run(text, monkeypatch):
    import builtins

    def boom(*args, **kwargs):
        raise AssertionError("a formula was evaluated")

    monkeypatch.setattr(builtins, "eval", boom)
    monkeypatch.setattr(builtins, "exec", boom)
    with pytest.raises(FormulaError) as info:
        parse_formula(text)
    assert isinstance(info.value, StudykitError)
    assert str(info.value)  # a message that says what is wrong


def test_refusal_names_position_and_reason():
    with pytest.raises(FormulaError, match=r"position 4: dunder names such as '__import__'"):
        parse_formula("y ~ __import__('os')")
    with pytest.raises(FormulaError, match="calls of 'factor' are not allowed.*levels="):
        parse_formula("y ~ factor(x)")
    with pytest.raises(FormulaError, match="attribute access"):
        parse_formula("y ~ x.y")
    with pytest.raises(FormulaError, match="Python keyword"):
        parse_formula("y ~ lambda")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("~ x", "response before"),
        ("y ~", "expected a variable"),
        ("y ~ x +", "expected a variable"),
        ("y ~ (x", r"expected '\)'"),
        ("y ~ x )", "unexpected"),
        ("y ~ 2", "not a term"),
        ("y ~ a:(1 | g)", "cannot be inside"),
        ("y ~ (1 | a + b)", "one grouping factor per bar"),
        ("y ~ (0 | g)", "needs an intercept or a slope"),
        ("y ~ exp(x)", "only allowed inside offset"),
        ("y ~ x^a", "positive whole number"),
        ("y ~ x ~ z", "unexpected"),
        ("y ~ 2x", "cannot start with a digit"),
    ],
)
def test_syntax_errors_are_clear(text, match):
    with pytest.raises(FormulaError, match=match):
        parse_formula(text)


def test_model_frame_levels_as_r():
    df = pd.DataFrame(
        {
            "y": [1.0, 2.0, 3.0, 4.0, np.nan, 6.0],
            "arm": ["placebo", "ketamine"] * 3,  # text: sorted levels, as factor()
            "visit": pd.Categorical(
                ["v2", "v1", "v2", "v1", "v2", "v1"], categories=["v2", "v1", "v0"]
            ),
            "flag": [True, False, True, False, True, False],
            "dose": [0, 1, 2, 0, 1, 2],  # numeric: a covariate
            "id": ["a", "a", "b", "b", "c", "c"],
        }
    )
    mf = model_frame("y ~ arm + visit + flag + dose + (1 | id)", df)
    # Categorical order kept, unused category dropped (lmer's drop.unused.levels)
    assert mf.levels == {
        "arm": ["ketamine", "placebo"],
        "visit": ["v2", "v1"],
        "flag": ["False", "True"],
    }
    assert mf.n_excluded == 1 and len(mf.data) == 5 and mf.excluded_columns == ["y"]
    mf = model_frame(
        "y ~ arm + dose + (1 | id)", df, levels={"arm": ["placebo", "ketamine"], "dose": [0, 1, 2]}
    )
    assert mf.levels == {"arm": ["placebo", "ketamine"], "dose": ["0", "1", "2"]}
    assert df["y"].isna().sum() == 1  # input not modified


def test_model_frame_errors():
    df = pd.DataFrame({"y": [1.0, 2.0], "x": ["a", "b"], "g": [1, 2]})
    with pytest.raises(FormulaError, match=r"names \['z'\], which are not columns"):
        model_frame("y ~ z + (1 | g)", df)
    with pytest.raises(FormulaError, match="levels= names"):
        model_frame("y ~ x + (1 | g)", df, levels={"w": ["a"]})
    with pytest.raises(FormulaError, match="needs numbers"):
        model_frame("y ~ 1 + offset(log(x)) + (1 | g)", df)
    with pytest.raises(FormulaError, match="not finite"):
        model_frame("y ~ 1 + offset(log(g)) + (1 | g)", df.assign(g=[0, 1]))
    with pytest.raises(FormulaError, match="whole non-negative"):
        model_frame("cbind(y, g - y) ~ 1 + (1 | g)", df.assign(y=[3.0, 1.0]))
