"""Benchmark history: how each suite entry's latency moved over commits (rendered as one HTML
page by ``harness.report.history``).

``harness bench`` writes one JSON result per (machine, commit, suite entry, run). Comparing two
results says whether one commit is slower than another; the history says *when* latency stepped,
so a regression can be traced to its commit even when nobody compared at the time. Steps are found
by a named, standard change-point method (``change_points``) rather than by eye, and the page
states the method and its parameters, so a reader can judge what a marked step means.
"""

from __future__ import annotations

import datetime
import itertools
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from harness.errors import HarnessError, shorten
from harness.files import read_text
from harness.records import BENCH_RESULT_KIND, SCHEMA_VERSION, BenchRunRecord, read_bench_results
from harness.yaml_files import parse_yaml

UNKNOWN_COMMIT = "unknown"
SERIES_KEYS = ["suite", "entry", "device", "machine_fingerprint"]

# Change-point defaults. With one median per commit the exact Mann-Whitney p-value cannot go below
# 2 / C(n, n/2): 0.0022 for 6 commits against 6, so a stricter alpha would mark nothing in a
# short history. 0.05 after the Bonferroni factor finds a clean step in the middle of 10 commits.
MIN_SEGMENT_POINTS = 3
CHANGE_ALPHA = 0.05
MIN_RELATIVE_STEP = 0.02  # steps smaller than run-to-run noise on most hosts are not worth marking

class HistoryError(HarnessError):
    """The results directory or the annotations file cannot be used for a history."""


class _Unusable(Exception):
    """A ``.json`` file under the results directory that is not a usable result (it is skipped)."""


def load_results(directory: Path) -> tuple[pd.DataFrame, list[tuple[Path, str]]]:
    """One row per result file under ``directory`` (any depth), oldest first, and the skipped
    ``.json`` files with the reason each was skipped.

    Points are ordered by ``time``: the commit date, or the run's ``created`` date where the commit
    date is unknown (ties: ``created``, then path). Raises HistoryError when no file is a result.
    """
    if not directory.is_dir():
        raise HistoryError(f"results directory not found: {directory}")
    results, skipped = read_bench_results(directory)
    rows: list[dict[str, Any]] = []
    for result in results:
        try:
            rows.append(_result_row(result))
        except _Unusable as reason:
            skipped.append((Path(result.path), str(reason)))
    if not rows:
        others = f"; {len(skipped)} other .json file(s) skipped" if skipped else ""
        raise HistoryError(
            f"{directory}: no benchmark result file (kind {BENCH_RESULT_KIND!r}, "
            f"schema_version {SCHEMA_VERSION}){others}"
        )
    rows.sort(key=lambda row: (row["time"], row["created"], str(row["path"])))
    return pd.DataFrame(rows), sorted(skipped)


def _result_row(result: BenchRunRecord) -> dict[str, Any]:
    latency = result.measurement.latency
    if not _is_number(latency.median) or not math.isfinite(latency.median) or latency.median <= 0:
        raise _Unusable(f"latency_ms.median is {shorten(latency.median)}, not a positive number")
    ci95 = latency.ci95
    if ci95 is not None and not (len(ci95) == 2 and all(_is_number(v) for v in ci95)):
        raise _Unusable(f"latency_ms.ci95 is {shorten(list(ci95))}, not [low, high]")
    if not isinstance(latency.n, int) or isinstance(latency.n, bool):
        raise _Unusable(f"latency_ms.n is {shorten(latency.n)}, not an integer")
    created = _timestamp(result.created, "created")
    commit_date = (None if result.commit_date is None
                   else _timestamp(result.commit_date, "commit_date"))
    low, high = ci95 if ci95 is not None else (math.nan, math.nan)
    return {
        **{key: _text(result, key) for key in (*SERIES_KEYS, "commit")},
        "host": result.host or "",
        "commit_date": commit_date,
        "created": created,
        "time": commit_date if commit_date is not None else created,
        "median": float(latency.median),
        "ci_low": float(low),
        "ci_high": float(high),
        "n": latency.n,
        "path": Path(result.path),
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(result: BenchRunRecord, key: str) -> str:
    value = getattr(result, key)
    if not isinstance(value, str) or not value:
        raise _Unusable(f"{key} is {shorten(value)}, not a non-empty string")
    return value


def _timestamp(value: Any, key: str) -> pd.Timestamp:
    try:
        if isinstance(value, str):  # pandas would read a number as nanoseconds since 1970
            return pd.to_datetime(value, utc=True)  # a date without a zone is taken as UTC
    except ValueError:
        pass
    raise _Unusable(f"{key} is {shorten(value)}, not an ISO 8601 date")


def change_points(
    medians: Sequence[float],
    min_size: int = MIN_SEGMENT_POINTS,
    alpha: float = CHANGE_ALPHA,
    min_step: float = MIN_RELATIVE_STEP,
) -> list[int]:
    """Indices where a new segment of ``medians`` starts, by binary segmentation with Mann-Whitney
    U, Bonferroni-corrected.

    1. Binary segmentation proposes change points: a segment is split where the split most lowers
       the sum of absolute deviations from the two sides' medians (the L1 cost, which one outlying
       commit barely moves), among the splits leaving at least ``min_size`` points on each side
       whose relative step ``|median(after) / median(before) - 1|`` is at least ``min_step``;
       both sides are split again until no such split is left.
    2. Each proposal is tested against its neighbours: the two-sided Mann-Whitney U test of the
       segment before it against the segment after it (scipy: exact for small samples without
       ties), with p multiplied by the number of splits that window allowed (Bonferroni, since the
       split was the best of them). The least significant proposal with ``p >= alpha``, or whose
       step has fallen under ``min_step``, is dropped and its segments merged, until every one
       passes. Before each round every change point is re-estimated alone between its neighbours
       (the repartition of Bai, 1997, "Estimating multiple breaks one at a time"), since a split
       made before its neighbours were known can sit a point or two off.

    Proposing first and testing between neighbours, rather than testing each split against the
    whole rest of its segment, is what finds a regression that was later fixed: with a step up
    and back down, neither side of any single split differs from the other as a whole.

    The test runs on the values given, one per commit, not on the runs' raw samples: samples of one
    run share the host's state (clocks, placement, other tenants), so pooling them would count
    within-run noise as evidence and mark run-to-run variation as steps. The price is power: with
    the defaults a clean step needs about 10 commits between its neighbouring change points
    (5 + 5, or 4 + 6) to be found, and a segment of fewer than ``2 * min_size`` is never split.
    """
    if min_size < 1:
        raise ValueError(f"min_size must be at least 1, got {min_size}")
    values = np.asarray(medians, dtype=float)
    starts: list[int] = []
    pending = [(0, len(values))]
    while pending:
        start, stop = pending.pop()
        split = _least_cost_split(values[start:stop], min_size, min_step)
        if split is not None:
            starts.append(start + split)
            pending += [(start, start + split), (start + split, stop)]
    starts.sort()
    while starts:
        _reestimate(values, starts, min_size, min_step)
        p_values = [_corrected_p(values, starts, index, min_size, min_step)
                    for index in range(len(starts))]
        weakest = int(np.argmax(p_values))
        if p_values[weakest] < alpha:
            break
        del starts[weakest]
    return starts


def _least_cost_split(segment: np.ndarray, min_size: int, min_step: float) -> int | None:
    """The split of ``segment`` with the least L1 cost among those leaving ``min_size`` points on
    each side and stepping the median by ``min_step``; None when there is none."""
    best: tuple[float, int] | None = None  # (L1 cost, split)
    for split in range(min_size, len(segment) - min_size + 1):
        before, after = segment[:split], segment[split:]
        if abs(np.median(after) / np.median(before) - 1) < min_step:
            continue
        cost = float(np.abs(before - np.median(before)).sum()
                     + np.abs(after - np.median(after)).sum())
        best = min(best, (cost, split)) if best else (cost, split)
    return None if best is None else best[1]


def _neighbours(values: np.ndarray, starts: list[int], index: int) -> tuple[int, int]:
    """The window of change point ``index``: from the change point before it to the one after."""
    low = starts[index - 1] if index > 0 else 0
    high = starts[index + 1] if index + 1 < len(starts) else len(values)
    return low, high


def _reestimate(values: np.ndarray, starts: list[int], min_size: int, min_step: float) -> None:
    """Move each change point to the least-cost split between its neighbours, until none moves."""
    for _ in range(len(values)):  # each pass moves a point or ends; the bound guards against cycles
        previous = list(starts)
        for index in range(len(starts)):
            low, high = _neighbours(values, starts, index)
            split = _least_cost_split(values[low:high], min_size, min_step)
            if split is not None:
                starts[index] = low + split
        if starts == previous:
            return


def _corrected_p(
    values: np.ndarray, starts: list[int], index: int, min_size: int, min_step: float
) -> float:
    """Bonferroni-corrected Mann-Whitney U p of change point ``index`` against its neighbours'
    segments; infinity when its step is under ``min_step``, so it is dropped first."""
    low, high = _neighbours(values, starts, index)
    before, after = values[low:starts[index]], values[starts[index]:high]
    if abs(np.median(after) / np.median(before) - 1) < min_step:
        return math.inf
    p = stats.mannwhitneyu(before, after, alternative="two-sided").pvalue
    return float(p) * (high - low - 2 * min_size + 1)


def segments(count: int, starts: list[int]) -> list[tuple[int, int]]:
    """(start, stop) of each segment of ``count`` points cut at the change points ``starts``."""
    return list(itertools.pairwise([0, *starts, count]))


def relative_steps(medians: np.ndarray, starts: list[int]) -> list[float]:
    """Each change point's step: the median of the segment it starts over the one before, - 1."""
    levels = [float(np.median(medians[a:b])) for a, b in segments(len(medians), starts)]
    return [after / before - 1 for before, after in itertools.pairwise(levels)]


def load_annotations(path: Path) -> list[dict[str, Any]]:
    """Events to mark on the plots, from a YAML list of ``{commit: <hex prefix>, text: ...,
    entry: <optional entry name>}`` or ``{date: YYYY-MM-DD, text: ..., entry: <optional>}``.

    Returns dicts with the keys commit (lower-case prefix or None), date (``datetime.date`` or
    None), text and entry (None: every entry). Raises HistoryError naming the file and the item
    (counted from 1) on bad input.
    """
    items = parse_yaml(read_text(path, "annotations file"), str(path), HistoryError)
    if not isinstance(items, list):
        raise HistoryError(
            f"{path}: expected a list of {{commit: ..., text: ...}} or "
            f"{{date: YYYY-MM-DD, text: ...}} items, got {type(items).__name__}"
        )
    return [_annotation(item, f"{path}: item {number}") for number, item in
            enumerate(items, start=1)]


def _annotation(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise HistoryError(f"{where}: expected a mapping with commit or date, and text")
    unknown = sorted(str(key) for key in set(item) - {"commit", "date", "text", "entry"})
    if unknown:
        raise HistoryError(f"{where}: unknown key(s) {', '.join(unknown)}")
    if ("commit" in item) == ("date" in item):
        raise HistoryError(f"{where}: needs exactly one of commit and date")
    text = item.get("text")
    if not isinstance(text, str) or not text.strip():
        raise HistoryError(f"{where}: text must be a non-empty string")
    entry = item.get("entry")
    if entry is not None and not isinstance(entry, str):
        raise HistoryError(f"{where}: entry must be an entry name, got {shorten(entry)}")
    commit = item.get("commit")
    if "commit" in item and not (
        isinstance(commit, str) and re.fullmatch(r"[0-9a-fA-F]{4,40}", commit)
    ):
        # Unquoted, YAML reads 0123456 as the octal number 42798: only a string keeps the prefix.
        raise HistoryError(
            f"{where}: commit must be a quoted prefix of 4 to 40 hex digits, got {shorten(commit)}"
        )
    return {
        "commit": commit.lower() if commit else None,
        "date": _annotation_date(item["date"], where) if "date" in item else None,
        "text": text.strip(),
        "entry": entry,
    }


def _annotation_date(value: Any, where: str) -> datetime.date:
    if type(value) is datetime.date:  # unquoted YYYY-MM-DD; a datetime (with a time) is refused
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            return datetime.date.fromisoformat(value)
        except ValueError:
            pass
    raise HistoryError(f"{where}: date must be YYYY-MM-DD, got {shorten(value)}")
