"""Parse and check study tables against the data dictionary; nothing is silently dropped.

The package has one module per job:

* :mod:`studykit.validate.issues`: the issue table (:data:`ISSUE_COLUMNS`);
* :mod:`studykit.validate.parse`: a column of cells to the dictionary type;
* :mod:`studykit.validate.rules`: range, keys and each table's cross-field rules (as data);
* :mod:`studykit.validate.identify`: which table a file holds (by name, else by columns);
* :mod:`studykit.validate.table`: :func:`validate_table` (one table) and its result;
* :mod:`studykit.validate.study`: :func:`load_study` (a study directory, cross-table rules,
  hypnograms).

Every problem becomes one row of the issue table: file, row number as in the file,
participant, night, column, raw value, rule, severity and a message saying how to fix it.
Rows with at least one *error* are rejected (kept in ``rejected`` with their reasons); the
others are accepted, typed, in ``data``. Warnings never reject a row. Rows read = rows
accepted + rows rejected, always.

Rule codes (the ``rule`` column)
--------------------------------
``encoding``, ``empty_rows``, ``column_name``, ``unknown_column`` (warnings about the
file);
``missing_column``; ``type``, ``decimal_comma``, ``date_format`` (cell does not parse);
``required``, ``missing_code`` (warning: a required value coded missing); ``range``;
``code``, ``code_case`` (warning: code matched ignoring case); ``unique_key``;
``lights_order``, ``tst_le_tib``, ``tst_le_spt``, ``spt_le_tib``, ``stage_sum``,
``se_consistency``, ``pct_consistency``, ``night_index``, ``dose_treatment``,
``withdrawal_reason`` (cross-field); ``reference``, ``treatment_constant``,
``treatment_periods``, ``sequence_treatment``, ``baseline_night``, ``hypnogram``,
``file``, ``no_nights``, ``missing_table``, ``hypnogram_missing``, ``derive``, ``derived_mismatch``
(cross-table, :func:`load_study`).
"""

from studykit.validate.identify import infer_table, table_by_columns
from studykit.validate.issues import ISSUE_COLUMNS, empty_issues
from studykit.validate.rules import MINUTES_TOLERANCE, PERCENT_TOLERANCE
from studykit.validate.study import (
    OUTCOME_SOURCES,
    STUDY_TABLES,
    Study,
    derived_tolerance,
    hypnogram_keys,
    load_study,
    read_hypnogram_file,
    readme_says_simulated,
)
from studykit.validate.table import ValidationResult, validate_table

__all__ = [
    "ISSUE_COLUMNS",
    "STUDY_TABLES",
    "OUTCOME_SOURCES",
    "derived_tolerance",
    "table_by_columns",
    "MINUTES_TOLERANCE",
    "PERCENT_TOLERANCE",
    "ValidationResult",
    "Study",
    "validate_table",
    "load_study",
    "readme_says_simulated",
    "empty_issues",
    "infer_table",
    "hypnogram_keys",
    "read_hypnogram_file",
]
