"""Scale-out benchmark: local workers' throughput, and the storage's cost per trial.

    python benchmarks/workers_bench.py                                   # journal file only
    python benchmarks/workers_bench.py --postgres postgresql://user@host:5432/db

1. Throughput of ``harness search --workers K`` for K = 1, 2, 4 on a cost-only objective (the
   ``zcu102`` FPGA profile, estimated, and the ``proxy:params`` estimator), end to end through
   the command line. Rounds interleave K = 1, 2, 4 so that a host that drifts affects each alike.
2. The storage's part of a trial: the harness's own storage calls for one trial (ask, the user
   attributes of a real trial record, tell, then the orphan and target checks of the search loop),
   replayed on a journal file and, with ``--postgres``, on PostgreSQL.

See benchmarks/README.md for what the figures mean.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from harness.search.storage import open_storage, recover_orphans, retries_waiting
from harness.search.study import DIRECTIONS, measured_count

SPACE, DEVICE, ESTIMATOR = "vit_tiny", "zcu102", "proxy:params"
WORKER_COUNTS = (1, 2, 4)


def search(workdir: Path, trials: int, workers: int) -> tuple[float, list[FrozenTrial]]:
    """Wall seconds of one ``harness search --workers K`` and the trials it finished."""
    out = workdir / f"k{workers}-{uuid.uuid4().hex[:8]}"
    command = [sys.executable, "-m", "harness", "search", "--space", SPACE, "--device", DEVICE,
               "--accuracy", ESTIMATOR, "--trials", str(trials), "--workers", str(workers),
               "--out", str(out), "--study", "bench", "--quiet"]
    start = time.perf_counter()
    done = subprocess.run(command, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    wall_s = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"harness search --workers {workers} failed: {done.stderr.strip()}")
    storage = open_storage(str(out / "study.journal"))
    return wall_s, optuna.load_study(study_name="bench", storage=storage).trials


def steady_per_min(trials: list[FrozenTrial]) -> float:
    """Measured trials per minute from the first trial's start to the last one's end (process
    start-up and the study's creation left out)."""
    measured = [t for t in trials if t.state == TrialState.COMPLETE]
    first = min(t.datetime_start for t in trials)
    last = max(t.datetime_complete for t in trials)
    return len(measured) / (last - first).total_seconds() * 60


def throughput(trials: int, rounds: int) -> FrozenTrial:
    """Section 1; returns a measured trial whose record section 2 replays."""
    print(f"\n## 1. Local workers: `harness search --workers K`, {trials} measured trials, "
          f"{SPACE} on {DEVICE} (estimated), {ESTIMATOR}, {rounds} interleaved rounds\n")
    per_min: dict[int, list[tuple[float, float]]] = {k: [] for k in WORKER_COUNTS}
    with tempfile.TemporaryDirectory(prefix="workers-bench-") as workdir:
        for _ in range(rounds):
            for workers in WORKER_COUNTS:
                wall_s, finished = search(Path(workdir), trials, workers)
                measured = sum(t.state == TrialState.COMPLETE for t in finished)
                per_min[workers].append((measured / wall_s * 60, steady_per_min(finished)))
                sample = next(t for t in finished if t.state == TrialState.COMPLETE)
    base_end = statistics.median(end for end, _ in per_min[1])
    base_steady = statistics.median(steady for _, steady in per_min[1])
    print("| workers | trials/min end to end | speed-up | trials/min steady | speed-up |")
    print("|---|---|---|---|---|")
    for workers, runs in per_min.items():
        end = statistics.median(e for e, _ in runs)
        steady = statistics.median(s for _, s in runs)
        print(f"| {workers} | {end:.0f} | {end / base_end:.2f}x | {steady:.0f} | "
              f"{steady / base_steady:.2f}x |")
    print(f"\nmedian of {rounds} rounds; end to end includes starting the processes (torch "
          f"import) and creating the study; {os.cpu_count()} logical cores")
    return sample


def storage_overhead(label: str, storage_url: str, record: FrozenTrial, trials: int) -> float:
    """Milliseconds of the harness's storage calls per trial, on a fresh study; the random
    sampler, whose proposals read nothing from the storage, keeps the sampler's cost out."""
    storage = open_storage(storage_url, concurrent=True)
    study = optuna.create_study(study_name=f"overhead-{uuid.uuid4().hex}", storage=storage,
                                directions=list(DIRECTIONS),
                                sampler=optuna.samplers.RandomSampler(seed=0))
    distributions = {key: FloatDistribution(0, 1) for key in record.params}
    parts: dict[str, list[float]] = {"ask": [], "attributes": [], "tell": [], "loop checks": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "heartbeat ... used with Study.optimize"
        for _ in range(trials):
            start = time.perf_counter()
            trial = study.ask(distributions)
            parts["ask"].append(time.perf_counter() - start)
            start = time.perf_counter()
            _replay_attributes(trial, record)
            parts["attributes"].append(time.perf_counter() - start)
            start = time.perf_counter()
            study.tell(trial, record.values)
            parts["tell"].append(time.perf_counter() - start)
            start = time.perf_counter()
            recover_orphans(study)
            measured_count(study)
            retries_waiting(study)
            parts["loop checks"].append(time.perf_counter() - start)
    medians = {part: statistics.median(values) * 1e3 for part, values in parts.items()}
    totals = [sum(values) for values in zip(*parts.values())]
    total_ms = statistics.median(totals) * 1e3
    print(f"| {label} | {total_ms:.1f} | {statistics.quantiles(totals, n=10)[-1] * 1e3:.1f} | "
          + " | ".join(f"{ms:.1f}" for ms in medians.values()) + f" | {trials} |")
    return total_ms


def _replay_attributes(trial: optuna.Trial, record: FrozenTrial) -> None:
    for key, value in record.user_attrs.items():
        trial.set_user_attr(key, value)
    for key, value in record.constraints.items():
        trial.set_constraint(key, value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=150,
                        help="measured trials per search in section 1 (default 150)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument("--overhead-trials", type=int, default=200,
                        help="trials replayed per storage in section 2 (default 200)")
    parser.add_argument("--postgres", metavar="URL",
                        help="a PostgreSQL database for section 2 (default: journal file only)")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"# workers_bench on {platform.node()}: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} logical cores, Optuna {optuna.__version__}; load average "
          f"{os.getloadavg()[0]:.2f} at start")
    sample = throughput(args.trials, args.rounds)
    print(f"\n## 2. Storage calls per trial: ask, the {len(sample.user_attrs)} user attributes "
          "and the constraints of a real trial record, tell, then the search loop's orphan and "
          "target checks\n")
    print("| storage | median ms/trial | p90 ms | ask | attributes | tell | loop checks | trials |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="workers-bench-") as workdir:
        journal_ms = storage_overhead("journal file (local disk)",
                                      str(Path(workdir) / "study.journal"), sample,
                                      args.overhead_trials)
    if args.postgres:
        postgres_ms = storage_overhead("PostgreSQL", args.postgres, sample, args.overhead_trials)
        print(f"\nPostgreSQL / journal: {postgres_ms / journal_ms:.2f}x")
    else:
        print("\nPostgreSQL: not measured (pass --postgres URL)")
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
