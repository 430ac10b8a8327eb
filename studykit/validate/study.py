"""A whole study: read and validate its tables, then the cross-table rules and hypnograms.

:func:`load_study` reads a study directory (layout in docs/ARCHITECTURE.md), validates each
table (:func:`~studykit.validate.table.validate_table`) and adds the cross-table rules:
every participant is in the roster, treatment equals the periods table and is constant
within a participant x period, the roster's sequence matches the periods' treatments, and
each participant x period has a baseline night (a warning when not). Hypnograms in
``hypnograms/`` are read and validated as the ``epochs`` table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from studykit.dictionary import DataDictionary, load_dictionary
from studykit.errors import InputError, StudykitError
from studykit.hypnogram import identify_file, read_hypnogram, scan_hypnograms
from studykit.hypnogram.derive import recording_statistics
from studykit.hypnogram.readers import read_files
from studykit.hypnogram.statistics import KEYS, OUTCOMES
from studykit.io import EXCEL_SUFFIXES, PARQUET_SUFFIXES, read_table, refuse_special_file
from studykit.privacy import REDACTED, as_number
from studykit.validate.identify import table_by_columns
from studykit.validate.issues import (
    ISSUE_COLUMNS,
    as_text,
    empty_issues,
    one_issue,
    sort_issues,
)
from studykit.validate.parse import as_categorical, strings
from studykit.validate.rules import MINUTES_TOLERANCE, PERCENT_TOLERANCE
from studykit.validate.table import ValidationResult, validate_table

__all__ = [
    "STUDY_TABLES",
    "OUTCOME_SOURCES",
    "derived_tolerance",
    "Study",
    "load_study",
    "readme_says_simulated",
    "hypnogram_keys",
    "read_hypnogram_file",
]


@dataclass
class Study:
    """A study's tables, validated (or simulated), plus every issue found.

    Attributes
    ----------
    roster, periods, nights : pandas.DataFrame
        Typed accepted rows of each table (columns as in the data dictionary).
    diary : pandas.DataFrame or None
        Diary rows, None when the study has no diary.
    epochs : pandas.DataFrame or None
        Epoch-by-epoch stages of every hypnogram (``participant_id, period, night, epoch,
        onset_s, stage``), None when there are no hypnograms (or no hypnogram reader).
    issues : pandas.DataFrame
        All issues of all files, columns :data:`ISSUE_COLUMNS`.
    files : dict
        Table -> file path (``epochs`` -> list of hypnogram paths).
    summary : pandas.DataFrame or None
        One row per table: file, table, rows read / accepted / rejected, errors, warnings.
    rejected : dict
        Table -> its rejected rows (raw values + ``reasons``), so that rows read = accepted +
        rejected can be checked table by table.
    outcomes : str
        Source of the per-night outcomes in ``nights``: ``"hypnograms"`` (recomputed from the
        hypnograms by :func:`load_study`) or ``"typed"`` (as in nights.csv).
    simulated : bool
        True when the study directory's ``README.md`` heading says SIMULATED (as
        :func:`studykit.simulate.write_study` writes it): every output then says so.
    """

    roster: pd.DataFrame
    periods: pd.DataFrame
    nights: pd.DataFrame
    diary: pd.DataFrame | None = None
    epochs: pd.DataFrame | None = None
    issues: pd.DataFrame = field(default_factory=empty_issues)
    files: dict[str, Any] = field(default_factory=dict)
    summary: pd.DataFrame | None = None
    rejected: dict[str, pd.DataFrame] = field(default_factory=dict)
    simulated: bool = False
    outcomes: str = "typed"

    @property
    def ok(self) -> bool:
        """True when no issue is an error."""
        return not bool((self.issues["severity"] == "error").any())


#: The tables of a study directory (hypnograms aside), in reading order.
STUDY_TABLES: tuple[str, ...] = ("roster", "periods", "nights", "diary")
#: Sources of the analysed per-night outcomes; the first is the default.
OUTCOME_SOURCES: tuple[str, ...] = ("hypnograms", "typed")
#: Files studykit itself writes into a study folder, which are not study tables:
#: ``import_report.csv`` (``studykit redcap import``) and ``recordings.csv`` (which file is
#: which night: read with the hypnograms).
AUXILIARY_FILES = ("import_report", "recordings")
_READABLE = (".csv", ".tsv", ".txt", *EXCEL_SUFFIXES, *PARQUET_SUFFIXES)


@dataclass
class _Hypnograms:
    """What :func:`_load_hypnograms` found: epochs, issues, files read, the epochs' summary
    row, rejected epochs, and the per-night outcomes derived from them."""

    epochs: pd.DataFrame | None = None
    issues: list[pd.DataFrame] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    rejected: dict[str, pd.DataFrame] = field(default_factory=dict)
    derived: pd.DataFrame | None = None


def load_study(
    directory: str | Path,
    *,
    dictionary: DataDictionary | None = None,
    decimal: str = ".",
    tables: Sequence[str] = STUDY_TABLES,
    outcomes: str = "hypnograms",
) -> Study:
    r"""Read and validate a study directory (see docs/ARCHITECTURE.md for its layout).

    Parameters
    ----------
    directory : str or Path
        Holds ``roster``, ``periods``, ``nights`` and ``diary`` tables as CSV / TSV / XLSX /
        Parquet (named after the table, or any name: a file is then matched to a missing
        table by its key and columns), and optionally ``hypnograms/`` with one file per
        night named ``{participant_id}_p{period}_{night}.{csv|tsv|txt|edf|xml}``.
    dictionary : DataDictionary, optional
        Default: the packaged dictionary.
    decimal : {".", ","}
        Decimal separator of numbers in the tables (see :func:`validate_table`).
    tables : sequence of str
        The tables the study has (default :data:`STUDY_TABLES`; leave ``diary`` out for a
        study without one). roster, periods and nights are always needed; another listed
        table that is missing is an error (``missing_table``).
    outcomes : {"hypnograms", "typed"}
        Source of the per-night outcomes analysed (:data:`OUTCOME_SOURCES`). With
        ``"hypnograms"`` (default) the outcomes of every night with a hypnogram are
        recomputed from it (:func:`studykit.hypnogram.sleep_statistics`) and replace the
        values typed in nights.csv; a night of nights.csv whose hypnogram is absent is an
        error (``hypnogram_missing``), not a night with blank outcomes. With ``"typed"``
        the values of nights.csv are analysed. Either way, where both exist every value
        that differs beyond :data:`DERIVED_TOLERANCE` is reported, one warning per night
        and column (``derived_mismatch``).

    Returns
    -------
    Study
        Accepted rows of each table and all issues. Rows failing a cross-table rule are
        rejected like rows failing a cell check.

    Raises
    ------
    InputError
        The directory or a required table is missing, or a table cannot be read.

    Notes
    -----
    Cross-table rules (errors reject the row): the participant of every periods / nights /
    diary row is in the roster (``reference``); a night's treatment equals the periods
    table's for the same participant and period (``treatment_periods``) and is constant
    within participant x period (``treatment_constant``); the roster's sequence code spells
    the treatments by period (``KP``: ketamine then placebo; one letter = same treatment in
    every period) (``sequence_treatment``). Warnings: a participant x period without a
    baseline night (``baseline_night``; change-from-baseline contrasts for it cannot be
    estimated), a roster participant without nights (``no_nights``), hypnograms that cannot
    be read or matched to a night (``hypnogram``).

    Files: only regular files inside the study folder are read; a FIFO, device or socket,
    and a symbolic link pointing outside the folder, are refused with an error (``file``)
    before anything is opened.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "roster.csv").write_text(
    ...     "participant_id,sequence,age,sex,madrs_baseline,status\n"
    ...     "P01,K,34,F,31,completed\nP02,P,41,M,28,completed\n")
    >>> _ = (d / "periods.csv").write_text(
    ...     "participant_id,period,treatment,dose_mg_kg,sedative_use\n"
    ...     "P01,1,ketamine,0.5,0\nP02,1,placebo,0,0\n")
    >>> _ = (d / "nights.csv").write_text(
    ...     "participant_id,period,night,night_index,treatment\n"
    ...     "P01,1,baseline,0,ketamine\nP01,1,post1,1,ketamine\n"
    ...     "P02,1,baseline,0,ketamine\nP03,1,baseline,0,placebo\n")
    >>> study = load_study(d, tables=("roster", "periods", "nights"))  # this study has no diary
    >>> study.issues[["row", "participant_id", "rule"]].values.tolist()
    [[<NA>, 'P02', 'no_nights'], [4, 'P02', 'treatment_periods'], [5, 'P03', 'reference']]
    >>> study.summary[["table", "rows_read", "rows_accepted", "rows_rejected"]].values.tolist()
    [['roster', 2, 2, 0], ['periods', 2, 2, 0], ['nights', 4, 2, 2]]
    """
    dd = dictionary if dictionary is not None else load_dictionary()
    d = Path(directory)
    if not d.exists():
        raise InputError(f"Study directory {d} not found. Check the path.")
    if not d.is_dir():
        raise InputError(
            f"{d} is a file, not a study directory. Pass the directory that holds roster.csv, "
            "periods.csv, nights.csv (and diary.csv, hypnograms/)."
        )
    if outcomes not in OUTCOME_SOURCES:
        raise InputError(f"outcomes must be one of {', '.join(OUTCOME_SOURCES)}; got {outcomes!r}.")
    unknown = [t for t in tables if t not in STUDY_TABLES]
    if unknown:
        raise InputError(
            f"unknown study table(s) {', '.join(unknown)}; a study has {', '.join(STUDY_TABLES)}."
        )
    files: dict[str, Any] = {}
    extra_issues: list[pd.DataFrame] = []
    candidates: list[Path] = []
    for p in sorted(d.iterdir()):
        if p.suffix.lower() not in _READABLE or p.name.startswith("."):
            continue
        refused = refuse_special_file(p, d)
        if refused:
            extra_issues.append(one_issue(str(p), "", "file", "error", refused))
        elif p.is_file():
            candidates.append(p)
    for table in STUDY_TABLES:
        found = [p for p in candidates if p.stem.lower() == table]
        if len(found) > 1:
            raise InputError(
                f"{d} has several {table} tables ({', '.join(p.name for p in found)}); keep one."
            )
        if found:
            files[table] = found[0]
    named = set(files.values())
    for p in candidates:
        if p in named or p.stem.lower() in AUXILIARY_FILES:
            continue
        try:
            table = table_by_columns(
                list(read_table(p).columns), dd, source=p.name, tables=list(STUDY_TABLES)
            )
        except InputError as exc:
            extra_issues.append(one_issue(str(p), "", "file", "warning", f"ignored: {exc}"))
            continue
        if table in files:
            extra_issues.append(
                one_issue(
                    str(p),
                    "",
                    "file",
                    "warning",
                    f"{p.name} has the columns of table {table}, which is read from "
                    f"{Path(files[table]).name}: ignored. Keep one file per table.",
                )
            )
            continue
        files[table] = p
        extra_issues.append(
            one_issue(
                str(p),
                "",
                "file",
                "warning",
                f"{p.name} is read as table {table} (its key and columns); rename it "
                f"{table}{p.suffix.lower()} to say so",
            )
        )
    present = ", ".join(p.name for p in candidates) or "no tables"
    for table in ("roster", "periods", "nights"):
        if table not in files:
            raise InputError(
                f"Study directory {d} has no {table} table ({table}.csv). Present: {present}. "
                "Every study needs roster, periods and nights."
            )
    for table in tables:
        if table not in files:
            extra_issues.append(
                one_issue(
                    str(d / f"{table}.csv"),
                    "",
                    "missing_table",
                    "error",
                    f"the study has no {table} table ({table}.csv; present: {present}). Add "
                    f"it, or say the study has none (load_study(..., tables=...) without "
                    f"{table!r}; CLI: --no-{table})",
                )
            )

    results = {t: validate_table(files[t], t, dictionary=dd, decimal=decimal) for t in files}
    cross = _identifier_numbers_in_data(results, dd) + _cross_table(results, dd)
    hypnograms = _load_hypnograms(d / "hypnograms", results, dd)
    epochs = hypnograms.epochs
    if hypnograms.files:
        files["epochs"] = hypnograms.files
    derived_issues = _derived_outcomes(results["nights"], hypnograms.derived, dd, outcomes=outcomes)

    issues = (
        [r.issues for r in results.values()]
        + extra_issues
        + cross
        + hypnograms.issues
        + derived_issues
    )
    issues = [i for i in issues if len(i)]
    all_issues = sort_issues(pd.concat(issues, ignore_index=True)) if issues else empty_issues()
    summary_rows = [r.summary for r in results.values()]
    if hypnograms.summary is not None:
        summary_rows.append(hypnograms.summary)
    summary = pd.DataFrame(summary_rows)
    return Study(
        roster=results["roster"].data,
        periods=results["periods"].data,
        nights=results["nights"].data,
        diary=results["diary"].data if "diary" in results else None,
        epochs=epochs,
        issues=all_issues,
        files=files,
        summary=summary,
        rejected={t: r.rejected for t, r in results.items()} | hypnograms.rejected,
        simulated=readme_says_simulated(directory),
        outcomes=outcomes
        if hypnograms.derived is not None and len(hypnograms.derived)
        else "typed",
    )


def derived_tolerance(unit: str, derived: np.ndarray) -> np.ndarray:
    """Largest typed-vs-recomputed difference not reported, per value (see Notes).

    Notes
    -----
    Minutes: :data:`~studykit.validate.rules.MINUTES_TOLERANCE` (one 30-s epoch, covers
    values rounded to 0.1 min); percentages: :data:`~studykit.validate.rules.PERCENT_TOLERANCE`
    (covers whole percent); anything else (counts, rates per hour, yes/no): 0.5 % of the
    recomputed value, at least 0.01 (covers values rounded to two decimals).

    Examples
    --------
    >>> derived_tolerance("min", np.array([400.0])).tolist()
    [0.5]
    >>> derived_tolerance("/h", np.array([1.0, 10.0])).tolist()
    [0.01, 0.05]
    """
    if unit == "min":
        return np.full(derived.shape, MINUTES_TOLERANCE)
    if unit == "%":
        return np.full(derived.shape, PERCENT_TOLERANCE)
    return np.maximum(0.01, 0.005 * np.abs(derived))


def _derived_outcomes(
    nights: ValidationResult,
    derived: pd.DataFrame | None,
    dd: DataDictionary,
    *,
    outcomes: str,
) -> list[pd.DataFrame]:
    """Compare the typed outcomes with the recomputed ones; pick the source.

    ``derived`` holds the outcomes of every night with a hypnogram
    (:func:`~studykit.hypnogram.derive.recording_statistics`, as ``studykit derive``).
    Adds ``derived_mismatch`` warnings (one per night and column); with ``outcomes =
    "hypnograms"`` rejects nights whose hypnogram is absent (``hypnogram_missing``) and puts
    the recomputed values in ``nights.data``.
    """
    if derived is None or derived.empty:
        return []
    nd = nights.data
    keys = [k for k in KEYS if k in nd.columns]
    if len(keys) < len(KEYS):
        return []
    # the nights table's key types (categorical night with the dictionary's levels, ...)
    stats = derived[[*KEYS, *OUTCOMES]].astype({k: nd[k].dtype for k in KEYS})
    derived_cols = [c for c in stats.columns if c not in keys]
    extra: list[pd.DataFrame] = []
    # -- typed vs recomputed, every night and column where both exist
    typed_cols = [c for c in derived_cols if c in nd.columns]
    if typed_cols and len(nd):
        left = nd[keys + typed_cols].astype({"participant_id": object, "night": object})
        left = left.assign(_row=nd.index.to_numpy())
        right = stats[keys + typed_cols].astype({"participant_id": object, "night": object})
        both = left.merge(right, on=keys, how="inner", suffixes=("", "__derived"))
        for c in typed_cols:
            typed = both[c].astype("float64").to_numpy(na_value=np.nan)
            der = both[f"{c}__derived"].astype("float64").to_numpy(na_value=np.nan)
            unit = dd.get("nights", c).unit
            with np.errstate(invalid="ignore"):
                bad = (
                    ~np.isnan(typed)
                    & ~np.isnan(der)
                    & (np.abs(typed - der) > derived_tolerance(unit, der) + 1e-9)
                )
            for i in np.flatnonzero(bad):
                r = both.iloc[i]
                extra.append(
                    one_issue(
                        nights.source,
                        c,
                        "derived_mismatch",
                        "warning",
                        f"typed {c} = {_num_text(typed[i])} but the hypnogram gives "
                        f"{_num_text(der[i])} (difference {_num_text(typed[i] - der[i])} "
                        f"{unit}; tolerance {_num_text(derived_tolerance(unit, der[i : i + 1])[0])})"
                        f"; analysed: the {'hypnogram' if outcomes == 'hypnograms' else 'typed'}"
                        " value. Correct nights.csv, or check the hypnogram and lights off / on",
                        row=int(r["_row"]),
                        participant_id=str(r["participant_id"]),
                        night=str(r["night"]),
                        value=_num_text(typed[i]),
                    )
                )
    if outcomes != "hypnograms":
        return extra
    # -- nights without a hypnogram: an error, never blank outcomes
    have = set(
        zip(
            stats["participant_id"].astype(object),
            stats["period"].astype("float64").astype("Int64").astype(object),
            stats["night"].astype(object),
            strict=True,
        )
    )
    listed = list(
        zip(
            nd["participant_id"].astype(object),
            nd["period"].astype("float64").astype("Int64").astype(object),
            nd["night"].astype(object),
            strict=True,
        )
    )
    absent = np.array([k not in have for k in listed], dtype=bool)
    if absent.any():
        _reject(
            nights,
            absent,
            "participant_id, period, night",
            "hypnogram_missing",
            "error",
            "no readable hypnogram for this night in hypnograms/ although the study's "
            "outcomes are recomputed from hypnograms: add the file (named "
            "{participant_id}_p{period}_{night}.ext), fix the one reported as unreadable, "
            "or analyse the typed outcomes (outcomes='typed'; CLI: --outcomes typed)",
            np.array(
                [f"{a}/{b}/{c}" for (a, b, c), m in zip(listed, absent, strict=True) if m],
                dtype=object,
            ),
        )
    nd = nights.data
    index = nd.index
    merged = nd.drop(columns=[c for c in derived_cols if c in nd.columns]).merge(
        stats, on=keys, how="left", validate="one_to_one"
    )
    merged.index = index
    nights.data = merged
    return extra


def _num_text(x: float) -> str:
    return f"{x:.4g}" if np.isfinite(x) else str(x)


def readme_says_simulated(directory: str | Path) -> bool:
    """True when the study directory's ``README.md`` heading says SIMULATED.

    :func:`studykit.simulate.write_study` writes such a heading; a simulated data set is always
    labelled as simulated in every output.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "README.md").write_text("# SIMULATED DATA: demo")
    ...     readme_says_simulated(tmp)
    True
    """
    readme = Path(directory) / "README.md"
    try:
        lines = readme.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return False
    heading = next((ln for ln in lines if ln.strip()), "")
    return "SIMULATED" in heading


def _reject(
    result: ValidationResult,
    mask: np.ndarray,
    column: str,
    rule: str,
    severity: str,
    messages: np.ndarray | str,
    values: np.ndarray | str,
) -> None:
    """Cross-table issue on rows of ``result.data`` (mask over data); reject them if an error."""
    data = result.data
    pos = np.flatnonzero(mask)
    if pos.size == 0:
        return
    rows = data.index.to_numpy()[pos]
    issues = pd.DataFrame(
        {
            "file": result.source,
            "row": pd.array(rows, dtype="Int64"),
            "participant_id": as_text(data["participant_id"].iloc[pos]).to_numpy(dtype=object)
            if "participant_id" in data.columns
            else None,
            "night": as_text(data["night"].iloc[pos]).to_numpy(dtype=object)
            if "night" in data.columns
            else None,
            "column": column,
            "value": values,
            "rule": rule,
            "severity": severity,
            "message": messages,
        }
    ).astype({c: object for c in ISSUE_COLUMNS if c != "row"})
    if severity == "error":
        if result.raw is not None and result.raw_rows is not None:
            moved = result.raw.iloc[np.searchsorted(result.raw_rows, rows)].copy()
            moved.index = pd.Index(rows, name="row")
        else:
            moved = data.iloc[pos].astype(str)
        moved["reasons"] = f"{rule}: {column}"
        result.rejected = pd.concat([result.rejected, moved]).sort_index()
        result.data = data.loc[~mask]
        result.summary["rows_accepted"] -= pos.size
        result.summary["rows_rejected"] += pos.size
    result.summary["errors" if severity == "error" else "warnings"] += pos.size
    result.issues = (
        pd.concat([result.issues, issues], ignore_index=True) if len(result.issues) else issues
    )


def _identifier_numbers_in_data(
    results: dict[str, ValidationResult], dd: DataDictionary
) -> list[pd.DataFrame]:
    """Numeric data cells equal to an identifier number (an MRN typed into a data column).

    The identifier fields (``identifier = yes``) whose values are numbers give, per
    participant, the numbers that must never be analysed or exported. A numeric non-key cell
    equal to one of the same participant's is an error (``identifier_value``: the row is
    rejected, so no statistic, minimum or maximum can show it); equal to another
    participant's, a warning (it may be a coincidence: check it). The issue's value is
    :data:`~studykit.privacy.REDACTED`.
    """
    ids = dd.identifier_columns()
    own: dict[object, dict[float, str]] = {}
    for table, r in results.items():
        data = r.data
        if "participant_id" not in data.columns:
            continue
        for field_name in sorted(ids & set(data.columns)):
            for pid, value in zip(data["participant_id"], data[field_name], strict=True):
                number = as_number(value) if not pd.isna(value) else None
                if number is not None and not pd.isna(pid):
                    own.setdefault(pid, {})[number] = f"{table}.{field_name}"
    if not own:
        return []
    anyone: dict[float, str] = {}
    for numbers in own.values():
        anyone.update(numbers)
    for table, r in results.items():
        variables = {v.name: v for v in dd.variables(table)} if table in dd.tables else {}
        numeric = [
            c
            for c in r.data.columns
            if c in variables
            and variables[c].type in ("integer", "number")
            and not variables[c].identifier
            and not variables[c].key
        ]
        if "participant_id" not in r.data.columns:
            continue
        for c in numeric:
            data = r.data
            pids = data["participant_id"].to_numpy(dtype=object)
            values = data[c].astype("float64").to_numpy(na_value=np.nan)
            same = np.zeros(len(data), dtype=bool)
            other = np.zeros(len(data), dtype=bool)
            fields: list[str] = []
            for i, (pid, v) in enumerate(zip(pids, values, strict=True)):
                if np.isnan(v) or v not in anyone:
                    continue
                mine = own.get(pid, {})
                if v in mine:
                    same[i] = True
                    fields.append(mine[v])
                else:
                    other[i] = True
            for mask, severity in ((other, "warning"), (same, "error")):
                if not mask.any():
                    continue
                if severity == "error":
                    message: np.ndarray | str = np.array(
                        [
                            f"equals this participant's identifier {f} (an identifier typed "
                            "into a data column?): the row is rejected so the value is neither "
                            "analysed nor exported; correct the cell"
                            for f in fields
                        ],
                        dtype=object,
                    )
                else:
                    message = (
                        "equals another participant's identifier number (a coincidence, or "
                        "an identifier typed into a data column?): check the cell"
                    )
                _reject(r, mask, c, "identifier_value", severity, message, REDACTED)
    return []  # the issues are in each table's result (rows rejected there)


def _cross_table(results: dict[str, ValidationResult], dd: DataDictionary) -> list[pd.DataFrame]:
    roster = results["roster"]
    extra: list[pd.DataFrame] = []
    raw_ids = set()
    if roster.raw is not None and "participant_id" in roster.raw.columns:
        raw_ids = set(strings(roster.raw["participant_id"]))
    ids = (
        set(roster.data["participant_id"].dropna())
        if "participant_id" in roster.data.columns
        else set()
    )

    # reference: participant in roster
    for t in ("periods", "nights", "diary"):
        if t not in results or "participant_id" not in results[t].data.columns:
            continue
        r = results[t]
        pid = r.data["participant_id"].astype(object)
        unknown = ~pid.isin(ids).to_numpy() & pid.notna().to_numpy()
        if unknown.any():
            in_raw = pid.isin(raw_ids).to_numpy()
            msgs = np.where(
                in_raw[unknown],
                "the participant's roster row was rejected (see the roster issues); fix it there",
                "participant not in the roster; add them to roster.csv or correct the identifier",
            )
            _reject(
                r,
                unknown,
                "participant_id",
                "reference",
                "error",
                msgs,
                pid[unknown].to_numpy(dtype=object),
            )

    periods = results["periods"].data
    # sequence spells the treatments by period
    if {"participant_id", "sequence"} <= set(roster.data.columns) and {
        "participant_id",
        "period",
        "treatment",
    } <= set(periods.columns):
        _check_sequence(results, dd)
        periods = results["periods"].data

    nights = results["nights"]
    nd = nights.data
    if {"participant_id", "period", "treatment"} <= set(nd.columns):
        # constant within participant x period
        grp = nd.groupby(["participant_id", "period"], observed=True, sort=False)["treatment"]
        nuniq = grp.transform(lambda s: s.nunique(dropna=True)).to_numpy()
        bad = nuniq > 1
        if bad.any():
            _reject(
                nights,
                bad,
                "treatment",
                "treatment_constant",
                "error",
                "treatment differs between nights of the same participant and period; "
                "a period has one treatment (check the periods table)",
                as_text(nd["treatment"][bad]).to_numpy(dtype=object),
            )
        nd = nights.data
        if {"participant_id", "period", "treatment"} <= set(periods.columns) and len(nd):
            ref = periods[["participant_id", "period", "treatment"]].rename(
                columns={"treatment": "_trt"}
            )
            ref = ref.astype({"participant_id": object, "_trt": object})
            merged = (
                nd[["participant_id", "period", "treatment"]]
                .astype({"participant_id": object, "treatment": object})
                .merge(ref, on=["participant_id", "period"], how="left")
            )
            no_period = merged["_trt"].isna().to_numpy()
            differs = ~no_period & (merged["treatment"] != merged["_trt"]).fillna(False).to_numpy(
                dtype=bool
            )
            if differs.any():
                msgs = (
                    "treatment differs from the periods table ("
                    + merged.loc[differs, "_trt"].astype(str).to_numpy(dtype=object)
                    + ") for this participant and period; correct one of them"
                )
                _reject(
                    nights,
                    differs,
                    "treatment",
                    "treatment_periods",
                    "error",
                    msgs,
                    merged.loc[differs, "treatment"].astype(str).to_numpy(dtype=object),
                )
            nd = nights.data
            merged = merged.loc[~differs].reset_index(drop=True)
            no_period = merged["_trt"].isna().to_numpy()
            if no_period.any():
                _reject(
                    nights,
                    no_period,
                    "participant_id, period",
                    "treatment_periods",
                    "error",
                    "no accepted row in the periods table for this participant and period "
                    "(missing, or rejected: see the periods issues); add or fix it",
                    (
                        merged.loc[no_period, "participant_id"].astype(str)
                        + "/"
                        + merged.loc[no_period, "period"].astype(str)
                    ).to_numpy(dtype=object),
                )
    nd = nights.data
    # baseline night per participant x period (warning)
    if {"participant_id", "period", "night"} <= set(nd.columns) and len(nd):
        has_base = (
            (nd["night"] == "baseline")
            .groupby([nd["participant_id"].astype(object), nd["period"]], sort=True)
            .any()
        )
        missing = has_base[~has_base]
        for (pid, per), _ in missing.items():
            extra.append(
                one_issue(
                    nights.source,
                    "night",
                    "baseline_night",
                    "warning",
                    f"participant {pid} has no baseline night in period {per}: change-from-"
                    "baseline contrasts for this period cannot be estimated; add the "
                    "baseline night or document why it is missing",
                    participant_id=str(pid),
                    value=f"period {per}",
                )
            )
        with_nights = set(nd["participant_id"].astype(object))
        for pid in sorted(ids - with_nights):
            extra.append(
                one_issue(
                    nights.source,
                    "participant_id",
                    "no_nights",
                    "warning",
                    f"participant {pid} is in the roster but has no accepted nights",
                    participant_id=str(pid),
                    value=str(pid),
                )
            )
        # a period with no nights (expected after a withdrawal, so only when not withdrawn)
        per = results["periods"].data
        if {"participant_id", "period"} <= set(per.columns) and len(per):
            withdrawn = set()
            if {"participant_id", "status"} <= set(roster.data.columns):
                st_ = roster.data
                withdrawn = set(
                    st_.loc[(st_["status"] == "withdrawn").fillna(False), "participant_id"]
                )
            have = set(
                zip(nd["participant_id"].astype(object), nd["period"].astype(object), strict=True)
            )
            keys = list(
                zip(per["participant_id"].astype(object), per["period"].astype(object), strict=True)
            )
            lonely = np.array(
                [
                    (k not in have) and (k[0] in with_nights) and (k[0] not in withdrawn)
                    for k in keys
                ],
                dtype=bool,
            )
            if lonely.any():
                _reject(
                    results["periods"],
                    lonely,
                    "participant_id, period",
                    "no_nights",
                    "warning",
                    "no accepted night for this participant and period (participant not withdrawn); "
                    "add the nights or record the withdrawal in the roster",
                    np.array(
                        [f"{a}/{b}" for (a, b), m in zip(keys, lonely, strict=True) if m],
                        dtype=object,
                    ),
                )
    return extra


def _check_sequence(results: dict[str, ValidationResult], dd: DataDictionary) -> None:
    roster, periods = results["roster"].data, results["periods"]
    try:
        treatments = dd.levels("periods", "treatment")
    except StudykitError:
        return
    initials = {t[0].upper(): t for t in treatments}
    if len(initials) != len(treatments):
        return  # treatments do not have distinct initials: cannot spell sequences
    seq = dict(
        zip(roster["participant_id"].astype(object), roster["sequence"].astype(object), strict=True)
    )
    pd_ = periods.data
    if not len(pd_):
        return
    expected: list[str | None] = []
    for pid, per in zip(pd_["participant_id"].astype(object), pd_["period"], strict=True):
        code = seq.get(pid)
        if not isinstance(code, str) or pd.isna(per) or not all(ch in initials for ch in code):
            expected.append(None)
            continue
        k = int(per)
        ch = code[0] if len(code) == 1 else (code[k - 1] if 1 <= k <= len(code) else None)
        expected.append(initials.get(ch) if ch else None)
    exp = pd.Series(expected, dtype=object, index=pd_.index)
    actual = pd_["treatment"].astype(object)
    bad = (exp.notna() & actual.notna() & (exp != actual)).to_numpy(dtype=bool)
    if bad.any():
        msgs = (
            "treatment does not match the roster's sequence (expected "
            + exp[bad].astype(str)
            + "); correct the sequence or the treatment"
        ).to_numpy(dtype=object)
        _reject(
            periods,
            bad,
            "treatment",
            "sequence_treatment",
            "error",
            msgs,
            actual[bad].astype(str).to_numpy(dtype=object),
        )


def hypnogram_keys(path: str | Path) -> tuple[str, int, str] | None:
    """``(participant_id, period, night)`` from a hypnogram file name, or None.

    Hypnogram files are named ``{participant_id}_p{period}_{night}.{ext}``.

    Examples
    --------
    >>> hypnogram_keys("hypnograms/P01_p2_post1.csv")
    ('P01', 2, 'post1')
    >>> hypnogram_keys("nights.csv") is None
    True
    """
    return identify_file(path).keys  # the one scanner of hypnogram names


def read_hypnogram_file(path: str | Path) -> pd.DataFrame:
    r"""One hypnogram as an ``epochs`` table: key columns from the file name, then the epochs.

    Read with :func:`studykit.hypnogram.read_hypnogram` (every format it reads).

    Raises
    ------
    InputError
        The name does not follow ``{participant_id}_p{period}_{night}.{ext}``, or the file
        cannot be read.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "P07_p2_post1.csv"
    >>> _ = p.write_text("epoch,onset_s,stage\n0,0,W\n1,30,N1\n")
    >>> frame = read_hypnogram_file(p)
    >>> frame[["participant_id", "period", "night"]].drop_duplicates().values.tolist()
    [['P07', 2, 'post1']]
    >>> validate_table(frame, "epochs").summary["rows_accepted"]
    2
    """
    p = Path(path)
    keys = hypnogram_keys(p)
    if keys is None:
        raise InputError(
            f"{p.name} is not named {{participant_id}}_p{{period}}_{{night}}.ext (e.g. "
            "P01_p1_baseline.csv); rename it so its night can be identified."
        )
    try:
        frame = read_hypnogram(p).copy()
    except StudykitError as exc:
        raise InputError(f"{p}: cannot read the hypnogram: {exc}") from exc
    frame.attrs.pop("source", None)
    for i, (name, value) in enumerate(
        zip(("participant_id", "period", "night"), keys, strict=True)
    ):
        if name not in frame.columns:
            frame.insert(i, name, value)
    return frame


def _load_hypnograms(
    folder: Path, results: dict[str, ValidationResult], dd: DataDictionary
) -> _Hypnograms:
    """Scan, read and validate the hypnograms; derive each night as ``studykit derive`` does.

    The one reader path of the hypnogram package: the scanner
    (:func:`~studykit.hypnogram.files.scan_hypnograms`), the readers with lights resolved in
    one order (the file, else the recordings table, else the nights table, else a
    ``no_lights`` warning: :func:`~studykit.hypnogram.readers.read_files`), then
    :func:`~studykit.hypnogram.derive.recording_statistics` on the accepted epochs.
    """
    if not folder.is_dir():
        return _Hypnograms()
    nights = results["nights"].data
    known = set()
    if {"participant_id", "period", "night"} <= set(nights.columns):
        known = set(
            zip(
                nights["participant_id"].astype(object),
                nights["period"].astype("float64").astype("Int64").astype(object),
                nights["night"].astype(object),
                strict=True,
            )
        )
    issues: list[pd.DataFrame] = []
    summary: dict[str, Any] = {
        "file": str(folder),
        "table": "epochs",
        "rows_read": 0,
        "rows_accepted": 0,
        "rows_rejected": 0,
        "errors": 0,
        "warnings": 0,
    }
    scan = scan_hypnograms(folder)  # THE scanner: recordings.csv, names, NSRR, Sleep-EDF
    for problem in scan.problems.itertuples():
        issues.append(
            one_issue(str(problem.file), "", "hypnogram", str(problem.severity), problem.message)
        )
        summary["errors" if problem.severity == "error" else "warnings"] += 1
    keyed = []
    for hypnogram_file in scan.files:
        path = hypnogram_file.path
        if hypnogram_file.keys is None:
            issues.append(
                one_issue(
                    str(path),
                    "",
                    "hypnogram",
                    "warning",
                    f"{path.name}: its night (participant_id, period, night) is not known from "
                    "its name or a recordings.csv row: ignored. Name it "
                    "{participant_id}_p{period}_{night}.ext or list it in recordings.csv.",
                )
            )
            summary["warnings"] += 1
        else:
            keyed.append(hypnogram_file)
    has_lights = {"participant_id", "period", "night"} <= set(nights.columns) and any(
        c in nights.columns for c in ("lights_off_s", "lights_on_s", "lights_off", "lights_on")
    )
    read = read_files(keyed, lights=nights if has_lights else None)
    for problem in read.problems.itertuples():
        pid = None if pd.isna(problem.participant_id) else str(problem.participant_id)
        night = None if pd.isna(problem.night) else str(problem.night)
        if problem.rule == "read_error":
            column, rule, message = "", "hypnogram", f"cannot read the hypnogram: {problem.message}"
        elif problem.rule == "lights_error":
            column, rule = "lights_off, lights_on", "lights"
            message = (
                f"lights off / on cannot be placed on this hypnogram, so its night is not "
                f"derived: {problem.message}"
            )
        else:  # no_lights: the whole recording is time in bed
            column, rule, message = "lights_off, lights_on", "no_lights", str(problem.message)
        issues.append(
            one_issue(
                str(problem.file),
                column,
                rule,
                str(problem.severity),
                message,
                participant_id=pid,
                night=night,
            )
        )
        summary["errors" if problem.severity == "error" else "warnings"] += 1
    recordings = read.recordings
    used = [Path(f) for f in recordings["file"]]
    for pid, period, night, file in zip(
        recordings["participant_id"],
        recordings["period"].astype(object),
        recordings["night"],
        recordings["file"],
        strict=True,
    ):
        if known and (pid, period, night) not in known:
            issues.append(
                one_issue(
                    str(file),
                    "participant_id, period, night",
                    "hypnogram",
                    "warning",
                    "no accepted row in the nights table for this hypnogram: its "
                    "epochs are kept but the night has no design information",
                    participant_id=pid,
                    night=night,
                    value=f"{pid}/{period}/{night}",
                )
            )
            summary["warnings"] += 1
    if not len(recordings):
        return _Hypnograms(None, issues, used, summary, {})
    # validate all nights at once (one call per file would cost ~50 ms each), then map the
    # issues' positions back to (file, epoch record number within the file)
    read_epochs = read.epochs
    combined = read_epochs.drop(columns="recording_id").astype(
        {"participant_id": object, "night": object}
    )
    res = validate_table(combined, "epochs", dictionary=dd, source=str(folder))
    file_of = read_epochs["recording_id"].cat.codes.to_numpy()  # recordings in reading order
    sizes = np.bincount(file_of, minlength=len(recordings))
    local_row = np.arange(len(combined)) - np.repeat(np.cumsum(sizes) - sizes, sizes) + 1
    names = np.array([str(u) for u in used], dtype=object)
    raw_rows = res.raw_rows if res.raw_rows is not None else np.arange(2, len(combined) + 2)
    if len(res.issues):
        found = res.issues.copy()
        has = found["row"].notna().to_numpy()
        pos = np.searchsorted(raw_rows, found["row"].fillna(raw_rows[0]).astype("int64"))
        found["file"] = np.where(has, names[file_of[pos]], str(folder))
        found["row"] = pd.array(np.where(has, local_row[pos], 0), dtype="Int64")
        found.loc[~has, "row"] = pd.NA
        issues.append(found)
    for k in ("rows_read", "rows_accepted", "rows_rejected", "errors", "warnings"):
        summary[k] += res.summary[k]
    accepted = np.searchsorted(raw_rows, res.data.index.to_numpy())
    epochs = res.data.reset_index(drop=True)
    for name in ("night", "stage"):
        if name in epochs.columns:
            epochs[name] = as_categorical(epochs[name], dd.levels("epochs", name))
    rejected = res.rejected.copy()
    if len(rejected):
        pos = np.searchsorted(raw_rows, rejected.index.to_numpy())
        rejected.insert(0, "file", names[file_of[pos]])
        rejected.index = pd.Index(local_row[pos], name="row")
    # the per-night outcomes of the accepted epochs, as studykit derive computes them; a
    # recording with a rejected epoch is not derived (its night is reported, never guessed)
    was_rejected = np.ones(len(combined), dtype=bool)
    was_rejected[accepted] = False
    keep = np.ones(len(recordings), dtype=bool)
    keep[file_of[was_rejected]] = False
    stats, derive_problems = recording_statistics(
        read_epochs.iloc[accepted[keep[file_of[accepted]]]],
        recordings[keep].reset_index(drop=True),
    )
    for problem in derive_problems.itertuples():
        issues.append(
            one_issue(
                str(problem.file),
                "",
                "derive",
                "error",
                f"the outcomes cannot be recomputed from this hypnogram: {problem.message}",
                participant_id=None
                if pd.isna(problem.participant_id)
                else str(problem.participant_id),
                night=None if pd.isna(problem.night) else str(problem.night),
            )
        )
        summary["errors"] += 1
    return _Hypnograms(epochs, issues, used, summary, {"epochs": rejected}, stats)
