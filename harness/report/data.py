"""Everything a report shows, computed once from the study (rendered by ``html.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from harness.accuracy.spread import AccuracySpread, accuracy_spread
from harness.pareto import Bounds, hypervolume_history, to_losses
from harness.study import RESULT_SCHEMA_VERSION, is_contended, pareto_trials, trial_record

PARETO_KEYS = ("config", "config_key", "gmacs", "effective_gmacs", "params_m", "latency_ms",
               "latency_raw_ms", "drift", "contention", "energy", "throttled", "accuracy", "knobs",
               "fpga")


@dataclass(frozen=True)
class ReportData:
    study_name: str
    metadata: dict[str, Any]  # the study's user attributes: space, device, budgets, environment...
    trials: list[dict[str, Any]]
    pareto: list[dict[str, Any]]
    hypervolume: list[float]
    counts: dict[str, int]

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
    return ReportData(
        study_name=study.study_name,
        metadata=dict(study.user_attrs),
        trials=trials,
        pareto=[trials[t.number] for t in pareto_trials(study, frozen)],
        hypervolume=history,
        counts=counts,
    )
