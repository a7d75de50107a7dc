"""A real competing load: processes that keep every core busy for a bounded time.

What the contention check must see. The tests and ``benchmarks/noise_bench.py`` start one to
check that a busy host is flagged or waited for; nothing in a search or a benchmark run starts it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

from harness.devices.contention import logical_cores

SPIN = """
import multiprocessing, sys, time
def spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
if __name__ == "__main__":
    seconds, workers = float(sys.argv[1]), int(sys.argv[2])
    processes = [multiprocessing.Process(target=spin, args=(seconds,)) for _ in range(workers)]
    for p in processes:
        p.start()
    print("spinning", flush=True)
    for p in processes:
        p.join()
"""


class CompetingLoad:
    """Twice as many spinning processes as this process may use cores, for at most ``seconds``,
    in a process group of their own so that ``stop`` ends every one of them."""

    def __init__(self, seconds: float = 60.0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SPIN, str(seconds), str(2 * logical_cores())],
            stdout=subprocess.PIPE, text=True, start_new_session=True)
        if self.process.stdout.readline().strip() != "spinning":
            raise RuntimeError("the competing load did not start")
        time.sleep(0.5)  # let the workers reach their loops
        self.started = datetime.now(timezone.utc)
        self.stopped: datetime | None = None

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process.stdout.close()
        self.stopped = self.stopped or datetime.now(timezone.utc)
