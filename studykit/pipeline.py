"""``studykit run``: protocol + data -> tables, figures, report and manifest, stage by stage.

Stages, in order (each prints its wall time)::

    simulate   (only without --data) the demo study, written to OUT/data/
    protocol   load the pre-registered hypotheses (checked against the dictionary)
    validate   read and check every data file against the data dictionary
    derive     per-night sleep statistics from the hypnograms (AASM definitions)
    fit        fit every hypothesis' model; multiplicity; verdicts
    tables     CSV / Markdown / HTML / LaTeX tables under OUT/tables/
    figures    PNG + SVG figures under OUT/figures/
    report     OUT/report.html, self-contained
    manifest   OUT/manifest.json: hashes, versions, seeds, command

A user error in any stage stops the run with a message naming the stage, the file involved
and what to do (the CLI prints it and exits with code 2).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from studykit import plotting as P
from studykit import tables as T
from studykit.analysis import AnalysisResults, run_analysis
from studykit.dictionary import load_dictionary
from studykit.errors import InputError, StudykitError, ValidationError
from studykit.manifest import (
    DIGEST_NAME,
    MANIFEST_NAME,
    build_manifest,
    environment,
    git_commit,
    write_manifest,
)
from studykit.models.multiplicity import adjusted_intervals
from studykit.outdir import USER_FIXABLE_ERRNOS, StagedOutput, os_error_message
from studykit.privacy import Identifiers, identifier_columns, mask_identifiers, study_identifiers
from studykit.protocol import Protocol, load_protocol
from studykit.report import (
    ReportFigure,
    ReportTable,
    consort_tables,
    draw_report_figures,
    results_sections,
    write_report,
)
from studykit.simulate import simulate_study, write_study
from studykit.validate import Study, load_study, readme_says_simulated

__all__ = ["STAGES", "DEFAULT_SEED", "RunResult", "run"]

logger = logging.getLogger(__name__)

STAGES: tuple[str, ...] = (
    "simulate",
    "protocol",
    "validate",
    "derive",
    "fit",
    "tables",
    "figures",
    "report",
    "manifest",
)
#: Seed of the demo study (the default of ``studykit.simulate.simulate_study``).
DEFAULT_SEED = 20261125

#: Nightly outcomes always described (when present), besides the protocol's outcomes.
CORE_NIGHT_OUTCOMES = (
    "tst_min",
    "se_pct",
    "sol_min",
    "waso_min",
    "n3_min",
    "rem_min",
    "lat_rem_min",
    "n_awakenings",
)
DIARY_OUTCOMES = ("kss", "dream_vividness", "nightmares")
_KEYS = ["participant_id", "period", "night"]
#: What a run writes into OUT (replaced by the next run; anything else in OUT is kept).
_OWNED = ("tables", "figures", "report.html", MANIFEST_NAME, DIGEST_NAME, "protocol")

_HINTS = {
    "simulate": "this is the built-in demo study; re-run with --debug and report the bug",
    "protocol": "fix the protocol file as the message says (see protocols/*.yaml for examples)",
    "validate": "fix the listed files/rows of the data directory (every issue names file, row "
    "and column)",
    "derive": "fix the hypnogram file named in the message (stages, epoch numbering)",
    "fit": "check the outcome/terms of the hypothesis named in the message against the data",
    "tables": "check the output directory is writable",
    "figures": "check the output directory is writable",
    "report": "check the output directory is writable",
    "manifest": "check the output directory is writable",
}


@dataclass
class RunResult:
    """What :func:`run` produced.

    Attributes
    ----------
    out : Path
        Results directory.
    tables : dict
        Table name -> CSV path.
    figures : dict
        Figure name -> SVG path.
    report : Path
        The HTML report.
    manifest : Path
        ``manifest.json``.
    timings : dict
        Stage -> wall seconds.
    cpu_timings : dict
        Stage -> CPU seconds of this process (less sensitive to a busy machine).
    simulated : bool
        Whether the data were simulated.
    analysis : AnalysisResults or None
        The results of the fit stage.
    """

    out: Path
    tables: dict[str, Path] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    report: Path | None = None
    manifest: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    cpu_timings: dict[str, float] = field(default_factory=dict)
    simulated: bool = False
    analysis: AnalysisResults | None = None


# --------------------------------------------------------------------------------------
# dictionary metadata (labels, units, code labels) for display
# --------------------------------------------------------------------------------------


def _dictionary_path() -> Path:
    """The packaged data dictionary (the one ``load_dictionary()`` reads)."""
    return Path(str(resources.files("studykit") / "data" / "data_dictionary.csv"))


class _Meta:
    """Display metadata of the data dictionary: labels, units, roles, code order and labels."""

    def __init__(self) -> None:
        d = load_dictionary()
        rows = [
            (table, v.name, v.label or v.name, v.unit or "", v.role, v.code_labels)
            for table in d.tables
            for v in d.variables(table)
        ]
        self._by = {(t, n): (lab, unit, role, codes) for t, n, lab, unit, role, codes in rows}
        self._order = rows

    def label(self, table: str, name: str) -> str:
        return self._by.get((table, name), (name,))[0]

    def unit(self, table: str, name: str) -> str:
        r = self._by.get((table, name))
        return "" if r is None else r[1]

    def levels(self, table: str, name: str) -> list[str]:
        r = self._by.get((table, name))
        return [] if r is None else list(r[3])

    def code_labels(self, table: str, name: str) -> dict[str, str]:
        r = self._by.get((table, name))
        return {} if r is None else dict(r[3])

    def names(self, table: str, role: str | None = None) -> list[str]:
        return [n for t, n, _, _, r, _ in self._order if t == table and role in (None, r)]

    def axis_label(self, table: str, name: str) -> str:
        unit = self.unit(table, name)
        return f"{self.label(table, name)} ({unit})" if unit else self.label(table, name)


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _out_as_given(command: Sequence[str], out: Path) -> str:
    """OUT as the command gives it (so that a re-run elsewhere writes the same report)."""
    cmd = list(command)
    for flag in ("--out", "-o"):
        if flag in cmd[:-1]:
            return cmd[cmd.index(flag) + 1]
    return str(out)


def _relative_files(frame: pd.DataFrame | None, root: Path) -> pd.DataFrame | None:
    """Paths in a ``file`` column made relative to the data directory (stable across runs)."""
    if frame is None or "file" not in frame.columns:
        return frame
    base = root.resolve()

    def rel(v: object) -> object:
        if not isinstance(v, str) or not v:
            return v
        p = Path(v)
        try:
            return (p if p.is_absolute() else p.resolve()).relative_to(base).as_posix()
        except ValueError:
            return v

    return frame.assign(file=frame["file"].map(rel))


def _stage_error(stage: str, exc: StudykitError, where: str) -> StudykitError:
    msg = f"stage '{stage}' failed ({where}): {exc} [what to do: {_HINTS[stage]}]"
    exc.args = (msg, *exc.args[1:])
    return exc


# --------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------


def run(
    protocol: str | Path,
    *,
    data: str | Path | None = None,
    out: str | Path = "results",
    seed: int | None = None,
    command: Sequence[str] | None = None,
    progress: bool | Callable[[str], object] = True,
    allow_errors: bool = False,
    outcomes: str = "hypnograms",
) -> RunResult:
    """Run the whole analysis: validate -> derive -> fit -> tables -> figures -> report -> manifest.

    Parameters
    ----------
    protocol : str or Path
        Protocol YAML (``protocols/ketamine_sleep.yaml``).
    data : str or Path, optional
        Study directory (layout in docs/ARCHITECTURE.md). Default: simulate the demo study
        into ``OUT/data/`` and analyse that (results labelled simulated).
    out : str or Path, default "results"
        Results directory. Files a previous run wrote there are replaced; a non-empty
        directory without studykit results is refused.
    seed : int, optional
        Seed of the simulation (default :data:`DEFAULT_SEED`); recorded in the manifest.
    command : sequence of str, optional
        The command line to record (default: rebuilt from the arguments).
    progress : bool or callable, default True
        Print one line per stage with its time (``True``: to stdout; a callable receives
        each line).
    allow_errors : bool, default False
        Analyse the accepted rows even when validation found errors (rows with errors are
        left out). Recorded in the manifest (``arguments.allow_errors``) and shown in the
        report. Without it, a validation error stops the run.
    outcomes : {"hypnograms", "typed"}
        Source of the per-night outcomes analysed (see :func:`studykit.validate.load_study`,
        which recomputes them and reports every typed value that differs).

    Returns
    -------
    RunResult

    Raises
    ------
    StudykitError
        A user error in any stage; the message names the stage, the file and the fix.
    """
    t_start = time.perf_counter()
    say: Callable[[str], object]
    if progress is True:

        def say(line: str) -> None:
            print(line, flush=True)

    elif callable(progress):
        say = progress
    else:

        def say(line: str) -> None:
            logger.debug(line)

    protocol = Path(protocol)
    out = Path(out)
    simulate = data is None
    if data is not None and not Path(data).is_dir():
        raise InputError(
            f"--data {str(data)!r} is not a directory. Give a study directory holding "
            "roster.csv, periods.csv, nights.csv, diary.csv and hypnograms/ (or omit --data to "
            "run the simulated demo study)."
        )
    if not protocol.is_file():
        raise InputError(
            f"Protocol file {str(protocol)!r} not found. Give a protocol YAML, e.g. "
            "protocols/ketamine_sleep.yaml."
        )
    seed = DEFAULT_SEED if seed is None else int(seed)
    stages = [s for s in STAGES if simulate or s != "simulate"]
    arguments = {
        "protocol": str(protocol.resolve()),
        "data": None if data is None else str(Path(data).resolve()),
        "out": str(out.resolve()),
        "seed": seed,
        "allow_errors": bool(allow_errors),
        "outcomes": outcomes,
    }
    if command is None:
        command = ["studykit", "run", str(protocol), "--out", str(out), "--seed", str(seed)]
        if data is not None:
            command[3:3] = ["--data", str(data)]
        if allow_errors:
            command.append("--allow-errors")
        if outcomes != "hypnograms":
            command += ["--outcomes", outcomes]
    owned = [*_OWNED, "data"] if simulate else list(_OWNED)
    with StagedOutput(out, owned=owned) as staged:
        work = staged.path
        data_dir = work / "data" if data is None else Path(data)
        # simulated data are always labelled: generated here, or a folder whose README says so
        simulated = simulate or readme_says_simulated(data_dir)
        result = RunResult(out=out, simulated=simulated)
        _run_stages(
            result,
            protocol=protocol,
            data_dir=data_dir,
            shown_data_dir=out / "data" if simulate else data_dir,
            work=work,
            out=out,
            seed=seed,
            simulate=simulate,
            simulated=simulated,
            allow_errors=allow_errors,
            outcomes=outcomes,
            stages=stages,
            command=list(command),
            arguments=arguments,
            say=say,
        )
        staged.commit()
    result.tables = {k: out / v.relative_to(work) for k, v in result.tables.items()}
    result.figures = {k: out / v.relative_to(work) for k, v in result.figures.items()}
    result.report = out / "report.html"
    result.manifest = out / MANIFEST_NAME
    say(f"done in {time.perf_counter() - t_start:.2f} s: {out / 'report.html'}")
    if result.simulated:
        say("NOTE: the data are SIMULATED (demo study); the results are not evidence.")
    return result


def _run_stages(
    result: RunResult,
    *,
    protocol: Path,
    data_dir: Path,
    shown_data_dir: Path,
    work: Path,
    out: Path,
    seed: int,
    simulate: bool,
    simulated: bool,
    allow_errors: bool,
    outcomes: str,
    stages: list[str],
    command: list[str],
    arguments: dict[str, Any],
    say: Callable[[str], object],
) -> None:
    """The stages of :func:`run`, writing into ``work`` (moved to ``out`` on success)."""
    state: dict[str, Any] = {"simulated": simulated}
    meta = _Meta()

    def do(stage: str, where: str, fn: Callable[[], str | None]) -> None:
        i = stages.index(stage) + 1
        t0 = time.perf_counter()
        c0 = time.process_time()

        def failed() -> None:
            say(f"[{i}/{len(stages)}] {stage:<9} FAILED after {time.perf_counter() - t0:.2f} s")

        try:
            detail = fn()
        except StudykitError as exc:
            failed()
            raise _stage_error(stage, exc, where) from exc
        except OSError as exc:
            failed()
            if exc.errno not in USER_FIXABLE_ERRNOS:
                exc.add_note(f"studykit run: in stage '{stage}' ({where})")
                raise
            if exc.filename:  # name the file where it will be, not in the staging folder
                name = str(exc.filename)
                exc.filename = name.replace(str(work), str(out), 1)
            raise _stage_error(
                stage, InputError(os_error_message(exc, f"results folder {out}")), where
            ) from exc
        except BaseException as exc:
            failed()
            exc.add_note(f"studykit run: in stage '{stage}' ({where})")
            raise
        dt = time.perf_counter() - t0
        result.timings[stage] = dt
        result.cpu_timings[stage] = time.process_time() - c0
        say(f"[{i}/{len(stages)}] {stage:<9} {dt:6.2f} s" + (f"  {detail}" if detail else ""))

    # ---------------------------------------------------------------- simulate
    if simulate:

        def _simulate() -> str:
            study = simulate_study(seed=seed)
            write_study(study, data_dir)
            return f"SIMULATED demo study (seed {seed}) -> {shown_data_dir}"

        do("simulate", f"seed {seed}", _simulate)

    # ---------------------------------------------------------------- protocol
    def _protocol() -> str:
        proto = load_protocol(protocol)
        state["protocol"] = proto
        (work / "protocol").mkdir(exist_ok=True)
        shutil.copyfile(protocol, work / "protocol" / protocol.name)
        # the archived versions its amendment log names (hash-checked on loading), so that the
        # copy stored with the results loads too
        for a in proto.amendments:
            rel = Path(a.replaces_file)
            src = protocol.parent / rel
            if not rel.is_absolute() and ".." not in rel.parts and src.is_file():
                (work / "protocol" / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, work / "protocol" / rel)
        amended = f", version {proto.version}" if proto.amendments else ""
        return f"{proto.id}{amended}: {len(proto.hypotheses)} hypotheses"

    do("protocol", f"file {protocol}", _protocol)

    # ---------------------------------------------------------------- validate
    def _validate() -> str:
        state["identifiers"] = study_identifiers(data_dir)
        study = load_study(data_dir, outcomes=outcomes)
        state["study"] = study
        state["issues"] = _relative_files(study.issues, data_dir)
        state["files_summary"] = _relative_files(study.summary, data_dir)
        issues = study.issues
        n_err = int((issues["severity"].astype(str).str.lower() == "error").sum())
        state["n_errors"] = n_err
        if n_err and not allow_errors:
            raise ValidationError(
                f"{n_err} validation error(s) in the data of {shown_data_dir}; rows with errors "
                "would be left out of the analysis. Fix the listed rows, or re-run with "
                "--allow-errors to analyse the accepted rows only (recorded in the manifest "
                "and the report).",
                study.issues,
            )
        return f"{len(study.roster)} participants; {len(issues)} issues ({n_err} errors)"

    try:
        do("validate", f"data directory {shown_data_dir}", _validate)
    except ValidationError as exc:
        issues = exc.issues
        if isinstance(issues, pd.DataFrame) and len(issues):
            # the results folder is left as it was: the issue table goes beside it
            path = out.parent / f"{out.name}.validation_issues.csv"
            tmp = T.write_table(
                _relative_files(issues, data_dir),
                work,
                "validation_issues",
                formats=["csv"],
                identifiers=state.get("identifiers") or study_identifiers(data_dir),
                simulated=simulated,
            )["csv"]
            os.replace(tmp, path)
            exc.args = (f"{exc.args[0]} The full issue table is in {path}.", *exc.args[1:])
        raise

    # ---------------------------------------------------------------- derive
    def _derive() -> str:
        # load_study recomputed the outcomes (one truth for fit, run and the API); this stage
        # only says which source is analysed
        study: Study = state["study"]
        epochs = study.epochs
        if study.outcomes != "hypnograms" or epochs is None or epochs.empty:
            return "outcomes taken from nights.csv as typed"
        n_diff = int((study.issues["rule"] == "derived_mismatch").sum())
        n_nights = len(epochs[list(_KEYS)].drop_duplicates())
        return (
            f"{n_nights} nights from {len(epochs)} epochs (recomputed from the hypnograms; "
            f"{n_diff} typed value(s) differ)"
        )

    do("derive", f"hypnograms under {shown_data_dir / 'hypnograms'}", _derive)

    # ---------------------------------------------------------------- fit
    def _fit() -> str:
        analysis = run_analysis(state["protocol"], state["study"], simulated=simulated)
        result.analysis = analysis
        state["analysis_obj"] = analysis
        h = analysis.hypotheses
        state["hypotheses"] = h
        return f"{len(h)} hypothesis x contrast rows"

    do("fit", f"protocol {protocol}", _fit)

    # ---------------------------------------------------------------- tables
    def _tables() -> str:
        tables, displays = _build_tables(state, meta)
        idents: Identifiers = state["identifiers"]
        state["displays"] = displays
        for name, spec in tables.items():
            paths = write_table_spec(
                spec, work / "tables", name, identifiers=idents, simulated=simulated
            )
            result.tables[name] = paths["csv"]
        return f"{len(tables)} tables -> {out / 'tables'}"

    do("tables", f"folder {out / 'tables'}", _tables)

    # ---------------------------------------------------------------- figures
    def _figures() -> str:
        figs = _build_figures(state, meta, work / "figures")
        state["figures"] = figs
        result.figures.update({k: v["svg"] for k, v in figs.items()})
        return f"{len(figs)} figures (PNG + SVG) -> {out / 'figures'}"

    do("figures", f"folder {out / 'figures'}", _figures)

    # ---------------------------------------------------------------- report
    def _report() -> str:
        env = environment()
        summary = {
            "command": " ".join(command),
            "simulated": (
                "yes (demo study generated by this run)"
                if simulate
                else "yes (README.md of the data says SIMULATED)"
                if simulated
                else "no"
            ),
            "seed": seed,
            "python": f"{env['python']} ({env['platform']})",
            "packages": ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v),
            "git commit (studykit)": (git_commit() or {}).get("commit", "not a git checkout"),
            "git commit (protocol)": (git_commit(protocol.resolve().parent) or {}).get(
                "commit", "not in a git repository"
            ),
            "validation errors": (
                f"{state['n_errors']} (analysed anyway: --allow-errors; rows with errors left out)"
                if state["n_errors"]
                else "none"
            ),
            "verify": f"studykit verify {_out_as_given(command, out)}",
        }
        path = _write_report(state, meta, work, simulated=simulated, manifest_summary=summary)
        return f"{out / 'report.html'} ({path.stat().st_size / 1024:.0f} kB)"

    do("report", f"file {out / 'report.html'}", _report)

    # ---------------------------------------------------------------- manifest
    def _manifest() -> str:
        proto: Protocol = state["protocol"]
        m = build_manifest(
            out_dir=work,
            command=command,
            arguments=arguments,
            protocol_path=protocol,
            protocol_id=proto.id,
            protocol_version=proto.version,
            protocol_copy=f"protocol/{protocol.name}",
            dictionary_path=_dictionary_path(),
            data_dir=data_dir,
            simulated=simulated,
            seeds={"simulate": seed if simulate else None},
            timings=result.timings,
        )
        m["inputs"]["data_dir"] = str(shown_data_dir.resolve())
        write_manifest(m, work)
        return f"{len(m['outputs'])} outputs, {len(m['inputs']['files'])} inputs hashed"

    do("manifest", f"file {out / MANIFEST_NAME}", _manifest)


# --------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------


@dataclass
class _TableSpec:
    data: pd.DataFrame
    title: str
    display: pd.DataFrame | None = None
    notes: str = ""
    formats: tuple[str, ...] = ("csv", "md", "html", "tex")
    in_report: bool = True


def write_table_spec(
    spec: _TableSpec,
    directory: Path,
    name: str,
    *,
    identifiers: Identifiers,
    simulated: bool,
) -> dict[str, Path]:
    """Write one table of a run (every format, identifiers masked, simulated labelled)."""
    return T.write_table(
        spec.data,
        directory,
        name,
        formats=spec.formats,
        display=spec.display,
        title=spec.title,
        notes=spec.notes or None,
        identifiers=identifiers,
        simulated=simulated,
    )


def _treatment_of_period(study: Study) -> pd.DataFrame | None:
    periods = study.periods
    if not {"participant_id", "period", "treatment"} <= set(periods.columns):
        return None
    return periods[["participant_id", "period", "treatment"]].drop_duplicates()


def _diary_with_treatment(study: Study) -> pd.DataFrame | None:
    diary = study.diary
    tp = _treatment_of_period(study)
    if diary is None or tp is None or diary.empty:
        return None
    if "treatment" in diary.columns:
        return diary
    return diary.merge(tp, on=["participant_id", "period"], how="left")


def _build_tables(
    state: Mapping[str, Any], meta: _Meta
) -> tuple[dict[str, _TableSpec], dict[str, _TableSpec]]:
    study: Study = state["study"]
    analysis: AnalysisResults = state["analysis_obj"]
    h = T.hypothesis_table(state["hypotheses"])
    specs: dict[str, _TableSpec] = {}
    methods = sorted({str(m) for m in h["adjust_method"].dropna().unique()})
    dfm = sorted({str(m) for m in h["df_method"].dropna().unique()})
    specs["hypotheses"] = _TableSpec(
        h,
        "Hypothesis results (one row per hypothesis and contrast)",
        display=T.format_hypothesis_table(h),
        notes=(
            f"Pre-registered in protocol {h['protocol_id'].iloc[0] if len(h) else ''}. "
            f"Degrees of freedom: {', '.join(dfm) or 'n/a'}. Multiplicity adjustment: "
            f"{', '.join(methods) or 'none'} (within each multiplicity family). Counts: "
            "estimates and CIs are rate ratios, tested on the log scale."
        ),
    )
    adj = adjusted_intervals(h)
    specs["hypotheses_adjusted_ci"] = _TableSpec(
        adj,
        "Multiplicity-adjusted confidence intervals (forest plot)",
        notes="Bonferroni-type simultaneous intervals within each multiplicity family for "
        "Holm/Hochberg/Bonferroni-adjusted rows; unadjusted otherwise.",
        in_report=False,
    )
    roster = study.roster
    if "sequence" in roster.columns:
        ids = identifier_columns()
        variables = [
            v
            for v in meta.names("roster", role="covariate")
            if v in roster.columns and v not in ids
        ]
        t1 = T.baseline_characteristics(
            roster,
            variables=variables,
            group="sequence",
            group_order=meta.levels("roster", "sequence"),
            labels={v: meta.label("roster", v) for v in variables},
            units={v: meta.unit("roster", v) for v in variables},
            levels={v: meta.levels("roster", v) for v in variables if meta.levels("roster", v)},
        )
        specs["table1_baseline"] = _TableSpec(
            t1,
            "Table 1. Baseline characteristics by randomized sequence",
            display=T.format_baseline_table(
                t1, group_labels=meta.code_labels("roster", "sequence")
            ),
            notes="Mean (SD), median [Q1, Q3] or n (%). No p-values (CONSORT 2010, item 15).",
        )
    if "sequence" in roster.columns:
        for name, (title, data, notes) in consort_tables(
            study, analysis, sequence_order=meta.levels("roster", "sequence")
        ).items():
            specs[name] = _TableSpec(data, title, notes=notes)
    nights = study.nights
    if {"treatment", "night"} <= set(nights.columns):
        proto_outcomes = [o for o in dict.fromkeys(h["outcome"].dropna()) if o in nights.columns]
        outcomes = list(
            dict.fromkeys([*proto_outcomes, *(o for o in CORE_NIGHT_OUTCOMES if o in nights)])
        )
        if outcomes:
            d = T.descriptive_outcomes(
                nights,
                outcomes=outcomes,
                arm="treatment",
                time="night",
                arm_order=meta.levels("nights", "treatment"),
                time_order=meta.levels("nights", "night"),
                labels={o: meta.axis_label("nights", o) for o in outcomes},
            )
            specs["descriptive_nights"] = _TableSpec(
                d,
                "Nightly outcomes per treatment and night (observed)",
                display=T.format_descriptive_table(d),
                notes="Observed values, pooled over periods; n = non-missing nights. "
                "Quartiles: linear interpolation (R type 7).",
            )
        specs["analysis_nights"] = _TableSpec(
            nights.sort_values([k for k in _KEYS if k in nights], kind="mergesort"),
            "Analysis data set: one row per participant, period and night",
            formats=("csv",),
            in_report=False,
        )
    diary = _diary_with_treatment(study)
    if diary is not None and {"treatment", "day"} <= set(diary.columns):
        outs = [o for o in DIARY_OUTCOMES if o in diary.columns]
        if outs:
            d = T.descriptive_outcomes(
                diary,
                outcomes=outs,
                arm="treatment",
                time="day",
                arm_order=meta.levels("periods", "treatment"),
                time_order=sorted(diary["day"].dropna().unique()),
                labels={o: meta.axis_label("diary", o) for o in outs},
            )
            specs["descriptive_diary"] = _TableSpec(
                d,
                "Diary outcomes per treatment and day (observed)",
                display=T.format_descriptive_table(d),
                notes="Day 0 = baseline day before the infusion.",
            )
    issues = state.get("issues")
    files_summary = state.get("files_summary")
    if isinstance(files_summary, pd.DataFrame) and len(files_summary):
        specs["validation_files"] = _TableSpec(
            files_summary.reset_index(drop=True),
            "Files read: rows read, accepted and rejected per table",
            notes="Nothing is dropped silently: every rejected row has its issues listed.",
        )
    specs["validation_summary"] = _TableSpec(
        T.validation_summary(issues),
        "Validation summary (issues per file, column and rule)",
        notes="Every issue is listed, with its row, in validation_issues.csv (identifier "
        "values redacted). Rows with errors were not analysed.",
    )
    if issues is not None and len(issues):
        specs["validation_issues"] = _TableSpec(
            issues,
            "Validation issues",
            formats=("csv",),
            in_report=False,
        )
    specs["exclusions"] = _TableSpec(
        analysis.exclusions().reset_index(drop=True),
        "Exclusions per hypothesis (participant, period, observations, reason)",
        notes="Observations not analysed for a hypothesis, with the reason (protocol "
        "rules, missing outcome, intercurrent events).",
    )
    em = analysis.emmeans
    if len(em):
        specs["emmeans"] = _TableSpec(
            em,
            "Estimated marginal means",
            notes="Model-based means on the response scale with confidence intervals.",
        )
    return specs, {k: v for k, v in specs.items() if v.in_report}


# --------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------


def _isnum(v: object) -> bool:
    try:
        float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def _build_figures(state: Mapping[str, Any], meta: _Meta, fdir: Path) -> dict[str, dict]:
    study: Study = state["study"]
    analysis: AnalysisResults = state["analysis_obj"]
    h = state["hypotheses"]
    figs: dict[str, dict] = {}
    captions: dict[str, tuple[str, str]] = {}

    def keep(name: str, fig: Figure, title: str, caption: str) -> None:
        figs[name] = P.save_figure(fig, fdir, name, simulated=bool(state["simulated"]))
        captions[name] = (title, caption)

    nights = study.nights
    arm_order = meta.levels("nights", "treatment")
    night_order = meta.levels("nights", "night")
    confirm = h[h["role"].astype(str).str.lower() == "confirmatory"] if "role" in h else h
    outcomes = [
        o
        for o in dict.fromkeys((confirm if len(confirm) else h)["outcome"].dropna())
        if o in nights.columns
    ][:4]
    for o in outcomes:
        keep(
            f"trajectories_{o}",
            P.plot_trajectories(
                nights,
                outcome=o,
                arm_order=arm_order,
                time_order=night_order,
                label=meta.axis_label("nights", o),
            ),
            f"Individual trajectories: {meta.label('nights', o)}",
            "Thin lines: one participant and period; thick: arm mean of observed values.",
        )
    em = analysis.emmeans
    if len(em) and {"estimate", "conf_low", "conf_high", "treatment"} <= set(em.columns):
        groups = list(em.groupby("hypothesis_id", sort=False))
        ncols = min(3, len(groups))
        nrows = math.ceil(len(groups) / ncols)
        fig = Figure(figsize=(4.2 * ncols, 3.3 * nrows))
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        fig.subplots_adjust(
            left=0.07,
            right=0.98,
            top=1 - 0.5 / (3.3 * nrows),
            bottom=0.45 / (3.3 * nrows),
            wspace=0.32,
            hspace=0.55,
        )
        for ax, (hid, g) in zip(axes, groups, strict=False):
            o = str(g["outcome"].iloc[0]) if "outcome" in g else ""
            if not o:
                outcome = h.loc[h["hypothesis_id"] == hid, "outcome"]
                o = str(outcome.iloc[0]) if len(outcome) else ""
            tv = str(g["time_variable"].iloc[0]) if "time_variable" in g else "night"
            time_col = "time" if "time" in g else (tv if tv in g else None)
            if tv == "night":
                t_order, table = night_order, "nights"
            else:
                vals = g[time_col].dropna().unique() if time_col else []
                t_order = sorted(
                    vals, key=lambda v: (float(v), "") if _isnum(v) else (math.inf, str(v))
                )
                table = "diary"
            rate = "scale" in g and (g["scale"] == "rate").any()
            P.plot_emmeans(
                g,
                time=time_col,
                arm_order=arm_order,
                time_order=[str(t) for t in t_order] if time_col == "time" else t_order,
                label=(
                    f"{meta.label(table, o)} (rate per {tv})"
                    if rate and o
                    else meta.axis_label(table, o)
                    if o
                    else "mean"
                ),
                title=f"{hid}: {meta.label(table, o) if o else ''}",
                ax=ax,
            )
            ax.set_xlabel(tv, fontsize=8)
            ax.yaxis.label.set_fontsize(8)
        for ax in axes[len(groups) :]:
            fig.delaxes(ax)
        keep(
            "emmeans",
            fig,
            "Estimated marginal means by hypothesis",
            "Model-based means (rates for count outcomes) with confidence intervals by night or "
            "day and arm, one panel per hypothesis with a model.",
        )
    outcomes_all = [str(o) for o in dict.fromkeys(h["outcome"].dropna())]
    table_of = {
        o: next((t for t in ("nights", "diary", "periods") if o in meta.names(t)), "nights")
        for o in outcomes_all
    }
    for name, rf in draw_report_figures(
        analysis,
        study,
        fdir,
        simulated=bool(state["simulated"]),
        labels={o: meta.label(table_of[o], o) for o in outcomes_all},
        units={o: meta.unit(table_of[o], o) for o in outcomes_all},
        sequence_labels=meta.code_labels("roster", "sequence"),
        sequence_order=meta.levels("roster", "sequence"),
    ).items():
        figs[name] = {"svg": rf.path, "png": rf.path.with_suffix(".png")}
        captions[name] = (rf.title, rf.caption)
    epochs = study.epochs
    tp = _treatment_of_period(study)
    if epochs is not None and not epochs.empty and tp is not None:
        ket = tp[tp["treatment"] == "ketamine"].sort_values(["participant_id", "period"])
        have = epochs[["participant_id", "period", "night"]].drop_duplicates()
        for _, r in ket.iterrows():
            nights_of = set(
                have.loc[
                    (have["participant_id"] == r["participant_id"])
                    & (have["period"] == r["period"]),
                    "night",
                ]
            )
            if {"baseline", "post1"} <= nights_of:
                keep(
                    "hypnograms",
                    P.plot_hypnograms(
                        epochs, participant_id=r["participant_id"], period=r["period"]
                    ),
                    f"Hypnograms of participant {r['participant_id']} (ketamine period)",
                    "Baseline night (top) and first night after the ketamine infusion.",
                )
                break
    diary = _diary_with_treatment(study)
    if diary is not None and {"kss", "day", "treatment"} <= set(diary.columns):
        keep(
            "sleepiness",
            P.plot_sleepiness(
                diary,
                arm_order=meta.levels("periods", "treatment"),
                label=meta.axis_label("diary", "kss"),
            ),
            "Daytime sleepiness, days 0-4",
            "Karolinska Sleepiness Scale: mean and 95 % t-interval per day and arm "
            "(descriptive; day 0 = baseline).",
        )
    state_captions = {k: captions[k] for k in figs}
    for k, v in figs.items():
        v["_title"], v["_caption"] = state_captions[k]
    return figs


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------


def _write_report(
    state: Mapping[str, Any],
    meta: _Meta,
    out: Path,
    *,
    simulated: bool,
    manifest_summary: Mapping[str, object],
) -> Path:
    h = state["hypotheses"]
    proto: Protocol = state["protocol"]
    displays: Mapping[str, _TableSpec] = state["displays"]
    idents: Identifiers = state["identifiers"]
    tables = {
        name: ReportTable(
            name,
            spec.title,
            mask_identifiers(
                spec.display if spec.display is not None else T.format_display(spec.data),
                idents,
                name=name,
            ),
            spec.notes,
        )
        for name, spec in displays.items()
    }
    figures = {
        name: ReportFigure(name, v["_title"], v["svg"], v["_caption"])
        for name, v in state["figures"].items()
    }
    outcomes = [str(o) for o in dict.fromkeys(h["outcome"].dropna())]
    sections = results_sections(
        analysis=state["analysis_obj"],
        tables=tables,
        figures=figures,
        protocol=proto,
        manifest=manifest_summary,
        labels={
            o: next(
                (meta.label(t, o) for t in ("nights", "diary", "periods") if o in meta.names(t)),
                o,
            )
            for o in outcomes
        },
        flows=(
            {"consort_flow": displays["consort_flow"].data} if "consort_flow" in displays else None
        ),
    )
    pid = proto.id
    sha = proto.sha256
    protocol_summary = {
        "id": pid,
        "version": proto.version,
        "sha256": sha,
        "title": proto.title,
        "hypotheses": len(h["hypothesis_id"].unique()),
        "confirmatory": int(
            h.drop_duplicates("hypothesis_id")["role"].astype(str).eq("confirmatory").sum()
        )
        if "role" in h
        else "",
    }
    return write_report(
        out / "report.html",
        title=f"studykit results: {pid}",
        protocol=protocol_summary,
        sections=sections,
        simulated=simulated,
    )
