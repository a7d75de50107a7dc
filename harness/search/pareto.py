"""Pareto fronts and hypervolume in the (latency, accuracy) plane.

Objectives are turned into losses to minimise — (latency_ms, -accuracy) — and scaled to [0, 1]
by bounds, with the reference point at 1.1 in each: hypervolumes computed with the same bounds are
comparable (the sampler benchmark shares one set of bounds across all its runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from optuna._hypervolume import compute_hypervolume  # private in Optuna 5: wrapped here only

REFERENCE = 1.1


@dataclass(frozen=True)
class Bounds:
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def of(cls, losses: np.ndarray) -> Bounds:
        low, high = losses.min(axis=0), losses.max(axis=0)
        return cls(low, np.where(high > low, high, low + 1.0))

    def scale(self, losses: np.ndarray) -> np.ndarray:
        return (losses - self.low) / (self.high - self.low)


def to_losses(points: Sequence[tuple[float, float]]) -> np.ndarray:
    """(latency_ms, accuracy) pairs → losses to minimise."""
    return np.array([(latency, -accuracy) for latency, accuracy in points], dtype=float).reshape(-1, 2)


def hypervolume(losses: np.ndarray, bounds: Bounds) -> float:
    if len(losses) == 0:
        return 0.0
    scaled = bounds.scale(losses)
    inside = scaled[(scaled < REFERENCE).all(axis=1)]
    if len(inside) == 0:
        return 0.0
    return float(compute_hypervolume(inside, np.full(2, REFERENCE)))


def hypervolume_history(
    points: Sequence[tuple[float, float] | None], bounds: Bounds
) -> list[float]:
    """Hypervolume after each trial; ``None`` marks a trial with no feasible measured point."""
    history, seen = [], []
    for point in points:
        if point is not None:
            seen.append(point)
        history.append(hypervolume(to_losses(seen), bounds) if seen else 0.0)
    return history

