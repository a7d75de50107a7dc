"""Scoring a checkpoint on cached validation images against a plain forward pass over them.

Writes N real images (scikit-learn's digits, enlarged to 256 px PNGs, 10 classes) to a temporary
image folder, decodes them once through the evaluation transform (timed), then times, interleaved
and alternating which goes first, (a) the pretrained estimator's scoring of DeiT-Tiny on the
cached tensors (batches, argmax, comparison with the labels) and (b) a plain forward pass of the
same model over the same tensors in the same batches. Target: (a) within 1.2x of (b).

    python benchmarks/pretrained_bench.py [--arch deit_tiny] [--images 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits

from harness.accuracy.pretrained import EVAL_BATCH, PretrainedEstimator
from harness.accuracy.validation import EvalTransform, load_validation_images
from harness.checkpoint import Checkpoint
from harness.models import build_model, preset_config


def write_folder(root: Path, images: int) -> None:
    digits = load_digits()
    for index in range(images):
        label = int(digits.target[index % len(digits.target)])
        folder = root / f"class{label}"
        folder.mkdir(exist_ok=True)
        pixels = (digits.images[index % len(digits.target)] * 255 / 16).astype(np.uint8)
        Image.fromarray(pixels).resize((256, 256)).save(folder / f"{index}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="deit_tiny")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    config = preset_config(args.arch).replace(num_classes=10)
    model = build_model(config)
    checkpoint = Checkpoint(Path("seeded"), "", model.state_dict())
    print(f"{args.arch}, {args.images} images, {torch.get_num_threads()} threads; load average "
          f"{os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as folder:
        write_folder(Path(folder), args.images)
        started = time.perf_counter()
        data = load_validation_images(f"imagefolder:{folder}", args.images,
                                      EvalTransform(img_size=config.img_size))
        decode_s = time.perf_counter() - started
    print(f"decoded once: {decode_s:.1f} s ({decode_s / args.images * 1e3:.1f} ms an image)")
    estimator = PretrainedEstimator(checkpoint, data)

    @torch.no_grad()
    def plain() -> None:
        for start in range(0, len(data.labels), EVAL_BATCH):
            model(data.images[start:start + EVAL_BATCH])

    runs = {"scoring": lambda: estimator.correct(model, "fp32"), "plain forward": plain}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(args.rounds):
        order = list(runs) if round_index % 2 == 0 else list(reversed(runs))
        for name in order:
            started = time.perf_counter()
            runs[name]()
            seconds[name].append(time.perf_counter() - started)
        print(f"round {round_index + 1}: " + ", ".join(
            f"{name} {seconds[name][-1]:.2f} s" for name in runs))
    ratios = [a / b for a, b in zip(seconds["scoring"], seconds["plain forward"])]
    print(f"scoring / plain forward: median {statistics.median(ratios):.3f} (rounds: "
          f"{', '.join(f'{r:.3f}' for r in ratios)}; target <= 1.2); load average at the end "
          f"{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
