"""Search benchmark: sampler hypervolume, analytic budget checks per second, harness overhead.

    python benchmarks/search_bench.py            # default run, ~8 minutes on 2 CPU cores
    python benchmarks/search_bench.py --quick    # smoke run, ~2 minutes

Three sections, each on the real harness (``run_search``, the ``cpu`` device, ``proxy:dss``):

1. TPE vs random: hypervolume after N measured trials on ``vit_tiny`` under ``1gflop``, several
   seeds, one shared set of hypervolume bounds. Each distinct configuration is measured once per
   benchmark run (short protocol, retaken if the host was busy) and reused by every run that
   proposes it.
2. Analytic budget checks per second (``estimate_cost`` + ``Budget.violation``).
3. Harness overhead per trial with the default cpu protocol on a DeiT-Tiny-sized candidate.

See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from harness.accuracy import DssIndicator, get_estimator
from harness.budget import Budget, parse_budgets
from harness.config import CandidateConfig
from harness.cost import estimate_cost
from harness.devices import get_device
from harness.devices.base import TimedOnHost
from harness.devices.cpu import CpuDevice
from harness.environment import capture_environment
from harness.models import VisionTransformer
from harness.search.pareto import REFERENCE, Bounds, hypervolume_history, to_losses
from harness.search.results import trial_record
from harness.search.study import SearchSettings, TrialOutcome, run_search
from harness.space import load_space
from harness.timing import MeasurementProtocol

SPACE = "vit_tiny"
CHECK_SPACES = ("vit_tiny", "vit_small")
DEVICE = "cpu"
ESTIMATOR = "proxy:dss"
BUDGET = "1gflop"
SAMPLER_PAIR = (SearchSettings.sampler, "random")  # the harness default ("tpe") first
SHORT_PROTOCOL = {"time_cap_s": 0.5, "min_samples": 20, "warmup_min_s": 0.2}
DEIT_TINY = {"embed_dim": 192, "depth": 12, "num_heads": 3, "mlp_ratio": 4.0, "keep_rate": 1.0}
CHECKS_TARGET_PER_S = 10_000
CHECK_PASSES = 3
OVERHEAD_TARGET = 0.10
DEFAULTS = {"trials": 30, "seeds": 5, "overhead_trials": 5}
QUICK = {"trials": 10, "seeds": 2, "overhead_trials": 2}


class MemoizedCpuDevice(CpuDevice):
    """The real CPU device, timing each distinct model once: a model whose architecture and input
    shape were timed before gets the earlier measurement back. A busy host is handled by the
    measurement layer itself (waited for, retaken, else flagged contended)."""

    def __init__(self, device: CpuDevice) -> None:
        super().__init__(device.profile)
        self.measurements: dict[tuple[str, tuple[int, ...]], TimedOnHost] = {}
        self.reused = 0

    def measure_on_quiet_host(
        self, model: torch.nn.Module, inputs: torch.Tensor, protocol: MeasurementProtocol,
        precision: str,
    ) -> TimedOnHost:
        key = (repr(model), tuple(inputs.shape))  # the repr names every width and keep rate
        if key in self.measurements:
            self.reused += 1
        else:
            self.measurements[key] = super().measure_on_quiet_host(model, inputs, protocol,
                                                                   precision)
        return self.measurements[key]

    @property
    def retaken(self) -> int:
        return sum(len(timed.takes) > 1 for timed in self.measurements.values())

    @property
    def kept_busy(self) -> int:
        return sum(timed.contended for timed in self.measurements.values())


class MemoizedDss(DssIndicator):
    """The real DSS-indicator, computed once per configuration."""

    def __init__(self) -> None:
        super().__init__()
        self.scores: dict[str, float] = {}

    def estimate(self, model: VisionTransformer, config: CandidateConfig,
                 report: object = None) -> float:
        key = config.key()
        if key not in self.scores:
            self.scores[key] = super().estimate(model, config)
        return self.scores[key]


@dataclasses.dataclass(frozen=True)
class SearchRun:
    points: list[tuple[float, float] | None]  # per measured trial; None: failed or infeasible
    rejected: int
    wall_s: float


# --------------------------------------------------------------------------- 1. samplers


def compare_samplers(n_trials: int, n_seeds: int, workdir: Path) -> None:
    device = MemoizedCpuDevice(get_device(DEVICE))
    protocol = dataclasses.replace(device.profile.protocol, **SHORT_PROTOCOL)
    estimator = MemoizedDss()
    budgets = parse_budgets([BUDGET])
    print(f"== 1. Sampler comparison: {' vs '.join(SAMPLER_PAIR)} on {SPACE}, budget {BUDGET}, "
          f"device {DEVICE}, {ESTIMATOR}, {n_trials} measured trials, seeds 0..{n_seeds - 1}")
    print(f"   short measurement protocol for this section: {_describe_protocol(protocol)} "
          f"(profile: {_describe_protocol(device.profile.protocol)});")
    print("   each distinct configuration is measured once and reused by every run proposing it; "
          "a busy host is waited for and the measurement retaken (the measurement layer's "
          "contention check)")
    runs: dict[tuple[str, int], SearchRun] = {}
    for seed in range(n_seeds):  # interleaved, so drift of the host hits both samplers alike
        for sampler in SAMPLER_PAIR:
            settings = SearchSettings(
                space=load_space(SPACE), device=device, estimator=estimator, protocol=protocol,
                budgets=budgets, n_trials=n_trials, seed=seed, sampler=sampler,
                study_name=f"{sampler}-seed{seed}",
                storage=str(workdir / f"{sampler}-seed{seed}.journal"), out_dir=workdir,
            )
            run = search_run(settings)
            runs[sampler, seed] = run
            print(f"   {sampler:<6} seed {seed}: {len(run.points)} measured, {run.rejected} "
                  f"rejected by the budget, {run.wall_s:.0f} s")
    measured = [p for run in runs.values() for p in run.points if p is not None]
    bounds = Bounds.of(to_losses(measured))
    print(f"   {len(device.measurements)} distinct configurations timed, {device.reused} "
          f"measurement(s) reused, {device.retaken} retaken on a busy host "
          f"({device.kept_busy} kept flagged contended after "
          f"{1 + protocol.contention_retakes} busy takes)")
    print(f"   hypervolume scaled by shared bounds over all {len(measured)} "
          f"feasible points: latency {bounds.low[0]:.2f}..{bounds.high[0]:.2f} ms, accuracy "
          f"{-bounds.high[1]:.4f}..{-bounds.low[1]:.4f} (reference {REFERENCE} per scaled axis, "
          f"so HV <= {REFERENCE**2:.2f})")
    print_sampler_table(runs, bounds, n_trials, n_seeds)


def search_run(settings: SearchSettings) -> SearchRun:
    start = time.perf_counter()
    study = run_search(settings)
    frozen = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
    points = [
        (t.values[0], t.values[1])
        if t.state == TrialState.COMPLETE and trial_record(t)["feasible"] else None
        for t in frozen
    ]
    rejected = len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))
    return SearchRun(points, rejected, time.perf_counter() - start)


def print_sampler_table(
    runs: dict[tuple[str, int], SearchRun], bounds: Bounds, n_trials: int, n_seeds: int
) -> None:
    half, final = f"HV@{n_trials // 2}", f"HV@{n_trials}"
    metrics = {}
    for key, run in runs.items():
        history = hypervolume_history(run.points, bounds)
        metrics[key] = {half: history[n_trials // 2 - 1], final: history[-1],
                        "rejected": float(run.rejected)}
    first, second = SAMPLER_PAIR
    seeds = range(n_seeds)
    deltas = [metrics[first, s][final] - metrics[second, s][final] for s in seeds]
    columns = [(sampler, name) for sampler in SAMPLER_PAIR for name in (half, final, "rejected")]

    def row(label: str, values: list[float], delta: str) -> None:
        cells = "".join(f"{v:>17.1f}" if name == "rejected" else f"{v:>17.4f}"
                        for (_, name), v in zip(columns, values))
        print(f"   {label:<5}{cells}{delta:>11}")

    print(f"   {'seed':<5}" + "".join(f"{f'{s} {n}':>17}" for s, n in columns)
          + f"{'Δ' + final:>11}")
    for seed in seeds:
        row(str(seed), [metrics[s, seed][n] for s, n in columns], f"{deltas[seed]:+.4f}")
    for label, reduce, sign in (("mean", statistics.fmean, "+"), ("std", _stdev, "")):
        values = [reduce([metrics[s, seed][n] for seed in seeds]) for s, n in columns]
        row(label, values, f"{reduce(deltas):{sign}.4f}")
    print(f"   verdict: {first} beats {second} in {sum(d > 0 for d in deltas)}/{n_seeds} seeds, "
          f"mean Δ{final} = {statistics.fmean(deltas):+.4f} ({first} − {second}); final HV "
          f"{first} {_mean_std([metrics[first, s][final] for s in seeds])}, {second} "
          f"{_mean_std([metrics[second, s][final] for s in seeds])}")


def _stdev(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _mean_std(values: list[float]) -> str:
    return f"{statistics.fmean(values):.4f} ± {_stdev(values):.4f}"


def _describe_protocol(protocol: MeasurementProtocol) -> str:
    return (f"warmup >= {protocol.warmup_min_s:g} s, >= {protocol.min_samples} samples, "
            f"CI target ±{protocol.target_ci_rel:.0%}, time cap {protocol.time_cap_s:g} s")


# --------------------------------------------------------------------------- 2. budget checks


def budget_check_rate(n_configs: int) -> None:
    budget = parse_budgets([BUDGET])[0]
    print(f"== 2. Analytic budget checks per second: estimate_cost + violation({budget.text}) on "
          f"{n_configs} sampled configurations per space, median of {CHECK_PASSES} passes")
    for name in CHECK_SPACES:
        configs = load_space(name).sample(n_configs)
        rates, feasible = [], 0
        for _ in range(CHECK_PASSES):
            seconds, feasible = time_checks(configs, budget)
            rates.append(len(configs) / seconds)
        rate = statistics.median(rates)
        verdict = "PASS" if rate >= CHECKS_TARGET_PER_S else "FAIL"
        print(f"   {name:<10} {rate:>10,.0f} checks/s (target >= {CHECKS_TARGET_PER_S:,}/s) "
              f"{verdict}; {feasible / len(configs):.1%} of the samples within {budget.text}")


def time_checks(configs: list[CandidateConfig], budget: Budget) -> tuple[float, int]:
    """Seconds to check every configuration against ``budget``, and how many are within it."""
    start = time.perf_counter()
    violations = [budget.violation(estimate_cost(config).macs) for config in configs]
    seconds = time.perf_counter() - start
    return seconds, sum(v <= 0 for v in violations)


# --------------------------------------------------------------------------- 3. overhead


def harness_overhead(n_trials: int, workdir: Path) -> None:
    device = get_device(DEVICE)
    space = load_space(SPACE).with_fixed(DEIT_TINY)
    settings = SearchSettings(
        space=space, device=device, estimator=get_estimator(ESTIMATOR),
        protocol=device.profile.protocol, n_trials=n_trials, study_name="overhead",
        storage=str(workdir / "overhead.journal"), out_dir=workdir,
    )
    print(f"== 3. Harness overhead per trial: {SPACE} pinned to {DEIT_TINY}, no budget, "
          f"{n_trials} trials, default {DEVICE} protocol ({_describe_protocol(settings.protocol)})")
    print("   overhead = TrialOutcome.duration_s (study.ask() to study.tell()) − (latency + "
          "accuracy phases): sampling, building, costing, storage writes")
    outcomes: list[TrialOutcome] = []
    run_search(settings, on_trial=lambda outcome, _study: outcomes.append(outcome))
    print(f"   {'trial':>5} {'duration':>9} {'build':>7} {'latency':>8} {'accuracy':>9} "
          f"{'overhead':>9} {'share':>6} {'build %':>7}")
    shares, build_shares = [], []
    for outcome in outcomes:
        phases = outcome.record["phase_s"]
        overhead = outcome.duration_s - phases["latency"] - phases["accuracy"]
        shares.append(overhead / outcome.duration_s)
        build_shares.append(phases["build"] / outcome.duration_s)
        print(f"   {outcome.number:>5} {outcome.duration_s:>8.3f}s {phases['build']:>6.3f}s "
              f"{phases['latency']:>7.3f}s {phases['accuracy']:>8.3f}s {overhead:>8.3f}s "
              f"{shares[-1]:>6.1%} {build_shares[-1]:>7.1%}")
    share = statistics.fmean(shares)
    verdict = "PASS" if share < OVERHEAD_TARGET else "FAIL"
    print(f"   mean overhead share {share:.1%}; build alone {statistics.fmean(build_shares):.1%}; "
          f"target < {OVERHEAD_TARGET:.0%}: {verdict}")


# --------------------------------------------------------------------------- driver


def print_header(args: argparse.Namespace) -> None:
    device = get_device(DEVICE)
    env = capture_environment(device)
    cpu = env["device"]
    print(f"search_bench: {env['host']}, {cpu['cpu_model']} ({cpu['physical_cores']} "
          f"physical / {cpu['logical_cores']} logical cores, governor {cpu['governor']})")
    print(f"   python {env['python']}, torch {env['torch']}, optuna {env['optuna']}, harness "
          f"{env['harness']} ({env['git_commit']}); torch threads {torch.get_num_threads()} now, "
          f"{device.threads(device.profile.protocol)} while timing")
    print(f"   settings: trials {args.trials}, seeds {args.seeds}, overhead trials "
          f"{args.overhead_trials}, configurations per space {args.configs}"
          f"{' (--quick)' if args.quick else ''}; {_load_average()} at start")


def _load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"


def timed_section(title: str, section: Callable[[], None]) -> float:
    start = time.perf_counter()
    section()
    seconds = time.perf_counter() - start
    print(f"   [{title}: {seconds:.1f} s wall]\n")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK['trials']} trials, {QUICK['seeds']} seeds, "
                        f"{QUICK['overhead_trials']} overhead trials (explicit flags still win)")
    parser.add_argument("--trials", type=_positive,
                        help=f"measured trials per search run (default {DEFAULTS['trials']})")
    parser.add_argument("--seeds", type=_positive,
                        help=f"seeds 0..K-1 per sampler (default {DEFAULTS['seeds']})")
    parser.add_argument("--overhead-trials", type=_positive, help="trials of the overhead section "
                        f"(default {DEFAULTS['overhead_trials']})")
    parser.add_argument("--configs", type=_positive, default=2000,
                        help="configurations per space for the budget checks (default 2000)")
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.trials < 2:
        print("search_bench: --trials must be at least 2 (the table reports HV at N/2)",
              file=sys.stderr)
        return 2
    sys.stdout.reconfigure(line_buffering=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = time.perf_counter()
    print_header(args)
    print()
    with tempfile.TemporaryDirectory(prefix="search_bench-") as tmp:
        workdir = Path(tmp)
        timed_section("section 1", lambda: compare_samplers(args.trials, args.seeds, workdir))
        timed_section("section 2", lambda: budget_check_rate(args.configs))
        timed_section("section 3", lambda: harness_overhead(args.overhead_trials, workdir))
    print(f"total wall time {time.perf_counter() - start:.0f} s; {_load_average()} (this benchmark "
          f"alone keeps ~{torch.get_num_threads()} busy while timing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
