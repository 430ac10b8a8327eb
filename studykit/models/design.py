"""Fixed-effects design matrices built from validated names, never from evaluated formulas.

A model's fixed part is a list of *terms*: ``"treatment"``, ``"night"``,
``"treatment:night"``, ``"age"``. Each term is a product of variables; a variable is
categorical when explicit levels are given for it (first level = reference, treatment
contrasts) or when its column is a pandas ``Categorical`` (its category order is used), and
numeric otherwise. Column names follow lme4 so results can be compared with R directly:
``(Intercept)``, ``treatmentketamine``, ``treatmentketamine:nightpost1``.

Nothing here evaluates a string as code: a term is split on ``:`` and every piece must be a
column of the data.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from studykit.errors import ModelError

__all__ = ["Design", "build_design", "parse_term"]

INTERCEPT = "(Intercept)"


def parse_term(term: str) -> tuple[str, ...]:
    """Split a term such as ``"treatment:night"`` into its variable names.

    Examples
    --------
    >>> parse_term("treatment:night")
    ('treatment', 'night')
    >>> parse_term("1")
    ()
    """
    term = term.strip()
    if term in ("1", INTERCEPT):
        return ()
    parts = tuple(p.strip() for p in term.split(":"))
    for p in parts:
        if not p.isidentifier():
            raise ModelError(
                f"Invalid model term {term!r}: {p!r} is not a variable name. A term is one "
                "variable name or names joined by ':' (letters, digits and underscores only)."
            )
    if len(set(parts)) != len(parts):
        raise ModelError(f"Invalid model term {term!r}: a variable appears twice.")
    return parts


@dataclass(frozen=True)
class Design:
    """A fixed-effects design: the matrix, its column names and how to rebuild it.

    Attributes
    ----------
    X : numpy.ndarray
        ``n x p`` design matrix (float64).
    columns : list of str
        lme4-style column names, ``(Intercept)`` first when present.
    terms : dict
        Term label (``"treatment:night"``) -> indices of its columns in ``X``.
    levels : dict
        Categorical variable -> its levels, reference first.
    numeric : tuple of str
        Variables used as numeric covariates.
    intercept : bool
        Whether the model has an intercept.
    """

    X: np.ndarray
    columns: list[str]
    terms: dict[str, list[int]]
    levels: dict[str, list[str]]
    numeric: tuple[str, ...]
    intercept: bool = True
    term_vars: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def variables(self) -> list[str]:
        """Every variable the design uses."""
        return list(self.levels) + list(self.numeric)

    def matrix_for(self, data: pd.DataFrame) -> np.ndarray:
        """Build the design matrix for new rows (e.g. an emmeans reference grid).

        Levels are the stored ones; an unknown level is an error, not a silent zero row.
        """
        return _build_matrix(data, list(self.term_vars.items()), self.levels, self.intercept)[0]


def _column_values(data: pd.DataFrame, var: str) -> pd.Series:
    if var not in data.columns:
        raise ModelError(
            f"Model variable {var!r} is not a column of the data. Columns: "
            f"{', '.join(map(str, data.columns[:30]))}."
        )
    return data[var]


def _build_matrix(
    data: pd.DataFrame,
    terms: list[tuple[str, tuple[str, ...]]],
    levels: Mapping[str, Sequence[str]],
    intercept: bool,
) -> tuple[np.ndarray, list[str], dict[str, list[int]]]:
    n = len(data)
    # per variable: list of (suffix name, column vector) for its coded columns
    coded: dict[str, list[tuple[str, np.ndarray]]] = {}
    for _, vars_ in terms:
        for var in vars_:
            if var in coded:
                continue
            col = _column_values(data, var)
            if var in levels:
                lv = [str(x) for x in levels[var]]
                values = col.astype("string").to_numpy(dtype=object, na_value=None)
                unknown = sorted({v for v in values if v is not None and v not in lv})
                if unknown:
                    raise ModelError(
                        f"Variable {var!r} has values {unknown[:5]} that are not among its levels "
                        f"{lv}. Fix the data or declare the levels in the dictionary/protocol."
                    )
                if any(v is None for v in values):
                    raise ModelError(f"Variable {var!r} has missing values in the model rows.")
                coded[var] = [(f"{var}{lev}", (values == lev).astype(float)) for lev in lv[1:]]
            else:
                try:
                    x = pd.to_numeric(col, errors="raise").to_numpy(dtype=float)
                except (TypeError, ValueError) as exc:
                    raise ModelError(
                        f"Variable {var!r} is used as numeric but has non-numeric values; "
                        "declare its levels to use it as a factor."
                    ) from exc
                if np.isnan(x).any():
                    raise ModelError(f"Variable {var!r} has missing values in the model rows.")
                coded[var] = [(var, x)]
    columns: list[str] = []
    blocks: list[np.ndarray] = []
    term_index: dict[str, list[int]] = {}
    if intercept:
        columns.append(INTERCEPT)
        blocks.append(np.ones(n))
    for label, vars_ in terms:
        start = len(columns)
        # R's order: the first variable varies fastest
        for combo in itertools.product(*[coded[v] for v in reversed(vars_)]):
            combo = combo[::-1]
            columns.append(":".join(name for name, _ in combo))
            vec = np.ones(n)
            for _, x in combo:
                vec = vec * x
            blocks.append(vec)
        term_index[label] = list(range(start, len(columns)))
    X = np.column_stack(blocks) if blocks else np.empty((n, 0))
    return X, columns, term_index


def build_design(
    data: pd.DataFrame,
    terms: Sequence[str],
    *,
    levels: Mapping[str, Sequence[str]] | None = None,
    intercept: bool = True,
) -> Design:
    """Build a fixed-effects design matrix with treatment contrasts.

    Parameters
    ----------
    data : pandas.DataFrame
        One row per observation; must contain every variable the terms name, without
        missing values (drop incomplete rows first and report them).
    terms : sequence of str
        Terms in model order, e.g. ``["treatment", "night", "treatment:night"]``.
        Interactions need their main effects (model hierarchy).
    levels : mapping, optional
        Categorical variable -> levels, reference first. Variables not listed here are
        categorical only if their column is a pandas ``Categorical`` (category order used);
        otherwise numeric. Strings without declared levels are refused: reference levels are
        never chosen alphabetically.
    intercept : bool, default True
        Include ``(Intercept)``.

    Returns
    -------
    Design

    Examples
    --------
    >>> df = pd.DataFrame({"arm": ["placebo", "ketamine"] * 2, "night": ["baseline"] * 2 + ["post1"] * 2})
    >>> d = build_design(df, ["arm", "night", "arm:night"],
    ...                  levels={"arm": ["placebo", "ketamine"], "night": ["baseline", "post1"]})
    >>> d.columns
    ['(Intercept)', 'armketamine', 'nightpost1', 'armketamine:nightpost1']
    >>> d.X[:, 3].tolist()
    [0.0, 0.0, 0.0, 1.0]

    Notes
    -----
    Treatment (dummy) coding with the first level as reference, as R's default
    ``contr.treatment``; columns of an interaction are ordered with the first variable varying
    fastest, as in R's ``model.matrix``.
    """
    lv: dict[str, list[str]] = {k: [str(x) for x in v] for k, v in (levels or {}).items()}
    parsed: list[tuple[str, tuple[str, ...]]] = []
    seen: set[tuple[str, ...]] = set()
    for t in terms:
        vars_ = parse_term(t)
        if not vars_:
            continue
        key = tuple(sorted(vars_))
        if key in seen:
            raise ModelError(f"Model term {t!r} is listed twice.")
        seen.add(key)
        parsed.append((":".join(vars_), vars_))
    for label, vars_ in parsed:
        if len(vars_) > 1:
            for v in vars_:
                if (v,) not in seen:
                    raise ModelError(
                        f"Interaction {label!r} needs its main effect {v!r} in the model too."
                    )
    for _, vars_ in parsed:
        for var in vars_:
            if var in lv:
                if len(lv[var]) != len(set(lv[var])) or len(lv[var]) < 2:
                    raise ModelError(
                        f"Levels of {var!r} must be at least two distinct values; got {lv[var]}."
                    )
                continue
            col = _column_values(data, var)
            if isinstance(col.dtype, pd.CategoricalDtype):
                lv[var] = [str(c) for c in col.cat.categories]
            elif col.dtype == bool or pd.api.types.is_bool_dtype(col):
                lv[var] = ["False", "True"]
            elif not pd.api.types.is_numeric_dtype(col):
                raise ModelError(
                    f"Variable {var!r} is categorical but its levels were not declared. "
                    "Give its levels with the reference first (e.g. "
                    f"levels={{'{var}': [...]}}); studykit never picks a reference level "
                    "alphabetically."
                )
    used = {v for _, vs in parsed for v in vs}
    levels_used = {k: v for k, v in lv.items() if k in used}
    X, columns, term_index = _build_matrix(data, parsed, levels_used, intercept)
    numeric = tuple(sorted(v for v in used if v not in levels_used))
    return Design(
        X=X,
        columns=columns,
        terms=term_index,
        levels=levels_used,
        numeric=numeric,
        intercept=intercept,
        term_vars=dict(parsed),
    )
