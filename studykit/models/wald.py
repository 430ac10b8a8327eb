"""Wald z tests of linear contrasts, for models whose tests use the normal distribution.

GLMMs (as glmer / glmmTMB), Poisson GEE and cumulative link mixed models (as ordinal::clmm)
report Wald z tests: contrast df are infinite. :class:`WaldZTests` gives their results
``contrast`` and ``coef_table`` with contrasts given as weights or by coefficient name; the
tests and intervals themselves are :func:`studykit.models.inference.contrast_table`'s (the one
place p-values and intervals are computed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from studykit.errors import ModelError
from studykit.models.inference import contrast_table

__all__ = ["WaldZTests", "as_contrast_matrix"]


def as_contrast_matrix(
    L: object, columns: list[str], names: Sequence[str] | None
) -> tuple[np.ndarray, list[str]]:
    """Turn ``L`` (vector, matrix, Series or DataFrame over the coefficient names) into rows."""
    p = len(columns)
    default_names: list[str] | None = None
    if isinstance(L, pd.Series):
        unknown = sorted(set(map(str, L.index)) - set(columns))
        if unknown:
            raise ModelError(
                f"Contrast names coefficients {unknown[:5]} that are not in the model; "
                f"coefficients are {columns}."
            )
        mat = L.reindex(columns, fill_value=0.0).to_numpy(dtype=float)[None, :]
        default_names = [str(L.name)] if L.name is not None else None
    elif isinstance(L, pd.DataFrame):
        unknown = sorted(set(map(str, L.columns)) - set(columns))
        if unknown:
            raise ModelError(
                f"Contrast columns {unknown[:5]} are not model coefficients; "
                f"coefficients are {columns}."
            )
        mat = L.reindex(columns=columns, fill_value=0.0).to_numpy(dtype=float)
        default_names = [str(i) for i in L.index]
    else:
        try:
            mat = np.asarray(L, dtype=float)
        except (TypeError, ValueError) as exc:
            raise ModelError(
                "A contrast must be numbers: a vector of length p, a k x p matrix, or a pandas "
                f"Series/DataFrame indexed by coefficient names ({columns})."
            ) from exc
        if mat.ndim == 1:
            mat = mat[None, :]
        if mat.ndim != 2 or mat.shape[1] != p:
            raise ModelError(
                f"A contrast needs {p} weights per row (one per coefficient {columns}); "
                f"got shape {mat.shape}."
            )
    if not np.all(np.isfinite(mat)):
        raise ModelError("Contrast weights must be finite numbers.")
    if names is None:
        names = default_names or [f"c{i + 1}" for i in range(mat.shape[0])]
    names = [str(n) for n in names]
    if len(names) != mat.shape[0]:
        raise ModelError(f"Got {len(names)} contrast names for {mat.shape[0]} contrasts.")
    return mat, names


class WaldZTests:
    """Wald z inference for results with ``beta``, ``vcov`` and ``columns`` (GLMM, GEE, CLMM).

    These models test with the normal reference distribution (as glmer, glmmTMB, geeglm,
    ordinal::clmm and emmeans do): contrast df are infinite. Count models test on the log
    scale; ``exponentiate=True`` reports ratios.

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Fit(WaldZTests):
    ...     beta: np.ndarray
    ...     vcov: np.ndarray
    ...     columns: list[str]
    >>> fit = Fit(np.array([0.5, -0.2]), np.diag([0.04, 0.01]), ["(Intercept)", "armketamine"])
    >>> t = fit.contrast(pd.Series({"armketamine": 1.0}, name="rr"), exponentiate=True)
    >>> t[["term", "estimate", "statistic"]].round(4).to_dict("records")
    [{'term': 'rr', 'estimate': 0.8187, 'statistic': -2.0}]
    """

    beta: np.ndarray
    vcov: np.ndarray
    columns: list[str]

    def contrast_df(self, L: object) -> float:
        """Degrees of freedom of a contrast: always ``inf`` (Wald z tests, as glmer/emmeans)."""
        return math.inf

    def contrast(
        self,
        L: object,
        *,
        names: Sequence[str] | None = None,
        alternative: str = "two-sided",
        alpha: float = 0.05,
        exponentiate: bool = False,
    ) -> pd.DataFrame:
        """Wald z tests and confidence intervals for linear contrasts ``L @ beta``.

        Parameters
        ----------
        L : array-like, pandas.Series or pandas.DataFrame
            One contrast (length ``p``) or ``k x p`` weights; a Series/DataFrame is matched to
            the coefficients by name (missing names weigh 0, the index names the rows).
        names : sequence of str, optional
            Row labels (``term`` column).
        alternative : {"two-sided", "greater", "less"}
            Direction of the test on the log scale (H1: contrast > 0 for ``"greater"``).
        alpha : float
            1 - confidence level; one-sided alternatives give one-sided intervals.
        exponentiate : bool
            Report ``exp(estimate)`` (a rate ratio) and its interval; ``std_error`` becomes the
            delta-method SE ``exp(estimate) * se`` (as emmeans' ``type = "response"``). The
            statistic and p-value stay those of the log-scale test.

        Returns
        -------
        pandas.DataFrame
            Columns ``term, estimate, std_error, statistic, df, p_value, conf_low, conf_high,
            df_method, alternative`` (``df`` is ``inf``, ``df_method`` is ``"z"``).
        """
        mat, labels = as_contrast_matrix(L, list(self.columns), names)
        table = contrast_table(
            self, mat, names=labels, df_method="z", alpha=alpha, alternative=alternative
        )
        if exponentiate:
            ratio = np.exp(table["estimate"].to_numpy())
            table["std_error"] = ratio * table["std_error"]
            table["estimate"] = ratio
            table["conf_low"] = np.exp(table["conf_low"])
            table["conf_high"] = np.exp(table["conf_high"])
        return table

    def coef_table(
        self,
        alpha: float = 0.05,
        alternative: str = "two-sided",
        exponentiate: bool = False,
    ) -> pd.DataFrame:
        """Fixed effects with Wald z tests (as ``summary(glmer_fit)``) and Wald CIs.

        ``exponentiate=True`` gives rate ratios (see :meth:`contrast`).
        """
        return self.contrast(
            np.eye(len(self.columns)),
            names=self.columns,
            alternative=alternative,
            alpha=alpha,
            exponentiate=exponentiate,
        )
