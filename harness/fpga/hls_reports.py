"""Find, recognise and summarise HLS and Vivado report files: the logic of ``harness hls show``.

File names identify most reports (``<top>_csynth.xml``, ``<top>_cosim.rpt``, ``lat.rpt``,
``*_utilization_placed.rpt``); the first kilobytes identify renamed ones, so a report copied out of
its project tree is still read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from harness.errors import FileError
from harness.files import check_readable_file
from harness.fpga.cosim import parse_cosim_rpt, parse_lat_rpt
from harness.fpga.csynth import parse_csynth_rpt, parse_csynth_xml
from harness.fpga.records import RESOURCE_KEYS, HlsReportError, ReportRecord
from harness.fpga.vivado import parse_power, parse_utilization

REPORT_SUFFIXES = (".xml", ".rpt")
_SNIFF_BYTES = 4096
# (name pattern, content marker, format): a name match wins; content decides otherwise.
_FORMATS: tuple[tuple[str, str, str], ...] = (
    (r"(.+_)?csynth\.xml", "<UserAssignments>", "csynth_xml"),
    (r"(.+_)?csynth\.rpt", "HLS Report for", "csynth_rpt"),
    (r".+_cosim\.rpt", "C/RTL Co-Simulation Report", "cosim_rpt"),
    (r"lat\.rpt", "$MAX_LATENCY", "lat_rpt"),
    (r".*utilization.*\.rpt", "report_utilization", "utilization_rpt"),
    (r".*power.*\.rpt", "report_power", "power_rpt"),
)
_PARSERS: dict[str, Callable[[Path], ReportRecord]] = {
    "csynth_xml": parse_csynth_xml,
    "csynth_rpt": parse_csynth_rpt,
    "cosim_rpt": parse_cosim_rpt,
    "lat_rpt": parse_lat_rpt,
    "utilization_rpt": parse_utilization,
    "power_rpt": parse_power,
}
_KINDS = {"csynth_xml": "csynth", "csynth_rpt": "csynth", "cosim_rpt": "cosim",
          "lat_rpt": "cosim", "utilization_rpt": "utilization", "power_rpt": "power"}


def detect_kind(path: Path) -> str | None:
    """``csynth``, ``cosim``, ``utilization``, ``power``, or ``None`` for anything else."""
    report_format = _detect_format(path)
    return None if report_format is None else _KINDS[report_format]


def parse_report(path: Path) -> ReportRecord:
    """The normalized record of one report file; ``HlsReportError`` if unknown or malformed."""
    path = Path(path)
    try:
        check_readable_file(path, "HLS report")
    except FileError as error:
        raise HlsReportError(str(error)) from None
    report_format = _detect_format(path)
    if report_format is None:
        raise HlsReportError(f"{path}: not a known HLS or Vivado report (by name or content)")
    return _PARSERS[report_format](path)


def find_reports(directory: Path) -> tuple[list[ReportRecord], list[tuple[Path, str]]]:
    """Every report under ``directory`` (``solution*/syn/report``, ``solution*/sim/report``,
    ``*.runs/impl_1``, …), and the ``.xml``/``.rpt`` files skipped with the reason.

    A malformed report is skipped, not fatal, so one truncated file does not hide the rest of a
    project; its reason is the parser's error. Other file types are not reports and not listed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise HlsReportError(f"{directory}: no such directory")
    used, skipped = [], []
    for path in sorted(directory.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in REPORT_SUFFIXES:
            continue
        if _detect_format(path) is None:
            skipped.append((path, "not a known HLS or Vivado report (by name or content)"))
            continue
        try:
            used.append(parse_report(path))
        except HlsReportError as error:
            skipped.append((path, f"malformed: {error}"))
    return used, skipped


def hls_show(path: Path, as_json: bool) -> str:
    """The text ``harness hls show PATH [--json]`` prints, for a report file or a directory."""
    path = Path(path)
    if path.is_dir():
        used, skipped = find_reports(path)
        if as_json:
            return json.dumps({
                "used": [record.to_dict() for record in used],
                "skipped": [{"path": str(file), "reason": reason} for file, reason in skipped],
            }, indent=2)
        blocks = [format_record(record) for record in used]
        blocks += [f"skipped {file}: {reason}" for file, reason in skipped]
        blocks.append(f"{len(used)} report(s) used, {len(skipped)} skipped")
        return "\n".join(blocks)
    record = parse_report(path)
    return json.dumps(record.to_dict(), indent=2) if as_json else format_record(record)


def format_record(record: ReportRecord) -> str:
    """A few human-readable lines; unknown values print as ``?`` like the tools' own reports."""
    identity = " ".join(part for part in (record.tool, record.tool_version) if part)
    lines = [f"{record.source}: {record.kind}"
             + (f" ({identity})" if identity else "")
             + (f", top {record.top}" if record.top else "")
             + (f", part {record.part}" if record.part else "")]
    if record.kind == "csynth":
        lines.append(f"  clock: target {_show(record.clock_target_ns)} ns, "
                     f"estimated {_show(record.clock_estimated_ns)} ns")
        latency = record.latency_cycles
        lines.append(f"  latency (cycles): best {_show(latency['best'])}, "
                     f"avg {_show(latency['avg'])}, worst {_show(latency['worst'])}; interval "
                     f"{_show(record.interval['min'])}..{_show(record.interval['max'])}; "
                     f"pipeline {record.pipeline_type or '?'}")
        lines.append("  resources: " + ", ".join(
            f"{key} {_show(record.resources[key])}/{_show(record.available[key])}"
            for key in RESOURCE_KEYS))
        lines += [f"  loop {loop['name']}: trip {_show_span(loop['trip_count'])}, "
                  f"II {_show(loop['ii'])}, depth {_show(loop['depth'])}, "
                  f"latency {_show_span(loop['latency'])}" for loop in record.loops]
    elif record.kind == "cosim":
        latency = record.cosim_latency
        lines.append(f"  co-simulated latency (cycles): min {_show(latency['min'])}, "
                     f"avg {_show(latency['avg'])}, max {_show(latency['max'])}")
    elif record.kind == "utilization":
        lines.append("  used: " + ", ".join(
            f"{key} {_show(value)}/{_show(record.available.get(key))}"
            for key, value in record.utilization.items() if key != "BRAM_36K"))
        lines += [f"  note: {note}" for note in record.notes]
    else:
        power = record.power_w
        lines.append(f"  power (W): total {_show(power['total'])}, dynamic "
                     f"{_show(power['dynamic'])}, static {_show(power['static'])}")
        lines += [f"  {'  ' * row['level']}{row['name']}: {_show(row['power_w'])} W"
                  for row in record.power_hierarchy]
    return "\n".join(lines)


def _detect_format(path: Path) -> str | None:
    for name_pattern, _, report_format in _FORMATS:
        if re.fullmatch(name_pattern, path.name, flags=re.IGNORECASE):
            return report_format
    head = _head(path)
    for _, marker, report_format in _FORMATS:
        if marker in head:
            return report_format
    return None


def _head(path: Path) -> str:
    try:
        with path.open("rb") as file:
            return file.read(_SNIFF_BYTES).decode(errors="replace")
    except OSError:
        return ""


def _show(value: object) -> str:
    return "?" if value is None else str(value)


def _show_span(span: dict) -> str:
    if span["min"] == span["max"]:
        return _show(span["min"])
    return f"{_show(span['min'])}~{_show(span['max'])}"
