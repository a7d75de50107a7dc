"""An Optuna journal file, checked whole before a study is opened and repaired by moving its
damaged end aside.

Optuna appends one JSON record per line, under its lock (``PATH.lock``). A crash or a full disk
can leave the last record unterminated: Optuna's reader silently skips such a line (the trial it
would have finished stays RUNNING), and the next append is glued onto it, after which every read
fails. So a journal is checked under the same lock, where a concurrent append is always whole,
before anything is written to it; ``harness repair`` keeps the complete records before the first
damaged line and moves the rest, byte for byte, to a side file.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import shlex
import signal
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import optuna

from harness.errors import FileError, StudyError
from harness.files import check_readable_file, write_new_file


def _plural(count: int, noun: str, nouns: str | None = None) -> str:
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


@dataclass(frozen=True)
class Damage:
    """Where a journal stops being a sequence of complete records, and what follows."""

    line: int  # 1-based number of the first damaged line
    offset: int  # its byte offset: the complete records before it end here
    size: int  # bytes from ``offset`` to the end of the file
    lines: int  # lines from the first damaged one to the end
    undecodable: int  # of those, lines that are not a complete record
    unterminated: bool  # the file ends without a newline

    def describe(self) -> str:
        if self.lines == 1 and self.unterminated:
            return "an unterminated last record, as a crash or a full disk leaves"
        text = _plural(self.undecodable, "undecodable line")
        if self.later_records:
            text += (f", then {_plural(self.later_records, 'complete record')} that "
                     f"{'depends' if self.later_records == 1 else 'depend'} on it")
        return text

    @property
    def later_records(self) -> int:
        """Complete records after the first damaged line."""
        return self.lines - self.undecodable


@dataclass(frozen=True)
class JournalScan:
    records: int  # complete records before the damage (all of them if there is none)
    damage: Damage | None


def _is_record(line: bytes) -> bool:
    if not line.endswith(b"\n"):
        return False
    try:
        record = json.loads(line)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return False
    return isinstance(record, dict) and "op_code" in record


def scan_journal(path: Path) -> JournalScan:
    """Every line of the journal: a complete record, or the first damaged line and the rest."""
    records = offset = lines = undecodable = 0
    first: tuple[int, int] | None = None  # line number and offset of the first damaged line
    line = b""
    with open(path, "rb") as stream:
        for number, line in enumerate(stream, start=1):
            complete = _is_record(line)
            if first is None and complete:
                records += 1
            else:
                first = first or (number, offset)
                lines += 1
                undecodable += not complete
            offset += len(line)
    if first is None:
        return JournalScan(records, None)
    return JournalScan(records, Damage(line=first[0], offset=first[1], size=offset - first[1],
                                       lines=lines, undecodable=undecodable,
                                       unterminated=not line.endswith(b"\n")))


@contextlib.contextmanager
def journal_lock(path: Path, reading: bool = False) -> Iterator[None]:
    """Optuna's own journal lock, the one ``JournalFileBackend`` takes to append by default.

    A Ctrl-C waits until the lock is released: interrupted while it waits, Optuna's lock
    "releases" whichever lock file exists, another process's included, and interrupted while
    it releases, it fails on its own clean-up."""
    lock = optuna.storages.journal.JournalFileSymlinkLock(str(path))
    with _interrupts_held():
        try:
            lock.acquire()
        except OSError as error:
            if not (reading and error.errno in (errno.EACCES, errno.EPERM, errno.EROFS)):
                raise FileError(f"journal file {path}: cannot take its lock {path}.lock "
                                f"({error.strerror or type(error).__name__})") from None
            # A journal in a directory this user may not write to (a read-only copy of
            # results) is read without the lock, as Optuna reads it.
            yield
            return
        try:
            yield
        finally:
            lock.release()


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """SIGINT is handled when the block ends (signal handlers belong to the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received and callable(previous):
        previous(signal.SIGINT, None)


def check_journal(path: Path) -> None:
    """Raise ``StudyError`` if the journal is damaged anywhere; nothing is written to it."""
    with journal_lock(path, reading=True):
        scan = scan_journal(path)
    damage = scan.damage
    if damage is not None:
        raise StudyError(
            f"journal {path} is damaged from line {damage.line} (byte offset {damage.offset}): "
            f"{damage.describe()}; nothing was written to it. Run 'harness repair "
            f"{shlex.quote(str(path))}' to move line {damage.line} onwards to a side file and "
            f"keep the {_plural(scan.records, 'complete record')} before it")


@dataclass(frozen=True)
class Repair:
    """What ``repair_journal`` kept and moved."""

    path: Path
    records: int
    studies: int
    trial_states: dict[str, int]  # trials kept, by state
    damage: Damage | None = None
    side_file: Path | None = None

    def summary(self) -> str:
        trials = sum(self.trial_states.values())
        states = ", ".join(f"{count} {state.lower()}"
                           for state, count in sorted(self.trial_states.items()))
        kept = (f"{_plural(self.records, 'complete record')} "
                f"({_plural(self.studies, 'study', 'studies')}, {_plural(trials, 'trial')}"
                + (f": {states}" if states else "") + ")")
        if self.damage is None:
            return f"journal {self.path} is intact: {kept}; nothing changed"
        damage, running = self.damage, self.trial_states.get("RUNNING", 0)
        return "\n".join([
            f"repaired journal {self.path}: kept {kept}",
            f"moved {_plural(damage.size, 'byte')} from line {damage.line} "
            f"({_plural(damage.lines, 'line')}: {damage.describe()}) to {self.side_file}"
            + (": records after a damaged one are moved too, as the trial ids they name count "
               "the trials created before them" if damage.later_records else ""),
            "the same search command resumes the study"
            + (f", failing the {_plural(running, 'trial')} left running by the crash and "
               f"queueing {'it' if running == 1 else 'each'} once more with the same parameters"
               if running else ""),
        ])


def repair_journal(path: Path) -> Repair:
    """Keep the complete records before the first damaged line, after checking that Optuna
    loads them, and move the rest to a new side file next to the journal (written whole and
    synced to disk before the journal is cut). An intact journal is left as it is."""
    check_readable_file(path, "journal file")
    with journal_lock(path):
        scan = scan_journal(path)
        if scan.damage is None:
            return Repair(path, scan.records, *_contents(
                path, f"journal {path}: its {_plural(scan.records, 'complete record')}"))
        damage = scan.damage
        with open(path, "rb") as stream:
            kept, moved = stream.read(damage.offset), stream.read()
        with tempfile.TemporaryDirectory() as directory:
            prefix = Path(directory) / path.name
            prefix.write_bytes(kept)
            studies, trial_states = _contents(
                prefix, f"journal {path}: the {_plural(scan.records, 'complete record')} before "
                f"line {damage.line}")
        side_file = _side_file(path)
        write_new_file(side_file, moved)
        try:
            with open(path, "r+b") as stream:
                stream.truncate(damage.offset)
                stream.flush()
                os.fsync(stream.fileno())
        except OSError as error:
            raise FileError(f"journal file {path}: cannot cut it at byte {damage.offset} "
                            f"({error.strerror}); its damaged part is copied to {side_file}"
                            ) from None
    return Repair(path, scan.records, studies, trial_states, damage, side_file)


def _contents(path: Path, what: str) -> tuple[int, dict[str, int]]:
    """The number of studies in a journal and of its trials by state, as Optuna loads them;
    ``StudyError`` saying that ``what`` does not load, and that nothing changed, otherwise."""
    try:
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(path)))
        names = optuna.get_all_study_names(storage)
        states = Counter(trial.state.name for name in names
                         for trial in optuna.load_study(study_name=name, storage=storage)
                         .get_trials(deepcopy=False))
    except Exception as error:  # noqa: BLE001 - Optuna's replay raises many types
        raise StudyError(f"{what} do not load in Optuna ({type(error).__name__}: {error}); the "
                         "journal is left as it is") from None
    return len(names), dict(states)


def _side_file(journal: Path) -> Path:
    """``JOURNAL.damaged-<UTC time>``, numbered if a repair in the same second left one."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    names = (f"{journal.name}.damaged-{stamp}" + (f"-{n}" if n > 1 else "")
             for n in itertools.count(1))
    return next(journal.with_name(name) for name in names
                if not os.path.lexists(journal.with_name(name)))
