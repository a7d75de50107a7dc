"""Vivado implementation reports: ``report_utilization`` and ``report_power``.

7-series and UltraScale+ name the same sites differently ("Slice LUTs" / "CLB LUTs"), and Vivado
2022+ inserts a "Prohibited" column, so rows are found by site type and cells by column name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from harness.fpga.records import HlsReportError, Number, ReportRecord, parse_number
from harness.fpga.text_tables import Table, read_lines, read_tables

_HEADER_FIELD = re.compile(r"\|\s*(?P<key>Tool Version|Design|Device)\s*:\s*(?P<value>.*)")
_SITE_TYPES = {
    "LUT": ("Slice LUTs", "CLB LUTs"),
    "FF": ("Slice Registers", "CLB Registers"),
    "BRAM_36K": ("Block RAM Tile",),
    "URAM": ("URAM",),
    "DSP": ("DSPs",),
}
BRAM_NOTE = "BRAM_18K = 2 x Block RAM Tile (36 Kb tiles, also kept as BRAM_36K)"


def parse_utilization(path: Path) -> ReportRecord:
    """Used and available LUT, FF, block RAM, URAM and DSP sites of a placed design."""
    source = str(path)
    lines = read_lines(path)
    header = _header(lines)
    tables = [table for table in read_tables(lines, source) if _column(table, "Used")]
    used: dict[str, Number | None] = {}
    available: dict[str, Number | None] = {}
    for key, site_types in _SITE_TYPES.items():
        used[key], available[key] = _site(tables, site_types, source)
    if used["LUT"] is None and used["FF"] is None:
        raise HlsReportError(
            f"{source}: no 'Slice LUTs'/'CLB LUTs' or 'Slice Registers'/'CLB Registers' row")
    used["BRAM_18K"] = _tiles_to_18k(used["BRAM_36K"])
    available["BRAM_18K"] = _tiles_to_18k(available["BRAM_36K"])
    order = ("LUT", "FF", "BRAM_18K", "DSP", "URAM")
    return ReportRecord(
        kind="utilization",
        source=source,
        tool="vivado",
        tool_version=_version(header.get("Tool Version")),
        part=header.get("Device"),
        top=header.get("Design"),
        utilization={key: used[key] for key in order} | {"BRAM_36K": used["BRAM_36K"]},
        available={key: available[key] for key in order},
        notes=[BRAM_NOTE],
    )


def parse_power(path: Path) -> ReportRecord:
    """Summary, on-chip components and per-hierarchy power; on a Zynq the PS dominates the total,
    so the accelerator's own power is its hierarchy row."""
    source = str(path)
    lines = read_lines(path)
    header = _header(lines)
    tables = read_tables(lines, source)
    summary = next((t for t in tables if t.row("Total On-Chip Power (W)") is not None), None)
    if summary is None:
        raise HlsReportError(f"{source}: no 'Total On-Chip Power (W)' row")

    def summary_value(name: str) -> Number | None:
        row = summary.row(name)
        return None if row is None else parse_number(row.cells[summary.columns[1]],
                                                     f"{source}: line {row.line}")

    components = next((t for t in tables if _column(t, "On-Chip")), None)
    hierarchy = next((t for t in tables if _column(t, "Name") and _column(t, "Power (W)")), None)
    return ReportRecord(
        kind="power",
        source=source,
        tool="vivado",
        tool_version=_version(header.get("Tool Version")),
        part=header.get("Device"),
        top=header.get("Design"),
        power_w={"total": summary_value("Total On-Chip Power (W)"),
                 "dynamic": summary_value("Dynamic (W)"),
                 "static": summary_value("Device Static (W)")},
        power_components=_components(components, source),
        power_hierarchy=_hierarchy(hierarchy, source),
    )


def _header(lines: list[str]) -> dict[str, str]:
    fields = {}
    for line in lines:
        match = _HEADER_FIELD.fullmatch(line.strip())
        if match and match["key"] not in fields:
            fields[match["key"]] = match["value"].strip()
    return fields


def _version(tool_version: str | None) -> str | None:
    """``Vivado v.2020.2 (lin64) Build …`` → ``2020.2``."""
    match = re.search(r"v\.(\S+)", tool_version or "")
    return match[1] if match else None


def _column(table: Table, name: str) -> str | None:
    return next((column for column in table.columns if column == name), None)


def _site(tables: list[Table], site_types: tuple[str, ...], source: str) -> tuple[Any, Any]:
    """(used, available) of the first row naming one of ``site_types``; (None, None) if absent."""
    for table in tables:
        for site_type in site_types:
            row = table.row(site_type)
            if row is not None:
                where = f"{source}: line {row.line}"
                available = row.cells.get("Available", "")
                return parse_number(row.cells["Used"], where), parse_number(available, where)
    return None, None


def _tiles_to_18k(tiles: Number | None) -> Number | None:
    if tiles is None:
        return None
    doubled = tiles * 2
    return int(doubled) if float(doubled).is_integer() else doubled


def _components(table: Table | None, source: str) -> dict[str, Number | None]:
    """Top-level component rows (Clocks, Slice/CLB Logic, Signals, Block RAM, DSPs, PS7/PS8, …)."""
    if table is None:
        return {}
    return {
        row.first.strip(): parse_number(row.cells["Power (W)"], f"{source}: line {row.line}")
        for row in table.rows
        if not row.first.startswith("  ")
    }


def _hierarchy(table: Table | None, source: str) -> list[dict[str, Any]]:
    """Instances with their nesting level (two spaces per level) and power in watts."""
    if table is None:
        return []
    rows = []
    for row in table.rows:
        indent = len(row.first) - len(row.first.lstrip())
        rows.append({
            "name": row.first.strip(),
            "level": max(indent - 1, 0) // 2,
            "power_w": parse_number(row.cells["Power (W)"], f"{source}: line {row.line}"),
        })
    return rows
