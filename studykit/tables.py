"""Result tables: tidy numbers in, CSV / Markdown / HTML / LaTeX out.

Numbers are computed by the analysis (or by the small summaries below) and stay numbers in
the machine-readable CSV; they become strings only in the display versions (Markdown, HTML,
LaTeX), following tableone's split between statistics and formatting and marginaleffects'
habit of stable machine column names with display labels only when printing.

Every export goes through :func:`write_table`, the single place that

* drops identifier (PHI) columns flagged in the data dictionary (column ``identifier`` of
  ``data_dictionary.csv``, :meth:`DataDictionary.identifier_columns`), and refuses summary
  tables whose ``variable`` column names one of them (their levels are the PHI values);
* writes floats with a fixed format (``%.10g``, empty cell for missing) and ``\\n`` line
  ends, so two runs on the same data give byte-identical CSV files.

The table builders return rows in a fixed, meaningful order (reference levels first,
nights in protocol order), never in the order rows happened to arrive.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from studykit.analysis import HYPOTHESIS_COLUMNS as _ANALYSIS_COLUMNS
from studykit.errors import InputError

__all__ = [
    "HYPOTHESIS_COLUMNS",
    "FLOAT_FORMAT",
    "TABLE_FORMATS",
    "identifier_columns",
    "write_table",
    "to_csv_text",
    "format_display",
    "hypothesis_table",
    "format_hypothesis_table",
    "baseline_characteristics",
    "format_baseline_table",
    "descriptive_outcomes",
    "format_descriptive_table",
    "validation_summary",
    "redact_identifier_values",
    "participant_flow",
]

logger = logging.getLogger(__name__)

#: Columns of ``hypotheses.csv``, in order: defined once, by the analysis that fills them.
HYPOTHESIS_COLUMNS: tuple[str, ...] = tuple(_ANALYSIS_COLUMNS)

#: printf-style format of floats in CSV exports: 10 significant digits, stable across runs.
FLOAT_FORMAT = "%.10g"

#: File formats :func:`write_table` can write, with their suffixes.
TABLE_FORMATS: dict[str, str] = {"csv": ".csv", "md": ".md", "html": ".html", "tex": ".tex"}

#: Display labels of common machine column names (used in Markdown / HTML / LaTeX only).
DEFAULT_LABELS: dict[str, str] = {
    "hypothesis_id": "Hypothesis",
    "outcome": "Outcome",
    "contrast": "Contrast",
    "role": "Role",
    "estimate": "Estimate",
    "std_error": "SE",
    "df": "df",
    "statistic": "Statistic",
    "p_value": "p",
    "p_adjusted": "Adjusted p",
    "conf_low": "CI low",
    "conf_high": "CI high",
    "n": "n",
    "n_missing": "Missing",
    "mean": "Mean",
    "sd": "SD",
    "median": "Median",
    "q1": "Q1",
    "q3": "Q3",
    "min": "Min",
    "max": "Max",
    "n_issues": "Issues",
    "n_participants": "Participants",
    "severity": "Severity",
    "rule": "Rule",
    "column": "Column",
    "file": "File",
    "stage": "Stage",
    "group": "Group",
    "reason": "Reason",
}

_P_COLUMNS = frozenset({"p_value", "p_adjusted"})
_RATIO_WORDS = ("ratio",)


# --------------------------------------------------------------------------------------
# identifier columns and the one writer
# --------------------------------------------------------------------------------------


def identifier_columns(dictionary: object | None = None) -> frozenset[str]:
    """Names of the identifier (PHI) fields that must never be exported.

    Parameters
    ----------
    dictionary : DataDictionary, optional
        A loaded data dictionary; default the packaged one
        (``studykit.dictionary.load_dictionary()``).

    Returns
    -------
    frozenset of str
        The names flagged ``identifier = yes`` in the dictionary. The pseudonymous key
        ``participant_id`` is not PHI and is not among them.

    Examples
    --------
    >>> ids = identifier_columns()
    >>> "initials" in ids, "participant_id" in ids
    (True, False)
    """
    if dictionary is None:
        try:
            from studykit.dictionary import load_dictionary
        except ModuleNotFoundError:  # pragma: no cover - dictionary module not merged yet
            return _identifier_columns_from_packaged_csv()
        dictionary = load_dictionary()
    return frozenset(dictionary.identifier_columns())


def _identifier_columns_from_packaged_csv() -> frozenset[str]:
    """Read the PHI flags straight from the packaged ``data_dictionary.csv``."""
    from importlib.resources import files

    path = files("studykit") / "data" / "data_dictionary.csv"
    with path.open("r", encoding="utf-8") as fh:
        dd = pd.read_csv(fh, dtype=str, keep_default_na=False)
    flagged = dd["identifier"].str.strip().str.lower().isin({"yes", "true", "1", "y"})
    return frozenset(dd.loc[flagged, "name"].str.strip())


def _strip_identifiers(data: pd.DataFrame, ids: Collection[str], name: str) -> pd.DataFrame:
    ids = set(ids)
    drop = [c for c in data.columns if str(c) in ids]
    if drop:
        logger.info("table %s: identifier columns not exported: %s", name, ", ".join(drop))
        data = data.drop(columns=drop)
    if "variable" in data.columns:
        named = sorted(set(data["variable"].dropna().astype(str)) & ids)
        if named:
            raise InputError(
                f"Table {name!r} summarizes identifier field(s) {named}: their values (or "
                "levels) would be exported. Identifier fields (identifier = yes in the data "
                "dictionary) are never exported; remove them from the table's variables."
            )
    return data


def _natural_key(series: pd.Series) -> pd.Series:
    """Sort key that orders ``H2`` before ``H10`` and numbers numerically."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series

    def key(v: object) -> tuple:
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
            return ((2, ""),)
        parts = re.split(r"(\d+)", str(v))
        return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts if p != "")

    return series.map(key)


def _clean_cells(data: pd.DataFrame) -> pd.DataFrame:
    """Lists/tuples -> '; '-joined text; -0.0 -> 0.0 (so '-0' never appears)."""
    out = data.copy()
    for col in out.columns:
        s = out[col]
        if s.dtype == object:
            if s.map(lambda v: isinstance(v, list | tuple | set)).any():
                out[col] = s.map(
                    lambda v: (
                        "; ".join(map(str, sorted(v) if isinstance(v, set) else v))
                        if isinstance(v, list | tuple | set)
                        else v
                    )
                )
        elif pd.api.types.is_float_dtype(s):
            out[col] = s + 0.0  # turns -0.0 into 0.0, keeps NaN
    return out


def to_csv_text(data: pd.DataFrame) -> str:
    """The CSV text :func:`write_table` writes (fixed float format, ``\\n`` line ends).

    Examples
    --------
    >>> print(to_csv_text(pd.DataFrame({"x": ["a", "b"], "y": [1 / 3, float("nan")]})), end="")
    x,y
    a,0.3333333333
    b,
    """
    return _clean_cells(data).to_csv(
        index=False, float_format=FLOAT_FORMAT, na_rep="", lineterminator="\n"
    )


def _fmt_float(v: float, digits: int) -> str:
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return f"{v:.{digits}f}"


def _fmt_p(v: float) -> str:
    if v < 0.001:
        return "<0.001"
    return f"{v:.3f}"


def format_display(
    data: pd.DataFrame,
    *,
    digits: int = 2,
    labels: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Turn a tidy numeric table into strings for reading (Markdown, HTML, LaTeX).

    Parameters
    ----------
    data : pandas.DataFrame
        Tidy table with machine column names.
    digits : int, default 2
        Decimals of floats. Columns ``p_value`` and ``p_adjusted`` get three decimals and
        ``<0.001`` below that.
    labels : mapping, optional
        Display label per column; defaults to :data:`DEFAULT_LABELS` for known names and
        the machine name otherwise.

    Returns
    -------
    pandas.DataFrame
        Same rows, every cell a string, missing values as empty strings.

    Examples
    --------
    >>> d = pd.DataFrame({"estimate": [1.23456], "p_value": [0.00002], "n": [12]})
    >>> format_display(d).to_dict("records")
    [{'Estimate': '1.23', 'p': '<0.001', 'n': '12'}]
    """
    names = {**DEFAULT_LABELS, **(labels or {})}
    out = {}
    for col in data.columns:
        s = data[col]
        is_p = col in _P_COLUMNS
        if pd.api.types.is_bool_dtype(s):
            vals = s.map(lambda v: "yes" if v else "no")
        elif pd.api.types.is_integer_dtype(s):
            vals = s.map(lambda v: "" if pd.isna(v) else str(int(v)))
        elif pd.api.types.is_float_dtype(s):
            vals = s.map(
                lambda v, is_p=is_p: (
                    "" if pd.isna(v) else (_fmt_p(v) if is_p else _fmt_float(float(v), digits))
                )
            )
        else:
            vals = s.map(
                lambda v: (
                    ""
                    if (v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)))
                    else (
                        "yes"
                        if v is True
                        else "no"
                        if v is False
                        else "; ".join(map(str, v))
                        if isinstance(v, list | tuple)
                        else str(v)
                    )
                )
            )
        out[names.get(str(col), str(col))] = vals.astype(object).to_numpy()
    return pd.DataFrame(out, index=range(len(data)))


def _latex(display: pd.DataFrame, title: str | None, notes: str | None) -> str:
    styler = display.style.hide(axis="index")
    styler = styler.format(escape="latex").format_index(escape="latex", axis=1)
    body = styler.to_latex(
        hrules=True,
        caption=_latex_escape(title) if title else None,
        position_float="centering" if title else None,
        column_format="l" * display.shape[1],
    )
    if notes:
        body += "% " + notes.replace("\n", "\n% ") + "\n"
    return body


def _latex_escape(text: str) -> str:
    repl = {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
    }
    return "".join(repl.get(c, c) for c in text)


def _html(display: pd.DataFrame, name: str, title: str | None, notes: str | None) -> str:
    import html

    table = display.to_html(
        index=False, escape=True, border=0, classes="studykit-table", table_id=f"table-{name}"
    )
    parts = []
    if title:
        parts.append(f"<p class='table-title'><strong>{html.escape(title)}</strong></p>")
    parts.append(table)
    if notes:
        parts.append(f"<p class='table-notes'>{html.escape(notes)}</p>")
    return "\n".join(parts) + "\n"


def _markdown(display: pd.DataFrame, title: str | None, notes: str | None) -> str:
    parts = []
    if title:
        parts.append(f"**{title}**\n")
    if len(display):
        parts.append(display.to_markdown(index=False))
    else:
        parts.append("(no rows)")
    if notes:
        parts.append("\n" + notes)
    return "\n".join(parts) + "\n"


def write_table(
    data: pd.DataFrame,
    directory: str | Path,
    name: str,
    *,
    formats: Sequence[str] = ("csv", "md", "html", "tex"),
    display: pd.DataFrame | None = None,
    title: str | None = None,
    notes: str | None = None,
    sort_by: Sequence[str] | None = None,
    identifiers: Collection[str] | None = None,
    digits: int = 2,
) -> dict[str, Path]:
    """Write one table as CSV, Markdown, HTML and LaTeX; never export identifier fields.

    Parameters
    ----------
    data : pandas.DataFrame
        The tidy, numeric table. Its CSV is the machine-readable export.
    directory : str or Path
        Output directory (created if needed).
    name : str
        File stem, e.g. ``"hypotheses"`` -> ``hypotheses.csv``, ``hypotheses.md`` ...
    formats : sequence of str, default all four
        Any of ``"csv"``, ``"md"``, ``"html"``, ``"tex"``.
    display : pandas.DataFrame, optional
        A formatted version for the human-readable formats (e.g. from
        :func:`format_baseline_table`); default ``format_display(data)``.
    title, notes : str, optional
        Caption and footnote of the human-readable versions (the CSV has neither).
    sort_by : sequence of str, optional
        Columns to sort ``data`` by (stable, natural order: ``H2`` before ``H10``). Default:
        keep the order of ``data``, which the builders of this module fix.
    identifiers : collection of str, optional
        Identifier (PHI) field names to drop; default :func:`identifier_columns` of the
        packaged dictionary. Columns with these names are dropped from every format (also
        from ``display``); a table whose ``variable`` column names one of them (a summary of
        an identifier's values) is refused with :class:`~studykit.errors.InputError`.
    digits : int, default 2
        Decimals of the default display version.

    Returns
    -------
    dict
        Format -> written path.

    Notes
    -----
    The CSV writes floats as ``%.10g`` (10 significant digits), missing values as empty
    cells and ``\\n`` line ends, so identical results give identical bytes.

    Examples
    --------
    >>> import tempfile
    >>> d = pd.DataFrame({"participant_id": ["P01"], "initials": ["AB"], "tst_min": [401.5]})
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     paths = write_table(d, tmp, "demo")
    ...     print(paths["csv"].read_text(), end="")
    participant_id,tst_min
    P01,401.5
    """
    if not isinstance(data, pd.DataFrame):
        raise InputError(f"write_table expects a pandas DataFrame, got {type(data).__name__}.")
    unknown = [f for f in formats if f not in TABLE_FORMATS]
    if unknown:
        raise InputError(
            f"Invalid table format(s) {unknown!r} for table {name!r}. "
            f"Expected any of {sorted(TABLE_FORMATS)}."
        )
    ids = identifier_columns() if identifiers is None else frozenset(identifiers)
    data = _strip_identifiers(data, ids, name)
    if sort_by:
        missing = [c for c in sort_by if c not in data.columns]
        if missing:
            raise InputError(
                f"Cannot sort table {name!r} by {missing}: no such column. "
                f"Columns are {list(data.columns)}."
            )
        data = data.sort_values(list(sort_by), key=_natural_key, kind="mergesort")
    data = data.reset_index(drop=True)
    if display is None:
        display = format_display(data, digits=digits)
    else:
        display = _strip_identifiers(display, ids, name).reset_index(drop=True)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for fmt in formats:
        path = directory / f"{name}{TABLE_FORMATS[fmt]}"
        if fmt == "csv":
            text = to_csv_text(data)
        elif fmt == "md":
            text = _markdown(display, title, notes)
        elif fmt == "html":
            text = _html(display, name, title, notes)
        else:
            text = _latex(display, title, notes)
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        written[fmt] = path
    return written


# --------------------------------------------------------------------------------------
# hypothesis results
# --------------------------------------------------------------------------------------


def hypothesis_table(hypotheses: pd.DataFrame) -> pd.DataFrame:
    """The hypothesis results table in contract column order, rows in protocol order.

    Parameters
    ----------
    hypotheses : pandas.DataFrame
        ``AnalysisResults.hypotheses``: one row per hypothesis x contrast with (at least)
        the columns of :data:`HYPOTHESIS_COLUMNS`. Extra columns are kept, after those.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`HYPOTHESIS_COLUMNS` (+ extras). Rows keep the analysis' order (the
        protocol's order of hypotheses, then contrasts), which is fixed by the protocol, so
        exports are stable without re-sorting into an order the protocol did not choose.

    Examples
    --------
    >>> h = pd.DataFrame({c: [None, None] for c in reversed(HYPOTHESIS_COLUMNS)})
    >>> h["hypothesis_id"] = ["H1", "E1"]
    >>> t = hypothesis_table(h)
    >>> t.columns[:3].tolist(), t["hypothesis_id"].tolist()
    (['protocol_id', 'protocol_sha256', 'hypothesis_id'], ['H1', 'E1'])
    """
    missing = [c for c in HYPOTHESIS_COLUMNS if c not in hypotheses.columns]
    if missing:
        raise InputError(
            f"The hypothesis results lack column(s) {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}. The table must have every column of the "
            "contract in docs/ARCHITECTURE.md (studykit.tables.HYPOTHESIS_COLUMNS)."
        )
    extras = [c for c in hypotheses.columns if c not in HYPOTHESIS_COLUMNS]
    return hypotheses.loc[:, [*HYPOTHESIS_COLUMNS, *extras]].reset_index(drop=True)


def _is_ratio(scale: object) -> bool:
    return isinstance(scale, str) and any(w in scale.lower() for w in _RATIO_WORDS)


def format_hypothesis_table(hypotheses: pd.DataFrame, *, digits: int = 2) -> pd.DataFrame:
    """A compact, readable version of the hypothesis results (for the report and papers).

    Parameters
    ----------
    hypotheses : pandas.DataFrame
        Output of :func:`hypothesis_table`.
    digits : int, default 2
        Decimals of estimates, intervals and effect sizes.

    Returns
    -------
    pandas.DataFrame
        String columns ``Hypothesis, Outcome, Contrast, Role, n (K/P), Excluded,
        Estimate [CI], CI level, df, p, Adjusted p, Effect size, Verdict``. The model,
        its warnings and the effect-size definition stay in the CSV (and the report's
        diagnostics and definitions); they are too long for a readable table.

    Examples
    --------
    >>> h = pd.DataFrame({c: [None] for c in HYPOTHESIS_COLUMNS})
    >>> h.loc[0, ["hypothesis_id", "estimate", "conf_low", "conf_high", "p_value"]] = [
    ...     "H1", 8.0, 2.5, 13.5, 0.004]
    >>> format_hypothesis_table(h).loc[0, "Estimate [CI]"]
    '8.00 [2.50, 13.50]'
    """

    def num(v: object, d: int = digits) -> str:
        if v is None or pd.isna(v):
            return ""
        return _fmt_float(float(v), d)

    def p(v: object) -> str:
        return "" if v is None or pd.isna(v) else _fmt_p(float(v))

    def txt(v: object) -> str:
        if v is None or (not isinstance(v, list | tuple) and pd.isna(v)):
            return ""
        return "; ".join(map(str, v)) if isinstance(v, list | tuple) else str(v)

    def intn(v: object) -> str:
        return "" if v is None or pd.isna(v) else str(int(v))

    rows = []
    for _, r in hypotheses.iterrows():
        level = r["conf_level"]
        ci = f"{num(r['conf_low'])}, {num(r['conf_high'])}"
        est = num(r["estimate"])
        if _is_ratio(r["scale"]):
            est += " (ratio)"
        adj = p(r["p_adjusted"])
        if adj and txt(r["adjust_method"]):
            adj += f" ({txt(r['adjust_method'])})"
        es = num(r["effect_size"])
        rows.append(
            {
                "Hypothesis": txt(r["hypothesis_id"]),
                "Outcome": txt(r["outcome"]),
                "Contrast": txt(r["contrast"]),
                "Role": txt(r["role"]),
                "n (K/P)": f"{intn(r['n_ketamine'])}/{intn(r['n_placebo'])}",
                "Excluded": intn(r["n_excluded"]),
                "Estimate [CI]": f"{est} [{ci}]",
                "CI level": "" if level is None or pd.isna(level) else f"{float(level):.0%}",
                "df": num(r["df"], 1)
                + (f" ({txt(r['df_method'])})" if txt(r["df_method"]) else ""),
                "p": p(r["p_value"]),
                "Adjusted p": adj,
                "Effect size": es,
                "Verdict": txt(r["verdict"]),
            }
        )
    return pd.DataFrame(rows, columns=list(rows[0]) if rows else None)


# --------------------------------------------------------------------------------------
# Table 1: baseline characteristics (no p-values: CONSORT 2010, item 15)
# --------------------------------------------------------------------------------------

_BASELINE_COLUMNS = [
    "variable",
    "label",
    "unit",
    "type",
    "level",
    "group",
    "n",
    "n_missing",
    "mean",
    "sd",
    "median",
    "q1",
    "q3",
    "count",
    "percent",
]


def _is_categorical(s: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s))


def _order(values: Sequence[object], order: Sequence[object] | None) -> list:
    present = list(dict.fromkeys(v for v in values if pd.notna(v)))
    if order is None:
        return sorted(present, key=str)
    extra = sorted((v for v in present if v not in order), key=str)
    return [v for v in order if v in present] + extra


def baseline_characteristics(
    roster: pd.DataFrame,
    *,
    variables: Sequence[str],
    group: str = "sequence",
    group_order: Sequence[str] | None = None,
    labels: Mapping[str, str] | None = None,
    units: Mapping[str, str] | None = None,
    levels: Mapping[str, Sequence[str]] | None = None,
    overall: bool = True,
) -> pd.DataFrame:
    """Baseline characteristics by randomized group (the numbers of Table 1).

    Parameters
    ----------
    roster : pandas.DataFrame
        One row per randomized participant, with ``group`` and the ``variables``.
    variables : sequence of str
        Columns to summarize, in display order.
    group : str, default "sequence"
        Randomized sequence (crossover) or arm (parallel group).
    group_order : sequence of str, optional
        Order of groups (dictionary order of the codes); groups present but not listed
        follow alphabetically. Codes without participants (e.g. the parallel-group arms of
        a crossover) are left out.
    labels, units : mapping, optional
        Display label and unit per variable (from the data dictionary).
    levels : mapping, optional
        Levels per categorical variable in display order; a variable listed here is
        categorical. Otherwise numeric columns are continuous and the rest categorical.
    overall : bool, default True
        Add a group ``"overall"`` with all participants.

    Returns
    -------
    pandas.DataFrame
        Tidy rows, columns ``variable, label, unit, type, level, group, n, n_missing, mean,
        sd, median, q1, q3, count, percent``. Continuous variables: one row per group
        (``level`` empty). Categorical: one row per level and group with ``count`` and
        ``percent`` of the group's non-missing values. A first variable ``participants``
        gives the group sizes.

    Notes
    -----
    No p-values: CONSORT 2010 (item 15 and its explanation) advises against significance
    tests of baseline differences in randomized trials, since any difference is by chance.
    SD uses ``ddof = 1``; quartiles use linear interpolation (R's ``quantile`` type 7).

    Examples
    --------
    >>> r = pd.DataFrame({"sequence": ["KP", "KP", "PK"], "age": [30, 40, 50],
    ...                   "sex": ["F", "M", "F"]})
    >>> t = baseline_characteristics(r, variables=["age", "sex"], group_order=["KP", "PK"],
    ...                              levels={"sex": ["F", "M"]})
    >>> t.query("variable == 'age' and group == 'KP'")[["n", "mean"]].to_numpy().tolist()
    [[2.0, 35.0]]
    """
    if group not in roster.columns:
        raise InputError(
            f"Cannot build Table 1: the roster has no column {group!r} (the randomized "
            f"group). Columns are {list(roster.columns)[:20]}."
        )
    absent = [v for v in variables if v not in roster.columns]
    if absent:
        raise InputError(
            f"Cannot build Table 1: variable(s) {absent} not in the roster. "
            f"Columns are {list(roster.columns)[:20]}."
        )
    labels = labels or {}
    units = units or {}
    levels = levels or {}
    groups = _order(roster[group].tolist(), group_order)
    subsets: list[tuple[str, pd.DataFrame]] = [(str(g), roster[roster[group] == g]) for g in groups]
    if overall:
        subsets.append(("overall", roster[roster[group].notna()]))
    rows: list[dict] = []
    for g, sub in subsets:
        rows.append(
            {
                "variable": "participants",
                "label": "Participants",
                "type": "count",
                "group": g,
                "n": float(len(sub)),
                "n_missing": 0.0,
            }
        )
    for var in variables:
        col = roster[var]
        categorical = var in levels or _is_categorical(col)
        for g, sub in subsets:
            s = sub[var]
            base = {
                "variable": var,
                "label": labels.get(var, var),
                "unit": units.get(var, ""),
                "group": g,
                "n_missing": float(s.isna().sum()),
            }
            if categorical:
                present = s.dropna().astype(str)
                n = float(len(present))
                lv = [str(x) for x in levels.get(var, [])] or sorted(
                    col.dropna().astype(str).unique()
                )
                lv += sorted(set(col.dropna().astype(str)) - set(lv))
                for level in lv:
                    k = float((present == level).sum())
                    rows.append(
                        {
                            **base,
                            "type": "categorical",
                            "level": level,
                            "n": n,
                            "count": k,
                            "percent": 100.0 * k / n if n else math.nan,
                        }
                    )
            else:
                x = pd.to_numeric(s, errors="coerce").dropna().to_numpy(dtype=float)
                n = float(len(x))
                rows.append(
                    {
                        **base,
                        "type": "continuous",
                        "level": "",
                        "n": n,
                        "mean": float(np.mean(x)) if n else math.nan,
                        "sd": float(np.std(x, ddof=1)) if n > 1 else math.nan,
                        "median": float(np.median(x)) if n else math.nan,
                        "q1": float(np.quantile(x, 0.25)) if n else math.nan,
                        "q3": float(np.quantile(x, 0.75)) if n else math.nan,
                    }
                )
    out = pd.DataFrame(rows, columns=_BASELINE_COLUMNS)
    for c in ("label", "unit", "level", "type"):
        out[c] = out[c].fillna("")
    # stable order: variable order as given, then level order, then group order
    var_rank = {v: i for i, v in enumerate(["participants", *variables])}
    grp_rank = {g: i for i, (g, _) in enumerate(subsets)}
    out["_v"] = out["variable"].map(var_rank)
    out["_g"] = out["group"].map(grp_rank)
    out["_l"] = out.groupby(["variable", "group"]).cumcount()
    out = out.sort_values(["_v", "_l", "_g"], kind="mergesort").drop(columns=["_v", "_g", "_l"])
    return out.reset_index(drop=True)


def format_baseline_table(
    characteristics: pd.DataFrame,
    *,
    group_labels: Mapping[str, str] | None = None,
    digits: int = 1,
) -> pd.DataFrame:
    """Table 1 for reading: one column per group, ``mean (SD)``, ``median [Q1, Q3]``, ``n (%)``.

    Parameters
    ----------
    characteristics : pandas.DataFrame
        Output of :func:`baseline_characteristics`.
    group_labels : mapping, optional
        Display label per group code (e.g. ``{"KP": "Ketamine then placebo"}``).
    digits : int, default 1
        Decimals of means, SDs, quartiles and percentages.

    Returns
    -------
    pandas.DataFrame
        String columns ``Characteristic`` and one per group (``"label (n = N)"``).

    Examples
    --------
    >>> r = pd.DataFrame({"sequence": ["KP", "KP", "PK"], "age": [30, 40, 50]})
    >>> t = format_baseline_table(baseline_characteristics(r, variables=["age"]))
    >>> t.iloc[0].tolist()
    ['age, mean (SD)', '35.0 (7.1)', '50.0', '40.0 (10.0)']
    """
    group_labels = dict(group_labels or {})
    group_labels.setdefault("overall", "Overall")
    c = characteristics
    groups = list(dict.fromkeys(c["group"]))
    sizes = c[c["variable"] == "participants"].set_index("group")["n"]
    header = {g: f"{group_labels.get(g, g)} (n = {int(sizes.get(g, 0))})" for g in groups}

    def f(v: float) -> str:
        return "" if pd.isna(v) else f"{v:.{digits}f}"

    rows: list[dict] = []
    for var in dict.fromkeys(c["variable"]):
        if var == "participants":
            continue
        block = c[c["variable"] == var]
        label = block["label"].iloc[0] or var
        unit = block["unit"].iloc[0]
        name = f"{label} ({unit})" if unit else label
        kind = block["type"].iloc[0]
        if kind == "continuous":
            by = block.set_index("group")
            r1 = {"Characteristic": f"{name}, mean (SD)"}
            r2 = {"Characteristic": "    median [Q1, Q3]"}
            for g in groups:
                s = by.loc[g]
                r1[header[g]] = (
                    f"{f(s['mean'])} ({f(s['sd'])})" if pd.notna(s["sd"]) else f(s["mean"])
                )
                r2[header[g]] = f"{f(s['median'])} [{f(s['q1'])}, {f(s['q3'])}]" if s["n"] else ""
            rows += [r1, r2]
        else:
            rows.append({"Characteristic": f"{name}, n (%)", **{header[g]: "" for g in groups}})
            for level in dict.fromkeys(block["level"]):
                lv = block[block["level"] == level].set_index("group")
                r = {"Characteristic": f"    {level}"}
                for g in groups:
                    s = lv.loc[g]
                    r[header[g]] = f"{int(s['count'])} ({f(s['percent'])})" if s["n"] else "0"
                rows.append(r)
        miss = block.drop_duplicates("group").set_index("group")["n_missing"]
        if (miss > 0).any():
            rows.append(
                {
                    "Characteristic": "    missing, n",
                    **{header[g]: str(int(miss.get(g, 0))) for g in groups},
                }
            )
    return pd.DataFrame(rows, columns=["Characteristic", *header.values()]).fillna("")


# --------------------------------------------------------------------------------------
# descriptive outcomes per arm and night (or day)
# --------------------------------------------------------------------------------------


def descriptive_outcomes(
    data: pd.DataFrame,
    *,
    outcomes: Sequence[str],
    arm: str = "treatment",
    time: str = "night",
    arm_order: Sequence[str] | None = None,
    time_order: Sequence[object] | None = None,
    labels: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Mean, SD, median, IQR and n of each outcome per arm and time point.

    Parameters
    ----------
    data : pandas.DataFrame
        Long data, one row per observation (e.g. the nights table, or the diary joined
        with the treatment of its period).
    outcomes : sequence of str
        Outcome columns, in display order.
    arm, time : str
        Grouping columns (default ``"treatment"`` and ``"night"``); the output uses these
        names as its columns.
    arm_order, time_order : sequence, optional
        Explicit orders (reference arm first, nights in protocol order); values present
        but not listed follow in sorted order.
    labels : mapping, optional
        Display label per outcome (from the data dictionary).

    Returns
    -------
    pandas.DataFrame
        Columns ``outcome, label, <arm>, <time>, n, n_missing, mean, sd, median, q1, q3,
        min, max``; rows ordered by outcome, arm, time.

    Notes
    -----
    ``n`` counts non-missing values; SD uses ``ddof = 1``; quartiles use linear
    interpolation (R's ``quantile`` type 7). Observations are pooled over periods and
    sequences; the inferential comparison is the model's job.

    Examples
    --------
    >>> d = pd.DataFrame({"treatment": ["placebo"] * 3, "night": ["post1"] * 3,
    ...                   "tst_min": [400.0, 410.0, None]})
    >>> r = descriptive_outcomes(d, outcomes=["tst_min"]).iloc[0]
    >>> int(r["n"]), int(r["n_missing"]), float(r["mean"]), float(r["median"])
    (2, 1, 405.0, 405.0)
    """
    missing = [c for c in [arm, time, *outcomes] if c not in data.columns]
    if missing:
        raise InputError(
            f"Cannot describe outcomes: column(s) {missing} not in the data. "
            f"Columns are {list(data.columns)[:25]}."
        )
    labels = labels or {}
    arms = _order(data[arm].tolist(), arm_order)
    times = _order(data[time].tolist(), time_order)
    rows = []
    for outcome in outcomes:
        values = pd.to_numeric(data[outcome], errors="coerce")
        for a in arms:
            for t in times:
                sel = (data[arm] == a) & (data[time] == t)
                if not sel.any():
                    continue
                v = values[sel]
                x = v.dropna().to_numpy(dtype=float)
                n = len(x)
                rows.append(
                    {
                        "outcome": outcome,
                        "label": labels.get(outcome, outcome),
                        arm: a,
                        time: t,
                        "n": n,
                        "n_missing": int(v.isna().sum()),
                        "mean": float(np.mean(x)) if n else math.nan,
                        "sd": float(np.std(x, ddof=1)) if n > 1 else math.nan,
                        "median": float(np.median(x)) if n else math.nan,
                        "q1": float(np.quantile(x, 0.25)) if n else math.nan,
                        "q3": float(np.quantile(x, 0.75)) if n else math.nan,
                        "min": float(np.min(x)) if n else math.nan,
                        "max": float(np.max(x)) if n else math.nan,
                    }
                )
    cols = [
        "outcome",
        "label",
        arm,
        time,
        "n",
        "n_missing",
        "mean",
        "sd",
        "median",
        "q1",
        "q3",
        "min",
        "max",
    ]
    return pd.DataFrame(rows, columns=cols)


def format_descriptive_table(summary: pd.DataFrame, *, digits: int = 1) -> pd.DataFrame:
    """Descriptive outcomes for reading: ``mean (SD)`` and ``median [Q1, Q3]``.

    Parameters
    ----------
    summary : pandas.DataFrame
        Output of :func:`descriptive_outcomes`.
    digits : int, default 1
        Decimals.

    Returns
    -------
    pandas.DataFrame
        String columns ``Outcome``, the arm and time columns, ``n``, ``Mean (SD)``,
        ``Median [Q1, Q3]``.

    Examples
    --------
    >>> d = pd.DataFrame({"treatment": ["placebo"] * 2, "night": ["post1"] * 2,
    ...                   "tst_min": [400.0, 410.0]})
    >>> format_descriptive_table(descriptive_outcomes(d, outcomes=["tst_min"])).iloc[0].tolist()
    ['tst_min', 'placebo', 'post1', '2', '405.0 (7.1)', '405.0 [402.5, 407.5]']
    """
    arm, time = summary.columns[2], summary.columns[3]

    def f(v: float) -> str:
        return "" if pd.isna(v) else f"{v:.{digits}f}"

    out = pd.DataFrame(
        {
            "Outcome": summary["label"].astype(str).to_numpy(),
            arm.capitalize(): summary[arm].astype(str).to_numpy(),
            time.capitalize(): summary[time].astype(str).to_numpy(),
            "n": summary["n"].astype(int).astype(str).to_numpy(),
            "Mean (SD)": [
                f"{f(m)} ({f(s)})" if pd.notna(s) else f(m)
                for m, s in zip(summary["mean"], summary["sd"], strict=True)
            ],
            "Median [Q1, Q3]": [
                f"{f(m)} [{f(a)}, {f(b)}]" if pd.notna(m) else ""
                for m, a, b in zip(summary["median"], summary["q1"], summary["q3"], strict=True)
            ],
        }
    )
    return out


# --------------------------------------------------------------------------------------
# validation summary and participant flow
# --------------------------------------------------------------------------------------

_ISSUE_COLUMNS = ["file", "column", "rule", "severity"]
_SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


def validation_summary(issues: pd.DataFrame | None) -> pd.DataFrame:
    """Count validation issues per file, column, rule and severity (no cell values).

    Parameters
    ----------
    issues : pandas.DataFrame or None
        The issue table of ``load_study`` / ``validate_table`` (columns ``file, row,
        participant_id, night, column, value, rule, severity, message``).

    Returns
    -------
    pandas.DataFrame
        Columns ``file, column, rule, severity, n_issues, n_participants, first_row,
        example``; errors first, then by file, column and rule. Offending values are not
        copied (they may be identifiers); the full issue table stays with the data.

    Examples
    --------
    >>> iss = pd.DataFrame({"file": ["nights.csv"] * 2, "row": [3, 7],
    ...     "participant_id": ["P01", "P02"], "night": ["post1", "post2"],
    ...     "column": ["tst_min"] * 2, "value": ["-5", "9999"], "rule": ["range"] * 2,
    ...     "severity": ["error"] * 2, "message": ["below minimum 0", "above maximum 1440"]})
    >>> validation_summary(iss)[["file", "n_issues", "n_participants", "first_row"]].to_numpy().tolist()
    [['nights.csv', 2, 2, 3]]
    """
    cols = [*_ISSUE_COLUMNS, "n_issues", "n_participants", "first_row", "example"]
    if issues is None or len(issues) == 0:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    absent = [c for c in _ISSUE_COLUMNS if c not in issues.columns]
    if absent:
        raise InputError(
            f"The issue table lacks column(s) {absent}; expected the columns of "
            "studykit.errors.ValidationError.issues (file, row, column, rule, severity, ...)."
        )
    iss = issues.copy()
    for c in _ISSUE_COLUMNS:
        iss[c] = iss[c].astype("string").fillna("")
    if "participant_id" not in iss.columns:
        iss["participant_id"] = pd.NA
    if "row" not in iss.columns:
        iss["row"] = pd.NA
    if "message" not in iss.columns:
        iss["message"] = ""
    rows = []
    for key, g in iss.groupby(_ISSUE_COLUMNS, sort=False, dropna=False):
        row_nums = pd.to_numeric(g["row"], errors="coerce").dropna()
        first = g.sort_values(
            "row", key=lambda s: pd.to_numeric(s, errors="coerce"), kind="mergesort"
        )
        rows.append(
            {
                **dict(zip(_ISSUE_COLUMNS, key, strict=True)),
                "n_issues": len(g),
                "n_participants": int(g["participant_id"].dropna().nunique()),
                "first_row": int(row_nums.min()) if len(row_nums) else pd.NA,
                "example": str(first["message"].iloc[0]) if len(first) else "",
            }
        )
    out = pd.DataFrame(rows, columns=cols)
    out["first_row"] = out["first_row"].astype("Int64")
    out["_s"] = out["severity"].str.lower().map(_SEVERITY_ORDER).fillna(9)
    out = out.sort_values(["_s", "file", "column", "rule"], kind="mergesort").drop(columns="_s")
    return out.reset_index(drop=True)


def redact_identifier_values(
    issues: pd.DataFrame, *, identifiers: Collection[str] | None = None
) -> pd.DataFrame:
    """Blank the value and message of issues about identifier (PHI) fields.

    Parameters
    ----------
    issues : pandas.DataFrame
        Issue table (columns ``column``, ``value``, ``message`` ...).
    identifiers : collection of str, optional
        Identifier field names; default :func:`identifier_columns`.

    Returns
    -------
    pandas.DataFrame
        A copy where rows whose ``column`` is an identifier field have ``value`` and
        ``message`` replaced by ``"[redacted: identifier field]"``.

    Examples
    --------
    >>> iss = pd.DataFrame({"column": ["initials", "age"], "value": ["A.B.", "abc"],
    ...                     "message": ["too long: 'A.B.'", "not an integer"]})
    >>> redact_identifier_values(iss)["value"].tolist()
    ['[redacted: identifier field]', 'abc']
    """
    ids = identifier_columns() if identifiers is None else frozenset(identifiers)
    out = issues.copy()
    if "column" not in out.columns:
        return out
    mask = out["column"].astype("string").isin(ids).fillna(False).to_numpy(bool)
    for c in ("value", "message"):
        if c in out.columns and mask.any():
            out[c] = out[c].astype(object)
            out.loc[mask, c] = "[redacted: identifier field]"
    return out


def participant_flow(
    roster: pd.DataFrame,
    *,
    group: str = "sequence",
    group_order: Sequence[str] | None = None,
    hypotheses: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Participant flow (CONSORT): randomized, completed, withdrawn, analysed, excluded.

    Parameters
    ----------
    roster : pandas.DataFrame
        One row per randomized participant with ``group``, ``status``
        (``completed``/``withdrawn``) and optionally ``withdrawal_reason``.
    group : str, default "sequence"
        Randomized group column.
    group_order : sequence of str, optional
        Order of groups.
    hypotheses : pandas.DataFrame, optional
        Hypothesis results; adds, per hypothesis, the participants analysed
        (``n_participants``) and excluded (``n_excluded`` with ``excluded_reasons``).

    Returns
    -------
    pandas.DataFrame
        Columns ``stage, group, reason, n``. Stages: ``randomized``, ``completed``,
        ``withdrawn`` (one row per reason), then ``analysed`` and ``excluded`` per
        hypothesis (``group`` = hypothesis id, first contrast of each hypothesis).

    Examples
    --------
    >>> r = pd.DataFrame({"sequence": ["KP", "PK", "PK"],
    ...     "status": ["completed", "completed", "withdrawn"],
    ...     "withdrawal_reason": [None, None, "moved away"]})
    >>> participant_flow(r, group_order=["KP", "PK"]).query("stage == 'withdrawn'").to_numpy().tolist()
    [['withdrawn', 'PK', 'moved away', 1], ['withdrawn', 'all', 'moved away', 1]]
    """
    if group not in roster.columns:
        raise InputError(
            f"Cannot build the participant flow: the roster has no column {group!r}. "
            f"Columns are {list(roster.columns)[:20]}."
        )
    groups = [*map(str, _order(roster[group].tolist(), group_order)), "all"]
    rows: list[dict] = []
    status = roster["status"].astype("string") if "status" in roster.columns else None
    reasons = (
        roster["withdrawal_reason"].astype("string").fillna("not given")
        if "withdrawal_reason" in roster.columns
        else pd.Series("not given", index=roster.index, dtype="string")
    )
    for g in groups:
        sel = roster[group].notna() if g == "all" else roster[group].astype(str) == g
        rows.append({"stage": "randomized", "group": g, "reason": "", "n": int(sel.sum())})
    if status is not None:
        for g in groups:
            sel = roster[group].notna() if g == "all" else roster[group].astype(str) == g
            rows.append(
                {
                    "stage": "completed",
                    "group": g,
                    "reason": "",
                    "n": int((sel & (status == "completed")).fillna(False).sum()),
                }
            )
        for g in groups:
            sel = roster[group].notna() if g == "all" else roster[group].astype(str) == g
            w = (sel & (status == "withdrawn")).fillna(False).to_numpy(bool)
            for reason, n in sorted(reasons[w].value_counts().items(), key=lambda kv: str(kv[0])):
                rows.append({"stage": "withdrawn", "group": g, "reason": str(reason), "n": int(n)})
    if hypotheses is not None and len(hypotheses):
        h = hypotheses.drop_duplicates("hypothesis_id")  # protocol order
        for _, r in h.iterrows():
            rows.append(
                {
                    "stage": "analysed",
                    "group": str(r["hypothesis_id"]),
                    "reason": "",
                    "n": int(r["n_participants"]) if pd.notna(r["n_participants"]) else 0,
                }
            )
            reason = r.get("excluded_reasons")
            reason = (
                ""
                if reason is None or (not isinstance(reason, list) and pd.isna(reason))
                else reason
            )
            if isinstance(reason, list):
                reason = "; ".join(map(str, reason))
            rows.append(
                {
                    "stage": "excluded",
                    "group": str(r["hypothesis_id"]),
                    "reason": str(reason),
                    "n": int(r["n_excluded"]) if pd.notna(r["n_excluded"]) else 0,
                }
            )
    return pd.DataFrame(rows, columns=["stage", "group", "reason", "n"])
