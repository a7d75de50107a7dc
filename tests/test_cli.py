from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from harness.cli import main

PUBLISHED = {"deit_tiny": (1.26, 5.72), "deit_small": (4.61, 22.05), "deit_base": (17.58, 86.57)}


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, check=False)


@pytest.mark.parametrize("arch", sorted(PUBLISHED))
def test_measure_no_latency_json_reproduces_published_counts(arch, capsys):
    assert main(["measure", "--arch", arch, "--no-latency", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    gmacs, params_m = PUBLISHED[arch]
    assert result["gmacs"] == pytest.approx(gmacs, rel=0.01)
    assert result["gmacs_fvcore"] == pytest.approx(gmacs, rel=0.01)
    assert result["params_m"] == pytest.approx(params_m, rel=0.01)
    assert result["device"] == "cpu" and "latency_ms" not in result
    assert result["env"]["torch"] and result["config"]["embed_dim"] in (192, 384, 768)


def test_measure_json_with_latency(fast_device_file, capsys):
    args = ["measure", "--accuracy", "proxy:dss", "--arch", "deit_tiny", "--set", "keep_rate=0.7", "--device",
            str(fast_device_file), "--batch-size", "2", "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    latency = result["latency_ms"]
    assert set(latency) >= {"median", "p90", "ci95", "cv", "n"}
    assert latency["ci95"][0] <= latency["median"] <= latency["ci95"][1]
    assert latency["n"] == len(result["latency_samples_ms"]) >= 10
    assert result["latency_protocol"]["batch_size"] == 2 and result["latency_protocol"]["threads"] == 1
    assert result["config"]["keep_rate"] == 0.7
    assert result["accuracy"]["estimator"] == "proxy:dss"
    energy = result["energy"]
    assert energy["status"] in ("measured", "unavailable") and energy["reason"]
    assert (energy["joules_per_call"] is None) == (energy["status"] == "unavailable")
    assert "throttled" in result and "conditions" in result
    assert main([*args, "--no-energy"]) == 0
    skipped = json.loads(capsys.readouterr().out)["energy"]
    assert skipped == {"status": "unavailable", "source": None, "joules_per_call": None,
                       "reason": "energy measurement turned off (--no-energy)", "ci95": None,
                       "idle_power_w": None, "windows": 0, "window_s": None}


def test_measure_estimates_accuracy_only_when_asked_even_without_latency(fast_device_file,
                                                                          monkeypatch, capsys):
    assert main(["measure", "--arch", "deit_tiny", "--accuracy", "proxy:synflow", "--no-latency",
                 "--json"]) == 0
    accuracy = json.loads(capsys.readouterr().out)["accuracy"]
    assert accuracy["estimator"] == "proxy:synflow" and accuracy["value"] > 0

    def never(*args, **kwargs):
        raise AssertionError("no estimator runs unless --accuracy is given")

    monkeypatch.setattr("harness.search.objective.estimate_accuracy", never)
    assert main(["measure", "--arch", "deit_tiny", "--device", str(fast_device_file),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert "accuracy" not in result and result["latency_ms"]["n"] >= 10


def test_devices_lists_every_profile_with_presence_and_reason(capsys):
    assert main(["devices", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["cpu"]["present"] is True and rows["cpu"]["kind"] == "cpu"
    assert all(set(row) >= {"name", "kind", "present", "reason"} and row["reason"]
               for row in rows.values())
    assert main(["devices"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(rows) and any(line.split()[:3] == ["cpu", "cpu", "present"] for line in lines)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "--space", "vit_huge"], "unknown search space 'vit_huge'; valid: deit_small_knobs, deit_small_tokens, vit_small, vit_tiny"),
        (["search", "--device", "tpu_v5"], "unknown device 'tpu_v5'; valid: a100, cpu, h100"),
        (["search", "--budget", "1gigaflop"], "unknown budget unit 'gigaflop'"),
        (["search", "--budget", "fast"], "cannot parse budget 'fast'"),
        (["search", "--budget", "100mflop"], "no configuration of space 'vit_tiny' meets budget '100mflop': the smallest needs 0.572 GMACs"),
        (["search", "--budget", "1mparams"], "no configuration of space 'vit_tiny' meets budget '1mparams'"),
        (["search", "--set", "embed_dims=3"], "unknown configuration key 'embed_dims'"),
        (["search", "--sampler", "cmaes"], "unknown sampler 'cmaes'; valid: tpe, random"),
        (["search", "--accuracy", "proxy:magic"], "unknown accuracy estimator 'proxy:magic'; valid: proxy:NAME (dss"),
        (["search", "--trials", "0"], "--trials must be positive"),
        (["search", "--seed", "-1"], "--seed must be a non-negative integer, got -1"),
        (["search", "--workers", "0"], "--workers must be at least 1, got 0"),
        (["worker", "--study", "s", "--storage", "x.journal", "--trials", "1", "--workers", "2"],
         "unrecognized arguments: --workers 2 (see 'harness worker --help')"),
        (["measure", "--arch", "deit_huge"], "unknown architecture 'deit_huge'; valid: deit_tiny, deit_small, deit_base"),
        (["measure", "--set", "keep_rate=1.5"], r"keep_rate: expected a number in (0, 1]"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["search", "--storage", "bogus://nowhere", "--trials", "1"], "cannot open storage 'bogus://nowhere'"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args, message, capsys):
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("harness: error: ") and captured.err.count("\n") == 1
    assert message in captured.err
    assert captured.out == ""


def test_malformed_space_file_through_the_console_script(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("params:\n  embed_dim: [192, 216\n  depth: 12\n")
    result = _run("search", "--space", str(bad))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"{bad}: line" in result.stderr and "malformed YAML" in result.stderr


def test_help_lists_the_commands():
    result = _run("--help")
    assert result.returncode == 0
    for command in ("search", "measure", "report"):
        assert command in result.stdout
    assert "--budget" in _run("search", "--help").stdout


COMMANDS = ["search", "worker", "measure", "report", "bench-knobs", "devices", "bench", "compare",
            "rank-check", "history", "spaces", "hls show", "hls import", "hls calibrate",
            "hls synth"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_page_renders_its_percent_signs(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command.split(), "--help"])
    assert exit_info.value.code == 0
    page = capsys.readouterr().out
    assert "usage: harness" in page and "%%" not in page


def _wait_for_complete_trials(storage: Path, n: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if storage.exists():
            try:
                study = optuna.load_study(study_name="killme",
                                          storage=optuna.storages.JournalStorage(
                                              optuna.storages.journal.JournalFileBackend(str(storage))))
                if len(study.get_trials(states=(TrialState.COMPLETE,))) >= n:
                    return
            except KeyError:
                pass
        time.sleep(0.2)
    raise AssertionError("the search made no progress")


def _search_args(space: Path, device: Path, out: Path, trials: int) -> list[str]:
    return [sys.executable, "-m", "harness", "search", "--accuracy", "proxy:dss", "--space",
            str(space), "--device", str(device), "--trials", str(trials), "--out", str(out),
            "--study", "killme", "--quiet"]


def _load(out: Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "study.journal")))
    return optuna.load_study(study_name="killme", storage=storage)


def test_sigkill_mid_search_then_the_same_command_resumes(tiny_space_file, fast_device_file, tmp_path):
    out = tmp_path / "out"
    args = _search_args(tiny_space_file, fast_device_file, out, trials=40)
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_complete_trials(out / "study.journal", 3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = _load(out).trials
    before = {t.number: t.values for t in killed if t.state == TrialState.COMPLETE}
    orphans = [t.number for t in killed if t.state == TrialState.RUNNING]

    result = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    study = _load(out)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    for number in orphans:  # the trial the kill interrupted: failed, re-run once, same params
        assert study.trials[number].state == TrialState.FAIL
        assert study.trials[number].user_attrs["interrupted"] is True
        [retry] = [t for t in study.trials if t.user_attrs.get("retry_of") == number]
        assert retry.state == TrialState.COMPLETE
        # a kill while the candidate was being sampled leaves the keys sampled so far: the retry
        # keeps them and samples the rest
        assert study.trials[number].params.items() <= retry.params.items()
    assert {n: study.trials[n].values for n in before} == before
    measured = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(measured) == 40
    assert (out / "report.html").is_file()


def test_sigint_keeps_finished_trials_and_writes_the_report(tiny_space_file, fast_device_file, tmp_path):
    out = tmp_path / "out"
    process = subprocess.Popen(_search_args(tiny_space_file, fast_device_file, out, trials=100_000),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_complete_trials(out / "study.journal", 2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "interrupted; finished trials are kept" in err and "Traceback" not in err
    assert (out / "report.html").is_file() and (out / "pareto.json").is_file()
    assert len(_load(out).get_trials(states=(TrialState.COMPLETE,))) >= 2
    assert os.path.getsize(out / "pareto.json") > 2


def test_measure_a_pareto_entry_from_a_config_file(tmp_path, capsys):
    entry = {"trial": 3, "config": {"embed_dim": 216, "depth": 13, "num_heads": 4, "keep_rate": 0.8}}
    path = tmp_path / "winner.json"
    path.write_text(json.dumps(entry))
    assert main(["measure", "--config", str(path), "--no-latency", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["config"]["embed_dim"] == 216 and result["config"]["keep_rate"] == 0.8
    assert result["gmacs"] == pytest.approx(result["gmacs_fvcore"], rel=0.01)
    path.write_text("embed_dim: 0\n")
    assert main(["measure", "--config", str(path), "--no-latency"]) == 2
    assert f"{path}: embed_dim: expected a positive integer up to 16384, got 0" in capsys.readouterr().err


def test_search_json_summary_and_resume_message(tiny_space_file, fast_device_file, tmp_path, capsys):
    args = ["search", "--accuracy", "proxy:dss", "--space", str(tiny_space_file), "--device",
            str(fast_device_file), "--trials", "2", "--out", str(tmp_path / "out"), "--json"]
    assert main(args) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["report"] == str(tmp_path / "out" / "report.html")
    assert summary["storage"] == str(tmp_path / "out" / "study.journal")
    assert summary["study"] == "tiny-fastcpu" and summary["trials"] >= 2
    assert "resuming" not in captured.err
    more = list(args)
    more[more.index("--trials") + 1] = "3"
    assert main(more) == 0
    assert "resuming with 2 measured trials kept" in capsys.readouterr().err


def test_spaces_lists_the_bundled_spaces(capsys):
    assert main(["spaces", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) >= {"vit_tiny", "vit_small"}
    assert rows["vit_tiny"]["min_gmacs"] == pytest.approx(0.572, abs=0.001)


def test_the_default_accuracy_is_a_supernet_on_mnist(tiny_space_file, fast_device_file, tmp_path,
                                                     monkeypatch, capsys):
    monkeypatch.setattr("harness.accuracy.supernet.DEFAULT_BUDGET", "3steps")  # not 500 steps
    out = tmp_path / "out"
    assert main(["search", "--space", str(tiny_space_file), "--device", str(fast_device_file),
                 "--trials", "2", "--out", str(out), "--quiet", "--json"]) == 0
    trials = json.loads((out / "trials.json").read_text())
    assert trials["metadata"]["estimator"] == "supernet:mnist@3steps"
    accuracies = [t["accuracy"] for t in trials["trials"] if t["state"] == "COMPLETE"]
    assert len(accuracies) == 2
    assert all(a["estimator"] == "supernet:mnist@3steps" and 0 <= a["value"] <= 1 and
               a["heldout_images"] == 1000 for a in accuracies)
    # the report weighs the accuracies' spread against their sampling error
    report = (out / "report.html").read_text()
    assert "accuracy spread" in report and "2 measured candidates span" in report
    assert "paired 95% CI" in report
