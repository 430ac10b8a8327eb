"""Estimated marginal means on a reference grid, and contrasts of them (like R's emmeans).

Works on any fitted model exposing ``design`` (a :class:`~studykit.models.design.Design`),
``beta``, ``vcov``, ``contrast_df(L)`` and ``link`` (``"identity"`` or ``"log"``): linear
mixed models (Satterthwaite df) and count GLMMs (``contrast_df`` returns ``inf``: z tests).

The reference grid crosses every level of every factor in the model; numeric covariates
are held at their mean over the model rows (``result.covariate_means``) unless given in
``at``. A marginal mean of ``specs`` averages the grid predictions over the other factors
with equal weights (emmeans' default).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from studykit.errors import ModelError
from studykit.models.inference import contrast_table

__all__ = [
    "reference_grid",
    "emmeans_matrix",
    "emmeans",
    "emm_contrast",
    "did_matrix",
    "did_contrast",
]

logger = logging.getLogger(__name__)


def reference_grid(result: Any, *, at: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The reference grid of a fitted model: every factor level combination.

    Parameters
    ----------
    result : fitted model
        Exposes ``design`` (and ``covariate_means`` for numeric covariates).
    at : mapping, optional
        Values to hold variables at: a factor -> a subset of its levels, a numeric
        covariate -> a value (default: its mean in the model rows).

    Returns
    -------
    pandas.DataFrame
        One row per grid point, factors as strings in level order (first factor fastest, as
        emmeans) and numeric covariates as floats.
    """
    design = result.design
    at = dict(at or {})
    unknown = [k for k in at if k not in design.levels and k not in design.numeric]
    if unknown:
        raise ModelError(
            f"'at' names {unknown} that are not variables of the model "
            f"({list(design.levels) + list(design.numeric)})."
        )
    factor_levels: dict[str, list[str]] = {}
    for var, lv in design.levels.items():
        if var in at:
            sel = [str(x) for x in np.atleast_1d(at[var])]
            bad = [s for s in sel if s not in lv]
            if bad:
                raise ModelError(f"'at' levels {bad} of {var!r} are not among its levels {lv}.")
            factor_levels[var] = sel
        else:
            factor_levels[var] = list(lv)
    means = dict(getattr(result, "covariate_means", {}) or {})
    numeric: dict[str, float] = {}
    for var in design.numeric:
        if var in at:
            numeric[var] = float(at[var])
        elif var in means:
            numeric[var] = float(means[var])
        else:
            raise ModelError(
                f"Numeric covariate {var!r}: give its value with at={{'{var}': value}} "
                "(the result does not record its mean)."
            )
    names = list(factor_levels)
    combos = list(itertools.product(*[factor_levels[v] for v in reversed(names)]))
    grid = pd.DataFrame([c[::-1] for c in combos], columns=names)
    if grid.empty and not names:
        grid = pd.DataFrame(index=[0])
    for var, val in numeric.items():
        grid[var] = val
    return grid.reset_index(drop=True)


def emmeans_matrix(
    result: Any,
    specs: str | Sequence[str],
    *,
    at: Mapping[str, Any] | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Cells of ``specs`` and the matrix ``L`` with ``L @ beta`` = their marginal means.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> from studykit.models.design import build_design
    >>> df = pd.DataFrame({"arm": ["placebo", "ketamine"] * 2, "night": ["b", "b", "p", "p"]})
    >>> d = build_design(df, ["arm", "night"], levels={"arm": ["placebo", "ketamine"],
    ...                                                 "night": ["b", "p"]})
    >>> cells, L = emmeans_matrix(SimpleNamespace(design=d), "arm")
    >>> cells["arm"].tolist(), L.tolist()
    (['placebo', 'ketamine'], [[1.0, 0.0, 0.5], [1.0, 1.0, 0.5]])
    """
    specs = [specs] if isinstance(specs, str) else list(specs)
    design = result.design
    bad = [s for s in specs if s not in design.levels]
    if bad:
        raise ModelError(
            f"emmeans specs {bad} are not factors of the model; factors: {list(design.levels)}."
        )
    grid = reference_grid(result, at=at)
    X = design.matrix_for(grid)
    if not specs:
        return pd.DataFrame(index=[0]), X.mean(axis=0, keepdims=True)
    key = grid[specs].astype(str)
    # cells in emmeans order: first spec varies fastest, levels in level order
    levels_in = [list(dict.fromkeys(grid[s].astype(str))) for s in specs]
    cells = [c[::-1] for c in itertools.product(*reversed(levels_in))]
    rows = []
    for cell in cells:
        mask = np.ones(len(grid), bool)
        for s, v in zip(specs, cell, strict=True):
            mask &= (key[s] == v).to_numpy()
        rows.append(X[mask].mean(axis=0))
    return pd.DataFrame(cells, columns=specs), np.vstack(rows)


def _df_method(result: Any, df_method: str) -> str:
    """``"z"`` for models whose contrasts are Wald z tests (``contrast_df`` is ``inf``: GLMMs)."""
    if df_method == "satterthwaite" and getattr(result, "family", "gaussian") != "gaussian":
        return "z"
    return df_method


def _cell_label(specs: Sequence[str], cell: Sequence[str]) -> str:
    return ", ".join(f"{s}={v}" for s, v in zip(specs, cell, strict=True))


def _finish(table: pd.DataFrame, result: Any, scale: str) -> pd.DataFrame:
    link = getattr(result, "link", "identity")
    if scale not in ("link", "response"):
        raise ModelError(f"Invalid 'type': {scale!r}. Expected 'link' or 'response'.")
    table = table.copy()
    table["scale"] = (
        "identity" if link == "identity" else ("log" if scale == "link" else "response")
    )
    if scale == "response" and link == "log":
        est = np.exp(table["estimate"].to_numpy())
        table["std_error"] = est * table["std_error"].to_numpy()  # delta method
        table["estimate"] = est
        table["conf_low"] = np.exp(table["conf_low"].to_numpy())
        table["conf_high"] = np.exp(table["conf_high"].to_numpy())
    elif scale == "response" and link != "identity":
        raise ModelError(f"Back-transformation for link {link!r} is not available.")
    return table


def emmeans(
    result: Any,
    specs: str | Sequence[str],
    *,
    at: Mapping[str, Any] | None = None,
    df_method: str = "satterthwaite",
    alpha: float = 0.05,
    type: str = "link",
) -> pd.DataFrame:
    """Estimated marginal means of ``specs`` with CIs (R: ``emmeans(fit, ~ specs)``).

    Parameters
    ----------
    result : fitted model
        See the module description.
    specs : str or sequence of str
        Factor(s) whose cells get a marginal mean, e.g. ``["arm", "night"]``.
    at : mapping, optional
        See :func:`reference_grid`.
    df_method : {"satterthwaite", "kenward-roger", "z"}
        For a GLMM the tests are Wald z tests whatever is asked (its ``contrast_df`` is
        infinite) and the output says ``"z"``.
    alpha : float
        1 - confidence level.
    type : {"link", "response"}
        For log-link models, ``"response"`` back-transforms means and limits with ``exp``
        (rates) and the SE with the delta method, as emmeans' ``type = "response"``.

    Returns
    -------
    pandas.DataFrame
        The spec columns, then ``term, estimate, std_error, statistic, df, p_value,
        conf_low, conf_high, df_method, alternative, scale``; tests are against 0 on the link
        scale.

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> df = pd.DataFrame({"id": np.repeat(np.arange(20), 2), "t": ["pre", "post"] * 20})
    >>> df["y"] = rng.normal(size=20)[df["id"]] + (df["t"] == "post") + rng.normal(0, .5, 40)
    >>> from studykit.models.lmm import fit_lmm
    >>> fit = fit_lmm(df, "y", ["t"], random="id", levels={"t": ["pre", "post"]})
    >>> emmeans(fit, "t")[["t", "term"]].to_dict("list")
    {'t': ['pre', 'post'], 'term': ['t=pre', 't=post']}
    """
    specs_l = [specs] if isinstance(specs, str) else list(specs)
    cells, L = emmeans_matrix(result, specs_l, at=at)
    names = [_cell_label(specs_l, c) for c in cells.itertuples(index=False)]
    tab = contrast_table(
        result, L, names=names, df_method=_df_method(result, df_method), alpha=alpha
    )
    out = pd.concat([cells.reset_index(drop=True), tab], axis=1)
    return _finish(out, result, type)


def emm_contrast(
    result: Any,
    specs: str,
    *,
    method: str | Mapping[str, Mapping[str, float]] = "trt.vs.ctrl",
    by: str | None = None,
    at: Mapping[str, Any] | None = None,
    df_method: str = "satterthwaite",
    alpha: float = 0.05,
    alternative: str = "two-sided",
    type: str = "link",
) -> pd.DataFrame:
    """Contrasts among the marginal means of one factor, optionally within each level of ``by``.

    Parameters
    ----------
    specs : str
        The factor whose levels are contrasted.
    method : {"trt.vs.ctrl", "pairwise", "revpairwise"} or mapping
        ``trt.vs.ctrl``: every level minus the reference level (the factor's first level);
        ``pairwise`` / ``revpairwise``: all pairs (earlier minus later / later minus earlier);
        or a mapping ``{name: {level: weight}}``.
    by : str, optional
        A second factor: contrasts are made within each of its levels, labelled
        ``"post1 - baseline | arm = placebo"`` as emmeans prints them.
    type : {"link", "response"}
        ``"response"`` on a log link reports ratios (``"post1 / baseline"``) with their CIs.

    Returns
    -------
    pandas.DataFrame
        ``contrast, by, by_level`` then the tidy columns (``term`` is the full label). No
        multiplicity adjustment: p-values are per contrast.
    """
    design = result.design
    if specs not in design.levels:
        raise ModelError(f"{specs!r} is not a factor of the model ({list(design.levels)}).")
    levels = design.levels[specs] if not at or specs not in at else [str(x) for x in at[specs]]
    ratio = type == "response" and getattr(result, "link", "identity") == "log"
    sep = " / " if ratio else " - "
    if isinstance(method, str):
        pairs: list[tuple[str, dict[str, float]]] = []
        if method == "trt.vs.ctrl":
            pairs = [(f"{lv}{sep}{levels[0]}", {lv: 1.0, levels[0]: -1.0}) for lv in levels[1:]]
        elif method in ("pairwise", "revpairwise"):
            for i, j in itertools.combinations(range(len(levels)), 2):
                a, b = (levels[i], levels[j]) if method == "pairwise" else (levels[j], levels[i])
                pairs.append((f"{a}{sep}{b}", {a: 1.0, b: -1.0}))
        else:
            raise ModelError(
                f"Invalid contrast method {method!r}. Expected 'trt.vs.ctrl', 'pairwise', "
                "'revpairwise' or a mapping {name: {level: weight}}."
            )
    else:
        pairs = [(str(k), {str(a): float(w) for a, w in v.items()}) for k, v in method.items()]
        for name, wts in pairs:
            bad = [a for a in wts if a not in levels]
            if bad:
                raise ModelError(f"Contrast {name!r} uses unknown levels {bad} of {specs!r}.")
    by_levels: list[str | None] = [None]
    if by is not None:
        if by not in design.levels or by == specs:
            raise ModelError(f"'by' must be another factor of the model; got {by!r}.")
        by_levels = list(design.levels[by])
    rows_L, labels, meta = [], [], []
    for bl in by_levels:
        at_b = dict(at or {})
        if by is not None and bl is not None:
            at_b[by] = [bl]
        cells, Lc = emmeans_matrix(result, specs, at=at_b)
        idx = {c: i for i, c in enumerate(cells[specs].astype(str))}
        for name, wts in pairs:
            row = sum(w * Lc[idx[a]] for a, w in wts.items())
            rows_L.append(row)
            labels.append(name if bl is None else f"{name} | {by} = {bl}")
            meta.append((name, by, bl))
    L = np.vstack(rows_L)
    tab = contrast_table(
        result,
        L,
        names=labels,
        df_method=_df_method(result, df_method),
        alpha=alpha,
        alternative=alternative,
    )
    head = pd.DataFrame(meta, columns=["contrast", "by", "by_level"])
    return _finish(pd.concat([head, tab], axis=1), result, type)


def did_matrix(
    result: Any,
    *,
    treatment: str,
    time: str,
    treated: str | None = None,
    control: str | None = None,
    baseline: str | None = None,
    at_times: Sequence[str] | None = None,
) -> tuple[list[str], np.ndarray, list[str]]:
    """Weights ``L`` of the difference-in-differences contrasts on the reference grid.

    One row per time ``t``: ``(mu[treated, t] - mu[treated, baseline]) - (mu[control, t] -
    mu[control, baseline])`` with each ``mu`` the equally weighted marginal mean (see
    :func:`emmeans_matrix`). The parameters are those of :func:`did_contrast`.

    Returns
    -------
    (list of str, numpy.ndarray, list of str)
        Row labels, the ``k x p`` matrix, and the time levels of the rows.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> from studykit.models.design import build_design
    >>> df = pd.DataFrame({"arm": ["p", "k"] * 2, "night": ["b", "b", "x", "x"]})
    >>> d = build_design(df, ["arm", "night", "arm:night"],
    ...                  levels={"arm": ["p", "k"], "night": ["b", "x"]})
    >>> names, L, times = did_matrix(SimpleNamespace(design=d), treatment="arm", time="night")
    >>> names, L.tolist()
    (['k-p change from b at x'], [[0.0, 0.0, 0.0, 1.0]])
    """
    design = result.design
    for var in (treatment, time):
        if var not in design.levels:
            raise ModelError(f"{var!r} is not a factor of the model ({list(design.levels)}).")
    tl = design.levels[treatment]
    control = tl[0] if control is None else str(control)
    if treated is None:
        others = [x for x in tl if x != control]
        if len(others) != 1:
            raise ModelError(
                f"{treatment!r} has levels {tl}: say which is 'treated' and which 'control'."
            )
        treated = others[0]
    for lv in (treated, control):
        if lv not in tl:
            raise ModelError(f"{lv!r} is not a level of {treatment!r} ({tl}).")
    nl = design.levels[time]
    baseline = nl[0] if baseline is None else str(baseline)
    if baseline not in nl:
        raise ModelError(f"Baseline {baseline!r} is not a level of {time!r} ({nl}).")
    times = [x for x in nl if x != baseline] if at_times is None else [str(x) for x in at_times]
    bad = [x for x in times if x not in nl or x == baseline]
    if bad:
        raise ModelError(f"at_times {bad} must be levels of {time!r} other than the baseline.")
    cells, Lc = emmeans_matrix(result, [treatment, time])
    idx = {(a, b): i for i, (a, b) in enumerate(cells.astype(str).itertuples(index=False))}
    rows, names = [], []
    for t in times:
        rows.append(
            Lc[idx[(treated, t)]]
            - Lc[idx[(treated, baseline)]]
            - Lc[idx[(control, t)]]
            + Lc[idx[(control, baseline)]]
        )
        names.append(f"{treated}-{control} change from {baseline} at {t}")
    return names, np.vstack(rows), times


def did_contrast(
    result: Any,
    *,
    treatment: str,
    time: str,
    treated: str | None = None,
    control: str | None = None,
    baseline: str | None = None,
    at_times: Sequence[str] | None = None,
    df_method: str = "satterthwaite",
    alpha: float = 0.05,
    alternative: str = "two-sided",
    type: str = "link",
) -> pd.DataFrame:
    """Difference-in-differences: treated minus control change from baseline, per time.

    ``(mu[treated, t] - mu[treated, baseline]) - (mu[control, t] - mu[control, baseline])``
    on the marginal means (averaged over any other factors), one row per ``t``.

    Parameters
    ----------
    treatment, time : str
        The treatment (arm) and time (night) factors.
    treated, control : str, optional
        Levels of ``treatment``; default: control is the reference (first) level and treated
        the only other level.
    baseline : str, optional
        Level of ``time``; default its reference (first) level.
    at_times : sequence of str, optional
        Time levels to report (default: every level but the baseline).
    alternative : {"two-sided", "greater", "less"}
        E.g. ``"greater"`` for the pre-registered "ketamine increases SWS" hypothesis.
    type : {"link", "response"}
        For a log link, ``"response"`` reports the ratio of rate ratios.

    Returns
    -------
    pandas.DataFrame
        ``contrast, time`` then the tidy columns; ``term`` reads
        ``"ketamine-placebo change from baseline at post1"``.
    """
    names, L, times = did_matrix(
        result,
        treatment=treatment,
        time=time,
        treated=treated,
        control=control,
        baseline=baseline,
        at_times=at_times,
    )
    tab = contrast_table(
        result,
        L,
        names=names,
        df_method=_df_method(result, df_method),
        alpha=alpha,
        alternative=alternative,
    )
    head = pd.DataFrame({"contrast": "difference-in-differences", time: times})
    return _finish(pd.concat([head, tab], axis=1), result, type)
