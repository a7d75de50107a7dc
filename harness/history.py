"""Benchmark history: how each suite entry's latency moved over commits, as one HTML page.

``harness bench`` writes one JSON result per (machine, commit, suite entry, run). Comparing two
results says whether one commit is slower than another; the history says *when* latency stepped,
so a regression can be traced to its commit even when nobody compared at the time. Steps are found
by a named, standard change-point method (``change_points``) rather than by eye, and the page
states the method and its parameters, so a reader can judge what a marked step means.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import itertools
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from scipy import stats

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from harness.bench import RESULT_KIND, RESULT_SCHEMA_VERSION
from harness.errors import HarnessError, shorten
from harness.files import read_text, write_atomically
from harness.yaml_files import parse_yaml

UNKNOWN_COMMIT = "unknown"
SERIES_KEYS = ["suite", "entry", "device", "machine_fingerprint"]

# Change-point defaults. With one median per commit the exact Mann-Whitney p-value cannot go below
# 2 / C(n, n/2): 0.0022 for 6 commits against 6, so a stricter alpha would mark nothing in a
# short history. 0.05 after the Bonferroni factor finds a clean step in the middle of 10 commits.
MIN_SEGMENT_POINTS = 3
CHANGE_ALPHA = 0.05
MIN_RELATIVE_STEP = 0.02  # steps smaller than run-to-run noise on most hosts are not worth marking

SHORT_COMMIT = 10
MAX_TICK_LABELS = 20

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.85em}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:left} th{background:#f3f3f3}
img{max-width:100%} .note{color:#555;font-size:.9em} code{background:#f5f5f5;padding:0 .2em}
"""


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
    rows: list[dict[str, Any]] = []
    skipped: list[tuple[Path, str]] = []
    for path in sorted(directory.rglob("*.json")):
        try:
            rows.append(_result_row(path))
        except _Unusable as reason:
            skipped.append((path, str(reason)))
    if not rows:
        others = f"; {len(skipped)} other .json file(s) skipped" if skipped else ""
        raise HistoryError(
            f"{directory}: no benchmark result file (kind {RESULT_KIND!r}, "
            f"schema_version {RESULT_SCHEMA_VERSION}){others}"
        )
    rows.sort(key=lambda row: (row["time"], row["created"], str(row["path"])))
    return pd.DataFrame(rows), skipped


def _result_row(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as problem:
        raise _Unusable(f"not readable JSON: {problem}") from None
    kind = record.get("kind") if isinstance(record, dict) else None
    if kind != RESULT_KIND:
        raise _Unusable(f"kind is {shorten(kind)}, not {RESULT_KIND!r}")
    if record.get("schema_version") != RESULT_SCHEMA_VERSION:
        raise _Unusable(
            f"schema_version is {shorten(record.get('schema_version'))}; "
            f"this harness reads schema_version {RESULT_SCHEMA_VERSION}"
        )
    latency = record.get("latency_ms")
    if not isinstance(latency, dict):
        raise _Unusable("latency_ms is missing")
    median = latency.get("median")
    if not _is_number(median) or not math.isfinite(median) or median <= 0:
        raise _Unusable(f"latency_ms.median is {shorten(median)}, not a positive number")
    ci95 = latency.get("ci95")
    if ci95 is not None and not (
        isinstance(ci95, list) and len(ci95) == 2 and all(_is_number(v) for v in ci95)
    ):
        raise _Unusable(f"latency_ms.ci95 is {shorten(ci95)}, not [low, high]")
    n = latency.get("n")
    if not isinstance(n, int) or isinstance(n, bool):
        raise _Unusable(f"latency_ms.n is {shorten(n)}, not an integer")
    created = _timestamp(record.get("created"), "created")
    commit_date = (
        None if record.get("commit_date") is None
        else _timestamp(record["commit_date"], "commit_date")
    )
    low, high = ci95 if ci95 is not None else (math.nan, math.nan)
    return {
        **{key: _text(record, key) for key in (*SERIES_KEYS, "commit")},
        "host": record.get("host") or "",
        "commit_date": commit_date,
        "created": created,
        "time": commit_date if commit_date is not None else created,
        "median": float(median),
        "ci_low": float(low),
        "ci_high": float(high),
        "n": n,
        "path": path,
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
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


def _segments(count: int, starts: list[int]) -> list[tuple[int, int]]:
    """(start, stop) of each segment of ``count`` points cut at the change points ``starts``."""
    return list(itertools.pairwise([0, *starts, count]))


def _relative_steps(medians: np.ndarray, starts: list[int]) -> list[float]:
    """Each change point's step: the median of the segment it starts over the one before, - 1."""
    levels = [float(np.median(medians[a:b])) for a, b in _segments(len(medians), starts)]
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


def render_history(results_dir: Path, out_path: Path, annotations: Path | None = None) -> Path:
    """Write the history of every (suite, entry, device, machine) under ``results_dir`` to
    ``out_path`` as one self-contained HTML page; return ``out_path``."""
    notes = load_annotations(annotations) if annotations is not None else []
    results, skipped = load_results(results_dir)
    series = results.groupby(SERIES_KEYS, sort=True)
    sections = [
        "<h1>Benchmark history</h1>",
        (f"<p>{len(results)} result file(s) in {series.ngroups} series from "
         f"<code>{_e(results_dir)}</code>. One series per suite entry, device and machine "
         "fingerprint: latencies of different machines are not comparable.</p>"),
        _method_note(),
        *(_series_section(key, rows, notes) for key, rows in series),
    ]
    if notes:
        sections += ["<h2>Annotations</h2>", _table(
            ["commit or date", "entry", "text"],
            [[note["commit"] or note["date"], note["entry"] or "all", note["text"]]
             for note in notes],
        )]
    if skipped:
        sections += ["<h2>Skipped files</h2>", _table(
            ["file", "reason"], [[path.relative_to(results_dir), reason] for path, reason in skipped]
        )]
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Benchmark history</title><style>{STYLE}</style></head>"
        f"<body>{''.join(sections)}</body></html>\n"
    )
    write_atomically(out_path, page)
    return out_path


def _method_note() -> str:
    return (
        "<p class='note'>Change points (red lines, “change” column): binary segmentation with "
        "Mann-Whitney U, Bonferroni-corrected, on one median per commit. Binary segmentation "
        "proposes splits (least sum of absolute deviations from the segment medians, "
        f"≥ {MIN_SEGMENT_POINTS} commits on each side, median step ≥ {MIN_RELATIVE_STEP:.0%}); "
        "each is kept if the two-sided Mann-Whitney U test between the segments on either side "
        f"gives p × (number of splits that window allows) &lt; {CHANGE_ALPHA}, the weakest "
        "failing one being dropped first and the rest re-placed between their neighbours (Bai "
        "1997). Δ% is the step between the medians of neighbouring segments (dashed). Several "
        "runs of one commit form one point: the median of their medians, their smallest to "
        "largest 95% CI bound, their summed sample count. Date: the commit date, or the run's "
        "date where the commit date is unknown.</p>"
    )


def _series_section(key: tuple[str, ...], rows: pd.DataFrame, notes: list[dict[str, Any]]) -> str:
    suite, entry, device, fingerprint = key
    points = _commit_points(rows)
    medians = points["median"].to_numpy()
    starts = change_points(medians)
    steps = dict(zip(starts, _relative_steps(medians, starts)))
    marks = _annotation_marks(points, entry, notes)
    hosts = ", ".join(sorted(set(rows["host"]) - {""})) or "unknown host"
    table = _table(
        ["#", "commit", "date", "median (ms)", "95% CI (ms)", "n", "runs", "change", "note"],
        [[index, point.commit[:SHORT_COMMIT], point.time.strftime("%Y-%m-%d %H:%M"),
          f"{point.median:.4g}", _interval(point.ci_low, point.ci_high), point.n, point.runs,
          f"step {steps[index]:+.1%}" if index in steps else "",
          "; ".join(text for row, _, text in marks if row == index)]
         for index, point in enumerate(points.itertuples())],
    )
    return (
        f"<h2>{_e(suite)} / {_e(entry)} on {_e(device)}</h2>"
        f"<p class='note'>machine <code>{_e(fingerprint[:12])}</code> ({_e(hosts)})</p>"
        + _img(_plot(points, starts, steps, marks)) + table
    )


def _commit_points(rows: pd.DataFrame) -> pd.DataFrame:
    """One point per commit, in time order; each run of an unknown commit stays its own point,
    since those runs may well be of different code."""
    identity = rows["commit"].where(rows["commit"] != UNKNOWN_COMMIT, rows["path"].astype(str))
    # rows are in time order, so first appearance (sort=False) keeps the points in time order too
    return rows.groupby(identity.rename("point"), sort=False).agg(
        commit=("commit", "first"), time=("time", "first"), median=("median", "median"),
        ci_low=("ci_low", "min"), ci_high=("ci_high", "max"), n=("n", "sum"),
        runs=("path", "size"),
    ).reset_index(drop=True)


def _annotation_marks(
    points: pd.DataFrame, entry: str, notes: list[dict[str, Any]]
) -> list[tuple[int, float, str]]:
    """(table row, plot x, text) of each annotation that applies to this series: a commit note at
    its commit's point, a date note just before the first point dated on or after it (only within
    the series' date span, so old events do not crowd every plot's left edge)."""
    commits = [commit.lower() for commit in points["commit"]]
    days = [time.date() for time in points["time"]]
    marks = []
    for note in notes:
        if note["entry"] not in (None, entry):
            continue
        if note["commit"]:
            marks += [(row, float(row), note["text"]) for row, commit in enumerate(commits)
                      if commit.startswith(note["commit"])]
        elif days[0] <= note["date"] <= days[-1]:
            row = next(row for row, day in enumerate(days) if day >= note["date"])
            marks.append((row, row - 0.5, note["text"]))
    return marks


def _plot(
    points: pd.DataFrame,
    starts: list[int],
    steps: dict[int, float],
    marks: list[tuple[int, float, str]],
) -> bytes:
    x = np.arange(len(points))
    medians = points["median"].to_numpy()
    level = np.concatenate([np.full(b - a, np.median(medians[a:b]))
                            for a, b in _segments(len(points), starts)])
    figure, axes = plt.subplots(figsize=(9, 3.2))
    axes.fill_between(x, points["ci_low"], points["ci_high"], alpha=0.25, label="95% CI")
    axes.plot(x, medians, marker="o", markersize=3, label="median")
    axes.plot(x, level, drawstyle="steps-mid", linestyle="--", linewidth=1, color="tab:orange",
              label="segment median")
    for start in starts:
        axes.axvline(start - 0.5, color="tab:red", linewidth=1)
        axes.annotate(f"{steps[start]:+.1%}", (start - 0.5, 1.0), xycoords=("data", "axes fraction"),
                      xytext=(2, -2), textcoords="offset points", va="top", fontsize=8,
                      color="tab:red")
    for _, position, text in marks:
        axes.axvline(position, color="grey", linestyle=":", linewidth=1)
        axes.annotate(text, (position, 0.03), xycoords=("data", "axes fraction"), rotation=90,
                      ha="right", va="bottom", fontsize=7, color="dimgrey")
    stride = max(1, math.ceil(len(points) / MAX_TICK_LABELS))
    axes.set_xticks(x[::stride], [c[:7] for c in points["commit"]][::stride], rotation=60,
                    fontsize=7)
    axes.set_xlabel("commit, oldest to newest")
    axes.set_ylabel("latency (ms)")
    axes.legend(fontsize=7, loc="upper left")
    return _png(figure)


def _png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    # No "Software" metadata: it carries matplotlib's URL, and the page makes no external reference
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def _img(png: bytes) -> str:
    return f"<img alt='history plot' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _interval(low: float, high: float) -> str:
    return "–" if math.isnan(low) or math.isnan(high) else f"[{low:.4g}, {high:.4g}]"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(name)}</th>" for name in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(value)}</td>" for value in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _e(value: Any) -> str:
    return html.escape(str(value))
