"""The ``+---+`` bordered tables of HLS and Vivado text reports, read into named columns.

Headers span several lines and group columns ("Latency" over "min | avg | max"), and tool versions
add or drop columns (Vitis' "Total Execution Time", Vivado's "Prohibited"). Naming each column by
the header text stacked above it lets callers look cells up by name, never by position.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from harness.fpga.records import HlsReportError

_PURE_BORDER = re.compile(r"\+[-=+]+\+")
_SEPARATOR = re.compile(r"[|+]")
_DASHES = re.compile(r"[-=\s]*")
_GENERAL_INFO = re.compile(r"\*\s*(?P<key>Version|Product family|Target device)\s*:\s*(?P<value>.*)")


@dataclass(frozen=True)
class Row:
    line: int
    cells: dict[str, str]
    first: str
    """The first cell unstripped on the right only, so tree indentation stays readable."""

    def get(self, pattern: str) -> str:
        """The cell of the column whose lower-case name matches ``pattern``; '' when absent."""
        for column, value in self.cells.items():
            if re.fullmatch(pattern, column.lower()):
                return value
        return ""


@dataclass(frozen=True)
class Table:
    line: int
    columns: list[str]
    rows: list[Row]

    def row(self, first_cell: str) -> Row | None:
        """The first row whose first cell (without a trailing ``*``) is ``first_cell``."""
        for row in self.rows:
            if row.first.strip().rstrip("*").strip() == first_cell:
                return row
        return None


def read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError as error:
        raise HlsReportError(f"{path}: cannot read: {error.strerror}") from None


def general_info(lines: list[str]) -> dict[str, str]:
    """HLS ``* Version: 2019.2 (Build …)`` lines; the version keeps only its first word."""
    info = {}
    for line in lines:
        match = _GENERAL_INFO.fullmatch(line.strip())
        if match and match["key"] not in info:
            value = match["value"].strip()
            info[match["key"]] = value.split()[0] if match["key"] == "Version" and value else value
    return info


def find_table(tables: list[Table], *patterns: str) -> Table | None:
    """The first table having, for every pattern, a column whose lower-case name matches it."""
    for table in tables:
        names = [column.lower() for column in table.columns]
        if all(any(re.fullmatch(pattern, name) for name in names) for pattern in patterns):
            return table
    return None


def read_tables(lines: list[str], source: str) -> list[Table]:
    """Every bordered table in the report, in file order."""
    tables, index = [], 0
    while index < len(lines):
        if _PURE_BORDER.fullmatch(lines[index].strip()):
            end = index
            while end + 1 < len(lines) and lines[end + 1].strip()[:1] in ("|", "+"):
                end += 1
            tables.append(_read_table(lines, index, end, source))
            index = end + 1
        else:
            index += 1
    return tables


def _read_table(lines: list[str], start: int, end: int, source: str) -> Table:
    block = [line.strip() for line in lines[start : end + 1]]
    if not _PURE_BORDER.fullmatch(block[-1]):
        raise HlsReportError(f"{source}: line {end + 1}: table starting at line {start + 1} is not closed")
    borders = [offset for offset, text in enumerate(block) if _PURE_BORDER.fullmatch(text)]
    has_header = len(borders) > 2
    header_lines = block[1 : borders[1]] if has_header else []
    first_row = borders[1] + 1 if has_header else 1
    columns = _column_names(header_lines) if header_lines else []
    rows = []
    for offset in range(first_row, len(block)):
        text = block[offset]
        if not text.startswith("|"):
            continue
        cells = text[1:].removesuffix("|").split("|")
        if not columns:
            columns = [f"col{position}" for position in range(len(cells))]
        if len(cells) != len(columns):
            raise HlsReportError(
                f"{source}: line {start + offset + 1}: row has {len(cells)} cells, "
                f"header has {len(columns)}"
            )
        named = {name: cell.strip() for name, cell in zip(columns, cells)}
        raw_first = lines[start + offset].strip()[1:].split("|", 1)[0]
        rows.append(Row(start + offset + 1, named, raw_first.rstrip()))
    return Table(start + 1, columns, rows)


def _column_names(header_lines: list[str]) -> list[str]:
    """Column i is named by the header text above its midpoint, read top to bottom."""
    finest = max(header_lines, key=lambda text: len(_SEPARATOR.findall(text)))
    bounds = [match.start() for match in _SEPARATOR.finditer(finest)]
    names = []
    for left, right in itertools.pairwise(bounds):
        middle = (left + right) // 2
        parts = [_segment_at(text, middle) for text in header_lines]
        names.append(" ".join(part for part in parts if part))
    return names


def _segment_at(text: str, position: int) -> str:
    """The header text of the cell covering ``position``; borders and dash fillers read empty."""
    if position >= len(text):
        return ""
    left = max((m.start() for m in _SEPARATOR.finditer(text, 0, position + 1)), default=-1)
    right_match = _SEPARATOR.search(text, position + 1)
    segment = text[left + 1 : right_match.start() if right_match else len(text)]
    return "" if _DASHES.fullmatch(segment) else " ".join(segment.split())
