"""FPGA targets: parse Vivado/Vitis HLS and Vivado reports into normalized, versioned records."""

from __future__ import annotations

from harness.fpga.hls_reports import (
    detect_kind,
    find_reports,
    format_record,
    hls_show,
    parse_report,
)
from harness.fpga.records import HlsReportError, ReportRecord

__all__ = [
    "HlsReportError",
    "ReportRecord",
    "detect_kind",
    "find_reports",
    "format_record",
    "hls_show",
    "parse_report",
]
