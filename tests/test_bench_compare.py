"""Benchmark suites, result files and ``harness compare`` on known samples."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.bench.compare import (
    CORRECTED_MEDIANS,
    CORRECTED_SAMPLES_UNTESTED,
    PAIRED,
    RAW_MEDIANS,
    RAW_SAMPLES_UNTESTED,
    REPLICATES_MISSING,
    compare_results,
)
from harness.bench.compare_stats import compare_entries, replicates_needed
from harness.bench.revisions import compare_sequentially
from harness.bench.suites import BenchError, load_results, load_suite, run_suite
from harness.cli import main
from harness.devices import get_device
from harness.records import SCHEMA_VERSION, BenchRunRecord
from harness.report.compare import to_markdown

ENVIRONMENT = {"host": "runner", "machine_fingerprint": "f" * 16, "torch": "2.13.0",
               "cpu": {"model": "EPYC"}, "git_commit": "a" * 40}
BUSY_REASON = "other processes used 1.90 cores over 2.00 s; the measurement left 0 free"


def result(entry: str, samples: list[float], commit: str = "a" * 40, threshold: float = 5.0,
           environment: dict | None = None, factor: float | None = 1.0,
           contended: bool = False, created: str = "2026-11-24T05:00:00+00:00",
           quiet_ms: float = 1.0, probe: str = "vit-12blocks192x197-b1-fp32") -> dict:
    """A result file as ``harness bench`` writes it: raw samples, corrected by ``factor`` (None:
    not drift-corrected) from ``probe`` calibrated at ``quiet_ms``, measured on a busy host when
    ``contended``."""
    environment = environment or ENVIRONMENT
    ordered = sorted(samples)
    raw_median = ordered[len(ordered) // 2]
    corrected = factor is not None
    evidence = {"window_s": 2.0, "others_cores": 1.9 if contended else 0.0, "free_cores": 0,
                "steal_share": 0.0, "probe_slowdown": None, "load_1m": None,
                "other_device_processes": [], "reasons": [BUSY_REASON] if contended else [],
                "contended": contended,
                "busiest": ["python (pid 42) 190% CPU"] if contended else []}
    return {"schema_version": 1, "kind": "harness-bench-result", "suite": "smoke", "entry": entry,
            "device": "cpu", "machine_fingerprint": environment["machine_fingerprint"],
            "host": "runner", "commit": commit, "commit_date": None,
            "created": created, "threshold_pct": threshold, "config": {},
            "batch_size": 1,
            "latency_ms": {"median": raw_median * (factor or 1.0), "drift_corrected": corrected},
            "latency_raw_ms": {"median": raw_median},
            "drift": {"status": "corrected" if corrected else "uncalibrated", "reason": "",
                      "probe": probe, "probe_quiet_ms": quiet_ms, "probe_median_ms": quiet_ms / (factor or 1.0),
                      "factor": factor or 1.0},
            "contention": {"checked": True, "contended": contended, "takes": 2 if contended else 1,
                           "waited_s": 0.0, "evidence": [evidence]},
            "latency_samples_ms": samples, "probe_samples_ms": [], "retaken_samples_ms": [],
            "energy": {"status": "unavailable"}, "environment": environment}


def older_result(entry: str, samples: list[float], commit: str = "a" * 40) -> dict:
    """A result file of a harness from before drift correction and the contention check."""
    newer = result(entry, samples, commit, factor=None)
    return {key: value for key, value in newer.items()
            if key not in ("latency_raw_ms", "drift", "contention", "probe_samples_ms",
                           "retaken_samples_ms")}


def records(results: list[dict]) -> list[BenchRunRecord]:
    """``results`` as ``harness compare`` reads them from their files."""
    return [BenchRunRecord.from_json(values, "test") for values in results]


def write(directory: Path, *results: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for index, item in enumerate(results):
        (directory / f"{item['entry']}-{index}.json").write_text(json.dumps(item))
    return directory


BASE_SAMPLES = [10.0 + 0.01 * i for i in range(30)]
REPLICATES = 6  # runs a side: Mann-Whitney's smallest p, Holm-corrected for two entries, < 0.01


def runs(entry: str, scale: float = 1.0, count: int = REPLICATES, **options) -> list[dict]:
    """``count`` runs of one entry, each a little slower than the last (the host's drift)."""
    return [result(entry, [scale * (s + 0.02 * run) for s in BASE_SAMPLES], **options)
            for run in range(count)]


def test_markdown_comment_matches_the_expected_text(tmp_path):
    base = [*runs("tiny"), *runs("small")]
    head = [*runs("tiny", 1.10, commit="b" * 40), *runs("small", commit="b" * 40)]
    assert to_markdown(compare_results(records(base), records(head))) == EXPECTED_MARKDOWN


EXPECTED_MARKDOWN = """\
### Benchmark comparison: **1 regression(s)** in 2 entries (1 regression, 0 improvement, 0 \
noisy, 1 unchanged, 0 replicates missing)

Base aaaaaaaaaaaa → head bbbbbbbbbbbb. A change counts when it is significant (Holm-corrected \
p < 0.01) and at least the entry's threshold; *noisy* entries cannot rule out a change beyond it. \
*compared*: drift-corrected figures are raw latencies times the reference probe's quiet time \
over its time beside the run; with 5 or more runs a side, each run's median is one replicate, \
tested with Mann-Whitney U, or, *paired by round* where base and head alternated in one job, with \
a t-test of the per-round ratios (Δ their geometric mean); with fewer, nothing is decided.

| entry | metric | compared | base | head | Δ% [95% CI] | p (Holm) | threshold | decision |
|---|---|---|---|---|---|---|---|---|
| smoke/tiny@cpu | latency median (ms) | drift-corrected run medians | 10.200 | 11.220 | +10.0% \
[+9.4%, +10.6%] | 0.0043 | 5% | regression |

<details><summary>1 unchanged</summary>

| entry | metric | compared | base | head | Δ% [95% CI] | p (Holm) | threshold | decision |
|---|---|---|---|---|---|---|---|---|
| smoke/small@cpu | latency median (ms) | drift-corrected run medians | 10.200 | 10.200 | +0.0% \
[-0.6%, +0.6%] | 1 | 5% | unchanged |

</details>

Environment: identical (hardware, software and settings).
"""


def test_five_runs_a_side_are_compared_run_by_run():
    base = [result("tiny", [10.0 + run * 0.05 + 0.001 * i for i in range(20)]) for run in range(5)]
    head = [result("tiny", [10.02 + run * 0.05 + 0.001 * i for i in range(20)]) for run in range(5)]
    [entry] = compare_results(records(base), records(head)).entries
    assert (entry.n_base, entry.n_head) == (5, 5)  # one replicate per run, not 100 samples
    assert entry.decision == "unchanged" and entry.figures == CORRECTED_MEDIANS


@pytest.mark.parametrize(("entries", "runs_needed"), [(1, 5), (3, 6), (4, 6), (5, 7), (17, 7),
                                                     (18, 8)])
def test_replicates_needed_let_a_change_be_significant_after_holm(entries, runs_needed):
    assert replicates_needed(entries) == runs_needed
    apart = [1.0 + r for r in range(runs_needed)], [100.0 + r for r in range(runs_needed)]
    [entry] = compare_entries({"x": apart})
    assert entry.p_value * entries < 0.01  # the sides fully apart reach significance
    if runs_needed > 5:  # compare_entries needs 5 samples a side
        [fewer] = compare_entries({"x": (apart[0][1:], apart[1][1:])})
        assert fewer.p_value * entries >= 0.01


def test_too_few_replicates_for_holm_are_said():
    base = [*runs("tiny", count=5), *runs("small", count=5)]
    head = [*runs("tiny", 1.10, count=5, commit="b" * 40),
            *runs("small", count=5, commit="b" * 40)]
    comparison = compare_results(records(base), records(head))
    assert [e.decision for e in comparison.entries] != ["regression"] * 2
    assert comparison.regressions == []  # 5 a side over 2 entries: the smallest p is 0.016
    assert any("With fewer than 6 runs a side, no change of the 2 entries compared can be "
               "significant" in note for note in comparison.notes())


# The host's speed in six rounds of a --base-rev/--head-rev job: it drifts by up to 20% between
# rounds, far more than a 5% change, and alike for the two runs of a round.
ROUND_SPEEDS = [1.0, 1.2, 0.95, 1.1, 0.9, 1.15]


def alternating_rounds(head_scale: float, order: str = "ABBA", rounds: int = 6,
                       round_noise: float = 1.0) -> tuple[list[dict], list[dict]]:
    """Runs of one entry as ``--base-rev/--head-rev`` writes them: rounds of base then head, or
    head then base (``order`` "ABBA"), a minute apart; or all base runs then all head runs
    (``order`` "AABB"). The host's speed cycles through ``ROUND_SPEEDS``; the head runs of
    alternate rounds are ``round_noise`` times slower and faster (noise within a round)."""
    base, head = [], []
    for index in range(rounds):
        speed = ROUND_SPEEDS[index % len(ROUND_SPEEDS)]
        base_first = order == "AABB" or index % 2 == 0
        noise = round_noise if index % 2 else 1 / round_noise
        for side, scale in (("base", 1.0), ("head", head_scale * noise)):
            if order == "ABBA":
                minute = 2 * index + (0 if (side == "base") == base_first else 1)
            else:
                minute = index + (rounds if side == "head" else 0)
            samples = [speed * scale * s for s in BASE_SAMPLES]
            run = result("tiny", samples, commit="a" * 40 if side == "base" else "b" * 40,
                         created=f"2026-11-24T05:{minute:02d}:00+00:00")
            (base if side == "base" else head).append(run)
    return base, head


def test_runs_alternating_round_by_round_are_compared_paired():
    base, head = alternating_rounds(1.05)
    [entry] = compare_results(records(base), records(head)).entries
    assert entry.figures == CORRECTED_MEDIANS + PAIRED
    assert entry.decision == "regression" and entry.delta_pct == pytest.approx(5.0, abs=0.01)
    # unpaired, the same medians overlap: the host's drift between rounds hides the change
    [unpaired] = compare_entries({"x": ([r["latency_ms"]["median"] for r in base],
                                        [r["latency_ms"]["median"] for r in head])})
    assert unpaired.decision != "regression"


def test_an_alternating_a_a_job_is_unchanged_despite_drift_between_rounds():
    base, head = alternating_rounds(1.0)
    [entry] = compare_results(records(base), records(head)).entries
    assert entry.figures == CORRECTED_MEDIANS + PAIRED and entry.decision == "unchanged"


def test_a_noisy_paired_entry_says_how_many_rounds_would_resolve_it():
    base, head = alternating_rounds(1.0, round_noise=1.08)  # a round's runs 8% apart, either way
    comparison = compare_results(records(base), records(head))
    [entry] = comparison.entries
    assert entry.decision == "noisy" and entry.round_ratio_sd == pytest.approx(0.0843, abs=1e-3)
    [advice] = [note for note in comparison.notes() if "rounds would find" in note]
    assert advice.startswith("smoke/tiny@cpu: its 6 rounds' ratios scatter by 8.8% (one standard "
                             "deviation), too much to resolve a 5% change; about ")
    assert advice.endswith(" rounds would find one with 80% probability at p < 0.01 "
                           "(`--rounds N`, `--max-rounds N`)")


class RecordedRounds:
    """Stands in for ``InterleavedRevisions`` (installing and benchmarking two revisions takes
    minutes): it hands out the runs of ``alternating_rounds`` as rounds are asked for."""

    def __init__(self, head_scale: float, round_noise: float) -> None:
        self.base, self.head = alternating_rounds(head_scale, rounds=40, round_noise=round_noise)
        self.rounds, self.asked = 0, []

    def run_until(self, rounds: int) -> None:
        self.asked.append(rounds)
        self.rounds = max(self.rounds, rounds)

    def compare(self, alpha: float):
        return compare_results(records(self.base[:self.rounds]),
                               records(self.head[:self.rounds]), alpha=alpha)


def test_a_change_noisy_after_the_first_rounds_is_resolved_by_more_rounds():
    # 6% slower, the rounds' ratios 3% apart either way: after 6 rounds the interval still
    # reaches from under 0 past the 5% threshold
    six = RecordedRounds(1.06, round_noise=1.03)
    six.run_until(6)
    first_look = six.compare(0.005)
    rounds = RecordedRounds(1.06, round_noise=1.03)
    comparison = compare_sequentially(rounds, 6, 20, rounds.compare)
    [entry] = comparison.entries
    assert first_look.entries[0].decision == "noisy"
    needed = first_look.rounds_needed(first_look.entries[0])
    assert 6 < needed < 20 and rounds.asked == [6, needed]
    assert entry.decision == "regression" and entry.n_base == needed
    assert comparison.alpha == 0.005 and comparison.sequential.looks == 2
    assert comparison.notes()[0] == (
        f"Rounds: 6, then {needed - 6} more (at most 20): smoke/tiny@cpu noisy after 6. Each "
        "look at the data (2 at most) tests at p < 0.005, so the chance of any false alarm stays "
        "under 0.01.")


def test_more_rounds_stop_at_the_cap_and_are_not_run_for_a_decided_entry():
    noisy = RecordedRounds(1.0, round_noise=1.15)
    [entry] = compare_sequentially(noisy, 6, 20, noisy.compare).entries
    assert noisy.asked == [6, 20] and entry.decision == "noisy" and entry.n_base == 20
    quiet = RecordedRounds(1.0, round_noise=1.001)
    comparison = compare_sequentially(quiet, 6, 20, quiet.compare)
    assert quiet.asked == [6] and comparison.entries[0].decision == "unchanged"
    assert comparison.notes()[0].startswith("Rounds: 6 (up to 20 while an entry is noisy: none "
                                            "was).")
    # no more rounds allowed: one look, at the full level
    single = RecordedRounds(1.0, round_noise=1.08)
    comparison = compare_sequentially(single, 6, 6, single.compare)
    assert single.asked == [6] and comparison.alpha == 0.01
    assert comparison.notes()[0] == "Rounds: 6 a side."


def test_runs_not_alternating_in_time_are_compared_unpaired():
    base, head = alternating_rounds(1.05, order="AABB")
    [entry] = compare_results(records(base), records(head)).entries
    assert entry.figures == CORRECTED_MEDIANS  # six base runs, then six head runs
    same_time = [result("tiny", BASE_SAMPLES) for _ in range(5)]  # times equal: order unknown
    [entry] = compare_results(records(same_time), records(same_time)).entries
    assert entry.figures == CORRECTED_MEDIANS


def test_runs_corrected_by_different_calibrations_are_brought_to_one():
    # Head's probe was calibrated 1.5x slower (retaken in a slow phase of the host): its corrected
    # medians read 1.5x base's for the same raw latency and probe time.
    base = [result("tiny", BASE_SAMPLES, factor=1.0, quiet_ms=1.0) for _ in range(6)]
    head = [result("tiny", BASE_SAMPLES, factor=1.5, quiet_ms=1.5, commit="b" * 40)
            for _ in range(6)]
    assert head[0]["latency_ms"]["median"] == 1.5 * base[0]["latency_ms"]["median"]
    [entry] = compare_results(records(base), records(head)).entries
    assert entry.figures == CORRECTED_MEDIANS
    assert entry.delta_pct == pytest.approx(0.0) and entry.decision == "unchanged"


def test_runs_corrected_by_different_probes_are_compared_raw():
    # Base's int8 runs were corrected by the fp32 probe (before probes followed the precision),
    # head's by the int8 one, which runs in 0.8 of its time: the same raw latencies on a host
    # as slow (factor 0.9 by either probe), but rescaling head's corrected medians by base's
    # quiet time over its own would read them 25% slower.
    base = [result("int8", BASE_SAMPLES, factor=0.9, quiet_ms=2.5) for _ in range(6)]
    head = [result("int8", BASE_SAMPLES, factor=0.9, quiet_ms=2.0, commit="b" * 40,
                   probe="vit-12blocks192x197-b1-int8") for _ in range(6)]
    [entry] = compare_results(records(base), records(head)).entries
    assert entry.figures == RAW_MEDIANS
    assert entry.delta_pct == pytest.approx(0.0) and entry.decision == "unchanged"


def test_times_without_an_offset_are_read_as_utc_and_still_pair():
    base, head = alternating_rounds(1.05)
    for run in head:  # a hand-made head side, its times written without the UTC offset
        run["created"] = run["created"].removesuffix("+00:00")
    [entry] = compare_results(records(base), records(head)).entries
    assert entry.figures == CORRECTED_MEDIANS + PAIRED and entry.decision == "regression"


def test_run_medians_are_compared_raw_when_any_run_lacks_a_correction():
    # Head's runs were corrected by 0.8 (the host ran slow that day); base's files predate drift
    # correction. Corrected head medians against raw base ones would read as a 20% improvement.
    samples = [[10.0 + run * 0.05 + 0.001 * i for i in range(20)] for run in range(5)]
    base = [older_result("tiny", run_samples) for run_samples in samples]
    head = [result("tiny", run_samples, commit="b" * 40, factor=0.8) for run_samples in samples]
    [entry] = compare_results(records(base), records(head)).entries
    assert entry.figures == RAW_MEDIANS and entry.decision == "unchanged"


def test_one_run_a_side_is_never_decided_and_shows_drift_corrected_figures():
    # The host ran 15% slower during head's run; the probe saw it and its factor cancels it in
    # the figures shown, but one run a side cannot rule out drift the probe missed: no decision.
    base = [result("tiny", BASE_SAMPLES, factor=1.0)]
    head = [result("tiny", [1.15 * s for s in BASE_SAMPLES], commit="b" * 40, factor=0.87)]
    [entry] = compare_results(records(base), records(head)).entries
    assert entry.figures == CORRECTED_SAMPLES_UNTESTED and entry.decision == REPLICATES_MISSING
    assert abs(entry.delta_pct) < 0.1 and entry.p_adjusted is None
    assert (entry.n_base, entry.n_head, entry.base_runs, entry.head_runs) == (30, 30, 1, 1)
    # what pooling the raw samples, as before, made of the same runs
    [raw] = compare_entries({"tiny": (BASE_SAMPLES, [1.15 * s for s in BASE_SAMPLES])})
    assert raw.decision == "regression"


@pytest.mark.parametrize("base_factor", [None, 1.0], ids=["neither corrected", "head only"])
def test_one_run_a_side_without_drift_correction_is_never_a_regression(base_factor, tmp_path,
                                                                        capsys):
    base = write(tmp_path / "base", result("tiny", BASE_SAMPLES, factor=base_factor))
    head = write(tmp_path / "head", result("tiny", [1.15 * s for s in BASE_SAMPLES],
                                           commit="b" * 40, factor=None))
    assert main(["compare", str(base), str(head), "--fail-on-regression"]) == 0
    out = capsys.readouterr().out
    assert ("| raw samples, not tested | 10.145 | 11.667 | +15.0% | — | 5% | replicates "
            "missing |") in out
    assert "Replicates missing:" in out and "`harness compare --base-rev BASE --head-rev HEAD`" \
        in out and "--rounds 6" in out
    assert main(["compare", str(base), str(head), "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    [entry] = document["entries"]
    assert entry["decision"] == REPLICATES_MISSING and entry["figures"] == RAW_SAMPLES_UNTESTED
    assert entry["ci95_pct"] is None and entry["p_adjusted"] is None
    assert document["verdict"].startswith("No regression found; 1 undecided (replicates missing)")


def test_runs_on_a_busy_host_are_left_out_and_listed_unless_included(tmp_path, capsys):
    slow = [30 * s for s in BASE_SAMPLES]  # threads spinning beside another busy process
    base = write(tmp_path / "base", result("tiny", BASE_SAMPLES), result("small", BASE_SAMPLES))
    head = write(tmp_path / "head", result("tiny", BASE_SAMPLES, commit="b" * 40),
                 result("tiny", slow, commit="b" * 40, contended=True),
                 result("small", slow, commit="b" * 40, contended=True))
    assert main(["compare", str(base), str(head), "--fail-on-regression"]) == 0
    out = capsys.readouterr().out
    assert ("| smoke/tiny@cpu | latency median (ms) | drift-corrected samples, not tested | "
            "10.145 | 10.145 |") in out  # the quiet head run only
    assert "**Not comparable: measured on a busy host (left out; --include-contended compares " \
        "them)**" in out
    assert f"- head smoke/small@cpu ({head / 'small-2.json'}): {BUSY_REASON}" in out
    assert f"- head smoke/tiny@cpu ({head / 'tiny-1.json'}): {BUSY_REASON}" in out
    assert "Not compared, no run left on one side once runs on a busy host were left out: " \
        "smoke/small@cpu" in out
    assert main(["compare", str(base), str(head), "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in document["entries"]] == ["smoke/tiny@cpu"]
    assert document["not_compared"] == ["smoke/small@cpu"]
    busy_runs = document["busy_host_runs"]
    assert [(r["side"], r["entry"], r["reasons"], r["status"]) for r in busy_runs] == [
        ("head", "smoke/small@cpu", [BUSY_REASON], "not comparable: measured on a busy host"),
        ("head", "smoke/tiny@cpu", [BUSY_REASON], "not comparable: measured on a busy host")]
    assert document["verdict"].endswith("; 2 run(s) left out, measured on a busy host")
    assert main(["compare", str(base), str(head), "--format", "html"]) == 0
    assert "Not comparable: measured on a busy host" in capsys.readouterr().out

    assert main(["compare", str(base), str(head), "--include-contended", "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert {e["name"]: e["head_runs"] for e in document["entries"]} == {
        "smoke/small@cpu": 1, "smoke/tiny@cpu": 2}
    assert document["not_compared"] == [] and all(
        r["status"] == "measured on a busy host, compared anyway (--include-contended)"
        for r in document["busy_host_runs"])


def test_older_result_files_load_as_raw_with_contention_unknown(tmp_path):
    base = write(tmp_path / "base", *[older_result("tiny", BASE_SAMPLES) for _ in range(5)],
                 older_result("small", BASE_SAMPLES))
    head = write(tmp_path / "head", *[older_result("tiny", BASE_SAMPLES, "b" * 40)
                                      for _ in range(5)],
                 older_result("small", [1.2 * s for s in BASE_SAMPLES], "b" * 40))
    comparison = compare_results(load_results(base), load_results(head))
    outcomes = {e.name: (e.figures, e.decision) for e in comparison.entries}
    assert outcomes == {"smoke/small@cpu": (RAW_SAMPLES_UNTESTED, REPLICATES_MISSING),
                        "smoke/tiny@cpu": (RAW_MEDIANS, "unchanged")}
    assert comparison.busy_runs == [] and comparison.unchecked_runs == 12
    assert any("12 run(s) carry no contention check" in note for note in comparison.notes())


def test_cli_flags_regressions_warns_across_machines_and_writes_each_format(tmp_path, capsys):
    other = {**ENVIRONMENT, "machine_fingerprint": "e" * 16, "cpu": {"model": "Xeon"}}
    base = write(tmp_path / "base", *runs("tiny"))
    head = write(tmp_path / "head", *runs("tiny", 1.2, environment=other))
    assert main(["compare", str(base), str(head)]) == 0
    captured = capsys.readouterr()
    assert "WARNING: base and head were measured on different machines" in captured.err
    assert "`cpu.model`: EPYC → Xeon" in captured.out and "| regression |" in captured.out
    assert main(["compare", str(base), str(head), "--fail-on-regression"]) == 1
    capsys.readouterr()
    assert main(["compare", str(base), str(head), "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["entries"][0]["decision"] == "regression" and document["warning"]
    out = tmp_path / "comparison.html"
    assert main(["compare", str(base), str(head), "--format", "html", "--out", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>") and "regression" in out.read_text()


@pytest.mark.parametrize(("make", "message"), [
    (lambda tmp: [tmp / "missing", tmp / "missing"], "missing: no such file"),
    (lambda tmp: [write(tmp / "empty", ), write(tmp / "empty")], "no benchmark result files"),
    (lambda tmp: [write(tmp / "old", {**result("tiny", BASE_SAMPLES), "schema_version": 9}),
                  write(tmp / "new", result("tiny", BASE_SAMPLES))], "schema_version 9"),
    (lambda tmp: [write(tmp / "a", result("tiny", BASE_SAMPLES)),
                  write(tmp / "b", result("small", BASE_SAMPLES))], "no entry is in both base"),
    (lambda tmp: [write(tmp / "a", result("tiny", BASE_SAMPLES)),
                  write(tmp / "b", result("tiny", BASE_SAMPLES)), "--max-rounds", "9"],
     "--rounds and --max-rounds go with --base-rev and --head-rev"),
])
def test_cli_errors_are_one_line_with_exit_code_2(make, message, tmp_path, capsys):
    base, head, *options = make(tmp_path)
    assert main(["compare", str(base), str(head), *options]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_bundled_suites_load():
    smoke = load_suite("smoke")
    assert [e.name for e in smoke.entries] == ["deit_tiny", "deit_tiny-tome8", "deit_tiny-int8"]
    assert smoke.entries[1].config.merge_r == 8 and smoke.entries[2].threshold_pct == 8.0
    assert len(load_suite("nightly").entries) == 10


@pytest.mark.parametrize(("text", "message"), [
    ("name: s\nentries: []\n", "entries: the suite has no entries"),
    ("name: s\nentries: [{name: a, arch: deit_tiny, colour: red}]\n", "unknown key 'colour'"),
    ("name: s\nentries: [{name: a, arch: deit_tiny}, {name: a, arch: deit_small}]\n",
     "entry name 'a' appears twice"),
    ("name: s\nentries: [{name: a, arch: deit_tiny, config: {depth: 2}}]\n",
     r"entries\[0\]: give exactly one of arch, config, pareto"),
    ("name: s\nentries: [{name: a, arch: deit_tiny, threshold_pct: -1}]\n",
     r"entries\[0\].threshold_pct: expected a positive number"),
    ("name: s\nentries: [{name: a, arch: deit_tiny, set: {merge_r: 999}}]\n", "merge_r"),
])
def test_malformed_suites_name_the_file_and_key(text, message, tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    with pytest.raises(BenchError, match=message):
        load_suite(str(path))


def test_a_study_front_becomes_suite_entries(tmp_path):
    front = [{"trial": 3, "config": {"depth": 2, "embed_dim": 64}},
             {"trial": 7, "config": {"depth": 3, "embed_dim": 64}}]
    (tmp_path / "pareto.json").write_text(json.dumps(front))
    (tmp_path / "suite.yaml").write_text("name: s\nentries: [{name: won, pareto: pareto.json}]\n")
    entries = load_suite(str(tmp_path / "suite.yaml")).entries
    assert [(e.name, e.config.depth) for e in entries] == [("won-trial3", 2), ("won-trial7", 3)]


TINY_SUITE = """\
name: tiny
entries:
  - {name: small, config: {embed_dim: 32, depth: 2, num_heads: 2, head_dim: 16, patch_size: 8,
                           img_size: 32, num_classes: 10}}
  - {name: small-tome, config: {embed_dim: 32, depth: 2, num_heads: 2, head_dim: 16,
                                patch_size: 8, img_size: 32, num_classes: 10}, set: {merge_r: 2}}
"""


def test_bench_stores_one_file_per_entry_and_run_and_never_overwrites(tmp_path, fast_device_file):
    (tmp_path / "tiny.yaml").write_text(TINY_SUITE)
    suite, device = load_suite(str(tmp_path / "tiny.yaml")), get_device(str(fast_device_file))
    order = []
    first = run_suite(suite, device, tmp_path / "out", rounds=2,
                      on_result=lambda entry, path, result: order.append(entry.name))
    assert order == ["small", "small-tome", "small-tome", "small"]  # interleaved, rotating
    second = run_suite(suite, device, tmp_path / "out", entries=["small"])
    assert len(set(first + second)) == 5 and all(p.is_file() for p in first + second)
    stored = json.loads(second[0].read_text())
    assert second[0].parent.name == "tiny" and stored["schema_version"] == SCHEMA_VERSION
    assert stored["entry"] == "small" and len(stored["latency_samples_ms"]) >= 10
    # nothing measured is lost: the raw figure, the correction, the host's evidence, every take
    assert stored["latency_raw_ms"]["n"] == len(stored["latency_samples_ms"])
    assert stored["drift"]["status"] in ("corrected", "uncalibrated")
    assert stored["contention"]["checked"] and stored["contention"]["evidence"]
    assert len(stored["retaken_samples_ms"]) == stored["contention"]["takes"] - 1
    assert len(stored["probe_samples_ms"]) == stored["drift"]["probe_samples"]
    assert stored["environment"]["machine_fingerprint"] == stored["machine_fingerprint"]
    assert len(load_results(tmp_path / "out")) == 5
    with pytest.raises(BenchError, match="suite 'tiny' has no entry 'big'; entries: small"):
        run_suite(suite, device, tmp_path / "out", entries=["big"])


def test_suite_entries_can_run_a_pretrained_checkpoint(tmp_path, fast_device_file):
    from harness.models import build_model

    suite_text = TINY_SUITE.replace("name: tiny\n", "name: tiny\ndefaults: {weights: w/small.pth}\n")
    small = load_suite_config_of(TINY_SUITE, tmp_path)
    trained = {name: tensor + 0.5 for name, tensor in build_model(small).state_dict().items()}
    (tmp_path / "w").mkdir()
    torch.save({"model": {**trained, "head.weight": trained["head.weight"][:4],
                          "head.bias": trained["head.bias"][:4]}}, tmp_path / "w" / "small.pth")
    (tmp_path / "tiny.yaml").write_text(suite_text)
    suite = load_suite(str(tmp_path / "tiny.yaml"))
    assert [e.config.num_classes for e in suite.entries] == [4, 4]  # from the checkpoint's head
    assert suite.entries[0].weights is suite.entries[1].weights  # read once
    [path] = run_suite(suite, get_device(str(fast_device_file)), tmp_path / "out",
                       entries=["small"])
    stored = json.loads(path.read_text())
    assert stored["weights"]["sha256"] == suite.entries[0].weights.sha256
    (tmp_path / "w" / "small.pth").write_bytes(b"garbage")
    with pytest.raises(BenchError, match=r"entries\[0\]: checkpoint .*small\.pth: not a state "
                                         r"dict of tensors"):
        load_suite(str(tmp_path / "tiny.yaml"))


def load_suite_config_of(text: str, tmp_path: Path):
    (tmp_path / "plain.yaml").write_text(text)
    return load_suite(str(tmp_path / "plain.yaml")).entries[0].config


def test_a_killed_write_leaves_no_partial_result(tmp_path):
    target = tmp_path / "results" / "entry.json"
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys; from pathlib import Path; from harness.files import write_atomically; "
        f"write_atomically(Path({str(target)!r}), 'x' * 2_000_000_000)")])
    deadline = time.monotonic() + 60
    while not any(target.parent.glob(".entry.json.*")) and time.monotonic() < deadline:
        time.sleep(0.01)
    writer.kill()
    writer.wait()
    assert not target.exists()  # only the hidden temporary file was being written
    write(target.parent, result("tiny", BASE_SAMPLES))
    assert [r.entry for r in load_results(target.parent)] == ["tiny"]  # temp file ignored


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs the git repository")
def test_compare_revisions_installs_both_and_benchmarks_them_interleaved(
        tmp_path, fast_device_file, capsys, monkeypatch):
    (tmp_path / "tiny.yaml").write_text(TINY_SUITE)
    monkeypatch.chdir(REPO)
    args = ["compare", "--base-rev", "HEAD", "--head-rev", "HEAD", "--rounds", "2",
            "--suite", str(tmp_path / "tiny.yaml"), "--device", str(fast_device_file),
            "--results", str(tmp_path / "results"), "--format", "json"]
    assert main(args) == 0
    captured = capsys.readouterr()
    rounds = [line for line in captured.err.splitlines() if "round" in line]
    assert [line.split(": ")[2].split()[0] for line in rounds] == ["base", "head", "head", "base"]
    document = json.loads(captured.out)
    assert {e["name"] for e in document["entries"]} == {"tiny/small@fastcpu",
                                                         "tiny/small-tome@fastcpu"}
    assert len(load_results(tmp_path / "results" / "head")) == 4  # 2 entries × 2 rounds
    # two rounds are too few to test: nothing noisy asked for more
    assert document["rounds"] == {"first": 2, "total": 2, "max_rounds": 20,
                                  "noisy_after_first": [], "looks": 2}
    assert main([*args[:-4], "--max-rounds", "1", "--results", str(tmp_path / "more")]) == 2
    assert capsys.readouterr().err.strip() == (
        "harness: error: --max-rounds 1 is below the 2 rounds run first; give 2 or more (2: no "
        "rounds beyond them)")
    assert main(["compare", "--base-rev", "no-such-rev", "--head-rev", "HEAD",
                 "--results", str(tmp_path / "other")]) == 2
    assert "unknown revision 'no-such-rev'" in capsys.readouterr().err


def test_bench_cli_refuses_an_empty_suite_in_one_line(tmp_path, capsys):
    (tmp_path / "empty.yaml").write_text("name: empty\nentries: []\n")
    assert main(["bench", "--suite", str(tmp_path / "empty.yaml"), "--out",
                 str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "entries: the suite has no entries" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_bench_refuses_a_runtime_the_device_does_not_run_before_timing(tmp_path,
                                                                        fast_device_file, capsys):
    (tmp_path / "tiny.yaml").write_text(TINY_SUITE.replace("set: {merge_r: 2}",
                                                           "set: {runtime: compile}"))
    assert main(["bench", "--suite", str(tmp_path / "tiny.yaml"), "--device",
                 str(fast_device_file), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "does not run runtime compile (its profile lists: eager)" in err
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_bench_says_at_once_that_a_run_on_a_busy_host_is_not_comparable(
        tmp_path, fast_device_file, capsys, monkeypatch):
    import harness.bench.suites

    (tmp_path / "tiny.yaml").write_text(TINY_SUITE)
    busy = {**result("small", BASE_SAMPLES, contended=True),
            "latency_ms": {"median": 10.1, "ci95": [10.0, 10.2], "n": 30, "drift_corrected": True}}

    def one_busy_run(suite, device, out_dir, entries, rounds, on_result):
        on_result(suite.entries[0], out_dir / "small.json", BenchRunRecord.from_json(busy, "busy"))
        return [out_dir / "small.json"]

    monkeypatch.setattr(harness.bench.suites, "run_suite", one_busy_run)
    assert main(["bench", "--suite", str(tmp_path / "tiny.yaml"), "--device",
                 str(fast_device_file), "--out", str(tmp_path / "out"), "--entry", "small"]) == 0
    captured = capsys.readouterr()
    assert (f"[1/1] small: 10.100 ms [10.000, 10.200] n=30 drift-corrected → "
            f"{tmp_path / 'out' / 'small.json'}  HOST BUSY after 2 take(s): {BUSY_REASON} "
            "(busiest: python (pid 42) 190% CPU); not comparable, 'harness compare' leaves it "
            "out") in captured.err
    assert "1 measured on a busy host, not comparable" in captured.out
