"""Typed result records and their migrations, on files stored by earlier harness versions
(``tests/fixtures/stored/``) and on fresh measurements."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest

from harness.bench.compare import compare_results
from harness.bench.history import load_results as load_history
from harness.bench.suites import load_results
from harness.cli import main
from harness.records import (
    MIGRATIONS,
    SCHEMA_VERSION,
    BenchRunRecord,
    MeasurementRecord,
    RecordError,
    migrate,
    read_bench_results,
)
from harness.search.results import stored_remeasurement, trial_records
from harness.search.storage import open_storage

STORED = Path(__file__).parent / "fixtures" / "stored"


@pytest.fixture
def v1_search(tmp_path: Path) -> Path:
    """A copy of the search output a version-1 harness wrote (its storage alone)."""
    out = tmp_path / "run"
    out.mkdir()
    for name in ("study.journal", "tiny.yaml", "fastcpu.yaml"):
        shutil.copy(STORED / "v1" / name, (out if name.endswith("journal") else tmp_path) / name)
    return out


def _study(out: Path) -> optuna.Study:
    return optuna.load_study(study_name="tiny-fastcpu", storage=open_storage(str(out / "study.journal")))


def test_every_result_kind_migrates_from_every_version_ever_written():
    import harness.accuracy.supernet
    import harness.fpga.calibration
    import harness.rank_check  # noqa: F401 - each registers the steps of its kind

    # each kind has a test below on a file its version-1 harness wrote
    assert set(MIGRATIONS) == {"trial", "remeasured-front", "bench-result", "rank-check",
                               "supernet", "calibration-entry"}
    for kind, steps in MIGRATIONS.items():
        assert sorted(steps) == list(range(1, SCHEMA_VERSION)), kind


@pytest.mark.parametrize("version", [SCHEMA_VERSION + 1, 0, "2", None, True])
def test_a_version_this_harness_never_wrote_is_refused_in_one_line(version):
    with pytest.raises(RecordError, match=rf"where: schema_version .*; this harness reads 1 to "
                                          rf"{SCHEMA_VERSION}") as error:
        migrate("trial", {}, version, "where")
    assert "\n" not in str(error.value)


def test_a_v1_study_reads_as_typed_records_with_the_energy_figure_renamed(v1_search):
    study = _study(v1_search)
    assert study.user_attrs["result_schema_version"] == 1
    records = trial_records(study)
    assert [r.number for r in records] == [0, 1, 2, 3]
    measured = [r for r in records if r.complete]
    assert measured, "the stored search measured trials"
    for record in measured:
        stored = study.trials[record.number].user_attrs
        assert "joules_per_inference" in stored["energy"]  # the file is version 1
        energy = record.measurement.energy
        assert energy.joules_per_call == stored["energy"]["joules_per_inference"]
        assert "joules_per_inference" not in record.to_json()["energy"]
        assert record.latency.median == stored["latency_ms"]["median"] == study.trials[
            record.number].values[0]
        assert record.measurement.drift.factor == pytest.approx(stored["drift"]["factor"], abs=1e-5)
        assert record.knobs and record.accuracy_value == stored["accuracy"]["value"]
    front = stored_remeasurement(study.user_attrs)
    assert front.schema_version == SCHEMA_VERSION and front.points


def test_report_of_a_v1_study_writes_current_records(v1_search):
    assert main(["report", str(v1_search)]) == 0
    trials = json.loads((v1_search / "trials.json").read_text())
    assert trials["schema_version"] == SCHEMA_VERSION
    text = json.dumps(trials) + (v1_search / "pareto.json").read_text()
    assert "joules_per_inference" not in text and "joules_per_call" in text
    assert "Pareto-optimal configurations" in (v1_search / "report.html").read_text()


def test_resuming_a_v1_study_keeps_old_trials_readable_beside_new_ones(v1_search, tmp_path,
                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)  # the stored study names its space by the path it was given
    assert main(["search", "--space", "tiny.yaml", "--device", "fastcpu.yaml", "--trials", "5",
                 "--accuracy", "proxy:params", "--out", "run", "--no-remeasure", "--quiet"]) == 0
    study = _study(v1_search)
    records = trial_records(study)
    assert len(records) >= 5 and study.user_attrs["result_schema_version"] == 1
    new = [t for t in study.trials if t.number >= 4]
    assert new and all(t.user_attrs["schema_version"] == SCHEMA_VERSION for t in new)
    for record in records:
        if record.complete:
            assert record.measurement.energy.status == "unavailable"
            assert "joules_per_inference" not in record.to_json()["energy"]


def test_v1_bench_results_load_migrated_for_compare_and_history(tmp_path):
    base, head = tmp_path / "base", tmp_path / "head"
    base.mkdir()
    head.mkdir()
    shutil.copy(STORED / "v1" / "bench-result-energy.json", base / "tiny.json")
    shutil.copy(STORED / "v1" / "bench-result.json", head / "tiny.json")
    [old] = load_results(base)
    stored = json.loads((STORED / "v1" / "bench-result-energy.json").read_text())
    assert stored["schema_version"] == 1
    energy = old.measurement.energy
    assert energy.status == "measured" and energy.source == "rapl"
    assert energy.joules_per_call == stored["energy"]["joules_per_inference"] > 0
    assert old.to_json()["schema_version"] == SCHEMA_VERSION
    assert "joules_per_inference" not in json.dumps(old.to_json())
    comparison = compare_results(load_results(base), load_results(head))
    assert [e.name for e in comparison.entries] == [old.key]
    rows, skipped = load_history(tmp_path)
    assert len(rows) == 2 and skipped == []


def test_a_bench_result_of_a_newer_harness_is_named_not_guessed(tmp_path):
    values = json.loads((STORED / "v1" / "bench-result.json").read_text())
    (tmp_path / "new.json").write_text(json.dumps({**values, "schema_version": SCHEMA_VERSION + 1}))
    results, skipped = read_bench_results(tmp_path)
    assert results == []
    [(path, reason)] = skipped
    assert path.name == "new.json" and f"schema_version {SCHEMA_VERSION + 1}" in reason


def test_a_measurement_round_trips_through_its_stored_form(tmp_path):
    values = json.loads((STORED / "v1" / "bench-result-energy.json").read_text())
    record = BenchRunRecord.from_json(values, "stored")
    again = BenchRunRecord.from_json(json.loads(json.dumps(record.to_json())), "stored")
    assert again.measurement == record.measurement
    assert MeasurementRecord.from_json(record.measurement.to_json()) == record.measurement


def test_a_v1_rank_check_record_reads_as_one_row_of_the_current_shape():
    from harness.rank_check import RankCheck, rank_checks_dir, stored_rank_checks

    rank_checks_dir().mkdir(parents=True)
    shutil.copy(STORED / "v1" / "rank-check.json", rank_checks_dir() / "tiny--proxy-dss.json")
    stored = json.loads((STORED / "v1" / "rank-check.json").read_text())
    [check] = stored_rank_checks("tiny")
    assert stored["schema_version"] == 1 and check.schema_version == SCHEMA_VERSION
    assert check.row("proxy:dss").kendall_tau == stored["kendall_tau"]
    assert len(check.points) == stored["n"]
    assert RankCheck.from_dict({**stored, "schema_version": SCHEMA_VERSION + 1}) is None


def test_a_v1_supernet_record_is_kept_not_retrained():
    from harness.accuracy.supernet import SupernetRecord

    path = STORED / "v1" / "supernet.json"
    stored = json.loads(path.read_text())
    record = SupernetRecord.from_json(path.read_text(), str(path))
    assert stored["schema_version"] == 1 and record.schema_version == SCHEMA_VERSION
    assert record.heldout == stored["heldout"] and record.steps == stored["steps"]


def test_a_v1_fpga_calibration_record_still_calibrates():
    from harness.fpga.calibration import calibration_dir, load_entries

    calibration_dir("zcu102").mkdir(parents=True)
    shutil.copy(STORED / "v1" / "calibration-entry.json", calibration_dir("zcu102") / "a.json")
    stored = json.loads((STORED / "v1" / "calibration-entry.json").read_text())
    [entry] = load_entries("zcu102")
    assert stored["schema_version"] == stored["record"]["schema_version"] == 1
    assert entry["schema_version"] == entry["record"]["schema_version"] == SCHEMA_VERSION
    assert entry["record"]["latency_cycles"] == stored["record"]["latency_cycles"]
