"""Per-table rules on parsed values: range, unique keys and cross-field rules.

Cross-field rules are declared as data where a rule is a comparison (:class:`AtMost`,
:class:`SumEquals`, :class:`PercentOf`) and written as functions where a rule needs more
(lights on after lights off, dose vs treatment, night index, withdrawal reason). Each table's
rules are listed in :data:`ROW_RULES`, run in that order on the typed table of accepted and
rejected rows alike; each rule reports its findings to an
:class:`~studykit.validate.issues.IssueCollector`.

Notes
-----
Tolerances: :data:`MINUTES_TOLERANCE` (0.5 min: one 30-s epoch, which also covers values
rounded to 0.1 min) for sums and orderings of minutes; :data:`PERCENT_TOLERANCE` (0.5
percentage points: covers values rounded to whole percent) for percentages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from studykit.dictionary import Variable
from studykit.validate.issues import IssueCollector, as_text

__all__ = [
    "MINUTES_TOLERANCE",
    "PERCENT_TOLERANCE",
    "AtMost",
    "SumEquals",
    "PercentOf",
    "EventTiming",
    "ROW_RULES",
    "check_range",
    "check_keys",
]

#: Tolerance (minutes) of the sum rules: one 30-s epoch, which also covers values rounded to
#: 0.1 min.
MINUTES_TOLERANCE = 0.5
#: Tolerance (percentage points) of SE = TST / TIB and stage % = minutes / TST: covers values
#: rounded to whole percent.
PERCENT_TOLERANCE = 0.5
# comparisons allow for the floating-point error of values that are exactly on the tolerance
_EPS = 1e-9

Rule = Callable[[pd.DataFrame, IssueCollector], None]


# ---------------------------------------------------------------------------------------
# range and keys
# ---------------------------------------------------------------------------------------
def check_range(values: pd.Series, v: Variable, issues: IssueCollector) -> np.ndarray:
    """Add ``range`` issues for values outside ``v``'s minimum / maximum; return their mask.

    Examples
    --------
    >>> from studykit.dictionary import load_dictionary
    >>> kss = load_dictionary().get("diary", "kss")
    >>> c = IssueCollector(pd.DataFrame({"kss": ["3", "12"]}))
    >>> check_range(pd.Series([3, 12], dtype="Int64"), kss, c).tolist()
    [False, True]
    """
    out = np.zeros(len(values), dtype=bool)
    unit = f" {v.unit}" if v.unit else ""
    lo: Any = v.minimum
    hi: Any = v.maximum
    if v.type in ("date", "datetime"):
        lo = pd.Timestamp(lo) if lo is not None else None
        hi = pd.Timestamp(hi) if hi is not None else None
        arr = values
    else:
        arr = values.astype("float64") if v.type == "integer" else values
    lo_text = _fmt(v.minimum) if v.minimum is not None else "-inf"
    hi_text = _fmt(v.maximum) if v.maximum is not None else "inf"
    allowed = f"allowed: {lo_text} to {hi_text}{unit}"
    if lo is not None:
        below = (arr < lo).fillna(False).to_numpy(dtype=bool)
        out |= below
        issues.add(
            np.flatnonzero(below),
            v.name,
            "range",
            "error",
            f"below the minimum {_fmt(v.minimum)}{unit} ({allowed}); correct the value or "
            "leave it empty if unknown",
        )
    if hi is not None:
        above = (arr > hi).fillna(False).to_numpy(dtype=bool)
        out |= above
        issues.add(
            np.flatnonzero(above),
            v.name,
            "range",
            "error",
            f"above the maximum {_fmt(v.maximum)}{unit} ({allowed}); correct the value or "
            "leave it empty if unknown",
        )
    return out


def _fmt(x: Any) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def check_keys(
    typed: pd.DataFrame, renamed_raw: pd.DataFrame, keys: list[str], issues: IssueCollector
) -> None:
    """Add a ``unique_key`` issue on every row whose complete key is shared by another row.

    Examples
    --------
    >>> typed = pd.DataFrame({"participant_id": ["P01", "P01", "P02"]})
    >>> c = IssueCollector(typed)
    >>> check_keys(typed, typed, ["participant_id"], c)
    >>> c.frame()["pos"].tolist()
    [0, 1]
    """
    complete = typed[keys].notna().all(axis=1).to_numpy()
    keyframe = typed[keys]
    dup = keyframe.duplicated(keep=False).to_numpy() & complete
    pos = np.flatnonzero(dup)
    if pos.size == 0:
        return
    sub = keyframe.iloc[pos]
    counts = sub.groupby(keys, observed=True, sort=False)[keys[0]].transform("size").to_numpy()
    label = as_text(renamed_raw[keys[0]].iloc[pos]).to_numpy(dtype=object)
    for k in keys[1:]:
        label = label + "/" + as_text(renamed_raw[k].iloc[pos]).to_numpy(dtype=object)
    messages = pd.Series(counts).map(
        lambda c: (
            f"duplicate key: {c} rows share this {' x '.join(keys)}; keep one row per key "
            "(or fix the key values)"
        )
    )
    issues.add(pos, ", ".join(keys), "unique_key", "error", messages.to_numpy(), values=label)


# ---------------------------------------------------------------------------------------
# cross-field rules declared as data
# ---------------------------------------------------------------------------------------
def _num(typed: pd.DataFrame, name: str) -> np.ndarray | None:
    if name not in typed.columns:
        return None
    return typed[name].astype("float64").to_numpy(na_value=np.nan)


def _rule_values(typed: pd.DataFrame, names: list[str], pos: np.ndarray) -> np.ndarray:
    out = np.full(pos.size, "", dtype=object)
    for i, n in enumerate(names):
        part = as_text(typed[n].iloc[pos]).to_numpy(dtype=object)
        out = out + ("; " if i else "") + n + "=" + part
    return out


def _report(
    typed: pd.DataFrame,
    issues: IssueCollector,
    names: list[str],
    broken: np.ndarray,
    rule: str,
    severity: str,
    message: str,
) -> None:
    """Add an issue for each row where ``broken`` is true, with the values of ``names``."""
    pos = np.flatnonzero(broken)
    issues.add(
        pos, ", ".join(names), rule, severity, message, values=_rule_values(typed, names, pos)
    )


class _Comparison:
    """A rule comparing numeric columns, declared as data: an error where it is broken.

    Subclasses (frozen dataclasses) give ``rule``, ``message``, their :meth:`columns` and
    :meth:`broken` (the comparison, vectorized over rows); the rule is skipped when any of
    its columns is absent.
    """

    rule: str
    message: str

    def columns(self) -> list[str]:
        """The rule's columns, in the order :meth:`broken` takes their values."""
        raise NotImplementedError

    def broken(self, *values: np.ndarray) -> np.ndarray:
        """Rows breaking the rule (missing values never do)."""
        raise NotImplementedError

    def __call__(self, typed: pd.DataFrame, issues: IssueCollector) -> None:
        """Check the rule on ``typed``; skipped when a column is absent."""
        names = self.columns()
        values = [v for v in (_num(typed, c) for c in names) if v is not None]
        if len(values) < len(names):
            return
        with np.errstate(invalid="ignore", divide="ignore"):
            broken = self.broken(*values)
        _report(typed, issues, names, broken, self.rule, "error", self.message)


@dataclass(frozen=True)
class AtMost(_Comparison):
    """Rule ``smaller <= larger`` (within :data:`MINUTES_TOLERANCE`); an error when broken.

    Examples
    --------
    >>> rule = AtMost("tst_min", "tib_min", "tst_le_tib", "TST exceeds TIB")
    >>> typed = pd.DataFrame({"tst_min": [400.0, 500.0], "tib_min": [480.0, 480.0]})
    >>> c = IssueCollector(typed)
    >>> rule(typed, c)
    >>> c.frame()[["pos", "value"]].values.tolist()
    [[1, 'tst_min=500.0; tib_min=480.0']]
    """

    smaller: str
    larger: str
    rule: str
    message: str

    def columns(self) -> list[str]:
        return [self.smaller, self.larger]

    def broken(self, *values: np.ndarray) -> np.ndarray:
        a, b = values
        return a > b + MINUTES_TOLERANCE + _EPS


@dataclass(frozen=True)
class SumEquals(_Comparison):
    """Rule ``sum(parts) == total`` (within :data:`MINUTES_TOLERANCE`); an error when broken.

    Examples
    --------
    >>> rule = SumEquals(("a", "b"), "t", "stage_sum", "parts do not add up")
    >>> typed = pd.DataFrame({"a": [1.0, 1.0], "b": [2.0, 5.0], "t": [3.0, 3.0]})
    >>> c = IssueCollector(typed)
    >>> rule(typed, c)
    >>> c.frame()["pos"].tolist()
    [1]
    """

    parts: tuple[str, ...]
    total: str
    rule: str
    message: str

    def columns(self) -> list[str]:
        return [*self.parts, self.total]

    def broken(self, *values: np.ndarray) -> np.ndarray:
        *parts, total = values
        return np.abs(np.sum(parts, axis=0) - total) > MINUTES_TOLERANCE + _EPS


@dataclass(frozen=True)
class PercentOf(_Comparison):
    """Rule ``value == 100 * numerator / denominator`` (within :data:`PERCENT_TOLERANCE`).

    Not checked where the denominator is 0 or missing.

    Examples
    --------
    >>> rule = PercentOf("se_pct", "tst_min", "tib_min", "se_consistency", "SE is not TST/TIB")
    >>> typed = pd.DataFrame({"se_pct": [80.0, 70.0], "tst_min": [400.0, 400.0],
    ...                       "tib_min": [500.0, 500.0]})
    >>> c = IssueCollector(typed)
    >>> rule(typed, c)
    >>> c.frame()["pos"].tolist()
    [1]
    """

    value: str
    numerator: str
    denominator: str
    rule: str
    message: str

    def columns(self) -> list[str]:
        return [self.value, self.numerator, self.denominator]

    def broken(self, *values: np.ndarray) -> np.ndarray:
        pct, num, den = values
        expect = np.where(den > 0, 100.0 * num / den, np.nan)
        return np.abs(pct - expect) > PERCENT_TOLERANCE + _EPS


@dataclass(frozen=True)
class EventTiming:
    """Rule: an intercurrent event's timing is recorded exactly when its flag says it happened.

    ``flag`` is the boolean column of the event (e.g. ``sedative_use``), ``timing`` the
    column saying when it happened (e.g. ``sedative_first_night``). A timing without the
    event is an error; an event without its timing, or a timing whose flag is empty, a
    warning (an analysis that keeps the data before the event must then treat the whole
    period as after it).

    Examples
    --------
    >>> rule = EventTiming("sedative_use", "sedative_first_night")
    >>> typed = pd.DataFrame({"sedative_use": pd.array([True, False, True], dtype="boolean"),
    ...                       "sedative_first_night": pd.array([1, 2, None], dtype="Int64")})
    >>> c = IssueCollector(typed)
    >>> rule(typed, c)
    >>> c.frame()[["pos", "severity"]].values.tolist()
    [[1, 'error'], [2, 'warning']]
    """

    flag: str
    timing: str

    def __call__(self, typed: pd.DataFrame, issues: IssueCollector) -> None:
        """Check the rule on ``typed``; skipped unless both columns are present."""
        if not {self.flag, self.timing} <= set(typed.columns):
            return
        flag = typed[self.flag].astype("boolean")
        has_time = typed[self.timing].notna().to_numpy()
        names = [self.flag, self.timing]
        happened = flag.fillna(False).to_numpy(dtype=bool)
        not_happened = (~flag).fillna(False).to_numpy(dtype=bool)
        unknown = flag.isna().to_numpy()
        for broken, severity, message in (
            (
                not_happened & has_time,
                "error",
                f"{self.timing} is given but {self.flag} says the event did not happen; "
                f"clear {self.timing} or set {self.flag} to 1",
            ),
            (
                happened & ~has_time,
                "warning",
                f"{self.flag} without its timing: record {self.timing} (otherwise an "
                "analysis keeping the data before the event treats the whole period as after "
                "it)",
            ),
            (
                unknown & has_time,
                "warning",
                f"{self.timing} is given but {self.flag} is empty: record {self.flag} (an "
                "empty flag counts as no event)",
            ),
        ):
            _report(typed, issues, names, broken, "event_timing", severity, message)


# ---------------------------------------------------------------------------------------
# cross-field rules that need more than a comparison
# ---------------------------------------------------------------------------------------
def _lights_order(typed: pd.DataFrame, issues: IssueCollector) -> None:
    if not {"lights_off", "lights_on"} <= set(typed.columns):
        return
    off, on = typed["lights_off"], typed["lights_on"]
    names = ["lights_off", "lights_on"]
    _report(
        typed,
        issues,
        names,
        (on <= off).fillna(False).to_numpy(dtype=bool),
        "lights_order",
        "error",
        "lights on is not after lights off; check the dates (a night crosses midnight: "
        "lights on is on the next day)",
    )
    _report(
        typed,
        issues,
        names,
        ((on - off) > pd.Timedelta(hours=24)).fillna(False).to_numpy(dtype=bool),
        "lights_order",
        "warning",
        "more than 24 h between lights off and lights on; check the dates",
    )


def _night_index(typed: pd.DataFrame, issues: IssueCollector) -> None:
    if not {"night", "night_index"} <= set(typed.columns):
        return
    night = typed["night"]
    if not isinstance(night.dtype, pd.CategoricalDtype) or "baseline" not in list(
        night.cat.categories
    ):
        return
    is_base = (night == "baseline").fillna(False).to_numpy(dtype=bool)
    idx = typed["night_index"].astype("float64").to_numpy(na_value=np.nan)
    with np.errstate(invalid="ignore"):
        bad = (is_base & (idx != 0) & ~np.isnan(idx)) | (
            ~is_base & night.notna().to_numpy() & (idx == 0)
        )
    _report(
        typed,
        issues,
        ["night", "night_index"],
        bad,
        "night_index",
        "error",
        "night_index must be 0 for the baseline night and > 0 for nights after the infusion",
    )


def _dose_treatment(typed: pd.DataFrame, issues: IssueCollector) -> None:
    if not {"treatment", "dose_mg_kg"} <= set(typed.columns):
        return
    trt = typed["treatment"].astype(object)
    dose = _num(typed, "dose_mg_kg")
    if dose is None:
        return
    with np.errstate(invalid="ignore"):
        bad = ((trt == "placebo").fillna(False).to_numpy(dtype=bool) & (dose > 0)) | (
            (trt != "placebo").fillna(False).to_numpy(dtype=bool)
            & trt.notna().to_numpy()
            & (dose == 0)
        )
    _report(
        typed,
        issues,
        ["treatment", "dose_mg_kg"],
        bad,
        "dose_treatment",
        "error",
        "dose does not match treatment: placebo (saline) has dose 0, an active "
        "treatment a dose above 0",
    )


def _withdrawal_reason(typed: pd.DataFrame, issues: IssueCollector) -> None:
    if not {"status", "withdrawal_reason"} <= set(typed.columns):
        return
    bad = (typed["status"] == "withdrawn").fillna(False).to_numpy(dtype=bool) & typed[
        "withdrawal_reason"
    ].isna().to_numpy()
    issues.add(
        np.flatnonzero(bad),
        "withdrawal_reason",
        "withdrawal_reason",
        "warning",
        "participant withdrawn without a reason; record the reason (CONSORT flow)",
    )


def _stage_percent(stage: str) -> PercentOf:
    s = stage.upper()
    return PercentOf(
        f"{stage}_pct",
        f"{stage}_min",
        "tst_min",
        "pct_consistency",
        f"{s} % is not 100 x {s} minutes / TST (tolerance {PERCENT_TOLERANCE} percentage "
        "points); recompute it",
    )


#: The cross-field rules of each table, in the order they run.
ROW_RULES: dict[str, tuple[Rule, ...]] = {
    "nights": (
        _lights_order,
        AtMost(
            "tst_min",
            "tib_min",
            "tst_le_tib",
            "total sleep time exceeds time in bed (TST <= TIB by definition); recompute both "
            "from the hypnogram",
        ),
        AtMost(
            "tst_min",
            "spt_min",
            "tst_le_spt",
            "total sleep time exceeds the sleep period time (TST <= SPT); recompute from the "
            "hypnogram",
        ),
        AtMost(
            "spt_min",
            "tib_min",
            "spt_le_tib",
            "sleep period time exceeds time in bed (SPT <= TIB); recompute from the hypnogram",
        ),
        SumEquals(
            ("n1_min", "n2_min", "n3_min", "rem_min"),
            "tst_min",
            "stage_sum",
            f"N1 + N2 + N3 + REM minutes do not add up to TST (tolerance {MINUTES_TOLERANCE} "
            "min); recompute from the hypnogram",
        ),
        PercentOf(
            "se_pct",
            "tst_min",
            "tib_min",
            "se_consistency",
            f"sleep efficiency is not 100 x TST / TIB (tolerance {PERCENT_TOLERANCE} "
            "percentage points); recompute it",
        ),
        *(_stage_percent(s) for s in ("n1", "n2", "n3", "rem")),
        _night_index,
    ),
    "periods": (
        _dose_treatment,
        EventTiming("sedative_use", "sedative_first_night"),
        EventTiming("alcohol_use", "alcohol_first_night"),
    ),
    "roster": (_withdrawal_reason,),
}
