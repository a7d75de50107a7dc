"""Where a number was measured: hardware, software versions, settings and the harness's commit.

``capture_environment`` records them with every result; ``diff_environments`` says what differs
between two records, and whether the difference is the machine (hardware), what ran on it
(software) or how it was set up (settings), so a comparison of two results can say why they may
not be comparable.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import platform
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import psutil
import torch

import harness
from harness.devices import BaseDevice
from harness.devices.cpu import cpu_model_name
from harness.devices.nvml import open_nvml
from harness.hugepages import malloc_hugepages

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _git(*args: str) -> str:
    """``git`` in the harness source tree; raises when there is no git or no repository."""
    source = Path(harness.__file__).resolve().parent
    return subprocess.run(
        ["git", "-C", str(source), *args], capture_output=True, text=True, timeout=5, check=True
    ).stdout.strip()


def git_commit_date() -> str | None:
    """Committer date (ISO 8601) of the harness source tree's commit: benchmark histories are
    ordered by it, not by when the benchmark ran."""
    try:
        return _git("log", "-1", "--format=%cI") or None
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit() -> str | None:
    """Commit of the harness source tree, if in git; ``-dirty`` when the package's own files
    (not tests or benchmarks) differ from it."""
    try:
        commit = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def cpu_facts() -> dict[str, Any]:
    """The host CPU whatever device is measured: a GPU's speed also depends on its host."""
    return {
        "model": cpu_model_name(),
        "architecture": platform.machine(),
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": psutil.cpu_count(),
    }


def gpu_facts() -> dict[str, Any] | None:
    """GPU names and the driver, CUDA and cuDNN versions; None without a usable CUDA GPU."""
    if not torch.cuda.is_available():
        return None
    return {
        "names": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "driver": _nvidia_driver(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }


def _nvidia_driver() -> str | None:
    nvml = open_nvml()
    return None if isinstance(nvml, str) else nvml.driver_version()


def thread_settings() -> dict[str, Any]:
    """Torch's thread pools now and the environment variables that size them at start-up."""
    return {
        "torch": torch.get_num_threads(),
        "torch_interop": torch.get_num_interop_threads(),
        **{name: os.environ.get(name) for name in THREAD_ENV_VARS},
    }


def _load_avg_1m() -> float | None:
    """Context for a noisy result: other work on the machine while it was measured."""
    if not hasattr(os, "getloadavg"):
        return None
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def machine_fingerprint(cpu: dict[str, Any], memory_gib: float, gpu: dict[str, Any] | None) -> str:
    """sha256 of the facts that identify the hardware: CPU model, architecture and core counts,
    memory rounded to whole GiB (kernels reserve different amounts, moving the total by megabytes;
    a total within megabytes of x.5 GiB can still round either way), and GPU names.

    Hostname, time, versions and settings stay out, so two CI runners of the same instance type
    share a fingerprint and one machine keeps its own across upgrades.
    """
    facts = {
        "cpu_model": cpu["model"],
        "architecture": cpu["architecture"],
        "physical_cores": cpu["physical_cores"],
        "logical_cores": cpu["logical_cores"],
        "memory_gib": round(memory_gib),
        "gpus": gpu["names"] if gpu else [],
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def total_memory_gib() -> float:
    return round(psutil.virtual_memory().total / 2**30, 1)


def capture_machine_fingerprint() -> str:
    """This host's ``machine_fingerprint``."""
    return machine_fingerprint(cpu_facts(), total_memory_gib(), gpu_facts())


def capture_environment(device: BaseDevice) -> dict[str, Any]:
    cpu = cpu_facts()
    gpu = gpu_facts()
    memory_gib = total_memory_gib()
    return {
        "host": socket.gethostname(),
        "machine_fingerprint": machine_fingerprint(cpu, memory_gib, gpu),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "memory_gib": memory_gib,
        "gpu": gpu,
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "harness": harness.__version__,
        "git_commit": git_commit(),
        "threads": thread_settings(),
        "malloc_hugepages": malloc_hugepages(),
        "load_avg_1m": _load_avg_1m(),
        "device": {"name": device.name, "kind": device.kind, **device.describe()},
    }


CHANGE_KINDS = ("hardware", "software", "settings")

# Dotted keys (lower case, fnmatch patterns), first match wins. Volatile readings differ between
# any two runs, and the hostname between CI runners of one instance type (``machine_fingerprint``
# says whether the hardware differs): they are not reported. What is neither a setting nor
# software describes the machine.
VOLATILE_KEYS = ("host", "load_avg_1m", "*.cpu_freq_mhz.current")
SETTINGS_KEYS = ("*thread*", "malloc_hugepages", "*governor", "*affinity", "*turbo", "*boost",
                 "*.cpu_freq_mhz.min", "*.cpu_freq_mhz.max", "*quantized_engine")
SOFTWARE_KEYS = ("platform", "python", "torch", "optuna", "harness", "git_commit", "gpu.cuda",
                 "gpu.cudnn", "*version*", "*driver*")


@dataclass(frozen=True)
class EnvironmentChange:
    """One key that differs between two environments; ``old`` is None when the key was added,
    ``new`` is None when it was removed."""

    key: str
    kind: str  # one of CHANGE_KINDS
    change: str  # "added", "removed" or "changed"
    old: Any
    new: Any

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def diff_environments(a: dict[str, Any], b: dict[str, Any]) -> list[EnvironmentChange]:
    """What changed from environment ``a`` to ``b``, by dotted key, volatile keys left out.

    Lists compare as a whole (affinity [0, 1] → [0] is one change), sorted by key.
    """
    old, new = _flatten(a), _flatten(b)
    changes = []
    for key in sorted(old.keys() | new.keys()):
        kind = change_kind(key)
        if kind is None or (key in old and key in new and old[key] == new[key]):
            continue
        change = "added" if key not in old else "removed" if key not in new else "changed"
        changes.append(EnvironmentChange(key, kind, change, old.get(key), new.get(key)))
    return changes


def change_kind(key: str) -> str | None:
    """``hardware``, ``software`` or ``settings`` for a dotted key; None for a volatile one."""
    lowered = key.lower()
    for patterns, kind in ((VOLATILE_KEYS, None), (SETTINGS_KEYS, "settings"),
                           (SOFTWARE_KEYS, "software")):
        if any(fnmatch.fnmatchcase(lowered, pattern) for pattern in patterns):
            return kind
    return "hardware"


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
