"""Opening a study's storage: a damaged journal is refused before anything is written to it and
``harness repair`` mends it; commands that only read a study create nothing; a database that
cannot be reached is one line without its password."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
from conftest import FAST_CPU, TINY_SPACE
from optuna.trial import TrialState

import harness.search.storage as storage_module
from harness.cli import main
from harness.errors import StudyError
from harness.search.journal import journal_lock
from harness.search.storage import open_storage

STUDY = "journal"


def _search_command(files: Path, out: Path) -> list[str]:
    """Without re-measuring the front, the journal's last record is the last trial's result: the
    damage cuts into it."""
    return ["search", "--no-remeasure", *_search_arguments(files, out)]


def _search_arguments(files: Path, out: Path) -> list[str]:
    """What a search and a worker of the same study share."""
    return ["--space", str(files / "tiny.yaml"), "--device", str(files / "fastcpu.yaml"),
            "--accuracy", "proxy:params", "--trials", "5", "--study", STUDY, "--out", str(out),
            "--quiet"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A finished 5-trial search, run by a process that has exited (as a crashed one has)."""
    files = tmp_path_factory.mktemp("recorded")
    (files / "tiny.yaml").write_text(TINY_SPACE)
    (files / "fastcpu.yaml").write_text(FAST_CPU)
    done = subprocess.run([sys.executable, "-m", "harness", *_search_command(files, files / "out")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return files


def _snapshot(journal: Path) -> dict[int, tuple]:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal)))
    return {t.number: (t.state, t.values, t.params, t.user_attrs)
            for t in optuna.load_study(study_name=STUDY, storage=storage).trials}


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def _truncated(data: bytes) -> bytes:
    """Cut in the middle of the last record (``truncate -s -N``): the last trial's result."""
    last = _lines(data)[-1]
    return data[:len(data) - len(last) // 2]


def _garbage(data: bytes) -> bytes:
    return data + b"garbage\n"  # echo garbage >> study.journal


def _glued(data: bytes) -> bytes:
    """A record cut mid-way, then records another process appended onto the partial line."""
    *kept, before_last, last = _lines(data)
    return b"".join([*kept, before_last, last[:len(last) // 2], before_last, last])


DAMAGES = {"truncated": _truncated, "garbage": _garbage, "glued": _glued}
# (the first damaged line: the intact journal's line count plus this; what the message says)
EXPECTED = {
    "truncated": (0, "an unterminated last record, as a crash or a full disk leaves"),
    "garbage": (1, "1 undecodable line;"),
    "glued": (0, "1 undecodable line, then 1 complete record that depends on it"),
}


def _refused(args: list[str], capsys) -> str:
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("harness: error: ") and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err and captured.out == ""
    return captured.err


@pytest.mark.parametrize("kind", sorted(DAMAGES))
def test_a_damaged_journal_is_refused_then_repaired_and_the_search_resumes(kind, recorded,
                                                                          tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(recorded / "out", out)
    journal = out / "study.journal"
    intact = journal.read_bytes()
    before = _snapshot(journal)
    damaged = DAMAGES[kind](intact)
    journal.write_bytes(damaged)
    extra, looks = EXPECTED[kind]
    line = len(_lines(intact)) + extra
    offset = len(b"".join(_lines(intact)[:line - 1]))
    search = _search_command(recorded, out)
    worker = ["worker", "--storage", str(journal), *_search_arguments(recorded, out), "--trials",
              "1"]

    for args in (search, ["report", str(out)], worker):
        err = _refused(args, capsys)
        assert (f"journal {journal} is damaged from line {line} (byte offset {offset}): {looks}"
                in err)
        assert "nothing was written to it" in err and f"harness repair {journal}" in err
        assert journal.read_bytes() == damaged  # nothing appended, nothing cut
    assert sorted(p.name for p in out.iterdir()) == sorted(
        p.name for p in (recorded / "out").iterdir())  # no lock left, no side file

    assert main(["repair", str(out)]) == 0  # an output directory means its study.journal
    summary = capsys.readouterr().out
    [side_file] = out.glob("study.journal.damaged-*")
    assert journal.read_bytes() == damaged[:offset]
    assert side_file.read_bytes() == damaged[offset:]  # exactly the bytes removed
    assert f"repaired journal {journal}: kept {line - 1} complete records (1 study" in summary
    assert (f"moved {len(damaged) - offset} bytes from line {line} "
            f"({len(_lines(damaged)) - line + 1} line") in summary
    assert str(side_file) in summary
    assert ("moved too" in summary) == (kind == "glued")
    repaired = _snapshot(journal)
    complete = {n: t for n, t in repaired.items() if t[0] == TrialState.COMPLETE}
    assert len(complete) >= 4 and all(before[n] == t for n, t in complete.items())
    running = [n for n, t in repaired.items() if t[0] == TrialState.RUNNING]
    assert len(running) == (0 if kind == "garbage" else 1)  # the cut took the last trial's result

    assert main(search) == 0  # the same command resumes
    capsys.readouterr()
    resumed = _snapshot(journal)
    assert all(resumed[n] == t for n, t in complete.items())
    for number in running:  # failed and queued once more by the orphan recovery
        assert resumed[number][0] == TrialState.FAIL and resumed[number][3]["interrupted"]
        [retry] = [t for t in resumed.values() if t[3].get("retry_of") == number]
        assert retry[0] == TrialState.COMPLETE and retry[2] == before[number][2]
    assert sum(t[0] == TrialState.COMPLETE for t in resumed.values()) == 5
    assert not [t for t in resumed.values() if t[0] == TrialState.RUNNING]


def test_repair_leaves_an_intact_journal_as_it_is(recorded, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(recorded / "out", out)
    journal = out / "study.journal"
    intact = journal.read_bytes()
    assert main(["repair", str(journal)]) == 0
    summary = capsys.readouterr().out
    assert summary.startswith(f"journal {journal} is intact: {len(_lines(intact))} complete "
                              "records (1 study, 5 trials: 5 complete); nothing changed")
    assert journal.read_bytes() == intact and not list(out.glob("*.damaged-*"))
    assert main(["report", str(out)]) == 0
    assert main(_search_command(recorded, out)) == 0


def test_reading_commands_create_no_storage(recorded, tmp_path, capsys):
    missing = tmp_path / "nonexistent.journal"
    for args in (["report", str(recorded / "out"), "--storage", str(missing)],
                 ["repair", str(missing)]):
        err = _refused(args, capsys)
        assert f"journal file {missing}: no such file" in err
    err = _refused(["report", str(tmp_path / "nothing")], capsys)
    assert f"journal file {tmp_path / 'nothing' / 'study.journal'}: no such file" in err
    database = tmp_path / "none.db"
    err = _refused(["report", str(tmp_path), "--storage", f"sqlite:///{database}"], capsys)
    assert f"SQLite database {database}: no such file" in err
    assert not list(tmp_path.iterdir())  # no journal, lock, database or directory created
    err = _refused(["report", str(recorded / "out"), "--storage", str(tmp_path)], capsys)
    assert f"journal file {tmp_path}: is a directory, expected a file" in err
    fifo = tmp_path / "fifo.journal"
    os.mkfifo(fifo)
    err = _refused(["report", str(recorded / "out"), "--storage", str(fifo)], capsys)
    assert f"journal file {fifo}: is not a regular file (a FIFO" in err


def test_repair_refuses_a_database_url(capsys):
    err = _refused(["repair", "postgresql://harness:s3cret@dbhost/harness"], capsys)
    assert "'postgresql://harness:***@dbhost/harness' is a database URL" in err
    assert "s3cret" not in err


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the probe is closed


def test_an_unreachable_database_is_one_line_without_its_password(capsys):
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install '.[test]')")
    url = f"postgresql://harness:s3cr%40t@127.0.0.1:{_closed_port()}/harness"
    with pytest.raises(StudyError) as refused:
        open_storage(url)
    message = str(refused.value)
    assert "\n" not in message and "s3cr" not in message
    assert message.startswith(f"cannot open storage '{url.replace('s3cr%40t', '***')}' "
                              "(OperationalError: connection failed: ")
    assert "Connection refused" in message and "sqlalche.me" not in message
    err = _refused(["report", "out", "--storage", url], capsys)
    assert "s3cr" not in err and "harness:***@127.0.0.1" in err


def test_a_password_the_driver_echoes_is_hidden_too(monkeypatch):
    """Drivers may quote the password, decoded, among lines of detail: only the first line
    that says what failed is kept."""

    def refuse(url: str) -> None:
        raise sqlalchemy.exc.OperationalError("connect", {}, RuntimeError(
            "Multiple connection attempts failed. All failures were:\n"
            "- host: 'db', port: '5432': password 's3cr@t' rejected for user harness\n"
            "- host: 'db', port: '5432': Connection refused"))

    monkeypatch.setattr(storage_module, "_rdb_storage", refuse)
    with pytest.raises(StudyError) as refused:
        open_storage("postgresql://harness:s3cr%40t@db/harness")
    assert str(refused.value) == (
        "cannot open storage 'postgresql://harness:***@db/harness' (RuntimeError: host: 'db', "
        "port: '5432': password '***' rejected for user harness); expected a journal-file path "
        "or an RDB URL such as postgresql://user@host/db")


def test_a_ctrl_c_waits_until_the_journal_lock_is_released(tmp_path):
    """Optuna's lock, interrupted while it waits or releases, would remove another process's
    lock or fail on its own clean-up: the interrupt is handled once the lock is released."""
    journal = tmp_path / "study.journal"
    journal.write_bytes(b"")
    lock = tmp_path / "study.journal.lock"
    with pytest.raises(KeyboardInterrupt), journal_lock(journal):
        os.kill(os.getpid(), signal.SIGINT)
        assert lock.is_symlink()  # reached: the interrupt waits
    assert not os.path.lexists(lock)
