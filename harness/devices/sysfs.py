"""Reading the kernel's one-value files (``/sys``: cpufreq, powercap)."""

from __future__ import annotations

from pathlib import Path


def read_sysfs(path: str | Path) -> str | None:
    """The stripped contents of a sysfs file; None when it is absent or unreadable."""
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None
