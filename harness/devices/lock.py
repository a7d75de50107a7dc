"""One timer per device: latency measurements on one physical device never overlap.

Several harness processes on one host (local workers, a second search) would otherwise time the
same CPU or GPU at once and measure each other. The lock is an ``flock`` on a file in a private
directory of the host's temporary directory: the operating system releases it when its holder
exits or is killed, so a killed worker never leaves a stale lock behind. The directory belongs to
this user and nobody else may write in it, and the file is opened without following symbolic
links, so a link planted at its name cannot make the harness overwrite another file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from harness.errors import DeviceError, shorten
from harness.files import safe_name
from harness.notices import notice


def lock_dir() -> Path:
    """``$TMPDIR/harness-<uid>``, created 0700; refused unless it is a real directory of ours."""
    path = Path(tempfile.gettempdir()) / f"harness-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise DeviceError(f"timing-lock directory {path} is not a private directory of this user "
                          "(a link, another owner, or writable by others); remove it")
    return path


def lock_path(device: str) -> Path:
    return lock_dir() / f"timing-{safe_name(device)}.lock"


@contextlib.contextmanager
def exclusive_timing(device: str) -> Iterator[None]:
    """Hold the timing lock of ``device`` on this host; say so when another process has it."""
    path = lock_path(device)
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise DeviceError(f"cannot open the timing lock {path} ({error.strerror})") from None
    with os.fdopen(descriptor, "r+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = handle.read().strip() or "another process"
            notice(f"waiting for device {shorten(device)}: process {holder} on this host is "
                   "timing it (measurements on one device never overlap)")
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def wait_while_others_time(on_wait: Callable[[str], None] | None = None) -> float:
    """Block while another process of this host holds a timing lock; the seconds waited.

    Untimed work (training, scoring) calls this between its steps: waiting instead of competing
    gives the other process's measurement a quiet host, at the cost of the measurement's time.
    Never called while this process holds a timing lock itself, which would wait forever."""
    waited = 0.0
    for path in sorted(lock_dir().glob("timing-*.lock")):
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue  # removed meanwhile, or not ours to read
        with os.fdopen(descriptor) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    holder = handle.read().strip() or "another process"
                    on_wait(f"process {holder} is timing {path.stem.removeprefix('timing-')}")
                start = time.monotonic()
                fcntl.flock(handle, fcntl.LOCK_SH)
                waited += time.monotonic() - start
            fcntl.flock(handle, fcntl.LOCK_UN)
    return waited
