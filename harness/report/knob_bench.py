"""``harness bench-knobs`` as Markdown: one table per device, architecture and batch size."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # named only: rendering needs no torch
    from harness.bench.knob_bench import KnobBenchResult, KnobRow


def knob_bench_markdown(result: KnobBenchResult) -> str:
    """One table per device, architecture and batch size."""
    groups: dict[tuple[str, str, int], list[KnobRow]] = {}
    for row in result.rows:
        groups.setdefault((row.device, row.arch, row.batch_size), []).append(row)
    return "\n".join(_markdown_table(*key, group) for key, group in groups.items())


_COLUMNS = ("knob", "GMACs", "eff. GMACs", "params (M)", "latency (ms)", "dense (ms)",
            "speed-up [95% CI]", "MAC reduction", "speed-up / MAC reduction", "accelerated", "how")


def _markdown_table(device: str, arch: str, batch_size: int, rows: list[KnobRow]) -> str:
    lines = [f"## {device} · {arch} · batch {batch_size}", "",
             f"Dense fp32 reference: {rows[0].dense_gmacs:.3f} GMACs per image.", "",
             "| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for row in rows:
        low, high = row.speedup_ci95
        cells = [row.knob.replace("|", "\\|"), f"{row.gmacs:.3f}", f"{row.effective_gmacs:.3f}",
                 f"{row.params_m:.2f}", f"{row.latency_ms:.2f}", f"{row.dense_latency_ms:.2f}",
                 f"{row.speedup:.2f}x [{low:.2f}, {high:.2f}]", f"{row.mac_reduction:.2f}x",
                 f"{row.speedup_per_mac_reduction:.2f}", "yes" if row.accelerated else "no",
                 row.how.replace("|", "\\|")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
