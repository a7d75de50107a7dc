"""``harness search --workers K``: K processes of this host fill one study together.

The parent creates the study (so the K processes do not race to create it), starts K copies of
its own command as local workers, and reports every trial they finish, in order, from the
storage. Each worker is an ordinary search process (its trials seeded by their numbers, so the
workers never repeat each other) that stops once the study holds ``--trials`` finished or running
trials. Meant for work that times no device on this host
(an estimated device; proxies or short training): timings taken while other processes compute
would measure their load, so devices timed here are refused by the command line.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import optuna

from harness.errors import StudyError
from harness.notices import notice
from harness.search.interrupts import SearchInterrupted
from harness.search.storage import recover_orphans, retries_waiting
from harness.search.study import (
    SearchSettings,
    TrialOutcome,
    create_or_resume,
    measured_count,
    prepare_estimator,
    record_run,
)

POLL_INTERVAL_S = 0.5


def run_local_workers(
    settings: SearchSettings,
    command: list[str],
    count: int,
    on_trial: Callable[[TrialOutcome, optuna.Study], None] | None = None,
    on_start: Callable[[optuna.Study], None] | None = None,
) -> optuna.Study:
    """Run ``count`` processes of ``python -m harness`` + ``command`` (the search's own arguments,
    marked as a local worker) on the study of ``settings``; return the study once all have exited.

    Raises:
        SearchInterrupted: SIGINT or SIGTERM reached this process; the workers were stopped the
            way an interrupted search stops (current trial failed, to be re-run on resume).
        StudyError: a worker exited with an error; finished trials are kept.
    """
    study = create_or_resume(settings)
    record_run(study, settings)
    if on_start:
        on_start(study)
    prepare_estimator(study, settings)  # before the workers start: they load what it trained
    reported = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    # own sessions: a Ctrl-C in the terminal reaches this process only, which stops each worker
    # once (a second SIGINT could land in the middle of the first one's storage write)
    workers = [
        subprocess.Popen([sys.executable, "-m", "harness", *command],
                         stdout=subprocess.DEVNULL, start_new_session=True)
        for _ in range(count)
    ]
    try:
        with _sigterm_interrupts():
            while True:
                running = [w for w in workers if w.poll() is None]
                _report_new_trials(study, reported, on_trial)
                if not running:
                    break
                time.sleep(POLL_INTERVAL_S)
    except KeyboardInterrupt:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: still wait
        try:
            for worker in workers:
                if worker.poll() is None:
                    worker.send_signal(signal.SIGINT)
            for worker in workers:
                worker.wait()
        finally:
            signal.signal(signal.SIGINT, previous)
        _report_new_trials(study, reported, on_trial)
        raise SearchInterrupted(study) from None
    failed = [f"process {w.pid} exited with {w.returncode}" for w in workers if w.returncode]
    if failed:
        recover_orphans(study)  # a worker killed after the others had stopped
        if measured_count(study) < settings.n_trials or retries_waiting(study):
            raise StudyError(f"{len(failed)} of {count} local workers failed "
                             f"({'; '.join(failed)}); finished trials are kept: run the same "
                             "command to resume")
        notice(f"note: {len(failed)} of {count} local workers failed ({'; '.join(failed)}); "
               "the others finished the study, re-running once any trial a failed one left "
               "unfinished")
    return study


def _report_new_trials(study: optuna.Study, reported: set[int],
                       on_trial: Callable[[TrialOutcome, optuna.Study], None] | None) -> None:
    for trial in study.get_trials(deepcopy=False):
        if trial.state.is_finished() and trial.number not in reported:
            reported.add(trial.number)
            if on_trial:
                on_trial(TrialOutcome.of(study, trial), study)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM stops the workers as Ctrl-C does (a scheduler ending the job)."""

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
