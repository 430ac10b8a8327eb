"""The HTML report: self-contained, labelled when simulated, in paper order, and it renders in
headless Chromium (no console errors, every figure loaded, every section present; screenshots
at desktop and A4 widths and a printed PDF are kept as CI artefacts).

The rendering tests need Debian's ``chromium`` (installed by .ci/run). They are skipped only
when chromium is absent AND the environment variable CI is not set; under CI they fail
instead. Artefacts go to ``$STUDYKIT_CI_ARTIFACTS`` (default ``build/ci-artifacts/report``,
git-ignored).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from studykit.errors import InputError
from studykit.plotting import SIMULATED_LABEL, plot_emmeans, save_figure
from studykit.report import (
    SECTION_IDS,
    ReportFigure,
    ReportTable,
    Section,
    render_report,
    write_report,
)

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "protocols" / "ketamine_sleep.yaml"
ARTIFACTS = Path(os.environ.get("STUDYKIT_CI_ARTIFACTS", ROOT / "build" / "ci-artifacts")) / (
    "report"
)
#: CSS pixels of an A4 page width at 96 dpi (210 mm).
A4_WIDTH_PX = 794


def _results_display():
    return pd.DataFrame(
        {
            "Hypothesis": ["H1", "H2"],
            "Outcome": ["N3 minutes", "Number of awakenings"],
            "Estimate [CI]": ["8.00 [2.50, 13.50]", "0.85 (ratio) [0.72, 1.00]"],
            "Adjusted p": ["0.004 (holm)", "0.062 (holm)"],
            "Verdict": ["supported", "not supported"],
        }
    )


def _figures(tmp_path):
    e = pd.DataFrame(
        {
            "treatment": ["placebo", "ketamine"],
            "night": ["post1", "post1"],
            "estimate": [60.0, 68.0],
            "conf_low": [55.0, 63.0],
            "conf_high": [65.0, 73.0],
        }
    )
    paths = save_figure(plot_emmeans(e), tmp_path / "figures", "emmeans_h1", simulated=True)
    return [
        ReportFigure("emmeans-svg", "Marginal means (SVG)", paths["svg"], "Means and 95 % CIs."),
        ReportFigure("emmeans-png", "Marginal means (PNG)", paths["png"], "Same, as PNG."),
    ]


def _sections(tmp_path):
    results = ReportTable("hypotheses", "Hypothesis results", _results_display(), "Holm.")
    return [
        Section(
            "confirmatory",
            "Confirmatory results",
            tables=[results],
            figures=_figures(tmp_path),
            side_by_side=True,
        ),
        Section(
            "models",
            "Model details",
            subsections=[
                Section(
                    "model-H1",
                    "H1",
                    tables=[ReportTable("v", "Variance", pd.DataFrame({"a": ["<b>x</b>"]}))],
                )
            ],
        ),
    ]


def _report(tmp_path, *, simulated=True):
    return write_report(
        tmp_path / "report.html",
        title="Ketamine and sleep: results",
        protocol={"id": "ketamine_sleep", "sha256": "ab" * 32, "hypotheses": 2},
        sections=_sections(tmp_path),
        simulated=simulated,
    )


def test_report_is_self_contained(tmp_path):
    page = _report(tmp_path).read_text()
    assert "<script" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page)  # no external resource
    assert page.count("data:image/svg+xml;base64,") == 1
    assert page.count("data:image/png;base64,") == 1


def test_simulated_in_title_and_banner_only_when_simulated(tmp_path):
    sim = _report(tmp_path).read_text()
    assert "<title>[SIMULATED DATA]" in sim and 'id="simulated-banner"' in sim
    assert "<h1>[SIMULATED DATA]" in sim
    real = _report(tmp_path / "r", simulated=False).read_text()
    assert "SIMULATED" not in real.split("<main>")[1].split("<figure")[0]
    assert 'id="simulated-banner"' not in real and "[SIMULATED DATA]" not in real


def test_sidebar_links_every_section_and_subsection(tmp_path):
    page = _report(tmp_path).read_text()
    nav = page.split('<nav id="toc"', 1)[1].split("</nav>", 1)[0]
    for sid in ("confirmatory", "models", "model-H1"):
        assert f'href="#{sid}"' in nav
        assert f'<section id="{sid}">' in page
    assert "@media print" in page  # print stylesheet


def test_cells_are_escaped(tmp_path):
    page = _report(tmp_path).read_text()
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page


def test_unembeddable_figure_is_an_input_error(tmp_path):
    bad = tmp_path / "f.gif"
    bad.write_bytes(b"GIF89a")
    with pytest.raises(InputError, match="only .svg and .png"):
        render_report(
            title="x",
            sections=[Section("s", "S", figures=[ReportFigure("f", "F", bad)])],
            simulated=False,
        )


def test_identical_inputs_give_identical_report(tmp_path):
    a = _report(tmp_path / "a").read_bytes()
    b = _report(tmp_path / "b").read_bytes()
    assert a.replace(str(tmp_path / "a").encode(), b"") == b.replace(
        str(tmp_path / "b").encode(), b""
    )


# ------------------------------------------------------------------ the demo run


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from studykit.pipeline import run

    out = tmp_path_factory.mktemp("demo") / "out"
    return run(PROTOCOL, out=out, progress=False)


def test_every_exported_figure_says_simulated(demo):
    pngs = sorted((demo.out / "figures").glob("*.png"))
    svgs = sorted((demo.out / "figures").glob("*.svg"))
    assert len(pngs) == len(svgs) == len(demo.figures) >= 10
    for p in pngs:
        assert SIMULATED_LABEL.encode() in p.read_bytes(), p.name  # PNG text chunk
    for p in svgs:
        text = p.read_text()
        assert 'id="simulated-watermark' in text and SIMULATED_LABEL in text, p.name


def test_report_sections_in_paper_order(demo):
    page = demo.report.read_text()
    expected = [
        "flow",
        "baseline",
        "confirmatory",
        "exploratory",
        "models",
        "descriptive",
        "data-quality",
        "reproducibility",
    ]
    positions = [page.find(f'<section id="{sid}">') for sid in expected]
    assert all(p > 0 for p in positions), dict(zip(expected, positions, strict=True))
    assert positions == sorted(positions)
    assert [s for s in SECTION_IDS if s in expected] == expected
    # one model-details subsection per hypothesis
    h = pd.read_csv(demo.tables["hypotheses"], skiprows=1)  # line 1: the SIMULATED label
    for hid in h["hypothesis_id"].unique():
        assert f'<section id="model-{hid}">' in page


# ------------------------------------------------------------------ headless Chromium

_PROBE = """
<pre id="layout-probe"></pre>
<script>
window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push(String(e.message)); });
window.addEventListener("load", function () {
  function top(el) { return el.getBoundingClientRect().top + window.scrollY; }
  function box(el) { var r = el.getBoundingClientRect(); return [r.width, r.height]; }
  var out = {
    errors: window.__errors,
    sections: Array.from(document.querySelectorAll("main > section")).map(function (s) {
      return {id: s.id, top: top(s), height: box(s)[1]}; }),
    images: Array.from(document.querySelectorAll("figure")).map(function (f) {
      var img = f.querySelector("img");
      return {id: f.id, complete: img.complete, natural: [img.naturalWidth, img.naturalHeight],
              box: box(img), top: top(f)};
    }),
    tables: Array.from(document.querySelectorAll("table")).map(function (t) {
      return {id: t.id, rows: t.querySelectorAll("tbody tr").length}; }),
    nav: Array.from(document.querySelectorAll("nav#toc a")).map(function (a) {
      return a.getAttribute("href"); }),
    banner: (function () { var b = document.getElementById("simulated-banner");
                           return b ? box(b) : null; })(),
    width: document.documentElement.scrollWidth,
    height: document.documentElement.scrollHeight
  };
  document.getElementById("layout-probe").textContent = JSON.stringify(out);
});
</script>
"""

_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=15000",
]


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed but CI is set: the report must be rendered")
    pytest.skip("chromium not installed (apt-get install chromium); set CI=1 to require it")


def _run_chromium(args, profile):
    proc = subprocess.run(
        [_chromium(), *_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", *args],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _console_errors(stderr):
    """Page console errors and uncaught exceptions Chromium logged (not its own noise)."""
    return [
        line
        for line in stderr.splitlines()
        if ("CONSOLE" in line and ("error" in line.lower() or "Uncaught" in line))
        or "Uncaught" in line
        or "Failed to load resource" in line
    ]


def _probe(page_path, tmp_path, width):
    page = page_path.read_text()
    probe = tmp_path / f"probe-{width}.html"
    probe.write_text(page.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    proc = _run_chromium(
        [f"--window-size={width},2000", "--dump-dom", probe.as_uri()], tmp_path / f"p{width}"
    )
    m = re.search(r'<pre id="layout-probe">(.*?)</pre>', proc.stdout, re.S)
    assert m and m.group(1), "the layout probe did not run:\n" + proc.stdout[-2000:]
    return json.loads(html.unescape(m.group(1))), _console_errors(proc.stderr)


def _screenshot(page_path, tmp_path, width, height, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    out = ARTIFACTS / name
    _run_chromium(
        [f"--window-size={width},{height}", f"--screenshot={out}", page_path.as_uri()],
        tmp_path / f"s{width}",
    )
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, name
    return out


def test_report_renders_in_headless_chromium(tmp_path):
    layout, errors = _probe(_report(tmp_path), tmp_path, 1366)
    assert not errors and not layout["errors"], errors + layout["errors"]
    assert [s["id"] for s in layout["sections"]] == ["confirmatory", "models"]
    assert len(layout["images"]) == 2
    for img in layout["images"]:
        assert img["complete"] and img["natural"][0] > 100 and img["box"][0] > 100, img
    assert layout["banner"] is not None and layout["banner"][1] > 10


@pytest.mark.parametrize("width", [1366, A4_WIDTH_PX])
def test_demo_report_in_chromium(demo, tmp_path, width):
    layout, errors = _probe(demo.report, tmp_path, width)
    assert not errors and not layout["errors"], errors + layout["errors"]
    ids = [s["id"] for s in layout["sections"]]
    for sid in ("flow", "baseline", "confirmatory", "exploratory", "models", "reproducibility"):
        assert sid in ids
    assert sorted(layout["nav"]) == sorted(
        {f"#{sid}" for sid in ids} | {h for h in layout["nav"] if h.startswith("#model-")}
    )
    # every figure decoded and laid out with a visible size
    assert len(layout["images"]) == len(demo.figures)
    for img in layout["images"]:
        assert img["complete"] and min(img["natural"]) > 100 and min(img["box"]) > 50, img
    # no horizontal overflow of the page
    assert layout["width"] <= width + 1
    # figures early: the flow diagram and the confirmatory forest plot are not after ~7,500 px
    tops = {img["id"]: img["top"] for img in layout["images"]}
    if width > 1000:
        assert tops["fig-consort_flow"] < 2000
        assert tops["fig-forest_confirmatory"] < 7500
    assert layout["banner"] is not None
    _screenshot(
        demo.report,
        tmp_path,
        width,
        min(int(layout["height"]), 16000),
        f"report-{'desktop' if width > 1000 else 'a4'}-{width}px.png",
    )


def test_demo_report_prints_to_a4_pdf(demo, tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pdf = ARTIFACTS / "report-print-a4.pdf"
    _run_chromium(
        ["--no-pdf-header-footer", f"--print-to-pdf={pdf}", demo.report.as_uri()], tmp_path / "pdf"
    )
    data = pdf.read_bytes()
    assert data[:5] == b"%PDF-"
    # A4 pages (595.3 x 841.9 pt) from the print stylesheet's @page rule
    boxes = re.findall(rb"/MediaBox \[0 0 ([0-9.]+) ([0-9.]+)\]", data)
    assert boxes
    assert all(abs(float(w) - 595.3) < 1 and abs(float(h) - 841.9) < 1 for w, h in boxes)


def _checklist():
    """Rows of the reviewer's checklist table in docs/outputs.md."""
    text = (ROOT / "docs" / "outputs.md").read_text()
    block = text.split("## Reviewer's checklist", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in block.splitlines() if line.startswith("| ") and "---" not in line]
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows[1:]]


def test_checklist_items_are_in_the_report(demo):
    """Every element the docs' CONSORT crossover checklist points to is in the demo report,
    and every test it names exists."""
    page = demo.report.read_text()
    rows = _checklist()
    assert len(rows) >= 10
    for item, _what, _where, ids, tests in rows:
        for element in re.findall(r"`([^`]+)`", ids):
            assert f'id="{element}"' in page, (item, element)
        current = None
        for ref in re.findall(r"`([^`]+)`", tests):
            path, _, name = ref.rpartition("::")
            if not path and name.endswith(".py"):  # a module named alone
                path, name = name, ""
            if path:
                folder = "tests" if path.startswith("test_") else "studykit"
                current = ROOT / folder / path
                assert current.is_file(), (item, ref)
            if name:
                assert current is not None, (item, ref)
                assert f"def {name}(" in current.read_text(), (item, ref)


def test_sensitivity_rows_and_amendment_log_get_their_sections(demo):
    """Rows whose `analysis` column names a sensitivity analysis, and a protocol amendment
    log, each get a section (shown only when present)."""
    import dataclasses

    from studykit.protocol import load_protocol
    from studykit.report import results_sections

    a = demo.analysis
    h = a.hypotheses
    assert "sensitivity" not in [s.id for s in results_sections(analysis=a, tables={}, figures={})]
    primary = h.assign(analysis="primary")
    sens = h.head(2).assign(
        analysis="per_protocol (sensitivity)", estimate=h["estimate"].head(2) + 1
    )
    with_sens = dataclasses.replace(a, hypotheses=pd.concat([primary, sens], ignore_index=True))
    # a protocol with an amendment log (fixture: two amendments, archived versions beside it)
    amended = load_protocol(ROOT / "tests/data/protocols/amendments/trial_v1.2.yaml")
    sections = results_sections(analysis=with_sens, tables={}, figures={}, protocol=amended)
    by_id = {s.id: s for s in sections}
    shown = by_id["sensitivity"].tables[0].display
    assert len(shown) == 2 and set(shown["analysis"]) == {"per_protocol (sensitivity)"}
    # the primary results tables keep only the primary rows
    n_conf = int((h["multiplicity_family"] == "confirmatory").sum())
    assert len(by_id["confirmatory"].tables[0].display) == n_conf
    amend = by_id["amendments"].tables[0].display
    a11, a12 = amended.amendments
    assert amend["version"].tolist() == ["1.1", "1.2"]
    assert amend["date"].tolist() == ["2026-02-01", "2026-03-01"]
    assert amend["changes"].tolist() == [f"(1) {a11.changes[0]}", f"(1) {a12.changes[0]}"]
    assert amend["rationale"].tolist() == [a11.rationale, a12.rationale]
    assert amend["replaces"].tolist() == [
        "version 1.0 (archive/trial_v1.0.yaml)",
        "version 1.1 (archive/trial_v1.1.yaml)",
    ]
    assert amend["replaced SHA-256"].tolist() == [a11.replaces_sha256, a12.replaces_sha256]
    assert "now version 1.2" in by_id["amendments"].intro
    page = render_report(title="t", sections=sections, simulated=True)
    assert '<section id="sensitivity">' in page and '<section id="amendments">' in page
