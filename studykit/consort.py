"""CONSORT items of a randomised crossover trial, computed from the study's tables.

The CONSORT extension for randomised crossover trials (Dwan et al., BMJ 2019;366:l4378)
asks for the participant flow *by sequence and by period* (item 13a/13b: who was allocated
to which sequence, who received each period's treatment, who was lost in which period and
why), the washout (item 5/14a), baseline values by sequence and period (item 15), the
outcome by sequence and period (cell means, item 17a) and the within-participant
differences. This module computes each of them as a tidy table; ``studykit.plotting``
draws the flow diagram from :func:`crossover_flow` and the report shows the tables.

Participants and nights are never mixed in one count: every row of the flow carries its
``unit`` (``participants``, ``participant-periods`` or ``nights``).

A parallel-group study is the special case with one period; the same functions apply.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from studykit.errors import InputError

__all__ = [
    "FLOW_COLUMNS",
    "crossover_flow",
    "analysed_by_period",
    "washout",
    "sequence_period_means",
    "within_participant_differences",
    "summarise_differences",
]

#: Columns of :func:`crossover_flow`.
FLOW_COLUMNS: tuple[str, ...] = ("step", "sequence", "period", "treatment", "unit", "n", "reason")

_ALL = "all"


def _need(frame: pd.DataFrame, columns: Sequence[str], what: str, table: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(
            f"Cannot compute the {what}: the {table} table has no column(s) {missing}. "
            f"Its columns are {list(frame.columns)[:20]}."
        )


def _ordered(values: Sequence[object], order: Sequence[object] | None) -> list[str]:
    present = list(dict.fromkeys(str(v) for v in values if pd.notna(v)))
    if order is None:
        return sorted(present)
    first = [str(v) for v in order if str(v) in present]
    return first + sorted(v for v in present if v not in first)


def _sequence_of(roster: pd.DataFrame, sequence: str) -> pd.Series:
    """participant_id -> sequence (as str)."""
    return (
        roster.drop_duplicates("participant_id").set_index("participant_id")[sequence].astype(str)
    )


def _periods_received(periods: pd.DataFrame) -> pd.DataFrame:
    """Participant-periods in which the period's treatment was given."""
    got = periods
    if "infusion_datetime" in periods.columns:
        got = periods[periods["infusion_datetime"].notna()]
    return got[["participant_id", "period", "treatment"]].drop_duplicates(
        ["participant_id", "period"]
    )


def crossover_flow(
    roster: pd.DataFrame,
    periods: pd.DataFrame,
    nights: pd.DataFrame | None = None,
    *,
    sequence: str = "sequence",
    sequence_order: Sequence[str] | None = None,
    planned_nights: Sequence[str] | None = None,
    night: str = "night",
) -> pd.DataFrame:
    """Participant and night flow by sequence and period (CONSORT crossover items 13a, 13b).

    Parameters
    ----------
    roster : pandas.DataFrame
        One row per randomised participant: ``participant_id``, ``sequence`` and optionally
        ``status`` and ``withdrawal_reason``.
    periods : pandas.DataFrame
        One row per participant and period: ``participant_id, period, treatment`` (and
        ``infusion_datetime``: a period without it counts as not received).
    nights : pandas.DataFrame, optional
        Recorded nights (``participant_id, period, night``): adds the night counts.
    sequence : str, default "sequence"
        Randomised sequence column of the roster.
    sequence_order : sequence of str, optional
        Order of the sequences (e.g. the dictionary's codes).
    planned_nights : sequence of str, optional
        The nights each period should record (e.g. ``["baseline", "post1", "post2"]``);
        default the night labels present in ``nights``. A planned night that was not
        recorded is counted as missing, with its label as the reason.
    night : str, default "night"
        Night column of ``nights``.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`FLOW_COLUMNS`. ``step`` is one of ``randomised`` (participants, per
        sequence and ``all``), ``received`` (participants who received the period's
        treatment, per sequence and period, ``treatment`` filled), ``lost`` (participants
        randomised to the sequence who did not receive that period, one row per reason),
        ``nights planned``, ``nights recorded`` and ``nights missing`` (unit ``nights``,
        missing ones per night label as reason). ``period`` is 0 in the rows that are not
        about one period.

    Notes
    -----
    A participant *received* period p when the periods table has a row for p with an
    infusion time (when that column exists). A participant randomised but without period p
    is *lost* in period p; the reason is the roster's ``withdrawal_reason`` (``"not
    given"`` when empty). Nights planned = participants who received the period x
    ``planned_nights``; recorded = those rows of ``nights``; missing = planned - recorded.
    Participant counts and night counts are separate rows (unit column), never added up.

    Examples
    --------
    >>> roster = pd.DataFrame({"participant_id": ["P1", "P2", "P3"],
    ...     "sequence": ["KP", "PK", "PK"], "status": ["completed", "completed", "withdrawn"],
    ...     "withdrawal_reason": [None, None, "moved away"]})
    >>> periods = pd.DataFrame({"participant_id": ["P1", "P1", "P2", "P2", "P3"],
    ...     "period": [1, 2, 1, 2, 1],
    ...     "treatment": ["ketamine", "placebo", "placebo", "ketamine", "placebo"]})
    >>> f = crossover_flow(roster, periods)
    >>> f.query("step == 'lost'")[["sequence", "period", "n", "reason"]].to_numpy().tolist()
    [['PK', 2, 1, 'moved away']]
    >>> f.query("step == 'received' and sequence == 'PK'")[["period", "treatment", "n"]
    ...     ].to_numpy().tolist()
    [[1, 'placebo', 2], [2, 'ketamine', 1]]
    """
    _need(roster, ["participant_id", sequence], "participant flow", "roster")
    _need(periods, ["participant_id", "period", "treatment"], "participant flow", "periods")
    seq_of = _sequence_of(roster, sequence)
    seqs = _ordered(seq_of.tolist(), sequence_order)
    reasons = pd.Series("not given", index=seq_of.index, dtype=object)
    if "withdrawal_reason" in roster.columns:
        given = roster.drop_duplicates("participant_id").set_index("participant_id")[
            "withdrawal_reason"
        ]
        reasons = given.where(given.notna() & (given.astype(str).str.strip() != ""), "not given")
    received = _periods_received(periods)
    received = received[received["participant_id"].isin(seq_of.index)]
    period_list = sorted(int(p) for p in periods["period"].dropna().unique())
    rows: list[dict[str, object]] = []

    def add(step: str, seq: str, period: int, treatment: str, unit: str, n: int, reason: str):
        rows.append(
            {
                "step": step,
                "sequence": seq,
                "period": period,
                "treatment": treatment,
                "unit": unit,
                "n": int(n),
                "reason": reason,
            }
        )

    for s in [*seqs, _ALL]:
        members = seq_of.index if s == _ALL else seq_of.index[seq_of == s]
        add("randomised", s, 0, "", "participants", len(members), "")
    if nights is not None:
        _need(nights, ["participant_id", "period", night], "night flow", "nights")
        labels = (
            list(planned_nights)
            if planned_nights is not None
            else _ordered(nights[night].tolist(), None)
        )
        recorded = nights[["participant_id", "period", night]].drop_duplicates()
        recorded = recorded.assign(**{night: recorded[night].astype(str)})
    for p in period_list:
        for s in seqs:
            members = set(seq_of.index[seq_of == s])
            got = received[(received["period"] == p) & received["participant_id"].isin(members)]
            treatments = _ordered(got["treatment"].tolist(), None)
            add("received", s, p, " / ".join(treatments), "participants", len(got), "")
            lost = sorted(members - set(got["participant_id"]))
            for reason, n in pd.Series([str(reasons[i]) for i in lost]).value_counts().items():
                add("lost", s, p, "", "participants", int(n), str(reason))
            if nights is None:
                continue
            ids = set(got["participant_id"])
            rec = recorded[
                (recorded["period"] == p)
                & recorded["participant_id"].isin(ids)
                & recorded[night].isin(labels)
            ]
            add("nights planned", s, p, "", "nights", len(ids) * len(labels), "")
            add("nights recorded", s, p, "", "nights", len(rec), "")
            for lab in labels:
                n_missing = len(ids) - int((rec[night] == lab).sum())
                if n_missing:
                    add("nights missing", s, p, "", "nights", n_missing, f"{lab} not recorded")
    return pd.DataFrame(rows, columns=list(FLOW_COLUMNS))


def analysed_by_period(
    analysed: Mapping[str, pd.DataFrame],
    roster: pd.DataFrame,
    *,
    exclusions: pd.DataFrame | None = None,
    sequence: str = "sequence",
    sequence_order: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Participants and observations analysed per hypothesis, sequence and period.

    Parameters
    ----------
    analysed : mapping
        Hypothesis id -> the data actually modelled (columns ``participant_id, period``),
        e.g. ``HypothesisFit.data``.
    roster : pandas.DataFrame
        ``participant_id`` and the sequence column.
    exclusions : pandas.DataFrame, optional
        ``hypothesis_id, participant_id, period, n_observations, reason``: adds the
        participant-periods excluded and why.
    sequence : str, default "sequence"
    sequence_order : sequence of str, optional

    Returns
    -------
    pandas.DataFrame
        Columns ``hypothesis_id, sequence, period, participants, observations,
        periods_excluded, excluded_reasons``; ``participants`` counts people,
        ``observations`` rows of the analysis data (nights or diary days) and
        ``periods_excluded`` participant-periods left out (a different unit each).

    Examples
    --------
    >>> roster = pd.DataFrame({"participant_id": ["P1", "P2"], "sequence": ["KP", "PK"]})
    >>> data = pd.DataFrame({"participant_id": ["P1", "P1", "P2"], "period": [1, 2, 1]})
    >>> ex = pd.DataFrame({"hypothesis_id": ["H1"], "participant_id": ["P2"], "period": [2],
    ...     "n_observations": [3], "reason": ["sedative use"]})
    >>> t = analysed_by_period({"H1": data}, roster, exclusions=ex)
    >>> t[["sequence", "period", "participants", "periods_excluded"]].to_numpy().tolist()
    [['KP', 1, 1, 0], ['KP', 2, 1, 0], ['PK', 1, 1, 0], ['PK', 2, 0, 1]]
    """
    _need(roster, ["participant_id", sequence], "analysed counts", "roster")
    seq_of = _sequence_of(roster, sequence)
    seqs = _ordered(seq_of.tolist(), sequence_order)
    rows = []
    for hid, data in analysed.items():
        _need(data, ["participant_id", "period"], f"analysed counts of {hid}", "analysis data")
        d = data.assign(
            _seq=data["participant_id"].map(seq_of),
            period=pd.to_numeric(data["period"], errors="coerce"),
        )
        ex = (
            exclusions[exclusions["hypothesis_id"] == hid].assign(
                _seq=lambda e: e["participant_id"].map(seq_of),
                period=lambda e: pd.to_numeric(e["period"], errors="coerce"),
            )
            if exclusions is not None and len(exclusions)
            else None
        )
        periods = sorted(
            {int(p) for p in d["period"].dropna()}
            | ({int(p) for p in ex["period"].dropna()} if ex is not None else set())
        )
        for s in seqs:
            for p in periods:
                cell = d[(d["_seq"] == s) & (d["period"] == p)]
                ex_cell = ex[(ex["_seq"] == s) & (ex["period"] == p)] if ex is not None else None
                n_ex = 0 if ex_cell is None else len(ex_cell.drop_duplicates("participant_id"))
                why = (
                    "; ".join(
                        f"{r} ({n})"
                        for r, n in ex_cell.drop_duplicates("participant_id")["reason"]
                        .value_counts()
                        .sort_index()
                        .items()
                    )
                    if ex_cell is not None and n_ex
                    else ""
                )
                rows.append(
                    {
                        "hypothesis_id": hid,
                        "sequence": s,
                        "period": p,
                        "participants": int(cell["participant_id"].nunique()),
                        "observations": len(cell),
                        "periods_excluded": n_ex,
                        "excluded_reasons": why,
                    }
                )
    return pd.DataFrame(
        rows,
        columns=[
            "hypothesis_id",
            "sequence",
            "period",
            "participants",
            "observations",
            "periods_excluded",
            "excluded_reasons",
        ],
    )


def washout(
    periods: pd.DataFrame,
    roster: pd.DataFrame,
    *,
    sequence: str = "sequence",
    sequence_order: Sequence[str] | None = None,
    time: str = "infusion_datetime",
) -> pd.DataFrame:
    """Washout between consecutive periods: days from one period's treatment to the next.

    Parameters
    ----------
    periods : pandas.DataFrame
        ``participant_id, period`` and the treatment time column ``time``.
    roster : pandas.DataFrame
        ``participant_id`` and the sequence column.
    sequence : str, default "sequence"
    sequence_order : sequence of str, optional
    time : str, default "infusion_datetime"
        Time the period's treatment was given (ISO date-time).

    Returns
    -------
    pandas.DataFrame
        One row per pair of consecutive periods and sequence (and ``all``): ``from_period,
        to_period, sequence, n, median_days, min_days, max_days`` (participants with both
        treatment times).

    Notes
    -----
    With a single-dose treatment the washout is the interval from the treatment of period
    p to that of period p + 1 (CONSORT crossover item 5: "duration of the washout"). The
    days are exact (fractional), from the recorded date-times.

    Examples
    --------
    >>> roster = pd.DataFrame({"participant_id": ["P1", "P2"], "sequence": ["KP", "PK"]})
    >>> periods = pd.DataFrame({"participant_id": ["P1", "P1", "P2", "P2"],
    ...     "period": [1, 2, 1, 2], "infusion_datetime": ["2025-01-01T10:00",
    ...     "2025-01-22T10:00", "2025-01-02T10:00", "2025-01-30T22:00"]})
    >>> washout(periods, roster)[["sequence", "n", "median_days", "max_days"]].to_numpy().tolist()
    [['KP', 1, 21.0, 21.0], ['PK', 1, 28.5, 28.5], ['all', 2, 24.75, 28.5]]
    """
    _need(periods, ["participant_id", "period", time], "washout", "periods")
    _need(roster, ["participant_id", sequence], "washout", "roster")
    seq_of = _sequence_of(roster, sequence)
    seqs = _ordered(seq_of.tolist(), sequence_order)
    t = periods[["participant_id", "period", time]].dropna().copy()
    t["_t"] = pd.to_datetime(t[time], errors="coerce")
    t = t.dropna(subset=["_t"])
    wide = t.pivot_table(index="participant_id", columns="period", values="_t", aggfunc="min")
    plist = sorted(int(p) for p in wide.columns)
    rows = []
    for a, b in zip(plist, plist[1:], strict=False):
        days = ((wide[b] - wide[a]).dt.total_seconds() / 86400.0).dropna()
        for s in [*seqs, _ALL]:
            d = days if s == _ALL else days[days.index.map(seq_of) == s]
            rows.append(
                {
                    "from_period": a,
                    "to_period": b,
                    "sequence": s,
                    "n": len(d),
                    "median_days": float(d.median()) if len(d) else math.nan,
                    "min_days": float(d.min()) if len(d) else math.nan,
                    "max_days": float(d.max()) if len(d) else math.nan,
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "from_period",
            "to_period",
            "sequence",
            "n",
            "median_days",
            "min_days",
            "max_days",
        ],
    )


def sequence_period_means(
    data: pd.DataFrame,
    roster: pd.DataFrame,
    *,
    outcomes: Sequence[str],
    time: str,
    times: Sequence[object] | None = None,
    sequence: str = "sequence",
    sequence_order: Sequence[str] | None = None,
    treatment: str = "treatment",
) -> pd.DataFrame:
    """Observed means by sequence x period (x time), the cells of a crossover.

    Parameters
    ----------
    data : pandas.DataFrame
        Long data (``participant_id, period``, ``treatment``, the ``time`` column and the
        outcomes), e.g. the nights or diary table.
    roster : pandas.DataFrame
        ``participant_id`` and the sequence column.
    outcomes : sequence of str
        Outcome columns.
    time : str
        Time column (``night`` or ``day``).
    times : sequence, optional
        Time points to keep, in order (e.g. ``["baseline"]`` for the baseline values by
        sequence and period, CONSORT crossover item 15); default all.
    sequence, sequence_order, treatment : see :func:`crossover_flow`.

    Returns
    -------
    pandas.DataFrame
        ``outcome, sequence, period, treatment, <time>, n, mean, sd`` (``n`` = participants
        with a value; ``sd`` with ``ddof = 1``, missing below two values).

    Examples
    --------
    >>> roster = pd.DataFrame({"participant_id": ["P1", "P2"], "sequence": ["KP", "KP"]})
    >>> d = pd.DataFrame({"participant_id": ["P1", "P2", "P1", "P2"], "period": [1, 1, 2, 2],
    ...     "treatment": ["ketamine", "ketamine", "placebo", "placebo"],
    ...     "night": ["post1"] * 4, "n3_min": [70.0, 80.0, 60.0, 64.0]})
    >>> m = sequence_period_means(d, roster, outcomes=["n3_min"], time="night")
    >>> m[["period", "treatment", "n", "mean"]].to_numpy().tolist()
    [[1, 'ketamine', 2, 75.0], [2, 'placebo', 2, 62.0]]
    """
    _need(data, ["participant_id", "period", time, *outcomes], "sequence x period means", "data")
    seq_of = _sequence_of(roster, sequence)
    seqs = _ordered(seq_of.tolist(), sequence_order)
    d = data.assign(_seq=data["participant_id"].map(seq_of))
    if times is not None:
        d = d[d[time].astype(str).isin([str(t) for t in times])]
        t_order = [str(t) for t in times]
    else:
        t_order = list(dict.fromkeys(d[time].astype(str)))
    rows = []
    for o in outcomes:
        y = pd.to_numeric(d[o], errors="coerce")
        for s in seqs:
            for p in sorted(int(v) for v in d.loc[d["_seq"] == s, "period"].dropna().unique()):
                for t in t_order:
                    sel = (d["_seq"] == s) & (d["period"] == p) & (d[time].astype(str) == t)
                    v = y[sel].dropna()
                    tr = (
                        " / ".join(_ordered(d.loc[sel, treatment].tolist(), None))
                        if treatment in d.columns
                        else ""
                    )
                    rows.append(
                        {
                            "outcome": o,
                            "sequence": s,
                            "period": p,
                            "treatment": tr,
                            time: t,
                            "n": len(v),
                            "mean": float(v.mean()) if len(v) else math.nan,
                            "sd": float(v.std(ddof=1)) if len(v) > 1 else math.nan,
                        }
                    )
    return pd.DataFrame(
        rows, columns=["outcome", "sequence", "period", "treatment", time, "n", "mean", "sd"]
    )


def within_participant_differences(
    data: pd.DataFrame,
    roster: pd.DataFrame,
    *,
    outcome: str,
    time: str,
    at: object,
    baseline: object | None = None,
    treatment: str = "treatment",
    level: str = "ketamine",
    reference: str = "placebo",
    sequence: str = "sequence",
) -> pd.DataFrame:
    """Each participant's treatment difference (``level - reference``) in a crossover.

    Parameters
    ----------
    data : pandas.DataFrame
        Long data with ``participant_id, period``, ``treatment``, ``time`` and ``outcome``.
    roster : pandas.DataFrame
        ``participant_id`` and the sequence column.
    outcome : str
        Outcome column.
    time : str
        Time column.
    at : object
        Time point compared (e.g. ``"post1"``).
    baseline : object, optional
        When given, the period's change from this time point (``at - baseline``) is
        compared instead of the value at ``at``.
    treatment, level, reference : str
        Treatment column, its level and the reference level.
    sequence : str, default "sequence"

    Returns
    -------
    pandas.DataFrame
        One row per participant with both periods: ``participant_id, sequence,
        <level>, <reference>, difference`` (the period values or changes and their
        difference).

    Notes
    -----
    In an AB/BA crossover the mean within-participant difference per sequence estimates
    the treatment effect plus (AB) or minus (BA) half the period effect; their average is
    the period-adjusted treatment effect of the mixed model without missing data.

    Examples
    --------
    >>> roster = pd.DataFrame({"participant_id": ["P1", "P2"], "sequence": ["KP", "PK"]})
    >>> d = pd.DataFrame({"participant_id": ["P1"] * 4 + ["P2"] * 4,
    ...     "period": [1, 1, 2, 2] * 2,
    ...     "treatment": ["ketamine"] * 2 + ["placebo"] * 2 + ["placebo"] * 2 + ["ketamine"] * 2,
    ...     "night": ["baseline", "post1"] * 4,
    ...     "n3_min": [60.0, 75.0, 62.0, 63.0, 50.0, 52.0, 51.0, 60.0]})
    >>> w = within_participant_differences(d, roster, outcome="n3_min", time="night",
    ...                                    at="post1", baseline="baseline")
    >>> w[["participant_id", "sequence", "difference"]].to_numpy().tolist()
    [['P1', 'KP', 14.0], ['P2', 'PK', 7.0]]
    """
    _need(
        data,
        ["participant_id", "period", treatment, time, outcome],
        "within-participant differences",
        "data",
    )
    seq_of = _sequence_of(roster, sequence)
    d = data[["participant_id", "period", treatment, time, outcome]].copy()
    d[time] = d[time].astype(str)
    d["_y"] = pd.to_numeric(d[outcome], errors="coerce")
    cell = d.pivot_table(
        index=["participant_id", "period"], columns=time, values="_y", aggfunc="mean"
    )
    if str(at) not in cell.columns:
        raise InputError(
            f"Cannot compute within-participant differences of {outcome}: no {time} "
            f"{at!r} in the data (present: {sorted(map(str, cell.columns))})."
        )
    value = cell[str(at)]
    if baseline is not None:
        if str(baseline) not in cell.columns:
            raise InputError(
                f"Cannot compute within-participant differences of {outcome}: no {time} "
                f"{baseline!r} in the data (present: {sorted(map(str, cell.columns))})."
            )
        value = value - cell[str(baseline)]
    arm = d.drop_duplicates(["participant_id", "period"]).set_index(["participant_id", "period"])[
        treatment
    ]
    per = pd.DataFrame({"value": value, "arm": arm.reindex(value.index).astype(str)}).dropna()
    wide = per.reset_index().pivot_table(
        index="participant_id", columns="arm", values="value", aggfunc="mean"
    )
    if level not in wide.columns or reference not in wide.columns:
        return pd.DataFrame(columns=["participant_id", "sequence", level, reference, "difference"])
    wide = wide[[level, reference]].dropna()
    out = wide.reset_index()
    out.insert(1, "sequence", out["participant_id"].map(seq_of).astype(str))
    out["difference"] = out[level] - out[reference]
    out.columns.name = None
    return out.sort_values(["sequence", "participant_id"], kind="mergesort").reset_index(drop=True)


def summarise_differences(
    differences: pd.DataFrame, *, sequence_order: Sequence[str] | None = None
) -> pd.DataFrame:
    """Summary of :func:`within_participant_differences` per sequence and overall.

    Returns
    -------
    pandas.DataFrame
        ``sequence, n, mean, sd, median, min, max`` of the differences (``sd`` with
        ``ddof = 1``).

    Examples
    --------
    >>> w = pd.DataFrame({"sequence": ["KP", "KP", "PK"], "difference": [4.0, 6.0, 1.0]})
    >>> summarise_differences(w)[["sequence", "n", "mean"]].to_numpy().tolist()
    [['KP', 2, 5.0], ['PK', 1, 1.0], ['all', 3, 3.6666666666666665]]
    """
    seqs = _ordered(differences["sequence"].tolist(), sequence_order)
    rows = []
    for s in [*seqs, _ALL]:
        v = (
            differences["difference"]
            if s == _ALL
            else differences.loc[differences["sequence"] == s, "difference"]
        ).astype(float)
        arr = v.to_numpy()
        rows.append(
            {
                "sequence": s,
                "n": len(arr),
                "mean": float(arr.mean()) if len(arr) else math.nan,
                "sd": float(arr.std(ddof=1)) if len(arr) > 1 else math.nan,
                "median": float(np.median(arr)) if len(arr) else math.nan,
                "min": float(arr.min()) if len(arr) else math.nan,
                "max": float(arr.max()) if len(arr) else math.nan,
            }
        )
    return pd.DataFrame(rows, columns=["sequence", "n", "mean", "sd", "median", "min", "max"])
