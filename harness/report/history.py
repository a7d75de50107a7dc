"""The benchmark history page: one section per series, its commits' medians with their CIs, the
change points found in them (``harness.bench.history.change_points``), and the annotations."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.bench.history import (
    CHANGE_ALPHA,
    MIN_RELATIVE_STEP,
    MIN_SEGMENT_POINTS,
    SERIES_KEYS,
    UNKNOWN_COMMIT,
    change_points,
    load_annotations,
    load_results,
    relative_steps,
    segments,
)
from harness.files import write_atomically
from harness.report.page import escape, img, new_figure, page, png, table

SHORT_COMMIT = 10
MAX_TICK_LABELS = 20


def render_history(results_dir: Path, out_path: Path, annotations: Path | None = None) -> Path:
    """Write the history of every (suite, entry, device, machine) under ``results_dir`` to
    ``out_path`` as one self-contained HTML page; return ``out_path``."""
    notes = load_annotations(annotations) if annotations is not None else []
    results, skipped = load_results(results_dir)
    series = results.groupby(SERIES_KEYS, sort=True)
    sections = [
        "<h1>Benchmark history</h1>",
        (f"<p>{len(results)} result file(s) in {series.ngroups} series from "
         f"<code>{escape(results_dir)}</code>. One series per suite entry, device and machine "
         "fingerprint: latencies of different machines are not comparable.</p>"),
        _method_note(),
        *(_series_section(key, rows, notes) for key, rows in series),
    ]
    if notes:
        sections += ["<h2>Annotations</h2>", table(
            ["commit or date", "entry", "text"],
            [[note["commit"] or note["date"], note["entry"] or "all", note["text"]]
             for note in notes],
        )]
    if skipped:
        sections += ["<h2>Skipped files</h2>", table(
            ["file", "reason"], [[path.relative_to(results_dir), reason] for path, reason in skipped],

        )]
    write_atomically(out_path, page("Benchmark history", "".join(sections)))
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
    steps = dict(zip(starts, relative_steps(medians, starts)))
    marks = _annotation_marks(points, entry, notes)
    hosts = ", ".join(sorted(set(rows["host"]) - {""})) or "unknown host"
    commits = table(
        ["#", "commit", "date", "median (ms)", "95% CI (ms)", "n", "runs", "change", "note"],
        [[index, point.commit[:SHORT_COMMIT], point.time.strftime("%Y-%m-%d %H:%M"),
          f"{point.median:.4g}", _interval(point.ci_low, point.ci_high), point.n, point.runs,
          f"step {steps[index]:+.1%}" if index in steps else "",
          "; ".join(text for row, _, text in marks if row == index)]
         for index, point in enumerate(points.itertuples())],
    )
    return (
        f"<h2>{escape(suite)} / {escape(entry)} on {escape(device)}</h2>"
        f"<p class='note'>machine <code>{escape(fingerprint[:12])}</code> ({escape(hosts)})</p>"
        + img(_plot(points, starts, steps, marks), alt="history plot") + commits
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
                            for a, b in segments(len(points), starts)])
    figure = new_figure(figsize=(9, 3.2))
    axes = figure.subplots()
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
    return png(figure, dpi=100)


def _interval(low: float, high: float) -> str:
    return "–" if math.isnan(low) or math.isnan(high) else f"[{low:.4g}, {high:.4g}]"
