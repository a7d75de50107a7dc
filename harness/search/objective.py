"""One trial's work: suggest a configuration, cost it, reject it before building when it breaks a
budget, else build, score and measure it (``measure_candidate``, which ``harness measure`` uses
too), and record the result on the trial.

Objectives: measured latency median (minimise) and the accuracy estimate (maximise). Budgets are
hard constraints (``trial.set_constraint``). A candidate over a MAC or parameter budget is rejected
by the analytic counter before anything is built: its trial is told PRUNED with its constraint
values set, which TPE learns from (it ranks infeasible trials by violation)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

import harness
from harness.accuracy import BaseAccuracyEstimator, ReportIntermediate
from harness.checkpoint import Checkpoint
from harness.config import CandidateConfig
from harness.cost import Cost, estimate_cost
from harness.devices import BaseDevice
from harness.models import build_model, shared_weights
from harness.records import CandidateRecord
from harness.search.preflight import part_usage
from harness.space import SearchSpace
from harness.timing import MeasurementProtocol

if TYPE_CHECKING:  # named only: the study runs this objective
    from harness.search.study import SearchSettings

INPUT_SEED = 0


class RejectedBeforeMeasurement(Exception):
    """A candidate is over a MAC or parameter budget, or does not fit the device's resources (an
    FPGA part): known from its configuration, before anything is built."""


class AccuracyPruned(Exception):
    """A candidate's intermediate accuracy is below the 25th percentile of finished
    candidates' at the same step (``percentile_stopping``)."""


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
    over += [part_usage(key, v) for key, v in device_violations.items() if v > 0]
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
