"""The re-measured front: the bootstrap over rounds, the record a search leaves, the report and
pareto.json built on it, and ``harness report --remeasure``. No wall-clock thresholds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from test_study import _settings

from harness.cli import main
from harness.devices.contention import HostMonitor
from harness.devices.probe import ReferenceProbe, quiet_calibration
from harness.records import ContentionEvidence
from harness.report import write_report
from harness.search.remeasure import DEFAULT_ROUNDS, bootstrap_front, dominated, remeasure_front
from harness.search.results import (
    REMEASURE_ATTR,
    RemeasuredFront,
    RoundTiming,
    pareto_trials,
    stored_remeasurement,
)
from harness.search.storage import open_storage
from harness.search.study import run_search


def _search(space_file: Path, device_file: Path, out: Path, *options: str) -> int:
    return main(["search", "--accuracy", "proxy:dss", "--space", str(space_file), "--device",
                 str(device_file), "--trials", "6", "--out", str(out), "--quiet", *options])


def _study(out: Path) -> optuna.Study:
    storage = open_storage(str(out / "study.journal"), must_exist=True)
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


def _remeasured_rows(html: str) -> list[str]:
    table = html.split("<table id='remeasured'>", 1)[1].split("</table>", 1)[0]
    return table.split("<tbody>", 1)[1].split("<tr>")[1:]


# --- the bootstrap over rounds ----------------------------------------------------------------


def test_a_clearly_faster_point_is_almost_never_dominated():
    rounds = np.array([[10.0, 10.3, 9.8, 10.1, 10.0],    # fast, less accurate
                       [20.0, 19.7, 20.4, 20.1, 19.9],   # slow, more accurate
                       [20.5, 20.2, 20.9, 20.6, 20.4]])  # slow and less accurate than the first
    accuracy = np.array([0.70, 0.80, 0.60])
    boot = bootstrap_front(rounds, accuracy)
    assert boot.p_dominated[0] == 0.0 and boot.p_dominated[1] == 0.0
    assert boot.p_dominated[2] == 1.0
    assert np.allclose(boot.medians_ms, np.median(rounds, axis=1))
    for median, (low, high) in zip(boot.medians_ms, boot.ci95_ms):
        assert low <= median <= high


def test_two_identical_points_are_not_both_dominated():
    rounds = np.array([[12.0, 11.5, 12.4, 12.1, 11.9]] * 2)
    boot = bootstrap_front(rounds, np.array([0.75, 0.75]))
    assert not (boot.p_dominated > 0).all()
    assert (boot.p_dominated == 0).all()  # equal points do not dominate each other


def test_rounds_are_resampled_jointly_so_shared_drift_cancels():
    # The host's speed swings by 40% between rounds, the same for both points: B is 5% slower
    # than A in every round, so it is dominated in every joint resample.
    drift = np.array([1.0, 1.4, 0.9, 1.2, 1.05])
    rounds = np.array([10.0 * drift, 10.5 * drift])
    boot = bootstrap_front(rounds, np.array([0.8, 0.8]))
    assert boot.p_dominated[1] == 1.0 and boot.p_dominated[0] == 0.0


def test_dominated_keeps_leading_axes_and_needs_a_strictly_better_objective():
    latency = np.array([[1.0, 2.0, 2.0], [3.0, 2.0, 1.0]])
    accuracy = np.array([0.5, 0.5, 0.9])
    assert dominated(latency, accuracy).tolist() == [[False, True, False],
                                                     [True, True, False]]


# --- a search, its record and its report ------------------------------------------------------


def test_a_search_ends_with_a_remeasured_front_in_record_report_and_pareto_json(
        tiny_space_file, fast_device_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert _search(tiny_space_file, fast_device_file, out) == 0
    capsys.readouterr()
    study = _study(out)
    record = stored_remeasurement(study.user_attrs)
    assert record is not None
    assert not record.contended, record.contention
    assert RemeasuredFront.from_dict(record.to_dict()).to_dict() == record.to_dict()

    points = record.points
    assert points and record.rounds == DEFAULT_ROUNDS
    for point in points:
        assert 0.0 <= point.p_dominated <= 1.0
        assert len(point.rounds) == DEFAULT_ROUNDS and all(r.samples_ms for r in point.rounds)
        assert point.ci95_ms[0] <= point.median_ms <= point.ci95_ms[1]
        # the trial keeps its original samples and figures
        trial = study.trials[point.trial]
        assert trial.user_attrs["latency_samples_ms"]
        assert point.search_median_ms == trial.user_attrs["latency_ms"]["median"]
    first = {t.number for t in pareto_trials(study, study.get_trials())}
    assert {p.trial for p in record.first_front} == first
    assert record.front_changes == sum(p.on_first_front != p.on_final_front for p in points)

    # The final front is non-dominated on the re-measured medians, and holds every such point.
    medians = np.array([p.median_ms for p in points])
    accuracy = np.array([p.accuracy for p in points])
    assert [p.on_final_front for p in points] == (~dominated(medians, accuracy)).tolist()

    pareto = json.loads((out / "pareto.json").read_text())
    assert [entry["trial"] for entry in pareto] == [p.trial for p in record.final_front]
    for entry, point in zip(pareto, record.final_front):
        assert entry["latency_ms"]["median"] == point.median_ms
        assert entry["latency_ms"]["ci95"] == list(point.ci95_ms)
        assert entry["latency_ms"]["status"] == "remeasured"
        assert entry["p_dominated"] == point.p_dominated
        assert entry["search_latency_ms"]["median"] == point.search_median_ms

    html = (out / "report.html").read_text()
    assert "<h2>Re-measured front</h2>" in html
    assert len(_remeasured_rows(html)) == len(points)
    assert f"{record.front_changes} point(s) changed" in html
    trials_json = json.loads((out / "trials.json").read_text())
    assert REMEASURE_ATTR not in trials_json["metadata"]  # its samples stay in the storage


def test_no_remeasure_leaves_no_record(tiny_space_file, fast_device_file, tmp_path):
    out = tmp_path / "out"
    assert _search(tiny_space_file, fast_device_file, out, "--no-remeasure") == 0
    assert REMEASURE_ATTR not in _study(out).user_attrs
    pareto = json.loads((out / "pareto.json").read_text())
    assert pareto and all("p_dominated" not in entry for entry in pareto)
    assert "Re-measured front" not in (out / "report.html").read_text()


def test_report_remeasure_on_an_existing_study(tiny_space_file, fast_device_file, tmp_path,
                                               capsys):
    out = tmp_path / "out"
    assert _search(tiny_space_file, fast_device_file, out, "--no-remeasure") == 0
    capsys.readouterr()
    # the fast profile is a file: the study records its name, --device names the file
    assert main(["report", str(out), "--remeasure", "--device", str(fast_device_file)]) == 0
    printed = capsys.readouterr()
    assert printed.out.strip() == str(out / "report.html")
    assert "re-measure round 5/5 done" in printed.err and "re-measured" in printed.err
    record = stored_remeasurement(_study(out).user_attrs)
    assert record is not None and not record.contended, record
    pareto = json.loads((out / "pareto.json").read_text())
    assert [entry["trial"] for entry in pareto] == [p.trial for p in record.final_front]
    assert all(0.0 <= entry["p_dominated"] <= 1.0 for entry in pareto)


def test_report_remeasure_without_the_device_is_one_line_exit_2(tiny_space_file,
                                                                 fast_device_file, tmp_path,
                                                                 capsys, monkeypatch):
    from harness.devices.cpu import CpuDevice

    out = tmp_path / "out"
    assert _search(tiny_space_file, fast_device_file, out, "--no-remeasure") == 0
    journal = (out / "study.journal").read_bytes()
    capsys.readouterr()
    monkeypatch.setattr(CpuDevice, "availability", lambda self: (False, "no such CPU here"))
    assert main(["report", str(out), "--remeasure", "--device", str(fast_device_file)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("harness: error: device 'fastcpu' is not "
                                                   "available on this host: no such CPU here")
    assert (out / "study.journal").read_bytes() == journal


def test_a_remeasurement_on_a_busy_host_is_recorded_and_not_used(tiny_space_file,
                                                                 fast_device_file, tmp_path,
                                                                 monkeypatch):
    settings = _settings(tiny_space_file, fast_device_file, tmp_path, n_trials=4)
    study = run_search(settings)
    busy = ContentionEvidence(window_s=1.0, others_cores=2.0, free_cores=0.0, steal_share=0.0,
                              probe_slowdown=None, load_1m=None,
                              reasons=["other processes used 2.00 cores over 1.00 s"])
    monkeypatch.setattr(HostMonitor, "evidence", lambda self, *args, **kwargs: busy)
    record = remeasure_front(study, settings.device, settings.protocol, settings.space)
    assert record is not None and record.contended
    assert stored_remeasurement(study.user_attrs).contended
    out = tmp_path / "report"
    out.mkdir()
    html = write_report(study, out).read_text()
    assert "<b>Not used</b>: the host was busy while it ran" in html
    pareto = json.loads((out / "pareto.json").read_text())
    assert [entry["trial"] for entry in pareto] == [
        t.number for t in pareto_trials(study, study.get_trials())]
    assert all("p_dominated" not in entry for entry in pareto)


def test_each_candidate_is_remeasured_beside_a_probe_in_its_precision(tiny_space_file,
                                                                      fast_device_file, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("HARNESS_CPU_FLAGS", "avx2")  # int8 accelerated on any host
    space_file = tmp_path / "mixed.yaml"
    space_file.write_text(tiny_space_file.read_text() + "  precision: [fp32, int8]\n")
    settings = _settings(space_file, fast_device_file, tmp_path, n_trials=8)
    study = run_search(settings)
    record = remeasure_front(study, settings.device, settings.protocol, settings.space)
    assert record is not None and not record.contended, record
    threads = settings.device.measuring_threads(settings.protocol)
    precisions = {p.trial: study.trials[p.trial].user_attrs["config"]["precision"]
                  for p in record.points}
    assert set(precisions.values()) == {"fp32", "int8"}  # (seed 0 puts both near the front)
    probes = {precision: ReferenceProbe(1, precision).name for precision in ("fp32", "int8")}
    assert record.probe == f"{probes['fp32']}, {probes['int8']}"
    assert record.probe_quiet_ms is None  # each round keeps its own probe's
    # the calibrations this process measured with (a quiet window may since have stored a
    # faster one for the processes after it)
    quiet = {precision: quiet_calibration(None, settings.device.name, threads, name).quiet_ms
             for precision, name in probes.items()}
    for point in record.points:
        assert {r.probe_quiet_ms for r in point.rounds} == {quiet[precisions[point.trial]]}
    assert record.drift_reason.count(probes["int8"]) == 1


def test_a_round_is_corrected_sample_by_sample_and_older_rounds_by_their_factor():
    # the host ran 2x slow for the round's second half, and the probe with it
    samples = [10.0] * 6 + [20.0] * 6
    probe, positions = [1.0, 1.0, 1.0, 2.0, 2.0, 2.0], [0, 3, 6, 6, 9, 12]
    now = RoundTiming(samples, probe, drift_factor=0.666667, timed_s=0.1, probe_s=0.01,
                      probe_quiet_ms=1.0, probe_positions=positions)
    assert now.median_ms == 10.0
    assert RoundTiming(**now.to_dict()) == now
    # stored before each probe timing's position was kept: the round's factor, as then
    older = {k: v for k, v in now.to_dict().items() if k not in ("probe_quiet_ms", "probe_positions")}
    assert RoundTiming(**older).median_ms == pytest.approx(15.0 * 0.666667)
    assert RoundTiming(**older).corrected_samples_ms() == pytest.approx([s * 0.666667 for s in samples])
