"""Results as they are stored with a study and read back by reports, exports and the CLI: which
trials may be on the front, the trials as plain records, and the re-measured front.

Nothing here imports torch, the models or the devices: ``harness report`` reads a study with
this module alone (a test checks it).
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from harness.records import (
    SCHEMA_VERSION,
    ContentionEvidence,
    LatencyRecord,
    TrialRecord,
    migrate,
)
from harness.stats import summarize
from harness.timing import drift_corrected

REMEASURE_ATTR = "remeasured_front"
# The study attribute with the schema version its trials were first written at; each trial written
# since version 2 carries its own (TRIAL_VERSION_ATTR), as a study may be resumed by a newer harness.
STUDY_VERSION_ATTR = "result_schema_version"
TRIAL_VERSION_ATTR = "schema_version"
# Candidates beyond the front (whose CI reaches it) timed at most, with the front, in all; the
# front itself is never cut. Bounds the time: about 8 x 5 rounds x 0.4 s, plus each first warm-up;
# 12 candidates of 0.4 s took 42 s of a 2-minute later quick-start search.
MAX_CANDIDATES = 8


def trial_records(study: optuna.Study, trials: list[FrozenTrial] | None = None
                  ) -> list[TrialRecord]:
    """``trials`` (default: all of the study's) as typed records, in the current schema."""
    study_version = study.user_attrs.get(STUDY_VERSION_ATTR, 1)
    return [TrialRecord.from_attributes(
                t.number, t.state.name, t.constraints, t.user_attrs,
                t.user_attrs.get(TRIAL_VERSION_ATTR, study_version))
            for t in (study.get_trials(deepcopy=False) if trials is None else trials)]


def is_contended(user_attrs: dict[str, Any]) -> bool:
    """Whether a trial's latency was measured on a busy host (``harness.devices.contention``)."""
    return bool((user_attrs.get("contention") or {}).get("contended"))


def eligible_for_front(trial: FrozenTrial, include_contended: bool = False) -> bool:
    """Whether a trial may be on the Pareto front: complete, within every budget and, unless
    ``include_contended``, measured on a quiet host."""
    return (trial.state == TrialState.COMPLETE
            and all(v <= 0 for v in trial.constraints.values())
            and (include_contended or not is_contended(trial.user_attrs)))


def pareto_trials(study: optuna.Study, trials: list[FrozenTrial],
                  include_contended: bool = False) -> list[FrozenTrial]:
    """The feasible Pareto-optimal trials among ``trials``, fastest first; trials measured on
    a busy host are left out unless ``include_contended``: their latency is not the candidate's.

    Computed on the caller's snapshot rather than by ``study.best_trials``, which reads the
    storage again: with other processes writing, a trial still running in the snapshot could
    otherwise be on the front without its results."""
    signs = [1.0 if direction == StudyDirection.MINIMIZE else -1.0
             for direction in study.directions]
    feasible = [t for t in trials if eligible_for_front(t, include_contended)]
    losses = [[sign * value for sign, value in zip(signs, t.values)] for t in feasible]

    def dominated(loss: list[float]) -> bool:
        return any(all(a <= b for a, b in zip(other, loss)) and other != loss
                   for other in losses)

    front = [t for t, loss in zip(feasible, losses) if not dominated(loss)]
    return sorted(front, key=lambda t: t.values[0])


@dataclass(frozen=True)
class RoundTiming:
    """One candidate's timing in one round: raw samples, the probe's beside them, and the
    round's drift factor (quiet probe time over the probe's median in the round; 1 when
    uncorrected)."""

    samples_ms: list[float]
    probe_samples_ms: list[float]
    drift_factor: float
    timed_s: float
    probe_s: float
    # The probe's calibrated quiet time and each probe timing's position (samples before it),
    # to correct sample by sample; None when uncorrected, or stored before they were kept
    probe_quiet_ms: float | None = None
    probe_positions: list[int] | None = None

    def corrected_samples_ms(self) -> list[float]:
        if self.probe_quiet_ms is None:
            return [sample * self.drift_factor for sample in self.samples_ms]
        return drift_corrected(self.samples_ms, self.probe_samples_ms, self.probe_positions,
                               self.probe_quiet_ms)

    @property
    def median_ms(self) -> float:
        """The round's drift-corrected median."""
        return statistics.median(self.corrected_samples_ms())

    def to_dict(self) -> dict[str, Any]:
        return {"samples_ms": [round(s, 5) for s in self.samples_ms],
                "probe_samples_ms": [round(s, 5) for s in self.probe_samples_ms],
                "drift_factor": round(self.drift_factor, 6), "timed_s": round(self.timed_s, 4),
                "probe_s": round(self.probe_s, 4), "probe_quiet_ms": self.probe_quiet_ms,
                "probe_positions": self.probe_positions}


@dataclass(frozen=True)
class RemeasuredPoint:
    """One re-measured candidate: the search's figures (the trial keeps its samples), its
    rounds, and what the bootstrap over rounds made of them."""

    trial: int
    accuracy: float  # the search's estimate, held fixed
    search_median_ms: float
    search_ci95_ms: tuple[float, float]
    rounds: list[RoundTiming]
    median_ms: float  # median of the rounds' drift-corrected medians
    ci95_ms: tuple[float, float]
    p_dominated: float
    on_first_front: bool
    on_final_front: bool

    def to_dict(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
                "search_ci95_ms": list(self.search_ci95_ms), "ci95_ms": list(self.ci95_ms),
                "rounds": [r.to_dict() for r in self.rounds]}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RemeasuredPoint:
        return cls(**{**values, "search_ci95_ms": tuple(values["search_ci95_ms"]),
                      "ci95_ms": tuple(values["ci95_ms"]),
                      "rounds": [RoundTiming(**r) for r in values["rounds"]]})


@dataclass(frozen=True)
class RemeasuredFront:
    """A re-measurement of a study's front candidates, stored in its user attributes."""

    device: str
    measured_at: str
    duration_s: float
    harness_version: str
    rounds: int
    round_s: float  # each candidate's timing per round
    resamples: int
    # Trials that could be on the front when it was re-measured (complete, within budget, on a
    # quiet host): a study with others since is re-measured again before this is used.
    eligible: list[int]
    left_out: list[int]  # candidates beyond MAX_CANDIDATES, not re-measured
    drift_status: str  # "corrected", "off" or "uncalibrated", as for a trial's ``drift``
    drift_reason: str
    probe: str  # the reference probes, one per precision among the candidates, comma-separated
    probe_quiet_ms: float | None  # None when several probes: each round keeps its probe's
    probe_share: float | None  # probe time over the candidates' timed time: its overhead
    # HostMonitor's evidence over the whole re-measurement; None when the check is off
    contention: ContentionEvidence | None
    points: list[RemeasuredPoint]
    schema_version: int = SCHEMA_VERSION

    @property
    def contended(self) -> bool:
        return self.contention is not None and self.contention.contended

    @property
    def first_front(self) -> list[RemeasuredPoint]:
        return [p for p in self.points if p.on_first_front]

    @property
    def final_front(self) -> list[RemeasuredPoint]:
        """Non-dominated on the re-measured medians, fastest first."""
        return sorted((p for p in self.points if p.on_final_front), key=lambda p: p.median_ms)

    @property
    def front_changes(self) -> int:
        """Points on one front and not the other: left it or joined it."""
        return sum(p.on_first_front != p.on_final_front for p in self.points)

    def unused_reason(self, eligible_now: list[int]) -> str | None:
        """Why this re-measurement must not replace the search's front, or None."""
        if self.contended:
            return (f"the host was busy while it ran ({'; '.join(self.contention.reasons)}); "
                    "re-measure on a quiet host with 'harness report OUT --remeasure'")
        if sorted(eligible_now) != sorted(self.eligible):
            return (f"the study changed since ({len(eligible_now)} candidates could be on the "
                    f"front, {len(self.eligible)} then); re-measure with 'harness report OUT "
                    "--remeasure'")
        return None

    def latency_record(self, point: RemeasuredPoint) -> LatencyRecord:
        """``point``'s re-measured latency: median and ci95 over the rounds (the bootstrap's);
        p90, cv, n, mean, min and max of the rounds' drift-corrected samples pooled."""
        pooled = summarize([s for r in point.rounds for s in r.corrected_samples_ms()])
        return LatencyRecord.of_summary(
            pooled, status="remeasured", rounds=len(point.rounds),
            drift_corrected=self.drift_status == "corrected").with_interval(
                point.median_ms, point.ci95_ms)

    def summary(self) -> str:
        """One line for the user: what changed, or why it is not used."""
        first = len(self.first_front)
        left = [p.trial for p in self.points if p.on_first_front and not p.on_final_front]
        joined = [p.trial for p in self.points if p.on_final_front and not p.on_first_front]
        moves = "; ".join(part for part in (
            f"left: trial {', '.join(map(str, left))}" if left else "",
            f"joined: trial {', '.join(map(str, joined))}" if joined else "") if part)
        return (f"re-measured {len(self.points)} candidates in {self.rounds} interleaved rounds: "
                f"front of {len(self.final_front)}, {self.front_changes} point(s) changed against "
                f"the search's front of {first}" + (f" ({moves})" if moves else ""))

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**values, "points": [p.to_dict() for p in self.points],
                "contention": self.contention.to_json() if self.contention else None,
                "front_changes": self.front_changes}  # derived, for readers of the storage

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RemeasuredFront:
        values = migrate("remeasured-front", dict(values), values.get("schema_version"),
                         f"the study's {REMEASURE_ATTR} record")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in values.items() if k in fields},
                      "points": [RemeasuredPoint.from_dict(p) for p in values["points"]],
                      "contention": (ContentionEvidence.from_json(values["contention"])
                                     if values.get("contention") else None)})


def stored_remeasurement(study_attrs: dict[str, Any]) -> RemeasuredFront | None:
    """The study's re-measured front, if one was recorded."""
    values = study_attrs.get(REMEASURE_ATTR)
    return RemeasuredFront.from_dict(values) if values else None
