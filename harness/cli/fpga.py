"""``harness hls show``, ``import``, ``calibrate`` and ``synth``: FPGA boards, estimated from HLS reports."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from harness.cli.common import (
    Parser,
    add_config_options,
    add_device_option,
    add_json_option,
    config_from_args,
    positive_int,
)
from harness.errors import shorten


def add_hls_parser(commands: Any) -> None:
    hls = commands.add_parser(
        "hls", help="read Vivado/Vitis HLS and Vivado reports (FPGA targets)",
        description="Read HLS synthesis, co-simulation, Vivado utilization and power reports.",
    )
    hls_commands = hls.add_subparsers(dest="hls_command", required=True, parser_class=Parser)
    hls_show = hls_commands.add_parser(
        "show", help="print the normalized record of a report file or of every report in a tree",
        description="Print the normalized record of one report file, or of every report found "
        "under a directory (with the files skipped and why). A malformed file exits with 2.",
    )
    hls_show.add_argument("path", type=Path, help="a report file or an HLS/Vivado project tree")
    add_json_option(hls_show, "print JSON records")
    hls_show.set_defaults(handler=cmd_hls_show)
    hls_import = hls_commands.add_parser(
        "import", help="store the reports of HLS/Vivado project trees as an FPGA's calibration",
        description="Walk HLS project trees (solution*/syn/report, solution*/sim/report) and "
        "Vivado runs (*.runs/impl_1), and store every report for the part of the device as a "
        "versioned JSON record in the device's calibration directory ($HARNESS_DATA_DIR/fpga/"
        "DEVICE). Reports already imported are skipped; reports for another part are listed.",
    )
    hls_import.add_argument("paths", type=Path, nargs="+", metavar="DIR",
                            help="HLS project trees, Vivado run directories or report files")
    _add_fpga_device_option(hls_import)
    hls_import.add_argument("--clock-mhz", type=float,
                            help="the clock the Vivado designs ran at (default: the profile's)")
    add_json_option(hls_import, "print a JSON summary")
    hls_import.set_defaults(handler=cmd_hls_import)
    hls_calibrate = hls_commands.add_parser(
        "calibrate", help="fit the FPGA cost model to the imported reports; print each fit error",
        description="Fit per-operator latency (cycles), resources and power of an FPGA device "
        "to its imported reports and print every fit with its error (held out when there are "
        "more reports than coefficients).",
    )
    _add_fpga_device_option(hls_calibrate)
    add_json_option(hls_calibrate, "print the fit as JSON")
    hls_calibrate.set_defaults(handler=cmd_hls_calibrate)
    hls_synth = hls_commands.add_parser(
        "synth", help="generate a candidate's HLS kernels, run C synthesis and import the reports",
        description="Write the matmul, softmax, LayerNorm and GELU kernels a configuration runs "
        "on the device's engine as HLS projects, synthesize each with vitis_hls or vivado_hls "
        "(whichever is on PATH) and import the reports. Without the tools the projects are "
        "written and the synthesis is skipped, with a message.",
    )
    _add_fpga_device_option(hls_synth)
    add_config_options(hls_synth)
    hls_synth.add_argument("--batch-size", type=positive_int, default=1,
                           help="images per call (default 1)")
    hls_synth.add_argument("--out", type=Path, default=Path("hls_kernels"),
                           help="directory for the kernel projects (default hls_kernels)")
    hls_synth.add_argument("--tool", help="HLS tool name or path (default: vitis_hls, else "
                           "vivado_hls, from PATH)")
    hls_synth.add_argument("--timeout", type=float, help="seconds allowed per kernel")
    hls_synth.add_argument("--no-import", action="store_true",
                           help="synthesize only; do not import the reports")
    hls_synth.set_defaults(handler=cmd_hls_synth)


def _add_fpga_device_option(parser: argparse.ArgumentParser) -> None:
    add_device_option(parser, "an fpga-hls device profile", default=None, required=True)


def cmd_hls_show(args: argparse.Namespace) -> int:
    from harness.fpga import hls_show

    print(hls_show(args.path, args.json))
    return 0


def _fpga_device(name: str) -> Any:
    from harness.devices import FpgaHlsDevice, device_statuses, get_device
    from harness.errors import DeviceError

    device = get_device(name)
    if not isinstance(device, FpgaHlsDevice):
        fpgas = ", ".join(s.name for s in device_statuses() if s.kind == FpgaHlsDevice.kind)
        raise DeviceError(f"device {shorten(device.name)} is of kind {device.kind!r}; HLS reports "
                          f"calibrate fpga-hls devices: {fpgas}")
    return device


def cmd_hls_import(args: argparse.Namespace) -> int:
    from harness.fpga.calibration import import_reports
    from harness.fpga.records import HlsReportError

    device = _fpga_device(args.device)
    missing = [path for path in args.paths if not path.exists()]
    if missing:
        raise HlsReportError(f"{missing[0]}: no such file or directory")
    clock_mhz = device.target.clock_mhz if args.clock_mhz is None else args.clock_mhz
    result = import_reports(args.paths, device.name, device.target.part, clock_mhz)
    if args.json:
        print(json.dumps({
            "device": device.name, "store": str(result.store),
            "stored": [str(p) for p in result.stored],
            "already_imported": [str(p) for p in result.already_imported],
            "reclocked": [{"path": str(p), "previous_clock_mhz": c} for p, c in result.reclocked],
            "skipped": [{"path": str(p), "reason": r} for p, r in result.skipped],
        }, indent=2))
        return 0
    for path, reason in result.skipped:
        print(f"skipped {path}: {reason}")
    for path, previous in result.reclocked:
        print(f"re-imported {path} at {clock_mhz:g} MHz (it was stored with {previous:g} MHz)")
    print(f"{len(result.stored)} report(s) stored in {result.store}, "
          f"{len(result.reclocked)} re-clocked, "
          f"{len(result.already_imported)} already there, {len(result.skipped)} skipped; "
          f"see 'harness hls calibrate --device {device.name}'")
    return 0


def cmd_hls_calibrate(args: argparse.Namespace) -> int:
    from harness.fpga.calibration import format_calibration

    calibration = _fpga_device(args.device).calibration
    print(json.dumps(calibration.to_dict(), indent=2) if args.json
          else format_calibration(calibration))
    return 0


def cmd_hls_synth(args: argparse.Namespace) -> int:
    from harness.files import check_writable_dir
    from harness.fpga.calibration import import_reports
    from harness.fpga.estimate import kernels_for
    from harness.fpga.synth import (
        TOOL_MISSING_MESSAGE,
        find_hls_tool,
        synthesize,
        write_kernel_project,
    )

    device = _fpga_device(args.device)
    config = config_from_args(args)
    check_writable_dir(args.out, "kernel project directory")
    specs = kernels_for(config, device.engine, args.batch_size)
    part, clock_ns = device.target.part, 1e3 / device.target.clock_mhz
    if args.tool is None and find_hls_tool() is None:
        for spec in specs:
            write_kernel_project(spec, part, clock_ns, args.out)
        print(f"harness: hls synth skipped: {TOOL_MISSING_MESSAGE}. Wrote {len(specs)} kernel "
              f"projects to {args.out}: run 'vitis_hls -f run_hls.tcl' in each where the tools "
              f"are, then 'harness hls import {args.out} --device {device.name}'", file=sys.stderr)
        return 0
    projects = synthesize(specs, part, clock_ns, args.out, tool=args.tool, timeout_s=args.timeout,
                          on_progress=lambda message: print(message, file=sys.stderr))
    if args.no_import:
        print(f"synthesized {len(projects)} kernels in {args.out}")
        return 0
    result = import_reports(projects, device.name, part, device.target.clock_mhz)
    print(f"synthesized {len(projects)} kernels in {args.out}; {len(result.stored)} report(s) "
          f"stored in {result.store}; see 'harness hls calibrate --device {device.name}'")
    return 0
