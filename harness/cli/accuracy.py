"""``harness rank-check`` and ``supernet train``: how well an accuracy estimate ranks, and the supernet it may come from."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from harness.cli.common import (
    DEFAULT_CEILING_N,
    DEFAULT_SPACE,
    Parser,
    UsageError,
    add_json_option,
    add_pretrained_options,
    positive_int,
    pretrained_estimator,
    say,
)
from harness.errors import shorten


def add_rank_check_parser(commands: Any) -> None:
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
    add_pretrained_options(rank)
    add_json_option(rank)
    rank.set_defaults(handler=cmd_rank_check)


def add_supernet_parser(commands: Any) -> None:
    supernet = commands.add_parser(
        "supernet", help="the weight-sharing supernet of a space (--accuracy supernet:DATASET)",
        description="Train a space's weight-sharing supernet once; searches with --accuracy "
        "supernet:DATASET then score every candidate with the weights it inherits.",
    )
    supernet_commands = supernet.add_subparsers(dest="supernet_command", required=True,
                                                parser_class=Parser)
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
    budget.add_argument("--steps", type=positive_int, help="training steps (default: the estimator's "
                        "default budget)")
    budget.add_argument("--time", type=positive_int, metavar="S",
                        help="seconds of training instead")
    supernet_train.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    add_json_option(supernet_train, "print the supernet's record (without its log) as JSON")
    supernet_train.set_defaults(handler=cmd_supernet_train)


def cmd_rank_check(args: argparse.Namespace) -> int:
    import shlex

    from harness.accuracy import PROXIES, get_estimator
    from harness.checkpoint import fit_space, load_checkpoint
    from harness.config import parse_set_options
    from harness.files import check_writable_dir
    from harness.rank_check import SAMPLINGS, rank_check, save_rank_check
    from harness.report.rank_check import rank_check_markdown
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
        reference = pretrained_estimator(args, checkpoint, space.largest_config().img_size)
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
        print(rank_check_markdown(check))
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


def cmd_supernet_train(args: argparse.Namespace) -> int:
    from harness.accuracy import SupernetEstimator
    from harness.space import load_space

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
