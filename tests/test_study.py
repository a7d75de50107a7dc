from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from harness.accuracy import DssIndicator
from harness.budget import parse_budgets
from harness.cost import estimate_cost
from harness.devices import get_device
from harness.errors import StudyError
from harness.search.interrupts import Interrupts
from harness.search.study import SearchSettings, measured_count, run_search
from harness.space import load_space


def _settings(space_file: Path, device_file: Path, tmp_path: Path, **overrides) -> SearchSettings:
    device = get_device(str(device_file))
    values = {
        "space": load_space(str(space_file)), "device": device, "estimator": DssIndicator(),
        "protocol": device.profile.protocol, "budgets": [], "n_trials": 6, "seed": 0,
        "study_name": "test", "out_dir": tmp_path / "out",
    }
    values.update(overrides)
    return SearchSettings(**values)


def _middle_mac_budget(space_file: Path) -> str:
    """A MAC budget that cuts the tiny space roughly in half."""
    macs = [estimate_cost(config).macs for config in load_space(str(space_file)).sample(200)]
    return f"{sorted(macs)[len(macs) // 2] / 1e3:.3f}kmac"


def test_a_search_run_from_python_records_what_its_report_shows(tiny_space_file, fast_device_file,
                                                                tmp_path):
    # the environment and run settings come from the library, not from the command line
    settings = _settings(tiny_space_file, fast_device_file, tmp_path, n_trials=1,
                         capability_notes=["a note"])
    attrs = run_search(settings).user_attrs
    assert attrs["environment"]["host"] and attrs["environment"]["machine_fingerprint"]
    assert attrs["run_settings"] == {"sampler": "tpe", "seed": 0, "n_trials": 1,
                                     "measurement": settings.protocol.to_dict()}
    assert attrs["estimator_description"] == settings.estimator.description
    assert attrs["capability_notes"] == ["a note"] and attrs["estimator_rank_checks"] == []


def test_budget_rejects_before_build_and_front_meets_the_budget(tiny_space_file, fast_device_file, tmp_path):
    budgets = parse_budgets([_middle_mac_budget(tiny_space_file)])
    settings = _settings(tiny_space_file, fast_device_file, tmp_path, budgets=budgets, n_trials=8)
    study = run_search(settings)
    limit = budgets[0].limit
    rejected = [t for t in study.trials if t.state == TrialState.PRUNED]
    measured = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert rejected and len(measured) == 8
    for trial in rejected:
        assert trial.user_attrs["gmacs"] * 1e9 > limit
        assert "latency_ms" not in trial.user_attrs and "accuracy" not in trial.user_attrs
        assert trial.constraints["budget:macs"] > 0  # declared through Optuna's constraint API
    for trial in measured:
        assert set(trial.constraints) == {"budget:macs"}
    assert study.best_trials
    for trial in study.best_trials:
        assert trial.user_attrs["gmacs"] * 1e9 <= limit
        assert trial.values[0] == trial.user_attrs["latency_ms"]["median"]


def test_latency_budget_is_checked_on_the_measured_median(tiny_space_file, fast_device_file, tmp_path):
    budgets = parse_budgets(["0.01ms"])  # the lowest budget allowed: nothing can meet it
    study = run_search(_settings(tiny_space_file, fast_device_file, tmp_path, budgets=budgets, n_trials=3))
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert all(t.constraints["budget:latency_ms"] > 0 for t in study.trials)
    assert study.best_trials == []


class _FailsOnDepth3(DssIndicator):
    def estimate(self, model, config, report=None):
        if config.depth == 3:
            raise RuntimeError("synthetic failure")
        return super().estimate(model, config)


def test_a_failing_trial_is_recorded_and_the_study_goes_on(tiny_space_file, fast_device_file, tmp_path):
    settings = _settings(tiny_space_file, fast_device_file, tmp_path, estimator=_FailsOnDepth3(), n_trials=10)
    study = run_search(settings)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert failed and complete and len(failed) + len(complete) == 10
    assert all(t.user_attrs["error"] == "RuntimeError: synthetic failure" for t in failed)
    assert all(t.user_attrs["config"]["depth"] == 3 for t in failed)


def test_resume_keeps_finished_trials_and_runs_only_the_rest(tiny_space_file, fast_device_file, tmp_path):
    first = run_search(_settings(tiny_space_file, fast_device_file, tmp_path, n_trials=4))
    before = {t.number: (t.params, t.values) for t in first.trials}
    second = run_search(_settings(tiny_space_file, fast_device_file, tmp_path, n_trials=7))
    assert measured_count(second) == 7 and len(second.trials) == 7
    assert {t.number: (t.params, t.values) for t in second.trials[:4]} == before
    again = run_search(_settings(tiny_space_file, fast_device_file, tmp_path, n_trials=7))
    assert len(again.trials) == 7  # nothing left to do


def test_resume_refuses_a_different_search(tiny_space_file, fast_device_file, tmp_path):
    run_search(_settings(tiny_space_file, fast_device_file, tmp_path, n_trials=1))
    settings = _settings(tiny_space_file, fast_device_file, tmp_path, n_trials=2,
                         budgets=parse_budgets(["1gflop"]))
    with pytest.raises(StudyError, match="already exists with a different budgets"):
        run_search(settings)


@pytest.mark.parametrize(("sampler", "n_trials"), [("random", 12), ("tpe", 5)])
def test_same_seed_proposes_the_same_configurations(tiny_space_file, fast_device_file, tmp_path, sampler, n_trials):
    # TPE is reproducible over its random start-up trials; later proposals depend on the measured
    # latencies, which vary from run to run (the README says so).
    runs = [
        run_search(_settings(tiny_space_file, fast_device_file, tmp_path / name, n_trials=n_trials,
                             seed=3, sampler=sampler))
        for name in ("a", "b")
    ]
    assert [t.params for t in runs[0].trials] == [t.params for t in runs[1].trials]
    other = run_search(_settings(tiny_space_file, fast_device_file, tmp_path / "c", n_trials=n_trials,
                                 seed=4, sampler=sampler))
    assert [t.params for t in other.trials] != [t.params for t in runs[0].trials]


def test_rdb_storage_url_is_passed_to_optuna_and_resumes(tiny_space_file, fast_device_file, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    run_search(_settings(tiny_space_file, fast_device_file, tmp_path, n_trials=2, storage=url))
    study = run_search(_settings(tiny_space_file, fast_device_file, tmp_path, n_trials=3, storage=url))
    assert measured_count(study) == 3
    assert isinstance(study._storage, optuna.storages.RDBStorage) or (tmp_path / "study.db").is_file()
    assert not (tmp_path / "out" / "study.journal").exists()


def test_an_interrupt_swallowed_mid_trial_still_stops_the_search(tiny_space_file, fast_device_file, tmp_path):
    import os
    import signal
    import time

    from harness.search.interrupts import SearchInterrupted

    def interrupt_and_swallow(outcome, study):
        # As when SIGINT lands in a finaliser: Python prints the KeyboardInterrupt and drops it.
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        except KeyboardInterrupt:
            pass

    settings = _settings(tiny_space_file, fast_device_file, tmp_path, n_trials=6)
    with pytest.raises(SearchInterrupted) as stopped:
        run_search(settings, on_trial=interrupt_and_swallow)
    assert len(stopped.value.study.trials) == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_between_asking_and_recording_the_owner_waits():
    """Between ``study.ask()`` and recording the trial's host and process, a KeyboardInterrupt
    would leave a RUNNING trial that no later run can tell is orphaned: it is held back."""
    interrupts = Interrupts(graceful=False)
    with interrupts.deferred():
        interrupts.on_signal(2, None)  # no KeyboardInterrupt here
    assert interrupts.requested.is_set()
    with pytest.raises(KeyboardInterrupt):
        interrupts.raise_if_requested()
    with pytest.raises(KeyboardInterrupt):
        interrupts.on_signal(2, None)  # outside ``deferred``: at once


def test_a_worker_is_never_interrupted_mid_trial():
    interrupts = Interrupts(graceful=True)
    interrupts.on_signal(15, None)
    interrupts.raise_if_requested()  # a worker stops after its trial, not inside it
    assert interrupts.requested.is_set()


def test_searches_sharing_a_journal_never_repeat_each_other(tiny_space_file, fast_device_file,
                                                            tmp_path):
    """Two searches started together on one journal: the second runs whole after the first
    opened the study but before it asks for a trial. Each trial draws from its own number, so
    together they propose exactly what one search alone does."""

    def second_search(study):
        run_search(_settings(tiny_space_file, fast_device_file, tmp_path, n_trials=6,
                             sampler="random"))

    shared = run_search(_settings(tiny_space_file, fast_device_file, tmp_path, n_trials=12,
                                  sampler="random"), on_start=second_search)
    alone = run_search(_settings(tiny_space_file, fast_device_file, tmp_path / "alone",
                                 n_trials=12, sampler="random"))
    assert len(shared.trials) == len(alone.trials) == 12
    assert [t.params for t in shared.trials[6:]] != [t.params for t in shared.trials[:6]]
    assert [t.params for t in shared.trials] == [t.params for t in alone.trials]


def test_a_trial_no_process_claimed_is_failed_and_requeued(tiny_space_file, fast_device_file,
                                                           tmp_path, monkeypatch):
    """A process killed between asking for a trial and recording its host and pid leaves a
    RUNNING trial without them: once it is older than the grace period it is an orphan."""
    import harness.search.storage as storage_module

    study = run_search(_settings(tiny_space_file, fast_device_file, tmp_path, n_trials=2))
    unclaimed = study.ask()  # and the process dies here
    storage_module.recover_orphans(study)
    # within the grace period its process may still be about to claim it
    assert study.trials[unclaimed.number].state == TrialState.RUNNING
    monkeypatch.setattr(storage_module, "UNOWNED_GRACE_S", 0)

    resumed = run_search(_settings(tiny_space_file, fast_device_file, tmp_path, n_trials=3))
    orphan = resumed.trials[unclaimed.number]
    assert orphan.state == TrialState.FAIL and orphan.user_attrs["interrupted"] is True
    assert orphan.user_attrs["error"].startswith("no process recorded itself as running the trial")
    [retry] = [t for t in resumed.trials if t.user_attrs.get("retry_of") == unclaimed.number]
    assert retry.state == TrialState.COMPLETE
    assert measured_count(resumed) == 3  # the orphan no longer counts towards n_trials
    assert not resumed.get_trials(states=(TrialState.RUNNING,))
