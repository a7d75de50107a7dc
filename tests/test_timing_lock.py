"""One timer per device: the host-wide timing lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from harness.devices.lock import exclusive_timing, lock_dir, lock_path
from harness.errors import DeviceError

HOLD = ("import sys, time; from harness.devices.lock import exclusive_timing\n"
        "with exclusive_timing(sys.argv[1]):\n"
        "    print('held', flush=True); time.sleep(60)\n")


def _holder(device: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, device], stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline().strip() == "held"
    return process


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """A temporary directory of this test's own, so lock files never meet the host's."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # tempfile caches gettempdir()
    return tmp_path


def test_a_second_timer_waits_and_says_who_holds_the_device(caplog, private_tmp):
    device = f"test-device-{time.monotonic_ns()}"
    holder = _holder(device)
    stopping = threading.Event()

    def stop_holder() -> None:
        stopping.set()
        holder.terminate()

    try:
        stopper = threading.Timer(1.0, stop_holder)
        stopper.start()
        with exclusive_timing(device):
            # the lock came only once its holder was told to go (its exit may not be reaped yet)
            assert stopping.is_set()
        stopper.join()
        # a notice (harness.notices), which the CLI shows as a "harness: ..." line on stderr
        assert f"waiting for device {device!r}: process {holder.pid} on this host" in caplog.text
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_leaves_no_stale_lock(capsys, private_tmp):
    device = f"test-device-{time.monotonic_ns()}"
    holder = _holder(device)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock_path(device).exists()  # the file stays; the lock went with the process
    with exclusive_timing(device):
        pass
    assert "waiting" not in capsys.readouterr().err  # taken at once


def test_a_symlink_at_the_lock_name_is_not_followed(private_tmp):
    victim = private_tmp / "precious.txt"
    victim.write_text("keep me\n")
    os.symlink(victim, lock_path("cpu"))
    with (pytest.raises(DeviceError, match="cannot open the timing lock .*timing-cpu.lock"),
          exclusive_timing("cpu")):
        pass
    assert victim.read_text() == "keep me\n"


def test_the_lock_directory_is_private(private_tmp):
    directory = lock_dir()
    assert directory.parent == private_tmp and directory.stat().st_mode & 0o777 == 0o700
    directory.chmod(0o777)
    with pytest.raises(DeviceError, match="not a private directory of this user"):
        lock_dir()
    directory.rmdir()
    os.symlink(private_tmp, directory)  # a link planted where the directory should be
    with pytest.raises(DeviceError, match="not a private directory"):
        lock_dir()


def test_a_device_name_cannot_leave_the_lock_directory(private_tmp):
    path = lock_path("../../etc/passwd")
    assert path.parent == lock_dir() and path.name == "timing-etc-passwd.lock"
