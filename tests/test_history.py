"""``harness history``: change points on synthetic series, and the page from synthetic result files.

The series are generated with fixed seeds and several of them per case, so a test passes because
the method works on that kind of series, not because one draw happened to be kind.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from harness.bench.history import HistoryError, change_points, load_annotations, load_results
from harness.report.history import render_history

SEEDS = range(20)
BASE_DATE = datetime(2026, 11, 1, 10, 0, tzinfo=timezone.utc)


def noisy(levels: list[tuple[float, int]], cv: float, seed: int) -> np.ndarray:
    """Per-commit medians: ``count`` commits at each ``level``, times (1 + cv · N(0, 1))."""
    rng = np.random.default_rng(seed)
    clean = np.concatenate([np.full(count, level) for level, count in levels])
    return clean * (1 + cv * rng.standard_normal(len(clean)))


def commit_hash(index: int) -> str:
    return hashlib.sha1(f"commit {index}".encode()).hexdigest()


def write_result(
    directory: Path,
    index: int,
    median: float,
    *,
    entry: str = "deit_tiny-b1",
    fingerprint: str = "3f9a0c1d2e3f4a5b",
    commit: str | None = None,
    commit_date: str | None = "from index",
    run: int = 0,
    **overrides: object,
) -> Path:
    """One ``harness bench`` result file (schema_version 1) for commit number ``index``."""
    created = BASE_DATE + timedelta(days=index, hours=1 + run)
    record = {
        "schema_version": 1, "kind": "harness-bench-result", "suite": "smoke", "entry": entry,
        "device": "cpu", "machine_fingerprint": fingerprint, "host": "runner-1",
        "commit": commit or commit_hash(index),
        "commit_date": ((BASE_DATE + timedelta(days=index)).isoformat()
                        if commit_date == "from index" else commit_date),
        "created": created.isoformat(), "threshold_pct": 5.0, "config": {}, "batch_size": 1,
        "latency_ms": {"median": median, "ci95": [median * 0.98, median * 1.02], "p90": None,
                       "p99": None, "cv": 0.01, "n": 64, "mean": median, "min": median * 0.9,
                       "max": median * 1.2},
        "latency_samples_ms": [median] * 8,
        "energy": {"status": "unavailable", "joules_per_inference": None, "ci95": None,
                   "reason": "no meter", "source": None},
        "environment": {},
        **overrides,
    }
    path = directory / fingerprint[:8] / f"{entry}-{index:03d}-{run}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def write_step_history(directory: Path, seed: int = 0) -> np.ndarray:
    """12 commits, +10% from commit 6 on, 1% run-to-run noise; returns the medians written."""
    medians = noisy([(10.0, 6), (11.0, 6)], cv=0.01, seed=seed)
    for index, median in enumerate(medians):
        write_result(directory, index, float(median))
    return medians


@pytest.mark.parametrize("seed", SEEDS)
def test_a_ten_percent_step_is_found_at_its_commit(seed: int) -> None:
    assert change_points(noisy([(10.0, 6), (11.0, 6)], cv=0.01, seed=seed)) == [6]


def test_a_flat_series_has_no_change_point() -> None:
    assert change_points(noisy([(10.0, 12)], cv=0.01, seed=0)) == []
    # Chance still cuts some flat series: seed 8 draws seven low medians, then five high ones 2.3%
    # higher. With noise at the 2% floor the rate must stay within alpha = 5%.
    for cv, most in ((0.01, 2), (0.02, 10)):
        marked = [seed for seed in range(200)
                  if change_points(noisy([(10.0, 12)], cv=cv, seed=seed))]
        assert len(marked) <= most, (cv, marked)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_significant_step_below_two_percent_is_not_marked(seed: int) -> None:
    # 0.1% noise makes the 1% step significant: only the 2% floor keeps it unmarked
    medians = noisy([(10.0, 6), (10.1, 6)], cv=0.001, seed=seed)
    assert change_points(medians) == []
    assert change_points(medians, min_step=0.005) == [6]


@pytest.mark.parametrize("seed", SEEDS)
def test_two_steps_are_both_found(seed: int) -> None:
    medians = noisy([(10.0, 6), (11.0, 6), (12.1, 6)], cv=0.01, seed=seed)
    assert change_points(medians) == [6, 12]


@pytest.mark.parametrize("seed", SEEDS)
def test_a_regression_that_was_later_fixed_is_found(seed: int) -> None:
    # Up and back down: no single split separates the series, the steps show against neighbours
    medians = noisy([(10.0, 5), (12.0, 7), (10.0, 5)], cv=0.01, seed=seed)
    assert change_points(medians) == [5, 12]


def test_series_too_short_to_split_have_no_change_point() -> None:
    assert change_points([10.0, 10.0, 10.0, 20.0, 20.0]) == []
    assert change_points([]) == []


def test_results_are_loaded_in_commit_date_order_falling_back_to_created(tmp_path: Path) -> None:
    write_result(tmp_path, 2, 12.0)
    write_result(tmp_path, 0, 10.0)
    write_result(tmp_path, 1, 11.0, commit_date=None)  # placed by its run date, between the two
    results, skipped = load_results(tmp_path)
    assert list(results["median"]) == [10.0, 11.0, 12.0]
    assert list(results["commit"]) == [commit_hash(i) for i in range(3)]
    assert {"suite", "entry", "device", "machine_fingerprint", "commit_date", "created", "ci_low",
            "ci_high", "n", "path"} <= set(results.columns)
    assert results["ci_low"][0] == pytest.approx(9.8)
    assert skipped == []


def test_page_shows_the_entry_plot_and_step(tmp_path: Path) -> None:
    results = tmp_path / "results"
    medians = write_step_history(results)
    page = render_history(results, tmp_path / "history.html").read_text()
    step = np.median(medians[6:]) / np.median(medians[:6]) - 1
    assert "deit_tiny-b1" in page
    assert "<img alt='history plot' src='data:image/png;base64," in page
    assert f"step {step:+.1%}" in page  # the change column, at commit 6
    assert re.search(rf"<td>6</td><td>{commit_hash(6)[:10]}</td>.*?step \+", page)
    assert "binary segmentation with Mann-Whitney U, Bonferroni-corrected" in page
    assert "http" not in page


def test_each_machine_is_its_own_series(tmp_path: Path) -> None:
    for index in range(4):
        write_result(tmp_path, index, 10.0)
        write_result(tmp_path, index, 5.0, fingerprint="77aa00bb11cc22dd")
    page = render_history(tmp_path, tmp_path / "out" / "history.html").read_text()
    assert page.count("<img ") == 2
    assert "3f9a0c1d2e3f" in page and "77aa00bb11cc" in page


def test_runs_of_one_commit_are_one_point(tmp_path: Path) -> None:
    write_result(tmp_path, 0, 10.0, run=0)
    write_result(tmp_path, 0, 10.4, run=1)
    write_result(tmp_path, 1, 11.0)
    page = render_history(tmp_path, tmp_path / "history.html").read_text()
    first_row = re.search(rf"<td>0</td><td>{commit_hash(0)[:10]}</td>(.*?)</tr>", page).group(1)
    assert "<td>10.2</td>" in first_row  # the median of the two runs' medians
    assert "<td>128</td><td>2</td>" in first_row  # samples summed, two runs


def test_annotations_appear_on_the_page(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_step_history(results)
    notes = tmp_path / "notes.yaml"
    notes.write_text(
        f"- {{commit: '{commit_hash(6)[:8]}', text: Switched attention to SDPA}}\n"
        "- {date: 2026-11-04, text: Runner moved to a new rack}\n"
        "- {commit: 'abcdef12', text: Only for another entry, entry: vit_base-b8}\n"
    )
    page = render_history(results, tmp_path / "history.html", annotations=notes).read_text()
    assert "Switched attention to SDPA" in page
    assert "Runner moved to a new rack" in page
    # In the table the commit note is on commit 6's row; the date note on the first row of Nov 4
    assert re.search(r"<td>6</td>[^\n]*?<td>Switched attention to SDPA</td></tr>", page)
    assert re.search(r"<td>3</td><td>[0-9a-f]{10}</td><td>2026-11-04[^<]*</td>"
                     r"(<td>[^<]*</td>){5}<td>Runner moved", page)


def test_annotations_are_normalised(tmp_path: Path) -> None:
    notes = tmp_path / "notes.yaml"
    notes.write_text("- {commit: 'ABCD1234', text: ' faster GEMM ', entry: deit_tiny-b1}\n"
                     "- {date: '2026-11-04', text: new runner}\n")
    first, second = load_annotations(notes)
    assert first == {"commit": "abcd1234", "date": None, "text": "faster GEMM",
                     "entry": "deit_tiny-b1"}
    assert str(second["date"]) == "2026-11-04" and second["commit"] is None


@pytest.mark.parametrize(("item", "problem"), [
    ("{commit: 'abcd1234'}", "text must be a non-empty string"),
    ("{commit: 0123456, text: x}", "quoted prefix of 4 to 40 hex digits"),  # YAML reads it as an octal number
    ("{date: 2026-11-04, commit: 'abcd1234', text: x}", "exactly one of commit and date"),
    ("{date: 04.11.2026, text: x}", "date must be YYYY-MM-DD"),
    ("{commit: 'abcd1234', text: x, colour: red}", "unknown key(s) colour"),
    ("just a string", "expected a mapping"),
])
def test_a_malformed_annotation_names_the_file_and_item(
    tmp_path: Path, item: str, problem: str
) -> None:
    notes = tmp_path / "notes.yaml"
    notes.write_text(f"- {{commit: 'abcd1234', text: fine}}\n- {item}\n")
    with pytest.raises(HistoryError) as raised:
        load_annotations(notes)
    assert str(notes) in str(raised.value)
    assert "item 2" in str(raised.value)
    assert problem in str(raised.value)


def test_an_annotations_file_that_is_not_a_list_is_refused(tmp_path: Path) -> None:
    notes = tmp_path / "notes.yaml"
    notes.write_text("commit: 'abcd1234'\ntext: not in a list\n")
    with pytest.raises(HistoryError, match="expected a list"):
        load_annotations(notes)


def test_other_json_files_are_listed_as_skipped_not_fatal(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_step_history(results)
    newer = write_result(results, 99, 10.0, schema_version=3)  # a newer harness's
    (results / "pareto.json").write_text("[]")
    (results / "broken.json").write_text("{not json")
    loaded, skipped = load_results(results)
    reasons = dict(skipped)
    assert len(loaded) == 12
    assert "schema_version 3; this harness reads 1 to 2" in reasons[newer]
    assert "kind is None" in reasons[results / "pareto.json"]
    assert "not readable JSON" in reasons[results / "broken.json"]
    page = render_history(results, tmp_path / "history.html").read_text()
    assert "Skipped files" in page
    assert str(newer.relative_to(results)) in page and "schema_version 3" in page


def test_an_empty_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="no benchmark result file"):
        render_history(tmp_path, tmp_path / "history.html")
    assert not (tmp_path / "history.html").exists()


def test_a_directory_with_only_other_files_is_an_error(tmp_path: Path) -> None:
    write_result(tmp_path, 0, 10.0, kind="something-else")
    with pytest.raises(HistoryError, match=r"1 other \.json file\(s\) skipped"):
        load_results(tmp_path)


def test_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="results directory not found"):
        load_results(tmp_path / "nowhere")
