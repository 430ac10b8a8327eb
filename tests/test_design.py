"""Design matrices: lme4 column names and order, explicit reference levels."""

import numpy as np
import pandas as pd
import pytest

from studykit.errors import ModelError
from studykit.models.design import build_design


def _frame():
    return pd.DataFrame(
        {
            "arm": ["placebo", "ketamine"] * 3,
            "night": ["baseline", "baseline", "post1", "post1", "post2", "post2"],
            "age": [30.0, 41, 52, 33, 29, 60],
        }
    )


def test_columns_match_lme4_order():
    # R: colnames(model.matrix(~ arm * night, d)) with arm levels placebo, ketamine
    d = build_design(
        _frame(),
        ["arm", "night", "arm:night"],
        levels={"arm": ["placebo", "ketamine"], "night": ["baseline", "post1", "post2"]},
    )
    assert d.columns == [
        "(Intercept)",
        "armketamine",
        "nightpost1",
        "nightpost2",
        "armketamine:nightpost1",
        "armketamine:nightpost2",
    ]
    # row 4 is ketamine at post1 (hand count)
    assert d.X[3].tolist() == [1, 1, 1, 0, 1, 0]
    assert d.terms["arm:night"] == [4, 5]


def test_numeric_covariate_and_new_rows():
    d = build_design(_frame(), ["arm", "age"], levels={"arm": ["placebo", "ketamine"]})
    assert d.columns == ["(Intercept)", "armketamine", "age"]
    grid = pd.DataFrame({"arm": ["ketamine"], "age": [40.0]})
    np.testing.assert_array_equal(d.matrix_for(grid), [[1.0, 1.0, 40.0]])


def test_undeclared_string_levels_refused():
    with pytest.raises(ModelError, match="never picks a reference level"):
        build_design(_frame(), ["arm"])


def test_interaction_needs_main_effects():
    with pytest.raises(ModelError, match="needs its main effect"):
        build_design(
            _frame(),
            ["arm", "arm:night"],
            levels={"arm": ["placebo", "ketamine"], "night": ["baseline", "post1", "post2"]},
        )


def test_code_in_term_refused():
    with pytest.raises(ModelError, match="not a variable name"):
        build_design(_frame(), ["__import__('os').system('x')"])


def test_unknown_level_is_error():
    with pytest.raises(ModelError, match="not among its levels"):
        build_design(_frame(), ["arm"], levels={"arm": ["placebo", "esketamine"]})
