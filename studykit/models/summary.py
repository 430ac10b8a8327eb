"""Readable model results: lmerTest-style summaries as text and HTML, one-line reprs.

:class:`ModelSummary` holds the numbers of a fitted model's summary as data (fit criteria,
scaled residuals, the random-effects table, fixed effects with tests, thresholds of an ordinal
model, the correlation of fixed effects) and renders them as text laid out like R's
``summary(lmerTest::lmer(...))`` / ``summary(glmer(...))`` / ``summary(ordinal::clmm(...))``,
or as HTML for Jupyter. :class:`ResultDisplay` gives every result class the same thin methods:
``summary()``, ``anova()``, ``emmeans()``, a one-line ``repr`` and ``_repr_html_``.

Numbers are computed elsewhere (the engines and :mod:`studykit.models.inference`); this module
only formats them.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from studykit.errors import ModelError
from studykit.models.emmeans import emmeans
from studykit.models.inference import anova_table

__all__ = ["ModelSummary", "ResultDisplay", "summarize", "random_effects_table", "abbreviate"]

_SIGNIF = "Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1"
_MAX_CORR = 12  # lme4 shows the correlation of fixed effects for p <= 12
DDF_NAMES = {
    "satterthwaite": "satterthwaite",
    "kenward-roger": "kenward-roger",
    "kenwardroger": "kenward-roger",
    "kr": "kenward-roger",
    "z": "z",
    "asymptotic": "z",
}


# ------------------------------------------------------------------------------------------
# number formatting (R-like)
# ------------------------------------------------------------------------------------------
def _decimals(values: Sequence[float], digits: int) -> int:
    """Decimals that show every finite value with ``digits`` significant digits (max 10)."""
    need = 0
    for v in values:
        if v is None or not np.isfinite(v) or v == 0:
            continue
        need = max(need, digits - 1 - math.floor(math.log10(abs(float(v)))))
    return int(min(max(need, 0), 10))


def _fmt_col(values: Sequence[float], digits: int = 4, decimals: int | None = None) -> list[str]:
    d = _decimals(values, digits) if decimals is None else decimals
    out = []
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append("")
        elif not np.isfinite(v):
            out.append("Inf" if v > 0 else "-Inf")
        else:
            out.append(f"{float(v):.{d}f}")
    return out


def format_pvalue(p: float) -> str:
    """R's ``format.pval`` at 3 significant digits: ``< 2e-16`` below machine precision.

    Examples
    --------
    >>> format_pvalue(3.26e-06), format_pvalue(0.0123456), format_pvalue(1e-20)
    ('3.26e-06', '0.0123', '< 2e-16')
    """
    if p is None or not np.isfinite(p):
        return "NA"
    if p < 2.2e-16:
        return "< 2e-16"
    if p < 1e-4:
        return f"{p:.2e}"
    return f"{p:.3g}"


def _stars(p: float) -> str:
    if p is None or not np.isfinite(p):
        return ""
    for cut, mark in ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, ".")):
        if p < cut:
            return mark
    return ""


def abbreviate(name: str, minlength: int = 6) -> str:
    """R's ``abbreviate()`` (default method) for column headers of a correlation matrix.

    Lower-case vowels are dropped from the right (never the first character), then lower-case
    letters, then the name is truncated.

    Examples
    --------
    >>> abbreviate("(Intercept)"), abbreviate("period2"), abbreviate("Days")
    ('(Intr)', 'perid2', 'Days')
    """
    chars = list(name)
    for pool in ("aeiou", "abcdefghijklmnopqrstuvwxyz"):
        i = len(chars) - 1
        while len(chars) > minlength and i > 0:
            if chars[i] in pool:
                del chars[i]
            i -= 1
    return "".join(chars[:minlength]) if len(chars) > minlength else "".join(chars)


def _rjust_all(cells: list[str]) -> list[str]:
    """Numbers of one column right-aligned to a common width (as R formats a column)."""
    width = max((len(c) for c in cells), default=0)
    return [c.rjust(width) if c else c for c in cells]


def _table_text(
    header: list[str], rows: list[list[str]], *, left: Sequence[int] = (0,), uniform: bool = False
) -> str:
    """Columns padded to a common width; ``left`` columns left-aligned, others right.

    ``uniform`` gives every column the same width (R's printing of a named vector).
    """
    widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]
    if uniform:
        widths = [max(widths)] * len(widths)
    lines = []
    for r in [header, *rows]:
        cells = [c.ljust(widths[j]) if j in left else c.rjust(widths[j]) for j, c in enumerate(r)]
        lines.append(" ".join(cells).rstrip())
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# the random-effects table
# ------------------------------------------------------------------------------------------
def random_effects_table(varcorr: pd.DataFrame) -> pd.DataFrame:
    """lme4's printed random-effects table from ``varcorr()`` rows.

    Parameters
    ----------
    varcorr : pandas.DataFrame
        Columns ``group, var1, var2, vcov, sdcor`` (variances with ``var2`` missing, then
        covariances with their correlations, term by term; the residual last), as
        ``as.data.frame(VarCorr(fit))``.

    Returns
    -------
    pandas.DataFrame
        ``group`` (blank on continuation rows; ``g.1`` for a second term of the same group,
        as lme4), ``name``, ``variance``, ``std_dev`` and ``corr_1 ...`` (correlation with the
        first, second ... effect of the same term).

    Examples
    --------
    >>> vc = pd.DataFrame({"group": ["id", "id", "id", "Residual"],
    ...                    "var1": ["(Intercept)", "day", "(Intercept)", None],
    ...                    "var2": [None, None, "day", None],
    ...                    "vcov": [4.0, 1.0, 0.4, 2.0], "sdcor": [2.0, 1.0, 0.2, 1.4142]})
    >>> random_effects_table(vc)[["group", "name", "corr_1"]].values.tolist()
    [['id', '(Intercept)', nan], ['', 'day', 0.2], ['Residual', '', nan]]
    """
    blocks: list[dict[str, Any]] = []
    for row in varcorr.itertuples(index=False):
        group, var1, var2 = row.group, row.var1, row.var2
        is_var = var2 is None or (isinstance(var2, float) and math.isnan(var2))
        cur = blocks[-1] if blocks else None
        if is_var:
            if cur is None or cur["group"] != group or cur["cov"]:
                blocks.append({"group": group, "names": [], "var": [], "sd": [], "cov": {}})
                cur = blocks[-1]
            cur["names"].append(var1 if isinstance(var1, str) else "")
            cur["var"].append(float(row.vcov))
            cur["sd"].append(float(row.sdcor))
        elif cur is not None:
            cur["cov"][(var1, var2)] = float(row.sdcor)
    # a block of several variances without covariances is several uncorrelated terms
    split: list[dict[str, Any]] = []
    for b in blocks:
        if len(b["names"]) > 1 and not b["cov"]:
            for i in range(len(b["names"])):
                split.append(
                    {"group": b["group"], "names": [b["names"][i]], "var": [b["var"][i]],
                     "sd": [b["sd"][i]], "cov": {}}
                )  # fmt: skip
        else:
            split.append(b)
    ncorr = max([len(b["names"]) - 1 for b in split] + [0])
    rows = []
    seen: dict[str, int] = {}
    for b in split:
        k = seen.get(b["group"], 0)
        seen[b["group"]] = k + 1
        label = b["group"] if k == 0 else f"{b['group']}.{k}"
        for i, name in enumerate(b["names"]):
            corr: list[float | None] = [None] * ncorr
            for j in range(i):
                key = (b["names"][j], name)
                corr[j] = b["cov"].get(key, b["cov"].get((name, b["names"][j])))
            rows.append([label if i == 0 else "", name, b["var"][i], b["sd"][i], *corr])
    return pd.DataFrame(
        rows,
        columns=["group", "name", "variance", "std_dev"] + [f"corr_{j + 1}" for j in range(ncorr)],
    )


# ------------------------------------------------------------------------------------------
# the summary object
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSummary:
    """Numbers of a model summary, printable as text (lmerTest's layout) or HTML.

    Attributes
    ----------
    title : str
        First line, e.g. ``Linear mixed model fit by REML. t-tests use Satterthwaite's method``.
    formula : str or None
    criteria : dict
        Fit criteria in print order (``REML criterion at convergence``, or ``AIC, BIC, logLik,
        deviance, df.resid``).
    residuals : numpy.ndarray or None
        Min, 1Q, median, 3Q, max of the scaled residuals.
    random : pandas.DataFrame
        See :func:`random_effects_table`.
    nobs : int
    ngroups : dict
        Grouping factor -> number of levels.
    fixed : pandas.DataFrame
        Tidy coefficient table (``term, estimate, std_error, df, statistic, p_value``).
    statistic : str
        ``"t"`` or ``"z"``.
    thresholds : pandas.DataFrame or None
        Threshold coefficients of an ordinal model.
    corr : pandas.DataFrame or None
        Correlation of the fixed effects.
    notes : list of str
        Warnings and fit messages.
    """

    title: str
    formula: str | None
    criteria: dict[str, float]
    residuals: np.ndarray | None
    random: pd.DataFrame
    nobs: int
    ngroups: dict[str, int]
    fixed: pd.DataFrame
    statistic: str = "t"
    family: str | None = None
    thresholds: pd.DataFrame | None = None
    corr: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)

    # ---------------------------------------------------------------- text
    def _criteria_text(self) -> list[str]:
        if list(self.criteria) == ["REML criterion at convergence"]:
            v = self.criteria["REML criterion at convergence"]
            return [f"REML criterion at convergence: {v:.1f}"]
        names = list(self.criteria)
        vals = [
            f"{v:.0f}" if k in ("df.resid", "nobs") else f"{v:.1f}"
            for k, v in self.criteria.items()
        ]
        width = [max(len(n), len(v), 8) for n, v in zip(names, vals, strict=True)]
        return [
            " ".join(n.rjust(w) for n, w in zip(names, width, strict=True)),
            " ".join(v.rjust(w) for v, w in zip(vals, width, strict=True)),
        ]

    def _random_cells(self) -> tuple[list[str], list[list[str]], int]:
        """Header, rows (group, name, variance, SD, one cell per correlation), number of
        correlation columns: the random-effects table for text and HTML alike."""
        r = self.random
        ncorr = sum(c.startswith("corr_") for c in r.columns)
        var, sd = _fmt_col(list(r["variance"]), 4), _fmt_col(list(r["std_dev"]), 4)
        rows = [
            [str(row.group), str(row.name), var[i], sd[i]]
            + [_corr_cell(getattr(row, f"corr_{j + 1}")) for j in range(ncorr)]
            for i, row in enumerate(r.itertuples(index=False))
        ]
        return ["Groups", "Name", "Variance", "Std.Dev."], rows, ncorr

    def _random_text(self) -> str:
        header, rows, ncorr = self._random_cells()
        # variance, SD and each correlation right-aligned; the correlations share one column
        cols = [_rjust_all([row[k] for row in rows]) for k in range(2, 4 + ncorr)]
        lines = [
            row[:2]
            + [cols[0][i], cols[1][i]]
            + ([" ".join(c[i] for c in cols[2:]).rstrip()] if ncorr else [])
            for i, row in enumerate(rows)
        ]
        return _table_text(header + (["Corr"] if ncorr else []), lines, left=(0, 1, 2, 3, 4))

    def _coef_cells(self, table: pd.DataFrame, *, tests: bool) -> tuple[list[str], list[list[str]]]:
        est = table["estimate"].to_numpy(float)
        se = table["std_error"].to_numpy(float)
        dec = max(_decimals(list(est), 4), _decimals(list(se), 4))
        header = ["", "Estimate", "Std. Error"]
        cols = [_fmt_col(list(est), decimals=dec), _fmt_col(list(se), decimals=dec)]
        if tests and self.statistic == "t":
            header.append("df")
            cols.append(_fmt_col(list(table["df"].to_numpy(float)), decimals=3))
        header.append(f"{self.statistic} value")
        cols.append(_fmt_col(list(table["statistic"].to_numpy(float)), decimals=3))
        if tests:
            header += [f"Pr(>|{self.statistic}|)", ""]
            pv = table["p_value"].to_numpy(float)
            cols += [[format_pvalue(p) for p in pv], [_stars(p) for p in pv]]
        rows = [[str(t)] + [c[i] for c in cols] for i, t in enumerate(table["term"])]
        return header, rows

    def _coef_text(self, table: pd.DataFrame, *, tests: bool) -> str:
        header, rows = self._coef_cells(table, tests=tests)
        return _table_text(header, rows, left=(0, len(header) - 1) if tests else (0,))

    def as_text(self) -> str:
        """The summary laid out as R prints it."""
        out = [self.title]
        if self.family:
            out.append(f" Family: {self.family}")
        if self.formula:
            out.append(f"Formula: {self.formula}")
        out.append("")
        out += self._criteria_text()
        out.append("")
        if self.residuals is not None:
            out.append("Scaled residuals:")
            q = _fmt_col(list(self.residuals), decimals=4)
            out.append(
                _table_text(["Min", "1Q", "Median", "3Q", "Max"], [q], left=(), uniform=True)
            )
            out.append("")
        out.append("Random effects:")
        out.append(_indent(self._random_text()))
        groups = "; ".join(f"{g}, {n}" for g, n in self.ngroups.items())
        out.append(f"Number of obs: {self.nobs}, groups:  {groups}")
        out.append("")
        if len(self.fixed):
            out.append("Fixed effects:" if self.thresholds is None else "Coefficients:")
            out.append(self._coef_text(self.fixed, tests=True))
            out.append("---")
            out.append(_SIGNIF)
        if self.thresholds is not None:
            out.append("")
            out.append("Threshold coefficients:")
            out.append(self._coef_text(self.thresholds, tests=False))
        if self.corr is not None:
            out.append("")
            out.append("Correlation of Fixed Effects:")
            out.append(_corr_text(self.corr))
        for note in self.notes:
            out.append(note)
        return "\n".join(out)

    def __str__(self) -> str:
        return self.as_text()

    def __repr__(self) -> str:
        return self.as_text()

    # ---------------------------------------------------------------- html
    def as_html(self) -> str:
        """The summary as an HTML fragment (Jupyter shows it for ``fit.summary()``)."""
        e = html.escape
        parts = [f"<div class='studykit-summary'><p><b>{e(self.title)}</b><br>"]
        if self.family:
            parts.append(f"Family: {e(self.family)}<br>")
        if self.formula:
            parts.append(f"Formula: <code>{e(self.formula)}</code>")
        parts.append("</p>")
        parts.append(_html_table(list(self.criteria), [[_num(v) for v in self.criteria.values()]]))
        if self.residuals is not None:
            parts.append("<p>Scaled residuals:</p>")
            parts.append(
                _html_table(
                    ["Min", "1Q", "Median", "3Q", "Max"],
                    [_fmt_col(list(self.residuals), decimals=4)],
                )
            )
        parts.append("<p>Random effects:</p>")
        header, rows, ncorr = self._random_cells()
        parts.append(_html_table(header + ["Corr"] * ncorr, rows))
        groups = "; ".join(f"{e(str(g))}, {n}" for g, n in self.ngroups.items())
        parts.append(f"<p>Number of obs: {self.nobs}, groups: {groups}</p>")
        if len(self.fixed):
            parts.append(
                "<p>Fixed effects:</p>" if self.thresholds is None else "<p>Coefficients:</p>"
            )
            parts.append(self._coef_html(self.fixed, tests=True))
        if self.thresholds is not None:
            parts.append("<p>Threshold coefficients:</p>")
            parts.append(self._coef_html(self.thresholds, tests=False))
        if self.notes:
            parts.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in self.notes) + "</ul>")
        parts.append("</div>")
        return "\n".join(parts)

    def _coef_html(self, table: pd.DataFrame, *, tests: bool) -> str:
        return _html_table(*self._coef_cells(table, tests=tests))

    def _repr_html_(self) -> str:
        return self.as_html()


def _corr_cell(c: Any) -> str:
    return "" if c is None or (isinstance(c, float) and math.isnan(c)) else f"{c:.2f}"


def _corr_text(corr: pd.DataFrame) -> str:
    names = list(corr.index)
    C = corr.to_numpy(float)
    header = [""] + [abbreviate(n) for n in names[:-1]]
    rows = [
        [names[i]] + [f"{C[i, j]:.3f}" if j < i else "" for j in range(len(names) - 1)]
        for i in range(1, len(names))
    ]
    return _table_text(header, rows)


def _num(v: float) -> str:
    return f"{v:.0f}" if float(v).is_integer() and abs(v) < 1e9 else f"{v:.1f}"


def _indent(text: str) -> str:
    return "\n".join(" " + line for line in text.splitlines())


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ------------------------------------------------------------------------------------------
# building summaries from results
# ------------------------------------------------------------------------------------------
def _corr(fit: Any) -> pd.DataFrame | None:
    V = np.asarray(fit.vcov, float)
    p = V.shape[0]
    if p < 2 or p > _MAX_CORR:
        return None
    sd = np.sqrt(np.diag(V))
    with np.errstate(divide="ignore", invalid="ignore"):
        C = V / np.outer(sd, sd)
    return pd.DataFrame(C, index=fit.columns, columns=fit.columns)


def _likelihood_criteria(fit: Any, k: int) -> dict[str, float]:
    """AIC, BIC, log-likelihood, deviance and residual df (``k`` estimated parameters)."""
    return {
        "AIC": fit.aic,
        "BIC": fit.bic,
        "logLik": fit.loglik,
        "deviance": -2.0 * fit.loglik,
        "df.resid": fit.nobs - k,
    }


def summarize(fit: Any) -> ModelSummary:
    """Build the :class:`ModelSummary` of a fitted LMM, GLMM or CLMM result."""
    family = getattr(fit, "family", "gaussian")
    ngroups = fit.ngroups if isinstance(fit.ngroups, dict) else {fit.group: fit.ngroups}
    common: dict[str, Any] = {
        "formula": getattr(fit, "formula", None),
        "random": random_effects_table(fit.varcorr()),
        "nobs": fit.nobs,
        "ngroups": ngroups,
        "fixed": fit.coef_table(),
        "notes": list(fit.warnings),
    }
    if family == "gaussian":
        title = (
            f"Linear mixed model fit by {'REML' if fit.reml else 'maximum likelihood'}. "
            "t-tests use Satterthwaite's method"
        )
        criteria = (
            {"REML criterion at convergence": -2.0 * fit.loglik}
            if fit.reml
            else _likelihood_criteria(fit, len(fit.beta) + len(fit.theta) + 1)
        )
        resid = np.quantile(fit.residuals(scaled=True), [0, 0.25, 0.5, 0.75, 1.0])
        return ModelSummary(
            title=title,
            criteria=criteria,
            residuals=resid,
            statistic="t",
            corr=_corr(fit),
            **common,
        )
    criteria = _likelihood_criteria(fit, int(getattr(fit, "df_loglik", len(fit.beta) + 1)))
    if family == "ordinal":
        return ModelSummary(
            title=f"Cumulative link mixed model fitted with the {fit.method} approximation",
            criteria=criteria,
            residuals=None,
            statistic="z",
            family=f"cumulative {fit.link}, flexible thresholds",
            thresholds=fit.threshold_table(),
            **common,
        )
    method = getattr(fit, "method", "Laplace")
    fam = family + (f"({fit.theta:.4g})" if getattr(fit, "theta", None) is not None else "")
    return ModelSummary(
        title=f"Generalized linear mixed model fit by maximum likelihood ({method})",
        criteria=criteria,
        residuals=None,
        statistic="z",
        family=f"{fam}  ( {fit.link} )",
        corr=_corr(fit),
        **common,
    )


def _ddf(ddf: str | None, default: str) -> str:
    if ddf is None:
        return default
    key = str(ddf).strip().lower().replace("_", "-").replace(" ", "-")
    if key not in DDF_NAMES:
        raise ModelError(
            f"Invalid ddf {ddf!r}. Expected 'Satterthwaite', 'Kenward-Roger' (linear mixed "
            "models) or 'z' (asymptotic)."
        )
    return DDF_NAMES[key]


class ResultDisplay:
    """Thin methods shared by the model results (LMM, GLMM, CLMM).

    The result class provides the numbers (``beta``, ``vcov``, ``columns``, ``design``,
    ``varcorr()``, ``coef_table()``...); this mixin adds ``summary()``, ``anova()``,
    ``emmeans()``, a one-line ``repr`` and the HTML repr used by Jupyter.
    """

    def summary(self) -> ModelSummary:
        """The lmerTest-style summary: print it, or let Jupyter render it as HTML."""
        return summarize(self)

    def _default_ddf(self) -> str:
        return "satterthwaite" if getattr(self, "family", "gaussian") == "gaussian" else "z"

    def anova(self, *, type: int = 3, ddf: str | None = None) -> pd.DataFrame:
        """Type III tests of every fixed term (lmerTest's ``anova(fit, type = 3, ddf = ...)``).

        Parameters
        ----------
        type : int
            3 (the only type available).
        ddf : {"Satterthwaite", "Kenward-Roger", "z"}, optional
            Denominator df (case-insensitive). Default: Satterthwaite for linear mixed models,
            ``"z"`` (Wald chi-square / q, infinite denominator df) for GLMMs and CLMMs.

        Returns
        -------
        pandas.DataFrame
            ``term, sum_sq, mean_sq, num_df, den_df, statistic, p_value, df_method``.
        """
        return anova_table(self, type=type, df_method=_ddf(ddf, self._default_ddf()))

    def emmeans(
        self,
        specs: str | Sequence[str],
        *,
        at: Mapping[str, Any] | None = None,
        df_method: str | None = None,
        alpha: float = 0.05,
        type: str = "link",
    ) -> pd.DataFrame:
        """Estimated marginal means of ``specs`` (R: ``emmeans(fit, ~ specs)``).

        See :func:`studykit.models.emmeans.emmeans` for the parameters; ``df_method`` defaults
        to Satterthwaite for linear mixed models and ``"z"`` otherwise.
        """
        return emmeans(
            self,
            specs,
            at=at,
            df_method=df_method or self._default_ddf(),
            alpha=alpha,
            type=type,
        )

    def _repr_line(self) -> str:
        kind = type(self).__name__
        formula = getattr(self, "formula", None)
        if formula is None:
            formula = f"{getattr(self, 'outcome', 'y')} ~ {' + '.join(self.columns[1:]) or '1'}"  # type: ignore[attr-defined]
        fam = getattr(self, "family", "gaussian")
        ll = getattr(self, "loglik", float("nan"))
        flags = []
        if not getattr(self, "converged", True):
            flags.append("NOT converged")
        if getattr(self, "singular", False):
            flags.append("singular")
        nobs = getattr(self, "nobs", "?")
        return (
            f"<{kind} {formula!r}, {fam}, nobs={nobs}, logLik={ll:.4f}"
            + (", " + ", ".join(flags) if flags else "")
            + ">"
        )

    def __repr__(self) -> str:
        return self._repr_line()

    def _repr_html_(self) -> str:
        return self.summary().as_html()
