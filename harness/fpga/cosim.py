"""C/RTL co-simulation reports: ``<top>_cosim.rpt`` and ``sim/report/verilog/lat.rpt``.

Co-simulated latency is measured, so it can differ from the synthesis estimate; it is kept apart
(``cosim_latency``) so a calibration can prefer it.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.errors import shorten
from harness.fpga.records import HlsReportError, ReportRecord, parse_number
from harness.fpga.text_tables import general_info, read_lines, read_tables

_HEADER = re.compile(r"==\s+(?P<tool>Vivado|Vitis) HLS Report for '(?P<top>[^']+)'")
_LAT_LINE = re.compile(r'\$(?P<key>[A-Z_]+)\s*=\s*"(?P<value>[^"]*)"')
_LAT_KEYS = {
    "MIN_LATENCY": ("cosim_latency", "min"), "AVER_LATENCY": ("cosim_latency", "avg"),
    "MAX_LATENCY": ("cosim_latency", "max"), "MIN_THROUGHPUT": ("cosim_interval", "min"),
    "AVER_THROUGHPUT": ("cosim_interval", "avg"), "MAX_THROUGHPUT": ("cosim_interval", "max"),
}


def parse_cosim_rpt(path: Path) -> ReportRecord:
    """The RTL table (8 columns, or 9 with Vitis' "Total Execution Time"); the Verilog row is
    preferred, then any row that simulated (the other reads ``NA``)."""
    source = str(path)
    lines = read_lines(path)
    header = next((m for line in lines if (m := _HEADER.match(line.strip()))), None)
    table = next((t for t in read_tables(lines, source)
                  if "rtl" in (c.lower() for c in t.columns)), None)
    if table is None:
        raise HlsReportError(f"{source}: no co-simulation table (a header with an 'RTL' column)")
    simulated = [row for row in table.rows if row.get("status").upper() not in ("NA", "")]
    if not simulated:
        raise HlsReportError(f"{source}: line {table.line}: no RTL row was simulated (all NA)")
    row = next((r for r in simulated if r.get("rtl").lower() == "verilog"), simulated[0])
    where = f"{source}: line {row.line}"
    info = general_info(lines)
    return ReportRecord(
        kind="cosim",
        source=source,
        tool=f"{header['tool'].lower()}_hls" if header else None,
        tool_version=info.get("Version"),
        part=info.get("Target device"),
        top=header["top"] if header else None,
        cosim_latency={stat: parse_number(row.get(rf"latency.* {stat}"), where)
                       for stat in ("min", "avg", "max")},
        cosim_interval={stat: parse_number(row.get(rf"interval.* {stat}"), where)
                        for stat in ("min", "avg", "max")},
        cosim_total_cycles=parse_number(row.get(r"total execution time.*"), where),
        cosim_status=f"{row.get('rtl')}: {row.get('status')}",
    )


def parse_lat_rpt(path: Path) -> ReportRecord:
    """``$MAX_LATENCY = "39"`` lines; ``*_THROUGHPUT`` are intervals in cycles."""
    source = str(path)
    values: dict[str, dict] = {"cosim_latency": {}, "cosim_interval": {}}
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        match = _LAT_LINE.fullmatch(line.strip())
        if match is None:
            raise HlsReportError(f"{source}: line {number}: expected $KEY = \"value\", got "
                                 f"{shorten(line)}")
        if match["key"] in _LAT_KEYS:
            field, stat = _LAT_KEYS[match["key"]]
            values[field][stat] = parse_number(match["value"], f"{source}: line {number}")
    if not values["cosim_latency"]:
        raise HlsReportError(f"{source}: no $MIN_LATENCY/$AVER_LATENCY/$MAX_LATENCY line")
    return ReportRecord(
        kind="cosim",
        source=source,
        cosim_latency={stat: values["cosim_latency"].get(stat) for stat in ("min", "avg", "max")},
        cosim_interval={stat: values["cosim_interval"].get(stat) for stat in ("min", "avg", "max")},
    )
