"""REDCap data dictionaries: export a studykit dictionary to REDCap and import one back.

:func:`to_redcap` / :func:`export_redcap` write the 18-column CSV REDCap downloads and
uploads (each table a form); :func:`import_redcap` reads one back. Fields exported by
studykit carry their full definition as JSON in the Field Annotation, so the round trip
restores the dictionary exactly.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from studykit.dictionary import (
    DICTIONARY_COLUMNS,
    DataDictionary,
    Variable,
    format_bound,
    format_codes,
    parse_codes,
    problems_message,
)
from studykit.errors import DictionaryError
from studykit.io import read_table_or_frame

__all__ = ["REDCAP_COLUMNS", "to_redcap", "export_redcap", "import_redcap"]

logger = logging.getLogger(__name__)

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

_ANNOTATION_TAG = "studykit:"


def to_redcap(dictionary: DataDictionary, *, tables: Iterable[str] | None = None) -> pd.DataFrame:
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
    >>> from studykit.dictionary import load_dictionary
    >>> rc = to_redcap(load_dictionary(), tables=["periods"])
    >>> rc.loc[rc["Variable / Field Name"] == "treatment", "Field Type"].item()
    'dropdown'
    """
    selected = list(tables) if tables is not None else list(dictionary.tables)
    for t in selected:
        dictionary.variables(t)
    record_id = None
    used: set[str] = set()
    rows = []
    for t in selected:
        for v in dictionary.variables(t):
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
        row["Text Validation Min"] = format_bound(v.minimum)
        row["Text Validation Max"] = format_bound(v.maximum)
    extra = {
        "table": v.table,
        "name": v.name,
        "type": v.type,
        "role": v.role,
        "unit": v.unit,
        "minimum": format_bound(v.minimum),
        "maximum": format_bound(v.maximum),
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
    :func:`to_redcap` carry their full studykit definition in the Field
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
    >>> from studykit.dictionary import load_dictionary
    >>> dd = load_dictionary()
    >>> back = import_redcap(to_redcap(dd))
    >>> back.to_frame().equals(dd.to_frame())
    True
    """
    frame, source = read_table_or_frame(path_or_frame, name="<REDCap frame>")
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
        raise DictionaryError(problems_message(source, problems))
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
    """Write ``dictionary`` as a REDCap data dictionary CSV (see :func:`to_redcap`).

    Returns
    -------
    Path
        The file written (UTF-8, comma-separated, every cell quoted as REDCap writes them).

    Examples
    --------
    >>> from studykit.dictionary import load_dictionary
    >>> import pathlib, tempfile
    >>> out = export_redcap(load_dictionary(), pathlib.Path(tempfile.mkdtemp()) / "rc.csv",
    ...                     tables=["diary"])
    >>> out.read_text(encoding="utf-8").splitlines()[0].split(",")[:3]
    ['"Variable / Field Name"', '"Form Name"', '"Section Header"']
    """
    path = Path(path)
    frame = to_redcap(dictionary, tables=tables)
    frame.to_csv(path, index=False, quoting=csv.QUOTE_ALL, encoding="utf-8", lineterminator="\n")
    return path
