"""Frictionless Table Schema export of the data dictionary.

:func:`table_schema` describes one table of a :class:`~studykit.dictionary.DataDictionary`
as a Frictionless Table Schema (https://specs.frictionlessdata.io/table-schema/), so that
other tools can check the study's files against the same definitions.
"""

from __future__ import annotations

from typing import Any

from studykit.dictionary import (
    FALSE_TOKENS,
    MISSING_TOKENS,
    TRUE_TOKENS,
    DataDictionary,
    Variable,
)

__all__ = ["table_schema"]


def table_schema(dictionary: DataDictionary, table: str) -> dict[str, Any]:
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
    >>> from studykit.dictionary import load_dictionary
    >>> schema = table_schema(load_dictionary(), "epochs")
    >>> schema["primaryKey"]
    ['participant_id', 'period', 'night', 'epoch']
    >>> schema["fields"][-1]["constraints"]["enum"]
    ['W', 'N1', 'N2', 'N3', 'R', 'MT', 'ART', 'UNS']
    """
    fields = [_schema_field(v) for v in dictionary.variables(table)]
    schema: dict[str, Any] = {
        "$schema": "https://specs.frictionlessdata.io/schemas/table-schema.json",
        "name": table,
        "fields": fields,
        "missingValues": sorted(MISSING_TOKENS),
    }
    keys = dictionary.keys(table)
    if keys:
        schema["primaryKey"] = keys
    foreign = []
    names = dictionary.names(table)
    for parent in ("roster", "periods"):
        if parent == table or parent not in dictionary.tables:
            continue
        parent_keys = dictionary.keys(parent)
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
        f["trueValues"] = [c for c, _ in v.codes if c.lower() in TRUE_TOKENS]
        f["falseValues"] = [c for c, _ in v.codes if c.lower() in FALSE_TOKENS]
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
