"""Budgets: ``1gflop``, ``500mflop``, ``1.5gmac``, ``5ms``, ``20mparams`` (case-insensitive).

FLOP units follow the ViT papers' convention (their "FLOPs" are multiply-accumulates), so
``1gflop`` and ``1gmac`` are the same budget. A budget is a hard constraint: Optuna sees
``(value - limit) / limit``, feasible when <= 0.

Spaces between the number and the unit are allowed (``"1 gflop"``); a budget is kept in its
canonical spelling (``1gflop``), so both name the same study. Latency budgets below
``MIN_LATENCY_MS`` are refused: no ViT runs faster than one timed call's own overhead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from harness.errors import BudgetError, shorten

# metric -> {suffix: multiplier to the metric's unit (MACs, parameters, milliseconds)}
_UNITS: dict[str, dict[str, float]] = {
    "macs": {"gflop": 1e9, "mflop": 1e6, "kflop": 1e3, "gmac": 1e9, "mmac": 1e6,
                      "kmac": 1e3, "gflops": 1e9, "mflops": 1e6, "gmacs": 1e9, "mmacs": 1e6},
    "params": {"mparams": 1e6, "kparams": 1e3, "gparams": 1e9, "params": 1.0},
    "latency_ms": {"ms": 1.0, "s": 1e3, "us": 1e-3},
}
_PATTERN = re.compile(r"^\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+))\s*([a-z]+)\s*$")
# A Python call of a PyTorch module, or one CUDA kernel launch, costs several microseconds.
MIN_LATENCY_MS = 0.01
VALID_FORMS = "a number and a unit, e.g. 1gflop, 500mflop, 1.5gmac, 5ms, 20mparams"
# metric -> (scale, unit of a limit, unit of an amount, the ``Cost`` attribute it bounds; None:
# a measured figure)
_METRICS: dict[str, tuple[float, str, str, str | None]] = {
    "macs": (1e9, "GMACs", "GMACs", "macs"),
    "params": (1e6, "M params", "M parameters", "params"),
    "latency_ms": (1.0, "ms latency", "ms", None),
}


@dataclass(frozen=True)
class Budget:
    metric: str  # "macs", "params" or "latency_ms"
    limit: float  # in the metric's unit: MACs, parameters or milliseconds
    text: str

    @property
    def constraint_key(self) -> str:
        return f"budget:{self.metric}"

    @property
    def on_cost(self) -> bool:
        """Whether the budget bounds the analytic cost (checked before a candidate is built),
        not a measured figure."""
        return _METRICS[self.metric][3] is not None

    def cost_value(self, cost: Any) -> float:
        """The figure of ``cost`` (a ``harness.cost.Cost``) this budget bounds."""
        return getattr(cost, _METRICS[self.metric][3])

    def amount(self, value: float) -> str:
        """``value`` in the metric's unit, for messages: ``0.125 GMACs``."""
        scale, _, unit, _ = _METRICS[self.metric]
        return f"{value / scale:.3f} {unit}"

    def violation(self, value: float) -> float:
        """Relative excess over the limit: <= 0 is within budget."""
        return (value - self.limit) / self.limit

    def describe(self) -> str:
        scale, unit, _, _ = _METRICS[self.metric]
        return f"<= {self.limit / scale:g} {unit} ({self.text})"


def parse_budget(text: str) -> Budget:
    match = _PATTERN.match(text.lower())
    if not match:
        raise BudgetError(f"cannot parse budget {shorten(text)}; expected {VALID_FORMS}")
    number, suffix = float(match.group(1)), match.group(2)
    for metric, suffixes in _UNITS.items():
        if suffix in suffixes:
            if number <= 0:
                raise BudgetError(f"budget {shorten(text)} must be positive; expected {VALID_FORMS}")
            limit = number * suffixes[suffix]
            if metric == "latency_ms" and limit < MIN_LATENCY_MS:
                raise BudgetError(f"latency budget {shorten(text)} is below {MIN_LATENCY_MS} ms, the "
                                  "overhead of one timed call: no candidate can meet it")
            return Budget(metric=metric, limit=limit, text=f"{match.group(1).lstrip('+')}{suffix}")
    valid = sorted({s for suffixes in _UNITS.values() for s in suffixes})
    raise BudgetError(f"unknown budget unit {shorten(suffix)} in {shorten(text)}; valid units: "
                      f"{', '.join(valid)}")


def parse_budgets(texts: list[str]) -> list[Budget]:
    budgets = [parse_budget(t) for t in texts]
    metrics = [b.metric for b in budgets]
    duplicate = next((m for m in metrics if metrics.count(m) > 1), None)
    if duplicate:
        raise BudgetError(f"more than one budget on {duplicate}: {', '.join(texts)}")
    return budgets
