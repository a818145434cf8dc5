"""Assignments from people and files: validation with clear messages, and CSV import that reports every bad row."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from callgrid.router import identifiers
from callgrid.router.identifiers import InvalidValue
from callgrid.router.models import Assignment
from callgrid.router.store import RouterStore

_COLUMNS = {
    "phonenumber": "phoneNumber",
    "phone_number": "phoneNumber",
    "number": "phoneNumber",
    "identity": "identity",
    "rawid": "identity",
    "user": "identity",
    "displayname": "displayName",
    "display_name": "displayName",
    "name": "displayName",
}


def make_assignment(phone_number: str, identity: str, display_name: str | None = None) -> Assignment:
    """Validate and normalise; raises InvalidValue with a message naming the bad field."""
    return Assignment(
        identifiers.phone_number(phone_number),
        identifiers.identity(identity),
        identifiers.display_name(display_name),
    )


@dataclass
class RowError:
    line: int
    message: str

    def view(self) -> dict[str, Any]:
        return {"line": self.line, "message": self.message}


@dataclass
class ImportReport:
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[RowError] = field(default_factory=list)
    applied: bool = False

    def view(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "applied": self.applied,
            "errors": [e.view() for e in self.errors],
        }


def parse_csv(text: str) -> tuple[list[Assignment], list[RowError], int]:
    """Rows of phoneNumber,identity[,displayName]; a header row naming the columns is optional."""
    good: list[Assignment] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    order = ["phoneNumber", "identity", "displayName"]
    rows = 0
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    for index, row in enumerate(reader):
        line = reader.line_num
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if index == 0 and cells[0] and not cells[0].lstrip("+").replace(" ", "")[:1].isdigit():
            names = [_COLUMNS.get(c.replace(" ", "").lower()) for c in cells]
            if None in names or "phoneNumber" not in names or "identity" not in names:
                errors.append(RowError(line, f"header {cells} must name phoneNumber, identity[, displayName]."))
                return [], errors, 0
            order = [str(n) for n in names]
            continue
        rows += 1
        if len(cells) < 2 or len(cells) > len(order):
            errors.append(RowError(line, f"expected {len(order)} columns ({', '.join(order)}), got {len(cells)}."))
            continue
        values = dict(zip(order, cells, strict=False))
        try:
            a = make_assignment(values["phoneNumber"], values.get("identity", ""), values.get("displayName"))
        except InvalidValue as exc:
            errors.append(RowError(line, str(exc)))
            continue
        if a.phone_number in seen:
            errors.append(RowError(line, f"{a.phone_number} already appears on line {seen[a.phone_number]}."))
            continue
        seen[a.phone_number] = line
        good.append(a)
    return good, errors, rows


def import_csv(store: RouterStore, text: str, *, all_or_nothing: bool = True) -> ImportReport:
    good, errors, rows = parse_csv(text)
    report = ImportReport(rows=rows, errors=errors)
    if errors and all_or_nothing:
        return report
    report.created, report.updated, report.unchanged = store.import_assignments(good)
    report.applied = True
    return report
