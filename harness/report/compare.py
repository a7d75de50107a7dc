"""The pages and comments of ``harness compare``: a pull-request comment in Markdown, an HTML
page, or JSON, from one ``harness.bench.compare.Comparison``."""

from __future__ import annotations

import json

from harness.bench.compare import MIN_REPLICATE_RUNS, BusyRun, Comparison, EntryOutcome
from harness.report.page import escape, page, table

FORMATS = ("markdown", "html", "json")


def _row(entry: EntryOutcome) -> list[str]:
    interval = f" [{entry.ci95_pct[0]:+.1f}%, {entry.ci95_pct[1]:+.1f}%]" if entry.ci95_pct \
        else ""
    return [entry.name, "latency median (ms)", entry.figures, f"{entry.base_median:.3f}",
            f"{entry.head_median:.3f}", f"{entry.delta_pct:+.1f}%{interval}",
            "—" if entry.p_adjusted is None else f"{entry.p_adjusted:.2g}",
            f"{entry.threshold_pct:g}%", entry.decision]


HEADER = ["entry", "metric", "compared", "base", "head", "Δ% [95% CI]", "p (Holm)", "threshold",
          "decision"]
FIGURES_NOTE = ("*compared*: drift-corrected figures are raw latencies times the reference "
                "probe's quiet time over its time beside the run; with "
                f"{MIN_REPLICATE_RUNS} or more runs a side, each run's median is one replicate, "
                "tested with Mann-Whitney U, or, *paired by round* where base and head alternated "
                "in one job, with a t-test of the per-round ratios (Δ their geometric mean); with "
                "fewer, nothing is decided.")


def _markdown_table(entries: list[EntryOutcome]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_row(e)) + " |" for e in entries]
    return "\n".join(lines)


def _busy_heading(comparison: Comparison) -> str:
    if any(run.compared for run in comparison.busy_runs):
        return "Measured on a busy host, compared anyway (--include-contended)"
    return "Not comparable: measured on a busy host (left out; --include-contended compares them)"


def _busy_line(run: BusyRun) -> str:
    reasons = "; ".join(run.reasons) or "no reason recorded"
    return f"{run.side} {run.entry} ({run.source}): {reasons}"


def to_markdown(comparison: Comparison) -> str:
    """A pull-request comment: verdict, changed entries, unchanged ones collapsed, runs on a busy
    host, environment."""
    lines = [f"### Benchmark comparison: {comparison.verdict}", ""]
    if comparison.warning():
        lines += [f"> :warning: {comparison.warning()}", ""]
    lines += [(f"Base {', '.join(c[:12] for c in comparison.base_commits)} → head "
              f"{', '.join(c[:12] for c in comparison.head_commits)}. A change counts when it is "
              f"significant (Holm-corrected p < {comparison.alpha:.2g}) and at least the entry's "
              f"threshold; *noisy* entries cannot rule out a change beyond it. {FIGURES_NOTE}"),
              ""]
    for note in comparison.notes():
        lines += [f"> {note}", ""]
    shown = [e for e in comparison.entries if e.decision != "unchanged"]
    unchanged = [e for e in comparison.entries if e.decision == "unchanged"]
    if shown:
        lines += [_markdown_table(shown), ""]
    if unchanged:
        lines += [f"<details><summary>{len(unchanged)} unchanged</summary>", "",
                  _markdown_table(unchanged), "", "</details>", ""]
    if comparison.busy_runs:
        lines += [f"**{_busy_heading(comparison)}**", ""]
        lines += [f"- {_busy_line(run)}" for run in comparison.busy_runs]
        lines += [""]
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
    """The same comparison as a self-contained page."""
    warning = comparison.warning()
    notes = "".join(f"<p class='note'>{escape(note)}</p>"
                    for note in [FIGURES_NOTE.replace("*", ""), *comparison.notes()])
    busy = (f"<h2>{escape(_busy_heading(comparison))}</h2><ul>"
            + "".join(f"<li>{escape(_busy_line(run))}</li>" for run in comparison.busy_runs)
            + "</ul>") if comparison.busy_runs else ""
    changes = "".join(f"<li>{escape(f'{c.kind}: {c.key}: {c.old} → {c.new}')}</li>"
                      for c in comparison.environment_changes)
    body = (f"<h1>{escape(comparison.verdict.replace('**', ''))}</h1>"
            + (f"<p class='warning'>{escape(warning)}</p>" if warning else "")
            + notes + table(HEADER, [_row(e) for e in comparison.entries]) + busy
            + f"<h2>Environment differences</h2><ul>{changes or '<li>none</li>'}</ul>")
    return page("Benchmark comparison", body)


def render(comparison: Comparison, output_format: str) -> str:
    if output_format == "json":
        return json.dumps(comparison.to_dict(), indent=2)
    return to_html(comparison) if output_format == "html" else to_markdown(comparison)
