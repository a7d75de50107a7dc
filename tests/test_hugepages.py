"""The command line restarts itself once with huge-page-backed malloc, where glibc and the kernel
can give it, and records whether it did."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from harness import hugepages
from harness.hugepages import (
    HUGETLB_TUNABLE,
    OPT_OUT,
    TUNABLES,
    malloc_hugepages,
    restart_with_hugepages,
    why_no_hugepages,
)


class Restarted(Exception):
    pass


@pytest.fixture
def host(monkeypatch, tmp_path):
    """A glibc 2.36 host whose transparent huge pages are in madvise mode; execve recorded."""
    enabled = tmp_path / "enabled"
    enabled.write_text("always [madvise] never\n")
    monkeypatch.setattr(hugepages, "THP_ENABLED", enabled)
    monkeypatch.setattr(os, "confstr", lambda name: "glibc 2.36")
    monkeypatch.delenv(TUNABLES, raising=False)
    monkeypatch.delenv(OPT_OUT, raising=False)
    calls = []

    def execve(path, argv, env):
        calls.append((path, argv, env))
        raise Restarted

    monkeypatch.setattr(os, "execve", execve)
    return enabled, calls


def test_restarts_with_the_same_command_line_and_the_tunable_added(host, monkeypatch):
    _, calls = host
    monkeypatch.setenv(TUNABLES, "glibc.malloc.arena_max=2")
    monkeypatch.setattr(sys, "orig_argv", ["python3", "-X", "dev", "-m", "harness", "search"])
    with pytest.raises(Restarted):
        restart_with_hugepages()
    [(path, argv, env)] = calls
    assert path == sys.executable
    assert argv == [sys.executable, "-X", "dev", "-m", "harness", "search"]
    assert env[TUNABLES] == f"glibc.malloc.arena_max=2:{HUGETLB_TUNABLE}"
    assert os.environ[TUNABLES] == "glibc.malloc.arena_max=2"  # this process's is left alone


@pytest.mark.parametrize("setup, reason", [
    (lambda mp, enabled: mp.setenv(OPT_OUT, "0"), f"{OPT_OUT}=0"),
    (lambda mp, enabled: enabled.write_text("always madvise [never]\n"),
     "transparent huge pages are off ([never])"),
    (lambda mp, enabled: enabled.unlink(), "the kernel has no transparent huge pages"),
    (lambda mp, enabled: mp.setattr(os, "confstr", lambda name: "glibc 2.31"),
     "glibc 2.31 lacks glibc.malloc.hugetlb (glibc >= 2.35 has it)"),
    (lambda mp, enabled: mp.setattr(os, "confstr", lambda name: None),
     "the C library is not glibc"),
])
def test_no_restart_where_it_would_not_help_and_the_reason_says_why(host, monkeypatch, setup,
                                                                      reason):
    enabled, calls = host
    assert why_no_hugepages() is None
    setup(monkeypatch, enabled)
    assert why_no_hugepages().startswith(reason)
    restart_with_hugepages()
    assert calls == []


def test_an_unknown_setting_is_one_line_and_exit_2(monkeypatch):
    """Not silently on: 'off' or 'false' must not leave huge pages on."""
    env = {**os.environ, OPT_OUT: "off"}
    done = subprocess.run([sys.executable, "-m", "harness", "devices"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (f"harness: error: {OPT_OUT}='off': expected 0 (malloc as it is) or 1 "
                           "(huge pages, the default)\n")
    monkeypatch.setenv(OPT_OUT, "1")
    assert why_no_hugepages() is None or "=" not in why_no_hugepages()


def test_no_second_restart_once_started_with_the_tunable(host, monkeypatch):
    _, calls = host
    monkeypatch.setenv(TUNABLES, f"glibc.malloc.arena_max=2:{HUGETLB_TUNABLE}")
    assert malloc_hugepages()
    restart_with_hugepages()
    assert calls == []


def test_a_real_restart_keeps_the_pid_and_arguments_and_children_inherit_it(monkeypatch):
    """A real process restarts in place where this host can have huge pages, and not otherwise;
    a child it starts inherits the tunable."""
    monkeypatch.delenv(OPT_OUT, raising=False)
    script = (
        "import json, os, subprocess, sys\n"
        "from harness.hugepages import restart_with_hugepages, malloc_hugepages\n"
        "restart_with_hugepages()\n"
        "child = subprocess.run([sys.executable, '-c', 'from harness.hugepages import "
        "malloc_hugepages; print(malloc_hugepages())'], capture_output=True, text=True).stdout\n"
        "print(json.dumps({'argv': sys.argv[1:], 'pid': os.getpid(), 'on': malloc_hugepages(), "
        "'child': child.strip()}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in (TUNABLES, OPT_OUT)}
    process = subprocess.Popen([sys.executable, "-c", script, "a b", "--flag"], env=env,
                               stdout=subprocess.PIPE, text=True)
    out, _ = process.communicate(timeout=60)
    result = json.loads(out)
    assert result["argv"] == ["a b", "--flag"]
    assert result["pid"] == process.pid  # in place, not a child
    assert result["on"] is (why_no_hugepages() is None)
    assert result["child"] == str(result["on"])
    opted_out = subprocess.run([sys.executable, "-c", script], env={**env, OPT_OUT: "0"},
                               capture_output=True, text=True, check=True)
    assert json.loads(opted_out.stdout)["on"] is False
