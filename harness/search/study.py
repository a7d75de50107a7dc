"""The Optuna study: create or resume it with its metadata, then ask, evaluate and tell trials
until it holds enough (``run_search``); every outcome is recorded, an interruption included.

Everything a trial produced is stored as typed records in its user attributes
(``harness.records``), so the report and ``pareto.json`` can be rebuilt from the storage alone.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

import harness
from harness.accuracy import BaseAccuracyEstimator
from harness.budget import Budget
from harness.checkpoint import Checkpoint
from harness.devices import BaseDevice
from harness.errors import StudyError, shorten
from harness.records import SCHEMA_VERSION, TrialRecord
from harness.search.interrupts import (
    INTERRUPTED_ATTRS,
    Interrupts,
    SearchInterrupted,
    interrupt_requests,
)
from harness.search.objective import (
    AccuracyPruned,
    RejectedBeforeMeasurement,
    evaluate,
    inherited_weights,
    search_inputs,
)
from harness.search.results import STUDY_VERSION_ATTR, TRIAL_VERSION_ATTR, trial_records
from harness.search.samplers import SAMPLERS, TrialSeededSampler
from harness.search.storage import (
    default_storage,
    heartbeat,
    is_shared_storage,
    open_storage,
    recover_orphans,
    retries_waiting,
)
from harness.space import SearchSpace
from harness.timing import MeasurementProtocol

DIRECTIONS = ("minimize", "maximize")


OBJECTIVE_NAMES = ("latency_ms", "accuracy")


MAX_REJECTED_IN_A_ROW = 2000


METADATA_WAIT_S = 30  # for the process that created the study to store its metadata


@dataclass
class SearchSettings:
    space: SearchSpace
    device: BaseDevice
    estimator: BaseAccuracyEstimator
    protocol: MeasurementProtocol
    budgets: list[Budget] = field(default_factory=list)
    n_trials: int = 30
    seed: int | None = 0
    sampler: str = "tpe"
    study_name: str = ""
    storage: str | None = None  # URL or journal-file path; None = <out_dir>/study.journal
    out_dir: Path = Path("reports")
    # A worker (``harness worker``) runs this many trials of its own, or until ``timeout_s``,
    # instead of filling the study up to ``n_trials``; it stops after its current trial on
    # SIGINT/SIGTERM.
    worker_trials: int | None = None
    timeout_s: float | None = None
    # Processes of this host filling the study together (``harness search --workers K``).
    local_workers: int = 1
    # Pretrained weights every candidate is built with (``--weights``); None: every candidate
    # inherits a slice of the space's largest model, seeded (``shared_weights``).
    weights: Checkpoint | None = None
    # What was dropped from the space because the device does not accelerate it (``restrict_to_device``).
    capability_notes: list[str] = field(default_factory=list)

    @property
    def is_worker(self) -> bool:
        return self.worker_trials is not None or self.timeout_s is not None

    @property
    def concurrent(self) -> bool:
        """Whether other processes write to the study while this one runs."""
        return (self.is_worker or self.local_workers > 1
                or is_shared_storage(self.storage))

    def metadata(self) -> dict[str, Any]:
        """What must match for a run to resume an existing study."""
        return {
            "space": self.space.to_dict(),
            "device": self.device.name,
            "budgets": sorted(b.text.lower() for b in self.budgets),
            "estimator": self.estimator.spec,
            "batch_size": self.protocol.batch_size,
            "objectives": list(OBJECTIVE_NAMES),
            # estimates from another calibration are not comparable with the stored ones
            "latency_model": self.device.latency_model(),
            "harness_version": harness.__version__,
            # a study of a checkpoint resumes only with the same checkpoint
            **({"weights_sha256": self.weights.sha256} if self.weights else {}),
        }


@dataclass(frozen=True)
class TrialOutcome:
    """What the progress display needs about one finished trial."""

    number: int
    state: TrialState
    record: TrialRecord
    duration_s: float

    @classmethod
    def of(cls, study: optuna.Study, trial: FrozenTrial,
           duration_s: float | None = None) -> TrialOutcome:
        """``duration_s`` defaults to the storage's, which has a worker's trials' too."""
        if duration_s is None:
            duration_s = trial.duration.total_seconds() if trial.duration else 0.0
        return cls(trial.number, trial.state, trial_records(study, [trial])[0], duration_s)


def measured_count(study: optuna.Study) -> int:
    """Trials that count towards ``n_trials``: measured (complete) or failed, not interrupted.

    Candidates rejected by a MAC/parameter budget are never built or timed and are not counted.
    """
    return sum(counts_as_measured(t.state, t.user_attrs) for t in study.get_trials(deepcopy=False))


def counts_as_measured(state: TrialState, user_attrs: dict[str, Any]) -> bool:
    return state in (TrialState.COMPLETE, TrialState.FAIL) and not user_attrs.get("interrupted")


def create_or_resume(settings: SearchSettings) -> optuna.Study:
    storage = open_storage(settings.storage or default_storage(settings.out_dir),
                           concurrent=settings.concurrent)
    study = _create_or_load(settings, storage)
    _check_same_search(study, settings)
    recover_orphans(study)
    study.sampler = TrialSeededSampler(SAMPLERS[settings.sampler], settings.seed)
    return study


def _create_or_load(settings: SearchSettings, storage: optuna.storages.BaseStorage
                    ) -> optuna.Study:
    """Create the study with its metadata, or load it: processes started together race to
    create it, and the losers wait for the winner's metadata.

    An existing study is loaded without trying to create it first: on a journal file a refused
    ``create_study`` still appends its record, so every resume would have written to the study
    even when its settings were then refused."""
    try:
        if settings.study_name in optuna.get_all_study_names(storage):
            raise optuna.exceptions.DuplicatedStudyError(settings.study_name)
        study = optuna.create_study(study_name=settings.study_name, storage=storage,
                                    directions=list(DIRECTIONS))
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=settings.study_name, storage=storage)
        deadline = time.monotonic() + METADATA_WAIT_S
        while STUDY_VERSION_ATTR not in study.user_attrs and time.monotonic() < deadline:
            time.sleep(0.1)
        return study
    for key, value in settings.metadata().items():
        study.set_user_attr(key, value)
    study.set_user_attr(STUDY_VERSION_ATTR, SCHEMA_VERSION)  # last: metadata complete
    return study


def _check_same_search(study: optuna.Study, settings: SearchSettings) -> None:
    stored = study.user_attrs
    for key, value in settings.metadata().items():
        if stored.get(key) != value:
            raise StudyError(
                f"study {shorten(settings.study_name)} already exists with a different {key} "
                f"({shorten(stored.get(key))}); pass --study NAME to start a new one"
            )


def run_search(
    settings: SearchSettings,
    on_trial: Callable[[TrialOutcome, optuna.Study], None] | None = None,
    on_start: Callable[[optuna.Study], None] | None = None,
) -> optuna.Study:
    """Run trials until ``n_trials`` have finished.

    Raises:
        SearchInterrupted: on KeyboardInterrupt; the current trial is marked failed (to be re-run
            on resume) and every finished trial is kept.
    """
    study = create_or_resume(settings)
    record_run(study, settings)
    if on_start:
        on_start(study)
    prepare_estimator(study, settings)
    inputs = search_inputs(settings.space, settings.protocol.batch_size)
    inherited = inherited_weights(settings.space, settings.weights)
    try:
        with interrupt_requests(graceful=settings.is_worker) as interrupts:
            _run_trials(study, settings, inputs, inherited, on_trial, interrupts)
    except KeyboardInterrupt:
        raise SearchInterrupted(study) from None
    return study


def record_run(study: optuna.Study, settings: SearchSettings) -> None:
    """What the report says of a run besides its trials: this host's environment, the run's
    settings, the estimator's description and how well it is known to rank the space, and what
    the device restricted. Every run writes it, from the CLI or from Python; a resumed study
    shows its latest run's."""
    from harness.environment import capture_environment
    from harness.rank_check import known_rank_checks

    estimator = settings.estimator
    study.set_user_attr("environment", capture_environment(settings.device))
    study.set_user_attr("run_settings", {
        "sampler": settings.sampler, "seed": settings.seed, "n_trials": settings.n_trials or None,
        "measurement": settings.protocol.to_dict()})
    study.set_user_attr("estimator_description", estimator.description)
    study.set_user_attr("estimator_rank_checks", [
        check.quote(estimator.spec) for check in known_rank_checks(settings.space.name,
                                                                   estimator.spec)])
    study.set_user_attr("capability_notes", settings.capability_notes)


def prepare_estimator(study: optuna.Study, settings: SearchSettings) -> None:
    """Get the estimator ready for the space (a supernet is loaded, or trained once) and record
    in the study where its accuracies come from."""
    settings.estimator.prepare(settings.space)
    study.set_user_attr("accuracy_source", settings.estimator.metadata())


def _run_trials(
    study: optuna.Study,
    settings: SearchSettings,
    inputs: dict[int, torch.Tensor],
    shared_weights: dict[str, torch.Tensor] | None,
    on_trial: Callable[[TrialOutcome, optuna.Study], None] | None,
    interrupts: Interrupts,
) -> None:
    rejected_in_a_row, finished_here, started = 0, 0, time.monotonic()

    def more_to_do() -> bool:
        if settings.is_worker:
            over_time = (settings.timeout_s is not None
                         and time.monotonic() - started >= settings.timeout_s)
            mine = settings.worker_trials is None or finished_here < settings.worker_trials
            return (mine and not over_time) or retries_waiting(study)
        # trials other processes are running count too, or each would add its own last trial
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        return measured_count(study) + running < settings.n_trials or retries_waiting(study)

    while more_to_do():
        if interrupts.requested.is_set():
            if settings.is_worker:
                return  # the current trial has finished: a graceful stop
            raise KeyboardInterrupt
        if rejected_in_a_row >= MAX_REJECTED_IN_A_ROW:
            raise StudyError(
                f"{MAX_REJECTED_IN_A_ROW} candidates in a row were over budget; the budget leaves "
                f"too little of the space: loosen it or pin keys with --set"
            )
        start = time.perf_counter()
        trial = _run_one_trial(study, settings, inputs, shared_weights, interrupts)
        rejected_in_a_row = rejected_in_a_row + 1 if "rejected" in trial.user_attrs else 0
        finished_here += trial.state in (TrialState.COMPLETE, TrialState.FAIL)
        # another process on this host may have died meanwhile: its trial is retried here
        recover_orphans(study)
        if on_trial:
            on_trial(TrialOutcome.of(study, trial, time.perf_counter() - start), study)


def _run_one_trial(
    study: optuna.Study,
    settings: SearchSettings,
    inputs: dict[int, torch.Tensor],
    shared_weights: dict[str, torch.Tensor] | None,
    interrupts: Interrupts,
) -> FrozenTrial:
    """Ask, evaluate and tell one trial; every outcome is recorded, an interruption included."""
    with interrupts.deferred(), warnings.catch_warnings():
        # Optuna warns that heartbeats are meant for Study.optimize: harness.search.storage.heartbeat
        # beats for ask-and-tell trials
        warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
        trial = study.ask()
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr(TRIAL_VERSION_ATTR, SCHEMA_VERSION)
    values, attrs = None, {}
    try:
        interrupts.raise_if_requested()
        with heartbeat(study, trial):
            values, state = evaluate(trial, settings, inputs, shared_weights), TrialState.COMPLETE
    except RejectedBeforeMeasurement:
        state = TrialState.PRUNED
    except AccuracyPruned as reason:
        state, attrs = TrialState.PRUNED, {"pruned": str(reason)}
    except KeyboardInterrupt:
        state, attrs = TrialState.FAIL, INTERRUPTED_ATTRS
    except Exception as error:  # noqa: BLE001 - a failing candidate must not stop the study
        # A KeyboardInterrupt that lands inside Optuna's journal lock can surface as the error
        # of the lock's clean-up (FileNotFoundError, RuntimeError): after a Ctrl-C, it is one.
        state, attrs = TrialState.FAIL, (INTERRUPTED_ATTRS if interrupts.raised
                                         else {"error": f"{type(error).__name__}: {error}"})
    with interrupts.deferred():  # recorded whole, or a second Ctrl-C leaves the trial RUNNING
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        study.tell(trial, values, state=state)
    if "interrupted" in attrs:
        raise KeyboardInterrupt
    return study.get_trials(deepcopy=False)[trial.number]
