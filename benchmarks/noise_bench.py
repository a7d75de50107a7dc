"""Latency on a busy or drifting host: does the harness still give numbers one can trust?

    python benchmarks/noise_bench.py                      # every part, 1.5-3 hours on 2 cores
    python benchmarks/noise_bench.py --parts aa sharing   # some of them

Run it on an otherwise idle host: it starts its own competing load where a part needs one.

Parts:

* ``aa``: ten pairs of back-to-back deit_tiny measurements under the ``cpu`` profile's protocol
  (what a search times: 1-1.5 s), ten under the smoke suite's (what ``bench`` times: 2-4 s) and
  ten of int8 deit_tiny under the ``cpu`` profile's (corrected by the probe in int8),
  alternating pair by pair; how many pairs' medians agree within 3%, drift-corrected and raw.
  Also the reference probe's overhead.
* ``contention``: a 10-candidate search (``vit_tiny``, 1 GFLOP, ``proxy:params`` so that only
  latency matters) with a competing load (twice as many spinning processes as cores) started
  after its third trial and stopped ~40 s later. A trial whose kept measurement overlapped the
  load without being flagged is a miss; target: no miss on the front. Also how many front
  points the re-measured front changed.
* ``compare``: pairs of back-to-back ``harness bench --suite smoke --rounds 6`` runs (6 runs a
  side: one run a side is never decided, and 6 let a change be significant after Holm's
  correction over the suite's 3 entries), each pair compared with ``--fail-on-regression``
  (target: no regression in any), then as many runs with a 5% slowdown injected into the
  deit_tiny entry (extra matrix products after each call, as much work as 5% of the model's,
  sized by timing them alternately with it), each compared with the pair's first run
  (target: flagged in at least 9 of 10). Both at the suite's own thresholds and at
  ``--threshold 3``: a 5% change is exactly the smoke suite's deit_tiny threshold.
  ``--compare-pairs N`` (default 10) bounds its time: ~4 minutes a pair on 2 cores.
* ``interleaved``: the way a PR check gets its replicates, ``harness compare --base-rev
  --head-rev`` (6 alternating rounds a side, tested paired by round, then more while the entry is
  noisy, up to the default cap), on the smoke suite's deit_tiny entry at ``--threshold 3``: A/A
  jobs (HEAD against HEAD; target: no regression in any) alternating with jobs whose head is HEAD
  plus a 5% slowdown of every model it builds (a throwaway commit made with git plumbing, no
  branch or work tree touched; target: flagged in at least 9 of 10). Needs the git repository
  and HEAD to hold the code under test. ``--compare-pairs N`` jobs of each kind: 4-15 minutes a
  pair.
* ``sharing``: untimed work (``harness measure --accuracy train:mnist@60steps --no-latency``)
  alone, then two at once; with core sharing (default) and without (``--no-contention-check``).
  Target: two at once take at most 2x one alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import torch
import yaml

from harness.devices.competing_load import CompetingLoad
from harness.hugepages import malloc_hugepages, restart_with_hugepages, why_no_hugepages

PARTS = ("aa", "contention", "compare", "interleaved", "sharing")
PAIRS = 10
AGREEMENT = 0.03
SLOWDOWN = 0.05
COMPARE_ROUNDS = 6
# A 5% change judged at a 5% threshold is flagged half the time at best (its estimate must reach
# the threshold), so the interleaved jobs are run and judged at 3%
INTERLEAVED_THRESHOLD = 3.0
SMOKE_INJECTED_ENTRY = "deit_tiny"
LOAD_AFTER_TRIAL = 3
LOAD_S = 40.0


def harness(*args: str, check: bool = False, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], check=check, text=True,
                          **kwargs)


# --------------------------------------------------------------------------- aa


def part_aa() -> None:
    import dataclasses

    from harness.bench.suites import load_suite, suite_protocol
    from harness.devices import get_device
    from harness.models import build_model, preset_config

    device = get_device("cpu")
    cpu, smoke = device.profile.protocol, suite_protocol(load_suite("smoke"), device, 1)
    fp32 = preset_config("deit_tiny")
    int8 = dataclasses.replace(fp32, precision="int8")
    # (name, config, protocol); int8 is corrected by the probe in its precision
    cases = [("cpu profile", fp32, cpu), ("smoke suite", fp32, smoke),
             ("cpu profile, int8", int8, cpu)]
    model = build_model(fp32)
    inputs = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    print(f"== aa: {PAIRS} pairs of back-to-back deit_tiny measurements in each case, the cases "
          "alternating pair by pair: "
          + "; ".join(f"{name} (timed {p.min_timed_s}-{p.time_cap_s} s)"
                      for name, _, p in cases))
    agree = {(name, figure): 0 for name, _, _ in cases for figure in ("corrected", "raw")}
    shares, flagged = [], 0
    for pair in range(PAIRS):
        for name, config, protocol in cases:
            first, second = (device.evaluate(config, model, inputs, protocol) for _ in range(2))
            gaps = {}
            for figure, pick in (("corrected", lambda r: r.latency),
                                 ("raw", lambda r: r.latency_raw)):
                a, b = pick(first).median, pick(second).median
                gaps[figure] = abs(a - b) / min(a, b)
                agree[name, figure] += gaps[figure] <= AGREEMENT
            shares += [r.drift.probe_share for r in (first, second)]
            flagged += sum(r.contended for r in (first, second))
            print(f"   pair {pair + 1}, {name}: corrected {first.latency.median:.3f} / "
                  f"{second.latency.median:.3f} ms (gap {gaps['corrected']:.1%}), raw "
                  f"{first.latency_raw.median:.3f} / {second.latency_raw.median:.3f}"
                  f" ms (gap {gaps['raw']:.1%}); probe factors {first.drift.factor:.3f}, "
                  f"{second.drift.factor:.3f}")
    for name, _, _ in cases:
        print(f"   {name}: within {AGREEMENT:.0%}: corrected {agree[name, 'corrected']}/{PAIRS} "
              f"(target >= 9), raw {agree[name, 'raw']}/{PAIRS}")
    print(f"   {flagged} of {2 * PAIRS * len(cases)} measurements flagged contended")
    print(f"   probe overhead (probe time / timed time): median {statistics.median(shares):.1%}, "
          f"max {max(shares):.1%} (target <= 10%)")


# --------------------------------------------------------------------------- contention


def part_contention(workdir: Path) -> None:
    import optuna

    out = workdir / "contention-search"
    print(f"== contention: 10-candidate search, competing load after trial {LOAD_AFTER_TRIAL} "
          f"for ~{LOAD_S:.0f} s")
    command = [sys.executable, "-m", "harness", "search", "--space", "vit_tiny", "--device", "cpu",
               "--budget", "1gflop", "--trials", "10", "--accuracy", "proxy:params", "--out",
               str(out), "--json"]
    search = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    load = None
    for line in search.stderr:
        print("   | " + line.rstrip())
        if load is None and line.startswith(f"[{LOAD_AFTER_TRIAL:>3}/"):
            load = CompetingLoad(LOAD_S)
            print(f"   -- competing load started {load.started:%H:%M:%S}")
        if load is not None and load.stopped is None and \
                datetime.now(timezone.utc) - load.started > timedelta(seconds=LOAD_S):
            load.stop()
            print(f"   -- competing load stopped {load.stopped:%H:%M:%S}")
    summary = json.loads(search.stdout.read())
    search.wait()
    if load is None:
        print("   the search ended before the load started; nothing to judge")
        return
    load.stop()
    study = optuna.load_study(study_name=summary["study"],
                              storage=optuna.storages.JournalStorage(
                                  optuna.storages.journal.JournalFileBackend(summary["storage"])))
    front = {entry["trial"] for entry in json.loads(Path(summary["pareto_json"]).read_text())}
    overlapped = flagged = retaken_quiet = misses = misses_on_front = 0
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        if "contention" not in attrs or trial.datetime_complete is None:
            continue
        protocol = attrs["latency_protocol"]
        end = trial.datetime_complete.astimezone(timezone.utc) - timedelta(
            seconds=attrs["phase_s"].get("energy", 0.0))
        start = end - timedelta(seconds=protocol["warmup_s"] + protocol["timed_s"])
        overlap = (min(end, load.stopped) - max(start, load.started)).total_seconds()
        contention = attrs["contention"]
        if overlap <= 0.5:
            continue
        overlapped += 1
        if contention["contended"]:
            flagged += 1
        elif contention["takes"] > 1:
            retaken_quiet += 1
        else:
            misses += 1
            misses_on_front += trial.number in front
    print(f"   kept measurements overlapping the load: {overlapped}; flagged contended "
          f"{flagged}, retaken until quiet {retaken_quiet}, unflagged (misses) {misses}, of "
          f"which on the front {misses_on_front} (target 0)")
    print(f"   front: {summary['pareto_size']} points; re-measured: "
          f"{summary.get('front_remeasured')}, points that changed between the first and the "
          f"re-measured front: {summary.get('front_changes')}")


# --------------------------------------------------------------------------- compare


# Every model ``build_model`` returns, made slower by EXTRA_GEMMS more matrix products after each
# call: more work, as a real regression is. A busy-wait of fixed length would not slow down with
# the host as the model does, so against the drift-corrected figure it was a 3-9% change, not 5%.
SLOWED_BUILD = """
def slowed_build(config, **kwargs):
    import torch
    model = unslowed_build(config, **kwargs)
    forward = model.forward
    tokens, weight = torch.randn(EXTRA_GEMM[0], EXTRA_GEMM[1]), torch.randn(EXTRA_GEMM[1:])

    def slower(x):
        result = forward(x)
        for _ in range(EXTRA_GEMMS):
            torch.mm(tokens, weight)
        return result

    model.forward = slower
    return model
"""
# The extra product: deit_tiny's tokens (197 x 192) times a 192 x 192 weight, ~0.6% of its work
EXTRA_GEMM = (197, 192, 192)
CALIBRATION_S = 4.0

# ``harness bench`` with every model it builds slowed by ARGV[1] extra products after each call
SLOWED_BENCH = """
import sys
import harness.bench.suites as bench
from harness.cli import main

EXTRA_GEMMS, EXTRA_GEMM, unslowed_build = int(sys.argv[1]), %r, bench.build_model
""" % (EXTRA_GEMM,) + SLOWED_BUILD + """
bench.build_model = slowed_build
sys.exit(main(sys.argv[2:]))
"""

# Appended to harness/bench/suites.py of the slowed revision
SLOWED_SUITES = """

# noise_bench: a slowdown injected into every model this revision benchmarks
EXTRA_GEMMS, EXTRA_GEMM, unslowed_build = {gemms!r}, %r, build_model
""" % (EXTRA_GEMM,) + SLOWED_BUILD.replace("{", "{{").replace("}", "}}") + """
build_model = slowed_build
"""


def extra_gemms() -> tuple[int, float]:
    """How many extra products make deit_tiny SLOWDOWN slower, and the slowdown they make: the
    model's call and a block of products timed alternately for CALIBRATION_S in this process, with
    the harness's threads, so the host's speed cancels in their ratio."""
    from harness.devices import get_device
    from harness.models import build_model, preset_config

    device = get_device("cpu")
    device.configure(device.profile.protocol)
    model = build_model(preset_config("deit_tiny")).eval()
    inputs = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    tokens, weight = torch.randn(EXTRA_GEMM[0], EXTRA_GEMM[1]), torch.randn(EXTRA_GEMM[1:])
    block = 10
    model_ms, gemm_ms = [], []
    with torch.inference_mode():
        for _ in range(20):
            model(inputs)
        end = time.perf_counter() + CALIBRATION_S
        while time.perf_counter() < end:
            start = time.perf_counter()
            model(inputs)
            middle = time.perf_counter()
            for _ in range(block):
                torch.mm(tokens, weight)
            model_ms.append(middle - start)
            gemm_ms.append((time.perf_counter() - middle) / block)
    share = statistics.median(gemm_ms) / statistics.median(model_ms)
    gemms = max(1, round(SLOWDOWN / share))
    return gemms, gemms * share


def _describe_injection(gemms: int, slowdown: float) -> str:
    return (f"injected {gemms} extra {'x'.join(map(str, EXTRA_GEMM))} products per call: "
            f"{slowdown:.1%} of deit_tiny's time (timed alternately with it)")


def part_compare(workdir: Path, pairs: int) -> None:
    rounds = ["--rounds", str(COMPARE_ROUNDS)]
    print(f"== compare: {pairs} A/A pairs of 'harness bench --suite smoke --rounds "
          f"{COMPARE_ROUNDS}', then {pairs} runs with a {SLOWDOWN:.0%} slowdown injected into "
          f"{SMOKE_INJECTED_ENTRY}")
    runs = []
    for pair in range(pairs):
        for side in ("a", "b"):
            out = workdir / f"aa-{pair}-{side}"
            harness("bench", "--suite", "smoke", "--out", str(out), *rounds, check=True,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            runs.append(out)
    gemms, slowdown = extra_gemms()
    slowed = []
    for pair in range(pairs):
        out = workdir / f"slowed-{pair}"
        subprocess.run([sys.executable, "-c", SLOWED_BENCH, str(gemms), "bench",
                        "--suite", "smoke", "--entry", SMOKE_INJECTED_ENTRY, "--out", str(out),
                        *rounds],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
        slowed.append(out)
    for label, threshold in (("suite thresholds", []), ("--threshold 3", ["--threshold", "3"])):
        aa_flagged, deltas = 0, []
        for pair in range(pairs):
            verdict = _compare(runs[2 * pair], runs[2 * pair + 1], threshold)
            aa_flagged += verdict["regressions"] > 0
            deltas.append(verdict["deltas"])
        caught = 0
        for pair in range(pairs):
            verdict = _compare(_only(runs[2 * pair], SMOKE_INJECTED_ENTRY, workdir, pair),
                               slowed[pair], threshold)
            caught += verdict["regressions"] > 0
        print(f"   {label}: A/A pairs with a regression flagged {aa_flagged}/{pairs} (target 0); "
              f"injected {SLOWDOWN:.0%} slowdown flagged {caught}/{pairs} (target >= 9)")
        if label == "suite thresholds":
            for entry in deltas[0]:
                values = ", ".join(f"{d[entry]:+.1f}" for d in deltas)
                print(f"   A/A Δ% {entry}: {values}")
    print(f"   {_describe_injection(gemms, slowdown)}")


def part_interleaved(workdir: Path, jobs: int) -> None:
    repo = Path(__file__).resolve().parent.parent
    suite = workdir / "smoke-deit_tiny.yaml"
    smoke = yaml.safe_load((repo / "benchmarks" / "suites" / "smoke.yaml").read_text())
    smoke["entries"] = [e for e in smoke["entries"] if e["name"] == SMOKE_INJECTED_ENTRY]
    suite.write_text(yaml.safe_dump(smoke))
    print(f"== interleaved: {jobs} A/A jobs of 'harness compare --base-rev HEAD --head-rev HEAD "
          f"--rounds {COMPARE_ROUNDS} --threshold {INTERLEAVED_THRESHOLD:g}' "
          f"({SMOKE_INJECTED_ENTRY}; more rounds while noisy, up to the default cap), "
          f"alternating with {jobs} jobs whose head is {SLOWDOWN:.0%} slower")

    def job(name: str, head_rev: str) -> tuple[Path, dict]:
        results = workdir / name
        done = harness("compare", "--base-rev", "HEAD", "--head-rev", head_rev, "--suite",
                       str(suite), "--rounds", str(COMPARE_ROUNDS), "--threshold",
                       str(INTERLEAVED_THRESHOLD), "--results", str(results), "--format", "json",
                       cwd=repo, capture_output=True)
        if done.returncode not in (0, 1):
            raise SystemExit(f"compare --base-rev failed: {done.stderr.strip()}")
        return results, json.loads(done.stdout)

    gemms, slowdown = extra_gemms()
    slowed_rev = _slowed_commit(repo, gemms)
    aa, slowed = [], []
    for index in range(jobs):
        aa.append(job(f"interleaved-aa-{index}", "HEAD"))
        slowed.append(job(f"interleaved-slowed-{index}", slowed_rev))
    for kind, found, target in (("A/A", aa, "target 0"), ("slowed", slowed, "target >= 9 of 10")):
        flagged = sum(document["entries"][0]["decision"] == "regression" for _, document in found)
        print(f"   {kind}: regression flagged in {flagged}/{jobs} ({target}); per job Δ% "
              "[95% CI] decision (rounds): " + ", ".join(
                  f"{e['delta_pct']:+.1f} [{e['ci95_pct'][0]:+.1f}, {e['ci95_pct'][1]:+.1f}] "
                  f"{e['decision']} ({document['rounds']['total']})"
                  for _, document in found for e in document["entries"]))
    for figure in ("latency_ms", "latency_raw_ms"):
        scatter = [_round_ratio_sd(results, figure) for results, _ in aa]
        print(f"   A/A per-round ratio scatter (sd), {figure}: median {statistics.median(scatter):.1%}"
              f" ({', '.join(f'{sd:.1%}' for sd in scatter)})")
    print(f"   {_describe_injection(gemms, slowdown)}; slowed revision {slowed_rev[:12]}")


def _round_ratio_sd(results: Path, figure: str) -> float:
    """Standard deviation of the per-round ratios head / base of one job's ``figure`` median,
    the rounds matched by time as ``harness compare`` pairs them."""
    sides = [sorted((values["created"], values[figure]["median"])
                    for values in (json.loads(p.read_text()) for p in (results / side).rglob("*.json")))
             for side in ("base", "head")]
    ratios = [head / base for (_, base), (_, head) in zip(*sides)]
    return statistics.stdev(ratios)


def _slowed_commit(repo: Path, gemms: int) -> str:
    """A commit of HEAD with every benchmarked model slowed by ``gemms`` extra products, made with
    git plumbing in a scratch index: no branch, ref or work-tree file changes."""
    def git(*args: str, **kwargs) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], check=True, text=True,
                              capture_output=True, **kwargs).stdout.strip()

    path = "harness/bench/suites.py"
    source = git("show", f"HEAD:{path}") + "\n" + SLOWED_SUITES.format(gemms=gemms)
    blob = git("hash-object", "-w", "--stdin", input=source)
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(scratch) / "index")}
        git("read-tree", "HEAD", env=env)
        git("update-index", "--cacheinfo", f"100644,{blob},{path}", env=env)
        tree = git("write-tree", env=env)
    return git("commit-tree", tree, "-p", "HEAD", "-m", f"noise_bench: {gemms} extra products "
               "after every benchmarked call")


def _only(run: Path, entry: str, workdir: Path, pair: int) -> Path:
    """The result files of one entry of a run, in a folder of their own."""
    folder = workdir / f"base-{pair}-{entry}"
    folder.mkdir(exist_ok=True)
    for path in run.rglob(f"{entry}@*.json"):
        (folder / path.name).write_text(path.read_text())
    return folder


def _compare(base: Path, head: Path, threshold: list[str]) -> dict:
    done = harness("compare", str(base), str(head), "--format", "json", "--fail-on-regression",
                   *threshold, capture_output=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"compare failed: {done.stderr.strip()}")
    result = json.loads(done.stdout)
    entries = result["entries"]
    return {"regressions": sum(e["decision"] == "regression" for e in entries),
            "deltas": {e["name"].split("/")[1].split("@")[0]: e["delta_pct"] for e in entries}}


# --------------------------------------------------------------------------- sharing


def part_sharing(workdir: Path) -> None:
    env = {**os.environ, "HARNESS_DATA_DIR": str(workdir / "sharing-data")}
    command = ["measure", "--arch", "deit_tiny", "--accuracy", "train:mnist@60steps",
               "--no-latency", "--json"]
    harness(*command[:-2], "--json", env=env, check=True, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)  # the dataset is decoded and cached once
    print("== sharing: untimed work (deit_tiny, train:mnist@60steps), alone and two at once")
    for label, extra in (("core sharing on (default)", []),
                         ("off (--no-contention-check)", ["--no-contention-check"])):
        start = time.perf_counter()
        harness(*command, *extra, env=env, check=True, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
        alone = time.perf_counter() - start
        start = time.perf_counter()
        pair = [subprocess.Popen([sys.executable, "-m", "harness", *command, *extra], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for _ in range(2)]
        for process in pair:
            process.wait()
        both = time.perf_counter() - start
        print(f"   {label}: alone {alone:.1f} s, two at once {both:.1f} s: {both / alone:.2f}x "
              "(target <= 2x)")


def main() -> None:
    restart_with_hugepages()  # as the harness command line does, so the aa part times like it
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--compare-pairs", type=int, default=PAIRS,
                        help=f"A/A and injected pairs of the compare part (default {PAIRS})")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="work in DIR and keep it (result files, searches) for analysis")
    args = parser.parse_args()
    print(f"noise_bench on {os.cpu_count()} CPUs, torch {torch.__version__}, load average "
          f"{os.getloadavg()[0]:.2f}, malloc huge pages "
          f"{'on' if malloc_hugepages() else f'off ({why_no_hugepages()})'}")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    with (contextlib.nullcontext(str(args.keep)) if args.keep else
          tempfile.TemporaryDirectory(prefix="noise-bench-")) as folder:
        workdir = Path(folder)
        os.environ.setdefault("HARNESS_DATA_DIR", str(workdir / "data"))
        for part in args.parts:
            started = time.perf_counter()
            {"aa": part_aa, "contention": lambda: part_contention(workdir),
             "compare": lambda: part_compare(workdir, args.compare_pairs),
             "interleaved": lambda: part_interleaved(workdir, args.compare_pairs),
             "sharing": lambda: part_sharing(workdir)}[part]()
            print(f"   ({part}: {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
