"""``harness compare``: base-vs-head comparison of benchmark results, as Markdown, HTML or JSON.

Each side is a set of result files (``harness.bench``). Entries are matched by suite, entry and
device. The statistics are those
of ``harness.compare_stats`` (Mann-Whitney U with Holm's correction, Hodges-Lehmann interval of
the change, each entry's own threshold). An entry with at least five runs on both sides is
compared run by run (each run's median is one replicate); with fewer, the raw samples are pooled,
which cannot see noise between runs. Results from different machines are compared only with a
loud warning, since noise between machines dwarfs noise within one.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from harness.compare_stats import ComparisonError, EntryComparison, compare_entries
from harness.environment import EnvironmentChange, diff_environments

MIN_REPLICATE_RUNS = 5  # Mann-Whitney's smallest two-sided p with 5 against 5 is 0.008
DECISIONS = ("regression", "improvement", "noisy", "unchanged")
FORMATS = ("markdown", "html", "json")


@dataclass(frozen=True)
class Comparison:
    entries: list[EntryComparison]
    only_base: list[str]
    only_head: list[str]
    base_commits: list[str]
    head_commits: list[str]
    machines_differ: bool
    environment_changes: list[EnvironmentChange]

    @property
    def regressions(self) -> list[EntryComparison]:
        return [e for e in self.entries if e.decision == "regression"]

    def count(self, decision: str) -> int:
        return sum(1 for e in self.entries if e.decision == decision)

    @property
    def verdict(self) -> str:
        counts = ", ".join(f"{self.count(d)} {d}" for d in DECISIONS)
        if self.regressions:
            head = f"**{len(self.regressions)} regression(s)**"
        elif self.count("improvement"):
            head = f"**{self.count('improvement')} improvement(s), no regression**"
        else:
            head = "**No significant change**"
        return f"{head} in {len(self.entries)} entries ({counts})"

    def warning(self) -> str | None:
        if not self.machines_differ:
            return None
        return ("WARNING: base and head were measured on different machines (machine "
                "fingerprints differ): differences between machines can exceed any code change; "
                "compare results from one machine, ideally one job")

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.replace("**", ""),
            "warning": self.warning(),
            "base_commits": self.base_commits,
            "head_commits": self.head_commits,
            "entries": [e.to_dict() for e in self.entries],
            "only_base": self.only_base,
            "only_head": self.only_head,
            "environment_changes": [c.to_dict() for c in self.environment_changes],
        }


def _key(result: dict[str, Any]) -> str:
    return f"{result['suite']}/{result['entry']}@{result['device']}"


def compare_results(base: list[dict[str, Any]], head: list[dict[str, Any]],
                    default_threshold_pct: float | None = None,
                    alpha: float = 0.01) -> Comparison:
    """Compare two sets of result files; ``default_threshold_pct`` overrides the entries' own."""
    runs: dict[str, dict[str, list[dict]]] = {"base": defaultdict(list), "head": defaultdict(list)}
    thresholds = {}
    for side, results in (("base", base), ("head", head)):
        for result in results:
            runs[side][_key(result)].append(result)
            thresholds[_key(result)] = default_threshold_pct or result["threshold_pct"]
    samples = {side: {key: _replicates(entry_runs) for key, entry_runs in by_key.items()}
               for side, by_key in runs.items()}
    common = sorted(set(samples["base"]) & set(samples["head"]))
    if not common:
        raise ComparisonError(f"no entry is in both base ({', '.join(sorted(samples['base']))}) "
                              f"and head ({', '.join(sorted(samples['head']))})")
    entries = compare_entries({k: (samples["base"][k], samples["head"][k]) for k in common},
                              thresholds={k: thresholds[k] for k in common}, alpha=alpha)
    machines = {side: {r["machine_fingerprint"] for r in results}
                for side, results in (("base", base), ("head", head))}
    return Comparison(
        entries=entries,
        only_base=sorted(set(samples["base"]) - set(samples["head"])),
        only_head=sorted(set(samples["head"]) - set(samples["base"])),
        base_commits=sorted({r["commit"] for r in base}),
        head_commits=sorted({r["commit"] for r in head}),
        machines_differ=machines["base"] != machines["head"],
        environment_changes=diff_environments(base[0]["environment"], head[0]["environment"]),
    )


def _replicates(runs: list[dict[str, Any]]) -> list[float]:
    """The values compared for one entry on one side: the median of each run when there are
    enough runs, so that noise between runs (which dwarfs noise within one) is in the test;
    otherwise the raw samples of the runs, pooled."""
    if len(runs) >= MIN_REPLICATE_RUNS:
        return [run["latency_ms"]["median"] for run in runs]
    return [sample for run in runs for sample in run["latency_samples_ms"]]


def _row(entry: EntryComparison) -> list[str]:
    low, high = entry.ci95_pct
    return [entry.name, "latency median (ms)", f"{entry.base_median:.3f}",
            f"{entry.head_median:.3f}", f"{entry.delta_pct:+.1f}% [{low:+.1f}%, {high:+.1f}%]",
            f"{entry.p_adjusted:.2g}", f"{entry.threshold_pct:g}%", entry.decision]


HEADER = ["entry", "metric", "base", "head", "Δ% [95% CI]", "p (Holm)", "threshold", "decision"]


def _markdown_table(entries: list[EntryComparison]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_row(e)) + " |" for e in entries]
    return "\n".join(lines)


def to_markdown(comparison: Comparison) -> str:
    """A pull-request comment: verdict, changed entries, unchanged ones collapsed, environment."""
    lines = [f"### Benchmark comparison: {comparison.verdict}", ""]
    if comparison.warning():
        lines += [f"> :warning: {comparison.warning()}", ""]
    lines += [(f"Base {', '.join(c[:12] for c in comparison.base_commits)} → head "
              f"{', '.join(c[:12] for c in comparison.head_commits)}. A change counts when it is "
              "significant (Mann-Whitney U, Holm-corrected p < 0.01) and at least the entry's "
              "threshold; *noisy* entries cannot rule out a change beyond it."), ""]
    shown = [e for e in comparison.entries if e.decision != "unchanged"]
    unchanged = [e for e in comparison.entries if e.decision == "unchanged"]
    if shown:
        lines += [_markdown_table(shown), ""]
    if unchanged:
        lines += [f"<details><summary>{len(unchanged)} unchanged</summary>", "",
                  _markdown_table(unchanged), "", "</details>", ""]
    for label, keys in (("Only in base", comparison.only_base),
                        ("Only in head", comparison.only_head)):
        if keys:
            lines += [f"{label}: {', '.join(keys)}", ""]
    changes = comparison.environment_changes
    if changes:
        lines += ["<details><summary>Environment differences</summary>", ""]
        lines += [f"- {c.kind}: `{c.key}`: {c.old} → {c.new}" for c in changes]
        lines += ["", "</details>", ""]
    else:
        lines += ["Environment: identical (hardware, software and settings).", ""]
    return "\n".join(lines)


def to_html(comparison: Comparison) -> str:
    def table(entries: list[EntryComparison]) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in _row(e))
                       + "</tr>" for e in entries)
        return f"<table><tr>{head}</tr>{body}</table>"

    warning = comparison.warning()
    changes = "".join(f"<li>{html.escape(f'{c.kind}: {c.key}: {c.old} → {c.new}')}</li>"
                      for c in comparison.environment_changes)
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Benchmark "
            "comparison</title><style>body{font-family:system-ui,sans-serif;margin:2em} "
            "table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:.2em .5em}"
            ".warning{color:#a00;font-weight:bold}</style></head><body>"
            f"<h1>{html.escape(comparison.verdict.replace('**', ''))}</h1>"
            + (f"<p class='warning'>{html.escape(warning)}</p>" if warning else "")
            + table(comparison.entries)
            + f"<h2>Environment differences</h2><ul>{changes or '<li>none</li>'}</ul>"
            + "</body></html>")


def render(comparison: Comparison, output_format: str) -> str:
    if output_format == "json":
        return json.dumps(comparison.to_dict(), indent=2)
    return to_html(comparison) if output_format == "html" else to_markdown(comparison)
