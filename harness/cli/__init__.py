"""Command line: ``main(argv) -> exit code``; the console script is a thin wrapper.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback unless ``--debug``),
130 interrupted (finished trials are kept and the same command resumes).

One module per command group, each with its parsers next to its handlers; ``common.py`` holds
what they share.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from harness.cli import accuracy, bench, fpga, measure, search
from harness.cli.common import Parser, UsageError
from harness.errors import HarnessError

# The commands, in the order --help lists them.
ADDERS = (
    search.add_search_parser,
    search.add_worker_parser,
    measure.add_measure_parser,
    search.add_report_parser,
    search.add_export_parser,
    search.add_repair_parser,
    bench.add_bench_knobs_parser,
    measure.add_devices_parser,
    fpga.add_hls_parser,
    bench.add_bench_parser,
    bench.add_compare_parser,
    accuracy.add_rank_check_parser,
    bench.add_history_parser,
    accuracy.add_supernet_parser,
    measure.add_spaces_parser,
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="harness",
        description="Hardware-aware architecture search and benchmarking for Vision Transformers.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add_parser in ADDERS:
        add_parser(commands)
    return parser


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
    except BrokenPipeError:  # the reader left (| head): stop quietly, as Python's docs advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
