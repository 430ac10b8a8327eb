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

REDCap data dictionaries (the 18-column CSV REDCap downloads and uploads) and Frictionless
Table Schemas convert to and from this format: :meth:`DataDictionary.to_redcap`,
:func:`import_redcap`, :meth:`DataDictionary.table_schema`.
"""

from __future__ import annotations

import csv
import json
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
    "REDCAP_COLUMNS",
    "MISSING_TOKENS",
    "Variable",
    "DataDictionary",
    "load_dictionary",
    "parse_codes",
    "format_codes",
    "import_redcap",
    "export_redcap",
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

#: The 18 standard columns of a REDCap data dictionary CSV, in REDCap's order.
REDCAP_COLUMNS = (
    "Variable / Field Name",
    "Form Name",
    "Section Header",
    "Field Type",
    "Field Label",
    "Choices, Calculations, OR Slider Labels",
    "Field Note",
    "Text Validation Type OR Show Slider Number",
    "Text Validation Min",
    "Text Validation Max",
    "Identifier?",
    "Branching Logic (Show field only if...)",
    "Required Field?",
    "Custom Alignment",
    "Question Number (surveys only)",
    "Matrix Group Name",
    "Matrix Ranking?",
    "Field Annotation",
)

_TRUE_TOKENS = frozenset({"1", "true", "t", "yes", "y"})
_FALSE_TOKENS = frozenset({"0", "false", "f", "no", "n"})
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_PARAMCD_RE = re.compile(r"^[A-Z][A-Z0-9]{0,7}$")
_ISO_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2})?)?$")
_ANNOTATION_TAG = "studykit:"


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
            "minimum": _format_bound(self.minimum),
            "maximum": _format_bound(self.maximum),
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


def _format_bound(value: float | str | None) -> str:
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
            raise DictionaryError(_problems_message(source, problems))
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
        except KeyError:
            raise DictionaryError(
                f"Unknown table {table!r}. The data dictionary ({self.source}) defines the "
                f"tables {', '.join(self.tables)}; use one of these or add the table's "
                "variables to the dictionary."
            ) from None

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
        except KeyError:
            close = [n for n in variables if n.lower() == name.lower()]
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise DictionaryError(
                f"Table {table!r} has no variable {name!r} in the data dictionary "
                f"({self.source}).{hint} Its variables: {_cap(list(variables), 30)}."
            ) from None

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

    def table_schema(self, table: str) -> dict[str, Any]:
        """A Frictionless Table Schema (a JSON-ready dict) for ``table``.

        Categorical variables become ``string`` fields with an ``enum`` constraint (and the
        code labels under ``categories``); coded integers get an integer ``enum``; booleans
        list their ``trueValues`` / ``falseValues``; keys become the ``primaryKey``;
        ``participant_id`` (and ``period``) refer to the ``roster`` (``periods``) resource.

        Notes
        -----
        Table Schema specification: https://specs.frictionlessdata.io/table-schema/ (v1,
        with the v2 field-level ``missingValues`` and ``categories`` properties). The unit
        is kept in a custom ``unit`` property and the CDISC code in ``paramcd``.

        Examples
        --------
        >>> schema = load_dictionary().table_schema("epochs")
        >>> schema["primaryKey"]
        ['participant_id', 'period', 'night', 'epoch']
        >>> schema["fields"][-1]["constraints"]["enum"]
        ['W', 'N1', 'N2', 'N3', 'R', 'MT', 'ART', 'UNS']
        """
        fields = [_schema_field(v) for v in self.variables(table)]
        schema: dict[str, Any] = {
            "$schema": "https://specs.frictionlessdata.io/schemas/table-schema.json",
            "name": table,
            "fields": fields,
            "missingValues": sorted(MISSING_TOKENS),
        }
        keys = self.keys(table)
        if keys:
            schema["primaryKey"] = keys
        foreign = []
        names = self.names(table)
        for parent in ("roster", "periods"):
            if parent == table or parent not in self._by_table:
                continue
            parent_keys = self.keys(parent)
            if parent_keys and all(k in names for k in parent_keys):
                foreign.append(
                    {
                        "fields": parent_keys,
                        "reference": {"resource": parent, "fields": parent_keys},
                    }
                )
        if foreign:
            schema["foreignKeys"] = foreign
        return schema

    def to_redcap(self, *, tables: Iterable[str] | None = None) -> pd.DataFrame:
        """The dictionary as a REDCap data dictionary (the 18 standard columns).

        Each table becomes a REDCap form (instrument). REDCap field names are unique across
        a project and the record ID (the first field; here ``participant_id``) is shared by
        all forms, so ``participant_id`` appears once, and a name repeated in a later table
        is written as ``{table}_{name}``. Everything REDCap has no column for (table, name,
        role, unit, key, missing codes, CDISC code, NSRR name, description, derivation) is
        kept as JSON after ``studykit:`` in the Field Annotation, so that
        :func:`import_redcap` restores the dictionary exactly.

        Notes
        -----
        Types map to REDCap as: string -> text; integer -> text with validation
        ``integer`` (or radio buttons when coded); number -> text with ``number``;
        categorical -> dropdown; boolean -> yesno; date -> text ``date_ymd``; datetime ->
        text ``datetime_seconds_ymd``. The unit goes in the Field Note.

        Examples
        --------
        >>> rc = load_dictionary().to_redcap(tables=["periods"])
        >>> rc.loc[rc["Variable / Field Name"] == "treatment", "Field Type"].item()
        'dropdown'
        """
        selected = list(tables) if tables is not None else list(self.tables)
        for t in selected:
            self._table(t)
        record_id = None
        used: set[str] = set()
        rows = []
        for t in selected:
            for v in self.variables(t):
                if record_id is None:
                    record_id = v.name
                elif v.name == record_id:
                    continue  # the record ID is shared by every REDCap form
                field_name = v.name if v.name not in used else f"{t}_{v.name}"
                if field_name in used:
                    raise DictionaryError(
                        f"Cannot export to REDCap: field name {field_name!r} would be used twice."
                    )
                used.add(field_name)
                rows.append(_redcap_row(v, field_name))
        return pd.DataFrame(rows, columns=list(REDCAP_COLUMNS))


#: Values read as missing in every column (besides a variable's own missing codes).
MISSING_TOKENS = frozenset({"", "NA", "N/A", "n/a", "NaN", "nan", "NULL", "null", "None", "."})


def _schema_field(v: Variable) -> dict[str, Any]:
    ftype = {"categorical": "string", "number": "number"}.get(v.type, v.type)
    f: dict[str, Any] = {"name": v.name, "title": v.label, "type": ftype}
    if v.description:
        f["description"] = v.description
    if v.type == "date":
        f["format"] = "%Y-%m-%d"
    constraints: dict[str, Any] = {}
    if v.required:
        constraints["required"] = True
    if v.minimum is not None:
        constraints["minimum"] = _json_bound(v.minimum, v.type)
    if v.maximum is not None:
        constraints["maximum"] = _json_bound(v.maximum, v.type)
    if v.codes and v.type == "boolean":
        f["trueValues"] = [c for c, _ in v.codes if c.lower() in _TRUE_TOKENS]
        f["falseValues"] = [c for c, _ in v.codes if c.lower() in _FALSE_TOKENS]
    elif v.codes:
        enum: list[Any] = [int(c) for c in v.levels] if v.type == "integer" else v.levels
        constraints["enum"] = enum
        f["categories"] = [
            {"value": e, "label": lab} for e, (_, lab) in zip(enum, v.codes, strict=True)
        ]
    if constraints:
        f["constraints"] = constraints
    if v.missing_codes:
        f["missingValues"] = ["", *v.missing_codes]
    if v.unit:
        f["unit"] = v.unit
    if v.paramcd:
        f["paramcd"] = v.paramcd
    return f


def _json_bound(value: float | str, vtype: str) -> Any:
    if vtype == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _redcap_row(v: Variable, field_name: str) -> dict[str, str]:
    row = dict.fromkeys(REDCAP_COLUMNS, "")
    row["Variable / Field Name"] = field_name
    row["Form Name"] = v.table
    row["Field Label"] = v.label
    row["Field Note"] = v.unit
    row["Identifier?"] = "y" if v.identifier else ""
    row["Required Field?"] = "y" if v.required else ""
    validation = ""
    if v.type == "boolean":
        ftype = "yesno"
    elif v.type == "categorical":
        ftype = "dropdown"
        row["Choices, Calculations, OR Slider Labels"] = format_codes(v.codes)
    elif v.type == "integer" and v.codes:
        ftype = "radio"
        row["Choices, Calculations, OR Slider Labels"] = format_codes(v.codes)
    else:
        ftype = "text"
        validation = {
            "integer": "integer",
            "number": "number",
            "date": "date_ymd",
            "datetime": "datetime_seconds_ymd",
        }.get(v.type, "")
    row["Field Type"] = ftype
    row["Text Validation Type OR Show Slider Number"] = validation
    if validation:
        row["Text Validation Min"] = _format_bound(v.minimum)
        row["Text Validation Max"] = _format_bound(v.maximum)
    extra = {
        "table": v.table,
        "name": v.name,
        "type": v.type,
        "role": v.role,
        "unit": v.unit,
        "minimum": _format_bound(v.minimum),
        "maximum": _format_bound(v.maximum),
        "codes": format_codes(v.codes),
        "key": v.key,
        "missing_codes": list(v.missing_codes),
        "paramcd": v.paramcd,
        "nsrr_name": v.nsrr_name,
        "description": v.description,
        "derivation": v.derivation,
    }
    row["Field Annotation"] = _ANNOTATION_TAG + json.dumps(
        {k: val for k, val in extra.items() if val not in ("", [], False)}, ensure_ascii=False
    )
    return row


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
            ) from None
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
        raise DictionaryError(_problems_message(source, problems))
    if not variables:
        raise DictionaryError(f"Data dictionary {source} has a header but no variables.")
    return variables


def _flag(value: str, column: str, problems: list[str]) -> bool:
    low = value.lower()
    if low == "":
        return False
    if low in _TRUE_TOKENS:
        return True
    if low in _FALSE_TOKENS:
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
            or sum(c in _TRUE_TOKENS for c in lows) != 1
            or sum(c in _FALSE_TOKENS for c in lows) != 1
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


def _problems_message(source: str, problems: list[str]) -> str:
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


# ---------------------------------------------------------------------------------------
# REDCap
# ---------------------------------------------------------------------------------------
_REDCAP_VALIDATION_TYPES = {
    "integer": "integer",
    "number": "number",
    "number_1dp": "number",
    "number_2dp": "number",
    "number_3dp": "number",
    "number_4dp": "number",
    "number_1dp_comma_decimal": "number",
    "number_2dp_comma_decimal": "number",
    "number_comma_decimal": "number",
    "date_ymd": "date",
    "date_mdy": "date",
    "date_dmy": "date",
    "datetime_ymd": "datetime",
    "datetime_mdy": "datetime",
    "datetime_dmy": "datetime",
    "datetime_seconds_ymd": "datetime",
    "datetime_seconds_mdy": "datetime",
    "datetime_seconds_dmy": "datetime",
}


def import_redcap(path_or_frame: str | Path | pd.DataFrame) -> DataDictionary:
    """Read a REDCap data dictionary (CSV as REDCap downloads it) into a DataDictionary.

    Each REDCap form becomes a table. The project's record ID (the first field) is added
    to every table as its key, because REDCap exports it on every row. Fields exported by
    :meth:`DataDictionary.to_redcap` carry their full studykit definition in the Field
    Annotation and are restored exactly; other fields are mapped by type:

    ==========================  =============================================
    REDCap                      studykit
    ==========================  =============================================
    text + integer / number     integer / number (validation min / max -> range)
    text + date_* / datetime_*  date / datetime
    text (other), notes         string
    dropdown, radio             integer with codes when every code is an integer,
                                else categorical
    yesno / truefalse           boolean (``1, Yes | 0, No`` / ``1, True | 0, False``)
    checkbox                    one boolean per choice, named ``field___code``
    calc                        number, role derived (the formula is the derivation)
    slider                      integer 0-100
    descriptive, file, sql      skipped (no data); logged
    ==========================  =============================================

    ``Identifier? = y`` sets the PHI flag, ``Required Field? = y`` sets required and the
    Field Note becomes the unit. Roles other than identifier / derived cannot be known
    from REDCap and are set to ``outcome``: edit them afterwards.

    Parameters
    ----------
    path_or_frame : str, Path or DataFrame
        The REDCap data dictionary CSV, or a frame of it.

    Returns
    -------
    DataDictionary

    Examples
    --------
    >>> dd = load_dictionary()
    >>> back = import_redcap(dd.to_redcap())
    >>> back.to_frame().equals(dd.to_frame())
    True
    """
    if isinstance(path_or_frame, pd.DataFrame):
        frame = path_or_frame.fillna("").astype(str)
        source = "<REDCap frame>"
    else:
        from studykit.io import read_table

        frame = read_table(path_or_frame)
        source = str(path_or_frame)
    frame = frame.rename(columns=lambda c: str(c).strip())
    # REDCap's own downloads name the first column "Variable / Field Name"; older ones and
    # the API use short names: accept both.
    short = {
        "field_name": "Variable / Field Name",
        "form_name": "Form Name",
        "field_type": "Field Type",
        "field_label": "Field Label",
        "select_choices_or_calculations": "Choices, Calculations, OR Slider Labels",
        "field_note": "Field Note",
        "text_validation_type_or_show_slider_number": "Text Validation Type OR Show Slider Number",
        "text_validation_min": "Text Validation Min",
        "text_validation_max": "Text Validation Max",
        "identifier": "Identifier?",
        "required_field": "Required Field?",
        "field_annotation": "Field Annotation",
    }
    frame = frame.rename(columns=short)
    needed = ["Variable / Field Name", "Form Name", "Field Type", "Field Label"]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DictionaryError(
            f"{source} is not a REDCap data dictionary: it lacks the column(s) "
            f"{', '.join(repr(c) for c in missing)}. Download it from REDCap (Project Setup -> "
            "Data Dictionary -> Download the current Data Dictionary)."
        )
    for c in REDCAP_COLUMNS:
        if c not in frame.columns:
            frame[c] = ""
    records = frame.to_dict("records")
    if not records:
        raise DictionaryError(f"REDCap data dictionary {source} has no fields.")
    problems: list[str] = []
    out_rows: list[dict[str, str]] = []
    record_id = str(records[0]["Variable / Field Name"]).strip()
    record_row: dict[str, str] | None = None
    tables_seen: list[str] = []
    for i, rec in enumerate(records):
        line = i + 2
        rec = {k: str(v).strip() for k, v in rec.items()}
        annotation = rec.get("Field Annotation", "")
        extra = _parse_annotation(annotation, problems, line)
        rows = (
            [_row_from_annotation(rec, extra)]
            if extra is not None
            else _rows_from_redcap(rec, problems, line, is_record_id=(i == 0))
        )
        for row in rows:
            if row["table"] not in tables_seen:
                tables_seen.append(row["table"])
                if record_row is not None and row["name"] != record_id:
                    out_rows.append({**record_row, "table": row["table"]})
            if row["name"] == record_id and record_row is None:
                record_row = dict(row)
            out_rows.append(row)
    if problems:
        raise DictionaryError(_problems_message(source, problems))
    result = pd.DataFrame(out_rows, columns=list(DICTIONARY_COLUMNS)).fillna("")
    return DataDictionary.from_frame(result, source=source)


def _parse_annotation(text: str, problems: list[str], line: int) -> dict[str, Any] | None:
    pos = text.find(_ANNOTATION_TAG)
    if pos < 0:
        return None
    try:
        value = json.loads(text[pos + len(_ANNOTATION_TAG) :])
    except json.JSONDecodeError as exc:
        problems.append(f"line {line}: the studykit annotation is not valid JSON ({exc.msg})")
        return None
    if not isinstance(value, dict):
        problems.append(f"line {line}: the studykit annotation is not a JSON object")
        return None
    return value


def _row_from_annotation(rec: dict[str, str], extra: dict[str, Any]) -> dict[str, str]:
    row = dict.fromkeys(DICTIONARY_COLUMNS, "")
    for k in DICTIONARY_COLUMNS:
        if k in extra:
            val = extra[k]
            if isinstance(val, bool):
                val = "yes" if val else "no"
            elif isinstance(val, list):
                val = " | ".join(str(x) for x in val)
            row[k] = str(val)
    row["name"] = row["name"] or rec["Variable / Field Name"]
    row["table"] = row["table"] or rec["Form Name"]
    row["label"] = rec["Field Label"]
    row["required"] = "yes" if rec.get("Required Field?", "").lower() == "y" else "no"
    row["identifier"] = "yes" if rec.get("Identifier?", "").lower() == "y" else "no"
    row["key"] = row["key"] or "no"
    return row


def _rows_from_redcap(
    rec: dict[str, str], problems: list[str], line: int, *, is_record_id: bool
) -> list[dict[str, str]]:
    name = rec["Variable / Field Name"]
    ftype = rec["Field Type"].lower()
    base = dict.fromkeys(DICTIONARY_COLUMNS, "")
    base.update(
        name=name,
        label=re.sub(r"<[^>]+>", "", rec["Field Label"]).strip() or name,
        table=rec["Form Name"],
        unit=rec.get("Field Note", ""),
        required="yes" if rec.get("Required Field?", "").lower() == "y" or is_record_id else "no",
        key="yes" if is_record_id else "no",
        identifier="yes" if rec.get("Identifier?", "").lower() == "y" else "no",
        role="identifier"
        if is_record_id or rec.get("Identifier?", "").lower() == "y"
        else "outcome",
    )
    choices = rec.get("Choices, Calculations, OR Slider Labels", "")
    validation = rec.get("Text Validation Type OR Show Slider Number", "").lower()
    if ftype in ("descriptive", "file", "sql"):
        logger.warning("REDCap field %r (type %s) holds no analysable data: skipped", name, ftype)
        return []
    if ftype in ("text", "notes"):
        base["type"] = (
            _REDCAP_VALIDATION_TYPES.get(validation, "string") if ftype == "text" else "string"
        )
        if base["type"] in ("integer", "number"):
            base["minimum"] = rec.get("Text Validation Min", "")
            base["maximum"] = rec.get("Text Validation Max", "")
    elif ftype in ("dropdown", "radio"):
        try:
            codes = parse_codes(choices)
        except ValueError as exc:
            problems.append(f"line {line}: choices of {name!r} are malformed: {exc}")
            return []
        base["codes"] = format_codes(codes)
        base["type"] = (
            "integer"
            if codes and all(re.fullmatch(r"-?\d+", c) for c, _ in codes)
            else "categorical"
        )
    elif ftype == "yesno":
        base.update(type="boolean", codes="1, Yes | 0, No")
    elif ftype == "truefalse":
        base.update(type="boolean", codes="1, True | 0, False")
    elif ftype == "checkbox":
        try:
            codes = parse_codes(choices)
        except ValueError as exc:
            problems.append(f"line {line}: choices of {name!r} are malformed: {exc}")
            return []
        rows = []
        for code, label in codes:
            r = dict(base)
            r.update(
                name=f"{name}___{re.sub(r'[^0-9A-Za-z_]', '_', code).lower()}",
                label=f"{base['label']}: {label}",
                type="boolean",
                codes="1, Checked | 0, Unchecked",
                required="no",
            )
            rows.append(r)
        return rows
    elif ftype == "calc":
        base.update(type="number", role="derived", derivation=choices)
    elif ftype == "slider":
        base.update(type="integer", minimum="0", maximum="100")
    else:
        problems.append(f"line {line}: field {name!r} has unknown REDCap field type {ftype!r}")
        return []
    return [base]


def export_redcap(
    dictionary: DataDictionary, path: str | Path, *, tables: Iterable[str] | None = None
) -> Path:
    """Write ``dictionary`` as a REDCap data dictionary CSV (see :meth:`DataDictionary.to_redcap`).

    Returns
    -------
    Path
        The file written (UTF-8, comma-separated, every cell quoted as REDCap writes them).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> out = export_redcap(load_dictionary(), pathlib.Path(tempfile.mkdtemp()) / "rc.csv",
    ...                     tables=["diary"])
    >>> out.read_text(encoding="utf-8").splitlines()[0].split(",")[:3]
    ['"Variable / Field Name"', '"Form Name"', '"Section Header"']
    """
    path = Path(path)
    frame = dictionary.to_redcap(tables=tables)
    frame.to_csv(path, index=False, quoting=csv.QUOTE_ALL, encoding="utf-8", lineterminator="\n")
    return path
