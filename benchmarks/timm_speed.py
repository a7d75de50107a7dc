"""Our ViT against timm's with the same weights: latency ratio, interleaved in one run.

For each pair (ours, timm's) and batch size, timm's model is built with random weights, they are
loaded into ours (same key names; logits identical, tests/test_timm_interop.py), and both are
timed by the knob benchmark's interleaved rounds (``knob_bench.time_interleaved``: warm-up by the
device's steadiness rule, then R rounds of k calls of each, the first alternating, under the
timing lock). Prints ours / timm's latency per round and its median; target: at most 1.00.

Needs timm (not a dependency: its torchvision pulls a second, CUDA build of torch).

    python benchmarks/timm_speed.py [--device cpu] [--batch-size 1 8] [--rounds 9] [--iters 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import timm
import torch

from harness.bench.knob_bench import time_interleaved
from harness.checkpoint import Checkpoint
from harness.devices import get_device
from harness.models import build_model, preset_config

PAIRS = (("deit_tiny", "deit_tiny_patch16_224"), ("deit_small", "deit_small_patch16_224"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--arch", nargs="+", default=[ours for ours, _ in PAIRS],
                        choices=[ours for ours, _ in PAIRS], help="which pairs (default: all)")
    args = parser.parse_args()
    device = get_device(args.device)
    protocol = device.profile.protocol
    device.configure(protocol)
    print(f"timm {timm.__version__}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads on {device.name}; load average {os.getloadavg()[0]:.2f}")
    for ours_name, timm_name in (pair for pair in PAIRS if pair[0] in args.arch):
        reference = timm.create_model(timm_name, pretrained=False).eval()
        checkpoint = Checkpoint(Path(timm_name), "", reference.state_dict())
        ours = build_model(checkpoint.fit(preset_config(ours_name)),
                           shared_weights=checkpoint.tensors).eval()
        for batch_size in args.batch_size:
            inputs = torch.randn(batch_size, 3, 224, 224,
                                 generator=torch.Generator().manual_seed(0))
            # "dense" is timm's, "knob" ours: each ratio is timm / ours, inverted below
            timing = time_interleaved(device, (reference, inputs), (ours, inputs), protocol,
                                      args.rounds, args.iters)
            ratios = sorted(1 / ratio for ratio in timing.round_speedups)
            print(f"{ours_name} vs {timm_name}, batch {batch_size}: ours "
                  f"{statistics.median(timing.knob_ms):.2f} ms, timm "
                  f"{statistics.median(timing.dense_ms):.2f} ms; ours / timm median "
                  f"{statistics.median(ratios):.3f} (rounds {ratios[0]:.3f}-{ratios[-1]:.3f}, "
                  f"warm-up steady: {timing.warmup_steady})")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
