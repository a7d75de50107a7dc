"""``harness measure``, ``devices`` and ``spaces``: one configuration measured, and what there is to search."""

from __future__ import annotations

import argparse
import json
from typing import Any

from harness.cli.common import (
    DEFAULT_ESTIMATOR,
    UsageError,
    add_config_options,
    add_device_option,
    add_json_option,
    add_measurement_options,
    add_pretrained_options,
    config_from_args,
    pretrained_estimator,
    protocol_from_args,
    say,
)
from harness.records import LatencyRecord, MeasurementRecord, RuntimeRecord


def add_measure_parser(commands: Any) -> None:
    measure = commands.add_parser(
        "measure", help="cost, latency and accuracy estimate of one configuration",
        description="Count the cost of one configuration (analytic and fvcore) and measure it.",
    )
    add_config_options(measure)
    add_device_option(measure)
    measure.add_argument("--accuracy", metavar="SPEC",
                         help="also estimate accuracy with this estimator, e.g. proxy:dss or "
                         f"{DEFAULT_ESTIMATOR} (default: none, so cost and latency come at once)")
    measure.add_argument("--space", help="with --accuracy supernet:...: the space whose supernet "
                         "the configuration inherits its weights from")
    add_pretrained_options(measure)
    measure.add_argument("--no-latency", action="store_true",
                         help="count cost (and estimate accuracy, with --accuracy) only; build "
                         "nothing on the device")
    add_measurement_options(measure)
    add_json_option(measure, "print one JSON object")
    measure.set_defaults(handler=cmd_measure)


def add_devices_parser(commands: Any) -> None:
    devices = commands.add_parser(
        "devices", help="list the device profiles and whether each device is on this host",
        description="List every bundled device profile with its kind, whether the device is "
        "present on this host and, if not, why (no CUDA, no NVML, a GPU of another name...).",
    )
    add_json_option(devices, "print a list of {name, kind, present, reason, description}")
    devices.set_defaults(handler=cmd_devices)


def add_spaces_parser(commands: Any) -> None:
    spaces = commands.add_parser("spaces", help="list the bundled search spaces")
    add_json_option(spaces, "print each space's name, description, size and smallest GMACs as JSON")
    spaces.set_defaults(handler=cmd_spaces)


def cmd_measure(args: argparse.Namespace) -> int:
    from harness.accuracy import get_estimator
    from harness.checkpoint import load_checkpoint
    from harness.cost import estimate_cost
    from harness.cost_fvcore import count_cost_fvcore
    from harness.devices import get_device
    from harness.environment import capture_environment
    from harness.models import build_model
    from harness.search.objective import estimate_accuracy, measure_candidate
    from harness.space import load_space

    config = config_from_args(args)
    checkpoint = load_checkpoint(args.weights) if args.weights else None
    if checkpoint is not None:
        config = checkpoint.fit(config)
    weights = checkpoint.tensors if checkpoint is not None else None
    if args.data and checkpoint is None:
        raise UsageError("--data scores a pretrained checkpoint: give its --weights PATH too")
    if args.data and args.accuracy:
        raise UsageError("--data with --weights is the accuracy estimate; leave out --accuracy")
    if args.data:
        estimator = pretrained_estimator(args, checkpoint, config.img_size)
    else:
        estimator = get_estimator(args.accuracy) if args.accuracy else None
    device = get_device(args.device)
    device.check_runtime(config)
    if estimator is not None and estimator.needs_space:
        if not args.space:
            raise UsageError(f"--accuracy {estimator.spec} scores a configuration of a space: "
                             "pass --space NAME (the space whose supernet it inherits from)")
        estimator.prepare(load_space(args.space), on_progress=say)
    elif args.space:
        raise UsageError("--space is for --accuracy supernet:...; the configuration comes from "
                         "--arch, --config and --set")
    analytic = estimate_cost(config)
    model = build_model(config, shared_weights=weights)
    traced = count_cost_fvcore(model, config)
    result: dict[str, Any] = {
        "arch": str(args.config) if args.config else args.arch,
        "config": config.to_dict(),
        "config_key": config.key(),
        "gmacs": analytic.gmacs,
        "effective_gmacs": analytic.effective_gmacs,
        "params_m": analytic.params_m,
        "gmacs_fvcore": traced.gmacs,
        "effective_gmacs_fvcore": traced.effective_gmacs,
        "params_m_fvcore": traced.params_m,
        "tokens_per_block": [counts.tokens_out for counts in config.token_plan()],
        "device": device.name,
        "knobs": [k.to_json() for k in device.knob_support(config)],
    }
    if checkpoint is not None:
        result["weights"] = checkpoint.describe()
    candidate = None
    if not args.no_latency:
        candidate = measure_candidate(config, device, estimator, protocol_from_args(device, args),
                                      shared_weights=weights)
        result.update(candidate.to_json())
    elif estimator is not None:
        result["accuracy"] = estimate_accuracy(model, config, estimator)
    result["env"] = capture_environment(device)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_measurement(result, candidate.measurement if candidate else None)
    return 0


def _ms(value: float | None, min_samples: int) -> str:
    return f"{value:.3f} ms" if value is not None else f"n/a (<{min_samples} samples)"


def _print_measurement(result: dict[str, Any], measurement: MeasurementRecord | None) -> None:
    print(f"{result['arch']} ({result['config_key']}) on {result['device']}")
    if "weights" in result:
        weights = result["weights"]
        print(f"  weights     {weights['path']} (sha256 {weights['sha256'][:12]}, "
              f"{weights['params_m']:.3f} M parameters, {weights['num_classes']} classes)")
    print(f"  GMACs       {result['gmacs']:.4f}  (fvcore {result['gmacs_fvcore']:.4f})")
    if result["effective_gmacs"] != result["gmacs"]:
        print(f"  effective   {result['effective_gmacs']:.4f} GMACs without zero weights "
              f"(fvcore {result['effective_gmacs_fvcore']:.4f})")
    print(f"  params      {result['params_m']:.3f} M  (fvcore {result['params_m_fvcore']:.3f} M)")
    print(f"  tokens      {result['tokens_per_block']} after each block")
    for knob in result["knobs"]:
        verdict = "accelerated" if knob["accelerated"] else "NOT accelerated"
        print(f"  {knob['knob']:<11} {knob['detail']}: {verdict} on {result['device']} "
              f"({knob['how']})")
    if measurement is not None:
        lat, protocol, energy = measurement.latency, measurement.protocol, measurement.energy
        if lat.estimated:
            _print_estimate(lat, measurement.fpga, protocol)
        else:
            print(f"  latency     median {lat.median:.3f} ms  p90 {_ms(lat.p90, 64)}  "
                  f"95% CI [{lat.ci95[0]:.3f}, {lat.ci95[1]:.3f}]  CV {lat.cv:.3f}  "
                  f"n={lat.n} (batch {protocol['batch_size']}, {protocol['threads']} threads, "
                  f"stopped by {protocol['stop_reason']})")
        if energy.status == "unavailable":
            print(f"  energy      unavailable: {energy.reason}")
        elif energy.ci95 is None:
            print(f"  energy      {energy.joules_per_call:.4f} J per call "
                  f"({energy.status}, {energy.source}: {energy.reason})")
        else:
            low, high = energy.ci95
            print(f"  energy      {energy.joules_per_call:.4f} J per call "
                  f"[{low:.4f}, {high:.4f}] ({energy.status}, {energy.source}; idle "
                  f"{energy.idle_power_w:.1f} W; {energy.reason})")
        if measurement.runtime is not None:
            _print_runtime(measurement.runtime)
        if measurement.throttled:
            print("  THROTTLED   "
                  f"{measurement.conditions.get('throttle_reasons', 'see conditions')}")
    if "accuracy" in result:
        accuracy = result["accuracy"]
        print(f"  accuracy    {accuracy['value']:.4f} ({accuracy['estimator']})")
        if "delta_top1" in accuracy:
            low, high = accuracy["ci95"]
            print(f"  Δ top-1     {accuracy['delta_top1'] * 100:+.2f} points against the "
                  f"unmodified checkpoint ({accuracy['baseline_top1']:.4f}), paired 95% CI "
                  f"[{low * 100:+.2f}, {high * 100:+.2f}] on {accuracy['heldout_images']} images")
    else:
        print("  accuracy    not estimated (give --accuracy SPEC, e.g. proxy:dss or "
              f"{DEFAULT_ESTIMATOR})")


def _print_runtime(runtime: RuntimeRecord) -> None:
    parity = runtime.parity
    if parity is None:
        print(f"  runtime     {runtime.runtime}")
        return
    print(f"  runtime     {runtime.runtime}, prepared in {runtime.prepare_s:.1f} s; parity "
          f"with eager: max |Δ logit| {parity.max_abs_diff:.2g} (bound {parity.bound:g}), "
          f"top-1 agreement {parity.top1_agreement:.0%} of {parity.images} images")


def _print_estimate(lat: LatencyRecord, fpga: dict[str, Any], protocol: dict[str, Any]) -> None:
    band = lat.error_band
    print(f"  latency     {lat.median:.3f} ms ESTIMATED"
          + (f" (fit-error band {band[0]:.3f}..{band[1]:.3f} ms)" if band else "")
          + f", batch {protocol['batch_size']}, {protocol['template']} engine; {lat.source}")
    print(f"  throughput  {fpga['throughput_per_s']:.1f} images/s; off-chip weight streaming "
          f"{100 * fpga['memory_bound_share']:.1f}% of the latency")
    used = ", ".join(
        f"{key} {'?' if value is None else round(value)}/{round(fpga['available'][key])}"
        for key, value in fpga["used"].items())
    print(f"  resources   {used} (memory in BRAM_18K)"
          + ("" if fpga["fits"] else "  DOES NOT FIT the part"))
    for note in fpga["notes"]:
        print(f"  note        {note}")


def cmd_devices(args: argparse.Namespace) -> int:
    from harness.devices import device_statuses

    statuses = device_statuses()
    if args.json:
        print(json.dumps([s.to_dict() for s in statuses], indent=2))
        return 0
    for status in statuses:
        where = "present" if status.present else "absent"
        print(f"{status.name:<12} {status.kind:<8} {where:<8} {status.reason}")
    return 0


def cmd_spaces(args: argparse.Namespace) -> int:
    from harness.cost import estimate_cost
    from harness.space import bundled_space_names, load_space

    rows = []
    for name in bundled_space_names():
        space = load_space(name)
        smallest = min(estimate_cost(c).gmacs for c in space.corner_configs())
        rows.append({"name": name, "description": space.description, "size": space.size(),
                     "min_gmacs": round(smallest, 4)})
    if args.json:
        print(json.dumps(rows, indent=2))
    for row in rows if not args.json else []:
        print(f"{row['name']:<12} {row['size']:.3g} configurations, from {row['min_gmacs']} GMACs: "
              f"{row['description']}")
    return 0
