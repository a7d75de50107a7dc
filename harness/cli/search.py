"""``harness search``, ``worker``, ``report``, ``export`` and ``repair``: a study from its start to its report and its exported winner."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from harness.cli.common import (
    DEFAULT_ESTIMATOR,
    DEFAULT_SPACE,
    DEFAULT_TRIALS,
    LOCAL_WORKER_FLAG,
    UsageError,
    add_device_option,
    add_json_option,
    add_measurement_options,
    add_pretrained_options,
    load_stored_study,
    positive_int,
    pretrained_estimator,
    protocol_from_args,
    say,
)
from harness.errors import shorten


def add_search_parser(commands: Any) -> None:
    search = commands.add_parser(
        "search",
        help="multi-objective search: measured latency vs accuracy estimate under budgets",
        description="Search a ViT space on a device under budgets; write an HTML report with the "
        "Pareto front. Running the same command again resumes the study.",
    )
    _add_search_arguments(search, worker=False)
    search.set_defaults(handler=cmd_search)


def add_worker_parser(commands: Any) -> None:
    worker = commands.add_parser(
        "worker", help="join a study as one more worker (this host or others)",
        description="Join the study NAME in STORAGE (or create it from these arguments) and "
        "run trials until --trials of its own are done or --timeout passes; SIGINT/SIGTERM stop "
        "it after the current trial. Give the same search arguments as the study was created "
        "with: a worker with another space, budget, estimator or harness version is refused.",
    )
    _add_search_arguments(worker, worker=True)
    worker.set_defaults(handler=cmd_worker)


def add_report_parser(commands: Any) -> None:
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
    add_device_option(report, "with --remeasure: the study's device profile, by name or path "
                      "(default: the name the study records)", default=None)
    report.add_argument("--weights", type=Path, metavar="PATH",
                        help="with --remeasure: the checkpoint a study of pretrained weights "
                        "searched")
    report.set_defaults(handler=cmd_report)


def add_export_parser(commands: Any) -> None:
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


def add_repair_parser(commands: Any) -> None:
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


def cmd_search(args: argparse.Namespace) -> int:
    from harness.budget import parse_budgets
    from harness.checkpoint import fit_space, load_checkpoint
    from harness.config import parse_set_options
    from harness.devices import get_device
    from harness.files import check_writable_dir, named_child, renamed_note
    from harness.search.interrupts import SearchInterrupted
    from harness.search.local_workers import run_local_workers
    from harness.search.preflight import (
        check_budgets_reachable,
        check_device_fits,
        restrict_to_device,
        restrict_to_runtime,
    )
    from harness.search.progress import Progress
    from harness.search.study import SearchSettings, run_search
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
    space, runtime_notes = restrict_to_runtime(space, device)
    capability_notes += runtime_notes
    protocol = protocol_from_args(device, args)
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
    from harness.search.samplers import SAMPLERS

    if is_worker and args.trials is None and args.timeout is None:
        raise UsageError("a worker needs --trials N or --timeout S (or both)")
    if is_worker and args.timeout is not None and args.timeout <= 0:
        raise UsageError(f"--timeout must be positive, got {args.timeout}")
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
        return pretrained_estimator(args, checkpoint, space.largest_config().img_size)
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


def cmd_report(args: argparse.Namespace) -> int:
    from harness.files import check_writable_dir
    from harness.report import write_report

    if (args.device or args.weights) and not args.remeasure:
        raise UsageError("--device and --weights of 'harness report' go with --remeasure")
    check_writable_dir(args.out)
    study = load_stored_study(args.out, args.storage, args.study)
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
    from harness.files import check_writable_dir

    if (args.search_out is None) == (args.config is None):
        raise UsageError("export needs either SEARCH_OUT with --trial N, or --config FILE")
    if args.search_out is not None and args.trial is None:
        raise UsageError("export SEARCH_OUT needs --trial N (the trial number in its report)")
    if args.config is not None and (args.trial is not None or args.supernet or args.storage
                                    or args.study):
        raise UsageError("--trial, --supernet, --storage and --study go with SEARCH_OUT, not "
                         "--config")
    check_destination(args.out, args.force)
    check_writable_dir(args.out, "export directory")
    checkpoint = load_checkpoint(args.weights) if args.weights else None
    if args.config is not None:
        source = load_export_source(args.config)
        if checkpoint is not None:
            config = checkpoint.fit(source.config)
            source = dataclasses.replace(source, config=config, weights=checkpoint.tensors, weights_origin={
                "kind": "pretrained", "path": str(checkpoint.path), "sha256": checkpoint.sha256})
    else:
        study = load_stored_study(args.search_out, args.storage, args.study)
        source = source_from_trial(study, args.trial, checkpoint, args.supernet)
    print(write_export(source, args.out, args.force))
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    from harness.search.journal import repair_journal
    from harness.search.storage import journal_file

    print(repair_journal(journal_file(args.storage)).summary())
    return 0


def _add_search_arguments(parser: argparse.ArgumentParser, worker: bool) -> None:
    parser.add_argument("--space", default=DEFAULT_SPACE,
                        help=f"bundled space name or path to a YAML file (default {DEFAULT_SPACE})")
    add_device_option(parser)
    parser.add_argument("--budget", nargs="+", default=[], metavar="BUDGET",
                        help="hard budgets, e.g. 1gflop 500mflop 1.5gmac 5ms 20mparams "
                        "(FLOPs are MACs, as in ViT papers)")
    if worker:
        parser.add_argument("--trials", type=positive_int,
                            help="trials this worker runs (default: until --timeout or stopped)")
        parser.add_argument("--timeout", type=float, metavar="S",
                            help="stop starting trials after this many seconds")
    else:
        parser.add_argument("--trials", type=positive_int, default=DEFAULT_TRIALS,
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
    add_pretrained_options(parser)
    add_measurement_options(parser)
    parser.add_argument("--quiet", action="store_true", help="no per-trial progress")
    add_json_option(parser, "print a JSON summary on stdout")
