"""Several workers on one study: a worker killed mid-trial leaves no zombie, its trial is re-run
once with the same parameters, and workers of another search are refused.

Each scenario runs on the local journal file and, where a PostgreSQL server can be started here
(``postgres_url``), on PostgreSQL with heartbeats.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from harness.search.storage import open_storage

# Per-block choices over 6-8 blocks: millions of configurations, so independent workers never
# propose the same one by chance.
WIDE_SPACE = """\
schema_version: 1
name: wide
params:
  embed_dim: [32, 48, 64]
  depth: {low: 6, high: 8}
  num_heads: {choices: [1, 2], per_layer: true}
  mlp_ratio: {choices: [2.0, 4.0], per_layer: true}
  head_dim: 16
  patch_size: 8
  img_size: 32
  num_classes: 10
"""


def _postgres_binaries() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away PostgreSQL server on a free local port (as user postgres when run as root:
    the server refuses to run as root, and its directory must be reachable by that user)."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install '.[test]')")
    binaries = _postgres_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    data = Path(tempfile.mkdtemp(prefix="harness-postgres-")) / "data"
    run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if run_as:
        shutil.chown(data.parent, "postgres")
    port = _free_port()

    def run(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run([*run_as, *command], capture_output=True, text=True, timeout=120,
                              check=False)

    steps = [
        (str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"),
        (str(binaries / "pg_ctl"), "-D", str(data), "-l", str(data.parent / "log"), "-w", "-o",
         f"-p {port} -k {data.parent} -c listen_addresses=127.0.0.1", "start"),
        (str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
         "harness"),
    ]
    for step in steps:
        done = run(*step)
        if done.returncode != 0:
            pytest.skip(f"PostgreSQL could not be started: {Path(step[0]).name}: "
                        f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    yield f"postgresql://postgres@127.0.0.1:{port}/harness"
    run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
    shutil.rmtree(data.parent, ignore_errors=True)


@pytest.fixture(params=["journal", "postgresql"])
def storage(request, tmp_path) -> str:
    if request.param == "journal":
        return str(tmp_path / "study.journal")
    return request.getfixturevalue("postgres_url")


# Each trial times its model for 0.3 s (one timer per device: the workers take turns), so a
# worker can be killed in the middle of a trial rather than between two.
TIMED_CPU = """\
schema_version: 1
name: timedcpu
kind: cpu
measurement: {batch_size: 1, threads: 1, warmup_min_s: 0.001, warmup_min_iters: 2,
              min_samples: 10, min_timed_s: 0.3, max_samples: 100000, target_ci_rel: 0.05,
              time_cap_s: 0.5, energy: false}
"""


@pytest.fixture
def timed_device(tmp_path) -> Path:
    path = tmp_path / "timedcpu.yaml"
    path.write_text(TIMED_CPU)
    return path


def _worker(space: Path, device: Path, storage: str, out: Path, study: str, trials: int,
            *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness", "worker", "--study", study, "--storage", storage,
         "--space", str(space), "--device", str(device), "--accuracy", "proxy:dss",
         "--sampler", "random", "--trials", str(trials), "--out", str(out), "--quiet", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@functools.cache
def _storage(storage: str) -> optuna.storages.BaseStorage:
    """One storage a URL for this process: a new one each poll left its connection pool open
    until garbage collection, and the test server ran out of connections ("too many clients")."""
    return open_storage(storage)


def _trials(storage: str, study: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=study, storage=_storage(storage)).trials
    except KeyError:
        return []


def _wait(condition, timeout_s: float = 240.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_worker_killed_mid_trial_is_retried_once_by_the_others(storage, tmp_path,
                                                                  timed_device):
    space = tmp_path / "wide.yaml"
    space.write_text(WIDE_SPACE)
    study = f"workers-{time.monotonic_ns()}"
    first = _worker(space, timed_device, storage, tmp_path / "a", study, 8)
    _wait(lambda: _trials(storage, study))  # the study exists before the others join
    second = _worker(space, timed_device, storage, tmp_path / "b", study, 8)
    victim = _worker(space, timed_device, storage, tmp_path / "c", study, 1000)

    def victim_mid_trial() -> bool:
        mine = [t for t in _trials(storage, study) if t.user_attrs.get("pid") == victim.pid]
        # killed once the trial has its configuration (all parameters suggested), so the retry
        # can be checked against every parameter
        return (any(t.state == TrialState.COMPLETE for t in mine)
                and any(t.state == TrialState.RUNNING and "config" in t.user_attrs
                        for t in mine))

    _wait(victim_mid_trial)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    for worker in (first, second):
        assert worker.wait(timeout=300) == 0, worker.stderr.read()

    trials = _trials(storage, study)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    [orphan] = [t for t in trials if t.state == TrialState.FAIL]
    assert orphan.user_attrs["pid"] == victim.pid and orphan.user_attrs["interrupted"]
    [retry] = [t for t in trials if t.user_attrs.get("retry_of") == orphan.number]
    assert retry.state == TrialState.COMPLETE and retry.params == orphan.params
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    for worker in (first, second):
        ran = [t for t in complete if t.user_attrs["pid"] == worker.pid]
        # its own 8, plus the retry if the retry was queued after those were done
        assert len(ran) == 8 + (retry in ran and len(ran) > 8)
    assert retry.user_attrs["pid"] in (first.pid, second.pid)
    keys = [t.user_attrs["config_key"] for t in complete]
    assert len(keys) == len(set(keys))  # no configuration measured twice


def test_sigterm_stops_a_worker_after_its_current_trial(tmp_path, fast_device_file):
    space = tmp_path / "wide.yaml"
    space.write_text(WIDE_SPACE)
    storage = str(tmp_path / "study.journal")
    worker = _worker(space, fast_device_file, storage, tmp_path / "out", "graceful", 1000)
    _wait(lambda: any(t.state == TrialState.COMPLETE for t in _trials(storage, "graceful")))
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=120) == 0
    trials = _trials(storage, "graceful")
    assert trials and all(t.state == TrialState.COMPLETE for t in trials)


def test_a_worker_of_another_search_is_refused(tmp_path, fast_device_file):
    space = tmp_path / "wide.yaml"
    space.write_text(WIDE_SPACE)
    storage = str(tmp_path / "study.journal")
    assert _worker(space, fast_device_file, storage, tmp_path / "a", "s", 1).wait(timeout=120) == 0
    other = _worker(space, fast_device_file, storage, tmp_path / "b", "s", 1, "--budget",
                    "1gflop")
    assert other.wait(timeout=120) == 2
    err = other.stderr.read()
    assert err.startswith("harness: error: study 's' already exists with a different budgets")
    assert err.count("\n") == 1


def test_sqlite_is_refused_for_workers(tmp_path, fast_device_file):
    space = tmp_path / "wide.yaml"
    space.write_text(WIDE_SPACE)
    worker = _worker(space, fast_device_file, f"sqlite:///{tmp_path}/x.db", tmp_path / "out",
                     "s", 1)
    assert worker.wait(timeout=120) == 2
    assert "SQLite does not take concurrent writers" in worker.stderr.read()


def test_a_stale_heartbeat_on_postgresql_fails_and_requeues_the_trial(postgres_url, monkeypatch):
    """A worker on another host that stops beating: its trial is failed once the grace period
    passes, and queued again with the same parameters."""
    import harness.search.storage as storage_module

    monkeypatch.setattr(storage_module, "HEARTBEAT_INTERVAL_S", 1)
    monkeypatch.setattr(storage_module, "GRACE_PERIOD_S", 1)
    study = optuna.create_study(study_name=f"stale-{time.monotonic_ns()}",
                                storage=open_storage(postgres_url), directions=["minimize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "heartbeat ... used with Study.optimize"
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.set_user_attr("host", "another-host")  # not this host's process: only the heartbeat
    with storage_module.heartbeat(study, trial):
        time.sleep(0.1)  # it beat at least once, then the worker "died"
    _wait(lambda: (storage_module.recover_orphans(study)
                   or study.trials[trial.number].state == TrialState.FAIL), timeout_s=30)
    [waiting] = study.get_trials(states=(TrialState.WAITING,))
    assert waiting.user_attrs["retry_of"] == trial.number
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "heartbeat ... used with Study.optimize"
        retry = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    assert retry.number == waiting.number and retry.params == trial.params


# int8: fp32 matrix units would not fit the part (every candidate rejected)
FPGA_SPACE = WIDE_SPACE + "  precision: int8\n"


def _search(tmp_path: Path, *extra: str, command: str = "search") -> subprocess.Popen:
    """``harness search`` (or ``worker``) on the FPGA profile: estimated, so local workers may
    share the host. Options in ``extra`` override the defaults here (argparse keeps the last)."""
    space = tmp_path / "fpga.yaml"
    space.write_text(FPGA_SPACE)
    return subprocess.Popen(
        [sys.executable, "-m", "harness", command, "--space", str(space), "--device", "zcu102",
         "--accuracy", "proxy:params", "--sampler", "random", "--out", str(tmp_path / "out"),
         "--study", "s",
         *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_local_workers_fill_the_study_together(tmp_path):
    # Enough trials to outlast the workers' start-up: 12 estimated trials take under 1 s, and the
    # worker that finished importing first on a loaded 2-core host once ran all of them alone
    search = _search(tmp_path, "--trials", "60", "--workers", "3", "--json")
    _, err = search.communicate(timeout=300)
    assert search.returncode == 0, err
    trials = _trials(str(tmp_path / "out" / "study.journal"), "s")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    # a worker checks the count just before it asks: two may both take the last place
    assert 60 <= len(complete) <= 62
    assert len({t.user_attrs["pid"] for t in complete}) >= 2
    assert search.pid not in {t.user_attrs["pid"] for t in complete}  # the parent only watches
    keys = [t.user_attrs["config_key"] for t in complete]
    assert len(keys) == len(set(keys))  # each trial draws from its own number's seed
    # the parent reports every trial, in one display, and writes the report
    progress = [line for line in err.splitlines() if line.startswith("[")]
    assert len(progress) == len(trials)
    assert progress[-1].startswith(f"[{len(complete):>3}/60]")
    assert "3 local workers" in err
    assert (tmp_path / "out" / "report.html").exists()


def test_ctrl_c_stops_the_local_workers_and_the_same_command_resumes(tmp_path):
    storage = str(tmp_path / "out" / "study.journal")
    search = _search(tmp_path, "--trials", "5000", "--workers", "2", "--quiet")
    _wait(lambda: sum(t.state == TrialState.COMPLETE for t in _trials(storage, "s")) >= 4)
    search.send_signal(signal.SIGINT)
    assert search.wait(timeout=120) == 130
    assert "interrupted; finished trials are kept" in search.stderr.read()
    trials = _trials(storage, "s")
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert all(t.user_attrs.get("interrupted") for t in trials if t.state == TrialState.FAIL)
    done = sum(t.state == TrialState.COMPLETE for t in trials)

    resumed = _search(tmp_path, "--trials", str(done + 3), "--workers", "2",
                      "--quiet")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    after = _trials(storage, "s")
    assert done + 3 <= sum(t.state == TrialState.COMPLETE for t in after) <= done + 4


def test_local_workers_are_refused_on_a_device_timed_on_this_host(tmp_path, fast_device_file):
    space = tmp_path / "wide.yaml"
    space.write_text(WIDE_SPACE)
    search = subprocess.run(
        [sys.executable, "-m", "harness", "search", "--space", str(space), "--device",
         str(fast_device_file), "--accuracy", "proxy:params", "--workers", "2", "--out",
         str(tmp_path / "out")], capture_output=True, text=True, timeout=120, check=False)
    assert search.returncode == 2
    assert search.stderr.startswith("harness: error: --workers 2: device 'fastcpu' is timed on "
                                    "this host")
    assert search.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


def _new_database(server_url: str) -> str:
    """A new, empty database on the test server: its tables do not exist yet."""
    import psycopg

    name = f"fresh_{time.monotonic_ns()}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + f"/{name}"


# Several hosts run the same search on PostgreSQL; on one host's journal file, workers.
@pytest.mark.parametrize(("kind", "command"), [("journal", "worker"), ("postgresql", "search")])
def test_processes_started_together_on_a_new_storage_share_one_study(kind, command, tmp_path,
                                                                     request):
    """Started at the same moment on an empty storage, they race to create the database tables
    and the study: all must join the one study and stop together."""
    storage = (str(tmp_path / "shared.journal") if kind == "journal"
               else _new_database(request.getfixturevalue("postgres_url")))
    processes = [_search(tmp_path, "--trials", "2" if command == "worker" else "6", "--storage",
                         storage, "--out", str(tmp_path / name), "--quiet", command=command)
                 for name in ("a", "b", "c")]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    [study] = optuna.get_all_study_names(_storage(storage))
    complete = [t for t in _trials(storage, study) if t.state == TrialState.COMPLETE]
    # workers run 2 trials each; searches stop at 6, or a little over when two take the last place
    assert len(complete) == 6 if command == "worker" else 6 <= len(complete) <= 8
    keys = [t.user_attrs["config_key"] for t in complete]
    assert len(keys) == len(set(keys))
