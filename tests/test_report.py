from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser

from harness.cli import main
from harness.records import SCHEMA_VERSION


class _ReportParser(HTMLParser):
    """Collects image sources, external references and the rows of the Pareto table."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.external: list[str] = []
        self.pareto_rows: list[list[str]] = []
        self.headings: list[str] = []
        self._in_pareto = self._in_heading = False
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if attrs.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(attrs[key])
        if tag in ("script", "link"):
            self.external.append(tag)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "table" and attrs.get("id") == "pareto":
            self._in_pareto = True
        if self._in_pareto and tag == "tr":
            self._row = []
        if self._row is not None and tag == "td":
            self._cell = []
        self._in_heading = tag in ("h1", "h2")

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_pareto = False
        if tag == "td" and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        if tag == "tr" and self._row:
            self.pareto_rows.append(self._row)
            self._row = None
        if tag in ("h1", "h2"):
            self._in_heading = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in_heading:
            self.headings.append(data)


def test_search_writes_a_self_contained_report_and_pareto_json(tiny_space_file, fast_device_file, tmp_path, capsys):
    out = tmp_path / "out"
    budget = "0.4mmac"
    code = main(["search", "--accuracy", "proxy:dss", "--space", str(tiny_space_file), "--device", str(fast_device_file),
                 "--budget", budget, "--trials", "8", "--out", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(out / "report.html")

    pareto = json.loads((out / "pareto.json").read_text())
    assert pareto, "the tiny space has configurations under the budget"
    for entry in pareto:
        assert set(entry) >= {"config", "gmacs", "params_m", "latency_ms", "accuracy"}
        assert entry["gmacs"] * 1e9 <= 0.4e6
        assert set(entry["latency_ms"]) >= {"median", "p90", "ci95", "cv", "n"}
        assert entry["accuracy"]["estimator"] == "proxy:dss"

    parser = _ReportParser()
    parser.feed((out / "report.html").read_text())
    assert parser.external == []
    assert len(parser.images) == 2 and all(src.startswith("data:image/png;base64,") for src in parser.images)
    for heading in ("Pareto front", "Pareto-optimal configurations", "Hypervolume over trials",
                    "Search settings", "Environment", "How each number was obtained"):
        assert heading in parser.headings
    # One row per Pareto point, in the same order, with the same trial, GMACs and latency.
    assert [int(row[0]) for row in parser.pareto_rows] == [entry["trial"] for entry in pareto]
    for row, entry in zip(parser.pareto_rows, pareto):
        assert f"{entry['gmacs']:.3f}" in row and f"{entry['latency_ms']['median']:.3f}" in row

    trials = json.loads((out / "trials.json").read_text())
    assert trials["schema_version"] == SCHEMA_VERSION and len(trials["trials"]) >= 8
    assert trials["metadata"]["environment"]["device"]["kind"] == "cpu"


def test_report_command_rebuilds_from_storage(tiny_space_file, fast_device_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["search", "--accuracy", "proxy:dss", "--space", str(tiny_space_file), "--device", str(fast_device_file),
                 "--trials", "2", "--out", str(out), "--quiet"]) == 0
    (out / "report.html").unlink()
    (out / "pareto.json").unlink()
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "report.html")
    assert (out / "report.html").is_file() and json.loads((out / "pareto.json").read_text())
    # a report reads stored results only: it never loads torch, the models or the devices
    pareto = (out / "pareto.json").read_text()
    (out / "report.html").unlink()
    script = ("import sys; from harness.cli import main; "
              f"code = main(['report', {str(out)!r}]); "
              "loaded = [m for m in ('torch', 'harness.models', 'harness.devices.base') "
              "if m in sys.modules]; sys.exit(f'loaded {loaded}' if loaded else code)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert (out / "report.html").is_file() and (out / "pareto.json").read_text() == pareto


def test_report_of_a_missing_study_is_one_line_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"journal file {tmp_path / 'nothing' / 'study.journal'}: no such file" in err
    assert not (tmp_path / "nothing").exists()


def test_failed_trials_are_listed_apart_with_their_error(tiny_space_file, fast_device_file, tmp_path):
    from harness.accuracy import DssIndicator
    from harness.devices import get_device
    from harness.report import write_report
    from harness.search.study import SearchSettings, run_search
    from harness.space import load_space

    class FailsOnDepth3(DssIndicator):
        def estimate(self, model, config, report=None):
            if config.depth == 3:
                raise ValueError("synthetic failure")
            return super().estimate(model, config)

    device = get_device(str(fast_device_file))
    settings = SearchSettings(space=load_space(str(tiny_space_file)), device=device,
                              estimator=FailsOnDepth3(), protocol=device.profile.protocol,
                              n_trials=8, study_name="t", out_dir=tmp_path)
    report = write_report(run_search(settings), tmp_path).read_text()
    assert "<h2>Failed trials</h2>" in report and "ValueError: synthetic failure" in report
    pareto = json.loads((tmp_path / "pareto.json").read_text())
    assert pareto and all(entry["config"]["depth"] == 2 for entry in pareto)


KNOB_SPACE = """\
schema_version: 1
name: knobs
params:
  embed_dim: 32
  depth: 2
  num_heads: 2
  head_dim: 16
  patch_size: 8
  img_size: 32
  num_classes: 10
  merge_r: [0, 2]
  weight_sparsity: [dense, "2:4"]
  precision: [fp32, int8, fp16]
"""


def test_search_drops_unaccelerated_knobs_and_the_report_says_what_ran(
    fast_device_file, tmp_path, capsys, monkeypatch
):
    from harness.devices import cpu

    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2"}))
    space = tmp_path / "knobs.yaml"
    space.write_text(KNOB_SPACE)
    out = tmp_path / "out"
    args = ["search", "--accuracy", "proxy:dss", "--space", str(space), "--device", str(fast_device_file), "--trials", "6",
            "--quiet", "--out", str(out)]
    assert main(args) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "harness: note:" in line]
    assert len(notes) == 2
    assert "weight_sparsity 2:4 is not accelerated on fastcpu" in notes[0] and "dropped" in notes[0]
    assert "precision fp16 is not accelerated" in notes[1] and "avx512_fp16" in notes[1]
    trials = json.loads((out / "trials.json").read_text())["trials"]
    measured = [t for t in trials if t["state"] == "COMPLETE"]
    assert {t["config"]["precision"] for t in measured} <= {"fp32", "int8"}
    assert all(t["config"]["weight_sparsity"] == "dense" for t in measured)
    report = (out / "report.html").read_text()
    assert "Efficiency knobs on this device" in report and "dropped from the space" in report

    # Pinned by the user: kept, measured, and marked as not accelerated wherever it appears.
    pinned = tmp_path / "pinned"
    assert main([*args[:-1], str(pinned), "--set", "weight_sparsity=2:4", "--study", "p"]) == 0
    assert "kept as asked" in capsys.readouterr().err
    pareto = json.loads((pinned / "pareto.json").read_text())
    assert pareto and all(e["effective_gmacs"] < e["gmacs"] for e in pareto)
    sparsity = [k for e in pareto for k in e["knobs"] if k["knob"] == "weight_sparsity"]
    assert sparsity and not any(k["accelerated"] for k in sparsity)
    parser = _ReportParser()
    parser.feed((pinned / "report.html").read_text())
    assert all("weight_sparsity: 2 of every 4 weights zeroed (NOT accelerated)" in " ".join(row)
               for row in parser.pareto_rows)


def test_measured_energy_and_throttling_reach_the_report(tiny_space_file, fast_device_file, tmp_path,
                                                          monkeypatch):
    # RAPL is absent on the test host: stand in for the counter's result, not for the pipeline.
    from harness.devices.cpu import CpuDevice
    from harness.records import EnergyRecord

    measured = EnergyRecord(status="measured", source="rapl", reason="fake package counter",
                                 joules_per_call=0.5, ci95=(0.4, 0.6), idle_power_w=3.0,
                                 windows=5, window_s=1.0)
    monkeypatch.setattr(CpuDevice, "measure_energy", lambda self, model, inputs, protocol: measured)
    out = tmp_path / "out"
    assert main(["search", "--accuracy", "proxy:dss", "--space", str(tiny_space_file), "--device", str(fast_device_file),
                 "--trials", "3", "--out", str(out), "--quiet"]) == 0
    pareto = json.loads((out / "pareto.json").read_text())
    assert pareto and all(entry["energy"] == measured.to_json() for entry in pareto)
    assert all(entry["throttled"] is None for entry in pareto)  # a CPU cannot tell
    report = (out / "report.html").read_text()
    assert "0.5000 [0.4000, 0.6000] (measured)" in report
    assert "measured from rapl (fake package counter)" in report


def test_the_report_says_which_host_and_process_measured_each_trial(tiny_space_file,
                                                                    fast_device_file, tmp_path):
    import socket

    out = tmp_path / "out"
    assert main(["search", "--accuracy", "proxy:dss", "--space", str(tiny_space_file),
                 "--device", str(fast_device_file), "--trials", "2", "--out", str(out),
                 "--quiet"]) == 0
    page = (out / "report.html").read_text()
    assert f"{socket.gethostname()} pid " in page and ", fastcpu</td>" in page


def test_the_front_comes_from_one_snapshot_of_the_trials():
    """Another process may finish a trial between two reads of the storage: the front is taken
    from the report's own snapshot, so a trial it holds as running is never on it."""
    import optuna

    from harness.search.results import pareto_trials

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize", "maximize"])
    for latency, accuracy, violation in [(10, 0.70, 0), (12, 0.80, 0), (11, 0.60, 0),
                                         (5, 0.90, 1.0), (10, 0.70, 0)]:
        trial = study.ask()
        trial.set_constraint("budget", violation)
        study.tell(trial, [latency, accuracy])
    running = study.ask()
    snapshot = study.get_trials(deepcopy=False)
    assert [t.number for t in pareto_trials(study, snapshot)] == [0, 4, 1]  # ties both kept
    assert {t.number for t in pareto_trials(study, snapshot)} == {
        t.number for t in study.best_trials}
    running.set_constraint("budget", 0)
    study.tell(running, [1, 0.99])  # finished after the snapshot: not on the snapshot's front
    assert running.number not in [t.number for t in pareto_trials(study, snapshot)]
    assert running.number in [t.number for t in study.best_trials]
