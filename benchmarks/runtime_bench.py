"""Runtimes against eager and against the machine's ceiling, in one interleaved run.

For DeiT-T and DeiT-S at batch 1 and 8, every runtime the device lists and this host has
installed (eager, torch.compile, ONNX Runtime) is timed together with a 2048³ fp32 GEMM
(``torch.mm``, the physical ceiling here), round by round, the order rotating each round. Per
round: each runtime's median, its speed-up over eager, its achieved MAC/s (GMACs per image x batch
/ latency) and that over the GEMM's MAC/s in the same round. Reported: the median over rounds with
its 95% CI (order statistics; min-max below 6 rounds).

Knob efficiency in the same run: ToMe r=16 on DeiT-S at batch 8 against the dense model in each
runtime, as speed-up over its MAC reduction (1.0: every MAC saved becomes time saved).

    python benchmarks/runtime_bench.py [--device cpu] [--rounds 7] [--json OUT]

Run it alone: another busy process on the host turns every ratio into noise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from harness.bench.knob_bench import runtime_settings
from harness.config import CandidateConfig
from harness.cost import estimate_cost
from harness.devices import get_device
from harness.devices.base import MeasuredDevice
from harness.devices.lock import exclusive_timing
from harness.layers import inference_context
from harness.models import build_model, preset_config
from harness.stats import median_ci

GEMM_SIZE = 2048
GEMM_GMACS = GEMM_SIZE**3 / 1e9
TARGET_MS_PER_ROUND = 300.0  # calls per round: enough for about this much time per model


@dataclass
class Timed:
    """One model in the interleaved rounds: its callable and each round's median (ms)."""

    label: str
    gmacs_per_call: float
    call: object
    round_ms: list[float]


def _prepared(device: MeasuredDevice, config: CandidateConfig, batch: int) -> tuple[object, float]:
    images = torch.randn(batch, 3, config.img_size, config.img_size,
                         generator=torch.Generator().manual_seed(0))
    model, images = device.prepare(build_model(config, seed=0), images, config)
    model, record = device.deploy(model, images, config, device.profile.protocol)

    def call() -> float:
        with inference_context(model):
            return device.time_call(model, images)

    return call, record.prepare_s


def _gemm(device: MeasuredDevice) -> object:
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(GEMM_SIZE, GEMM_SIZE, generator=generator) for _ in range(2))
    return lambda: device.time_call(lambda _: torch.mm(a, b), None)


def _interleave(models: list[Timed], rounds: int) -> None:
    """Warm each up, then ``rounds`` rounds of k calls each, the first model rotating."""
    calls = {}
    for model in models:
        warm = [model.call() for _ in range(5)]
        calls[model.label] = max(3, min(50, int(TARGET_MS_PER_ROUND / statistics.median(warm))))
    for number in range(rounds):
        shift = number % len(models)
        for model in models[shift:] + models[:shift]:
            model.round_ms.append(statistics.median(
                model.call() for _ in range(calls[model.label])))


def _ratio(numerators: list[float], denominators: list[float]) -> dict[str, object]:
    ratios = [a / b for a, b in zip(numerators, denominators)]
    low, high = median_ci(ratios)
    return {"median": statistics.median(ratios), "ci95": [low, high]}


def _fmt(ratio: dict[str, object]) -> str:
    low, high = ratio["ci95"]
    return f"{ratio['median']:.2f} [{low:.2f}, {high:.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", help="also write every figure to this JSON file")
    args = parser.parse_args()
    device = get_device(args.device)
    runtimes = ["eager", *(s.values["runtime"] for s in runtime_settings(device))]
    device.configure(device.profile.protocol)
    results = []
    print(f"{device.name}, {torch.get_num_threads()} threads, runtimes {', '.join(runtimes)}, "
          f"{args.rounds} rounds", file=sys.stderr)
    cases = [(arch, batch, {}) for arch in ("deit_tiny", "deit_small") for batch in (1, 8)]
    cases.append(("deit_small", 8, {"merge_r": 16}))
    for arch, batch, knob in cases:
        base = preset_config(arch)
        config = base.replace(**knob)
        gmacs = estimate_cost(config).gmacs * batch
        models, prepare_s = [], {}
        for runtime in runtimes:
            for label, cfg in ((runtime, config.replace(runtime=runtime)),
                               *(((f"{runtime} dense", base.replace(runtime=runtime)),)
                                 if knob else ())):
                call, prepare_s[label] = _prepared(device, cfg, batch)
                models.append(Timed(label, estimate_cost(cfg).gmacs * batch, call, []))
        models.append(Timed("gemm", GEMM_GMACS, _gemm(device), []))
        started = time.perf_counter()
        with exclusive_timing(device.name):
            _interleave(models, args.rounds)
        by = {m.label: m for m in models}
        gemm = by["gemm"]
        name = f"{arch} b{batch}" + "".join(f" {k}={v}" for k, v in knob.items())
        for runtime in runtimes:
            timed = by[runtime]
            gemm_rate = [GEMM_GMACS / ms for ms in gemm.round_ms]
            rate = [gmacs / ms for ms in timed.round_ms]
            row = {
                "case": name, "runtime": runtime, "gmacs": gmacs,
                "latency_ms": statistics.median(timed.round_ms),
                "prepare_s": round(prepare_s[runtime], 2),
                "speedup_vs_eager": _ratio(by["eager"].round_ms, timed.round_ms),
                "gmac_per_s": statistics.median(rate) * 1e3,
                "gemm_gmac_per_s": statistics.median(gemm_rate) * 1e3,
                "of_gemm": _ratio(rate, gemm_rate),
            }
            if knob:
                dense = by[f"{runtime} dense"]
                reduction = dense.gmacs_per_call / timed.gmacs_per_call
                speedup = _ratio(dense.round_ms, timed.round_ms)
                row |= {"knob_speedup": speedup, "mac_reduction": reduction,
                        "speedup_over_mac_reduction": speedup["median"] / reduction}
            results.append(row)
            extra = (f"  knob {_fmt(row['knob_speedup'])}x of {row['mac_reduction']:.2f}x MAC "
                     f"reduction = {row['speedup_over_mac_reduction']:.2f}" if knob else "")
            print(f"{name:<26} {runtime:<12} {row['latency_ms']:8.2f} ms  vs eager "
                  f"{_fmt(row['speedup_vs_eager'])}  {row['gmac_per_s']:6.1f} GMAC/s = "
                  f"{_fmt(row['of_gemm'])} of GEMM ({row['gemm_gmac_per_s']:.1f})  prepare "
                  f"{row['prepare_s']:.1f} s{extra}", flush=True)
        print(f"  ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as stream:
            json.dump({"device": device.name, "threads": torch.get_num_threads(),
                       "rounds": args.rounds, "rows": results}, stream, indent=1)


if __name__ == "__main__":
    main()
