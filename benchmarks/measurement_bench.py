"""How far to trust one latency measurement on this device: repeatability and timing overhead.

1. Repeatability: deit_tiny measured twice back to back with the device profile's protocol; the
   medians should agree within 3% and each 95% CI should contain the other's median.
2. Overhead per sample: the time the measurement loop spends outside the timed calls (timer reads,
   sample bookkeeping, the periodic CI check), per sample, as a share of one forward pass.

    python benchmarks/measurement_bench.py [--device cpu] [--arch deit_tiny] [--batch-size 1]
"""

from __future__ import annotations

import argparse
import os

import torch

from harness.devices import get_device
from harness.models import build_model, preset_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", default="deit_tiny")
    parser.add_argument("--batch-size", type=int, default=1)
    args = parser.parse_args()
    device = get_device(args.device)
    protocol = device.profile.protocol
    config = preset_config(args.arch)
    model = build_model(config)
    inputs = torch.randn(args.batch_size, 3, config.img_size, config.img_size,
                         generator=torch.Generator().manual_seed(0))
    model, inputs = device.prepare(model, inputs, config)
    print(f"{args.arch} batch {args.batch_size} on {device.name}; load average "
          f"{os.getloadavg()[0]:.2f}; protocol {protocol.to_dict()}")

    first, second = (device.measure_latency(model, inputs, protocol) for _ in range(2))
    for label, run in (("run 1", first), ("run 2", second)):
        s = run.summary
        print(f"{label}: median {s.median:.3f} ms  95% CI [{s.ci95[0]:.3f}, {s.ci95[1]:.3f}]  "
              f"n={s.n}  stopped by {run.stop_reason}")
    a, b = first.summary, second.summary
    gap = abs(a.median - b.median) / min(a.median, b.median)
    contains = a.ci95[0] <= b.median <= a.ci95[1] and b.ci95[0] <= a.median <= b.ci95[1]
    print(f"repeatability: medians differ by {gap:.2%} (target < 3%); each CI contains the "
          f"other's median: {'yes' if contains else 'no'}")

    for label, run in (("run 1", first), ("run 2", second)):
        outside_s = run.timed_s - sum(run.samples_ms) / 1e3
        per_sample_ms = outside_s / run.summary.n * 1e3
        print(f"overhead {label}: {per_sample_ms * 1e3:.1f} µs per sample outside the timed "
              f"calls = {per_sample_ms / run.summary.median:.3%} of a forward pass (target < 1%)")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
