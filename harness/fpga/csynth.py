"""C-synthesis reports: ``<top>_csynth.xml``, Vitis' aggregate ``csynth.xml`` and ``csynth.rpt``.

Elements and columns are looked up by name: their order changes between tool versions, the URAM
element is missing from some reports, and older tools say ``DSP48E`` where newer ones say ``DSP``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from harness.errors import shorten
from harness.fpga.records import (
    RESOURCE_KEYS,
    HlsReportError,
    Number,
    ReportRecord,
    Span,
    empty,
    parse_number,
    parse_span,
)
from harness.fpga.text_tables import Row, Table, find_table, general_info, read_lines, read_tables

_RESOURCE_NAMES = {"BRAM_18K": "BRAM_18K", "DSP48E": "DSP", "DSP": "DSP", "FF": "FF", "LUT": "LUT",
                   "URAM": "URAM"}
_AVAILABLE_NAMES = {"AVAIL_BRAM": "BRAM_18K", "AVAIL_DSP": "DSP", "AVAIL_FF": "FF",
                    "AVAIL_LUT": "LUT", "AVAIL_URAM": "URAM"}
_LOOP_MARKER = re.compile(r"(?P<indent>\s*)[-+o*]\s+(?P<name>.+)")
_RPT_HEADER = re.compile(r"==\s+(?P<tool>Vivado|Vitis) HLS Report for '(?P<top>[^']+)'")
_SUMMARY_HEADER = re.compile(r"==\s+Synthesis Summary Report of '(?P<top>[^']+)'")
_CYCLES = r"(?: \((?:cycles|clock cycles)\))?"


# --- XML -------------------------------------------------------------------------------------


def parse_csynth_xml(path: Path) -> ReportRecord:
    """A per-module ``<top>_csynth.xml`` or Vitis' aggregate ``csynth.xml`` (root ``profile``)."""
    source = str(path)
    root = load_xml(path)
    if root.tag != "profile":
        raise HlsReportError(f"{source}: root element is <{root.tag}>, expected <profile>")
    version = _text(root, "ReportVersion/Version")
    top = _required_text(root, "UserAssignments/TopModelName", source)
    modules = [
        _summary(module, _required_text(module, "Name", source), f"ModuleInformation/Module[{i}]",
                 source)
        for i, module in enumerate(root.findall("ModuleInformation/Module"), start=1)
    ]
    if root.find("PerformanceEstimates") is not None:
        top_summary = _summary(root, top, "", source)
    else:
        top_summary = next((module for module in modules if module["name"] == top), None)
        if top_summary is None:
            raise HlsReportError(f"{source}: missing element <PerformanceEstimates>")
    loops = [loop for module in modules for loop in module["loops"]] or top_summary["loops"]
    return ReportRecord(
        kind="csynth",
        source=source,
        tool=_xml_tool(root, version),
        tool_version=version,
        part=_required_text(root, "UserAssignments/Part", source),
        top=top,
        clock_target_ns=_number(root, "UserAssignments/TargetClockPeriod", source, required=True),
        clock_estimated_ns=top_summary["clock_estimated_ns"],
        latency_cycles=top_summary["latency_cycles"],
        interval=top_summary["interval"],
        pipeline_type=top_summary["pipeline_type"],
        resources=top_summary["resources"],
        available=top_summary["available"],
        loops=loops,
        modules=[{key: value for key, value in module.items() if key != "loops"} for module in modules],
    )


def load_xml(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as error:
        raise HlsReportError(f"{path}: malformed XML: {error}") from None
    except OSError as error:
        raise HlsReportError(f"{path}: cannot read: {error.strerror}") from None


def _xml_tool(root: ET.Element, version: str | None) -> str:
    """Vitis HLS adds ``FlowTarget`` and says ``DSP``; Vivado HLS (up to 2020.1) says ``DSP48E``."""
    if root.find("UserAssignments/FlowTarget") is not None:
        return "vitis_hls"
    if root.find(".//DSP48E") is not None:
        return "vivado_hls"
    return "vitis_hls" if version is not None and version >= "2020.2" else "vivado_hls"


def _summary(scope: ET.Element, name: str, where: str, source: str) -> dict[str, Any]:
    """Performance and area of one module; ``scope`` is the report root or a ``Module`` element."""
    prefix = f"{where}/" if where else ""
    performance = scope.find("PerformanceEstimates")
    if performance is None:
        raise HlsReportError(f"{source}: missing element <{prefix}PerformanceEstimates>")

    def overall(tag: str) -> Span:
        path = f"PerformanceEstimates/SummaryOfOverallLatency/{tag}"
        return _span(scope, path, source, prefix + path)

    average = overall("Average-caseLatency")
    loop_table = performance.find("SummaryOfLoopLatency")
    resources, available = _area(scope, prefix, source)
    return {
        "name": name,
        "clock_estimated_ns": _number(
            scope, "PerformanceEstimates/SummaryOfTimingAnalysis/EstimatedClockPeriod", source,
            where=f"{prefix}PerformanceEstimates/SummaryOfTimingAnalysis/EstimatedClockPeriod"),
        "latency_cycles": {
            "best": overall("Best-caseLatency")[0],
            # An average over a range of latencies is not a number the report states.
            "avg": average[0] if average[0] == average[1] else None,
            "worst": overall("Worst-caseLatency")[1],
        },
        "interval": {"min": overall("Interval-min")[0], "max": overall("Interval-max")[1]},
        "pipeline_type": _text(performance, "PipelineType")
        or _text(performance, "SummaryOfOverallLatency/PipelineType"),
        "resources": resources,
        "available": available,
        "loops": [] if loop_table is None else _loops(
            loop_table, name, None, f"{prefix}PerformanceEstimates/SummaryOfLoopLatency", source),
    }


def _area(scope: ET.Element, prefix: str, source: str) -> tuple[dict, dict]:
    """Used and available resources, by element name, from ``Resources`` and
    ``AvailableResources`` (per-top reports) or ``AVAIL_*`` siblings (Vitis' per-module entries)."""
    area = scope.find("AreaEstimates")
    used_element = None if area is None else area.find("Resources")
    if area is None or used_element is None:
        raise HlsReportError(f"{source}: missing element <{prefix}AreaEstimates/Resources>")
    used, available = empty(RESOURCE_KEYS), empty(RESOURCE_KEYS)
    for child in used_element:
        where = f"{prefix}AreaEstimates/Resources/{child.tag}"
        if child.tag in _RESOURCE_NAMES:
            used[_RESOURCE_NAMES[child.tag]] = _element_number(child, source, where)
        elif child.tag in _AVAILABLE_NAMES:
            available[_AVAILABLE_NAMES[child.tag]] = _element_number(child, source, where)
    for child in area.findall("AvailableResources/*"):
        if child.tag in _RESOURCE_NAMES:
            available[_RESOURCE_NAMES[child.tag]] = _element_number(
                child, source, f"{prefix}AreaEstimates/AvailableResources/{child.tag}")
    return used, available


def _loops(container: ET.Element, module: str, parent: str | None, where: str,
           source: str) -> list[dict[str, Any]]:
    """Loops in file order, nested loops after their parent; a loop's element name is its label."""
    loops = []
    for element in container:
        if element.find("TripCount") is None and element.find("Latency") is None:
            continue
        path = f"{where}/{element.tag}"
        trip_count = _span(element, "TripCount", source, f"{path}/TripCount")
        latency = _span(element, "Latency", source, f"{path}/Latency")
        depth = _span(element, "PipelineDepth", source, f"{path}/PipelineDepth")[1]
        if depth is None:
            depth = _span(element, "IterationLatency", source, f"{path}/IterationLatency")[1]
        loops.append({
            "name": element.tag,
            "module": module,
            "parent": parent,
            "trip_count": {"min": trip_count[0], "max": trip_count[1]},
            "ii": _span(element, "PipelineII", source, f"{path}/PipelineII")[1],
            "depth": depth,
            "latency": {"min": latency[0], "max": latency[1]},
        })
        loops.extend(_loops(element, module, element.tag, path, source))
    return loops


def _text(scope: ET.Element, path: str) -> str | None:
    element = scope.find(path)
    return None if element is None or element.text is None else element.text.strip()


def _required_text(scope: ET.Element, path: str, source: str) -> str:
    text = _text(scope, path)
    if not text:
        raise HlsReportError(f"{source}: missing element <{path}>")
    return text


def _number(scope: ET.Element, path: str, source: str, *, required: bool = False,
            where: str | None = None) -> Number | None:
    element = scope.find(path)
    if element is None:
        if required:
            raise HlsReportError(f"{source}: missing element <{where or path}>")
        return None
    return _element_number(element, source, where or path)


def _element_number(element: ET.Element, source: str, where: str) -> Number | None:
    return parse_number(element.text or "", f"{source}: element <{where}>")


def _span(scope: ET.Element, path: str, source: str, where: str) -> Span:
    """A value that may be written as ``<range><min>a</min><max>b</max></range>``."""
    element = scope.find(path)
    if element is None:
        return None, None
    value_range = element.find("range")
    if value_range is None:
        return parse_span(element.text or "", f"{source}: element <{where}>")
    return (_number(value_range, "min", source, required=True, where=f"{where}/range/min"),
            _number(value_range, "max", source, required=True, where=f"{where}/range/max"))


# --- text ------------------------------------------------------------------------------------


def parse_csynth_rpt(path: Path) -> ReportRecord:
    """``<top>_csynth.rpt`` (classic sections) or Vitis' ``csynth.rpt`` summary tree."""
    source = str(path)
    lines = read_lines(path)
    tool, top = _rpt_identity(lines, source)
    info = general_info(lines)
    tables = read_tables(lines, source)
    timing = find_table(tables, "clock", "target", "estimated")
    latency = find_table(tables, rf"latency{_CYCLES} min", r"pipeline type")
    tree = find_table(tables, r"modules & loops")
    if latency is None and tree is None:
        raise HlsReportError(
            f"{source}: no latency table (a 'Latency' summary or a 'Modules & Loops' tree)")
    fields: dict[str, Any] = {}
    if timing is not None and timing.rows:
        clock = timing.rows[0]
        where = f"{source}: line {clock.line}"
        fields["clock_target_ns"] = parse_number(clock.get("target"), where)
        fields["clock_estimated_ns"] = parse_number(clock.get("estimated"), where)
    if latency is not None:
        fields.update(_classic_latency(latency, source))
        fields["loops"] = _classic_loops(find_table(tables, r"loop name"), top, source)
        fields.update(_classic_utilization(find_table(tables, "name", "bram_18k"), source))
    if tree is not None:
        tree_fields = _tree(tree, top, source)
        for key, value in tree_fields.items():
            fields.setdefault(key, value)
        if not fields.get("loops"):
            fields["loops"] = tree_fields["loops"]
    return ReportRecord(kind="csynth", source=source, tool=tool, tool_version=info.get("Version"),
                        part=info.get("Target device"), top=top, **fields)


def _rpt_identity(lines: list[str], source: str) -> tuple[str, str]:
    for line in lines:
        if match := _RPT_HEADER.match(line.strip()):
            return f"{match['tool'].lower()}_hls", match["top"]
        if match := _SUMMARY_HEADER.match(line.strip()):
            return "vitis_hls", match["top"]
    raise HlsReportError(
        f"{source}: line 1: no \"== Vivado HLS Report for '<top>'\" or "
        f"\"== Vitis HLS Report for '<top>'\" header")


def _classic_latency(table: Table, source: str) -> dict[str, Any]:
    if not table.rows:
        raise HlsReportError(f"{source}: line {table.line}: latency table has no rows")
    row = table.rows[0]
    where = f"{source}: line {row.line}"
    return {
        "latency_cycles": {
            "best": parse_span(row.get(rf"latency{_CYCLES} min"), where)[0],
            "avg": None,
            "worst": parse_span(row.get(rf"latency{_CYCLES} max"), where)[1],
        },
        "interval": {"min": parse_span(row.get(rf"interval{_CYCLES} min"), where)[0],
                     "max": parse_span(row.get(rf"interval{_CYCLES} max"), where)[1]},
        "pipeline_type": row.get("pipeline type") or None,
    }


def _classic_loops(table: Table | None, top: str, source: str) -> list[dict[str, Any]]:
    """Rows ``|- Loop`` / ``| + Inner``; depth is the iteration latency, as in the XML."""
    if table is None:
        return []
    loops: list[dict[str, Any]] = []
    for row in table.rows:
        where = f"{source}: line {row.line}"
        name, level = _tree_name(row, where)
        trip = parse_span(row.get("trip count"), where)
        ii = parse_span(row.get(r"initiation interval achieved|ii"), where)[1]
        loops.append({
            "name": name,
            "module": top,
            "parent": _parent(loops, level),
            "level": level,
            "trip_count": {"min": trip[0], "max": trip[1]},
            "ii": ii,
            "depth": parse_span(row.get("iteration latency"), where)[1],
            "latency": {"min": parse_span(row.get(rf"latency{_CYCLES} min"), where)[0],
                        "max": parse_span(row.get(rf"latency{_CYCLES} max"), where)[1]},
        })
    return [{key: value for key, value in loop.items() if key != "level"} for loop in loops]


def _classic_utilization(table: Table | None, source: str) -> dict[str, Any]:
    """The ``Total`` and ``Available`` rows of the Utilization Estimates summary."""
    if table is None:
        return {}
    fields = {}
    for row_name, key in (("Total", "resources"), ("Available", "available")):
        row = table.row(row_name)
        values = empty(RESOURCE_KEYS)
        if row is not None:
            for column, cell in row.cells.items():
                if column in _RESOURCE_NAMES:
                    values[_RESOURCE_NAMES[column]] = parse_number(cell, f"{source}: line {row.line}")
        fields[key] = values
    return fields


def _tree(table: Table, top: str, source: str) -> dict[str, Any]:
    """Vitis' tree: ``+`` rows are modules, ``o`` rows loops, ``*`` dataflow regions."""
    loops: list[dict[str, Any]] = []
    fields: dict[str, Any] = {}
    module = top
    for row in table.rows:
        where = f"{source}: line {row.line}"
        name, level = _tree_name(row, where)
        marker = row.first.strip()[0]
        latency = parse_span(row.get(r"latency \((?:cycles|clock cycles)\)"), where)
        if marker == "o":
            trip = parse_span(row.get("trip count"), where)
            loops.append({
                "name": name, "module": module, "parent": _parent(loops, level), "level": level,
                "trip_count": {"min": trip[0], "max": trip[1]},
                "ii": parse_span(row.get("interval"), where)[1],
                "depth": parse_span(row.get("iteration latency"), where)[1],
                "latency": {"min": latency[0], "max": latency[1]},
            })
            continue
        module = name
        if name == top and not fields:
            interval = parse_span(row.get("interval"), where)
            fields["latency_cycles"] = {"best": latency[0], "avg": None, "worst": latency[1]}
            fields["interval"] = {"min": interval[0], "max": interval[1]}
            fields["resources"] = {
                key: parse_number(row.get("bram" if key == "BRAM_18K" else key.lower()), where)
                for key in RESOURCE_KEYS
            }
    if not fields:
        raise HlsReportError(f"{source}: line {table.line}: no row for the top module '{top}'")
    fields["loops"] = [{k: v for k, v in loop.items() if k != "level"} for loop in loops]
    return fields


def _tree_name(row: Row, where: str) -> tuple[str, int]:
    """A row label without its tree marker, and its nesting level (leading spaces)."""
    match = _LOOP_MARKER.fullmatch(row.first)
    if match is None:
        raise HlsReportError(f"{where}: expected a '- ', '+ ', 'o ' or '* ' row label, "
                             f"got {shorten(row.first.strip())}")
    return match["name"].strip(), len(match["indent"])


def _parent(loops: list[dict[str, Any]], level: int) -> str | None:
    for loop in reversed(loops):
        if loop["level"] < level:
            return loop["name"]
    return None
