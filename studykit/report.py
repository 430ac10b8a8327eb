"""One self-contained HTML report that reads top-down like a paper's results section.

Sections, in order: study flow (the CONSORT crossover diagram, drawn from the data, with the
flow by sequence and period, the washout and the analysed counts), Table 1 by sequence with
the baseline values by sequence and period, the confirmatory results (table and forest plot
side by side), exploratory results, sensitivity analyses (when the results have them), model
details per hypothesis (formula, variance components, coefficients, diagnostic plots), the
protocol's amendment log (when it has one), descriptive outcomes, data quality and
reproducibility. A sidebar links every section; a print stylesheet drops the sidebar and
keeps figures and table rows unbroken.

The page needs nothing but itself: styles are inline, figures are embedded as base64 data
URIs (SVG, or PNG when no SVG is given), there is no script and no external link. When the
data are simulated the title says so, a banner says so at the top, and every figure carries
a watermark (``studykit.plotting.save_figure``).

The HTML is rendered with jinja2 with autoescaping on; tables arrive as display frames
(strings) and are escaped cell by cell.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment
from markupsafe import Markup

from studykit import __version__
from studykit import consort as C
from studykit import plotting as P
from studykit.errors import InputError
from studykit.models.multiplicity import adjusted_intervals
from studykit.tables import format_display, format_hypothesis_table, format_number

__all__ = [
    "ReportTable",
    "ReportFigure",
    "Section",
    "SECTION_IDS",
    "consort_tables",
    "draw_report_figures",
    "model_formula",
    "results_sections",
    "render_report",
    "write_report",
]

logger = logging.getLogger(__name__)

#: Ids of the top-level sections, in page order (a section without content is left out).
SECTION_IDS: tuple[str, ...] = (
    "flow",
    "baseline",
    "confirmatory",
    "exploratory",
    "sensitivity",
    "models",
    "amendments",
    "descriptive",
    "data-quality",
    "reproducibility",
)


@dataclass(frozen=True)
class ReportTable:
    """A table of the report.

    Attributes
    ----------
    name : str
        Machine name; the HTML table gets ``id="table-<name>"``.
    title : str
        Heading.
    display : pandas.DataFrame
        The formatted table (strings), e.g. from ``studykit.tables.format_display``.
    notes : str
        Footnote (statistical choices, definitions).
    """

    name: str
    title: str
    display: pd.DataFrame
    notes: str = ""


@dataclass(frozen=True)
class ReportFigure:
    """A figure of the report.

    Attributes
    ----------
    name : str
        Machine name; the figure gets ``id="fig-<name>"``.
    title : str
        Heading / alt text.
    path : Path
        An ``.svg`` or ``.png`` file, embedded as a base64 data URI.
    caption : str
        Caption.
    """

    name: str
    title: str
    path: Path
    caption: str = ""


@dataclass(frozen=True)
class Section:
    """A section of the report (``id="<id>"``), listed in the sidebar.

    Attributes
    ----------
    id : str
        Anchor id.
    title : str
        Heading.
    intro : str
        A paragraph under the heading.
    tables, figures : sequence
        Content, tables first.
    side_by_side : bool
        Lay the first table and the first figure out next to each other (results table and
        forest plot); below each other on narrow screens and in print.
    figures_first : bool
        Figures before tables (the flow diagram before the flow tables).
    subsections : sequence of Section
        Nested sections (e.g. one per hypothesis under model details).
    """

    id: str
    title: str
    intro: str = ""
    tables: Sequence[ReportTable] = ()
    figures: Sequence[ReportFigure] = ()
    side_by_side: bool = False
    subsections: Sequence[Section] = field(default_factory=tuple)
    figures_first: bool = False


# --------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------

_CSS = """
* { box-sizing: border-box; }
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 0; color: #1d1d1f; line-height: 1.4; }
nav#toc { position: fixed; top: 0; left: 0; bottom: 0; width: 230px; overflow-y: auto;
          background: #f6f7f9; border-right: 1px solid #ddd; padding: 1em 0.8em;
          font-size: 0.85em; }
nav#toc ul { list-style: none; padding-left: 0; margin: 0; }
nav#toc ul ul { padding-left: 1em; font-size: 0.95em; }
nav#toc a { color: #1d4f91; text-decoration: none; display: block; padding: 0.12em 0; }
nav#toc a:hover { text-decoration: underline; }
main { margin-left: 250px; max-width: 1250px; padding: 0 1.5em 3em; }
h1 { font-size: 1.6em; margin-top: 0.6em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.8em; }
h3 { margin-top: 1.4em; }
.banner { background: #b00020; color: #fff; padding: 0.7em 1em; font-weight: 600;
          position: sticky; top: 0; z-index: 10; margin: 0 -1.5em; }
.meta { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.8em; margin: 0.6em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.22em 0.55em; text-align: left;
         vertical-align: top; }
th { background: #f3f3f3; }
.table-wrap { overflow-x: auto; }
.notes, .intro { font-size: 0.85em; color: #444; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #444; }
.side { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 1.2em;
        align-items: start; }
.side table { font-size: 0.74em; }
dl.kv { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em;
        font-size: 0.85em; }
dl.kv dt { font-weight: 600; } dl.kv dd { margin: 0; word-break: break-all; }
code.formula { display: block; background: #f6f7f9; padding: 0.4em 0.6em; font-size: 0.85em;
               white-space: pre-wrap; }
@media (max-width: 1000px) {
  nav#toc { position: static; width: auto; border-right: none; border-bottom: 1px solid #ddd; }
  main { margin-left: 0; }
  .side { grid-template-columns: 1fr; }
}
@media print {
  @page { size: A4; margin: 14mm 12mm; }
  nav#toc { display: none; }
  main { margin: 0; max-width: none; padding: 0; }
  .banner { position: static; margin: 0 0 0.6em; -webkit-print-color-adjust: exact;
            print-color-adjust: exact; }
  .side { grid-template-columns: 1fr; }
  figure, tr, .kv, code.formula { break-inside: avoid; page-break-inside: avoid; }
  h2, h3 { break-after: avoid; page-break-after: avoid; }
  h2 { break-before: auto; }
  .table-wrap { overflow: visible; }
  table { font-size: 7.5pt; }
  a { color: inherit; text-decoration: none; }
}
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="studykit {{ version }}">
<title>{% if simulated %}[SIMULATED DATA] {% endif %}{{ title }}</title>
<style>{{ css }}</style>
</head>
<body>
<nav id="toc" aria-label="Sections"><strong>Contents</strong>
<ul>
{% for s in sections %}<li><a href="#{{ s.id }}">{{ s.title }}</a>{% if s.subsections %}
<ul>{% for t in s.subsections %}<li><a href="#{{ t.id }}">{{ t.title }}</a></li>{% endfor %}</ul>
{% endif %}</li>
{% endfor %}</ul></nav>
<main>
{% if simulated %}<div class="banner" id="simulated-banner" role="alert">
SIMULATED DATA: {{ simulated_note }}</div>{% endif %}
<h1>{% if simulated %}[SIMULATED DATA] {% endif %}{{ title }}</h1>
<p class="meta">studykit {{ version }}{% if protocol.id %} &middot; protocol
<code>{{ protocol.id }}</code>{% endif %}{% if protocol.sha256 %} (SHA-256
<code>{{ protocol.sha256[:16] }}&hellip;</code>){% endif %}</p>
{% if protocol_items %}<dl class="kv" id="protocol-summary">{% for k, v in protocol_items %}
<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}</dl>{% endif %}
{% for s in sections %}{{ render_section(s, 2) }}
{% endfor %}
</main>
</body>
</html>
"""

_SECTION = """<section id="{{ s.id }}"><h{{ level }}>{{ s.title }}</h{{ level }}>
{% if s.intro %}<p class="intro">{{ s.intro }}</p>{% endif %}
{% if s.side_by_side and s.tables and s.figures %}<div class="side">
<div>{{ table(s.tables[0]) }}</div><div>{{ figure(s.figures[0]) }}</div></div>
{% for t in s.tables[1:] %}{{ table(t) }}{% endfor %}
{% for f in s.figures[1:] %}{{ figure(f) }}{% endfor %}
{% elif s.figures_first %}{% for f in s.figures %}{{ figure(f) }}{% endfor %}
{% for t in s.tables %}{{ table(t) }}{% endfor %}
{% else %}{% for t in s.tables %}{{ table(t) }}{% endfor %}
{% for f in s.figures %}{{ figure(f) }}{% endfor %}{% endif %}
{% for sub in s.subsections %}{{ render_section(sub, level + 1) }}{% endfor %}
</section>"""

_TABLE = """<div class="table-block">{% if t.title %}<p><strong>{{ t.title }}</strong></p>{% endif %}
<div class="table-wrap">{{ html }}</div>
{% if t.notes %}<p class="notes">{{ t.notes }}</p>{% endif %}</div>"""

_FIGURE = """<figure id="fig-{{ f.name }}">
<img alt="{{ f.title }}" src="{{ src }}">
<figcaption><strong>{{ f.title }}.</strong> {{ f.caption }}</figcaption>
</figure>"""

_SIMULATED_NOTE = (
    "these results come from a simulated study generated by studykit, not from real "
    "participants. They demonstrate the analysis pipeline and must not be read as evidence."
)


def _table_html(display: pd.DataFrame, name: str) -> str:
    return display.to_html(
        index=False,
        escape=True,
        border=0,
        na_rep="",
        classes="studykit-table",
        table_id=f"table-{name}",
    )


def _data_uri(path: Path) -> str:
    suffix = path.suffix.lower()
    mime = {".svg": "image/svg+xml", ".png": "image/png"}.get(suffix)
    if mime is None:
        raise InputError(
            f"Cannot embed figure {str(path)!r}: only .svg and .png files can be embedded."
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"Cannot embed figure {str(path)!r}: {exc}.") from exc
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _flatten(value: object) -> str:
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {_flatten(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return " ".join(map(str, value))
    return "" if value is None else str(value)


def render_report(
    *,
    title: str,
    sections: Sequence[Section],
    protocol: Mapping[str, object] | None = None,
    simulated: bool,
) -> str:
    """Render the report as one HTML string.

    Parameters
    ----------
    title : str
        Page title (prefixed with ``[SIMULATED DATA]`` when ``simulated``).
    sections : sequence of Section
        The sections, in page order; each is listed in the sidebar.
    protocol : mapping, optional
        Protocol summary shown as key/value pairs under the title; keys ``id`` and
        ``sha256`` also go in the header line.
    simulated : bool
        Whether the data are simulated: adds a banner and tags the title. Keyword-only and
        without default, so no caller can forget it.

    Returns
    -------
    str
        The HTML document (no script, no external resource).

    Examples
    --------
    >>> t = ReportTable("hypotheses", "Hypothesis results", pd.DataFrame({"p": ["0.01"]}))
    >>> page = render_report(title="Demo", sections=[Section("confirmatory", "Results",
    ...     tables=[t])], protocol={"id": "demo"}, simulated=True)
    >>> 'id="simulated-banner"' in page, 'id="table-hypotheses"' in page
    (True, True)
    >>> '<a href="#confirmatory">Results</a>' in page
    True
    """
    env = Environment(autoescape=True, keep_trailing_newline=True)
    table_t = env.from_string(_TABLE)
    figure_t = env.from_string(_FIGURE)
    section_t = env.from_string(_SECTION)

    def table(t: ReportTable) -> Markup:
        return Markup(table_t.render(t=t, html=Markup(_table_html(t.display, t.name))))

    def figure(f: ReportFigure) -> Markup:
        return Markup(figure_t.render(f=f, src=_data_uri(Path(f.path))))

    def render_section(s: Section, level: int) -> Markup:
        return Markup(
            section_t.render(
                s=s, level=min(level, 4), table=table, figure=figure, render_section=render_section
            )
        )

    protocol = dict(protocol or {})
    return env.from_string(_TEMPLATE).render(
        version=__version__,
        title=title,
        css=Markup(_CSS),
        simulated=simulated,
        simulated_note=_SIMULATED_NOTE,
        protocol=protocol,
        protocol_items=[(k, _flatten(v)) for k, v in protocol.items()],
        sections=list(sections),
        render_section=render_section,
    )


def write_report(
    path: str | Path,
    *,
    title: str,
    sections: Sequence[Section],
    protocol: Mapping[str, object] | None = None,
    simulated: bool,
) -> Path:
    """Render the report (:func:`render_report`) and write it to ``path``.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     p = write_report(Path(tmp) / "report.html", title="Demo", sections=[],
    ...                      simulated=False)
    ...     p.read_text().startswith("<!DOCTYPE html>")
    True
    """
    path = Path(path)
    page = render_report(title=title, sections=sections, protocol=protocol, simulated=simulated)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(page)
    logger.debug("report written to %s (%.0f kB)", path, len(page) / 1024)
    return path


# --------------------------------------------------------------------------------------
# content: CONSORT crossover tables, figures, model details
# --------------------------------------------------------------------------------------


def _primary_rows(h: pd.DataFrame) -> pd.Series:
    """Rows of the primary analysis (not a sensitivity analysis)."""
    if "analysis" not in h.columns:
        return pd.Series(True, index=h.index)
    a = h["analysis"].astype("string").fillna("").str.lower()
    return a.isin(["", "primary", "main"])


def _first_hypotheses(analysis: Any) -> list[Any]:
    return [f.hypothesis for f in analysis.fits.values()]


def consort_tables(
    study: Any,
    analysis: Any,
    *,
    sequence_order: Sequence[str] | None = None,
) -> dict[str, tuple[str, pd.DataFrame, str]]:
    """The CONSORT crossover tables of a study and its analysis.

    Parameters
    ----------
    study : Study
        ``roster``, ``periods``, ``nights`` (and ``diary``) tables.
    analysis : AnalysisResults
        The fitted hypotheses (their modelled data and exclusions).
    sequence_order : sequence of str, optional
        Order of the sequences (the dictionary's codes).

    Returns
    -------
    dict
        Table name -> ``(title, data, notes)``: ``consort_flow``, ``consort_washout``,
        ``consort_analysed``, ``consort_baseline_by_period``, ``consort_cell_means`` and
        ``consort_within_differences`` (see :mod:`studykit.consort`).
    """
    roster, periods, nights = study.roster, study.periods, study.nights
    diary = getattr(study, "diary", None)
    out: dict[str, tuple[str, pd.DataFrame, str]] = {}
    out["consort_flow"] = (
        "Participant and night flow by sequence and period (CONSORT crossover 13a/13b)",
        C.crossover_flow(roster, periods, nights, sequence_order=sequence_order),
        "Participants and nights are counted separately (column unit). Received: the period's "
        "treatment was given (infusion time recorded). Lost: randomised to the sequence but "
        "not treated in the period, with the roster's withdrawal reason. Planned nights: "
        "the night labels recorded for any participant.",
    )
    if "infusion_datetime" in periods.columns:
        out["consort_washout"] = (
            "Washout between periods (CONSORT crossover 5, 14a)",
            C.washout(periods, roster, sequence_order=sequence_order),
            "Days from the infusion of one period to the infusion of the next, per "
            "participant with both; median and range.",
        )
    ex = analysis.exclusions()
    out["consort_analysed"] = (
        "Analysed per hypothesis, sequence and period",
        C.analysed_by_period(
            {hid: f.data for hid, f in analysis.fits.items()},
            roster,
            exclusions=ex,
            sequence_order=sequence_order,
        ),
        "participants: people with at least one analysed observation in the cell; "
        "observations: analysed rows (nights or diary days); periods_excluded: "
        "participant-periods left out, with the reasons.",
    )
    base_parts, cell_parts, diff_parts = [], [], []
    h = analysis.hypotheses
    confirm = set(h.loc[h["role"].astype(str) == "confirmatory", "hypothesis_id"])
    for hyp in _first_hypotheses(analysis):
        c = hyp.contrast
        if hyp.id not in confirm or c.type != "difference_in_differences":
            continue
        data = nights if hyp.outcome_table == "nights" else diary
        if data is None or hyp.outcome not in data.columns or c.time_variable not in data:
            continue
        kw: dict[str, Any] = {"outcomes": [hyp.outcome], "time": c.time_variable}
        base = C.sequence_period_means(
            data, roster, times=[c.time_reference], sequence_order=sequence_order, **kw
        )
        cells = C.sequence_period_means(
            data, roster, times=list(c.time_levels), sequence_order=sequence_order, **kw
        )
        base_parts.append(base.rename(columns={c.time_variable: "time"}))
        cell_parts.append(cells.rename(columns={c.time_variable: "time"}))
        for at in c.time_levels:
            w = _within_differences(data, roster, hyp, at)
            s = C.summarise_differences(w, sequence_order=sequence_order)
            s.insert(0, "hypothesis_id", hyp.id)
            s.insert(1, "outcome", hyp.outcome)
            s.insert(
                2,
                "difference",
                f"change {c.time_reference} to {at}, {c.treatment_level} - {c.treatment_reference}",
            )
            diff_parts.append(s)
    if base_parts:
        out["consort_baseline_by_period"] = (
            "Baseline values by sequence and period (CONSORT crossover 15)",
            pd.concat(base_parts, ignore_index=True).drop_duplicates(),
            "Observed values on the reference night or day of each period, confirmatory "
            "outcomes; n = participants with a value.",
        )
        out["consort_cell_means"] = (
            "Outcome by sequence and period (CONSORT crossover 17a)",
            pd.concat(cell_parts, ignore_index=True).drop_duplicates(),
            "Observed means (SD) of the confirmatory outcomes in each sequence x period cell "
            "at the compared time points.",
        )
    if diff_parts:
        out["consort_within_differences"] = (
            "Within-participant differences (CONSORT crossover 17a)",
            pd.concat(diff_parts, ignore_index=True),
            "Per participant with both periods: change from the reference time in the "
            "treatment period minus the change in the reference period; summarised per "
            "sequence (the difference between sequences reflects the period effect) and "
            "overall. Descriptive; the model-based estimate is in the results table.",
        )
    return out


def _within_differences(data: pd.DataFrame, roster: Any, hyp: Any, at: Any) -> pd.DataFrame:
    """Each participant's difference in differences at time ``at``, as the hypothesis'
    contrast defines it (:func:`studykit.consort.within_participant_differences`)."""
    c = hyp.contrast
    return C.within_participant_differences(
        data,
        roster,
        outcome=hyp.outcome,
        time=c.time_variable,
        at=at,
        baseline=c.time_reference,
        treatment=c.treatment_variable,
        level=c.treatment_level,
        reference=c.treatment_reference,
    )


def model_formula(fit: Any) -> str:
    """The model that was fitted for a hypothesis, as an lme4-style formula.

    The fitted model's own ``formula`` when it records one (a crossover estimator of
    :mod:`studykit.estimators` records its model, e.g. the constrained-baseline model), else the
    plan's terms and random effects (:class:`~studykit.models.random_effects.RandomEffect`
    labels).

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> from studykit.models.random_effects import RandomEffect
    >>> spec = NS(outcome="n3_min", terms=("treatment", "night", "treatment:night", "age"),
    ...           random=(RandomEffect("participant_id"),
    ...                   RandomEffect("participant_id:period", ("1", "night_index"))))
    >>> model_formula(NS(model=NS(formula=None), plan=NS(model=spec)))
    'n3_min ~ treatment + night + treatment:night + age + (1 | participant_id) + (1 + night_index | participant_id:period)'
    >>> model_formula(NS(model=NS(formula="y ~ night + tx_post1 + (1 | id)"), plan=None))
    'y ~ night + tx_post1 + (1 | id)'
    """
    recorded = getattr(fit.model, "formula", None)
    if recorded:
        return str(recorded)
    spec = fit.plan.model
    rhs = " + ".join([*spec.terms] or ["1"])
    for r in spec.random:
        rhs += f" + {r.label}"
    return f"{spec.outcome} ~ {rhs}"


def _varcorr(model: Any) -> pd.DataFrame | None:
    vc = getattr(model, "varcorr", None)
    if callable(vc):
        return vc()
    sd = getattr(model, "sd_group", None)
    if sd is not None:
        rows = [
            {
                "group": getattr(model, "group", ""),
                "var1": "(Intercept)",
                "vcov": sd**2,
                "sdcor": sd,
            }
        ]
        theta = getattr(model, "theta", None)
        if theta:
            rows.append({"group": "dispersion (theta)", "var1": "", "vcov": None, "sdcor": theta})
        return pd.DataFrame(rows)
    return None


def draw_report_figures(
    analysis: Any,
    study: Any,
    directory: str | Path,
    *,
    simulated: bool,
    labels: Mapping[str, str] | None = None,
    units: Mapping[str, str] | None = None,
    sequence_labels: Mapping[str, str] | None = None,
    sequence_order: Sequence[str] | None = None,
) -> dict[str, ReportFigure]:
    """Draw and save the report's own figures: CONSORT flow, forest plots, diagnostics.

    Parameters
    ----------
    analysis : AnalysisResults
    study : Study
    directory : str or Path
        Figure directory; each figure is written as PNG and SVG.
    simulated : bool
        Label every figure as simulated (watermark and file metadata).
    labels, units : mapping, optional
        Outcome -> dictionary label / unit.
    sequence_labels : mapping, optional
        Sequence code -> label.
    sequence_order : sequence of str, optional

    Returns
    -------
    dict
        Figure name -> :class:`ReportFigure` (SVG path): ``consort_flow``,
        ``forest_<family>`` per multiplicity family, ``within_<hypothesis>`` for the
        confirmatory difference-in-differences hypotheses, ``diagnostics_<hypothesis>``
        per fitted model.
    """
    out: dict[str, ReportFigure] = {}

    def keep(name: str, fig: Any, title: str, caption: str) -> None:
        paths = P.save_figure(fig, directory, name, simulated=simulated)
        out[name] = ReportFigure(name, title, paths["svg"], caption)

    roster, periods, nights = study.roster, study.periods, study.nights
    flow = C.crossover_flow(roster, periods, nights, sequence_order=sequence_order)
    wash = (
        C.washout(periods, roster, sequence_order=sequence_order)
        if "infusion_datetime" in periods.columns
        else None
    )
    h = analysis.hypotheses
    primary = h[_primary_rows(h)]
    first = str(primary["hypothesis_id"].iloc[0]) if len(primary) else None
    analysed = (
        C.analysed_by_period(
            {first: analysis.fits[first].data},
            roster,
            exclusions=analysis.exclusions(),
            sequence_order=sequence_order,
        )
        if first is not None and first in analysis.fits
        else None
    )
    keep(
        "consort_flow",
        P.plot_consort_flow(flow, washout=wash, analysed=analysed, sequence_labels=sequence_labels),
        "CONSORT flow diagram of the crossover",
        "Participants by sequence and period: allocated, treated in each period (with the "
        "washout before it), lost with the reasons, nights recorded of planned, and the "
        f"participants analysed for the first hypothesis ({first}). Drawn from the data.",
    )
    for fam, rows in primary.groupby("multiplicity_family", sort=False):
        methods = ", ".join(dict.fromkeys(rows["adjust_method"].astype(str)))
        keep(
            f"forest_{fam}",
            P.plot_forest(rows, labels=labels, units=units),
            f"Forest plot: {fam} hypotheses",
            f"Estimates with their reported CI (thin) and the multiplicity-adjusted CI (thick; "
            f"the interval of the table's 'Adjusted CI' column, p adjustment {methods}); "
            "the printed numbers are the table's. Ratios on a log axis.",
        )
    d = nights
    for hyp in _first_hypotheses(analysis):
        c = hyp.contrast
        if (
            hyp.id in set(h.loc[h["role"].astype(str) == "confirmatory", "hypothesis_id"])
            and c.type == "difference_in_differences"
            and hyp.outcome_table == "nights"
            and hyp.outcome in d.columns
        ):
            at = c.time_levels[0]
            w = _within_differences(d, roster, hyp, at)
            if len(w):
                lab = (labels or {}).get(hyp.outcome, hyp.outcome)
                unit = (units or {}).get(hyp.outcome, "")
                keep(
                    f"within_{hyp.id}",
                    P.plot_within_differences(
                        w,
                        label=f"{lab}: change {c.time_reference} to {at}, "
                        f"{c.treatment_level} - {c.treatment_reference}"
                        + (f" ({unit})" if unit else ""),
                        sequence_order=sequence_order,
                        title=f"{hyp.id}: within-participant differences by sequence",
                    ),
                    f"{hyp.id}: within-participant differences",
                    "One point per participant with both periods; box: quartiles. The "
                    "difference between the sequences reflects the period effect.",
                )
    for hid, f in analysis.fits.items():
        if f.model is None:
            continue
        lab = (labels or {}).get(f.hypothesis.outcome, f.hypothesis.outcome)
        keep(
            f"diagnostics_{hid}",
            P.plot_diagnostics(f.model, f.data, title=f"{hid}: {lab}"),
            f"{hid}: model diagnostics",
            "Residuals (conditional on the random effects; Pearson residuals for counts) vs "
            "fitted values, normal QQ plots of the residuals and of the random effects.",
        )
    return out


def _display(name: str, title: str, data: pd.DataFrame, notes: str = "") -> ReportTable:
    return ReportTable(name, title, format_display(data), notes)


def _adjusted_cells(rows: pd.DataFrame) -> list[str]:
    adj = adjusted_intervals(rows).reset_index(drop=True)
    return [
        ""
        if pd.isna(lo) and pd.isna(hi)
        else f"[{format_number(float(lo))}, {format_number(float(hi))}]"
        for lo, hi in zip(adj["conf_low_adjusted"], adj["conf_high_adjusted"], strict=True)
    ]


def _beside_primary(primary: pd.DataFrame, sens: pd.DataFrame) -> pd.DataFrame:
    """The sensitivity rows, each hypothesis x contrast after its primary row.

    A sensitivity row belongs to the primary row of its hypothesis whose contrast label it
    starts with (a tipping-point row's label is the primary label plus the shift).
    """
    prim = primary.reset_index(drop=True)
    labels = [
        (str(h), str(c)) for h, c in zip(prim["hypothesis_id"], prim["contrast"], strict=True)
    ]

    def home(hid: object, contrast: object) -> int:
        found = [
            i for i, (h, c) in enumerate(labels) if h == str(hid) and str(contrast).startswith(c)
        ]
        return max(found, key=lambda i: len(labels[i][1])) if found else len(labels)

    key = [home(h, c) for h, c in zip(sens["hypothesis_id"], sens["contrast"], strict=True)]
    shown = sorted(set(key) - {len(labels)})
    rows = pd.concat(
        [prim.iloc[shown].assign(_key=shown, _primary=0), sens.assign(_key=key, _primary=1)],
        ignore_index=True,
    ).sort_values(["_key", "_primary"], kind="stable")
    cols = ["analysis", "hypothesis_id", "outcome", "contrast", "model", "estimate", "conf_low",
            "conf_high", "p_value", "p_adjusted", "verdict"]  # fmt: skip
    return rows[[c for c in cols if c in rows.columns]].reset_index(drop=True)


def _short_contrast(contrast: object) -> str:
    text = str(contrast)
    return text.split(", change from ")[-1] if ", change from " in text else text


def _results_table(
    rows: pd.DataFrame, name: str, title: str, notes: str, labels: Mapping[str, str]
) -> ReportTable:
    """The results beside the forest plot: the numbers the plot prints, same formatter."""
    full = format_hypothesis_table(rows).reset_index(drop=True)
    display = pd.DataFrame(
        {
            "Hypothesis": full["Hypothesis"],
            "Outcome": [labels.get(str(o), str(o)) for o in rows["outcome"]],
            "Contrast": [_short_contrast(c) for c in rows["contrast"]],
            "Estimate [CI]": full["Estimate [CI]"],
            "Adjusted CI": _adjusted_cells(rows),
            "Adjusted p": full["Adjusted p"],
            "Verdict": full["Verdict"],
        }
    )
    return ReportTable(name, title, display, notes)


def _full_results_table(rows: pd.DataFrame, name: str, title: str) -> ReportTable:
    display = format_hypothesis_table(rows).reset_index(drop=True)
    at = list(display.columns).index("Estimate [CI]") + 1 if "Estimate [CI]" in display else 0
    display.insert(at, "Adjusted CI", _adjusted_cells(rows))
    return ReportTable(name, title, display)


def _flow_display(flow: pd.DataFrame) -> pd.DataFrame:
    """The flow table with one column per sequence x period (counts), rows per step."""
    f = flow.assign(
        where=[
            f"{s}" if int(p) == 0 else f"{s}, period {int(p)}"
            for s, p in zip(flow["sequence"], flow["period"], strict=True)
        ]
    )
    cols = list(dict.fromkeys(f["where"]))
    wide = f.pivot_table(
        index=["step", "unit", "reason"], columns="where", values="n", aggfunc="sum", sort=False
    ).reindex(columns=cols)
    out = wide.reset_index()
    out.columns.name = None
    for c in cols:
        out[c] = out[c].map(lambda v: "" if pd.isna(v) else str(int(v)))
    treat = f[f["step"] == "received"].set_index("where")["treatment"]
    head = {"step": "treatment", "unit": "", "reason": ""} | {
        c: str(treat.get(c, "")) for c in cols
    }
    return pd.concat([pd.DataFrame([head]), out], ignore_index=True).rename(
        columns={"step": "Step", "unit": "Unit", "reason": "Reason"}
    )


def results_sections(
    *,
    analysis: Any,
    tables: Mapping[str, ReportTable],
    figures: Mapping[str, ReportFigure],
    protocol: Any = None,
    manifest: Mapping[str, object] | None = None,
    labels: Mapping[str, str] | None = None,
    flows: Mapping[str, pd.DataFrame] | None = None,
) -> list[Section]:
    """The report's sections, in paper order, from the run's tables and figures.

    Parameters
    ----------
    analysis : AnalysisResults
        Results (hypothesis table, fits for the model details).
    tables : mapping
        Table name -> :class:`ReportTable` (display form) of the run; known names are placed
        in their section (``consort_*``, ``table1_baseline``, ``descriptive_*``,
        ``validation_*``, ``exclusions``, ``emmeans``); the hypothesis tables are built here.
    figures : mapping
        Figure name -> :class:`ReportFigure`: those of :func:`draw_report_figures` and the
        run's others (``trajectories_*``, ``emmeans``, ``hypnograms``, ``sleepiness``).
    protocol : Protocol, optional
        For the amendment log (``protocol.amendments``: version, date, changes, rationale,
        the replaced version, its archived file and SHA-256) when it has one.
    manifest : mapping, optional
        Reproducibility summary (versions, command, seeds, git commit ...).
    labels : mapping, optional
        Outcome -> dictionary label, for the results tables.
    flows : mapping, optional
        ``{"consort_flow": <crossover_flow data>}``: shown as a sequence x period grid.

    Returns
    -------
    list of Section
        Sections with content, in the order of :data:`SECTION_IDS`.
    """
    h = analysis.hypotheses
    primary = h[_primary_rows(h)]
    sens = h[~_primary_rows(h)]
    used: set[str] = set()

    def t(name: str) -> list[ReportTable]:
        if name in tables:
            used.add(name)
            return [tables[name]]
        return []

    def f(name: str) -> list[ReportFigure]:
        return [figures[name]] if name in figures else []

    flow_data = flows.get("consort_flow") if flows else None
    used.add("consort_flow")
    sections: list[Section] = []
    sections.append(
        Section(
            "flow",
            "Study flow",
            "CONSORT extension for randomised crossover trials (Dwan et al., BMJ 2019): "
            "participants by sequence and period, the washout, and who was analysed.",
            tables=[
                *(
                    [
                        ReportTable(
                            "consort_flow",
                            tables["consort_flow"].title,
                            _flow_display(flow_data),
                            tables["consort_flow"].notes,
                        )
                    ]
                    if "consort_flow" in tables and flow_data is not None
                    else t("consort_flow")
                ),
                *t("consort_washout"),
            ],
            figures=f("consort_flow"),
            figures_first=True,
        )
    )
    sections.append(
        Section(
            "baseline",
            "Baseline characteristics",
            tables=[*t("table1_baseline"), *t("consort_baseline_by_period")],
        )
    )
    families = list(dict.fromkeys(primary["multiplicity_family"].astype(str)))
    dfm = ", ".join(dict.fromkeys(primary["df_method"].dropna().astype(str))) or "n/a"
    for fam in families:
        rows = primary[primary["multiplicity_family"].astype(str) == fam]
        methods = ", ".join(dict.fromkeys(rows["adjust_method"].astype(str)))
        role = str(rows["role"].iloc[0]) if "role" in rows else fam
        sid = "confirmatory" if role == "confirmatory" else "exploratory"
        if any(s.id == sid for s in sections):
            sid = f"{sid}-{fam}"
        notes = (
            f"Multiplicity family '{fam}': p-values adjusted by {methods}. Adjusted CI: the "
            "simultaneous interval of studykit.models.multiplicity.adjusted_intervals, drawn "
            f"in the forest plot. Degrees of freedom: {dfm}. Rate ratios for counts."
        )
        extra_figs: list[ReportFigure] = []
        extra_tables: list[ReportTable] = []
        if sid == "confirmatory":
            for o in dict.fromkeys(rows["outcome"].astype(str)):
                extra_figs += f(f"trajectories_{o}")
            for hid in dict.fromkeys(rows["hypothesis_id"].astype(str)):
                extra_figs += f(f"within_{hid}")
            extra_figs += f("emmeans")
            extra_tables += [*t("consort_cell_means"), *t("consort_within_differences")]
        sections.append(
            Section(
                sid,
                f"{role.capitalize()} results" if sid in ("confirmatory", "exploratory") else fam,
                "Hypothesis-generating: no verdict here is a confirmatory finding."
                if role != "confirmatory"
                else "",
                tables=[
                    _results_table(
                        rows,
                        f"hypotheses-{fam}",
                        f"{fam.capitalize()} hypotheses",
                        notes,
                        labels or {},
                    ),
                    _full_results_table(rows, f"hypotheses-{fam}-full", "All result columns"),
                    *extra_tables,
                ],
                figures=[*f(f"forest_{fam}"), *extra_figs],
                side_by_side=True,
            )
        )
    if len(sens):
        sections.append(
            Section(
                "sensitivity",
                "Sensitivity analyses",
                "Each hypothesis' primary result (analysis 'primary') followed by its results "
                "under the protocol's pre-specified sensitivity analyses (column 'analysis'; "
                "'model' says which analysis ran).",
                tables=[_display("hypotheses-sensitivity", "", _beside_primary(primary, sens))],
            )
        )
    subs = []
    for hid, fit in analysis.fits.items():
        hyp = fit.hypothesis
        parts: list[ReportTable] = []
        formula = pd.DataFrame(
            {
                "model": [model_formula(fit) if fit.model is not None else str(hyp.contrast.type)],
                "family": [getattr(hyp, "family", "")],
                "observations": [fit.counts.get("n_observations", "")],
                "participants": [fit.counts.get("n_participants", "")],
            }
        )
        parts.append(_display(f"model-{hid}", "Model", formula))
        if fit.model is not None:
            vc = _varcorr(fit.model)
            if vc is not None:
                parts.append(
                    _display(
                        f"varcorr-{hid}",
                        "Variance components",
                        vc,
                        "lme4's VarCorr: variance (vcov) and SD (sdcor) per grouping factor; "
                        "the residual last.",
                    )
                )
        if fit.coefficients is not None:
            parts.append(_display(f"coef-{hid}", "Fixed effects", fit.coefficients))
        if fit.warnings:
            parts.append(
                _display(f"warnings-{hid}", "Warnings", pd.DataFrame({"warning": fit.warnings}))
            )
        subs.append(
            Section(
                f"model-{hid}",
                f"{hid}: {hyp.outcome}",
                tables=parts,
                figures=f(f"diagnostics_{hid}"),
            )
        )
    sections.append(
        Section(
            "models",
            "Model details",
            "Per hypothesis: the model formula, variance components, fixed-effect coefficients "
            "and residual diagnostics.",
            subsections=subs,
        )
    )
    amendments = protocol.amendments if protocol is not None else ()
    if amendments:
        rows_a = [
            {
                "version": a.version,
                "date": a.date,
                "changes": " ".join(f"({i}) {c}" for i, c in enumerate(a.changes, 1)),
                "rationale": a.rationale,
                "replaces": f"version {a.replaces_version} ({a.replaces_file})",
                "replaced SHA-256": a.replaces_sha256,
            }
            for a in amendments
        ]
        sections.append(
            Section(
                "amendments",
                "Protocol amendments",
                f"Changes to the pre-registered protocol, as logged in the protocol file (now "
                f"version {protocol.version}); each replaced version is archived and its "
                "SHA-256 was checked when the protocol was loaded.",
                tables=[_display("amendments", "", pd.DataFrame(rows_a))],
            )
        )
    sections.append(
        Section(
            "descriptive",
            "Descriptive outcomes",
            tables=[*t("descriptive_nights"), *t("descriptive_diary"), *t("emmeans")],
            figures=[*f("sleepiness"), *f("hypnograms")],
        )
    )
    sections.append(
        Section(
            "data-quality",
            "Data quality",
            tables=[
                *t("validation_files"),
                *t("validation_summary"),
                *t("consort_analysed"),
                *t("exclusions"),
            ],
        )
    )
    rest = [tables[n] for n in tables if n not in used and not n.startswith("hypotheses")]
    definitions = h.drop_duplicates("hypothesis_id")
    cols = [
        c
        for c in ("hypothesis_id", "claim", "source", "estimand", "verdict_rule")
        if c in definitions.columns
    ]
    sections.append(
        Section(
            "reproducibility",
            "Reproducibility",
            "Re-run and compare every result table with 'studykit verify <results directory>'; "
            "manifest.json lists the SHA-256 of every input and output file.",
            tables=[
                *rest,
                _display("definitions", "Pre-registered definitions", definitions[cols]),
                *(
                    [
                        _display(
                            "manifest",
                            "Run",
                            pd.DataFrame(
                                {
                                    "item": list(manifest),
                                    "value": [_flatten(v) for v in manifest.values()],
                                }
                            ),
                        )
                    ]
                    if manifest
                    else []
                ),
            ],
        )
    )
    return [s for s in sections if s.tables or s.figures or s.subsections]
