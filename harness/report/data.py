"""Everything a report shows, computed once from the study (rendered by ``html.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from harness.accuracy.spread import AccuracySpread, accuracy_spread
from harness.records import SCHEMA_VERSION, KnobSupport, LatencyRecord, TrialRecord
from harness.search.pareto import Bounds, hypervolume_history, to_losses
from harness.search.results import (
    REMEASURE_ATTR,
    RemeasuredFront,
    RemeasuredPoint,
    eligible_for_front,
    pareto_trials,
    stored_remeasurement,
    trial_records,
)

PARETO_KEYS = ("config", "config_key", "gmacs", "effective_gmacs", "params_m", "latency_ms",
               "latency_raw_ms", "drift", "contention", "energy", "throttled", "accuracy", "knobs",
               "runtime", "fpga")


@dataclass(frozen=True)
class FrontPoint:
    """A trial on the front with the latency the report shows: the re-measured one when the front
    was re-measured (its ``latency_raw_ms``, ``drift`` and ``contention`` stay the search's)."""

    trial: TrialRecord
    latency: LatencyRecord
    remeasured: RemeasuredPoint | None = None

    def to_json(self, rank_checks: list[str]) -> dict[str, Any]:
        """As written to ``pareto.json``."""
        stored = self.trial.to_json()
        values = {"trial": self.trial.number, **{key: stored.get(key) for key in PARETO_KEYS},
                  "latency_ms": self.latency.to_json()}
        if self.remeasured is not None:
            values.update(search_latency_ms=self.trial.latency.to_json(),
                          p_dominated=self.remeasured.p_dominated,
                          on_first_front=self.remeasured.on_first_front)
        return {**values, "accuracy_rank_checks": rank_checks}


@dataclass(frozen=True)
class ReportData:
    study_name: str
    metadata: dict[str, Any]  # the study's user attributes: space, device, budgets, environment...
    trials: list[TrialRecord]
    pareto: list[FrontPoint]
    hypervolume: list[float]
    counts: dict[str, int]
    remeasured: RemeasuredFront | None = None
    remeasured_unused: str | None = None  # why the re-measured front does not replace the first

    @property
    def front_remeasured(self) -> bool:
        """Whether ``pareto`` is the re-measured front."""
        return self.remeasured is not None and self.remeasured_unused is None

    @property
    def measured(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.complete]

    @property
    def contended(self) -> list[TrialRecord]:
        """Measured trials whose latency was taken on a busy host: kept apart from the front."""
        return [t for t in self.measured if t.contended]

    @property
    def accuracy_spread(self) -> AccuracySpread | None:
        """How far the measured candidates' accuracies spread against their sampling error."""
        return accuracy_spread([t.accuracy for t in self.measured])

    @property
    def knob_support(self) -> list[KnobSupport]:
        """Each knob value the measured trials used, once, with whether the device accelerates it."""
        seen: dict[tuple[str, str], KnobSupport] = {}
        for trial in self.measured:
            for knob in trial.knobs:
                seen.setdefault((knob.knob, knob.value), knob)
        return [seen[key] for key in sorted(seen)]

    def pareto_json(self) -> list[dict[str, Any]]:
        """The Pareto set as written to ``pareto.json``; each accuracy says how well its
        estimator is known to rank this space (``harness rank-check``), where it was measured."""
        ranking = self.metadata.get("estimator_rank_checks") or []
        return [point.to_json(ranking) for point in self.pareto]

    def trials_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "study": self.study_name,
            "metadata": self.metadata,
            "trials": [t.to_json() for t in self.trials],
        }


def build_report_data(study: optuna.Study) -> ReportData:
    frozen = study.get_trials(deepcopy=False)
    trials = trial_records(study, frozen)
    feasible_points = [
        (t.values[0], t.values[1])
        if t.state == TrialState.COMPLETE and record.feasible and not record.contended
        else None
        for t, record in zip(frozen, trials)
    ]
    measured = [p for p in feasible_points if p is not None]
    history = (
        hypervolume_history(feasible_points, Bounds.of(to_losses(measured))) if measured else []
    )
    counts = {state.name: 0 for state in TrialState}
    for t in frozen:
        counts[t.state.name] += 1
    counts["REJECTED_BY_BUDGET"] = sum(1 for t in trials if "rejected" in t.attributes)
    counts["STOPPED_EARLY"] = sum(1 for t in trials if "pruned" in t.attributes)
    counts["CONTENDED"] = sum(1 for t in trials if t.complete and t.contended)
    remeasured = stored_remeasurement(study.user_attrs)
    unused = remeasured.unused_reason([t.number for t in frozen if eligible_for_front(t)]) \
        if remeasured else None
    pareto = [FrontPoint(trials[t.number], trials[t.number].latency)
              for t in pareto_trials(study, frozen)]
    if remeasured and not unused:
        pareto = [FrontPoint(trials[point.trial], remeasured.latency_record(point), point)
                  for point in remeasured.final_front]
    return ReportData(
        study_name=study.study_name,
        # the re-measurement's samples stay in the storage, as trials' samples do
        metadata={k: v for k, v in study.user_attrs.items() if k != REMEASURE_ATTR},
        trials=trials,
        pareto=pareto,
        hypervolume=history,
        counts=counts,
        remeasured=remeasured,
        remeasured_unused=unused,
    )
