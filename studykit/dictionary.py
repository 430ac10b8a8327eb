"""The data dictionary: one row per study variable, the single source of truth.

``data_dictionary.csv`` (repo root; a packaged copy ships in ``studykit/data``) names every
variable of every table (``roster``, ``periods``, ``nights``, ``epochs``, ``diary``) with its
type, unit, range, allowed codes and whether it is required, a key or a direct identifier
(PHI). Loaders parse and check data against it (:mod:`studykit.validate`); models take their
reference levels from it (the first code is the reference level).

The dictionary is itself checked when loaded: duplicate names, unknown types or roles, a
minimum above the maximum, malformed codes and the like raise one
:class:`~studykit.errors.DictionaryError` that lists every problem with its line number.

Columns of the CSV
------------------
``name, label, table, role, type`` (required) and ``unit, minimum, maximum, codes, required,
key, identifier, missing_codes, paramcd, nsrr_name, description, derivation`` (optional).

* ``role``: identifier, design, outcome, covariate or derived.
* ``type``: integer, number, string, categorical, boolean, date or datetime.
* ``codes``: ``code, label | code, label``; the first code is the reference level. Required
  for categorical variables; optional for integer (a coded scale such as the KSS) and boolean
  (``1, Yes | 0, No``).
* ``required``, ``key``, ``identifier``: yes / no. ``key`` columns together identify a row;
  ``identifier`` flags protected health information, never exported.
* ``missing_codes``: values meaning "missing" (e.g. ``-99``), ``|``-separated.
* ``paramcd``: a short CDISC-style parameter code (at most 8 upper-case letters or digits);
  ``nsrr_name``: the NSRR harmonized name where one exists.

REDCap data dictionaries convert to and from this format in :mod:`studykit.redcap`;
Frictionless Table Schemas are written by :mod:`studykit.schema`.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from studykit.errors import DictionaryError, InputError

__all__ = [
    "TYPES",
    "ROLES",
    "DICTIONARY_COLUMNS",
    "MISSING_TOKENS",
    "Variable",
    "DataDictionary",
    "load_dictionary",
    "parse_codes",
    "format_codes",
    "TRUE_TOKENS",
    "FALSE_TOKENS",
]

logger = logging.getLogger(__name__)

#: Variable types a dictionary may use.
TYPES = ("integer", "number", "string", "categorical", "boolean", "date", "datetime")
#: Variable roles.
ROLES = ("identifier", "design", "outcome", "covariate", "derived")
#: Columns of ``data_dictionary.csv``, in the order they are written.
DICTIONARY_COLUMNS = (
    "name",
    "label",
    "table",
    "role",
    "type",
    "unit",
    "minimum",
    "maximum",
    "codes",
    "required",
    "key",
    "identifier",
    "missing_codes",
    "paramcd",
    "nsrr_name",
    "description",
    "derivation",
)
_REQUIRED_COLUMNS = ("name", "label", "table", "role", "type")

#: Text read as true / false (lower-cased) in boolean cells and codes.
TRUE_TOKENS = frozenset({"1", "true", "t", "yes", "y"})
FALSE_TOKENS = frozenset({"0", "false", "f", "no", "n"})
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_PARAMCD_RE = re.compile(r"^[A-Z][A-Z0-9]{0,7}$")
_ISO_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2})?)?$")


def parse_codes(text: str) -> tuple[tuple[str, str], ...]:
    """Parse ``"code, label | code, label"`` into ``((code, label), ...)``.

    The label is everything after the first comma, so labels may contain commas. An empty
    string gives an empty tuple.

    Parameters
    ----------
    text : str
        Codes in REDCap choice syntax.

    Returns
    -------
    tuple of (str, str)
        ``(code, label)`` pairs in the order given (the first is the reference level).

    Raises
    ------
    ValueError
        When a choice has no comma, an empty code, or a code appears twice.

    Examples
    --------
    >>> parse_codes("placebo, Placebo (saline) | ketamine, Ketamine")
    (('placebo', 'Placebo (saline)'), ('ketamine', 'Ketamine'))
    >>> parse_codes("7, Sleepy, no effort to stay awake")
    (('7', 'Sleepy, no effort to stay awake'),)
    """
    text = (text or "").strip()
    if not text:
        return ()
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for part in text.split("|"):
        part = part.strip()
        if "," not in part:
            raise ValueError(
                f"choice {part!r} has no comma; write each choice as 'code, label' and separate "
                "choices with '|' (e.g. '1, Yes | 0, No')"
            )
        code, label = (p.strip() for p in part.split(",", 1))
        if not code:
            raise ValueError(f"choice {part!r} has an empty code")
        if code in seen:
            raise ValueError(f"code {code!r} appears twice")
        seen.add(code)
        out.append((code, label))
    return tuple(out)


def format_codes(codes: Iterable[tuple[str, str]]) -> str:
    """Format ``(code, label)`` pairs as ``"code, label | code, label"``.

    Examples
    --------
    >>> format_codes([("1", "Yes"), ("0", "No")])
    '1, Yes | 0, No'
    """
    return " | ".join(f"{c}, {lab}" for c, lab in codes)


@dataclass(frozen=True)
class Variable:
    """One variable of one table, as the data dictionary describes it.

    Attributes
    ----------
    name, label, table : str
        Column name, human-readable label and the table it belongs to.
    role : str
        One of :data:`ROLES`.
    type : str
        One of :data:`TYPES`.
    unit : str
        Unit of measurement ('' when none).
    minimum, maximum : float or str or None
        Allowed range (numbers; ISO dates for date / datetime variables), inclusive.
    codes : tuple of (str, str)
        Allowed ``(code, label)`` pairs, reference level first; empty when any value of the
        type is allowed.
    required, key, identifier : bool
        Must be present; part of the table's key; a direct identifier (PHI).
    missing_codes : tuple of str
        Values that mean "missing" (e.g. ``-99``).
    paramcd, nsrr_name, description, derivation : str
        CDISC-style parameter code, NSRR harmonized name, definition (with reference) and,
        for derived variables, how they are derived.
    """

    name: str
    label: str
    table: str
    role: str
    type: str
    unit: str = ""
    minimum: float | str | None = None
    maximum: float | str | None = None
    codes: tuple[tuple[str, str], ...] = ()
    required: bool = False
    key: bool = False
    identifier: bool = False
    missing_codes: tuple[str, ...] = ()
    paramcd: str = ""
    nsrr_name: str = ""
    description: str = ""
    derivation: str = ""

    @property
    def levels(self) -> list[str]:
        """The codes in dictionary order (first = reference level)."""
        return [c for c, _ in self.codes]

    @property
    def code_labels(self) -> dict[str, str]:
        """Mapping code -> label."""
        return dict(self.codes)

    def to_row(self) -> dict[str, str]:
        """The variable as one row of ``data_dictionary.csv`` (all strings)."""
        return {
            "name": self.name,
            "label": self.label,
            "table": self.table,
            "role": self.role,
            "type": self.type,
            "unit": self.unit,
            "minimum": format_bound(self.minimum),
            "maximum": format_bound(self.maximum),
            "codes": format_codes(self.codes),
            "required": "yes" if self.required else "no",
            "key": "yes" if self.key else "no",
            "identifier": "yes" if self.identifier else "no",
            "missing_codes": " | ".join(self.missing_codes),
            "paramcd": self.paramcd,
            "nsrr_name": self.nsrr_name,
            "description": self.description,
            "derivation": self.derivation,
        }


def format_bound(value: float | str | None) -> str:
    """A range bound as written in the dictionary CSV (``""`` for none, ``7`` for 7.0).

    Examples
    --------
    >>> format_bound(7.0), format_bound(None), format_bound("2024-01-01")
    ('7', '', '2024-01-01')
    """
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class DataDictionary:
    """The study's variables, grouped by table.

    Build one with :func:`load_dictionary` (or :meth:`from_frame`); it is checked on
    construction and never changes afterwards.

    Parameters
    ----------
    variables : iterable of Variable
        The variables, in dictionary order.
    source : str, optional
        Where the dictionary came from (used in messages).

    Examples
    --------
    >>> dd = load_dictionary()
    >>> dd.tables
    ('roster', 'periods', 'nights', 'epochs', 'diary')
    >>> dd.levels("nights", "treatment")
    ['placebo', 'ketamine']
    >>> dd.keys("nights")
    ['participant_id', 'period', 'night']
    >>> sorted(dd.identifier_columns())
    ['initials', 'screening_date']
    """

    def __init__(self, variables: Iterable[Variable], *, source: str = "<dictionary>") -> None:
        self._variables: tuple[Variable, ...] = tuple(variables)
        self.source = source
        problems = _check_variables(self._variables, lines=None)
        if problems:
            raise DictionaryError(problems_message(source, problems))
        self._by_table: dict[str, dict[str, Variable]] = {}
        for v in self._variables:
            self._by_table.setdefault(v.table, {})[v.name] = v

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_frame(cls, frame: pd.DataFrame, *, source: str = "<frame>") -> DataDictionary:
        """Build a dictionary from a frame with the columns of ``data_dictionary.csv``.

        Every row is checked; all problems are reported together in one
        :class:`~studykit.errors.DictionaryError` (line numbers count the header as line 1).
        """
        rows = frame.fillna("").astype(str).to_dict("records")
        return cls(
            _variables_from_rows(rows, source=source, columns=list(frame.columns)), source=source
        )

    # -- access -------------------------------------------------------------------------
    @property
    def tables(self) -> tuple[str, ...]:
        """Table names in dictionary order."""
        return tuple(self._by_table)

    def __iter__(self) -> Iterator[Variable]:
        return iter(self._variables)

    def __len__(self) -> int:
        return len(self._variables)

    def __repr__(self) -> str:
        counts = ", ".join(f"{t}: {len(v)}" for t, v in self._by_table.items())
        return f"DataDictionary({len(self)} variables; {counts})"

    def _table(self, table: str) -> dict[str, Variable]:
        try:
            return self._by_table[table]
        except KeyError as exc:
            raise DictionaryError(
                f"Unknown table {table!r}. The data dictionary ({self.source}) defines the "
                f"tables {', '.join(self.tables)}; use one of these or add the table's "
                "variables to the dictionary."
            ) from exc

    def variables(self, table: str) -> list[Variable]:
        """The variables of ``table`` in dictionary order.

        Examples
        --------
        >>> [v.name for v in load_dictionary().variables("epochs")]
        ['participant_id', 'period', 'night', 'epoch', 'onset_s', 'stage']
        """
        return list(self._table(table).values())

    def names(self, table: str) -> list[str]:
        """Column names of ``table`` in dictionary order."""
        return list(self._table(table))

    def get(self, table: str, name: str) -> Variable:
        """The variable ``name`` of ``table``.

        Examples
        --------
        >>> v = load_dictionary().get("nights", "tst_min")
        >>> (v.type, v.unit, v.minimum, v.maximum, v.paramcd)
        ('number', 'min', 0.0, 1440.0, 'TST')
        """
        variables = self._table(table)
        try:
            return variables[name]
        except KeyError as exc:
            close = [n for n in variables if n.lower() == name.lower()]
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise DictionaryError(
                f"Table {table!r} has no variable {name!r} in the data dictionary "
                f"({self.source}).{hint} Its variables: {_cap(list(variables), 30)}."
            ) from exc

    def __contains__(self, item: object) -> bool:
        if isinstance(item, tuple) and len(item) == 2:
            return item[0] in self._by_table and item[1] in self._by_table[item[0]]
        return False

    def levels(self, table: str, name: str) -> list[str]:
        """Allowed codes of a coded variable in dictionary order (first = reference level).

        Examples
        --------
        >>> load_dictionary().levels("nights", "night")
        ['baseline', 'post1', 'post2', 'day7']
        """
        v = self.get(table, name)
        if not v.codes:
            raise DictionaryError(
                f"Variable {name!r} of table {table!r} has no codes (type {v.type}); only coded "
                "variables (categorical, coded integer, boolean) have levels."
            )
        return v.levels

    def keys(self, table: str) -> list[str]:
        """The key columns of ``table`` (together they identify a row)."""
        return [v.name for v in self._table(table).values() if v.key]

    def identifier_columns(self) -> set[str]:
        """Names of variables flagged as direct identifiers (PHI), never exported."""
        return {v.name for v in self._variables if v.identifier}

    # -- conversion ---------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        """The dictionary as a frame of strings with :data:`DICTIONARY_COLUMNS`."""
        return pd.DataFrame([v.to_row() for v in self._variables], columns=list(DICTIONARY_COLUMNS))

    def to_csv(self, path: str | Path) -> Path:
        """Write the dictionary as ``data_dictionary.csv``-style CSV (UTF-8); return the path."""
        path = Path(path)
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(DICTIONARY_COLUMNS), lineterminator="\n")
            writer.writeheader()
            writer.writerows(v.to_row() for v in self._variables)
        return path


#: Values read as missing in every column (besides a variable's own missing codes).
MISSING_TOKENS = frozenset({"", "NA", "N/A", "n/a", "NaN", "nan", "NULL", "null", "None", "."})


# ---------------------------------------------------------------------------------------
# loading and checking
# ---------------------------------------------------------------------------------------
def load_dictionary(path: str | Path | None = None) -> DataDictionary:
    """Read and check a data dictionary CSV.

    Parameters
    ----------
    path : str or Path, optional
        A ``data_dictionary.csv``. Default: the copy packaged with studykit (the repo-root
        ``data_dictionary.csv``).

    Returns
    -------
    DataDictionary

    Raises
    ------
    InputError
        The file is missing or cannot be read as UTF-8 CSV.
    DictionaryError
        The dictionary is malformed; the message lists every problem with its line number.

    Examples
    --------
    >>> dd = load_dictionary()
    >>> len(dd.variables("nights")) > 30
    True
    >>> dd.get("diary", "kss").levels[:2]
    ['1', '2']
    """
    if path is None:
        resource = resources.files("studykit").joinpath("data/data_dictionary.csv")
        text = resource.read_text(encoding="utf-8-sig")
        source = "studykit/data/data_dictionary.csv"
    else:
        p = Path(path)
        source = str(p)
        if not p.exists():
            raise InputError(
                f"Data dictionary {p} not found. Check the path, or omit it to use the "
                "dictionary packaged with studykit."
            )
        if p.is_dir():
            raise InputError(f"Data dictionary {p} is a directory; pass the CSV file inside it.")
        try:
            text = p.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"Data dictionary {p} is not UTF-8 text ({exc.reason} at byte {exc.start}). "
                "Save it as 'CSV UTF-8' and try again."
            ) from exc
    if not text.strip():
        raise DictionaryError(
            f"Data dictionary {source} is empty; it needs a header line with at least the "
            f"columns {', '.join(_REQUIRED_COLUMNS)} and one line per variable."
        )
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in (reader.fieldnames or [])]
    reader.fieldnames = columns
    rows = list(reader)
    return DataDictionary(_variables_from_rows(rows, source=source, columns=columns), source=source)


def _variables_from_rows(
    rows: list[dict[str, Any]], *, source: str, columns: list[str]
) -> list[Variable]:
    missing = [c for c in _REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DictionaryError(
            f"Data dictionary {source} lacks the column(s) {', '.join(missing)}. Its header "
            f"has {_cap(columns, 20)}; required are {', '.join(_REQUIRED_COLUMNS)} (optional: "
            f"{', '.join(c for c in DICTIONARY_COLUMNS if c not in _REQUIRED_COLUMNS)})."
        )
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes:
        raise DictionaryError(f"Data dictionary {source} repeats the column(s) {', '.join(dupes)}.")
    unknown = [c for c in columns if c not in DICTIONARY_COLUMNS]
    if unknown:
        logger.warning("data dictionary %s: ignoring unknown column(s) %s", source, unknown)
    problems: list[str] = []
    variables: list[Variable] = []
    lines: list[int] = []
    for i, row in enumerate(rows):
        line = i + 2
        row = {k: ("" if row.get(k) is None else str(row.get(k)).strip()) for k in columns}
        if not any(row.values()):
            continue  # blank line
        v, row_problems = _variable_from_row(row)
        problems.extend(f"line {line}: {p}" for p in row_problems)
        if v is not None:
            variables.append(v)
            lines.append(line)
    problems.extend(_check_variables(variables, lines=lines))
    if problems:
        raise DictionaryError(problems_message(source, problems))
    if not variables:
        raise DictionaryError(f"Data dictionary {source} has a header but no variables.")
    return variables


def _flag(value: str, column: str, problems: list[str]) -> bool:
    low = value.lower()
    if low == "":
        return False
    if low in TRUE_TOKENS:
        return True
    if low in FALSE_TOKENS:
        return False
    problems.append(f"{column} is {value!r}; write yes or no")
    return False


def _bound(value: str, vtype: str, column: str, problems: list[str]) -> float | str | None:
    if value == "":
        return None
    if vtype in ("date", "datetime"):
        if not _ISO_DATE_RE.match(value):
            problems.append(f"{column} {value!r} is not an ISO date (YYYY-MM-DD)")
            return None
        return value
    try:
        number = float(value)
    except ValueError:
        problems.append(f"{column} {value!r} is not a number")
        return None
    if not math.isfinite(number):
        problems.append(f"{column} {value!r} is not a finite number")
        return None
    return number


def _variable_from_row(row: Mapping[str, str]) -> tuple[Variable | None, list[str]]:
    problems: list[str] = []
    name, table = row.get("name", ""), row.get("table", "")
    for col, val in (("name", name), ("table", table)):
        if not val:
            problems.append(f"{col} is empty")
        elif not _NAME_RE.match(val):
            problems.append(
                f"{col} {val!r} is not a valid name (letters, digits and underscores, starting "
                "with a letter)"
            )
    vtype = row.get("type", "").lower()
    if vtype not in TYPES:
        problems.append(
            f"type {row.get('type', '')!r} of {name!r} is unknown; use one of {', '.join(TYPES)}"
        )
    role = row.get("role", "").lower()
    if role not in ROLES:
        problems.append(
            f"role {row.get('role', '')!r} of {name!r} is unknown; use one of {', '.join(ROLES)}"
        )
    if not row.get("label", ""):
        problems.append(f"label of {name!r} is empty; give a human-readable label")
    minimum = _bound(row.get("minimum", ""), vtype, "minimum", problems)
    maximum = _bound(row.get("maximum", ""), vtype, "maximum", problems)
    if minimum is not None and maximum is not None:
        lo = pd.Timestamp(minimum) if isinstance(minimum, str) else minimum
        hi = pd.Timestamp(maximum) if isinstance(maximum, str) else maximum
        if lo > hi:
            problems.append(
                f"minimum {row['minimum']} of {name!r} is above its maximum {row['maximum']}"
            )
    if minimum is not None and vtype in ("string", "categorical", "boolean"):
        problems.append(f"{name!r} is of type {vtype} and cannot have a minimum")
    if maximum is not None and vtype in ("string", "categorical", "boolean"):
        problems.append(f"{name!r} is of type {vtype} and cannot have a maximum")
    try:
        codes = parse_codes(row.get("codes", ""))
    except ValueError as exc:
        problems.append(f"codes of {name!r} are malformed: {exc}")
        codes = ()
    if vtype == "categorical" and not codes and not any("codes of" in p for p in problems):
        problems.append(
            f"{name!r} is categorical but has no codes; list them as 'code, label | ...'"
        )
    if codes and vtype in ("string", "number", "date", "datetime"):
        problems.append(
            f"{name!r} is of type {vtype}; codes are only for categorical, integer or boolean variables"
        )
    if codes and vtype == "integer":
        bad = [c for c, _ in codes if not re.fullmatch(r"[+-]?\d+", c)]
        if bad:
            problems.append(f"{name!r} is an integer but its codes {bad} are not integers")
    if codes and vtype == "boolean":
        lows = [c.lower() for c, _ in codes]
        if (
            len(codes) != 2
            or sum(c in TRUE_TOKENS for c in lows) != 1
            or sum(c in FALSE_TOKENS for c in lows) != 1
        ):
            problems.append(
                f"{name!r} is boolean; its codes must be one true and one false value such as "
                f"'1, Yes | 0, No' (got {format_codes(codes)!r})"
            )
    required = _flag(row.get("required", ""), "required", problems)
    key = _flag(row.get("key", ""), "key", problems)
    identifier = _flag(row.get("identifier", ""), "identifier", problems)
    if key and not required:
        problems.append(f"{name!r} is a key column and must be required (required = yes)")
    paramcd = row.get("paramcd", "")
    if paramcd and not _PARAMCD_RE.match(paramcd):
        problems.append(
            f"paramcd {paramcd!r} of {name!r} must be 1-8 upper-case letters or digits, starting "
            "with a letter (CDISC PARAMCD)"
        )
    missing_codes = tuple(m.strip() for m in row.get("missing_codes", "").split("|") if m.strip())
    if problems:
        return None, problems
    v = Variable(
        name=name,
        label=row.get("label", ""),
        table=table,
        role=role,
        type=vtype,
        unit=row.get("unit", ""),
        minimum=minimum,
        maximum=maximum,
        codes=codes,
        required=required,
        key=key,
        identifier=identifier,
        missing_codes=missing_codes,
        paramcd=paramcd,
        nsrr_name=row.get("nsrr_name", ""),
        description=row.get("description", ""),
        derivation=row.get("derivation", ""),
    )
    return v, []


def _check_variables(
    variables: tuple[Variable, ...] | list[Variable], *, lines: list[int] | None
) -> list[str]:
    """Checks across variables: duplicate (table, name) pairs."""
    problems = []
    seen: dict[tuple[str, str], int] = {}
    for i, v in enumerate(variables):
        where = f"line {lines[i]}" if lines else f"variable {i + 1}"
        k = (v.table, v.name)
        if k in seen:
            first = f"line {lines[seen[k]]}" if lines else f"variable {seen[k] + 1}"
            problems.append(
                f"{where}: variable {v.name!r} of table {v.table!r} is defined twice (first at "
                f"{first}); keep one definition"
            )
        else:
            seen[k] = i
        if v.type not in TYPES:
            problems.append(f"{where}: type {v.type!r} of {v.name!r} is unknown")
        if v.role not in ROLES:
            problems.append(f"{where}: role {v.role!r} of {v.name!r} is unknown")
    return problems


def problems_message(source: str, problems: list[str]) -> str:
    """One message listing a dictionary's problems (the first 20).

    Examples
    --------
    >>> problems_message("dd.csv", ["line 2: bad type"]).splitlines()[1]
    '  line 2: bad type'
    """
    shown = problems[:20]
    more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
    return (
        f"The data dictionary {source} has {len(problems)} problem(s); fix them and reload:\n  "
        + "\n  ".join(shown)
        + more
    )


def _cap(values: list[Any], n: int) -> str:
    shown = ", ".join(str(v) for v in values[:n])
    return shown + (f", ... ({len(values) - n} more)" if len(values) > n else "")
