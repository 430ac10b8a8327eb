"""REDCap: data dictionaries, the study design as a longitudinal project, record exports.

- :mod:`studykit.redcap.dictionary`: the data dictionary to and from REDCap's data dictionary
  CSV (``studykit dictionary export-redcap / import-redcap``).
- :mod:`studykit.redcap.design`: arms, events, instrument-event mapping and the studykit
  event map for the study's design.
- :mod:`studykit.redcap.records`: a REDCap record export -> the study's tables (with an
  import report accounting for every row and form), and study tables -> a REDCap import file.
"""

from studykit.redcap.design import RedcapDesign, design_events, read_event_map
from studykit.redcap.dictionary import REDCAP_COLUMNS, export_redcap, import_redcap, to_redcap
from studykit.redcap.records import ImportResult, export_records, import_records

__all__ = [
    "REDCAP_COLUMNS",
    "to_redcap",
    "export_redcap",
    "import_redcap",
    "RedcapDesign",
    "design_events",
    "read_event_map",
    "ImportResult",
    "import_records",
    "export_records",
]
