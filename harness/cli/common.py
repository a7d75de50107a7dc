"""What the commands share: defaults, the usage error, options defined once, and the helpers
that turn options into a configuration, a protocol or an estimator."""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
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


def positive_int(text: str) -> int:
    """argparse type of counts (trials, rounds, images, threads): a positive integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def add_device_option(parser: argparse.ArgumentParser,
                      help: str = f"device profile name or YAML path (default {DEFAULT_DEVICE})",
                      **kwargs: Any) -> None:
    """``--device PROFILE``: a bundled profile's name or a profile file (default the CPU)."""
    parser.add_argument("--device", metavar="PROFILE", help=help,
                        **({"default": DEFAULT_DEVICE} | kwargs))


def add_json_option(parser: argparse.ArgumentParser, help: str = "print the result as JSON"
                    ) -> None:
    parser.add_argument("--json", action="store_true", help=help)


def say(message: str) -> None:
    """A note or a line of progress for the user, on stderr (stdout is for results)."""
    print(f"harness: {message}", file=sys.stderr, flush=True)


def add_pretrained_options(parser: argparse.ArgumentParser) -> None:
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


def add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", default="deit_tiny",
                        help="preset: deit_tiny (default), deit_small, deit_base")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="a YAML/JSON mapping of configuration keys (or an entry of "
                        "pareto.json) to use instead of a preset")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a configuration key, e.g. --set keep_rate=0.7")


def config_from_args(args: argparse.Namespace) -> Any:
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


def add_measurement_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=positive_int,
                        help="images per timed call (default: profile)")
    parser.add_argument("--threads", type=positive_int, help="CPU threads (default: profile)")
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


def protocol_from_args(device: Any, args: argparse.Namespace) -> Any:
    """The device profile's measurement protocol with the command-line overrides applied."""
    from harness.devices import check_timing_options

    if args.time_cap is not None and args.time_cap <= 0:
        raise UsageError(f"--time-cap must be positive, got {args.time_cap}")
    options = {"batch_size": args.batch_size, "threads": args.threads, "time_cap_s": args.time_cap}
    overrides = {field: value for field, value in options.items() if value is not None}
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


def pretrained_estimator(args: argparse.Namespace, checkpoint: Any, img_size: int) -> Any:
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


def load_stored_study(out: Path, storage_arg: str | None, study_arg: str | None) -> Any:
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


class Parser(argparse.ArgumentParser):
    """argparse, with errors raised as ``UsageError``: one line and exit 2 like every other."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # argparse takes "-3ms" for an unknown option ("expected one argument"); as a value it
        # gets the message that names it (no option of ours starts with a digit).
        self._negative_number_matcher = re.compile(r"^-\.?\d")

    def error(self, message: str) -> None:  # type: ignore[override]
        # "argument --trials: must be positive, got 0" reads as "--trials must be positive, ..."
        message = re.sub(r"^argument (--[\w-]+): must be", r"\1 must be", message)
        raise UsageError(f"{message} (see '{self.prog} --help')")
