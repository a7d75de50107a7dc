"""Untimed work (training, scoring, proxies) shares the host's cores instead of fighting for them.

When torch's thread pool shares cores with another busy process, its threads spin instead of
working: two harness processes on two cores slowed each other 17x. Inside ``sharing_cores()``
the loops of untimed work call ``share_cores()`` at each step, which (every ``RESIZE_EVERY_S``)

* sizes torch's intra-op pool to the cores other processes left idle over the last window (never
  above the size it had on entry, never below one), and
* waits while another process of this host holds a timing lock, so its measurement sees a quiet
  host (``harness.devices.lock.wait_while_others_time``).

Timed measurements set their own thread count (the device profile's) and are not resized.
``--no-contention-check`` turns this off with the rest of the watching.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from harness.devices.contention import HostMonitor, logical_cores
from harness.devices.lock import wait_while_others_time
from harness.notices import notice

RESIZE_EVERY_S = 2.0
LOCK_CHECK_EVERY_S = 0.5


class CoreSharing:
    """The state of one ``sharing_cores()`` block. torch is imported at the first step of
    untimed work, so commands without any (``harness report``) never load it."""

    def __init__(self) -> None:
        self.most_threads: int | None = None  # torch's thread count before the first resize
        self.monitor = HostMonitor(threads=0)
        self.last_lock_check = time.monotonic()
        self.waited_s = 0.0
        self.resizes: list[int] = []

    def tick(self) -> None:
        import torch

        if self.most_threads is None:
            self.most_threads = torch.get_num_threads()
        now = time.monotonic()
        if now - self.last_lock_check >= LOCK_CHECK_EVERY_S:
            self.waited_s += wait_while_others_time(on_wait=_say_waiting)
            self.last_lock_check = time.monotonic()
            if self.waited_s:
                self.monitor.restart()  # the wait's window says nothing about the work's
        window, others, _ = self.monitor.others_cores()
        if window < RESIZE_EVERY_S:
            return
        idle = logical_cores() - others
        threads = max(1, min(self.most_threads, round(idle)))
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
            self.resizes.append(threads)
        self.monitor.restart()


_active: CoreSharing | None = None


@contextlib.contextmanager
def sharing_cores(enabled: bool = True) -> Iterator[CoreSharing | None]:
    """Within the block, ``share_cores()`` adapts untimed work to the host; the thread count is
    restored on exit. Nested blocks use the outer one."""
    global _active
    if not enabled or _active is not None:
        yield _active
        return
    _active = CoreSharing()
    try:
        yield _active
    finally:
        if _active.most_threads is not None:
            import torch

            torch.set_num_threads(_active.most_threads)
        _active = None


def share_cores() -> None:
    """Called by untimed loops at each step; nothing outside ``sharing_cores()``."""
    if _active is not None:
        _active.tick()


def _say_waiting(what: str) -> None:
    notice(f"pausing training and scoring while {what} (measurements get a quiet host)")
