"""Everything a report shows, computed once from the study (rendered by ``html.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from harness.accuracy.spread import AccuracySpread, accuracy_spread
from harness.search.pareto import Bounds, hypervolume_history, to_losses
from harness.search.results import (
    REMEASURE_ATTR,
    RESULT_SCHEMA_VERSION,
    RemeasuredFront,
    RemeasuredPoint,
    eligible_for_front,
    is_contended,
    pareto_trials,
    stored_remeasurement,
    trial_record,
)

PARETO_KEYS = ("config", "config_key", "gmacs", "effective_gmacs", "params_m", "latency_ms",
               "latency_raw_ms", "drift", "contention", "energy", "throttled", "accuracy", "knobs",
               "runtime", "fpga")
# What a point of a re-measured front adds: its ``latency_ms`` is then the re-measured one, and
# ``latency_raw_ms``, ``drift`` and ``contention`` stay those of the search's measurement.
REMEASURED_KEYS = ("search_latency_ms", "p_dominated", "on_first_front")


@dataclass(frozen=True)
class ReportData:
    study_name: str
    metadata: dict[str, Any]  # the study's user attributes: space, device, budgets, environment...
    trials: list[dict[str, Any]]
    pareto: list[dict[str, Any]]
    hypervolume: list[float]
    counts: dict[str, int]
    remeasured: RemeasuredFront | None = None
    remeasured_unused: str | None = None  # why the re-measured front does not replace the first

    @property
    def front_remeasured(self) -> bool:
        """Whether ``pareto`` is the re-measured front."""
        return self.remeasured is not None and self.remeasured_unused is None

    @property
    def measured(self) -> list[dict[str, Any]]:
        return [t for t in self.trials if t["state"] == "COMPLETE"]

    @property
    def contended(self) -> list[dict[str, Any]]:
        """Measured trials whose latency was taken on a busy host: kept apart from the front."""
        return [t for t in self.measured if is_contended(t)]

    @property
    def accuracy_spread(self) -> AccuracySpread | None:
        """How far the measured candidates' accuracies spread against their sampling error."""
        return accuracy_spread([t.get("accuracy") for t in self.measured])

    @property
    def knob_support(self) -> list[dict[str, Any]]:
        """Each knob value the measured trials used, once, with whether the device accelerates it."""
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        for trial in self.measured:
            for knob in trial.get("knobs", []):
                seen.setdefault((knob["knob"], knob["value"]), knob)
        return [seen[key] for key in sorted(seen)]

    def pareto_json(self) -> list[dict[str, Any]]:
        """The Pareto set as written to ``pareto.json``; each accuracy says how well its
        estimator is known to rank this space (``harness rank-check``), where it was measured."""
        ranking = self.metadata.get("estimator_rank_checks") or []
        return [
            {"trial": entry["number"], **{key: entry.get(key) for key in PARETO_KEYS},
             **{key: entry[key] for key in REMEASURED_KEYS if key in entry},
             "accuracy_rank_checks": ranking}
            for entry in self.pareto
        ]

    def trials_json(self) -> dict[str, Any]:
        return {
            "schema_version": RESULT_SCHEMA_VERSION,
            "study": self.study_name,
            "metadata": self.metadata,
            "trials": self.trials,
        }


def build_report_data(study: optuna.Study) -> ReportData:
    frozen = study.get_trials(deepcopy=False)
    trials = [trial_record(t) for t in frozen]
    feasible_points = [
        (t.values[0], t.values[1])
        if t.state == TrialState.COMPLETE and record["feasible"] and not is_contended(record)
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
    counts["REJECTED_BY_BUDGET"] = sum(1 for t in trials if "rejected" in t)
    counts["STOPPED_EARLY"] = sum(1 for t in trials if "pruned" in t)
    counts["CONTENDED"] = sum(1 for t in trials if t["state"] == "COMPLETE" and is_contended(t))
    remeasured = stored_remeasurement(study.user_attrs)
    unused = remeasured.unused_reason([t.number for t in frozen if eligible_for_front(t)]) \
        if remeasured else None
    pareto = [trials[t.number] for t in pareto_trials(study, frozen)]
    if remeasured and not unused:
        pareto = [_remeasured_entry(trials[point.trial], point, remeasured)
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


def _remeasured_entry(record: dict[str, Any], point: RemeasuredPoint,
                      remeasured: RemeasuredFront) -> dict[str, Any]:
    """A trial of the re-measured front, with its re-measured latency in place of the search's."""
    return {**record, "latency_ms": remeasured.latency_record(point),
            "search_latency_ms": record["latency_ms"], "p_dominated": point.p_dominated,
            "on_first_front": point.on_first_front}
