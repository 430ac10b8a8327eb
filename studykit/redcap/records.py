"""REDCap record exports in and out: a longitudinal export becomes the study's tables.

:func:`import_records` reads REDCap's flat CSV export of a longitudinal project (one row per
record x event, and per repeat instance of a repeating instrument) and writes the study
tables ``roster.csv``, ``periods.csv``, ``nights.csv``, ``diary.csv`` that
:func:`studykit.validate.load_study` reads, plus ``import_report.csv``, which accounts for
every export row and every form on it: imported (into which table and row), or why not.

:func:`export_records` does the reverse (study tables -> a REDCap import file), so that a
study can be moved into REDCap and so that the round trip can be tested.

What is read
------------
- ``record_id`` (the project's first field; here ``participant_id``) on every row;
  ``redcap_event_name``; ``redcap_repeat_instrument`` / ``redcap_repeat_instance``
  (optional); ``redcap_data_access_group`` (optional; kept in the report).
- One column per field; a checkbox field as one column per choice, ``field___code``.
- ``<form>_complete`` per instrument: 0 Incomplete, 1 Unverified, 2 Complete. Only complete
  forms are imported unless ``include_incomplete``.
- Raw exports (codes) and label exports (``rawOrLabel=label`` with raw headers: choice
  labels, ``Yes``/``No``, ``Checked``/``Unchecked``, ``Complete``, event labels).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from studykit.dictionary import DataDictionary, Variable, parse_codes
from studykit.errors import InputError
from studykit.io import read_table_or_frame
from studykit.redcap.design import (
    EVENT_TABLES,
    RedcapDesign,
    design_events,
    instance_key,
    read_event_map,
    unique_event_name,
)
from studykit.redcap.dictionary import _parse_annotation, to_redcap

__all__ = ["REPORT_COLUMNS", "ImportResult", "import_records", "export_records", "field_map"]

#: Columns of ``import_report.csv``.
REPORT_COLUMNS = (
    "export_row",
    "record_id",
    "redcap_event_name",
    "redcap_repeat_instrument",
    "redcap_repeat_instance",
    "redcap_data_access_group",
    "form",
    "table",
    "form_status",
    "action",
    "reason",
    "output_file",
    "output_row",
)

_SYSTEM = ("redcap_event_name", "redcap_repeat_instrument", "redcap_repeat_instance")
_DAG = "redcap_data_access_group"
_IGNORED_SYSTEM = ("redcap_survey_identifier",)
_STATUS = {
    "0": "0",
    "incomplete": "0",
    "1": "1",
    "unverified": "1",
    "2": "2",
    "complete": "2",
}
_STATUS_NAME = {"0": "Incomplete", "1": "Unverified", "2": "Complete", "": "no status"}
_CHECKED = frozenset({"1", "checked"})
_UNCHECKED = frozenset({"0", "unchecked", ""})


@dataclass(frozen=True)
class _Field:
    """One REDCap field and the study variable it holds."""

    name: str
    form: str
    ftype: str
    table: str
    variable: Variable
    choices: tuple[tuple[str, str], ...] = ()


@dataclass
class ImportResult:
    """What :func:`import_records` wrote.

    Attributes
    ----------
    tables : dict of str to DataFrame
        The study tables (strings, as written).
    report : DataFrame
        One row per export row and form (:data:`REPORT_COLUMNS`).
    files : dict of str to Path
        The files written.
    """

    tables: dict[str, pd.DataFrame]
    report: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> str:
        """One line per action with its count, e.g. ``imported 312``."""
        counts = self.report.groupby(["action"]).size()
        parts = [f"{a} {n}" for a, n in counts.items()]
        rows = ", ".join(f"{t} {len(d)}" for t, d in self.tables.items())
        return f"rows written: {rows}; forms: {', '.join(parts)}"


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(text).strip().lower()).strip("_")


def field_map(
    dictionary: DataDictionary, redcap_dictionary: pd.DataFrame | None = None
) -> dict[str, _Field]:
    """Map REDCap field names to study variables.

    Parameters
    ----------
    dictionary : DataDictionary
        The study's data dictionary.
    redcap_dictionary : DataFrame, optional
        The REDCap project's data dictionary (as downloaded). Default: the one
        ``studykit dictionary export-redcap`` writes for ``dictionary``.

    Returns
    -------
    dict
        REDCap field name -> its form, type, study table and variable. A field is matched to
        its variable by the ``studykit:`` annotation when it has one; else by its form being
        a study table and its name being the variable's (or ``<table>_<name>``); else by its
        name being a variable of exactly one study table.

    Raises
    ------
    InputError
        A field that matches no variable, or several.

    Examples
    --------
    >>> from studykit.dictionary import load_dictionary
    >>> m = field_map(load_dictionary())
    >>> (m["nights_period"].table, m["nights_period"].variable.name)
    ('nights', 'period')
    """
    tables = [t for t in EVENT_TABLES if t in dictionary.tables]
    if redcap_dictionary is None:
        redcap_dictionary = to_redcap(dictionary, tables=tables)
    rc = redcap_dictionary.fillna("").astype(str).rename(columns=lambda c: str(c).strip())
    rc = rc.rename(
        columns={
            "field_name": "Variable / Field Name",
            "form_name": "Form Name",
            "field_type": "Field Type",
            "select_choices_or_calculations": "Choices, Calculations, OR Slider Labels",
            "field_annotation": "Field Annotation",
        }
    )
    needed = ("Variable / Field Name", "Form Name", "Field Type")
    if any(c not in rc.columns for c in needed):
        raise InputError(
            "The REDCap data dictionary lacks the columns "
            f"{', '.join(c for c in needed if c not in rc.columns)}: download it from REDCap "
            "(Project Setup -> Data Dictionary)."
        )
    owners: dict[str, list[str]] = {}
    for t in tables:
        for v in dictionary.variables(t):
            owners.setdefault(v.name, []).append(t)
    out: dict[str, _Field] = {}
    problems: list[str] = []
    for rec in rc.to_dict("records"):
        name = rec["Variable / Field Name"].strip()
        form = rec["Form Name"].strip()
        ftype = rec["Field Type"].strip().lower()
        if ftype in ("descriptive", "file", "sql") or not name:
            continue
        annotation = rec.get("Field Annotation", "")
        extra = _parse_annotation(annotation, [], 0)
        table = str(extra.get("table", "")) if extra else None
        var = str(extra.get("name", "")) if extra else None
        if not (table and (table, var) in dictionary):
            table = var = None
            if form in tables:
                for candidate in (name, name.removeprefix(f"{form}_")):
                    if (form, candidate) in dictionary:
                        table, var = form, candidate
                        break
            if table is None and len(owners.get(name, [])) == 1:
                table, var = owners[name][0], name
        if table is None or var is None:
            where = owners.get(name)
            problems.append(
                f"field {name!r} (form {form!r}) "
                + (
                    f"is a variable of several tables ({', '.join(where)}): name the form "
                    "after its table"
                    if where
                    else f"is not a variable of the data dictionary's tables {', '.join(tables)}"
                )
            )
            continue
        try:
            choices = parse_codes(rec.get("Choices, Calculations, OR Slider Labels", ""))
        except ValueError:
            choices = ()
        if ftype not in ("dropdown", "radio", "checkbox"):
            choices = ()
        out[name] = _Field(name, form, ftype, table, dictionary.get(table, var), choices)
    if problems:
        raise InputError(
            f"The REDCap data dictionary has {len(problems)} field(s) studykit cannot place:\n"
            "  - " + "\n  - ".join(problems[:20]) + "\nAdd them to data_dictionary.csv (same "
            "name, in the table the form holds) or remove them from the REDCap dictionary."
        )
    return out


def _value(raw: str, f: _Field) -> str:
    """A REDCap cell (raw code or label) as the dictionary's code; other text unchanged."""
    text = raw.strip()
    if not text:
        return ""
    v = f.variable
    codes = v.codes or f.choices
    if codes:
        if any(text == code for code, _ in codes):
            return text
        lowered = text.lower()
        for code, label in (*v.codes, *f.choices):
            if lowered == label.lower():
                # a REDCap choice label -> its code -> the dictionary's code of that label
                return _dictionary_code(code, label, v)
        if v.type == "boolean" and f.ftype in ("yesno", "truefalse"):
            boolean = {"yes": "1", "no": "0", "true": "1", "false": "0"}.get(lowered)
            if boolean is not None:
                return _dictionary_code(boolean, "", v)
    return text


def _dictionary_code(code: str, label: str, v: Variable) -> str:
    if code in v.levels or not v.codes:
        return code
    for c, lab in v.codes:
        if label and lab.lower() == label.lower():
            return c
    return code


def _status(raw: str) -> str | None:
    text = raw.strip().lower()
    if not text:
        return ""
    return _STATUS.get(text)


def _event_lookup(event_map: pd.DataFrame) -> dict[str, str]:
    """Accepted spellings of each event (unique name, label, label with the arm) -> name."""
    lookup: dict[str, str] = {}
    for rec in event_map.to_dict("records"):
        name = rec["redcap_event_name"]
        lookup[name] = name
        lookup[name.lower()] = name
        if rec["event_label"]:
            lookup[rec["event_label"].lower()] = name
    return lookup


def import_records(
    export: str | Path | pd.DataFrame,
    event_map: str | Path | pd.DataFrame,
    dictionary: DataDictionary,
    *,
    redcap_dictionary: str | Path | pd.DataFrame | None = None,
    include_incomplete: bool = False,
    out: str | Path | None = None,
    force: bool = False,
) -> ImportResult:
    """Turn a REDCap longitudinal record export into the study's tables.

    Parameters
    ----------
    export : str, Path or DataFrame
        REDCap's flat CSV export (raw, or labels with raw headers).
    event_map : str, Path or DataFrame
        Which event feeds which study table, and the keys it supplies (see
        :func:`studykit.redcap.design.read_event_map`).
    dictionary : DataDictionary
        The study's data dictionary.
    redcap_dictionary : str, Path or DataFrame, optional
        The REDCap project's data dictionary; default: the one studykit exports.
    include_incomplete : bool
        Also import forms whose status is Incomplete, Unverified or blank.
    out : str or Path, optional
        Folder to write ``roster.csv``, ``periods.csv``, ``nights.csv``, ``diary.csv`` and
        ``import_report.csv`` into (created). Nothing is written when None.
    force : bool
        Overwrite those files when they exist.

    Returns
    -------
    ImportResult

    Raises
    ------
    InputError
        An event that the event map does not know, a column that is no field of the REDCap
        dictionary, a missing ``redcap_event_name`` column, or output files that exist.

    Notes
    -----
    Every export row and every form on it gets a line in the report, with ``action``:

    - ``imported``: written to ``output_file`` at ``output_row`` (the file's row number,
      header = 1, as ``studykit validate`` reports rows);
    - ``skipped_incomplete``: the form's status is not Complete (2);
    - ``not_on_event``: the form holds data, but the event map does not map the event to
      the form's table;
    - ``key_conflict`` / ``key_missing``: the event map and the form disagree on a key
      (period, night, day), or neither gives it;
    - ``empty``: the form has no data and no status on this row (REDCap exports a blank
      cell for every form not on the event); a row with no form at all gets one ``empty``
      line.

    Values are written as the dictionary's codes (a label export's choice labels are mapped
    back); a checkbox field's checked choices are written as its code, several joined by
    ``;`` (which validation then reports, since a variable holds one value). The columns
    written are those that hold data, plus keys and required variables (empty, for
    validation to report). ``nights``
    rows without ``treatment`` take the period's treatment from ``periods`` (the report
    says so). Duplicate keys are written as they are, for validation to report.

    Examples
    --------
    >>> from studykit.dictionary import load_dictionary
    >>> from studykit.redcap.design import design_events
    >>> dd = load_dictionary()
    >>> export = pd.DataFrame({"participant_id": ["P01", "P01"],
    ...     "redcap_event_name": ["screening_arm_1", "period_1_arm_1"],
    ...     "sex": ["F", ""], "roster_complete": ["2", ""],
    ...     "treatment": ["", "Ketamine"], "periods_complete": ["", "2"]})
    >>> res = import_records(export, design_events(dd).event_map, dd)
    >>> res.tables["periods"][["participant_id", "period", "treatment"]].values.tolist()
    [['P01', '1', 'ketamine']]
    >>> res.report["action"].tolist()
    ['imported', 'imported']
    """
    frame, source = read_table_or_frame(export, name="<REDCap export>")
    emap = read_event_map(event_map, dictionary)
    if redcap_dictionary is not None:
        redcap_dictionary, _ = read_table_or_frame(redcap_dictionary, name="<REDCap dictionary>")
    fields = field_map(dictionary, redcap_dictionary)
    frame = frame.rename(columns=lambda c: str(c).strip())
    columns = list(frame.columns)
    if not columns or "redcap_event_name" not in columns:
        raise InputError(
            f"{source} has no redcap_event_name column: it is not the export of a longitudinal "
            "REDCap project. Export the records as CSV (raw) from the Data Exports page, "
            "with all events."
        )
    record_col = columns[0]
    forms: dict[str, list[_Field]] = {}
    for f in fields.values():
        forms.setdefault(f.form, []).append(f)
    # classify every column: a field, a checkbox choice, a form status, a system column
    plain: dict[str, _Field] = {}
    checkbox: dict[str, list[tuple[str, str]]] = {}  # field -> [(column, code)]
    status_col: dict[str, str] = {}
    unknown: list[str] = []
    form_by_norm = {_norm(f): f for f in forms}
    for c in columns[1:]:
        if c in _SYSTEM or c == _DAG or c in _IGNORED_SYSTEM or c.endswith("_timestamp"):
            continue
        if c in fields:
            plain[c] = fields[c]
            continue
        base, sep, code = c.partition("___")
        if sep and base in fields:
            checkbox.setdefault(base, []).append((c, code))
            continue
        if c.endswith("_complete") and c.removesuffix("_complete") in forms:
            status_col[c.removesuffix("_complete")] = c
            continue
        unknown.append(c)
    if unknown:
        raise InputError(
            f"{source}: {len(unknown)} column(s) are no field of the REDCap data dictionary: "
            f"{', '.join(unknown[:12])}{' ...' if len(unknown) > 12 else ''}. Give the project's "
            "dictionary with --redcap-dictionary (and add its variables to "
            "data_dictionary.csv), or export only the study's instruments."
        )
    lookup = _event_lookup(emap)
    events = frame["redcap_event_name"].astype(str).str.strip()
    resolved = events.map(lambda e: _resolve_event(e, lookup))
    bad = sorted(set(events[resolved.isna()]))
    if bad:
        raise InputError(
            f"{source}: {len(bad)} REDCap event(s) are not in the event map: "
            f"{', '.join(repr(b) for b in bad[:10])}. The event map knows "
            f"{', '.join(sorted(set(emap['redcap_event_name'])))}. Add a row per event and "
            "table to the event map (--events)."
        )
    by_event: dict[str, dict[str, dict[str, str]]] = {}
    for rec in emap.to_dict("records"):
        by_event.setdefault(rec["redcap_event_name"], {})[rec["table"]] = rec

    rows_out: dict[str, list[dict[str, str]]] = {t: [] for t in EVENT_TABLES}
    report: list[dict[str, object]] = []
    order_cols = {
        t: [v.name for v in dictionary.variables(t)] for t in EVENT_TABLES if t in dictionary.tables
    }
    seen_vars: dict[str, set[str]] = {t: set(dictionary.keys(t)) for t in order_cols}
    repeat_col = "redcap_repeat_instrument" in columns
    instance_col = "redcap_repeat_instance" in columns
    for (rownum, rec), event in zip(frame.iterrows(), resolved, strict=True):
        record = str(rec[record_col]).strip()
        instrument = str(rec["redcap_repeat_instrument"]).strip() if repeat_col else ""
        instance = str(rec["redcap_repeat_instance"]).strip() if instance_col else ""
        base = {
            "export_row": rownum,
            "record_id": record,
            "redcap_event_name": event,
            "redcap_repeat_instrument": instrument,
            "redcap_repeat_instance": instance,
            "redcap_data_access_group": str(rec.get(_DAG, "")).strip(),
        }
        if instrument:
            form = form_by_norm.get(_norm(instrument))
            if form is None:
                raise InputError(
                    f"{source} row {rownum}: repeat instrument {instrument!r} is no form of the "
                    f"REDCap data dictionary (forms: {', '.join(forms)})."
                )
            candidates = [form]
        else:
            candidates = list(forms)
        lines_before = len(report)
        for form in candidates:
            table = forms[form][0].table
            values: dict[str, str] = {}
            has_data = False
            for f in forms[form]:
                if f.name in plain:
                    values[f.variable.name] = _value(str(rec[f.name]), f)
                    has_data = has_data or values[f.variable.name] != ""
                elif f.name in checkbox:
                    values[f.variable.name] = _checked(rec, checkbox[f.name], f)
                    # REDCap writes 0 in every checkbox column, on every event: only a
                    # checked box is data
                    has_data = has_data or any(
                        str(rec[c]).strip().lower() not in _UNCHECKED for c, _ in checkbox[f.name]
                    )
            raw_status = str(rec[status_col[form]]) if form in status_col else ""
            status = _status(raw_status)
            line = {**base, "form": form, "table": table, "form_status": status or ""}
            if status is None:
                raise InputError(
                    f"{source} row {rownum}: {status_col[form]} is {raw_status!r}; REDCap form "
                    "status is 0 (Incomplete), 1 (Unverified) or 2 (Complete)."
                )
            if not has_data and status in ("", "0") and not instrument:
                continue  # REDCap exports every form's cells; this one was not filled here
            mapping = by_event.get(event, {}).get(table)
            if mapping is None:
                if has_data:
                    report.append(
                        {
                            **line,
                            "action": "not_on_event",
                            "reason": f"event {event} is not mapped to table {table} in the "
                            "event map; add a row for it to import these data",
                        }
                    )
                continue
            if status != "2" and not include_incomplete:
                report.append(
                    {
                        **line,
                        "action": "skipped_incomplete",
                        "reason": f"form status {_STATUS_NAME[status]}; only Complete (2) forms "
                        "are imported (--include-incomplete imports the others)",
                    }
                )
                continue
            if not has_data:
                report.append({**line, "action": "empty", "reason": "the form has no data"})
                continue
            keys, problem = _keys(table, mapping, values, record, instance, dictionary)
            if problem:
                report.append({**line, **problem})
                continue
            row = {**values, **keys}
            rows_out[table].append(row)
            seen_vars[table].update(k for k, v in values.items() if v != "" or k in keys)
            report.append(
                {
                    **line,
                    "action": "imported",
                    "reason": "",
                    "output_file": f"{table}.csv",
                    "output_row": len(rows_out[table]) + 1,
                }
            )
        if len(report) == lines_before:
            report.append(
                {
                    **base,
                    "form": "",
                    "table": "",
                    "form_status": "",
                    "action": "empty",
                    "reason": "no form on this row holds data",
                }
            )
    tables: dict[str, pd.DataFrame] = {}
    for t, rows in rows_out.items():
        if t not in order_cols:
            continue
        required = {v.name for v in dictionary.variables(t) if v.required}
        cols = [c for c in order_cols[t] if c in seen_vars[t] or (c in required and rows)]
        tables[t] = pd.DataFrame(rows, columns=cols, dtype=object).fillna("")
    _fill_night_treatment(tables, report)
    result = ImportResult(
        tables=tables,
        report=pd.DataFrame(report, columns=list(REPORT_COLUMNS), dtype=object).fillna(""),
    )
    if out is not None:
        result.files = _write(result, Path(out), force=force, source=source)
    return result


def _resolve_event(event: str, lookup: dict[str, str]) -> str | None:
    """The event map's unique event name for an export's event cell, or None.

    A raw export has the unique name (``period_1_arm_1``); a label export has the label with
    its arm (``Period 1 (Arm 1: Arm 1)``), matched by the event map's ``event_label`` or by
    the unique name REDCap derives from the label.
    """
    if event in lookup or event.lower() in lookup:
        return lookup.get(event, lookup.get(event.lower()))
    m = re.match(r"^(.*?)\s*\(Arm (\d+)(?::[^)]*)?\)\s*$", event)
    label, arm = (m.group(1), int(m.group(2))) if m else (event, 1)
    return lookup.get(label.lower(), lookup.get(unique_event_name(label, arm)))


def _checked(rec: pd.Series, options: list[tuple[str, str]], f: _Field) -> str:
    """The checked choices of a checkbox field as the variable's value.

    A boolean variable held by a one-choice checkbox is true when checked and false when not;
    otherwise the checked choices' codes are joined by ``;`` ("" when none is checked).
    """
    chosen = []
    labels = {_norm(lab) for _, lab in f.choices}
    any_cell = False
    for column, code in options:
        cell = str(rec[column]).strip()
        low = cell.lower()
        any_cell = any_cell or bool(cell)
        if low in _CHECKED or (low and _norm(cell) in labels):
            original = next((c for c, _ in f.choices if _norm(c) == _norm(code)), code)
            chosen.append(original)
        elif low not in _UNCHECKED:
            chosen.append(cell)  # not a checkbox value: kept for validation to report
    v = f.variable
    if v.type == "boolean" and len(options) == 1:
        if not any_cell:
            return ""
        return _dictionary_code("1" if chosen else "0", "Yes" if chosen else "No", v)
    return ";".join(_dictionary_code(c, dict(f.choices).get(c, ""), v) for c in chosen)


def _keys(
    table: str,
    mapping: dict[str, str],
    values: dict[str, str],
    record: str,
    instance: str,
    dictionary: DataDictionary,
) -> tuple[dict[str, str], dict[str, str] | None]:
    keys = {}
    for k in dictionary.keys(table):
        if k == "participant_id":
            keys[k] = record
            continue
        spec = mapping.get(k, "")
        from_event = instance_key(spec, instance) if spec else None
        if from_event is None and spec:
            from_event = spec
        from_form = values.get(k, "")
        if from_event and from_form and from_event != from_form:
            return keys, {
                "action": "key_conflict",
                "reason": f"the event map gives {k} = {from_event} but the form says {from_form}",
            }
        value = from_event or from_form
        if not value:
            return keys, {
                "action": "key_missing",
                "reason": f"neither the event map nor the form gives {k}; add it to the event "
                f"map's {k} column or to the form",
            }
        keys[k] = value
    return keys, None


def _fill_night_treatment(tables: dict[str, pd.DataFrame], report: list[dict[str, object]]) -> None:
    nights, periods = tables.get("nights"), tables.get("periods")
    if nights is None or periods is None or "treatment" not in periods.columns or nights.empty:
        return
    if "treatment" not in nights.columns:
        nights.insert(min(3, len(nights.columns)), "treatment", "")
    lookup = {
        (p, str(q)): t
        for p, q, t in zip(
            periods["participant_id"], periods["period"], periods["treatment"], strict=True
        )
    }
    blank = nights["treatment"].eq("")
    filled = [
        lookup.get((p, str(q)), "")
        for p, q in zip(nights["participant_id"], nights["period"], strict=True)
    ]
    nights.loc[blank, "treatment"] = [f for f, b in zip(filled, blank, strict=True) if b]
    n = int((blank & nights["treatment"].ne("")).sum())
    if n:
        for line in report:
            if line.get("output_file") == "nights.csv":
                row = int(line["output_row"]) - 2  # type: ignore[call-overload]
                if blank.iloc[row]:
                    line["reason"] = "treatment taken from periods.csv (same participant, period)"


def _write(result: ImportResult, out: Path, *, force: bool, source: str) -> dict[str, Path]:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder to write the study tables into.")
    targets = {t: out / f"{t}.csv" for t in result.tables} | {
        "import_report": out / "import_report.csv"
    }
    existing = [p.name for p in targets.values() if p.exists()]
    if existing and not force:
        raise InputError(
            f"{out} already holds {', '.join(existing)}; choose another --out or pass --force."
        )
    out.mkdir(parents=True, exist_ok=True)
    for t, data in result.tables.items():
        data.to_csv(targets[t], index=False, encoding="utf-8", lineterminator="\n")
    result.report.to_csv(
        targets["import_report"], index=False, encoding="utf-8", lineterminator="\n"
    )
    readme = out / "README.md"
    if force or not readme.exists():
        readme.write_text(
            f"# Study tables imported from REDCap\n\nMade by `studykit redcap import` from "
            f"`{Path(source).name}`. `import_report.csv` accounts for every export row and "
            "form (imported, or why not).\n",
            encoding="utf-8",
        )
    return targets


def export_records(
    tables: dict[str, pd.DataFrame],
    dictionary: DataDictionary,
    *,
    design: RedcapDesign | None = None,
    repeat_diary: bool = True,
) -> pd.DataFrame:
    """Study tables as a REDCap record import file (the flat, raw CSV layout).

    Parameters
    ----------
    tables : dict of str to DataFrame
        ``roster``, ``periods``, ``nights``, ``diary`` (any subset), values as text or typed.
    dictionary : DataDictionary
    design : RedcapDesign, optional
        Default: :func:`studykit.redcap.design.design_events` of ``dictionary``.
    repeat_diary : bool
        Write diary rows as instances of the repeating ``diary`` instrument on the period
        event (as the default design lays it out).

    Returns
    -------
    DataFrame
        One row per record x event (x repeat instance); columns: the record ID, the REDCap
        system columns, every field and ``<form>_complete`` (2 for each filled form).

    Examples
    --------
    >>> from studykit.dictionary import load_dictionary
    >>> dd = load_dictionary()
    >>> rec = export_records({"roster": pd.DataFrame({"participant_id": ["P01"], "sex": ["M"]})}, dd)
    >>> rec[["participant_id", "redcap_event_name", "sex", "roster_complete"]].values.tolist()
    [['P01', 'screening_arm_1', 'M', '2']]
    """
    design = design or design_events(dictionary)
    present = [t for t in EVENT_TABLES if t in dictionary.tables]
    fmap = field_map(dictionary)
    by_var = {(f.table, f.variable.name): f.name for f in fmap.values()}
    record_id = next(iter(fmap))
    field_cols: list[str] = []
    for t in present:
        field_cols += [n for n, f in fmap.items() if f.table == t and n != record_id]
        field_cols.append(f"{t}_complete")
    emap = design.event_map
    rows: list[dict[str, str]] = []

    def event_of(table: str, keys: dict[str, str]) -> str:
        m = emap[emap["table"] == table]
        for k in ("period", "night"):
            if k in keys and m[k].ne("").any():
                m = m[m[k] == keys[k]]
        if m.empty:
            raise InputError(f"no REDCap event for {table} row {keys}")
        return str(m["redcap_event_name"].iloc[0])

    for t in present:
        data = tables.get(t)
        if data is None:
            continue
        data = data.astype(object).where(data.notna(), "")
        instances: dict[tuple[str, str], int] = {}
        for rec in data.to_dict("records"):
            text = {k: _cell(v) for k, v in rec.items()}
            keys = {k: text.get(k, "") for k in dictionary.keys(t)}
            event = event_of(t, keys)
            row = {
                record_id: text.get("participant_id", ""),
                "redcap_event_name": event,
                "redcap_repeat_instrument": "",
                "redcap_repeat_instance": "",
            }
            if t == "diary" and repeat_diary:
                n = instances.get((row[record_id], event), 0) + 1
                instances[(row[record_id], event)] = n
                row["redcap_repeat_instrument"] = "diary"
                row["redcap_repeat_instance"] = str(n)
            for name, value in text.items():
                col = by_var.get((t, name))
                if col is not None and col != record_id:
                    row[col] = value
            row[f"{t}_complete"] = "2"
            rows.append(row)
    cols = [record_id, "redcap_event_name", "redcap_repeat_instrument", "redcap_repeat_instance"]
    frame = pd.DataFrame(rows, columns=cols + field_cols, dtype=object).fillna("")
    # one row per record x event x instance: merge the forms of one event
    key = cols
    merged = frame.groupby(key, sort=False, as_index=False).agg(
        lambda s: next((x for x in s if x != ""), "")
    )
    # REDCap's order: record, then event as defined, then repeat instance
    event_order = {e: i for i, e in enumerate(design.events["unique_event_name"])}
    order = pd.DataFrame(
        {
            "record": merged[record_id],
            "event": merged["redcap_event_name"].map(event_order),
            "instance": pd.to_numeric(merged["redcap_repeat_instance"], errors="coerce").fillna(0),
        }
    ).sort_values(["record", "event", "instance"], kind="stable")
    return merged.loc[order.index, cols + field_cols].reset_index(drop=True)


def _cell(v: object) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return ""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, pd.Timestamp):
        return (
            v.strftime("%Y-%m-%d %H:%M:%S")
            if (v.hour or v.minute or v.second)
            else v.strftime("%Y-%m-%d")
        )
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)
