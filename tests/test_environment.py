from __future__ import annotations

import copy
import json
import socket

import pytest

from harness.devices import get_device
from harness.devices.cpu import turbo_enabled
from harness.environment import (
    CHANGE_KINDS,
    capture_environment,
    change_kind,
    diff_environments,
    machine_fingerprint,
)


@pytest.fixture(scope="module")
def env():
    return capture_environment(get_device("cpu"))


def changed(env, edit):
    other = copy.deepcopy(env)
    edit(other)
    return [(c.key, c.kind, c.change, c.old, c.new) for c in diff_environments(env, other)]


def test_capture_has_hardware_software_and_settings(env):
    assert {"host", "machine_fingerprint", "platform", "python", "cpu", "memory_gib", "gpu",
            "torch", "optuna", "harness", "git_commit", "threads", "malloc_hugepages",
            "load_avg_1m", "device"} <= set(env)
    assert env["cpu"]["model"] and env["cpu"]["logical_cores"] >= 1
    assert set(env["threads"]) == {"torch", "torch_interop", "OMP_NUM_THREADS", "MKL_NUM_THREADS"}
    assert env["gpu"] is None or {"names", "driver", "cuda", "cudnn"} <= set(env["gpu"])
    device = env["device"]
    assert {"affinity", "governor", "turbo", "cpu_freq_mhz"} <= set(device)
    assert device["affinity"] is None or all(isinstance(cpu, int) for cpu in device["affinity"])
    assert device["turbo"] in (True, False, None)
    assert json.loads(json.dumps(env)) == env  # plain JSON


def test_capture_records_whether_malloc_has_huge_pages(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    assert capture_environment(get_device("cpu"))["malloc_hugepages"] is True
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    assert capture_environment(get_device("cpu"))["malloc_hugepages"] is False


def test_fingerprint_is_stable_and_ignores_the_hostname(env, monkeypatch):
    monkeypatch.setattr(socket, "gethostname", lambda: "another-ci-runner")
    again = capture_environment(get_device("cpu"))
    assert again["host"] == "another-ci-runner" != env["host"]
    assert again["machine_fingerprint"] == env["machine_fingerprint"]
    assert len(env["machine_fingerprint"]) == 64


def test_fingerprint_changes_with_the_hardware():
    cpu = {"model": "AMD EPYC", "architecture": "x86_64", "physical_cores": 2, "logical_cores": 2}
    base = machine_fingerprint(cpu, 23.4, None)
    assert machine_fingerprint(cpu, 23.2, None) == base  # whole GiB
    assert machine_fingerprint(cpu, 31.4, None) != base
    assert machine_fingerprint({**cpu, "model": "Intel Xeon"}, 23.4, None) != base
    assert machine_fingerprint({**cpu, "logical_cores": 4}, 23.4, None) != base
    assert machine_fingerprint(cpu, 23.4, {"names": ["NVIDIA H100"], "driver": "1"}) != base
    gpu = {"names": ["NVIDIA H100"], "driver": "550", "cuda": "12.4", "cudnn": 90100}
    assert machine_fingerprint(cpu, 23.5, gpu) == machine_fingerprint(
        cpu, 23.5, {**gpu, "driver": "560", "cuda": "12.8"})  # software stays out


def test_identical_environments_have_no_changes(env):
    assert diff_environments(env, copy.deepcopy(env)) == []


@pytest.mark.parametrize(
    ("edit", "key", "kind"),
    [
        (lambda e: e.update(torch="3.0.0"), "torch", "software"),
        (lambda e: e.update(git_commit="abc123"), "git_commit", "software"),
        (lambda e: e["cpu"].update(model="Intel Xeon"), "cpu.model", "hardware"),
        (lambda e: e["device"].update(cpu_model="Intel Xeon"), "device.cpu_model", "hardware"),
        (lambda e: e.update(memory_gib=512.0), "memory_gib", "hardware"),
        (lambda e: e["threads"].update(torch=e["threads"]["torch"] + 1), "threads.torch",
         "settings"),
        (lambda e: e["threads"].update(OMP_NUM_THREADS="997"), "threads.OMP_NUM_THREADS",
         "settings"),
        (lambda e: e["device"].update(torch_threads=e["device"]["torch_threads"] + 1),
         "device.torch_threads", "settings"),
        (lambda e: e["device"].update(governor="powersave"), "device.governor", "settings"),
        (lambda e: e["device"].update(affinity=[0]), "device.affinity", "settings"),
        (lambda e: e["device"].update(turbo=False), "device.turbo", "settings"),
    ],
)
def test_each_change_is_classified(env, edit, key, kind):
    [(found_key, found_kind, change, old, new)] = changed(env, edit)
    assert (found_key, found_kind, change) == (key, kind, "changed")
    assert old != new


def test_volatile_keys_are_ignored(env):
    def edit(e):
        e["host"] = "elsewhere"
        e["load_avg_1m"] = 99.0
        e["device"]["cpu_freq_mhz"]["current"] = 1.0

    env = {**env, "device": {**env["device"], "cpu_freq_mhz": {"current": 2600.0, "min": 0.0,
                                                                 "max": 0.0}}}
    assert changed(env, edit) == []
    assert change_kind("device.cpu_freq_mhz.current") is None
    assert change_kind("device.cpu_freq_mhz.max") == "settings"
    assert change_kind("malloc_hugepages") == "settings"


def test_added_and_removed_keys_keep_old_and_new_values(env):
    def edit(e):
        e["gpu"] = {"names": ["NVIDIA H100"], "driver": "550.54", "cuda": "12.4", "cudnn": 90100}
        del e["optuna"]

    env = {**env, "gpu": None}
    changes = changed(env, edit)
    assert ("gpu", "hardware", "removed", None, None) in changes
    assert ("gpu.names", "hardware", "added", None, ["NVIDIA H100"]) in changes
    assert ("gpu.driver", "software", "added", None, "550.54") in changes
    assert ("gpu.cuda", "software", "added", None, "12.4") in changes
    assert ("optuna", "software", "removed", env["optuna"], None) in changes
    assert all(kind in CHANGE_KINDS for _, kind, *_ in changes)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpufreq/boost": "1"}, True),
        ({"cpufreq/boost": "0"}, False),
        ({"intel_pstate/no_turbo": "1"}, False),
        ({"intel_pstate/no_turbo": "0"}, True),
        ({}, None),
    ],
)
def test_turbo_state_is_read_where_exposed(tmp_path, files, expected):
    for name, value in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(f"{value}\n")
    assert turbo_enabled(tmp_path) is expected
