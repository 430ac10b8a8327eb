"""Writing a simulated study as a study directory (README, CSV tables, hypnograms).

Private module of :mod:`studykit.simulate`; :func:`write_study` is re-exported there.
Every byte is a function of the study alone: rows are sorted, numbers have one fixed
formatting, datetimes are the study's own (no clock time of "now"), and the EDF+ header
dates are the recording's simulated date.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from studykit.errors import InputError
from studykit.hypnogram import sleep_statistics

if TYPE_CHECKING:
    from studykit.simulate import SimulatedStudy

__all__ = ["write_study"]

logger = logging.getLogger(__name__)

_TABLE_FILES = ("README.md", "roster.csv", "periods.csv", "nights.csv", "diary.csv")
_HYPNOGRAM_SUFFIXES = (".csv", ".edf", ".xml")
_NIGHT_KEYS = ["participant_id", "period", "night"]

# Sleep-EDF (R&K) annotation labels and NSRR XML event concepts per stage code
_EDF_LABEL = {
    "W": "Sleep stage W",
    "N1": "Sleep stage 1",
    "N2": "Sleep stage 2",
    "N3": "Sleep stage 3",
    "R": "Sleep stage R",
    "MT": "Movement time",
    "UNS": "Sleep stage ?",
}
_NSRR_CONCEPT = {
    "W": "Wake|0",
    "N1": "Stage 1 sleep|1",
    "N2": "Stage 2 sleep|2",
    "N3": "Stage 3 sleep|3",
    "R": "REM sleep|5",
    "MT": "Movement|6",
    "UNS": "Unscored|9",
}
_EPOCH_S = 30


def write_study(study: SimulatedStudy, directory: str | Path, *, overwrite: bool = False) -> Path:
    """Write a simulated study as a study directory.

    Parameters
    ----------
    study : SimulatedStudy
        From :func:`studykit.simulate.simulate_study`.
    directory : str or pathlib.Path
        Created if missing. Must be empty unless ``overwrite``.
    overwrite : bool
        Replace the files a previous ``write_study`` left there (README, the four tables
        and ``hypnograms/*.csv|edf|xml``); other files are left alone.

    Returns
    -------
    pathlib.Path
        The directory.

    Notes
    -----
    Layout (docs/ARCHITECTURE.md): ``README.md`` (says SIMULATED, the seed, the
    assumptions and the mess), ``roster.csv``, ``periods.csv``, ``nights.csv``,
    ``diary.csv`` and ``hypnograms/{participant_id}_p{period}_{night}.csv`` (columns
    ``epoch, onset_s, stage``). The nights listed in ``study.hypnogram_formats`` are
    written *only* as Sleep-EDF style EDF+ (annotation-only, ``Sleep stage W/1/2/3/4/R/?``,
    ``Movement time``; long N3 runs split into R&K stages 3 and 4) or NSRR XML
    (``ScoredEvent`` with ``Stages|Stages`` concepts), so every reader is exercised.
    CSV files start with their header row (no comment lines). ``nights.csv`` holds the
    design columns plus the per-night outcomes of
    :func:`studykit.hypnogram.sleep_statistics` when that module is available.

    Examples
    --------
    >>> import tempfile
    >>> from studykit.simulate import simulate_study
    >>> study = simulate_study(seed=3, n_participants=4, mess=False)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     out = write_study(study, tmp)
    ...     print(sorted(p.name for p in out.iterdir()))
    ...     print((out / "roster.csv").read_text().splitlines()[0])
    ['README.md', 'diary.csv', 'hypnograms', 'nights.csv', 'periods.csv', 'roster.csv']
    participant_id,sequence,age,sex,bmi,madrs_baseline,status,withdrawal_reason
    """
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise InputError(f"Cannot write the study to {out}: it exists and is not a directory.")
    hyp = out / "hypnograms"
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise InputError(
                f"Directory {out} is not empty. Choose a new or empty directory, or pass "
                "overwrite=True (CLI: --force) to replace a previously simulated study there."
            )
        for name in _TABLE_FILES:
            (out / name).unlink(missing_ok=True)
        if hyp.is_dir():
            for f in hyp.iterdir():
                if f.is_file() and f.suffix in _HYPNOGRAM_SUFFIXES:
                    f.unlink()
    hyp.mkdir(parents=True, exist_ok=True)

    nights, derived_note = _nights_with_outcomes(study)
    _write_csv(study.roster, out / "roster.csv")
    _write_csv(study.periods, out / "periods.csv")
    _write_csv(nights, out / "nights.csv")
    _write_csv(study.diary, out / "diary.csv")

    starts = {
        (r.participant_id, int(r.period), r.night): r.recording_start
        for r in study.nights.itertuples(index=False)
    }
    written = {"csv": 0, "edf": 0, "xml": 0}
    for (pid, period, night), block in study.epochs.groupby(_NIGHT_KEYS, sort=True):
        key = (str(pid), int(period), str(night))
        fmt = study.hypnogram_formats.get(key, "csv")
        stem = hyp / f"{pid}_p{int(period)}_{night}"
        stages = block.sort_values("epoch")["stage"].to_numpy(dtype=object)
        if fmt == "edf":
            _write_edf(stages, stem.with_suffix(".edf"), key=key, start=starts[key])
        elif fmt == "xml":
            _write_nsrr_xml(stages, stem.with_suffix(".xml"), start=starts[key])
        else:
            _write_hypnogram_csv(stages, stem.with_suffix(".csv"))
        written[fmt] += 1

    (out / "README.md").write_text(_readme(study, written, derived_note), encoding="utf-8")
    logger.debug(
        "wrote simulated study (seed %d) to %s: %d participants, %d nights",
        study.seed,
        out,
        len(study.roster),
        sum(written.values()),
    )
    return out


def _nights_with_outcomes(study: SimulatedStudy) -> tuple[pd.DataFrame, str]:
    """Design columns + the per-night outcomes derived from the simulated hypnograms."""
    stats = sleep_statistics(study.epochs, nights=study.nights)
    got = stats[_NIGHT_KEYS].astype({"period": "int64"})
    want = study.nights[_NIGHT_KEYS]
    if got.duplicated().any() or len(got.merge(want, on=_NIGHT_KEYS)) != len(want):
        raise RuntimeError(  # a bug in sleep_statistics, not a user error
            "studykit.hypnogram.sleep_statistics returned night keys that do not match the "
            f"nights table one to one ({int(got.duplicated().sum())} duplicated, "
            f"{len(got)} rows for {len(want)} nights)."
        )
    stats = stats.drop(
        columns=[c for c in stats.columns if c in study.nights.columns and c not in _NIGHT_KEYS]
    )
    merged = study.nights.merge(stats, on=_NIGHT_KEYS, how="left", validate="one_to_one")
    return merged, (
        "nights.csv holds the design columns and the per-night outcomes derived from the "
        "hypnograms with studykit.hypnogram.sleep_statistics (default options)."
    )


def _format_value(value: Any) -> str:
    """One fixed text form per value: the same bytes on every machine."""
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, bool | np.bool_):
        return "1" if value else "0"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return ""
        value = round(float(value), 4) + 0.0  # +0.0 turns -0.0 into 0.0
        return f"{value:.10g}"
    if isinstance(value, pd.Timestamp | dt.datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S")
    return str(value)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(frame.columns)
    columns = [frame[c].tolist() for c in frame.columns]
    for row in zip(*columns, strict=True):
        writer.writerow([_format_value(v) for v in row])
    path.write_text(buf.getvalue(), encoding="utf-8", newline="")


def _write_hypnogram_csv(stages: np.ndarray, path: Path) -> None:
    lines = ["epoch,onset_s,stage"]
    lines.extend(f"{i},{i * _EPOCH_S},{s}" for i, s in enumerate(stages))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="")


def _runs(labels: np.ndarray) -> list[tuple[int, int, str]]:
    """(first epoch, number of epochs, label) of each run of equal labels."""
    if labels.size == 0:
        return []
    change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [labels.size]])
    return [(int(a), int(b - a), str(labels[a])) for a, b in zip(starts, ends, strict=True)]


def _rk_labels(stages: np.ndarray, table: dict[str, str], stage4: str) -> np.ndarray:
    """Map stage codes to format labels; the second half of N3 runs >= 4 epochs -> stage 4."""
    unknown = sorted(set(stages) - set(table))
    if unknown:
        raise InputError(
            f"Stages {unknown} cannot be written in this hypnogram format (allowed: "
            f"{sorted(table)}); write that night as CSV."
        )
    labels = np.array([table[s] for s in stages], dtype=object)
    for first, length, stage in _runs(np.asarray(stages, dtype=object)):
        if stage == "N3" and length >= 4:
            labels[first + length // 2 : first + length] = stage4
    return labels


def _write_edf(
    stages: np.ndarray, path: Path, *, key: tuple[str, int, str], start: pd.Timestamp
) -> None:
    """Annotation-only EDF+ in the Sleep-EDF hypnogram style (one annotation per run)."""
    import edfio

    labels = _rk_labels(stages, _EDF_LABEL, "Sleep stage 4")
    annotations = [
        edfio.EdfAnnotation(first * _EPOCH_S, length * _EPOCH_S, label)
        for first, length, label in _runs(labels)
    ]
    start = pd.Timestamp(start)
    edf = edfio.Edf(
        [],
        patient=edfio.Patient(code=key[0]),
        recording=edfio.Recording(
            startdate=start.date(),
            equipment_code="studykit-simulate",
            additional=("SIMULATED", f"period{key[1]}", key[2]),
        ),
        starttime=start.time(),
        annotations=annotations,
    )
    edf.write(path)


def _write_nsrr_xml(stages: np.ndarray, path: Path, *, start: pd.Timestamp) -> None:
    """NSRR XML (PSGAnnotation / ScoredEvents), one ScoredEvent per run of a stage."""
    labels = _rk_labels(stages, _NSRR_CONCEPT, "Stage 4 sleep|4")
    total = len(stages) * _EPOCH_S
    clock = pd.Timestamp(start).strftime("%H.%M.%S")
    lines = [
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>',
        "<PSGAnnotation>",
        "<SoftwareVersion>studykit simulate (SIMULATED data)</SoftwareVersion>",
        f"<EpochLength>{_EPOCH_S}</EpochLength>",
        "<ScoredEvents>",
        "<ScoredEvent>",
        "<EventType/>",
        "<EventConcept>Recording Start Time</EventConcept>",
        "<Start>0</Start>",
        f"<Duration>{total:.1f}</Duration>",
        f"<ClockTime>00.00.00 {clock}</ClockTime>",
        "</ScoredEvent>",
    ]
    for first, length, concept in _runs(labels):
        lines.extend(
            [
                "<ScoredEvent>",
                "<EventType>Stages|Stages</EventType>",
                f"<EventConcept>{concept}</EventConcept>",
                f"<Start>{first * _EPOCH_S:.1f}</Start>",
                f"<Duration>{length * _EPOCH_S:.1f}</Duration>",
                "</ScoredEvent>",
            ]
        )
    lines.extend(["</ScoredEvents>", "</PSGAnnotation>"])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="")


def _readme(study: SimulatedStudy, written: dict[str, int], derived_note: str) -> str:
    eff = study.assumptions["effects"]
    roster = study.roster
    mess = study.mess
    lines = [
        "# SIMULATED DATA: demo ketamine sleep study",
        "",
        "**Every value in this directory is simulated.** Nothing here describes real people. The",
        "data were generated by `studykit.simulate.simulate_study` to demonstrate studykit.",
        "",
        f"- seed: {study.seed}",
        f"- design: {study.design}"
        + (
            " (randomized, placebo-controlled crossover; sequences KP and PK)"
            if study.design == "crossover"
            else " (randomized parallel groups; arms K and P)"
        ),
        f"- participants: {len(roster)} ({int((roster['status'] == 'withdrawn').sum())} withdrawn)",
        f"- nights: {len(study.nights)} recorded; hypnograms written as CSV: {written['csv']}, "
        f"EDF+: {written['edf']}, NSRR XML: {written['xml']}",
        f"- regenerate: `studykit simulate --seed {study.seed} --design {study.design} "
        f"--n {len(roster)} --out DIR`",
        "",
        "## Files",
        "",
        "- `roster.csv`, `periods.csv`, `nights.csv`, `diary.csv`: tables named as in the data",
        "  dictionary (`data_dictionary.csv`). Missing values are empty cells; `-99` is the",
        "  dictionary's missing code (diary entry not completed).",
        "- `hypnograms/{participant_id}_p{period}_{night}.csv|edf|xml`: one file per night, 30-s",
        "  epochs from the recording start (stage codes W N1 N2 N3 R MT ART UNS). Nights in",
        "  `.edf` (Sleep-EDF style EDF+ annotations) and `.xml` (NSRR) exist only in that format.",
        f"- {derived_note}",
        "",
        "## Assumptions (effects of ketamine vs placebo built into the generator)",
        "",
        "These are ASSUMPTIONS for a demonstration, loosely based on published studies; they are",
        "not findings. Total sleep time is deliberately NOT increased (as in the NIMH 2024",
        "placebo-controlled crossover), so a hypothesis that it is should come out not supported.",
        "",
        "```json",
        json.dumps(eff, indent=2, sort_keys=True),
        "```",
        "",
        "The effects are parameters of the sleep-stage process, so the per-night outcomes show",
        "them with the process's own noise and interplay: on night post1 the extra N3 (where",
        "awakenings are rarer) lowers the awakening count to about 0.83x and WASO by about 3 min;",
        "TST changes by about -2 min on post1 (later sleep onset) and 0 on post2; ordinal diary",
        "scores are rounded and bounded, which shrinks their effects slightly.",
        "",
        "Baseline targets (drug-free depression):",
        "",
    ]
    lines.extend(f"- {k}: {v}" for k, v in study.assumptions["baseline_targets"].items())
    if "nuisance" in study.assumptions:
        lines.extend(
            [
                "",
                "Design nuisances switched on (ASSUMPTIONS; see studykit docs/simulate.md):",
                "participant x period variation, carryover into period 2, first-night effect.",
                "",
                "```json",
                json.dumps(study.assumptions["nuisance"], indent=2, sort_keys=True),
                "```",
            ]
        )
    lines.extend(["", "## Realistic mess added on purpose", ""])
    if not mess:
        lines.append("- none (simulated with mess=False)")
    else:
        lines.extend(
            [
                f"- withdrawn: {mess['withdrawn']} ({mess['withdrawal_reason']})",
                f"- missing nights (not recorded): {_fmt_keys(mess['missing_nights'])}",
                f"- concomitant sedative use: {_fmt_keys(mess['sedative_use'])}, first night "
                f"after it: {mess['sedative_first_night']} (sedative_first_night; sleep onset "
                "shortened and fewer awakenings from that night on)",
                f"- alcohol use: {_fmt_keys(mess['alcohol_use'])}, first night after it: "
                f"{mess['alcohol_first_night']} (alcohol_first_night)",
                f"- artefact blocks: {_fmt_keys(mess['artefact_nights'])}",
                f"- long unscored stretch (> 10 % of time in bed): {_fmt_keys([mess['unscored_night']])}",
                "- diary entry not completed (-99): {} period {} day {} ({})".format(
                    *mess["diary_not_completed"]
                ),
                "- movement-time epochs at the start of some wake bouts; wake before lights off",
                "  and after lights on in every recording",
            ]
        )
    lines.append("")
    return "\n".join(lines)


def _fmt_keys(keys: list[list[Any]]) -> str:
    return "; ".join(
        " ".join(f"period {v}" if j == 1 else str(v) for j, v in enumerate(k)) for k in keys
    )
