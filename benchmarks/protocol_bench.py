"""Is the search's short latency protocol enough? It against a longer one, on the same candidates.

For N configurations drawn from a space, interleaved A/B: each is measured with the device
profile's protocol (what a search uses) and with a longer one (by default the cpu profile's
earlier protocol: warm-up up to 5 s, then at least 2 s and at most 5 s of timing), the order
alternating from one configuration to the next. Prints, per protocol, the seconds per measurement
and the half-width of the median's 95% CI relative to the median, and for each configuration
whether the short protocol's median lies inside the long one's CI.

    python benchmarks/protocol_bench.py [--space vit_tiny] [--device cpu] [--n 8] [--seed 0]
        [--long warmup_max_s=5 min_timed_s=2 time_cap_s=5]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

import torch

from harness.devices import get_device
from harness.models import build_model
from harness.space import load_space

EARLIER_CPU_PROTOCOL = ("warmup_max_s=5", "min_timed_s=2", "time_cap_s=5")


def half_width(summary) -> float:
    """Half the 95% CI of the median, relative to the median."""
    return (summary.ci95[1] - summary.ci95[0]) / 2 / summary.median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="vit_tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--long", nargs="+", default=list(EARLIER_CPU_PROTOCOL),
                        metavar="FIELD=SECONDS", help="the longer protocol's changed fields")
    args = parser.parse_args()
    device = get_device(args.device)
    short = device.profile.protocol
    long = dataclasses.replace(short, **{field: float(value) for field, value in
                                          (item.split("=") for item in args.long)})
    protocols = {"short": short, "long": long}
    print(f"{args.n} configurations of {args.space} on {device.name}; load average "
          f"{os.getloadavg()[0]:.2f}\nshort (the profile's): {short.to_dict()}\n"
          f"long: {' '.join(args.long)}")

    seconds = {label: [] for label in protocols}
    widths = {label: [] for label in protocols}
    inside, gaps = 0, []
    for index, config in enumerate(load_space(args.space).sample(args.n, seed=args.seed)):
        model = build_model(config).eval()
        inputs = torch.randn(short.batch_size, 3, config.img_size, config.img_size,
                             generator=torch.Generator().manual_seed(0))
        model, inputs = device.prepare(model, inputs, config)
        order = ("short", "long") if index % 2 == 0 else ("long", "short")
        runs = {}
        for label in order:
            started = time.perf_counter()
            runs[label] = device.measure_latency(model, inputs, protocols[label])
            seconds[label].append(time.perf_counter() - started)
            widths[label].append(half_width(runs[label].summary))
        short, long_run = runs["short"].summary, runs["long"].summary
        within = long_run.ci95[0] <= short.median <= long_run.ci95[1]
        inside += within
        gaps.append(abs(short.median - long_run.median) / long_run.median)
        print(f"[{index + 1}/{args.n}] {config.key()}: short {short.median:.2f} ms "
              f"±{widths['short'][-1]:.1%} (n={short.n}, {seconds['short'][-1]:.1f} s), long "
              f"{long_run.median:.2f} ms ±{widths['long'][-1]:.1%} (n={long_run.n}, "
              f"{seconds['long'][-1]:.1f} s); short median inside long CI: "
              f"{'yes' if within else 'no'}")
    for label in protocols:
        print(f"{label}: {statistics.mean(seconds[label]):.1f} s per measurement, median CI "
              f"half-width ±{statistics.median(widths[label]):.1%} (largest "
              f"±{max(widths[label]):.1%})")
    print(f"short medians inside the long CI: {inside}/{args.n}; median gap between the two "
          f"medians {statistics.median(gaps):.1%} (largest {max(gaps):.1%}); load average at the "
          f"end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
