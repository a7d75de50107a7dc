"""Where a study lives, and how it survives workers that die.

* A local path is an Optuna journal file: several processes on one host may share it. Not on a
  network file system, where its file locks do not hold and the journal gets corrupted (optuna
  #5138).
* ``postgresql://`` and ``mysql://`` URLs are Optuna RDB storages, for workers on several hosts,
  with heartbeats: a trial whose worker stopped beating for ``GRACE_PERIOD_S`` is failed by the
  next worker that looks.
* ``sqlite:///`` works for one process; it is refused for workers ("database is locked" with
  concurrent writers, optuna #820).

A trial left RUNNING by a dead worker (stale heartbeat, or on the journal a process of this host
that no longer exists, or no process recorded as its own at all) is marked FAIL and queued once
more with the same parameters.

A journal file is checked whole before it is opened (``harness.search.journal``): a damaged one is
refused, with the ``harness repair`` command that mends it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.parse
import warnings
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import optuna
import psutil
import sqlalchemy.engine
import sqlalchemy.exc
from optuna.trial import FrozenTrial, TrialState

from harness.errors import HarnessError, StudyError, shorten
from harness.files import check_readable_file
from harness.search.journal import check_journal

STORAGE_FILE = "study.journal"
HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 60
# A process killed between ``study.ask()`` and recording itself as the trial's owner leaves a
# RUNNING trial without a ``pid``. That window is milliseconds (longer on a remote database), so
# a trial still unowned after this long has no live owner.
UNOWNED_GRACE_S = 60
SCHEMA_ATTEMPTS = 3
NETWORK_FILE_SYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "9p",
                                  "lustre", "glusterfs", "ceph", "fuse.glusterfs"})


def default_storage(out_dir: Path) -> str:
    return str(out_dir / STORAGE_FILE)


def open_storage(storage: str, concurrent: bool = False,
                 must_exist: bool = False) -> optuna.storages.BaseStorage:
    """An RDB URL or a journal-file path; ``concurrent`` when several processes will write;
    ``must_exist`` for commands that only read a study (else a missing one is created).

    A journal file is checked whole first: a damaged one is refused before anything is written
    to it."""
    if storage.startswith("sqlite") and concurrent:
        raise StudyError(f"storage {shorten(storage)}: SQLite does not take concurrent writers "
                         "('database is locked'); use a journal file on one host or "
                         "postgresql://... across hosts")
    try:
        if "://" in storage:
            if must_exist:
                _check_database_exists(storage)
            return _rdb_storage(storage)
        path = Path(storage)
        existing = must_exist or path.exists()
        if existing:
            check_readable_file(path, "journal file")
        path.parent.mkdir(parents=True, exist_ok=True)
        file_system = file_system_type(path.parent)
        if file_system in NETWORK_FILE_SYSTEMS:
            raise StudyError(f"storage {shorten(storage)} is on a network file system "
                             f"({file_system}), where journal files get corrupted; keep it on a "
                             "local disk or use postgresql://... across hosts")
        if existing:
            check_journal(path)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    except HarnessError:
        raise
    except Exception as error:  # noqa: BLE001 - drivers raise many types; report them in one line
        message = (f"cannot open storage {shorten(hide_password(storage, storage))} "
                   f"({_driver_error(error)}); expected a journal-file path or an RDB URL such "
                   "as postgresql://user@host/db")
        raise StudyError(hide_password(message, storage)) from None


def _check_database_exists(url: str) -> None:
    """Refuse a SQLite database file that does not exist (opening would create it); a server's
    database that does not exist fails to connect."""
    if url.startswith("sqlite:"):
        database = sqlalchemy.engine.make_url(url).database
        if database and database != ":memory:":
            check_readable_file(Path(database), "SQLite database")


def _driver_error(error: Exception) -> str:
    """``Type: message`` of the driver's error, its first meaningful line only: SQLAlchemy
    wraps it (``.orig``) and adds lines of hints and links, and psycopg's "Multiple connection
    attempts failed. All failures were:" introduces the lines that say why."""
    cause = getattr(error, "orig", None) or error
    lines = [line.strip().removeprefix("- ") for line in str(cause).splitlines() if line.strip()]
    first = next((line for line in lines if not line.endswith(":")), lines[0] if lines else "")
    return f"{type(cause).__name__}: {first}"


def hide_password(text: str, url: str) -> str:
    """``text`` with the password of ``url`` replaced by ``***`` wherever it appears, as written
    in the URL and percent-decoded (as drivers echo it)."""
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:  # not a URL at all: no password either
        return text
    if not password:
        return text
    for secret in sorted({password, urllib.parse.unquote(password)}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def journal_file(storage: str) -> Path:
    """The journal file a user named for ``harness repair``: a file, or a search's output
    directory (its ``study.journal``); database URLs are refused."""
    if "://" in storage:
        raise StudyError(f"storage {hide_password(storage, storage)!r} is a database URL; "
                         "'harness repair' mends journal files (a file path, or a search's "
                         "output directory)")
    path = Path(storage)
    return Path(default_storage(path)) if path.is_dir() else path


def _rdb_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage with heartbeats. Processes that open a new, empty database together
    race to create its tables; the losers fail on "already exists" and simply open it again."""

    def connect() -> optuna.storages.RDBStorage:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=HEARTBEAT_INTERVAL_S, grace_period=GRACE_PERIOD_S,
                heartbeat_stale_trial_callback=retry_once)

    for _ in range(SCHEMA_ATTEMPTS - 1):
        with contextlib.suppress(sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            return connect()
        time.sleep(0.5)
    return connect()


def is_shared_storage(storage: str | None) -> bool:
    """A database other hosts may write to at the same time (PostgreSQL, MySQL)."""
    return storage is not None and "://" in storage and not storage.startswith("sqlite")


def file_system_type(path: Path) -> str | None:
    """The type of the file system holding ``path``, from ``/proc/mounts`` (None elsewhere)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    resolved, best = str(path.resolve()), ("", None)
    for line in mounts:
        fields = line.split()
        if len(fields) >= 3:
            mount_point = fields[1].replace("\\040", " ")
            inside = resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) >= len(best[0]):
                best = (mount_point, fields[2])
    return best[1]


def retry_once(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a failed trial of a dead worker again with its parameters, unless it was a retry."""
    if "retry_of" not in trial.user_attrs:
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})


def retries_waiting(study: optuna.Study) -> bool:
    """Whether a trial of a dead worker waits to be re-run: whoever is still running owes it."""
    return any("retry_of" in t.user_attrs
               for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def recover_orphans(study: optuna.Study) -> None:
    """Fail and re-queue the trials of workers that died: stale heartbeats (RDB), RUNNING
    trials of processes of this host that no longer exist (journal file, no heartbeat), and
    RUNNING trials that no process recorded as its own within ``UNOWNED_GRACE_S``.

    Optuna has no public API to end another process's trial, hence the storage calls."""
    with warnings.catch_warnings():  # "experimental" in Optuna 5, and called after every trial
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    storage, host = study._storage, socket.gethostname()
    now = datetime.now(timezone.utc)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get("pid")
        if pid is None:
            # Journal storages record UTC, RDB storages the asking host's local time
            # (``astimezone`` reads a naive time as local): hosts sharing a database must agree
            # on the time, as Optuna's heartbeats assume too.
            age = now - trial.datetime_start.astimezone(timezone.utc)
            if age.total_seconds() < UNOWNED_GRACE_S:
                continue
            cause = (f"no process recorded itself as running the trial within "
                     f"{UNOWNED_GRACE_S} s (killed right after asking for it)")
        elif trial.user_attrs.get("host") != host or psutil.pid_exists(pid):
            continue
        else:
            cause = f"process {pid} ended during the trial"
        storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        storage.set_trial_user_attr(
            trial._trial_id, "error",
            f"{cause}; " + ("not retried twice" if "retry_of" in trial.user_attrs
                            else "re-queued with the same parameters"))
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        retry_once(study, trial)


@contextlib.contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Record the trial's heartbeat while it runs, where the storage keeps heartbeats (RDB);
    ``study.ask``/``tell`` do not, unlike ``study.optimize``."""
    storage = study._storage  # Optuna wraps an RDB storage in a cache that also beats
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
    if interval is None:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial._trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
