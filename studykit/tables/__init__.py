"""Result tables: tidy numbers in, CSV / Markdown / HTML / LaTeX out.

Three modules, data flowing one way:

* :mod:`studykit.tables.compute` builds tidy numeric tables (hypotheses, Table 1,
  descriptives, validation summary, participant flow) in a fixed row order;
* :mod:`studykit.tables.format` turns them into display strings (Markdown, HTML, LaTeX,
  report), following tableone's split between statistics and formatting;
* :mod:`studykit.tables.write` is the one writer of table files. Identifiers are masked by
  :mod:`studykit.privacy` (the one place that does it).
"""

from __future__ import annotations

from studykit.tables.compute import (
    HYPOTHESIS_COLUMNS,
    baseline_characteristics,
    descriptive_outcomes,
    hypothesis_table,
    validation_summary,
)
from studykit.tables.format import (
    DEFAULT_LABELS,
    format_baseline_table,
    format_descriptive_table,
    format_display,
    format_hypothesis_table,
    format_number,
    format_p,
)
from studykit.tables.write import (
    FLOAT_FORMAT,
    SIMULATED_LABEL,
    TABLE_FORMATS,
    read_table_csv,
    to_csv_text,
    write_csv,
    write_table,
)

__all__ = [
    "HYPOTHESIS_COLUMNS",
    "FLOAT_FORMAT",
    "TABLE_FORMATS",
    "DEFAULT_LABELS",
    "SIMULATED_LABEL",
    "write_table",
    "write_csv",
    "read_table_csv",
    "to_csv_text",
    "format_display",
    "hypothesis_table",
    "format_hypothesis_table",
    "format_number",
    "format_p",
    "baseline_characteristics",
    "format_baseline_table",
    "descriptive_outcomes",
    "format_descriptive_table",
    "validation_summary",
]
