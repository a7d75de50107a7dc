"""The normalized report record and the value parsing every report format shares.

Vendor reports spell "unknown" four ways (``undef``, ``?``, ``-``, ``NA``) and write ranges either as
``<range><min>/<max>`` elements or as ``a ~ b`` text; parsing them in one place keeps every format's
record consistent, so a calibration never has to know which tool wrote a number.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.errors import HarnessError, shorten
from harness.records import SCHEMA_VERSION

RESOURCE_KEYS = ("BRAM_18K", "DSP", "FF", "LUT", "URAM")
UNKNOWN_VALUES = frozenset({"", "undef", "?", "-", "--", "---", "na", "n/a", "unspecified"})

Number = int | float
Span = tuple[Number | None, Number | None]

_NUMBER = re.compile(
    r"(?P<bound><)?\s*(?P<value>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*(?:ns|us|ms|W|MHz)?\*?"
)
_PERCENT_SUFFIX = re.compile(r"\s*\([^)]*%\)\s*$")


class HlsReportError(HarnessError):
    """An HLS or Vivado report is malformed, truncated or not a report this parser knows."""


@dataclass(frozen=True)
class ReportRecord:
    """One report file, normalized: the same keys whatever tool or version wrote it.

    Fields that a kind of report never carries stay ``None`` (or empty), so consumers can read
    every record with one schema instead of branching on the tool.
    """

    kind: str
    source: str
    tool: str | None = None
    tool_version: str | None = None
    part: str | None = None
    top: str | None = None
    clock_target_ns: Number | None = None
    clock_estimated_ns: Number | None = None
    latency_cycles: dict[str, Number | None] = field(default_factory=lambda: empty("best avg worst"))
    interval: dict[str, Number | None] = field(default_factory=lambda: empty("min max"))
    pipeline_type: str | None = None
    resources: dict[str, Number | None] = field(default_factory=lambda: empty(RESOURCE_KEYS))
    available: dict[str, Number | None] = field(default_factory=lambda: empty(RESOURCE_KEYS))
    loops: list[dict[str, Any]] = field(default_factory=list)
    modules: list[dict[str, Any]] = field(default_factory=list)
    cosim_latency: dict[str, Number | None] = field(default_factory=lambda: empty("min avg max"))
    cosim_interval: dict[str, Number | None] = field(default_factory=lambda: empty("min avg max"))
    cosim_total_cycles: Number | None = None
    cosim_status: str | None = None
    utilization: dict[str, Number | None] = field(default_factory=dict)
    power_w: dict[str, Number | None] = field(default_factory=lambda: empty("total dynamic static"))
    power_components: dict[str, Number | None] = field(default_factory=dict)
    power_hierarchy: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only, so the record can be written as JSON or YAML without pickles."""
        return asdict(self)


def empty(keys: str | tuple[str, ...]) -> dict[str, Number | None]:
    """A dict of the given keys, all unknown: absent values are explicit nulls, never missing."""
    names = keys.split() if isinstance(keys, str) else keys
    return dict.fromkeys(names)


def is_unknown(text: str) -> bool:
    return text.strip().lower() in UNKNOWN_VALUES


def parse_number(text: str, where: str) -> Number | None:
    """A count or a measurement; ``None`` for the tools' unknown markers.

    Units (``ns``, ``us``, ``W``) and a trailing utilization share such as ``2 (~0%)`` are dropped;
    ``<0.001`` reads as its bound, which is within a milliwatt of the truth. ``where`` names the
    file and the element or line for the error message.
    """
    stripped = _PERCENT_SUFFIX.sub("", text.strip())
    if is_unknown(stripped):
        return None
    match = _NUMBER.fullmatch(stripped)
    if match is None:
        raise HlsReportError(f"{where}: expected a number, got {shorten(text.strip())}")
    value = float(match["value"])
    return int(value) if value.is_integer() and "." not in match["value"] else value


def parse_span(text: str, where: str) -> Span:
    """``a ~ b`` → (a, b); a single value → (v, v); unknown → (None, None)."""
    if "~" in text:
        low, high = text.split("~", 1)
        return parse_number(low, where), parse_number(high, where)
    value = parse_number(text, where)
    return value, value
