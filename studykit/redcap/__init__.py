"""REDCap: the study design as a longitudinal REDCap project, and record exports in and out.

- :mod:`studykit.redcap.design`: arms, events, instrument-event mapping and the studykit
  event map for the study's design.
- :mod:`studykit.redcap.records`: a REDCap record export -> the study's tables (with an
  import report accounting for every row and form), and study tables -> a REDCap import file.
"""

from studykit.redcap.design import RedcapDesign, design_events, read_event_map
from studykit.redcap.records import ImportResult, export_records, import_records

__all__ = [
    "RedcapDesign",
    "design_events",
    "read_event_map",
    "ImportResult",
    "import_records",
    "export_records",
]
