"""Command line: ``main(argv) -> exit code``; the console script is a thin wrapper.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback unless ``--debug``),
130 interrupted (finished trials are kept and the same command resumes).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, shorten

DEFAULT_SPACE = "vit_tiny"
DEFAULT_DEVICE = "cpu"
DEFAULT_TRIALS = 30
# A weight-sharing supernet, trained once per space: a candidate is scored in about a second, where
# short training took 30-45 s, and no zero-cost proxy ranked better than the GMAC count
# (harness rank-check; figures in README.md).
DEFAULT_ESTIMATOR = "supernet:mnist"
# A second run of the reference costs as much as its first: a third of rank-check's default 30.
DEFAULT_CEILING_N = 10
# Marks the processes ``search --workers K`` starts (not for users: hidden from --help).
LOCAL_WORKER_FLAG = "--local-worker"


class UsageError(HarnessError):
    """Command-line syntax error (argparse)."""


def say(message: str) -> None:
    """A note or a line of progress for the user, on stderr (stdout is for results)."""
    print(f"harness: {message}", file=sys.stderr, flush=True)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # argparse takes "-3ms" for an unknown option ("expected one argument"); as a value it
        # gets the message that names it (no option of ours starts with a digit).
        self._negative_number_matcher = re.compile(r"^-\.?\d")

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="harness",
        description="Hardware-aware architecture search and benchmarking for Vision Transformers.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    search = commands.add_parser(
        "search",
        help="multi-objective search: measured latency vs accuracy estimate under budgets",
        description="Search a ViT space on a device under budgets; write an HTML report with the "
        "Pareto front. Running the same command again resumes the study.",
    )
    _add_search_arguments(search, worker=False)
    search.set_defaults(handler=cmd_search)

    worker = commands.add_parser(
        "worker", help="join a study as one more worker (this host or others)",
        description="Join the study NAME in STORAGE (or create it from these arguments) and "
        "run trials until --trials of its own are done or --timeout passes; SIGINT/SIGTERM stop "
        "it after the current trial. Give the same search arguments as the study was created "
        "with: a worker with another space, budget, estimator or harness version is refused.",
    )
    _add_search_arguments(worker, worker=True)
    worker.set_defaults(handler=cmd_worker)

    measure = commands.add_parser(
        "measure", help="cost, latency and accuracy estimate of one configuration",
        description="Count the cost of one configuration (analytic and fvcore) and measure it.",
    )
    _add_config_options(measure)
    measure.add_argument("--device", default=DEFAULT_DEVICE, help="device profile name or path")
    measure.add_argument("--accuracy", metavar="SPEC",
                         help="also estimate accuracy with this estimator, e.g. proxy:dss or "
                         f"{DEFAULT_ESTIMATOR} (default: none, so cost and latency come at once)")
    measure.add_argument("--space", help="with --accuracy supernet:...: the space whose supernet "
                         "the configuration inherits its weights from")
    _add_pretrained_options(measure)
    measure.add_argument("--no-latency", action="store_true",
                         help="count cost (and estimate accuracy, with --accuracy) only; build "
                         "nothing on the device")
    _add_measurement_options(measure)
    measure.add_argument("--json", action="store_true", help="print one JSON object")
    measure.set_defaults(handler=cmd_measure)

    report = commands.add_parser(
        "report", help="(re)write the HTML report and pareto.json of a study",
        description="Write report.html, pareto.json and trials.json from a study's storage.",
    )
    report.add_argument("out", type=Path, help="the study's output directory")
    report.add_argument("--storage", help="storage URL or journal file (default OUT/study.journal)")
    report.add_argument("--study", help="study name (default: the only study in the storage)")
    report.add_argument("--remeasure", action="store_true",
                        help="first re-measure the front's candidates side by side, in "
                        "interleaved rounds, on the study's device (it must be on this host)")
    report.add_argument("--device", metavar="PROFILE",
                        help="with --remeasure: the study's device profile, by name or path "
                        "(default: the name the study records)")
    report.add_argument("--weights", type=Path, metavar="PATH",
                        help="with --remeasure: the checkpoint a study of pretrained weights "
                        "searched")
    report.set_defaults(handler=cmd_report)

    export = commands.add_parser(
        "export", help="write a trial or a configuration as a model that loads without the harness",
        description="Write a directory with config.yaml, model.safetensors (timm's key names), "
        "model.pt2 (torch.export), model.onnx with its parity against eager, check.safetensors, "
        "model_card.json (what was measured, with its provenance) and a README on loading it "
        "with plain PyTorch, timm or ONNX Runtime. Needs the onnx extra.",
    )
    export.add_argument("search_out", nargs="?", type=Path, metavar="SEARCH_OUT",
                        help="a search's output directory (as 'harness report' takes)")
    export.add_argument("--trial", type=int, metavar="N", help="with SEARCH_OUT: the trial to export")
    export.add_argument("--config", type=Path, metavar="FILE",
                        help="instead of SEARCH_OUT: a configuration (YAML/JSON) or one "
                        "pareto.json entry")
    export.add_argument("--out", type=Path, required=True, help="the directory to write")
    export.add_argument("--storage", help="storage URL or journal file (default "
                        "SEARCH_OUT/study.journal)")
    export.add_argument("--study", help="study name (default: the only study in the storage)")
    export.add_argument("--weights", type=Path, metavar="PATH",
                        help="the checkpoint the study searched, or for --config the weights "
                        "to export")
    export.add_argument("--supernet", action="store_true",
                        help="export the weights the trial inherits from the study's supernet "
                        "(at the supernet's data shape) instead of those its latency was "
                        "measured on")
    export.add_argument("--force", action="store_true", help="replace an existing --out")
    export.set_defaults(handler=cmd_export)

    repair = commands.add_parser(
        "repair", help="move the damaged end of a study's journal file aside so it loads again",
        description="Keep the complete records of a journal file before its first damaged line "
        "(an unterminated record a crash or a full disk left, or lines that are not records) and "
        "move that line and every line after it to a new side file next to it "
        "(JOURNAL.damaged-UTCTIME). An intact journal is left as it is.",
    )
    repair.add_argument("storage", help="a journal file, or a search's output directory (its "
                        "study.journal)")
    repair.set_defaults(handler=cmd_repair)

    knobs = commands.add_parser(
        "bench-knobs", help="speed-up of each efficiency knob over the dense fp32 model",
        description="Time each knob setting against the dense fp32 model of the same "
        "architecture, interleaved in rounds (the first model alternating), and report the median "
        "speed-up over rounds with its 95% CI next to the MACs the knob saves.",
    )
    knobs.add_argument("--device", default=DEFAULT_DEVICE,
                       help=f"device profile name or YAML path (default {DEFAULT_DEVICE})")
    knobs.add_argument("--arch", nargs="+", default=["deit_small", "deit_tiny"], metavar="ARCH",
                       help="presets (default deit_small deit_tiny)")
    knobs.add_argument("--batch-size", nargs="+", type=int, default=[8], metavar="N",
                       help="images per timed call (default 8)")
    knobs.add_argument("--knob", action="append", metavar="KEY=VALUE[,KEY=VALUE]",
                       help="a knob setting to measure instead of the default ten (repeatable), "
                       "e.g. --knob merge_r=16 --knob keep_rate=0.7,keep_layers=[4,7,10]")
    knobs.add_argument("--rounds", type=int, default=7,
                       help="interleaved rounds per setting (default 7; below 6 the interval is "
                       "the min-max range of the rounds, not a 95%% CI)")
    knobs.add_argument("--iters", type=int, default=5,
                       help="timed calls of each model per round (default 5)")
    knobs.add_argument("--weights", type=Path, metavar="PATH",
                       help="time the knobs on a pretrained checkpoint of the one --arch (timm's "
                       "key names; .pth, .pt, .bin, .safetensors)")
    knobs.add_argument("--out", type=Path, help="directory to write knobs.json and knobs.md to")
    knobs.add_argument("--json", action="store_true", help="print the JSON record on stdout")
    knobs.add_argument("--quiet", action="store_true", help="no per-setting progress on stderr")
    knobs.set_defaults(handler=cmd_bench_knobs)

    devices = commands.add_parser(
        "devices", help="list the device profiles and whether each device is on this host",
        description="List every bundled device profile with its kind, whether the device is "
        "present on this host and, if not, why (no CUDA, no NVML, a GPU of another name...).",
    )
    devices.add_argument("--json", action="store_true",
                         help="print a list of {name, kind, present, reason, description}")
    devices.set_defaults(handler=cmd_devices)

    hls = commands.add_parser(
        "hls", help="read Vivado/Vitis HLS and Vivado reports (FPGA targets)",
        description="Read HLS synthesis, co-simulation, Vivado utilization and power reports.",
    )
    hls_commands = hls.add_subparsers(dest="hls_command", required=True, parser_class=_Parser)
    hls_show = hls_commands.add_parser(
        "show", help="print the normalized record of a report file or of every report in a tree",
        description="Print the normalized record of one report file, or of every report found "
        "under a directory (with the files skipped and why). A malformed file exits with 2.",
    )
    hls_show.add_argument("path", type=Path, help="a report file or an HLS/Vivado project tree")
    hls_show.add_argument("--json", action="store_true", help="print JSON records")
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
    hls_import.add_argument("--device", required=True, help="an fpga-hls device profile")
    hls_import.add_argument("--clock-mhz", type=float,
                            help="the clock the Vivado designs ran at (default: the profile's)")
    hls_import.add_argument("--json", action="store_true", help="print a JSON summary")
    hls_import.set_defaults(handler=cmd_hls_import)
    hls_calibrate = hls_commands.add_parser(
        "calibrate", help="fit the FPGA cost model to the imported reports; print each fit error",
        description="Fit per-operator latency (cycles), resources and power of an FPGA device "
        "to its imported reports and print every fit with its error (held out when there are "
        "more reports than coefficients).",
    )
    hls_calibrate.add_argument("--device", required=True, help="an fpga-hls device profile")
    hls_calibrate.add_argument("--json", action="store_true", help="print the fit as JSON")
    hls_calibrate.set_defaults(handler=cmd_hls_calibrate)
    hls_synth = hls_commands.add_parser(
        "synth", help="generate a candidate's HLS kernels, run C synthesis and import the reports",
        description="Write the matmul, softmax, LayerNorm and GELU kernels a configuration runs "
        "on the device's engine as HLS projects, synthesize each with vitis_hls or vivado_hls "
        "(whichever is on PATH) and import the reports. Without the tools the projects are "
        "written and the synthesis is skipped, with a message.",
    )
    hls_synth.add_argument("--device", required=True, help="an fpga-hls device profile")
    _add_config_options(hls_synth)
    hls_synth.add_argument("--batch-size", type=int, default=1, help="images per call (default 1)")
    hls_synth.add_argument("--out", type=Path, default=Path("hls_kernels"),
                           help="directory for the kernel projects (default hls_kernels)")
    hls_synth.add_argument("--tool", help="HLS tool name or path (default: vitis_hls, else "
                           "vivado_hls, from PATH)")
    hls_synth.add_argument("--timeout", type=float, help="seconds allowed per kernel")
    hls_synth.add_argument("--no-import", action="store_true",
                           help="synthesize only; do not import the reports")
    hls_synth.set_defaults(handler=cmd_hls_synth)

    bench = commands.add_parser(
        "bench", help="run a benchmark suite and store one result file per entry",
        description="Measure every entry of a benchmark suite (benchmarks/suites/NAME.yaml or a "
        "path) on a device and store one JSON file per entry under OUT/MACHINE/COMMIT/SUITE/, "
        "with the raw samples, summary, energy and environment. Nothing is overwritten.",
    )
    bench.add_argument("--suite", default="smoke", help="suite name or YAML path (default smoke)")
    bench.add_argument("--device", default=DEFAULT_DEVICE,
                       help=f"device profile name or YAML path (default {DEFAULT_DEVICE})")
    bench.add_argument("--out", type=Path, default=Path("bench-results"),
                       help="results directory (default bench-results)")
    bench.add_argument("--entry", action="append", metavar="NAME",
                       help="run only this entry (repeatable)")
    bench.add_argument("--rounds", type=int, default=1,
                       help="measure every entry this many times, interleaved (default 1; "
                       "'harness compare' treats 5 or more runs per entry as replicates)")
    bench.add_argument("--json", action="store_true", help="print the written paths as JSON")
    bench.set_defaults(handler=cmd_bench)

    compare = commands.add_parser(
        "compare", help="base-vs-head comparison of benchmark results (PR reports)",
        description="Compare two sets of benchmark results (directories or files written by "
        "'harness bench'): per entry the change of the median with its 95% CI, the Mann-Whitney "
        "U p-value (Holm-corrected across entries) and a decision against the entry's threshold.",
    )
    compare.add_argument("base", type=Path, nargs="?",
                         help="base results: a directory or a result file")
    compare.add_argument("head", type=Path, nargs="?",
                         help="head results: a directory or a result file")
    compare.add_argument("--base-rev", metavar="REV",
                         help="instead of result sets: install this git revision and the head "
                         "revision and benchmark both in this job, interleaved")
    compare.add_argument("--head-rev", metavar="REV", help="the head revision (with --base-rev)")
    compare.add_argument("--suite", default="smoke",
                         help="with --base-rev: suite name or path (default smoke)")
    compare.add_argument("--device", default=DEFAULT_DEVICE,
                         help=f"with --base-rev: device (default {DEFAULT_DEVICE})")
    compare.add_argument("--rounds", type=int,
                         help="with --base-rev: interleaved rounds per revision (default: enough "
                         "for a change to be significant after Holm's correction over the "
                         "suite's entries: 6 for up to 4 entries, 7 for up to 17)")
    compare.add_argument("--results", type=Path, default=Path("bench-results") / "compare",
                         help="with --base-rev: where the results go (default "
                         "bench-results/compare/{base,head})")
    compare.add_argument("--format", default="markdown", metavar="FORMAT",
                         help="markdown (default, for a PR comment), html or json")
    compare.add_argument("--threshold", type=float, metavar="PCT",
                         help="threshold for every entry instead of each entry's own")
    compare.add_argument("--out", type=Path, help="write the output to this file too")
    compare.add_argument("--fail-on-regression", action="store_true",
                         help="exit with code 1 when an entry regressed")
    compare.add_argument("--include-contended", action="store_true",
                         help="also compare runs measured on a busy host (left out by default: "
                         "their latency is not the code's)")
    compare.set_defaults(handler=cmd_compare)

    rank = commands.add_parser(
        "rank-check", help="how well an accuracy estimator ranks a space's architectures",
        description="Sample N architectures of a space, score each with the estimators, the "
        "baselines proxy:params and proxy:gmacs and a reference (training, a table, or another "
        "proxy), score the first K again with the reference's second seed (noise ceiling), and "
        "print a table of Kendall's tau and Spearman's rho with bootstrap 95% CIs; search "
        "reports then quote the measured tau.",
    )
    rank.add_argument("--space", default=DEFAULT_SPACE,
                      help=f"bundled space name or YAML path (default {DEFAULT_SPACE})")
    rank.add_argument("--accuracy", nargs="+", metavar="SPEC",
                      help="the estimators to check, on the same architectures (default: every "
                      "proxy)")
    rank.add_argument("--reference",
                      help="what it should rank like (default train:mnist; with --weights and "
                      "--data, the checkpoint's top-1 on your images)")
    rank.add_argument("--n", type=int, default=30, help="architectures to sample (default 30)")
    rank.add_argument("--seed", type=int, default=0, help="sampling and bootstrap seed")
    rank.add_argument("--sampling", default="stratified", metavar="HOW",
                      help="stratified (default: GMAC bins and every value of every varied key "
                      "covered evenly) or uniform (Optuna's random sampler)")
    rank.add_argument("--ceiling-n", type=int, metavar="K",
                      help="architectures the reference scores again with its second seed, "
                      f"for the noise ceiling (default {DEFAULT_CEILING_N} for a reference with "
                      "a seed, e.g. training; 0: none)")
    rank.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="pin a configuration key of the space")
    rank.add_argument("--out", type=Path,
                      help="also write rank_check.json and rank_check.html here")
    _add_pretrained_options(rank)
    rank.add_argument("--json", action="store_true", help="print the result as JSON")
    rank.set_defaults(handler=cmd_rank_check)

    history = commands.add_parser(
        "history", help="trends of benchmark results over commits, with change points",
        description="Write a self-contained HTML page with, per suite entry and machine, the "
        "median latency over commits with its 95% CI band, detected step changes (binary "
        "segmentation with Mann-Whitney U) and your annotations.",
    )
    history.add_argument("results", type=Path, help="a results directory of 'harness bench'")
    history.add_argument("--out", type=Path, default=Path("history.html"),
                         help="the page to write (default history.html)")
    history.add_argument("--annotations", type=Path, metavar="FILE",
                         help="YAML list of {commit: PREFIX | date: YYYY-MM-DD, text, entry}")
    history.set_defaults(handler=cmd_history)

    supernet = commands.add_parser(
        "supernet", help="the weight-sharing supernet of a space (--accuracy supernet:DATASET)",
        description="Train a space's weight-sharing supernet once; searches with --accuracy "
        "supernet:DATASET then score every candidate with the weights it inherits.",
    )
    supernet_commands = supernet.add_subparsers(dest="supernet_command", required=True,
                                                parser_class=_Parser)
    supernet_train = supernet_commands.add_parser(
        "train", help="train (or resume, or find already trained) a space's supernet",
        description="Train the supernet of SPACE on DATASET with the sandwich rule (largest, "
        "smallest and two random sub-networks per step, token knobs sampled) and keep it in "
        "$HARNESS_DATA_DIR/supernets/ with its training log. An interrupted training resumes "
        "from its last checkpoint; a supernet already trained is only reported. A search with "
        "--accuracy supernet:DATASET[@Nsteps] trains it itself when it is missing.",
    )
    supernet_train.add_argument("--space", default=DEFAULT_SPACE,
                                help=f"bundled space name or YAML path (default {DEFAULT_SPACE})")
    supernet_train.add_argument("--data", default="mnist", metavar="DATASET",
                                help="mnist (default), fashion-mnist, digits or imagefolder:PATH")
    budget = supernet_train.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="training steps (default: the estimator's "
                        "default budget)")
    budget.add_argument("--time", type=int, metavar="S", help="seconds of training instead")
    supernet_train.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    supernet_train.add_argument("--json", action="store_true",
                                help="print the supernet's record (without its log) as JSON")
    supernet_train.set_defaults(handler=cmd_supernet_train)

    spaces = commands.add_parser("spaces", help="list the bundled search spaces")
    spaces.add_argument("--json", action="store_true")
    spaces.set_defaults(handler=cmd_spaces)
    return parser


def _add_search_arguments(parser: argparse.ArgumentParser, worker: bool) -> None:
    parser.add_argument("--space", default=DEFAULT_SPACE,
                        help=f"bundled space name or path to a YAML file (default {DEFAULT_SPACE})")
    parser.add_argument("--device", default=DEFAULT_DEVICE,
                        help=f"device profile name or YAML path (default {DEFAULT_DEVICE})")
    parser.add_argument("--budget", nargs="+", default=[], metavar="BUDGET",
                        help="hard budgets, e.g. 1gflop 500mflop 1.5gmac 5ms 20mparams "
                        "(FLOPs are MACs, as in ViT papers)")
    if worker:
        parser.add_argument("--trials", type=int,
                            help="trials this worker runs (default: until --timeout or stopped)")
        parser.add_argument("--timeout", type=float, metavar="S",
                            help="stop starting trials after this many seconds")
    else:
        parser.add_argument("--trials", type=int, default=DEFAULT_TRIALS,
                            help=f"finished trials the study should hold (default "
                            f"{DEFAULT_TRIALS})")
        parser.add_argument("--workers", type=int, default=1, metavar="K",
                            help="run K processes on this host that fill the study together "
                            "(default 1); for devices that are estimated, not timed here")
        parser.add_argument(LOCAL_WORKER_FLAG, action="store_true", help=argparse.SUPPRESS)
        parser.add_argument("--no-remeasure", action="store_true",
                            help="do not re-measure the front's candidates side by side when the "
                            "search ends (default: interleaved rounds, for devices timed here)")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    parser.add_argument("--sampler", default="tpe", help="tpe (default) or random")
    parser.add_argument("--accuracy",
                        help=f"accuracy estimator (default {DEFAULT_ESTIMATOR}; with --weights, "
                        "the checkpoint on --data)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="pin a configuration key of the space, e.g. --set keep_rate=1.0")
    parser.add_argument("--keep-unaccelerated", action="store_true",
                        help="keep precision and sparsity choices the device does not run faster "
                        "(default: drop them from the space, with a note)")
    parser.add_argument("--study", required=worker,
                        help="study name" + ("" if worker else " (default SPACE-DEVICE-BUDGETS)"))
    parser.add_argument("--storage", required=worker,
                        help="Optuna storage: postgresql:// URL (several hosts) or a journal "
                        "file (one host)" + ("" if worker else "; default OUT/study.journal"))
    parser.add_argument("--out", type=Path, help="output directory (default reports/STUDY)")
    _add_pretrained_options(parser)
    _add_measurement_options(parser)
    parser.add_argument("--quiet", action="store_true", help="no per-trial progress")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")


def _add_pretrained_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", type=Path, metavar="PATH",
                        help="pretrained weights of the architecture (measure: --arch/--config; "
                        "search: the space's, which may vary only training-free knobs), in timm's "
                        "key names (.pth, .pt, .bin, .safetensors; DeiT's nested {'model': ...} "
                        "too); num_classes comes from the checkpoint's head")
    parser.add_argument("--data", metavar="SPEC",
                        help="with --weights: your validation images, imagefolder:PATH (a "
                        "sub-folder per class, sorted = class index) or filelist:FILE (lines "
                        "'PATH LABEL'); the accuracy is top-1 and its change against the "
                        "unmodified checkpoint, with a paired 95%% CI")
    parser.add_argument("--val-images", type=int, metavar="N",
                        help="a fixed, seeded, class-stratified subset of N images, decoded once "
                        "(default 2000)")
    parser.add_argument("--crop-pct", type=float,
                        help="evaluation transform: resize the shorter side to img_size / "
                        "crop_pct, then centre-crop (default 0.875, timm's for DeiT and ViT)")
    parser.add_argument("--interpolation", choices=("bicubic", "bilinear", "nearest"),
                        help="resize filter (default bicubic)")
    parser.add_argument("--mean", type=float, nargs=3, metavar="M",
                        help="per-channel normalisation mean (default ImageNet's)")
    parser.add_argument("--std", type=float, nargs=3, metavar="S",
                        help="per-channel normalisation standard deviation (default ImageNet's)")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", default="deit_tiny",
                        help="preset: deit_tiny (default), deit_small, deit_base")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="a YAML/JSON mapping of configuration keys (or an entry of "
                        "pareto.json) to use instead of a preset")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a configuration key, e.g. --set keep_rate=0.7")


def _config_from_args(args: argparse.Namespace) -> Any:
    """The configuration of ``--arch``/``--config`` and ``--set``, refused if a key it states has
    no effect or it is over a size limit, before anything is loaded or built."""
    from harness.config import check_keys_take_effect, load_config_file, parse_set_options
    from harness.cost import check_buildable
    from harness.models import preset_config

    config, stated = (load_config_file(args.config) if args.config
                      else (preset_config(args.arch), ()))
    overrides = parse_set_options(args.set)
    if overrides:
        config = config.from_dict({**config.to_dict(), **overrides}, where="--set ")
    check_keys_take_effect(config, [*stated, *overrides])
    check_buildable(config)
    return config


def _add_measurement_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, help="images per timed call (default: profile)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: profile)")
    parser.add_argument("--time-cap", type=float, metavar="SECONDS",
                        help="time spent timing one candidate at most (default: profile)")
    parser.add_argument("--no-energy", action="store_true",
                        help="skip the energy windows (energy is then reported as unavailable)")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="GPUs: capture the forward once as a CUDA graph and time its replays")
    parser.add_argument("--l2-flush", action="store_true",
                        help="GPUs: overwrite the L2 cache before each timed call (cold cache)")
    parser.add_argument("--no-contention-check", action="store_true",
                        help="do not watch the host for other work (a busy host's measurements "
                        "are then neither retaken nor flagged contended)")
    parser.add_argument("--no-drift-correction", action="store_true",
                        help="report raw latencies, not corrected by the reference probe timed "
                        "beside them")


def _protocol(device: Any, args: argparse.Namespace) -> Any:
    """The device profile's measurement protocol with the command-line overrides applied."""
    from harness.devices import check_timing_options

    options = {"batch_size": "--batch-size", "threads": "--threads", "time_cap_s": "--time-cap"}
    overrides = {}
    for field, option in options.items():
        value = getattr(args, option[2:].replace("-", "_"))
        if value is not None and value <= 0:
            raise UsageError(f"{option} must be positive, got {value}")
        if value is not None:
            overrides[field] = value
    if args.no_energy:
        overrides["energy"] = False
    if args.no_contention_check:
        overrides["contention_check"] = False
    if args.no_drift_correction:
        overrides["drift_correction"] = False
    for flag in ("cuda_graphs", "l2_flush"):
        if getattr(args, flag):
            overrides[flag] = True
    check_timing_options(device, overrides)
    return dataclasses.replace(device.profile.protocol, **overrides)


def cmd_search(args: argparse.Namespace) -> int:
    from harness.budget import parse_budgets
    from harness.checkpoint import fit_space, load_checkpoint
    from harness.config import parse_set_options
    from harness.devices import get_device
    from harness.files import check_writable_dir, named_child, renamed_note
    from harness.search.local_workers import run_local_workers
    from harness.search.progress import Progress
    from harness.search.study import (
        SearchInterrupted,
        SearchSettings,
        check_budgets_reachable,
        check_device_fits,
        check_runtimes,
        restrict_to_device,
        run_search,
    )
    from harness.space import load_space

    is_worker = args.command == "worker"
    workers = getattr(args, "workers", 1)
    local_worker = getattr(args, "local_worker", False)
    _check_search_options(args, is_worker, workers)
    loaded_space = space = load_space(args.space)
    if args.set:
        space = space.with_fixed(parse_set_options(args.set))
    budgets = parse_budgets(args.budget)
    check_budgets_reachable(space, budgets)
    checkpoint = load_checkpoint(args.weights) if args.weights else None
    if checkpoint is not None:
        loaded_space = space = fit_space(checkpoint, space)
    estimator = _search_estimator(args, checkpoint, space)
    device = get_device(args.device)
    if workers > 1 and device.times_on_this_host:
        raise UsageError(
            f"--workers {workers}: device {shorten(device.name)} is timed on this host, and "
            "timings taken while other workers compute here would measure their load; use "
            "--workers with an estimated device (e.g. --device zcu102), or one 'harness worker' "
            "per host")
    space, capability_notes = restrict_to_device(space, device, args.keep_unaccelerated)
    check_runtimes(space, device)
    protocol = _protocol(device, args)
    check_device_fits(space, device, protocol.batch_size)
    study_name = args.study or "-".join([space.name, device.name, *(b.text for b in budgets)])
    out_dir = args.out or named_child(Path("reports"), study_name)
    check_writable_dir(out_dir)
    if args.storage and "://" not in args.storage:
        check_writable_dir(Path(args.storage).parent, "storage directory")
    # Notes wait until every input has been checked: an error stays the only line printed.
    notes = [*capability_notes, *([renamed_note("study name", study_name)] if not args.out else [])]
    settings = SearchSettings(
        space=space, device=device, estimator=estimator, protocol=protocol,
        budgets=budgets, n_trials=args.trials or 0, seed=args.seed, sampler=args.sampler,
        study_name=study_name, storage=args.storage, out_dir=out_dir,
        worker_trials=args.trials if is_worker else None,
        timeout_s=args.timeout if is_worker else None, local_workers=workers,
        weights=checkpoint, capability_notes=capability_notes,
    )
    progress = Progress(args.trials or 0, quiet=args.quiet)

    def on_start(study: Any) -> None:
        for note in filter(None, notes):
            print(f"harness: note: {note}", file=sys.stderr)
        prepare_estimator()
        progress.start(settings, study)

    def prepare_estimator() -> None:
        # on the space as loaded: a supernet serves every --set pin and device of it
        estimator.prepare(loaded_space, on_progress=say)

    if local_worker:  # its parent shows the progress and writes the report
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
        try:
            prepare_estimator()  # loads what the parent prepared
            run_search(settings)
        except SearchInterrupted:
            return 130
        return 0
    interrupted = False
    try:
        if workers > 1:
            study = run_local_workers(settings, [*args.argv, LOCAL_WORKER_FLAG], workers,
                                      on_trial=progress.on_trial, on_start=on_start)
        else:
            study = run_search(settings, on_trial=progress.on_trial, on_start=on_start)
    except SearchInterrupted as stop:
        interrupted, study = True, stop.study
    return _finish_search(args, settings, study, progress, interrupted, is_worker)


def _check_search_options(args: argparse.Namespace, is_worker: bool, workers: int) -> None:
    """The numbers and names of ``search``/``worker`` that need no file: one line if wrong."""
    from harness.search.study import SAMPLERS

    if is_worker and args.trials is None and args.timeout is None:
        raise UsageError("a worker needs --trials N or --timeout S (or both)")
    for option, value in (("--trials", args.trials), ("--timeout", getattr(args, "timeout", 0))):
        if value is not None and value <= 0 and (is_worker or option == "--trials"):
            raise UsageError(f"{option} must be positive, got {value}")
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    if args.sampler not in SAMPLERS:
        raise UsageError(f"unknown sampler {shorten(args.sampler)}; valid: {', '.join(SAMPLERS)}")
    if args.seed < 0:
        raise UsageError(f"--seed must be a non-negative integer, got {args.seed}")


def _search_estimator(args: argparse.Namespace, checkpoint: Any, space: Any) -> Any:
    """The search's accuracy estimator: the checkpoint's top-1 on the user's images
    (``--weights`` with ``--data``), or ``--accuracy`` (default ``DEFAULT_ESTIMATOR``)."""
    from harness.accuracy import get_estimator

    if checkpoint is not None:
        if not args.data or args.accuracy:
            raise UsageError("--weights searches the checkpoint's knobs by its accuracy on your "
                             "validation images: give --data imagefolder:PATH (or "
                             "filelist:FILE), and no --accuracy")
        return _pretrained_estimator(args, checkpoint, space.largest_config().img_size)
    if args.data:
        raise UsageError("--data scores a pretrained checkpoint: give its --weights PATH too")
    return get_estimator(args.accuracy or DEFAULT_ESTIMATOR)


def _finish_search(args: argparse.Namespace, settings: Any, study: Any, progress: Any,
                   interrupted: bool, is_worker: bool) -> int:
    """Re-measure the front (unless interrupted or asked not to), write the report and say
    where it is; 130 after an interruption."""
    from harness.report import write_report
    from harness.search.results import pareto_trials
    from harness.search.storage import default_storage

    device, out_dir, study_name = settings.device, settings.out_dir, settings.study_name
    remeasured = None
    if not (interrupted or is_worker or args.no_remeasure) and device.times_on_this_host:
        from harness.search.remeasure import remeasure_front

        try:
            remeasured = remeasure_front(study, device, settings.protocol, settings.space,
                                         settings.weights, on_progress=None if args.quiet else say)
            _say_remeasured(remeasured, args.quiet)
        except KeyboardInterrupt:
            interrupted = True  # the search's front stands; the same command re-measures
    report = write_report(study, out_dir)
    storage = settings.storage or default_storage(out_dir)
    if interrupted:
        print(f"harness: interrupted; finished trials are kept in {storage}; run the same "
              f"command to resume. Report so far: {report}", file=sys.stderr)
        return 130
    remeasured_used = remeasured is not None and not remeasured.contended
    front_size = (len(remeasured.final_front) if remeasured_used
                  else len(pareto_trials(study, study.get_trials(deepcopy=False))))
    if args.json:
        summary = {"study": study_name, "storage": storage, "report": str(report),
                   "pareto_json": str(out_dir / "pareto.json"),
                   "trials": len(study.trials), "pareto_size": front_size,
                   "front_remeasured": remeasured_used,
                   "front_changes": remeasured.front_changes if remeasured_used else None}
        print(json.dumps(summary, indent=2))
    else:
        progress.finish(front_size)
        print(report)
    return 0


def _say_remeasured(record: Any, quiet: bool) -> None:
    """The re-measured front in one line; one taken on a busy host is said even with --quiet."""
    if record is None:
        if not quiet:
            say("nothing to re-measure: no measured candidate within the budgets")
    elif record.contended:
        say(f"re-measured front not used: {record.unused_reason(record.eligible)}")
    elif not quiet:
        say(record.summary())


def cmd_worker(args: argparse.Namespace) -> int:
    """A search that runs its own trials on a shared study (see ``SearchSettings.is_worker``)."""
    return cmd_search(args)


def _pretrained_estimator(args: argparse.Namespace, checkpoint: Any, img_size: int) -> Any:
    """The checkpoint scored on ``--data``, decoded once through the evaluation transform."""
    from harness.accuracy.pretrained import PretrainedEstimator
    from harness.accuracy.validation import (
        DEFAULT_VAL_IMAGES,
        EvalTransform,
        load_validation_images,
    )

    if args.crop_pct is not None and not 0 < args.crop_pct <= 1:
        raise UsageError(f"--crop-pct must be in (0, 1], got {args.crop_pct}")
    given = {"crop_pct": args.crop_pct, "interpolation": args.interpolation,
             "mean": args.mean and tuple(args.mean), "std": args.std and tuple(args.std)}
    transform = EvalTransform(img_size=img_size,
                              **{key: value for key, value in given.items() if value})
    data = load_validation_images(
        args.data, DEFAULT_VAL_IMAGES if args.val_images is None else args.val_images,
        transform, on_progress=say)
    if data.classes > (checkpoint.num_classes or 0):
        raise UsageError(f"--data {shorten(args.data)} has {data.classes} classes, more than "
                         f"the checkpoint's head ({checkpoint.num_classes})")
    return PretrainedEstimator(checkpoint, data)


def cmd_measure(args: argparse.Namespace) -> int:
    from harness.accuracy import get_estimator
    from harness.checkpoint import load_checkpoint
    from harness.cost import estimate_cost
    from harness.cost_fvcore import count_cost_fvcore
    from harness.devices import get_device
    from harness.environment import capture_environment
    from harness.models import build_model
    from harness.search.study import estimate_accuracy, measure_candidate
    from harness.space import load_space

    config = _config_from_args(args)
    checkpoint = load_checkpoint(args.weights) if args.weights else None
    if checkpoint is not None:
        config = checkpoint.fit(config)
    weights = checkpoint.tensors if checkpoint is not None else None
    if args.data and checkpoint is None:
        raise UsageError("--data scores a pretrained checkpoint: give its --weights PATH too")
    if args.data and args.accuracy:
        raise UsageError("--data with --weights is the accuracy estimate; leave out --accuracy")
    if args.data:
        estimator = _pretrained_estimator(args, checkpoint, config.img_size)
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
        "knobs": [k.to_dict() for k in device.knob_support(config)],
    }
    if checkpoint is not None:
        result["weights"] = checkpoint.describe()
    if not args.no_latency:
        result.update(measure_candidate(config, device, estimator, _protocol(device, args),
                                        shared_weights=weights))
    elif estimator is not None:
        result["accuracy"] = estimate_accuracy(model, config, estimator)
    result["env"] = capture_environment(device)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_measurement(result)
    return 0


def _ms(value: float | None, min_samples: int) -> str:
    return f"{value:.3f} ms" if value is not None else f"n/a (<{min_samples} samples)"


def _print_measurement(result: dict[str, Any]) -> None:
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
    if "latency_ms" in result:
        lat = result["latency_ms"]
        protocol = result["latency_protocol"]
        if lat["status"] == "estimated":
            _print_estimate(lat, result["fpga"], protocol)
        else:
            print(f"  latency     median {lat['median']:.3f} ms  p90 {_ms(lat['p90'], 64)}  "
                  f"95% CI [{lat['ci95'][0]:.3f}, {lat['ci95'][1]:.3f}]  CV {lat['cv']:.3f}  "
                  f"n={lat['n']} (batch {protocol['batch_size']}, {protocol['threads']} threads, "
                  f"stopped by {protocol['stop_reason']})")
        energy = result["energy"]
        if energy["status"] == "unavailable":
            print(f"  energy      unavailable: {energy['reason']}")
        elif energy["ci95"] is None:
            print(f"  energy      {energy['joules_per_inference']:.4f} J per call "
                  f"({energy['status']}, {energy['source']}: {energy['reason']})")
        else:
            low, high = energy["ci95"]
            print(f"  energy      {energy['joules_per_inference']:.4f} J per call "
                  f"[{low:.4f}, {high:.4f}] ({energy['status']}, {energy['source']}; idle "
                  f"{energy['idle_power_w']:.1f} W; {energy['reason']})")
        if "runtime" in result:
            _print_runtime(result["runtime"])
        if result["throttled"]:
            print(f"  THROTTLED   {result['conditions'].get('throttle_reasons', 'see conditions')}")
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


def _print_runtime(runtime: dict[str, Any]) -> None:
    if runtime["parity"] is None:
        print(f"  runtime     {runtime['runtime']}")
        return
    parity = runtime["parity"]
    print(f"  runtime     {runtime['runtime']}, prepared in {runtime['prepare_s']:.1f} s; parity "
          f"with eager: max |Δ logit| {parity['max_abs_diff']:.2g} (bound {parity['bound']:g}), "
          f"top-1 agreement {parity['top1_agreement']:.0%} of {parity['images']} images")


def _print_estimate(lat: dict[str, Any], fpga: dict[str, Any], protocol: dict[str, Any]) -> None:
    band = lat["error_band"]
    print(f"  latency     {lat['median']:.3f} ms ESTIMATED"
          + (f" (fit-error band {band[0]:.3f}..{band[1]:.3f} ms)" if band else "")
          + f", batch {protocol['batch_size']}, {protocol['template']} engine; {lat['source']}")
    print(f"  throughput  {fpga['throughput_per_s']:.1f} images/s; off-chip weight streaming "
          f"{100 * fpga['memory_bound_share']:.1f}% of the latency")
    used = ", ".join(
        f"{key} {'?' if value is None else round(value)}/{round(fpga['available'][key])}"
        for key, value in fpga["used"].items())
    print(f"  resources   {used} (memory in BRAM_18K)"
          + ("" if fpga["fits"] else "  DOES NOT FIT the part"))
    for note in fpga["notes"]:
        print(f"  note        {note}")


def cmd_report(args: argparse.Namespace) -> int:
    from harness.files import check_writable_dir
    from harness.report import write_report

    if (args.device or args.weights) and not args.remeasure:
        raise UsageError("--device and --weights of 'harness report' go with --remeasure")
    check_writable_dir(args.out)
    study = _load_stored_study(args.out, args.storage, args.study)
    if args.remeasure:
        from harness.search.remeasure import remeasure_stored_study

        _say_remeasured(remeasure_stored_study(study, args.device, args.weights, on_progress=say),
                        quiet=False)
    report = write_report(study, args.out)
    print(report)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from harness.checkpoint import load_checkpoint
    from harness.export import (
        check_destination,
        load_export_source,
        source_from_trial,
        write_export,
    )

    if (args.search_out is None) == (args.config is None):
        raise UsageError("export needs either SEARCH_OUT with --trial N, or --config FILE")
    if args.search_out is not None and args.trial is None:
        raise UsageError("export SEARCH_OUT needs --trial N (the trial number in its report)")
    if args.config is not None and (args.trial is not None or args.supernet or args.storage
                                    or args.study):
        raise UsageError("--trial, --supernet, --storage and --study go with SEARCH_OUT, not "
                         "--config")
    check_destination(args.out, args.force)
    checkpoint = load_checkpoint(args.weights) if args.weights else None
    if args.config is not None:
        source = load_export_source(args.config)
        if checkpoint is not None:
            config = checkpoint.fit(source.config)
            source = dataclasses.replace(source, config=config, weights=checkpoint.tensors, weights_origin={
                "kind": "pretrained", "path": str(checkpoint.path), "sha256": checkpoint.sha256})
    else:
        study = _load_stored_study(args.search_out, args.storage, args.study)
        source = source_from_trial(study, args.trial, checkpoint, args.supernet)
    print(write_export(source, args.out, args.force))
    return 0


def _load_stored_study(out: Path, storage_arg: str | None, study_arg: str | None) -> Any:
    """The study of a search's output directory (or of ``--storage``), by name or the only one.

    Raises:
        StudyError: no such study (the names that exist are listed)."""
    import optuna

    from harness.errors import StudyError
    from harness.search.storage import default_storage, hide_password, open_storage

    storage_url = storage_arg or default_storage(out)
    storage = open_storage(storage_url, must_exist=True)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    name = study_arg or (names[0] if len(names) == 1 else None)
    if name not in names:
        raise StudyError(f"study {shorten(name or '(none given)')} not in "
                         f"{hide_password(storage_url, storage_url)}; valid: "
                         f"{', '.join(names) or 'none'}")
    return optuna.load_study(study_name=name, storage=storage)


def cmd_repair(args: argparse.Namespace) -> int:
    from harness.search.journal import repair_journal
    from harness.search.storage import journal_file

    print(repair_journal(journal_file(args.storage)).summary())
    return 0


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
    config = _config_from_args(args)
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


def cmd_bench(args: argparse.Namespace) -> int:
    from harness.bench.suites import busy_host_note, is_contended, load_suite, run_suite
    from harness.devices import get_device
    from harness.devices.base import MeasuredDevice
    from harness.errors import DeviceError
    from harness.files import check_writable_dir, renamed_note

    suite = load_suite(args.suite)
    device = get_device(args.device)
    if not isinstance(device, MeasuredDevice):
        raise DeviceError(f"bench measures real calls; device {shorten(device.name)} of kind "
                          f"{device.kind!r} estimates latency")
    if args.rounds <= 0:
        raise UsageError(f"--rounds must be positive, got {args.rounds}")
    check_writable_dir(args.out, "results directory")
    note = renamed_note("suite name", suite.name)
    if note:
        print(f"harness: note: {note}", file=sys.stderr)
    total = len(args.entry or suite.entries) * args.rounds
    done = itertools.count(1)
    contended: list[str] = []

    def on_result(entry: Any, path: Path, result: dict[str, Any]) -> None:
        latency = result["latency_ms"]
        figure = "drift-corrected" if latency.get("drift_corrected") else "raw"
        print(f"[{next(done)}/{total}] {entry.name}: {latency['median']:.3f} ms "
              f"[{latency['ci95'][0]:.3f}, {latency['ci95'][1]:.3f}] n={latency['n']} {figure} "
              f"→ {path}{busy_host_note(result)}", file=sys.stderr, flush=True)
        if is_contended(result):
            contended.append(str(path))

    written = run_suite(suite, device, args.out, args.entry, args.rounds, on_result)
    if args.json:
        print(json.dumps({"suite": suite.name, "device": device.name,
                          "results": [str(p) for p in written], "contended": contended},
                         indent=2))
    else:
        busy = (f"; {len(contended)} measured on a busy host, not comparable"
                if contended else "")
        print(f"{len(written)} result(s) of suite {shorten(suite.name)} on {device.name} in "
              f"{args.out}{busy}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.bench.compare import compare_results
    from harness.bench.suites import load_results
    from harness.files import check_writable_file, write_atomically
    from harness.report.compare import FORMATS, render

    if args.format not in FORMATS:
        raise UsageError(f"unknown --format {shorten(args.format)}; valid: {', '.join(FORMATS)}")
    if args.threshold is not None and args.threshold <= 0:
        raise UsageError(f"--threshold must be positive, got {args.threshold}")
    if args.out:
        check_writable_file(args.out)
    revisions = (args.base_rev, args.head_rev)
    if any(revisions):
        if not all(revisions) or args.base or args.head:
            raise UsageError("give BASE and HEAD result sets, or --base-rev and --head-rev")
        if args.rounds is not None and args.rounds <= 0:
            raise UsageError(f"--rounds must be positive, got {args.rounds}")
        base_dir, head_dir = _bench_revisions(args)
    elif args.base is None or args.head is None:
        raise UsageError("give BASE and HEAD result sets, or --base-rev and --head-rev")
    else:
        base_dir, head_dir = args.base, args.head
    comparison = compare_results(load_results(base_dir), load_results(head_dir),
                                 default_threshold_pct=args.threshold,
                                 include_contended=args.include_contended)
    if any(revisions):
        comparison = dataclasses.replace(comparison, base_commits=[args.base_rev],
                                         head_commits=[args.head_rev])
    if comparison.warning():
        print(f"harness: {comparison.warning()}", file=sys.stderr)
    text = render(comparison, args.format)
    if args.out:
        write_atomically(args.out, text + "\n")
    print(text)
    return 1 if args.fail_on_regression and comparison.regressions else 0


def _bench_revisions(args: argparse.Namespace) -> tuple[Path, Path]:
    from harness.bench.compare_stats import replicates_needed
    from harness.bench.revisions import bench_interleaved
    from harness.bench.suites import load_suite

    # each revision runs in its own directory: paths must not depend on ours
    suite, device = (str(Path(name).resolve()) if Path(name).exists() else name
                     for name in (args.suite, args.device))
    results = args.results.resolve()
    if results.exists() and any(results.iterdir()):
        raise UsageError(f"--results {results} is not empty; results of one comparison are "
                         "never mixed with another's: name a new directory")
    rounds = args.rounds or replicates_needed(len(load_suite(args.suite).entries))
    return bench_interleaved(Path.cwd(), args.base_rev, args.head_rev, suite, device,
                             rounds, results,
                             on_round=lambda message: print(f"harness: {message}",
                                                            file=sys.stderr, flush=True))


def cmd_rank_check(args: argparse.Namespace) -> int:
    import shlex

    from harness.accuracy import PROXIES, get_estimator
    from harness.checkpoint import fit_space, load_checkpoint
    from harness.config import parse_set_options
    from harness.files import check_writable_dir
    from harness.rank_check import SAMPLINGS, rank_check, save_rank_check
    from harness.space import load_space

    _check_rank_check_counts(args, SAMPLINGS)
    if args.out:
        check_writable_dir(args.out)
    space = load_space(args.space)
    if args.set:
        space = space.with_fixed(parse_set_options(args.set))
    specs = args.accuracy or [f"proxy:{name}" for name in PROXIES]
    estimators = [get_estimator(spec) for spec in specs]
    checkpoint = load_checkpoint(args.weights) if args.weights else None
    if checkpoint is not None:
        space = fit_space(checkpoint, space)
    if args.data:
        if checkpoint is None or args.reference:
            raise UsageError("--data makes the reference a pretrained checkpoint's top-1 on your "
                             "images: give its --weights PATH, and no --reference")
        reference = _pretrained_estimator(args, checkpoint, space.largest_config().img_size)
    else:
        reference = get_estimator(args.reference or "train:mnist")
    ceiling_n = args.ceiling_n
    if ceiling_n is None:
        ceiling_n = min(DEFAULT_CEILING_N, args.n) if reference.seed is not None else 0

    def on_point(index: int, point: dict[str, Any]) -> None:
        scores = ", ".join(f"{spec} {score['value']:.4g}"
                           for spec, score in point["scores"].items())
        second = point.get("reference_second_seed")
        again = f"; second seed {second['value']:.4g}" if second else ""
        print(f"[{index}/{args.n}] {point['config_key']}: {scores}{again}", file=sys.stderr,
              flush=True)

    check = rank_check(space, estimators, reference, args.n, args.seed, sampling=args.sampling,
                       ceiling_n=ceiling_n, command=shlex.join(["harness", *args.argv]),
                       weights=checkpoint,
                       on_point=on_point,
                       on_progress=lambda message: print(message, file=sys.stderr, flush=True))
    written = save_rank_check(check, args.out)
    if args.json:
        print(json.dumps(check.to_dict(), indent=2))
    else:
        print(check.table())
        print(f"written: {', '.join(map(str, written))}")
    return 0


def _check_rank_check_counts(args: argparse.Namespace, samplings: tuple[str, ...]) -> None:
    if args.n < 3:
        raise UsageError(f"--n must be at least 3 for a rank correlation, got {args.n}")
    if args.sampling not in samplings:
        raise UsageError(f"unknown --sampling {shorten(args.sampling)}; valid: "
                         f"{', '.join(samplings)}")
    if args.ceiling_n is not None and (args.ceiling_n < 0 or 0 < args.ceiling_n < 3):
        raise UsageError(f"--ceiling-n must be 0 (no noise ceiling) or at least 3 for a rank "
                         f"correlation, got {args.ceiling_n}")
    if args.ceiling_n is not None and args.ceiling_n > args.n:
        raise UsageError(f"--ceiling-n {args.ceiling_n} is larger than --n {args.n}: the noise "
                         "ceiling is measured on the first K of the N architectures")


def cmd_history(args: argparse.Namespace) -> int:
    from harness.files import check_writable_file
    from harness.report.history import render_history

    check_writable_file(args.out)
    print(render_history(args.results, args.out, args.annotations))
    return 0


def cmd_supernet_train(args: argparse.Namespace) -> int:
    from harness.accuracy import SupernetEstimator
    from harness.space import load_space

    for option, value in (("--steps", args.steps), ("--time", args.time)):
        if value is not None and value <= 0:
            raise UsageError(f"{option} must be positive, got {value}")
    if args.seed < 0:
        raise UsageError(f"--seed must be a non-negative integer, got {args.seed}")
    space = load_space(args.space)
    budget = (f"@{args.steps}steps" if args.steps else f"@{args.time}s" if args.time else "")
    estimator = SupernetEstimator(f"{args.data}{budget}@seed{args.seed}")
    estimator.prepare(space, on_progress=say)
    record = estimator.record_of
    if args.json:
        print(json.dumps({**record.summary(), "folder": str(estimator.spec_of.folder),
                          "accuracy": estimator.spec}, indent=2))
        return 0
    minutes, seconds = divmod(round(record.trained_s), 60)
    print(f"supernet of {record.space} on {record.dataset_title}: {record.steps} steps "
          f"({minutes}:{seconds:02d} of training), {record.params_m:.2f} M parameters; "
          f"held-out top-1 of its largest sub-network {record.heldout['largest_top1']:.3f}, of "
          f"its smallest {record.heldout['smallest_top1']:.3f}")
    print(f"kept in {estimator.spec_of.folder}; search with --accuracy {estimator.spec}")
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


def cmd_bench_knobs(args: argparse.Namespace) -> int:
    from harness.bench.knob_bench import (
        DEFAULT_SETTINGS,
        KnobRow,
        bench_knobs,
        parse_knob,
        runtime_settings,
    )
    from harness.checkpoint import load_checkpoint
    from harness.devices import get_device
    from harness.devices.base import MeasuredDevice
    from harness.environment import capture_environment
    from harness.errors import DeviceError
    from harness.files import check_writable_dir, write_atomically
    from harness.models import preset_config

    for option, values in (("--rounds", [args.rounds]), ("--iters", [args.iters]),
                           ("--batch-size", args.batch_size)):
        if min(values) <= 0:
            raise UsageError(f"{option} must be positive, got {min(values)}")
    if args.out:
        check_writable_dir(args.out)
    archs = {name: preset_config(name) for name in args.arch}
    checkpoint = None
    if args.weights:
        if len(archs) != 1:
            raise UsageError(f"--weights is the checkpoint of one architecture; give one --arch, "
                             f"got {len(archs)}")
        checkpoint = load_checkpoint(args.weights)
        archs = {name: checkpoint.fit(config) for name, config in archs.items()}
    device = get_device(args.device)
    if not isinstance(device, MeasuredDevice):
        raise DeviceError(f"bench-knobs times real calls; device {shorten(device.name)} of kind "
                          f"{device.kind!r} estimates latency (use 'harness measure' with --set)")
    settings = ([parse_knob(text) for text in args.knob] if args.knob else
                [*DEFAULT_SETTINGS, *runtime_settings(device)])

    def on_row(done: int, total: int, row: KnobRow) -> None:
        if not args.quiet:
            low, high = row.speedup_ci95
            print(f"[{done}/{total}] {row.arch} b{row.batch_size} {row.knob}: "
                  f"{row.speedup:.2f}x ({low:.2f}-{high:.2f})", file=sys.stderr, flush=True)

    result = bench_knobs(device, archs, args.batch_size, settings, args.rounds, args.iters, on_row,
                         weights=checkpoint.tensors if checkpoint else None)
    document = json.dumps(result.to_json(capture_environment(device)), indent=2) + "\n"
    markdown = result.to_markdown()
    if args.out:
        write_atomically(args.out / "knobs.json", document)
        write_atomically(args.out / "knobs.md", markdown)
    print(document if args.json else markdown, end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # argparse would send the user to the top-level help, not the command's
            raise UsageError(f"unrecognized arguments: {' '.join(unknown)} (see "
                             f"'harness {args.command} --help')")
        args.argv = argv  # ``search --workers K`` starts K processes with the same arguments
        import optuna

        from harness.notices import show_notices_on_stderr

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        show_notices_on_stderr()
        from harness.core_sharing import sharing_cores

        with sharing_cores(enabled=not getattr(args, "no_contention_check", False)):
            return args.handler(args)
    except HarnessError as error:
        if debug:
            traceback.print_exc()
        print(f"harness: error: {one_line(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before a command could take over (imports, start-up)
        if debug:
            traceback.print_exc()
        print("harness: interrupted", file=sys.stderr)
        return 130


MAX_ERROR_CHARS = 1000


def one_line(message: str) -> str:
    """An error message as one line of readable length: newlines (database drivers) become
    spaces, and an over-long middle is cut, keeping the start (what failed) and the end (what
    is valid)."""
    line = " ".join(message.split())
    if len(line) <= MAX_ERROR_CHARS:
        return line
    head, tail = MAX_ERROR_CHARS * 2 // 3, MAX_ERROR_CHARS // 3
    return f"{line[:head]} [...] {line[-tail:]}"


def console_main() -> None:
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # a second Ctrl-C while the first is being handled
        sys.exit(130)
