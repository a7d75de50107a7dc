"""One timer per device: latency measurements on one physical device never overlap.

Several harness processes on one host (local workers, a second search) would otherwise time the
same CPU or GPU at once and measure each other. The lock is an ``flock`` on a file in the host's
temporary directory: the operating system releases it when its holder exits or is killed, so a
killed worker never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from harness.errors import shorten


def lock_path(device: str) -> Path:
    return Path(tempfile.gettempdir()) / f"harness-timing-{device}.lock"


@contextlib.contextmanager
def exclusive_timing(device: str) -> Iterator[None]:
    """Hold the timing lock of ``device`` on this host; say so when another process has it."""
    with open(lock_path(device), "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            print(f"harness: waiting for device {shorten(device)}: process {holder} on this host "
                  "is timing it (measurements on one device never overlap)", file=sys.stderr,
                  flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
