"""The re-measured front: the Pareto candidates timed again side by side, in interleaved rounds.

A search measures its candidates minutes apart, once each; a candidate whose CI overlaps
another's is then called dominated or not by chance. When a search finishes, the candidates that
could be on the front (those that would not be dominated if their latency were the lower bound of
their 95% CI) are built once and timed again in several rounds, ABC ABC ..., each timing short and
drift-corrected by the reference probe timed between its blocks. A bootstrap over rounds gives each
point's median and 95% CI and the probability that it is dominated; the final front is the
non-dominated points on the re-measured medians.

The result is a versioned record in the study's user attributes (``REMEASURE_ATTR``): finished
trials' attributes cannot change in Optuna, and each trial keeps its original samples.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial

import harness
from harness.checkpoint import Checkpoint, load_checkpoint
from harness.config import CandidateConfig
from harness.devices import BaseDevice, get_device
from harness.devices.base import CalibratedProbe, MeasuredDevice
from harness.devices.contention import HostMonitor
from harness.devices.lock import exclusive_timing
from harness.devices.probe import ProbeCalibration
from harness.errors import DeviceError, StudyError, shorten
from harness.models import build_model
from harness.records import ContentionEvidence, DriftCorrection, TrialRecord
from harness.search.objective import inherited_weights, search_inputs
from harness.search.results import (
    MAX_CANDIDATES,
    REMEASURE_ATTR,
    RemeasuredFront,
    RemeasuredPoint,
    RoundTiming,
    eligible_for_front,
    pareto_trials,
    trial_records,
)
from harness.space import SearchSpace, space_from_dict
from harness.timing import MeasurementProtocol

DEFAULT_ROUNDS = 5
ROUND_S = 0.3  # timing of one candidate in one round, at most the protocol's time cap
# Warm-up of a candidate in the rounds after the first: the other candidates ran in between and
# left its caches cold; the first round warms each model up as its search measurement did.
ROUND_WARMUP_S = 0.1
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def dominated(latency_ms: np.ndarray, accuracy: np.ndarray,
              by_latency_ms: np.ndarray | None = None) -> np.ndarray:
    """Whether each point k, (``latency_ms[..., k]``, ``accuracy[k]``), is dominated by another
    point j, (``by_latency_ms[..., j]``, ``accuracy[j]``); ``by_latency_ms`` defaults to
    ``latency_ms``. Lower latency and higher accuracy are better; equal points do not dominate
    each other. Leading axes (bootstrap resamples) are kept."""
    others = latency_ms if by_latency_ms is None else by_latency_ms
    point_latency, other_latency = latency_ms[..., :, None], others[..., None, :]
    point_accuracy, other_accuracy = accuracy[:, None], accuracy[None, :]
    no_worse = (other_latency <= point_latency) & (other_accuracy >= point_accuracy)
    better = (other_latency < point_latency) | (other_accuracy > point_accuracy)
    not_itself = ~np.eye(len(accuracy), dtype=bool)
    return (no_worse & better & not_itself).any(axis=-1)


@dataclass(frozen=True)
class FrontBootstrap:
    """Per point: the median of its round medians, its 95% CI and P(dominated)."""

    medians_ms: np.ndarray
    ci95_ms: np.ndarray  # (points, 2)
    p_dominated: np.ndarray


def bootstrap_front(round_medians_ms: np.ndarray, accuracy: np.ndarray,
                    resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
                    ) -> FrontBootstrap:
    """A bootstrap over rounds of ``round_medians_ms`` (points x rounds).

    Round indices are resampled jointly for every point: the points of one round were timed
    within seconds of each other and share the host's drift, which a point-by-point resample
    would count as noise. Accuracy is held fixed (the search's estimate): only latency was
    re-measured. The CI is the 2.5th and 97.5th percentiles of the resampled medians."""
    rounds = round_medians_ms.shape[1]
    picks = np.random.default_rng(seed).integers(0, rounds, size=(resamples, rounds))
    resampled = np.median(round_medians_ms[:, picks], axis=2).T  # (resamples, points)
    return FrontBootstrap(
        medians_ms=np.median(round_medians_ms, axis=1),
        ci95_ms=np.percentile(resampled, [2.5, 97.5], axis=0).T,
        p_dominated=dominated(resampled, accuracy).mean(axis=0),
    )


def select_candidates(front: list[FrozenTrial], eligible: list[FrozenTrial],
                      records: dict[int, TrialRecord]
                      ) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
    """(to re-measure, left out): the ``front``, and every other ``eligible`` trial that would
    not be dominated if its latency were the lower bound of its 95% CI, the others at their
    medians (its CI reaches the front). Beyond ``MAX_CANDIDATES`` the slowest of the latter are
    left out; the front never is."""
    if not eligible:
        return [], []
    medians = np.array([t.values[0] for t in eligible])
    lower = np.array([records[t.number].latency.ci95[0] for t in eligible])
    accuracy = np.array([t.values[1] for t in eligible])
    reaching = ~dominated(lower, accuracy, by_latency_ms=medians)
    on_front = {t.number for t in front}
    near = sorted((t for t, reach in zip(eligible, reaching) if reach and t.number not in on_front),
                  key=lambda t: t.values[0])
    room = max(MAX_CANDIDATES - len(front), 0)
    return front + near[:room], near[room:]


def round_protocol(protocol: MeasurementProtocol, round_s: float, first: bool
                   ) -> MeasurementProtocol:
    """One round's timing: ``round_s`` (at most the protocol's time cap), never stopped earlier
    by the CI target; a short warm-up after the first round."""
    seconds = min(round_s, protocol.time_cap_s)
    warm_up = {} if first else {"warmup_min_s": min(ROUND_WARMUP_S, protocol.warmup_min_s),
                                "warmup_max_s": min(ROUND_WARMUP_S, protocol.warmup_min_s)}
    return dataclasses.replace(protocol, min_samples=1, min_timed_s=seconds, time_cap_s=seconds,
                               **warm_up)


@dataclass
class _Candidate:
    trial: FrozenTrial
    model: torch.nn.Module
    inputs: torch.Tensor
    rounds: list[RoundTiming]
    search_ci95_ms: tuple[float, float]  # the search's interval of its median
    precision: str  # and so the reference probe's


def remeasure_front(
    study: optuna.Study,
    device: BaseDevice,
    protocol: MeasurementProtocol,
    space: SearchSpace,
    checkpoint: Checkpoint | None = None,
    rounds: int = DEFAULT_ROUNDS,
    round_s: float = ROUND_S,
    on_progress: Callable[[str], None] | None = None,
) -> RemeasuredFront | None:
    """Re-measure the study's front candidates on ``device`` and store the record in the study;
    None when no trial could be on the front.

    Raises:
        DeviceError: the device's latency is estimated, not timed on this host.
    """
    if not isinstance(device, MeasuredDevice):
        raise DeviceError(f"device {shorten(device.name)} estimates latency from its model; "
                          "there is nothing to re-measure on this host")
    say = on_progress or (lambda message: None)
    started = time.perf_counter()
    trials = study.get_trials(deepcopy=False)
    eligible = [t for t in trials if eligible_for_front(t)]
    front = pareto_trials(study, trials)
    records = {r.number: r for r in trial_records(study, eligible)}
    chosen, left_out = select_candidates(front, eligible, records)
    if not chosen:
        return None
    weights = inherited_weights(space, checkpoint)
    inputs = search_inputs(space, protocol.batch_size)
    candidates = []
    for trial in chosen:  # built and prepared once, outside the timing lock
        config = CandidateConfig.from_dict(records[trial.number].config)
        model, prepared = device.prepare(build_model(config, shared_weights=weights),
                                         inputs[config.img_size], config)
        model, _ = device.deploy(model, prepared, config, protocol)
        candidates.append(_Candidate(trial, model, prepared, [],
                                     records[trial.number].latency.ci95, config.precision))
    say(f"re-measuring {len(chosen)} candidates ({len(front)} on the front, the others "
        f"within their CI of it) in {rounds} interleaved rounds, each candidate timed "
        f"{min(round_s, protocol.time_cap_s):.2f} s per round"
        + (f"; {len(left_out)} more left out" if left_out else ""))
    with exclusive_timing(device.name):
        probes = {precision: device.calibrated_probe(protocol, precision)
                  for precision in sorted({c.precision for c in candidates})}
        drifts: dict[str, DriftCorrection] = {}
        monitor = HostMonitor(device.measuring_threads(protocol))
        for number in range(rounds):
            timing = round_protocol(protocol, round_s, first=number == 0)
            for candidate in candidates:
                probe = probes[candidate.precision]
                measurement = device.measure_latency(candidate.model, candidate.inputs, timing,
                                                     probe=probe.interleave())
                drift = drifts[candidate.precision] = probe.correction(measurement, protocol)
                corrected = drift.status == "corrected"
                candidate.rounds.append(RoundTiming(
                    measurement.samples_ms, measurement.probe_samples_ms, drift.factor,
                    measurement.timed_s, measurement.probe_s,
                    probe_quiet_ms=drift.probe_quiet_ms if corrected else None,
                    probe_positions=measurement.probe_positions if corrected else None))
            say(f"re-measure round {number + 1}/{rounds} done "
                f"({time.perf_counter() - started:.0f} s)")
        evidence = monitor.evidence(_probe_slowdown(candidates, probes),
                                    device.other_device_processes()) \
            if protocol.contention_check else None
    record = _record(candidates, {t.number for t in front}, eligible, left_out, drifts, evidence,
                     device, round_s=min(round_s, protocol.time_cap_s), started=started)
    study.set_user_attr(REMEASURE_ATTR, record.to_dict())
    return record


def _probe_slowdown(candidates: list[_Candidate],
                    probes: dict[str, CalibratedProbe]) -> float | None:
    """The probes' median time over their calibrated quiet time, across every round; None
    when a probe has no calibration."""
    if not all(isinstance(p.calibration, ProbeCalibration) for p in probes.values()):
        return None
    ratios = [sample / probes[c.precision].calibration.quiet_ms
              for c in candidates for r in c.rounds for sample in r.probe_samples_ms]
    return statistics.median(ratios) if ratios else None


def _record(candidates: list[_Candidate], first_front: set[int], eligible: list[FrozenTrial],
            left_out: list[FrozenTrial], drifts: dict[str, DriftCorrection],
            evidence: ContentionEvidence | None, device: BaseDevice, round_s: float,
            started: float) -> RemeasuredFront:
    """The record of the rounds; ``drifts`` holds any round's correction by each precision's
    probe: status, reason and probe are the same in every round of one precision (one
    calibration, one protocol)."""
    accuracy = np.array([c.trial.values[1] for c in candidates])
    round_medians = np.array([[r.median_ms for r in c.rounds] for c in candidates])
    boot = bootstrap_front(round_medians, accuracy)
    on_final = ~dominated(boot.medians_ms, accuracy)
    points = [
        RemeasuredPoint(
            trial=c.trial.number, accuracy=float(accuracy[i]),
            search_median_ms=c.trial.values[0],
            search_ci95_ms=c.search_ci95_ms, rounds=c.rounds,
            median_ms=float(boot.medians_ms[i]),
            ci95_ms=(float(boot.ci95_ms[i, 0]), float(boot.ci95_ms[i, 1])),
            p_dominated=float(boot.p_dominated[i]),
            on_first_front=c.trial.number in first_front, on_final_front=bool(on_final[i]))
        for i, c in enumerate(candidates)
    ]
    timed_s = sum(r.timed_s for c in candidates for r in c.rounds)
    probe_s = sum(r.probe_s for c in candidates for r in c.rounds)
    one = next(iter(drifts.values()))
    return RemeasuredFront(
        device=device.name,
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        duration_s=round(time.perf_counter() - started, 3),
        harness_version=harness.__version__, rounds=len(candidates[0].rounds), round_s=round_s,
        resamples=BOOTSTRAP_RESAMPLES, eligible=sorted(t.number for t in eligible),
        left_out=[t.number for t in left_out], drift_status=one.status,
        drift_reason=one.reason if len(drifts) == 1 else
        "; ".join(f"{d.probe}: {d.reason}" for d in drifts.values()),
        probe=", ".join(d.probe for d in drifts.values()),
        probe_quiet_ms=one.probe_quiet_ms if len(drifts) == 1 else None,
        probe_share=round(probe_s / timed_s, 4) if timed_s and probe_s else None,
        contention=evidence, points=points,
    )


def study_protocol(metadata: dict[str, Any], device: BaseDevice) -> MeasurementProtocol:
    """The protocol the study's trials were measured with (its ``run_settings``), over the
    device profile's for settings an older study did not record."""
    recorded = (metadata.get("run_settings") or {}).get("measurement") or {}
    known = {f.name for f in dataclasses.fields(MeasurementProtocol)}
    return dataclasses.replace(device.profile.protocol,
                               **{k: v for k, v in recorded.items() if k in known})


def remeasure_stored_study(study: optuna.Study, device_name: str | None = None,
                           weights: Path | None = None,
                           on_progress: Callable[[str], None] | None = None
                           ) -> RemeasuredFront | None:
    """``remeasure_front`` for an existing study, on the device it was measured on (a profile
    name or path of that name, e.g. a profile file of the search's ``--device``).

    Raises:
        DeviceError: the device is not on this host, is another one, or is estimated.
        StudyError: the study of a checkpoint, without that checkpoint (``weights``).
    """
    metadata = study.user_attrs
    studied = metadata.get("device")
    if studied is None:
        raise StudyError(f"study {shorten(study.study_name)} records no device to re-measure on")
    device = get_device(device_name or studied)
    if device.name != studied:
        raise DeviceError(f"device {shorten(device.name)} is not the study's: its trials were "
                          f"measured on {shorten(studied)}")
    checkpoint = load_checkpoint(weights) if weights else None
    expected = metadata.get("weights_sha256")
    if expected and (checkpoint is None or checkpoint.sha256 != expected):
        raise StudyError(f"study {shorten(study.study_name)} searched the checkpoint with sha256 "
                         f"{expected}: give that checkpoint with --weights PATH")
    if checkpoint and not expected:
        raise StudyError(f"study {shorten(study.study_name)} searched no checkpoint; drop --weights")
    return remeasure_front(study, device, study_protocol(metadata, device),
                           space_from_dict(metadata["space"]), checkpoint,
                           on_progress=on_progress)
