from __future__ import annotations

import pytest

from harness.budget import parse_budget, parse_budgets
from harness.errors import BudgetError


@pytest.mark.parametrize(
    ("text", "metric", "limit"),
    [
        ("1gflop", "macs", 1e9),
        ("1GFLOP", "macs", 1e9),
        ("500mflop", "macs", 5e8),
        ("1.5gmac", "macs", 1.5e9),
        ("5ms", "latency_ms", 5.0),
        ("0.5s", "latency_ms", 500.0),
        ("20mparams", "params", 2e7),
        ("20MParams", "params", 2e7),
    ],
)
def test_budget_strings(text, metric, limit):
    budget = parse_budget(text)
    assert (budget.metric, budget.limit) == (metric, pytest.approx(limit))
    assert budget.violation(limit) == 0
    assert budget.violation(limit * 1.1) == pytest.approx(0.1)
    assert budget.violation(limit * 0.5) < 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1gigaflop", "unknown budget unit 'gigaflop' in '1gigaflop'; valid units: "),
        ("fast", "cannot parse budget 'fast'; expected a number and a unit"),
        ("0ms", "must be positive"),
        ("-1gflop", "budget '-1gflop' must be positive"),
        ("-3ms", "budget '-3ms' must be positive"),
        ("0.001ms", "latency budget '0.001ms' is below 0.01 ms"),
        ("1 g flop", "cannot parse budget"),
    ],
)
def test_bad_budget_strings(text, message):
    with pytest.raises(BudgetError, match=message):
        parse_budget(text)


@pytest.mark.parametrize("text", ["1 gflop", " 1GFLOP ", "1gflop", "+1gflop"])
def test_a_budget_is_kept_in_its_canonical_spelling(text):
    budget = parse_budget(text)
    assert (budget.text, budget.limit) == ("1gflop", 1e9)


def test_two_budgets_on_one_metric_are_refused():
    assert [b.metric for b in parse_budgets(["1gflop", "5ms", "20mparams"])] == ["macs", "latency_ms", "params"]
    with pytest.raises(BudgetError, match="more than one budget on macs"):
        parse_budgets(["1gflop", "900mmac"])
