"""Test helpers for the protocol and analysis tests (not a test module).

``CsvDictionary`` reads the repo-root ``data_dictionary.csv`` and offers the part of the
``DataDictionary`` contract (docs/ARCHITECTURE.md) that ``load_protocol`` uses: ``tables``,
``variables(table)``, ``get(table, name)`` and ``levels(table, name)``. It stands in until
``studykit.dictionary`` is merged.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Var:
    name: str
    table: str
    role: str
    type: str
    unit: str
    minimum: str
    maximum: str
    codes: str
    identifier: bool


class CsvDictionary:
    def __init__(self, path: Path = ROOT / "data_dictionary.csv") -> None:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        self._vars: dict[str, dict[str, Var]] = {}
        for r in rows:
            v = Var(
                name=r["name"],
                table=r["table"],
                role=r["role"],
                type=r["type"],
                unit=r["unit"],
                minimum=r["minimum"],
                maximum=r["maximum"],
                codes=r["codes"],
                identifier=r["identifier"] == "yes",
            )
            self._vars.setdefault(v.table, {})[v.name] = v

    @property
    def tables(self) -> list[str]:
        return list(self._vars)

    def variables(self, table: str) -> list[Var]:
        return list(self._vars[table].values())

    def get(self, table: str, name: str) -> Var:
        return self._vars[table][name]

    def levels(self, table: str, name: str) -> list[str]:
        codes = self._vars[table][name].codes
        return [c.split(",")[0].strip() for c in codes.split("|")] if codes else []
