"""Checks before a search starts: the space narrowed to what the device runs faster and its
runtime can run, and budgets or device resources that no configuration of the space can meet."""

from __future__ import annotations

from harness.budget import Budget
from harness.config import CandidateConfig
from harness.cost import estimate_cost
from harness.devices import BaseDevice
from harness.errors import BudgetError, DeviceError, shorten
from harness.knobs import BASELINE, KERNEL_KNOBS
from harness.runtimes import RuntimeRefused, get_runtime
from harness.space import SearchSpace


def restrict_to_device(
    space: SearchSpace, device: BaseDevice, keep_unaccelerated: bool = False
) -> tuple[SearchSpace, list[str]]:
    """The space without kernel-knob choices the device does not accelerate, and notes saying
    what was dropped or kept. Fixed values (the user's explicit choice) are kept, with a note."""
    notes = []
    pinned = {}
    for knob in KERNEL_KNOBS:
        dim = space.dimensions.get(knob)
        if dim is None:
            continue
        slow = {value: device.accelerates(knob, value)[1] for value in dim.choices
                if not device.accelerates(knob, value)[0]}
        for value, reason in slow.items():
            kept = dim.fixed or keep_unaccelerated
            action = "kept as asked" if kept else "dropped from the space"
            notes.append(f"{knob} {value} is not accelerated on {device.name} ({reason}); {action}")
        if slow and not (dim.fixed or keep_unaccelerated):
            remaining = tuple(v for v in dim.choices if v not in slow) or (BASELINE[knob],)
            pinned[knob] = remaining
    if pinned:
        space = space.with_choices(pinned)
    return space, notes


def restrict_to_runtime(space: SearchSpace, device: BaseDevice
                        ) -> tuple[SearchSpace, list[str]]:
    """Refuse a runtime of the space that the device does not list or that is not installed,
    before anything is built. With one runtime, the precisions it cannot run are dropped from
    the space, with a note (a precision the user fixed is refused); with several, a combination
    one of them cannot carry is left to the trials: each such candidate fails with the reason,
    and the study goes on."""
    dim = space.dimensions.get("runtime")
    runtimes = dim.choices if dim else ("eager",)
    for runtime in runtimes:
        if runtime not in device.profile.runtimes:
            raise DeviceError(f"space {shorten(space.name)}: device {shorten(device.name)} does "
                              f"not run runtime {runtime} (its profile lists: "
                              f"{', '.join(device.profile.runtimes)})")
        installed, reason = get_runtime(runtime).availability()
        if not installed:
            raise RuntimeRefused(f"space {shorten(space.name)}: runtime {runtime}: {reason} "
                                 f"({get_runtime(runtime).install_hint})")
    precision = space.dimensions.get("precision")
    if len(runtimes) > 1 or precision is None:
        return space, []
    runtime = get_runtime(runtimes[0])
    refused = {value: runtime.refusal(CandidateConfig(precision=value, runtime=runtime.name),
                                      device.kind) for value in precision.choices}
    refused = {value: reason for value, reason in refused.items() if reason}
    kept = tuple(value for value in precision.choices if value not in refused)
    if refused and (precision.fixed or not kept):
        value, reason = next(iter(refused.items()))
        raise RuntimeRefused(f"space {shorten(space.name)}: runtime {runtime.name} cannot run "
                             f"precision {value}: {reason}")
    notes = [f"precision {value} dropped from the space: runtime {runtime.name} cannot run it "
             f"({reason})" for value, reason in refused.items()]
    return (space.with_choices({"precision": kept}) if refused else space), notes


def check_budgets_reachable(space: SearchSpace, budgets: list[Budget]) -> None:
    """Refuse MAC/parameter budgets that even the cheapest configuration of the space exceeds."""
    costs = [estimate_cost(config) for config in space.corner_configs()]
    for budget in (b for b in budgets if b.on_cost):
        smallest = min(budget.cost_value(cost) for cost in costs)
        if budget.violation(smallest) > 0:
            raise BudgetError(
                f"no configuration of space {shorten(space.name)} meets budget "
                f"{shorten(budget.text)}: the smallest needs {budget.amount(smallest)}"
            )


def check_device_fits(space: SearchSpace, device: BaseDevice, batch_size: int) -> None:
    """Refuse a space whose cheapest configurations all exceed the device's resources: every
    candidate would be rejected, thousands of them, before the search gave up."""
    usage = []
    for config in space.corner_configs():
        violations = device.resource_violations(config, batch_size)
        if not any(v > 0 for v in violations.values()):
            return
        usage.append(", ".join(part_usage(k, v) for k, v in violations.items() if v > 0))
    if usage:
        raise BudgetError(f"no configuration of space {shorten(space.name)} fits device "
                          f"{shorten(device.name)} at batch size {batch_size}: the smallest needs "
                          f"{min(usage, key=len)}; allow a lower precision or a smaller model")


def part_usage(key: str, violation: float) -> str:
    return f"{key} at {100 * (1 + violation):.0f}% of the part"
