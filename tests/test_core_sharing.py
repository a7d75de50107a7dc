"""Untimed work yields cores to other busy processes and pauses while another process times."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from harness import core_sharing
from harness.core_sharing import share_cores, sharing_cores
from harness.devices.competing_load import CompetingLoad
from harness.devices.contention import logical_cores
from harness.devices.lock import wait_while_others_time

HOLD_LOCK = """
import sys, time
from harness.devices.lock import exclusive_timing
with exclusive_timing(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _work_until_resized(sharing: core_sharing.CoreSharing, rounds: int) -> None:
    """Untimed work that ticks, over a few resizing windows."""
    a = torch.randn(256, 256)
    for _ in range(rounds):
        deadline = time.monotonic() + core_sharing.RESIZE_EVERY_S
        while time.monotonic() < deadline:
            a = torch.tanh(a @ a)
            share_cores()
        if sharing.resizes:
            return


@pytest.mark.skipif(logical_cores() < 2, reason="one core: there is no thread to give up")
def test_untimed_work_gives_up_threads_to_a_busy_host_and_restores_them():
    torch.set_num_threads(logical_cores())
    load = CompetingLoad()
    try:
        with sharing_cores() as sharing:
            _work_until_resized(sharing, rounds=3)
            assert sharing.resizes and min(sharing.resizes) < logical_cores()
            assert torch.get_num_threads() < logical_cores()
    finally:
        load.stop()
    assert torch.get_num_threads() == logical_cores()


def test_a_quiet_host_keeps_every_thread():
    torch.set_num_threads(logical_cores())
    with sharing_cores() as sharing:
        _work_until_resized(sharing, rounds=1)
        assert sharing.resizes == [] and torch.get_num_threads() == logical_cores()


def test_sharing_off_never_resizes():
    with sharing_cores(enabled=False) as sharing:
        assert sharing is None
        share_cores()  # a no-op outside an enabled block


def test_untimed_work_waits_while_another_process_times():
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, "gpu-under-test", "1.0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        said = []
        waited = wait_while_others_time(on_wait=said.append)
        assert waited > 0
        assert said == [f"process {holder.pid} is timing gpu-under-test"]
    finally:
        holder.wait(timeout=30)
        holder.stdout.close()
    assert wait_while_others_time() == 0.0  # released: nothing to wait for
