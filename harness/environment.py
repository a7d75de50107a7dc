"""Where a number was measured: host, software versions and the harness's git commit."""

from __future__ import annotations

import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import optuna
import psutil
import torch

import harness
from harness.devices import BaseDevice


def git_commit() -> str | None:
    """Commit of the harness source tree, if in git; ``-dirty`` when the package's own files
    (not tests or benchmarks) differ from it."""
    source = Path(harness.__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(source), *args], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def capture_environment(device: BaseDevice) -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "harness": harness.__version__,
        "git_commit": git_commit(),
        "device": {"name": device.name, "kind": device.kind, **device.describe()},
    }
