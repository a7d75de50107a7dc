"""Do sparse weight formats make a ViT MLP layer faster on this device? (Evidence for the device
profile's ``accelerates.weight_sparsity`` list.)

For the fc1 layer of DeiT-S and ViT-B (tokens of a batch of 8 at 224 px), times dense ``F.linear``
against the same weight, block-sparse by magnitude at 90% (LPViT-style), stored as BSR with blocks
16/32/64, and as CSR; on CUDA devices of compute capability 8.0+ also 2:4 semi-structured in fp16.
Interleaved rounds (dense, sparse, alternating which goes first); the ratio is per round, the
figure printed is the median ratio with its min-max over rounds.

    python benchmarks/sparse_kernels.py [--rounds 7] [--iters 5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from harness.layers.sparsity import block_mask, two_four_mask

SHAPES = {"DeiT-S fc1": (1536, 384), "ViT-B fc1": (3072, 768)}
TOKENS = 8 * 197
SPARSITY = 0.9


def _timer(device: str) -> Callable[[Callable[[], object]], float]:
    def time_ms(call: Callable[[], object]) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter_ns()
        call()
        if device == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter_ns() - start) / 1e6

    return time_ms


def _csr_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, weight)`` with a CSR weight: (W · xᵀ)ᵀ."""
    return torch.sparse.mm(weight, x.T).T


def interleaved_ratio(dense: Callable[[], object], sparse: Callable[[], object], device: str,
                      rounds: int, iters: int) -> tuple[float, float, float]:
    """Median over rounds of median(dense)/median(sparse), and the min and max round ratio."""
    time_ms = _timer(device)
    for call in (dense, sparse):
        for _ in range(3):
            time_ms(call)
    ratios = []
    for round_number in range(rounds):
        order = (dense, sparse) if round_number % 2 == 0 else (sparse, dense)
        timed = {id(call): [time_ms(call) for _ in range(iters)] for call in order}
        ratios.append(statistics.median(timed[id(dense)]) / statistics.median(timed[id(sparse)]))
    return statistics.median(ratios), min(ratios), max(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{TOKENS} tokens, {SPARSITY:.0%} block sparsity; speed-up = dense time / sparse time")
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for name, (out_features, in_features) in SHAPES.items():
            weight = torch.randn(out_features, in_features, generator=generator) * 0.02
            x = torch.randn(TOKENS, in_features, generator=generator).to(device)
            variants: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {}
            for block in (16, 32, 64):
                masked = (weight * block_mask(weight, block, SPARSITY)).to(device)
                variants[f"BSR {block}x{block}"] = (
                    partial(F.linear, x, masked),
                    partial(F.linear, x, masked.to_sparse_bsr((block, block))))
            masked = (weight * block_mask(weight, 32, SPARSITY)).to(device)
            variants["CSR"] = (partial(F.linear, x, masked),
                               partial(_csr_linear, x, masked.to_sparse_csr()))
            if device == "cuda" and torch.cuda.get_device_capability() >= (8, 0):
                half = (weight * two_four_mask(weight)).half().to(device)
                variants["2:4 fp16"] = (
                    partial(F.linear, x.half(), half),
                    partial(F.linear, x.half(), torch.sparse.to_sparse_semi_structured(half)))
            for label, (dense, sparse) in variants.items():
                try:
                    ratio, low, high = interleaved_ratio(dense, sparse, device, args.rounds,
                                                         args.iters)
                except (RuntimeError, NotImplementedError) as error:
                    print(f"{name:<11} {label:<11} unsupported: {str(error).splitlines()[0]}")
                    continue
                print(f"{name:<11} {label:<11} {ratio:5.2f}x  (rounds {low:.2f}-{high:.2f})")


if __name__ == "__main__":
    main()
