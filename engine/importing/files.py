"""Reading a CSV file: one hashing and encoding pass, then rows in batches, streamed."""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import itertools
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InvalidInput
from engine.importing.rows import ColumnMap, ParsedRow, RowProblem, parse_row

QUEUE_CHANNEL = "queues"  # engine.service.QUEUE_CHANNEL (not imported: no import cycle)

CHUNK = 1 << 20


@dataclass(frozen=True)
class FileFacts:
    sha256: str
    size: int
    encoding: str


def scan_file(path: Path) -> FileFacts:
    """Hash the file and choose its encoding, reading it once in 1 MiB chunks."""
    digest = hashlib.sha256()
    utf8 = codecs.getincrementaldecoder("utf-8")("strict")
    utf8_bad: tuple[int, int, int] | None = None  # (offset, byte, line)
    cp_bad: tuple[int, int, int] | None = None
    offset, lines, first = 0, 0, b""
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            if not first:
                first = chunk[:3]
            digest.update(chunk)
            if utf8_bad is None:
                try:
                    utf8.decode(chunk)
                except UnicodeDecodeError as exc:
                    at = max(exc.start, 0)
                    utf8_bad = (offset + at, chunk[at], lines + chunk.count(b"\n", 0, at) + 1)
            if cp_bad is None and (at := chunk.find(b"\x98")) >= 0:
                cp_bad = (offset + at, 0x98, lines + chunk.count(b"\n", 0, at) + 1)
            lines += chunk.count(b"\n")
            offset += len(chunk)
    if utf8_bad is None:
        try:
            utf8.decode(b"", final=True)
        except UnicodeDecodeError as exc:  # the file ends inside a multi-byte character
            utf8_bad = (offset - len(exc.object) + exc.start, exc.object[exc.start], lines + 1)
    if utf8_bad is None:
        encoding = "utf-8-sig" if first.startswith(codecs.BOM_UTF8) else "utf-8"
    elif cp_bad is None:
        encoding = "cp1251"
    else:
        raise InvalidInput(
            f"{path.name} is neither UTF-8 nor Windows-1251 text: byte 0x{utf8_bad[1]:02x} at "
            f"offset {utf8_bad[0]} (line {utf8_bad[2]}) is not UTF-8, and byte 0x98 at offset "
            f"{cp_bad[0]} (line {cp_bad[2]}) is not Windows-1251; re-save it as UTF-8",
            field="file",
            offset=utf8_bad[0],
            line=utf8_bad[2],
        )
    return FileFacts(sha256=digest.hexdigest(), size=offset, encoding=encoding)


class Reader:
    """The CSV as numbered records, read from a text stream (never the whole file)."""

    def __init__(self, path: Path, encoding: str, delimiter: str | None) -> None:
        self._raw = path.open("rb")
        self._text = io.TextIOWrapper(self._raw, encoding=encoding, newline="")
        first = self._text.readline()
        delim = delimiter or guess_delimiter(first)
        lines = itertools.chain([first], self._text)
        self._csv = csv.reader(lines, delimiter=delim)
        self.header = [h.strip().lstrip("\ufeff") for h in next(self._csv, [])]
        self.row_no = 1  # the header

    def bytes_read(self) -> int:
        return self._raw.tell()

    def records(self, after_row: int, limit: int) -> list[tuple[int, list[str]]]:
        out: list[tuple[int, list[str]]] = []
        try:
            for cells in self._csv:
                self.row_no += 1
                if self.row_no <= after_row or not any(c.strip() for c in cells):
                    continue  # done in an earlier run, or a blank line
                out.append((self.row_no, cells))
                if len(out) >= limit:
                    break
        except csv.Error as exc:
            raise InvalidInput(f"row {self.row_no + 1}: the CSV is malformed: {exc}") from exc
        return out

    def close(self) -> None:
        self._text.close()


def next_batch(
    reader: Reader, after_row: int, limit: int, columns: ColumnMap, region: str
) -> tuple[list[ParsedRow], list[RowProblem], int, int] | None:
    records = reader.records(after_row, limit)
    if not records:
        return None
    parsed: list[ParsedRow] = []
    problems: list[RowProblem] = []
    for row_no, cells in records:
        row, bad = parse_row(row_no, cells, columns, region)
        problems.extend(bad)
        if row is not None:
            parsed.append(row)
    return parsed, problems, records[-1][0], len(records)


def guess_delimiter(line: str) -> str:
    counts = {d: line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","
