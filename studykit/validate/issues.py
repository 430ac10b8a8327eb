"""The issue table: one row per problem found in a study's files.

Every check of :mod:`studykit.validate` reports what it finds here: file, row number as in
the file, participant, night, column, raw value, rule, severity and a message saying how to
fix it (:data:`ISSUE_COLUMNS`). :class:`IssueCollector` gathers issues of one table as row
positions while the table is parsed; :func:`one_issue` makes a single issue row for
file-level and cross-table findings.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "ISSUE_COLUMNS",
    "MAX_VALUE_CHARS",
    "MAX_MESSAGE_CHARS",
    "shorten",
    "shorten_values",
    "IssueCollector",
    "empty_issues",
    "one_issue",
    "sort_issues",
    "describe_issue",
    "as_text",
]

#: Columns of every issue table.
ISSUE_COLUMNS = (
    "file",
    "row",
    "participant_id",
    "night",
    "column",
    "value",
    "rule",
    "severity",
    "message",
)
#: Longest raw value an issue shows; longer values are cut and their length is given.
MAX_VALUE_CHARS = 200
#: Longest message an issue carries (a message quoting a huge value is cut the same way).
MAX_MESSAGE_CHARS = 2000


def shorten(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was; short text unchanged.

    A bad value can be megabytes long (a whole file in one cell): issue tables and
    messages show its start and its length, never all of it.

    Examples
    --------
    >>> shorten("x" * 5000, 10)
    'xxxxxxxxxx... (5,000 characters)'
    >>> shorten("P01")
    'P01'
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


def shorten_values(values: pd.Series, limit: int = MAX_VALUE_CHARS) -> pd.Series:
    """:func:`shorten` applied to every string of ``values`` (others unchanged).

    Examples
    --------
    >>> shorten_values(pd.Series(["ok", "y" * 300]), 5).tolist()
    ['ok', 'yyyyy... (300 characters)']
    """
    lengths = values.map(lambda v: len(v) if isinstance(v, str) else 0)
    long = (lengths > limit).to_numpy()
    if not long.any():
        return values
    out = values.copy()
    out[long] = values[long].map(lambda v: shorten(v, limit))
    return out


def empty_issues() -> pd.DataFrame:
    """An issue table with no rows (the columns of :data:`ISSUE_COLUMNS`).

    Examples
    --------
    >>> list(empty_issues().columns) == list(ISSUE_COLUMNS)
    True
    """
    return pd.DataFrame(
        {
            "file": pd.Series([], dtype=object),
            "row": pd.Series([], dtype="Int64"),
            "participant_id": pd.Series([], dtype=object),
            "night": pd.Series([], dtype=object),
            "column": pd.Series([], dtype=object),
            "value": pd.Series([], dtype=object),
            "rule": pd.Series([], dtype=object),
            "severity": pd.Series([], dtype=object),
            "message": pd.Series([], dtype=object),
        }
    )


def describe_issue(issue: pd.Series) -> str:
    """One issue row as a sentence: where, column, value and message.

    Examples
    --------
    >>> describe_issue(one_issue("nights.csv", "tst_min", "range", "error", "too high",
    ...                          row=4, value="999").iloc[0])
    "row 4, column tst_min = '999': too high"
    """
    where = f"row {issue['row']}" if pd.notna(issue["row"]) else "file"
    return f"{where}, column {issue['column']} = {issue['value']!r}: {issue['message']}"


class IssueCollector:
    """Collects the issues of one table as positions (0-based rows; -1 = not tied to a row).

    Examples
    --------
    >>> raw = pd.DataFrame({"kss": ["3", "12"]})
    >>> c = IssueCollector(raw)
    >>> c.add(np.array([1]), "kss", "range", "error", "above the maximum")
    >>> c.frame()[["pos", "column", "value", "rule"]].values.tolist()
    [[1, 'kss', '12', 'range']]
    """

    def __init__(self, raw: pd.DataFrame) -> None:
        self.raw = raw
        # one entry per add(): parallel arrays, turned into one frame by frame(); a frame per
        # add() would make a file with thousands of (unknown) columns cost seconds
        self._pos: list[np.ndarray] = []
        self._cols: dict[str, list[np.ndarray]] = {
            c: [] for c in ("column", "value", "rule", "severity", "message")
        }
        self._codes: np.ndarray | None = None

    def by_value(self, codes: np.ndarray) -> IssueCollector:
        """The same collector, taking positions into a column's distinct values.

        ``codes[row]`` is the distinct value of each row (:func:`pandas.factorize`); an
        issue added at a distinct value's position is added at every row holding it (a
        column is parsed once per distinct value).

        Examples
        --------
        >>> c = IssueCollector(pd.DataFrame({"x": ["a", "b", "a"]}))
        >>> c.by_value(np.array([0, 1, 0])).add(np.array([0]), "x", "code", "error", "bad")
        >>> c.frame()[["pos", "value"]].values.tolist()
        [[0, 'a'], [2, 'a']]
        """
        view = IssueCollector.__new__(IssueCollector)
        view.raw, view._pos, view._cols = self.raw, self._pos, self._cols
        view._codes = np.asarray(codes, dtype=np.int64)
        return view

    def add(
        self,
        positions: np.ndarray,
        column: str,
        rule: str,
        severity: str,
        message: str | pd.Series | np.ndarray,
        values: pd.Series | np.ndarray | str | None = None,
    ) -> None:
        """Add one issue per position; ``values`` default to the raw cells of ``column``.

        ``message`` and ``values`` are one string for all, or one item per position.
        """
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size == 0:
            return
        if self._codes is not None:
            # positions of distinct values -> every row holding one (items follow their value)
            index = np.full(int(self._codes.max()) + 1, -1, dtype=np.int64)
            index[positions] = np.arange(positions.size)
            of_row = index[self._codes]
            positions = np.flatnonzero(of_row >= 0)
            message, values = (
                x
                if x is None or isinstance(x, str)
                else np.asarray(x, dtype=object)[of_row[positions]]
                for x in (message, values)
            )
        n = positions.size
        if values is None:
            if column in self.raw.columns and (positions >= 0).all():
                values = as_text(self.raw[column].iloc[positions]).to_numpy()
            else:
                values = ""
        self._pos.append(positions)
        for name, item in (
            ("column", column),
            ("value", values),
            ("rule", rule),
            ("severity", severity),
            ("message", message),
        ):
            if isinstance(item, str):
                arr = np.empty(n, dtype=object)
                arr[:] = item
            else:
                arr = np.asarray(item, dtype=object)
            self._cols[name].append(arr)

    def frame(self) -> pd.DataFrame:
        """All issues so far: ``pos, column, value, rule, severity, message``."""
        if not self._pos:
            return pd.DataFrame(
                {"pos": pd.Series([], dtype=np.int64)}
                | {c: pd.Series([], dtype=object) for c in self._cols}
            )
        out = {"pos": np.concatenate(self._pos)}
        for c, parts in self._cols.items():
            out[c] = np.concatenate(parts)
        frame = pd.DataFrame(out)
        frame["value"] = shorten_values(frame["value"])
        frame["message"] = shorten_values(frame["message"], MAX_MESSAGE_CHARS)
        return frame


def as_text(s: pd.Series) -> pd.Series:
    """Values as display strings ('' for missing).

    Examples
    --------
    >>> as_text(pd.Series([1.5, None])).tolist()
    ['1.5', '']
    """
    if s.dtype == object or isinstance(s.dtype, pd.StringDtype):
        return s.astype(object).where(s.notna(), "").astype(str)
    return s.astype(str).where(s.notna(), "")


def sort_issues(issues: pd.DataFrame) -> pd.DataFrame:
    """Group by file (in order of first appearance), file-level issues first, then by row.

    Examples
    --------
    >>> both = pd.concat([one_issue("a.csv", "x", "range", "error", "m", row=3),
    ...                   one_issue("a.csv", "", "file", "warning", "m")], ignore_index=True)
    >>> sort_issues(both)["rule"].tolist()
    ['file', 'range']
    """
    order = {f: i for i, f in enumerate(dict.fromkeys(issues["file"]))}
    key = pd.DataFrame(
        {
            "f": issues["file"].map(order).to_numpy(),
            "has_row": issues["row"].notna().to_numpy(),
            "row": issues["row"].fillna(0).to_numpy(dtype="int64"),
        }
    )
    idx = key.sort_values(["f", "has_row", "row"], kind="stable").index
    return issues.iloc[idx].reset_index(drop=True)


def one_issue(
    file: str,
    column: str,
    rule: str,
    severity: str,
    message: str,
    *,
    row: Any = pd.NA,
    participant_id: Any = None,
    night: Any = None,
    value: str = "",
) -> pd.DataFrame:
    """A one-row issue table (file-level or cross-table issue).

    Examples
    --------
    >>> one_issue("diary.csv", "", "file", "warning", "ignored")[["file", "rule"]].values.tolist()
    [['diary.csv', 'file']]
    """
    frame = pd.DataFrame(
        {
            "file": [file],
            "row": pd.array([row], dtype="Int64"),
            "participant_id": [participant_id],
            "night": [night],
            "column": [column],
            "value": [shorten(value)],
            "rule": [rule],
            "severity": [severity],
            "message": [shorten(message, MAX_MESSAGE_CHARS)],
        }
    )
    return frame.astype({c: object for c in ISSUE_COLUMNS if c != "row"})
