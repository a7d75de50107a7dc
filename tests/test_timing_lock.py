"""One timer per device: the host-wide timing lock."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

from harness.devices.lock import exclusive_timing, lock_path

HOLD = ("import sys, time; from harness.devices.lock import exclusive_timing\n"
        "with exclusive_timing(sys.argv[1]):\n"
        "    print('held', flush=True); time.sleep(60)\n")


def _holder(device: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, device], stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_timer_waits_and_says_who_holds_the_device(capsys):
    device = f"test-device-{time.monotonic_ns()}"
    holder = _holder(device)
    try:
        stopper = threading.Timer(1.0, holder.terminate)
        stopper.start()
        with exclusive_timing(device):
            assert holder.poll() is not None  # the lock came only once its holder had gone
        stopper.join()
        err = capsys.readouterr().err
        assert f"waiting for device {device!r}: process {holder.pid} on this host" in err
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_leaves_no_stale_lock(capsys):
    device = f"test-device-{time.monotonic_ns()}"
    holder = _holder(device)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock_path(device).exists()  # the file stays; the lock went with the process
    with exclusive_timing(device):
        pass
    assert "waiting" not in capsys.readouterr().err  # taken at once
    lock_path(device).unlink()
