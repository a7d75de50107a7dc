"""Huge-page-backed memory for the processes that time models.

Where a model's weights and activations land in physical memory decides which cache sets they
share, and with 4 KiB pages that placement is a lottery drawn again by every process and every
model built. On a 2-core VM, deit_tiny's drift-corrected latency scattered by 3.0% (sd) between
fresh processes, and by 1.8% when glibc's malloc backed its memory with 2 MiB transparent huge
pages (88 measurements each, in three runs alternating the two; Levene's test p = 0.02; 11
against 4 measurements more than 4% off their run's median). Fewer lottery draws make fewer
rounds of ``harness compare --base-rev/--head-rev`` necessary, and candidates of one search
comparable.

glibc reads its tunables when a process starts, so the command line restarts itself once, in
place (``os.execve``: the same process id), with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``, which
its child processes inherit. Nothing happens where glibc or the kernel cannot (the reason is
``why_no_hugepages``) or with ``HARNESS_MALLOC_HUGEPAGES=0``; each result's environment records
whether it was on (``malloc_hugepages``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from harness.errors import ConfigError

TUNABLES = "GLIBC_TUNABLES"
HUGETLB_TUNABLE = "glibc.malloc.hugetlb=1"  # madvise(MADV_HUGEPAGE) on malloc's memory
OPT_OUT = "HARNESS_MALLOC_HUGEPAGES"  # "0": leave malloc as it is; "1" (or unset): huge pages
MIN_GLIBC = (2, 35)  # the first glibc with the hugetlb tunable
THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")  # tests point it at a fake


def malloc_hugepages() -> bool:
    """Whether this process's malloc was started with huge pages."""
    return HUGETLB_TUNABLE in os.environ.get(TUNABLES, "").split(":")


def why_no_hugepages() -> str | None:
    """Why this process would not get huge-page-backed malloc, or None when it would; a
    ``ConfigError`` when ``HARNESS_MALLOC_HUGEPAGES`` is neither 0 nor 1."""
    setting = os.environ.get(OPT_OUT, "1")
    if setting not in ("0", "1"):
        raise ConfigError(f"{OPT_OUT}={setting!r}: expected 0 (malloc as it is) or 1 (huge pages, "
                          "the default)")
    if setting == "0":
        return f"{OPT_OUT}=0"
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):  # not a POSIX system, or no glibc to ask
        libc = ""
    try:
        name, version = libc.split()
        found = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return "the C library is not glibc"
    if name != "glibc" or found < MIN_GLIBC:
        return f"{libc} lacks glibc.malloc.hugetlb (glibc >= 2.35 has it)"
    try:
        mode = THP_ENABLED.read_text()
    except OSError:
        return f"the kernel has no transparent huge pages ({THP_ENABLED} unreadable)"
    if "[never]" in mode:
        return "transparent huge pages are off ([never])"
    return None


def restart_with_hugepages() -> None:
    """Replace this process with the same command line, malloc backed by huge pages, unless it
    already is or would not be (``why_no_hugepages``): then nothing happens."""
    if malloc_hugepages() or why_no_hugepages():
        return
    tunables = [t for t in os.environ.get(TUNABLES, "").split(":") if t] + [HUGETLB_TUNABLE]
    sys.stdout.flush()
    sys.stderr.flush()
    # orig_argv keeps the interpreter's own options (-X, -W) and how it was started (-m, -c, a script)
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]],
              {**os.environ, TUNABLES: ":".join(tunables)})
