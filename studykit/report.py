"""One self-contained HTML report: protocol, results, tables, figures, diagnostics, manifest.

The page needs nothing but itself: styles are inline, figures are embedded as base64 data
URIs (SVG, or PNG when no SVG is given), there is no script and no external link. When the
data are simulated a banner says so at the top of the page and in the title.

The HTML is rendered with jinja2 with autoescaping on; the tables arrive as display frames
(strings) and are escaped cell by cell.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from studykit.errors import InputError

__all__ = ["ReportTable", "ReportFigure", "render_report", "write_report"]

logger = logging.getLogger(__name__)


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


_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 0 auto; max-width: 1100px; padding: 0 1.2em 3em; color: #1d1d1f; }
h1 { font-size: 1.6em; margin-top: 0.8em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
.banner { background: #b00020; color: #fff; padding: 0.8em 1em; font-weight: 600;
          position: sticky; top: 0; z-index: 10; margin: 0 -1.2em; }
.meta { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.82em; margin: 0.6em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left;
         vertical-align: top; }
th { background: #f3f3f3; }
.table-wrap { overflow-x: auto; }
.notes { font-size: 0.82em; color: #444; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #444; }
dl.kv { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em;
        font-size: 0.85em; }
dl.kv dt { font-weight: 600; } dl.kv dd { margin: 0; word-break: break-all; }
nav ul { columns: 2; font-size: 0.9em; }
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
{% if simulated %}<div class="banner" id="simulated-banner" role="alert">
SIMULATED DATA: {{ simulated_note }}</div>{% endif %}
<h1>{{ title }}</h1>
<p class="meta">studykit {{ version }}{% if protocol.id %} &middot; protocol
<code>{{ protocol.id }}</code>{% endif %}{% if protocol.sha256 %} (SHA-256
<code>{{ protocol.sha256[:16] }}&hellip;</code>){% endif %}</p>
<nav><ul>
<li><a href="#protocol">Protocol</a></li>
{% for t in tables %}<li><a href="#sec-{{ t.name }}">{{ t.title }}</a></li>
{% endfor %}{% if figures %}<li><a href="#figures">Figures</a></li>{% endif %}
{% if diagnostics is not none %}<li><a href="#diagnostics">Diagnostics</a></li>{% endif %}
{% if definitions %}<li><a href="#definitions">Pre-registered definitions</a></li>{% endif %}
{% if manifest %}<li><a href="#manifest">Reproducibility</a></li>{% endif %}
</ul></nav>

<section id="protocol"><h2>Protocol</h2>
<dl class="kv">{% for k, v in protocol_items %}<dt>{{ k }}</dt><dd>{{ v }}</dd>
{% endfor %}</dl>
{% if protocol_table %}<div class="table-wrap">{{ protocol_table }}</div>{% endif %}
</section>

{% for t in tables %}<section id="sec-{{ t.name }}"><h2>{{ t.title }}</h2>
<div class="table-wrap">{{ t.html }}</div>
{% if t.notes %}<p class="notes">{{ t.notes }}</p>{% endif %}
</section>
{% endfor %}

{% if figures %}<section id="figures"><h2>Figures</h2>
{% for f in figures %}<figure id="fig-{{ f.name }}">
<img alt="{{ f.title }}" src="{{ f.src }}">
<figcaption><strong>{{ f.title }}.</strong> {{ f.caption }}</figcaption>
</figure>
{% endfor %}</section>{% endif %}

{% if diagnostics is not none %}<section id="diagnostics"><h2>Diagnostics</h2>
<div class="table-wrap">{{ diagnostics }}</div></section>{% endif %}

{% if definitions %}<section id="definitions"><h2>Pre-registered definitions</h2>
<p class="notes">Estimand, sources and verdict rule of each hypothesis, as fixed in the
protocol before the analysis.</p>
<div class="table-wrap">{{ definitions }}</div></section>{% endif %}

{% if manifest %}<section id="manifest"><h2>Reproducibility</h2>
<dl class="kv">{% for k, v in manifest %}<dt>{{ k }}</dt><dd>{{ v }}</dd>
{% endfor %}</dl>
<p class="notes">Re-run and compare every result table with <code>studykit verify
&lt;results directory&gt;</code>; <code>manifest.json</code> lists the SHA-256 of every input
and output file.</p></section>{% endif %}
</body>
</html>
"""

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
    protocol: Mapping[str, object],
    tables: Sequence[ReportTable] = (),
    figures: Sequence[ReportFigure] = (),
    protocol_table: pd.DataFrame | None = None,
    diagnostics: pd.DataFrame | None = None,
    definitions: pd.DataFrame | None = None,
    manifest: Mapping[str, object] | None = None,
    simulated: bool,
) -> str:
    """Render the report as one HTML string.

    Parameters
    ----------
    title : str
        Page title.
    protocol : mapping
        Protocol summary shown as key/value pairs; keys ``id`` and ``sha256`` also go in
        the header.
    tables : sequence of ReportTable
        Tables, in order (the hypothesis results first).
    figures : sequence of ReportFigure
        Figures, embedded as data URIs.
    protocol_table : pandas.DataFrame, optional
        One row per hypothesis as pre-registered (display strings).
    diagnostics : pandas.DataFrame, optional
        Model diagnostics (convergence, singular fits, warnings, validation issues).
    definitions : pandas.DataFrame, optional
        Full pre-registered definitions (estimand, sources, verdict rule), shown after the
        results.
    manifest : mapping, optional
        Reproducibility summary (versions, command, seeds, git commit ...).
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
    >>> page = render_report(title="Demo", protocol={"id": "demo"}, tables=[t], simulated=True)
    >>> 'id="simulated-banner"' in page, 'id="table-hypotheses"' in page
    (True, True)
    """
    from jinja2 import Environment
    from markupsafe import Markup

    from studykit import __version__

    env = Environment(autoescape=True, keep_trailing_newline=True)
    template = env.from_string(_TEMPLATE)
    tables_ctx = [
        {
            "name": t.name,
            "title": t.title,
            "notes": t.notes,
            "html": Markup(_table_html(t.display, t.name)),
        }
        for t in tables
    ]
    figures_ctx = [
        {"name": f.name, "title": f.title, "caption": f.caption, "src": _data_uri(Path(f.path))}
        for f in figures
    ]
    return template.render(
        version=__version__,
        title=title,
        css=Markup(_CSS),
        simulated=simulated,
        simulated_note=_SIMULATED_NOTE,
        protocol=dict(protocol),
        protocol_items=[(k, _flatten(v)) for k, v in protocol.items()],
        protocol_table=(
            Markup(_table_html(protocol_table, "protocol")) if protocol_table is not None else None
        ),
        tables=tables_ctx,
        figures=figures_ctx,
        diagnostics=(
            Markup(_table_html(diagnostics, "diagnostics")) if diagnostics is not None else None
        ),
        definitions=(
            Markup(_table_html(definitions, "definitions")) if definitions is not None else None
        ),
        manifest=[(k, _flatten(v)) for k, v in (manifest or {}).items()],
    )


def write_report(path: str | Path, **kwargs: object) -> Path:
    """Render the report (:func:`render_report` keywords) and write it to ``path``.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     p = write_report(Path(tmp) / "report.html", title="Demo", protocol={},
    ...                      simulated=False)
    ...     p.read_text().startswith("<!DOCTYPE html>")
    True
    """
    path = Path(path)
    page = render_report(**kwargs)  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(page)
    logger.debug("report written to %s (%.0f kB)", path, len(page) / 1024)
    return path
