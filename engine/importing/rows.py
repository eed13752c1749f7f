"""Columns and rows: the mapping from headers to fields, and one row parsed and checked."""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass, field
from functools import lru_cache

from engine import phones
from engine.errors import InvalidInput
from engine.models import (
    SegmentClass,
)

QUEUE_CHANNEL = "queues"  # engine.service.QUEUE_CHANNEL (not imported: no import cycle)

# ---- columns and rows -----------------------------------------------------------------

FIELDS = ("name", "phone", "phone2", "company", "email", "timezone", "segment_class", "source")
REQUIRED = ("name", "phone")
# Header names recognised without a --map entry (compared case-insensitively, trimmed).
# fmt: off
DEFAULT_HEADERS: dict[str, tuple[str, ...]] = {
    "name": ("name", "full name", "fullname", "client", "client name", "contact",
             "contact name", "fio", "фио", "имя", "клиент", "контакт"),
    "phone": ("phone", "phone number", "telephone", "tel", "mobile", "phone1", "phone 1",
              "телефон", "мобильный", "тел"),
    "phone2": ("phone2", "phone 2", "second phone", "other phone", "телефон 2", "телефон2"),
    "company": ("company", "company name", "organisation", "organization", "компания",
                "организация"),
    "email": ("email", "e-mail", "mail", "почта", "эл. почта"),
    "timezone": ("timezone", "time zone", "tz", "часовой пояс"),
    "segment_class": ("segment_class", "segment", "class", "сегмент"),
    "source": ("source", "источник"),
}
# fmt: on
_PHONE_SPLIT = re.compile(r"[;,]")
_CUSTOM_KEY = re.compile(r"^[\w\- ]{1,64}$")


@dataclass(frozen=True)
class ColumnMap:
    fields: dict[str, int]  # field -> column index
    custom: dict[str, int]  # custom key -> column index
    header: list[str]

    def label(self, name: str) -> str:
        idx = self.fields.get(name)
        return self.header[idx] if idx is not None else name

    def describe(self) -> dict[str, str]:
        out = {f: self.header[i] for f, i in self.fields.items()}
        out.update({f"custom.{k}": self.header[i] for k, i in self.custom.items()})
        return out


@dataclass(frozen=True)
class RowProblem:
    row: int
    column: str
    message: str


@dataclass
class ParsedRow:
    row: int
    name: str
    numbers: list[tuple[str, str, str]]  # (e164, raw, label)
    company: str = ""
    email: str | None = None
    timezone: str | None = None
    segment_class: str = SegmentClass.REGULAR
    source: str | None = None
    custom: dict[str, str] = field(default_factory=dict)


def resolve_mapping(header: list[str], explicit: dict[str, str]) -> ColumnMap:
    """Explicit ``field -> column`` entries first, then known header names; refuse gaps."""
    index: dict[str, int] = {}
    for i, name in enumerate(header):
        index.setdefault(name.strip().casefold(), i)
    problems: list[str] = []
    fields: dict[str, int] = {}
    custom: dict[str, int] = {}
    for target, column in explicit.items():
        at = index.get(column.strip().casefold())
        if target.startswith("custom."):
            key = target.removeprefix("custom.")
            if not _CUSTOM_KEY.match(key):
                problems.append(f"{target!r}: a custom field name is letters, digits, _ - space")
                continue
        elif target not in FIELDS:
            problems.append(f"{target!r} is not a field (fields: {', '.join(FIELDS)}, custom.*)")
            continue
        if at is None:
            problems.append(f"{target} is mapped to column {column!r}, which the file lacks")
        elif target.startswith("custom."):
            custom[target.removeprefix("custom.")] = at
        else:
            fields[target] = at
    for name, aliases in DEFAULT_HEADERS.items():
        if name in fields or name in explicit:
            continue
        found = next((index[a] for a in aliases if a in index), None)
        if found is not None:
            fields[name] = found
    missing = [f for f in REQUIRED if f not in fields and f not in explicit]
    for f in missing:
        problems.append(
            f"required column {f!r} is missing: name it with --map {f}=COLUMN, or use a "
            f"header such as {', '.join(repr(a) for a in DEFAULT_HEADERS[f][:3])}"
        )
    if problems:
        raise InvalidInput(
            "the file cannot be imported: "
            + "; ".join(problems)
            + f" (columns found: {', '.join(header) or 'none'})",
            field="mapping",
            missing=missing,
            problems=[],
            columns=header,
        )
    return ColumnMap(fields=fields, custom=custom, header=header)


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def parse_row(
    row_no: int, cells: list[str], cols: ColumnMap, region: str
) -> tuple[ParsedRow | None, list[RowProblem]]:
    """Clean one record; every problem in it is reported, and a row with any is not imported."""

    def cell(name: str) -> str:
        i = cols.fields.get(name)
        return cells[i].strip() if i is not None and i < len(cells) else ""

    problems: list[RowProblem] = []

    def bad(name: str, message: str) -> None:
        problems.append(RowProblem(row_no, cols.label(name), message))

    name = cell("name")
    if not name:
        bad("name", "the name is empty")
    elif len(name) > 200:
        bad("name", f"the name is {len(name)} characters long; at most 200")
    numbers: list[tuple[str, str, str]] = []
    for column, label in (("phone", ""), ("phone2", "phone2")):
        for raw in _PHONE_SPLIT.split(cell(column)):
            raw = raw.strip()
            if not raw:
                continue
            try:
                e164 = phones.normalize(raw, region)
            except InvalidInput as exc:
                bad(column, exc.message)
                continue
            if all(e164 != n[0] for n in numbers):
                numbers.append((e164, raw[:64], label))
    if not numbers and not any(p.column == cols.label("phone") for p in problems):
        bad("phone", "there is no phone number")
    email = cell("email") or None
    if email and ("@" not in email or len(email) > 254 or " " in email):
        bad("email", f"{email!r} is not an e-mail address")
    tz = cell("timezone") or None
    if tz and tz not in _zones():
        bad("timezone", f"{tz!r} is not a time zone name (e.g. Europe/Moscow)")
    segment = cell("segment_class").lower() or SegmentClass.REGULAR
    if segment not in {s.value for s in SegmentClass}:
        bad("segment_class", f"{segment!r} is not one of key, important, regular")
    company = cell("company")
    if len(company) > 200:
        bad("company", f"the company name is {len(company)} characters long; at most 200")
    if problems:
        return None, problems
    custom = {}
    for key, i in cols.custom.items():
        value = cells[i].strip() if i < len(cells) else ""
        if value:
            custom[key] = value
    row = ParsedRow(
        row=row_no,
        name=name,
        numbers=numbers,
        company=company,
        email=email,
        timezone=tz,
        segment_class=segment,
        source=cell("source")[:64] or None,
        custom=custom,
    )
    return row, []
