"""``harness bench-knobs``, ``bench``, ``compare`` and ``history``: the harness's benchmarks and their comparisons over commits."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.cli.common import (
    DEFAULT_DEVICE,
    UsageError,
    add_device_option,
    add_json_option,
    positive_int,
)
from harness.errors import shorten


def add_bench_knobs_parser(commands: Any) -> None:
    knobs = commands.add_parser(
        "bench-knobs", help="speed-up of each efficiency knob over the dense fp32 model",
        description="Time each knob setting against the dense fp32 model of the same "
        "architecture, interleaved in rounds (the first model alternating), and report the median "
        "speed-up over rounds with its 95% CI next to the MACs the knob saves.",
    )
    add_device_option(knobs)
    knobs.add_argument("--arch", nargs="+", default=["deit_small", "deit_tiny"], metavar="ARCH",
                       help="presets (default deit_small deit_tiny)")
    knobs.add_argument("--batch-size", nargs="+", type=positive_int, default=[8], metavar="N",
                       help="images per timed call (default 8)")
    knobs.add_argument("--knob", action="append", metavar="KEY=VALUE[,KEY=VALUE]",
                       help="a knob setting to measure instead of the default ten (repeatable), "
                       "e.g. --knob merge_r=16 --knob keep_rate=0.7,keep_layers=[4,7,10]")
    knobs.add_argument("--rounds", type=positive_int, default=7,
                       help="interleaved rounds per setting (default 7; below 6 the interval is "
                       "the min-max range of the rounds, not a 95%% CI)")
    knobs.add_argument("--iters", type=positive_int, default=5,
                       help="timed calls of each model per round (default 5)")
    knobs.add_argument("--weights", type=Path, metavar="PATH",
                       help="time the knobs on a pretrained checkpoint of the one --arch (timm's "
                       "key names; .pth, .pt, .bin, .safetensors)")
    knobs.add_argument("--out", type=Path, help="directory to write knobs.json and knobs.md to")
    add_json_option(knobs, "print the JSON record on stdout")
    knobs.add_argument("--quiet", action="store_true", help="no per-setting progress on stderr")
    knobs.set_defaults(handler=cmd_bench_knobs)


def add_bench_parser(commands: Any) -> None:
    bench = commands.add_parser(
        "bench", help="run a benchmark suite and store one result file per entry",
        description="Measure every entry of a benchmark suite (benchmarks/suites/NAME.yaml or a "
        "path) on a device and store one JSON file per entry under OUT/MACHINE/COMMIT/SUITE/, "
        "with the raw samples, summary, energy and environment. Nothing is overwritten.",
    )
    bench.add_argument("--suite", default="smoke", help="suite name or YAML path (default smoke)")
    add_device_option(bench)
    bench.add_argument("--out", type=Path, default=Path("bench-results"),
                       help="results directory (default bench-results)")
    bench.add_argument("--entry", action="append", metavar="NAME",
                       help="run only this entry (repeatable)")
    bench.add_argument("--rounds", type=positive_int, default=1,
                       help="measure every entry this many times, interleaved (default 1; "
                       "'harness compare' treats 5 or more runs per entry as replicates)")
    add_json_option(bench, "print the written paths as JSON")
    bench.set_defaults(handler=cmd_bench)


def add_compare_parser(commands: Any) -> None:
    compare = commands.add_parser(
        "compare", help="base-vs-head comparison of benchmark results (PR reports)",
        description="Compare two sets of benchmark results (directories or files written by "
        "'harness bench'): per entry the change of the median with its 95% CI, the p-value (Mann-"
        "Whitney U; a paired t-test by round where base and head alternated, as --base-rev/"
        "--head-rev runs them), Holm-corrected across entries, and a decision against the "
        "entry's threshold.",
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
    add_device_option(compare, f"with --base-rev: device (default {DEFAULT_DEVICE})")
    compare.add_argument("--rounds", type=positive_int,
                         help="with --base-rev: interleaved rounds per revision first (default: "
                         "enough for a change to be significant after Holm's correction over "
                         "the suite's entries: 6 for up to 4 entries, 7 for up to 17)")
    compare.add_argument("--max-rounds", type=positive_int, metavar="N",
                         help="with --base-rev: while an entry is noisy after the first rounds, "
                         "run as many more as its rounds' scatter asks for, up to N a side "
                         "(default 20; N = --rounds: never more). Two looks at the data: each "
                         "tests at p < 0.005")
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


def add_history_parser(commands: Any) -> None:
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
    from harness.report.knob_bench import knob_bench_markdown

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
    markdown = knob_bench_markdown(result)
    if args.out:
        write_atomically(args.out / "knobs.json", document)
        write_atomically(args.out / "knobs.md", markdown)
    print(document if args.json else markdown, end="")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from harness.bench.suites import busy_host_note, load_suite, run_suite
    from harness.devices import get_device
    from harness.devices.base import MeasuredDevice
    from harness.errors import DeviceError
    from harness.files import check_writable_dir, renamed_note

    suite = load_suite(args.suite)
    device = get_device(args.device)
    if not isinstance(device, MeasuredDevice):
        raise DeviceError(f"bench measures real calls; device {shorten(device.name)} of kind "
                          f"{device.kind!r} estimates latency")
    check_writable_dir(args.out, "results directory")
    note = renamed_note("suite name", suite.name)
    if note:
        print(f"harness: note: {note}", file=sys.stderr)
    total = len(args.entry or suite.entries) * args.rounds
    done = itertools.count(1)
    contended: list[str] = []

    def on_result(entry: Any, path: Path, result: Any) -> None:
        latency = result.measurement.latency
        figure = "drift-corrected" if latency.drift_corrected else "raw"
        print(f"[{next(done)}/{total}] {entry.name}: {latency.median:.3f} ms "
              f"[{latency.ci95[0]:.3f}, {latency.ci95[1]:.3f}] n={latency.n} {figure} "
              f"→ {path}{busy_host_note(result)}", file=sys.stderr, flush=True)
        if result.measurement.contended:
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
    result_sets = (args.base, args.head)
    with_revisions = all(revisions) and not any(result_sets)
    if not with_revisions and (any(revisions) or None in result_sets):
        raise UsageError("give BASE and HEAD result sets, or --base-rev and --head-rev")
    if not with_revisions and (args.rounds or args.max_rounds):
        raise UsageError("--rounds and --max-rounds go with --base-rev and --head-rev")

    def compare(base_dir: Path, head_dir: Path, alpha: float = 0.01) -> Any:
        return compare_results(load_results(base_dir), load_results(head_dir),
                               default_threshold_pct=args.threshold, alpha=alpha,
                               include_contended=args.include_contended)

    if with_revisions:
        comparison = dataclasses.replace(_compare_revisions(args, compare),
                                         base_commits=[args.base_rev],
                                         head_commits=[args.head_rev])
    else:
        comparison = compare(args.base, args.head)
    if comparison.warning():
        print(f"harness: {comparison.warning()}", file=sys.stderr)
    text = render(comparison, args.format)
    if args.out:
        write_atomically(args.out, text + "\n")
    print(text)
    return 1 if args.fail_on_regression and comparison.regressions else 0


def _compare_revisions(args: argparse.Namespace, compare: Callable[..., Any]) -> Any:
    from harness.bench.compare_stats import replicates_needed
    from harness.bench.revisions import (
        DEFAULT_MAX_ROUNDS,
        InterleavedRevisions,
        compare_sequentially,
    )
    from harness.bench.suites import load_suite

    # each revision runs in its own directory: paths must not depend on ours
    suite, device = (str(Path(name).resolve()) if Path(name).exists() else name
                     for name in (args.suite, args.device))
    results = args.results.resolve()
    if results.exists() and any(results.iterdir()):
        raise UsageError(f"--results {results} is not empty; results of one comparison are "
                         "never mixed with another's: name a new directory")
    first = args.rounds or replicates_needed(len(load_suite(args.suite).entries))
    if args.max_rounds is not None and args.max_rounds < first:
        raise UsageError(f"--max-rounds {args.max_rounds} is below the {first} rounds run "
                         f"first; give {first} or more ({first}: no rounds beyond them)")
    max_rounds = args.max_rounds or max(first, DEFAULT_MAX_ROUNDS)

    def say(message: str) -> None:
        print(f"harness: {message}", file=sys.stderr, flush=True)

    with InterleavedRevisions(Path.cwd(), args.base_rev, args.head_rev, suite, device,
                              results, on_round=say) as revisions:
        return compare_sequentially(revisions, first, max_rounds,
                                    lambda alpha: compare(*revisions.results, alpha),
                                    on_more=say)


def cmd_history(args: argparse.Namespace) -> int:
    from harness.files import check_writable_file
    from harness.report.history import render_history

    check_writable_file(args.out)
    print(render_history(args.results, args.out, args.annotations))
    return 0
