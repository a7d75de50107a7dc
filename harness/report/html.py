"""Render ``ReportData`` as one self-contained HTML page (inline CSS, plots as inline PNG)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from harness.records import EnergyRecord, KnobSupport, LatencyRecord, TrialRecord
from harness.report.data import ReportData
from harness.report.page import (
    escape,
    flatten,
    img,
    key_values,
    new_figure,
    page,
    png,
    table,
)
from harness.search.results import MAX_CANDIDATES

ARCH_COLUMNS = ("embed_dim", "depth", "num_heads", "mlp_ratio", "patch_size", "img_size")


def render_html(data: ReportData) -> str:
    meta = data.metadata
    sections = [
        f"<h1>ViT search: {escape(data.study_name)}</h1>",
        _summary(data),
        "<h2>Pareto front</h2>",
        img(_pareto_figure(data)),
        ("<p class='note'>Latency: " + ("estimate with the calibration's fit-error band"
                                        if _estimate_source(data) else "median with its 95% CI")
         + ". Colour: GMACs. Grey crosses: over the latency budget. Candidates over a "
         "MAC/parameter budget (or not fitting an FPGA part) were rejected before being built, "
         "so they have no latency and are counted above."
         + (" Front points at their re-measured medians (bars: 95% CI over the rounds); dots "
            "at the search's medians." if data.front_remeasured else "") + "</p>"),
        *_delta_section(data),
        "<h2>Pareto-optimal configurations</h2>",
        _pareto_table(data),
        ("<p class='note'>Latency columns: re-measured side by side (below): the median of the "
         "round medians with its 95% CI over the rounds; p90 and n of the rounds' pooled "
         "samples.</p>" if data.front_remeasured else ""),
        _remeasured_section(data),
        _fpga_table(data),
        "<h2>Efficiency knobs on this device</h2>",
        _knob_support(data),
        _failed_table(data),
        _contended_table(data),
        "<h2>Hypervolume over trials</h2>",
        img(_hypervolume_figure(data)) if data.hypervolume else "<p>No feasible trial yet.</p>",
        ("<p class='note'>Objectives scaled to [0, 1] by the range of the feasible trials of this "
        "study, reference point (1.1, 1.1); comparable within this report only.</p>"),
        "<h2>Search settings</h2>",
        key_values({
            "space": f"{meta.get('space', {}).get('name')} ({meta.get('space', {}).get('source')})",
            "device": meta.get("device"),
            "budgets": ", ".join(meta.get("budgets", [])) or "none",
            "accuracy estimator": meta.get("estimator"),
            **{k: json.dumps(v) if isinstance(v, dict) else v
               for k, v in meta.get("run_settings", {}).items()},
        }),
        _space_table(meta.get("space", {})),
        "<h2>Environment</h2>",
        key_values(flatten(meta.get("environment", {}))),
        "<h2>How each number was obtained</h2>",
        _methods(meta, data),
        "<h2>All trials</h2>",
        _all_trials_table(data),
    ]
    return page(f"{data.study_name} — ViT search report", "\n".join(sections))


def _summary(data: ReportData) -> str:
    counts = data.counts
    spread = data.accuracy_spread
    return key_values({
        "trials": len(data.trials),
        "measured (complete)": counts.get("COMPLETE", 0),
        "rejected before measurement (budget or FPGA resources)": counts.get("REJECTED_BY_BUDGET", 0),
        "stopped early (accuracy in the bottom quarter of finished trials)":
            counts.get("STOPPED_EARLY", 0),
        "failed": counts.get("FAIL", 0),
        "measured on a busy host (kept out of the front)": counts.get("CONTENDED", 0),
        "Pareto-optimal and within budget": len(data.pareto),
        **({"re-measured front": _remeasured_summary(data)} if data.remeasured else {}),
        **({"accuracy spread": spread.sentence()} if spread else {}),
    })


def _remeasured_summary(data: ReportData) -> str:
    if data.remeasured_unused:
        return f"not used, the front is the search's: {data.remeasured_unused}"
    return data.remeasured.summary()


def _pareto_figure(data: ReportData) -> bytes:
    figure = new_figure(figsize=(8, 5))
    axes = figure.subplots()
    contended = data.contended
    measured = [t for t in data.measured if t not in contended]
    feasible = [t for t in measured if t.feasible]
    infeasible = [t for t in measured if not t.feasible]
    if contended:
        axes.scatter([t.latency.median for t in contended],
                     [t.accuracy_value for t in contended],
                     marker="^", color="darkorange", label="host busy (not on the front)",
                     zorder=1)
    if feasible:
        scatter = axes.scatter(
            [t.latency.median for t in feasible],
            [t.accuracy_value for t in feasible],
            c=[t.gmacs for t in feasible], cmap="viridis", s=28, zorder=2,
        )
        figure.colorbar(scatter, ax=axes, label="GMACs")
    if infeasible:
        axes.scatter([t.latency.median for t in infeasible],
                     [t.accuracy_value for t in infeasible],
                     marker="x", color="0.6", label="over latency budget", zorder=1)
    if data.pareto:
        xs = [p.latency.median for p in data.pareto]
        ys = [p.trial.accuracy_value for p in data.pareto]
        bands = [_latency_interval(p.latency) or (x, x) for x, p in zip(xs, data.pareto)]
        low = [x - band[0] for x, band in zip(xs, bands)]
        high = [band[1] - x for x, band in zip(xs, bands)]
        axes.errorbar(xs, ys, xerr=[low, high], fmt="none", ecolor="k", elinewidth=1, zorder=3)
        axes.step(xs, ys, where="post", color="crimson", linewidth=1, zorder=3)
        axes.scatter(xs, ys, facecolors="none", edgecolors="crimson", s=90, zorder=4,
                     label="Pareto front (feasible)")
    estimated = _estimate_source(data)
    axes.set_xlabel("latency per batch (ms), " + ("ESTIMATED from the FPGA cost model"
                                                  if estimated else "measured median"))
    axes.set_ylabel(f"accuracy estimate ({data.metadata.get('estimator', '')})")
    axes.grid(alpha=0.3)
    if feasible or infeasible or contended:
        axes.legend(loc="lower right")
    return png(figure)


def _delta_section(data: ReportData) -> list[str]:
    """With a pretrained checkpoint: latency against the change of top-1, with paired CIs."""
    scored = [t for t in data.measured if "delta_top1" in (t.accuracy or {})]
    if not scored:
        return []
    figure = new_figure(figsize=(8, 4))
    axes = figure.subplots()
    xs = [t.latency.median for t in scored]
    ys = [t.accuracy["delta_top1"] * 100 for t in scored]
    low = [y - t.accuracy["ci95"][0] * 100 for y, t in zip(ys, scored)]
    high = [t.accuracy["ci95"][1] * 100 - y for y, t in zip(ys, scored)]
    axes.errorbar(xs, ys, yerr=[low, high], fmt="o", markersize=4, elinewidth=1, capsize=2)
    axes.axhline(0, color="0.5", linewidth=1)
    axes.set_xlabel("latency median (ms)")
    axes.set_ylabel("Δ top-1 against the checkpoint (points)")
    axes.grid(alpha=0.3)
    weights = scored[0].accuracy["weights"]
    return ["<h2>Latency against the change of top-1</h2>", img(png(figure)),
            (f"<p class='note'>Checkpoint {escape(weights['path'])} (sha256 "
            f"<code>{escape(weights['sha256'])}</code>, {weights['params_m']:.2f} M parameters, "
            f"{weights['num_classes']} classes). Bars: paired 95% CI of the change (McNemar), "
            "both scored on the same images. EViT pruning and magnitude sparsity are applied "
            "without fine-tuning: their losses are pessimistic.</p>")]


def _hypervolume_figure(data: ReportData) -> bytes:
    figure = new_figure(figsize=(8, 3))
    axes = figure.subplots()
    axes.plot(range(len(data.hypervolume)), data.hypervolume, drawstyle="steps-post")
    axes.set_xlabel("trial")
    axes.set_ylabel("hypervolume (scaled)")
    axes.grid(alpha=0.3)
    return png(figure)


def _format_knob(value: Any) -> str:
    if isinstance(value, list):
        if value and all(v == value[0] for v in value) and len(value) > 3:
            return f"{value[0]} ×{len(value)}"
        return ",".join(str(v) for v in value)
    return str(value)


def _pareto_table(data: ReportData) -> str:
    if not data.pareto:
        return "<p>No measured configuration meets the budgets yet.</p>"
    configs = [p.trial.config for p in data.pareto]
    # Keys equal on every Pareto row are said once above the table, leaving room for the rest.
    shared = {k: configs[0][k] for k in ARCH_COLUMNS
              if len(configs) > 1 and all(c[k] == configs[0][k] for c in configs)}
    columns = [k for k in ARCH_COLUMNS if k not in shared]
    header = ["trial", *columns, "knobs", "runtime", "GMACs", "effective GMACs", "params (M)",
              "latency median (ms)", "p90 (ms)", "95% CI / band (ms)", "n", "energy (J/call)",
              "accuracy estimate"]
    rows = []
    for point in data.pareto:
        trial, latency = point.trial, point.latency
        measurement = trial.measurement
        rows.append([
            trial.number, *(_format_knob(trial.config[k]) for k in columns),
            _knobs_cell(trial.knobs), _runtime_cell(trial), f"{trial.gmacs:.3f}",
            f"{trial.effective_gmacs:.3f}", f"{trial.params_m:.2f}",
            f"{latency.median:.3f}" + (" THROTTLED" if measurement.throttled else "")
            + (" (estimated)" if latency.estimated else ""),
            f"{latency.p90:.3f}" if latency.p90 is not None else (
                "n/a (estimate)" if latency.estimated else "n/a (n<64)"),
            _interval_cell(latency),
            latency.n, _energy_cell(measurement.energy), f"{trial.accuracy_value:.4f}",
        ])
    note = ("<p>Every configuration below has " + ", ".join(
        f"{k} {escape(_format_knob(v))}" for k, v in shared.items()) + ".</p>") if shared else ""
    lists = [1 + i for i, k in enumerate(columns) if any(isinstance(c[k], list) for c in configs)]
    wrapped = [*lists, 1 + len(columns)]  # per-block lists and the knobs
    return note + f"<div class='scroll'>{table(header, rows, css_id='pareto', wrap=wrapped)}</div>"


def _latency_interval(latency: LatencyRecord) -> tuple[float, float] | None:
    """The measured median's 95% CI, or an estimate's fit-error band (None if it has none)."""
    return latency.error_band if latency.estimated else latency.ci95


def _interval_cell(latency: LatencyRecord) -> str:
    interval = _latency_interval(latency)
    if interval is None:
        return "n/a (uncalibrated estimate)"
    text = f"[{interval[0]:.3f}, {interval[1]:.3f}]"
    return f"fit band {text}" if latency.estimated else text


def _estimate_source(data: ReportData) -> str | None:
    """The label of estimated latencies (FPGA devices), None when latencies were measured."""
    sources = {t.latency.source for t in data.measured if t.latency.estimated}
    return "; ".join(sorted(sources)) or None


def _fpga_table(data: ReportData) -> str:
    """Estimated resources and throughput of the Pareto configurations on an FPGA."""
    rows = []
    for point in data.pareto:
        fpga = point.trial.measurement.fpga
        if not fpga:
            continue
        used = [f"{'?' if fpga['used'][k] is None else round(fpga['used'][k])} / "
                f"{round(fpga['available'][k])}" for k in ("DSP", "LUT", "FF", "memory")]
        busy = ", ".join(f"{k} {v:.2f}" for k, v in fpga["busy_ms_by_operator"].items())
        rows.append([point.trial.number, *used, f"{fpga['throughput_per_s']:.1f}",
                     f"{100 * fpga['memory_bound_share']:.1f}%", busy])
    if not rows:
        return ""
    notes = sorted({note for p in data.pareto
                    for note in (p.trial.measurement.fpga or {}).get("notes", [])})
    return ("<h2>Estimated FPGA resources</h2>"
            f"<p>Latency, power and resources {escape(_estimate_source(data))}. Candidates that do "
            "not fit the part were rejected before being built.</p>"
            + table(["trial", "DSP", "LUT", "FF", "memory (BRAM_18K)", "images/s",
                      "waiting on weights", "busy ms by operator"], rows, wrap=(7,))
            + "".join(f"<p class='note'>{escape(note)}</p>" for note in notes))


def _energy_cell(energy: EnergyRecord) -> str:
    if energy.status == "unavailable":
        return "unavailable"
    if energy.ci95 is None:
        return f"{energy.joules_per_call:.4f} ({energy.status})"
    low, high = energy.ci95
    return f"{energy.joules_per_call:.4f} [{low:.4f}, {high:.4f}] ({energy.status})"


def _knobs_cell(knobs: list[KnobSupport]) -> str:
    """Active knobs in short; a knob the device does not accelerate is marked, never hidden."""
    parts = [f"{k.knob}: {k.detail}" + ("" if k.accelerated else " (NOT accelerated)")
             for k in knobs if not (k.knob == "precision" and k.value == "fp32")]
    return "; ".join(parts) or "none (fp32)"


def _runtime_cell(trial: TrialRecord) -> str:
    """How the point was run: eager (trials stored before runtimes existed ran eager), or the
    runtime with its preparation time and its parity with eager."""
    runtime = trial.measurement.runtime
    if runtime is None or runtime.parity is None:
        return trial.config.get("runtime", "eager")
    return (f"{runtime.runtime} (prepared {runtime.prepare_s:.1f} s; max |Δ logit| vs "
            f"eager {runtime.parity.max_abs_diff:.1g})")


def _knob_support(data: ReportData) -> str:
    notes = data.metadata.get("capability_notes", [])
    items = "".join(f"<li>{escape(note)}</li>" for note in notes)
    intro = (f"<p>Search space restricted to what the device accelerates:</p><ul>{items}</ul>"
             if notes else "")
    rows = [[k.knob, k.value, "yes" if k.accelerated else "no", k.how]
            for k in data.knob_support]
    knobs = table(["knob", "value", "accelerated", "how"], rows, wrap=(3,)) if rows else (
        "<p>No measured trial used a knob.</p>")
    return intro + knobs + (
        "<p class='note'>Token pruning, merging and attention variants do less work through the "
        "same dense kernels, so their measured latency is their real effect. Sparsity and "
        "precision need kernels: where a device lacks them, masks are still applied (the "
        "accuracy effect is real) and the measured latency shows no gain.</p>")


def _failed_table(data: ReportData) -> str:
    failed = [t for t in data.trials if t.state == "FAIL"]
    if not failed:
        return ""
    rows = [[t.number, t.attributes.get("error", ""), json.dumps(t.config, separators=(",", ":"))]
            for t in failed]
    return "<h2>Failed trials</h2>" + table(
        ["trial", "error", "config"], rows, css_id="failed", wrap=(1, 2)
    )


def _remeasured_section(data: ReportData) -> str:
    """Each re-measured candidate: the search's median, the re-measured one, and whether it is
    on either front; a point that left the front is said so."""
    remeasured = data.remeasured
    if remeasured is None:
        return ""
    rows = []
    for point in sorted(remeasured.points, key=lambda p: p.median_ms):
        change = (" (left the front)" if point.on_first_front and not point.on_final_front else
                  " (joined the front)" if point.on_final_front and not point.on_first_front
                  else "")
        rows.append([point.trial, _median_and_interval(point.search_median_ms,
                                                       point.search_ci95_ms),
                     _median_and_interval(point.median_ms, point.ci95_ms),
                     f"{point.p_dominated:.2f}", "yes" if point.on_first_front else "no",
                     ("yes" if point.on_final_front else "no") + change])
    share = (f"{100 * remeasured.probe_share:.1f}%" if remeasured.probe_share is not None
             else "none (no probe)")
    contention = remeasured.contention
    if contention is None:
        host = "not checked (--no-contention-check)"
    else:
        host = ("busy: " + "; ".join(contention.reasons) if contention.contended
                else "quiet throughout")
    left_out = (f" {len(remeasured.left_out)} more candidates within their CI of the front were "
                f"left out (at most {MAX_CANDIDATES} are re-measured): trials "
                f"{', '.join(map(str, remeasured.left_out))}." if remeasured.left_out else "")
    unused = (f"<p><b>Not used</b>: {escape(data.remeasured_unused)}. The front above is the "
              "search's.</p>" if data.remeasured_unused else "")
    return ("<h2>Re-measured front</h2>" + unused
            + f"<p class='note'>When the search ended, the {len(remeasured.points)} candidates "
            "that could be on the front (the front, and each point that would not be dominated "
            "at the lower bound of its latency CI) were built once and timed again side by side "
            f"on {escape(remeasured.device)} ({escape(remeasured.measured_at)}, "
            f"{remeasured.duration_s:.0f} s): {remeasured.rounds} interleaved rounds (ABC ABC "
            f"...), each candidate timed {remeasured.round_s:.2f} s per round with the reference "
            f"probe in its precision ({escape(remeasured.probe)}) between its timing blocks, "
            f"latency {escape(remeasured.drift_status)} per round by the probe. Re-measured median: the "
            "median of the round medians; its 95% CI and P(dominated) come from a bootstrap "
            f"over rounds ({remeasured.resamples} resamples), the rounds resampled jointly for "
            "every candidate because they share the host's drift; accuracy is held fixed at the "
            "search's estimate. The final front is the non-dominated points on the re-measured "
            f"medians. Probe overhead: {share} of the timing. Host: {escape(host)}.{escape(left_out)} "
            "Every trial keeps its original samples; the rounds' samples are in the study's "
            "<code>remeasured_front</code> record.</p>"
            + table(["trial", "first median [95% CI] (ms)", "re-measured median [95% CI] (ms)",
                      "P(dominated)", "on first front", "on final front"], rows,
                     css_id="remeasured"))


def _median_and_interval(median: float, interval: Sequence[float]) -> str:
    return f"{median:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def _contended_table(data: ReportData) -> str:
    """Trials timed on a busy host, apart like failed ones: their latency is not the model's."""
    if not data.contended:
        return ""
    rows = []
    for t in data.contended:
        contention = t.measurement.contention
        rows.append([t.number, f"{t.latency.median:.3f}", contention.takes,
                     "; ".join(contention.reasons), ", ".join(contention.busiest) or "not named"])
    return ("<h2>Measured on a busy host</h2><p class='note'>Other work on the host slowed these "
            "measurements; each was retaken after waiting for the host to settle, and it never "
            "did. They are kept, with their samples, but left out of the front.</p>"
            + table(["trial", "latency median (ms)", "takes", "evidence", "busiest processes"],
                     rows, css_id="contended", wrap=(3, 4)))


def _all_trials_table(data: ReportData) -> str:
    header = ["trial", "state", "feasible", "GMACs", "params (M)", "latency median (ms)",
              "accuracy estimate", "run by", "note", "config"]
    rows = []
    for t in data.trials:
        rows.append([
            t.number, t.state, "yes" if t.feasible else "no",
            f"{t.gmacs:.3f}" if t.gmacs is not None else "",
            f"{t.params_m:.2f}" if t.params_m is not None else "",
            f"{t.latency.median:.3f}" if t.latency else "",
            f"{t.accuracy_value:.4f}" if t.accuracy else "",
            f"{t.attributes.get('host', '?')} pid {t.attributes.get('pid', '?')}, "
            f"{data.metadata.get('device')}",
            t.note,
            json.dumps(t.config, separators=(",", ":")),
        ])
    return (f"<details><summary>{len(rows)} trials</summary>"
            f"{table(header, rows, wrap=(8, 9))}</details>")


def _space_table(space: dict[str, Any]) -> str:
    rows = [[key, ", ".join(_format_knob(c) for c in dim["choices"]),
             "per block" if dim["per_layer"] else ""]
            for key, dim in space.get("params", {}).items()]
    return table(["key", "choices", ""], rows)


def _energy_method(data: ReportData) -> str:
    """How energy was obtained across the measured trials: sources used, or why there was none."""
    energies = [t.measurement.energy for t in data.measured if "energy" in t.stored]
    if not energies:
        return "<b>Energy</b>: not recorded for these trials."
    sources = sorted({f"{e.status} from {e.source} ({e.reason})" for e in energies
                      if e.status != "unavailable"})
    missing = sorted({e.reason for e in energies if e.status == "unavailable"})
    parts = [f"{escape(s)}" for s in sources] + [f"unavailable: {escape(r)}" for r in missing]
    return ("<b>Energy</b> per call (one batch), with the median's 95% CI over energy windows and "
            "idle power reported apart; no figure is ever guessed: " + "; ".join(parts) + ".")


def _latency_method(meta: dict[str, Any], data: ReportData, protocol: str) -> str:
    estimated = _estimate_source(data)
    if estimated:
        return ("<b>Latency</b>: NOT measured: " + escape(estimated) + ", by the FPGA cost model "
                f"of device {escape(meta.get('device'))} (per-operator cycles of the HLS kernels, "
                "composed by the profile's engine template, bounded by off-chip bandwidth). "
                "The band shown is the calibration's fit error, not a sampling interval.")
    return ("<b>Latency</b>: real executions of the built PyTorch model on the device "
            f"({escape(meta.get('device'))}); warm-up, then timed iterations until the 95% CI of the "
            "median (binomial order statistics) is within the target or the time cap is hit. "
            f"Protocol: <code>{escape(protocol)}</code> (threads null: one per physical core; each "
            "trial records the count it used). Each trial stores its raw samples. "
            + _drift_sentence(data) + " Before and after each measurement the host is checked for "
            "other work (other processes' CPU time, CPU steal, the probe against its quiet time); "
            "a busy host is waited for and the measurement retaken, and one that never settles "
            "is flagged and kept off the front.")


def _drift_sentence(data: ReportData) -> str:
    drifts = [t.measurement.drift for t in data.measured if t.measurement.drift]
    corrected = [d for d in drifts if d.status == "corrected"]
    if not corrected:
        statuses = sorted({d.status for d in drifts}) or ["not recorded"]
        return f"Latencies are raw (drift correction: {', '.join(statuses)})."
    shares = sorted(d.probe_share for d in corrected if d.probe_share is not None)
    share = f"; its time was {100 * shares[len(shares) // 2]:.1f}% of the timing (median)" \
        if shares else ""
    return (f"Latencies shown are drift-corrected ({len(corrected)} of {len(drifts)} trials): a "
            "reference probe in the candidate's precision "
            f"({escape(', '.join(sorted({d.probe for d in corrected})))}) timed between the "
            "timing blocks scales each raw median by the probe's calibrated quiet time over its "
            "time in the window, so candidates measured minutes apart compare as if side by "
            f"side{share}. Each trial keeps its raw latency (latency_raw_ms).")


def _accuracy_method(meta: dict[str, Any]) -> str:
    checks = meta.get("estimator_rank_checks") or []
    # one item per reference: each quote holds its own "; "-separated ceiling and baselines
    ranking = ("Its measured ranking quality on this space (<code>harness rank-check</code>):<ul>"
               + "".join(f"<li>{escape(check)}</li>" for check in checks) + "</ul>"
               if checks else "Its ranking quality on this space has not been measured (run "
               f"<code>harness rank-check --space {escape(meta.get('space', {}).get('name'))} "
               f"--accuracy {escape(meta.get('estimator'))}</code>).")
    source = meta.get("accuracy_source") or {}
    scored = ("scored as measured: token reduction, sparsity and precision applied"
              if source.get("scores_as_measured") else "computed on the fp32 model (it sees "
              "token reduction and sparsity masks, not the effect of lower precision)")
    return (f"<b>Accuracy estimate</b> ({escape(meta.get('estimator'))}): "
            f"{escape(meta.get('estimator_description', ''))}; {scored}. "
            f"{_supernet_origin(source.get('supernet'))}{ranking}")


def _supernet_origin(supernet: dict[str, Any] | None) -> str:
    if not supernet:
        return ""
    minutes, seconds = divmod(round(supernet["trained_s"]), 60)
    return (f"Supernet <code>{escape(supernet['key'])}</code>: the space's largest configuration "
            f"({supernet['params_m']:.2f} M parameters at the data's size) trained on "
            f"{escape(supernet['dataset_title'])} for {supernet['steps']} steps (seed "
            f"{supernet['seed']}, {minutes}:{seconds:02d}, harness {escape(supernet['harness_version'])}"
            f"); held-out top-1 of its largest sub-network {supernet['heldout']['largest_top1']:.3f}"
            f", of its smallest {supernet['heldout']['smallest_top1']:.3f}. ")


def _methods(meta: dict[str, Any], data: ReportData) -> str:
    protocol = json.dumps(meta.get("run_settings", {}).get("measurement", {}))
    items = [
        ("<b>GMACs and parameters</b>: closed-form count (<code>harness.cost.estimate_cost</code>), "
        "which equals fvcore's count of the built model (tested); ViT papers call "
        "these GMACs 'GFLOPs' and the <code>gflop</code> budget unit follows that convention. "
        "Effective GMACs leave out the MACs of zero weights (sparsity); budgets use GMACs."),
        _latency_method(meta, data, protocol),
        _accuracy_method(meta),
        ("<b>Budgets</b>: hard constraints through Optuna's constraint API; MAC and parameter "
        "budgets are checked analytically before a candidate is built (rejected trials are "
        "PRUNED with their violation, which TPE learns from); a latency budget is checked on the "
        "measured median."),
        _energy_method(data),
        ("<b>Throttling</b>: a trial whose device reported a throttle reason during timing is "
         "marked THROTTLED next to its latency; 'unknown' where the device cannot tell."),
    ]
    return "<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>"
