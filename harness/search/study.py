"""The Optuna study: sample a candidate, cost it, measure it, record it; resumable.

Objectives: measured latency median (minimise) and the accuracy estimate (maximise). Budgets are
hard constraints (``trial.set_constraint``). A candidate over a MAC or parameter budget is rejected
by the analytic counter before anything is built: its trial is told PRUNED with its constraint
values set, which TPE learns from (it ranks infeasible trials by violation).

Everything a trial produced is stored as plain JSON in its user attributes, so the report and
``pareto.json`` can be rebuilt from the storage alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

import harness
from harness.accuracy import BaseAccuracyEstimator, ReportIntermediate
from harness.budget import Budget
from harness.checkpoint import Checkpoint
from harness.config import CandidateConfig
from harness.cost import Cost, estimate_cost
from harness.devices import BaseDevice
from harness.errors import BudgetError, DeviceError, StudyError, shorten
from harness.knobs import BASELINE, KERNEL_KNOBS
from harness.models import build_model, shared_weights
from harness.records import SCHEMA_VERSION, CandidateRecord, TrialRecord
from harness.runtimes import RuntimeRefused, get_runtime
from harness.search.results import STUDY_VERSION_ATTR, TRIAL_VERSION_ATTR, trial_records
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
INPUT_SEED = 0
MAX_REJECTED_IN_A_ROW = 2000
METADATA_WAIT_S = 30  # for the process that created the study to store its metadata
INTERRUPTED_ATTRS = {"interrupted": True, "error": "interrupted by the user; re-run"}


def _tpe(seed: int | None) -> optuna.samplers.BaseSampler:
    # multivariate + group: per-layer keys appear only for some depths (a dynamic space).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)


def _random(seed: int | None) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


SAMPLERS: dict[str, Callable[[int | None], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe,
    "random": _random,
}


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number`` of a search seeded ``seed`` (``SeedSequence`` mixes the two:
    searches seeded S and S+1 do not draw shifted copies of one sequence)."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Delegates each trial to a sampler of its own, seeded from the search's seed and the
    trial's number.

    Proposals then never depend on which process asks: processes sharing a study hold different
    trial numbers, so they never repeat each other's proposals, while ``--seed`` still fixes
    every trial's random numbers, across resumes too."""

    def __init__(self, make: Callable[[int | None], optuna.samplers.BaseSampler],
                 seed: int | None) -> None:
        self._make, self._seed = make, seed
        self._number: int | None = None
        self._sampler: optuna.samplers.BaseSampler | None = None

    def _for(self, trial: FrozenTrial) -> optuna.samplers.BaseSampler:
        # Built at the trial's ``before_trial`` (Optuna calls it from ``Trial.__init__``) and
        # kept for its parameters, which are sampled lazily afterwards, and its ``after_trial``.
        if trial.number != self._number:
            seed = None if self._seed is None else trial_seed(self._seed, trial.number)
            self._number, self._sampler = trial.number, self._make(seed)
        return self._sampler

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial
                                    ) -> dict[str, optuna.distributions.BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, optuna.distributions.BaseDistribution]
                        ) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: optuna.distributions.BaseDistribution) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._for(trial).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        if self._sampler is not None:
            self._sampler.reseed_rng()


class RejectedBeforeMeasurement(Exception):
    """A candidate is over a MAC or parameter budget, or does not fit the device's resources (an
    FPGA part): known from its configuration, before anything is built."""


class AccuracyPruned(Exception):
    """A candidate's intermediate accuracy is below the 25th percentile of finished
    candidates' at the same step (``percentile_stopping``)."""


class SearchInterrupted(Exception):
    """The user interrupted the search; ``study`` holds every trial finished so far."""

    def __init__(self, study: optuna.Study) -> None:
        super().__init__("search interrupted")
        self.study = study


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
        with _interrupt_requests(graceful=settings.is_worker) as interrupts:
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


class Interrupts:
    """SIGINT (and, for workers, SIGTERM) while a search runs.

    A plain search raises KeyboardInterrupt at once; a worker (``graceful``) only records the
    request, so its current trial finishes. Either way ``requested`` is set: a KeyboardInterrupt
    raised while Python runs a finaliser is printed and swallowed, and the loop must stop anyway.
    Inside ``deferred()`` the KeyboardInterrupt waits for ``raise_if_requested``: between asking
    for a trial and recording whose it is, an interrupted trial could never be recovered.
    """

    def __init__(self, graceful: bool) -> None:
        self.graceful = graceful
        self.requested = threading.Event()
        self._deferring = False

    def on_signal(self, signum: int, frame: Any) -> None:
        self.requested.set()
        if not self.graceful and not self._deferring:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False

    @property
    def raised(self) -> bool:
        """Whether a KeyboardInterrupt was raised in this process (or is being held back)."""
        return self.requested.is_set() and not self.graceful

    def raise_if_requested(self) -> None:
        if self.raised:
            raise KeyboardInterrupt


@contextlib.contextmanager
def _interrupt_requests(graceful: bool = False) -> Iterator[Interrupts]:
    interrupts = Interrupts(graceful)
    if threading.current_thread() is not threading.main_thread():
        yield interrupts  # signal handlers can only be set from the main thread
        return
    signals = (signal.SIGINT, signal.SIGTERM) if graceful else (signal.SIGINT,)
    previous = {number: signal.signal(number, interrupts.on_signal) for number in signals}
    try:
        yield interrupts
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


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


def search_inputs(space: SearchSpace, batch_size: int) -> dict[int, torch.Tensor]:
    """Input images per image size, drawn once so every candidate sees the same data."""
    sizes = space.dimensions.get("img_size")
    generator = torch.Generator().manual_seed(INPUT_SEED)
    choices = sizes.choices if sizes else (CandidateConfig.img_size,)
    return {size: torch.randn(batch_size, 3, size, size, generator=generator) for size in choices}


def inherited_weights(space: SearchSpace, checkpoint: Checkpoint | None
                      ) -> dict[str, torch.Tensor] | None:
    """The weights every candidate of a search is built on: the checkpoint's (``--weights``),
    or else a slice of the space's largest model (``shared_weights``)."""
    return checkpoint.tensors if checkpoint else shared_weights(space)


def evaluate(
    trial: optuna.Trial,
    settings: SearchSettings,
    inputs: dict[int, torch.Tensor],
    shared_weights: dict[str, torch.Tensor] | None = None,
) -> tuple[float, float]:
    config = settings.space.suggest(trial)
    cost = estimate_cost(config)
    record_cost(trial, config, cost)
    static = [b for b in settings.budgets if b.on_cost]
    violations = {b.constraint_key: b.violation(b.cost_value(cost)) for b in static}
    over = [b.describe() for b in static if violations[b.constraint_key] > 0]
    device_violations = settings.device.resource_violations(config, settings.protocol.batch_size)
    violations.update(device_violations)
    over += [_part_usage(key, v) for key, v in device_violations.items() if v > 0]
    if over:
        # The latency of a rejected candidate is never measured: its latency key is left at 0 so
        # that only what it broke counts against it.
        for key in _constraint_keys(settings):
            trial.set_constraint(key, violations.get(key, 0.0))
        reason = ", ".join(over)
        trial.set_user_attr("rejected", f"rejected before measurement: {reason}")
        raise RejectedBeforeMeasurement(reason)

    result = measure_candidate(config, settings.device, settings.estimator, settings.protocol,
                               inputs.get(config.img_size), shared_weights,
                               report=percentile_stopping(trial, trial.study))
    for key, value in result.to_json().items():
        trial.set_user_attr(key, value)
    latency_ms = result.measurement.median_ms
    for budget in settings.budgets:
        value = budget.cost_value(cost) if budget.on_cost else latency_ms
        trial.set_constraint(budget.constraint_key, budget.violation(value))
    for key, value in device_violations.items():
        trial.set_constraint(key, value)
    return latency_ms, result.accuracy["value"]


def _constraint_keys(settings: SearchSettings) -> list[str]:
    """Every trial sets the same keys (Optuna's GPSampler requires it)."""
    return [b.constraint_key for b in settings.budgets] + list(settings.device.constraint_keys)


MIN_CURVES_TO_PRUNE = 5  # finished learning curves before any candidate is stopped early
PRUNE_PERCENTILE = 25


def percentile_stopping(trial: optuna.Trial, study: optuna.Study) -> ReportIntermediate:
    """Optuna's percentile-stopping rule (``PercentilePruner``) for the accuracy of a
    multi-objective study.

    ``Trial.report`` and Optuna's pruners are single-objective only, so the learning curve is kept
    in the trial's user attributes and compared with those of finished trials: a candidate whose
    accuracy at a step is below the ``PRUNE_PERCENTILE``-th percentile of at least
    ``MIN_CURVES_TO_PRUNE`` finished candidates at that step stops there (PRUNED, not counted
    towards ``--trials``). The bottom quarter, not the median: a stopped candidate must be
    replaced by another, and stopping half of them doubled the time a search took."""
    curve: list[list[float]] = []

    def report(step: int, accuracy: float) -> None:
        curve.append([step, accuracy])
        trial.set_user_attr("accuracy_curve", curve)
        finished = [dict(map(tuple, t.user_attrs.get("accuracy_curve", [])))
                    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        at_step = [points[step] for points in finished if step in points]
        if len(at_step) < MIN_CURVES_TO_PRUNE:
            return
        bar = float(np.percentile(at_step, PRUNE_PERCENTILE))
        if accuracy < bar:
            raise AccuracyPruned(f"accuracy {accuracy:.4f} at step {step} is below the "
                                 f"{PRUNE_PERCENTILE}th percentile {bar:.4f} of {len(at_step)} "
                                 f"finished candidates")

    return report


def restrict_to_device(
    space: SearchSpace, device: BaseDevice, keep_unaccelerated: bool = False
) -> tuple[SearchSpace, list[str]]:
    """The space without kernel-knob choices the device does not accelerate, and notes saying
    what was dropped or kept. Fixed values (the user's explicit choice) are kept, with a note."""
    notes = []
    pinned = {}
    for knob in KERNEL_KNOBS:
        dim = space.dimensions.get(knob)
        if dim is None:
            continue
        slow = {value: device.accelerates(knob, value)[1] for value in dim.choices
                if not device.accelerates(knob, value)[0]}
        for value, reason in slow.items():
            kept = dim.fixed or keep_unaccelerated
            action = "kept as asked" if kept else "dropped from the space"
            notes.append(f"{knob} {value} is not accelerated on {device.name} ({reason}); {action}")
        if slow and not (dim.fixed or keep_unaccelerated):
            remaining = tuple(v for v in dim.choices if v not in slow) or (BASELINE[knob],)
            pinned[knob] = remaining
    if pinned:
        space = space.with_choices(pinned)
    return space, notes


def restrict_to_runtime(space: SearchSpace, device: BaseDevice
                        ) -> tuple[SearchSpace, list[str]]:
    """Refuse a runtime of the space that the device does not list or that is not installed,
    before anything is built. With one runtime, the precisions it cannot run are dropped from
    the space, with a note (a precision the user fixed is refused); with several, a combination
    one of them cannot carry is left to the trials: each such candidate fails with the reason,
    and the study goes on."""
    dim = space.dimensions.get("runtime")
    runtimes = dim.choices if dim else ("eager",)
    for runtime in runtimes:
        if runtime not in device.profile.runtimes:
            raise DeviceError(f"space {shorten(space.name)}: device {shorten(device.name)} does "
                              f"not run runtime {runtime} (its profile lists: "
                              f"{', '.join(device.profile.runtimes)})")
        installed, reason = get_runtime(runtime).availability()
        if not installed:
            raise RuntimeRefused(f"space {shorten(space.name)}: runtime {runtime}: {reason} "
                                 f"({get_runtime(runtime).install_hint})")
    precision = space.dimensions.get("precision")
    if len(runtimes) > 1 or precision is None:
        return space, []
    runtime = get_runtime(runtimes[0])
    refused = {value: runtime.refusal(CandidateConfig(precision=value, runtime=runtime.name),
                                      device.kind) for value in precision.choices}
    refused = {value: reason for value, reason in refused.items() if reason}
    kept = tuple(value for value in precision.choices if value not in refused)
    if refused and (precision.fixed or not kept):
        value, reason = next(iter(refused.items()))
        raise RuntimeRefused(f"space {shorten(space.name)}: runtime {runtime.name} cannot run "
                             f"precision {value}: {reason}")
    notes = [f"precision {value} dropped from the space: runtime {runtime.name} cannot run it "
             f"({reason})" for value, reason in refused.items()]
    return (space.with_choices({"precision": kept}) if refused else space), notes


def check_budgets_reachable(space: SearchSpace, budgets: list[Budget]) -> None:
    """Refuse MAC/parameter budgets that even the cheapest configuration of the space exceeds."""
    costs = [estimate_cost(config) for config in space.corner_configs()]
    for budget in (b for b in budgets if b.on_cost):
        smallest = min(budget.cost_value(cost) for cost in costs)
        if budget.violation(smallest) > 0:
            raise BudgetError(
                f"no configuration of space {shorten(space.name)} meets budget "
                f"{shorten(budget.text)}: the smallest needs {budget.amount(smallest)}"
            )


def check_device_fits(space: SearchSpace, device: BaseDevice, batch_size: int) -> None:
    """Refuse a space whose cheapest configurations all exceed the device's resources: every
    candidate would be rejected, thousands of them, before the search gave up."""
    usage = []
    for config in space.corner_configs():
        violations = device.resource_violations(config, batch_size)
        if not any(v > 0 for v in violations.values()):
            return
        usage.append(", ".join(_part_usage(k, v) for k, v in violations.items() if v > 0))
    if usage:
        raise BudgetError(f"no configuration of space {shorten(space.name)} fits device "
                          f"{shorten(device.name)} at batch size {batch_size}: the smallest needs "
                          f"{min(usage, key=len)}; allow a lower precision or a smaller model")


def _part_usage(key: str, violation: float) -> str:
    return f"{key} at {100 * (1 + violation):.0f}% of the part"


def record_cost(trial: optuna.Trial, config: CandidateConfig, cost: Cost) -> None:
    trial.set_user_attr("config", config.to_dict())
    trial.set_user_attr("config_key", config.key())
    trial.set_user_attr("gmacs", cost.gmacs)
    trial.set_user_attr("effective_gmacs", cost.effective_gmacs)
    trial.set_user_attr("params_m", cost.params_m)


def measure_candidate(
    config: CandidateConfig,
    device: BaseDevice,
    estimator: BaseAccuracyEstimator | None,
    protocol: MeasurementProtocol,
    inputs: torch.Tensor | None = None,
    shared_weights: dict[str, torch.Tensor] | None = None,
    report: ReportIntermediate | None = None,
) -> CandidateRecord:
    """Build, time and score one configuration, phase times included.

    ``report`` receives the estimator's intermediate accuracies (short training) and may stop
    the candidate by raising."""
    phase_s: dict[str, float] = {}
    start = time.perf_counter()
    model = build_model(config, shared_weights=shared_weights)
    phase_s["build"] = time.perf_counter() - start
    if inputs is None:
        generator = torch.Generator().manual_seed(INPUT_SEED)
        inputs = torch.randn(protocol.batch_size, 3, config.img_size, config.img_size,
                             generator=generator)
    accuracy = None
    if estimator is not None:
        start = time.perf_counter()
        accuracy = estimate_accuracy(model, config, estimator, report)
        phase_s["accuracy"] = time.perf_counter() - start
    measurement = device.evaluate(config, model, inputs, protocol)
    return CandidateRecord(measurement=measurement, knobs=device.knob_support(config),
                           accuracy=accuracy, harness_version=harness.__version__,
                           phase_s={**phase_s, **measurement.phase_s})


def estimate_accuracy(model: torch.nn.Module, config: CandidateConfig,
                      estimator: BaseAccuracyEstimator,
                      report: ReportIntermediate | None = None) -> dict[str, Any]:
    """The estimator's score of ``model`` with the spec that produced it.

    Each estimator says what it sees: proxies and short training score the fp32 model (masks
    and token reduction, not precision); a supernet scores the candidate as it is measured."""
    return {**estimator.record(model, config, report), "estimator": estimator.spec}
