"""``harness compare``: base-vs-head comparison of benchmark results, as Markdown, HTML or JSON.

Each side is a set of result files (``harness.bench.suites``). Entries are matched by suite, entry and
device. The statistics are those of ``harness.bench.compare_stats`` (Mann-Whitney U with Holm's
correction, Hodges-Lehmann interval of the change, each entry's own threshold). What is compared:

* Runs measured on a busy host (``contention.contended``) are not comparable: their latency is
  the other work's as much as the code's. They are left out and listed with their evidence,
  unless ``include_contended``; an entry left without a run on one side is listed, not compared.
* With at least ``MIN_REPLICATE_RUNS`` runs of an entry on both sides, each run's median is one
  replicate, so noise between runs is inside the test: the drift-corrected medians when every
  run was corrected by the same probe, else the raw ones of every run (a corrected median
  against a raw one would compare the host's calibrated speed with its speed that day; one
  corrected by another probe, in another precision or of another version, measures by another
  yardstick). Runs corrected by different
  calibrations of the probe (one retaken between them) are brought to one: a corrected median is
  raw x quiet / probe, so it is rescaled by the base's quiet time over its own.
* When the two sides' runs alternate in time (``--base-rev/--head-rev`` runs them in alternating
  rounds: base, head, head, base, ...), the i-th base run and the i-th head run were measured
  side by side, and the test is paired by round (``compare_stats.paired_change``): the host's
  drift between rounds, which an unpaired test counts as noise, cancels in each round's ratio.
* With fewer runs, nothing is decided: the entry is "replicates missing", shown with the pooled
  samples' medians (drift-corrected sample by sample when every run was corrected), never a
  regression. Pooled samples hold only the noise within a run, while the
  host drifts by 1-40% between runs seconds apart: an A/A run of the smoke suite on pooled raw
  samples gave "+16.6%, p = 2e-21". Drift correction narrows that, not enough: ten A/A pairs of
  smoke runs on a 2-core VM, compared on pooled drift-corrected samples, called a regression in
  8 of 10 (corrected deit_tiny changes of -3.6% to +11.2%, int8 of -24% to +26%;
  ``benchmarks/noise_bench.py``, 2026-12-02).

Result files from before drift correction and the contention check are read as raw, with
contention unknown. Results from different machines are compared only with a loud warning, since
noise between machines dwarfs noise within one.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from harness.bench.compare_stats import (
    MAX_ROUNDS_ADVISED,
    POWER,
    ComparisonError,
    EntryComparison,
    compare_entries,
    paired_rounds_needed,
    replicates_needed,
)
from harness.environment import EnvironmentChange, diff_environments
from harness.records import BenchRunRecord

MIN_REPLICATE_RUNS = 5  # Mann-Whitney's smallest two-sided p with 5 against 5 is 0.008
REPLICATES_MISSING = "replicates missing"
DECISIONS = ("regression", "improvement", "noisy", "unchanged", REPLICATES_MISSING)
SIDES = ("base", "head")
BUSY_HOST = "not comparable: measured on a busy host"
BUSY_HOST_INCLUDED = "measured on a busy host, compared anyway (--include-contended)"

# The figures an entry's test ran on (``EntryOutcome.figures``)
CORRECTED_MEDIANS = "drift-corrected run medians"
RAW_MEDIANS = "raw run medians"
PAIRED = ", paired by round"  # appended where the two sides' runs alternated in time
CORRECTED_SAMPLES_UNTESTED = "drift-corrected samples, not tested"
RAW_SAMPLES_UNTESTED = "raw samples, not tested"
UNTESTED = (CORRECTED_SAMPLES_UNTESTED, RAW_SAMPLES_UNTESTED)

REPLICATES_ADVICE = (
    f"Replicates missing: with fewer than {MIN_REPLICATE_RUNS} runs a side, the samples of one run "
    "cannot tell a code change from the host's drift between runs, drift-corrected or not, so no "
    "decision is made. Replicates come from `harness compare --base-rev BASE "
    "--head-rev HEAD` (both revisions, interleaved, in one job) or from `harness bench --rounds "
    "6` on each side (6 runs a side let a change be significant after Holm's correction over up "
    "to 4 entries, 7 over up to 17).")


@dataclass(frozen=True)
class BenchRun:
    """What a comparison reads of one result file."""

    key: str
    source: str
    raw_samples_ms: list[float]
    raw_median_ms: float
    corrected_median_ms: float | None  # None: not drift-corrected
    corrected_samples_ms: list[float] | None  # None: not drift-corrected
    probe: str | None  # the reference probe the correction used
    probe_quiet_ms: float | None  # its calibration
    contention_checked: bool
    contended: bool
    contention_reasons: list[str]
    created: datetime | None  # when the run was written; None: not recorded or unreadable

    @classmethod
    def of(cls, result: BenchRunRecord) -> BenchRun:
        measurement = result.measurement
        drift = measurement.drift
        # a "corrected" run whose probe was never timed has a factor of 1: it corrected nothing
        corrected = drift is not None and drift.status == "corrected" and bool(drift.probe_median_ms)
        samples = [float(s) for s in measurement.latency_samples_ms]
        # files older than drift correction: latency_ms is raw; files written after it but
        # before bench kept latency_raw_ms: only the samples are raw
        raw_summary = measurement.latency_raw or (
            None if measurement.latency.drift_corrected else measurement.latency)
        contention = measurement.contention
        return cls(
            key=result.key,
            source=result.path,
            raw_samples_ms=samples,
            raw_median_ms=raw_summary.median if raw_summary else float(np.median(samples)),
            corrected_median_ms=measurement.latency.median if corrected else None,
            corrected_samples_ms=measurement.corrected_samples_ms() if corrected else None,
            probe=drift.probe if corrected else None,
            probe_quiet_ms=drift.probe_quiet_ms if corrected else None,
            contention_checked=contention is not None and contention.checked,
            contended=measurement.contended,
            contention_reasons=contention.reasons if contention else [],
            created=_timestamp(result.created),
        )


@dataclass(frozen=True)
class BusyRun:
    """A run measured on a busy host, with the reasons its evidence gave."""

    entry: str
    side: str
    source: str
    reasons: list[str]
    compared: bool  # True only with --include-contended

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": BUSY_HOST_INCLUDED if self.compared else BUSY_HOST}


@dataclass(frozen=True)
class EntryOutcome:
    """One entry's comparison: on which figures, and the decision. An entry whose replicates are
    missing was not tested: no interval and no p-value, only its raw medians."""

    name: str
    figures: str  # CORRECTED_MEDIANS or RAW_MEDIANS (tested), or one of UNTESTED
    decision: str  # one of DECISIONS
    base_median: float
    head_median: float
    delta_pct: float
    ci95_pct: tuple[float, float] | None
    p_value: float | None
    p_adjusted: float | None
    threshold_pct: float
    n_base: int  # figures compared: samples, or one median per run
    n_head: int
    base_runs: int
    head_runs: int
    round_ratio_sd: float | None = None  # paired by round: sd of the rounds' log ratios

    @classmethod
    def tested(cls, test: EntryComparison, figures: str, runs: tuple[int, int]) -> EntryOutcome:
        return cls(test.name, figures, test.decision, test.base_median, test.head_median,
                   test.delta_pct, test.ci95_pct, test.p_value, test.p_adjusted,
                   test.threshold_pct, test.n_base, test.n_head, *runs, test.ratio_sd)

    @classmethod
    def untested(cls, name: str, figures: ComparedFigures, threshold_pct: float,
                 runs: tuple[int, int]) -> EntryOutcome:
        base, head = figures.base, figures.head
        base_median, head_median = float(np.median(base)), float(np.median(head))
        return cls(name, figures.kind, REPLICATES_MISSING, base_median, head_median,
                   100 * (head_median / base_median - 1), None, None, None, threshold_pct,
                   len(base), len(head), *runs)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["ci95_pct"] = list(self.ci95_pct) if self.ci95_pct else None
        return values


@dataclass(frozen=True)
class ComparedFigures:
    """The figures of one entry that its test runs on, per side, and what they are."""

    kind: str
    base: list[float]
    head: list[float]


@dataclass(frozen=True)
class SequentialRounds:
    """How ``--base-rev/--head-rev`` chose its rounds: ``first`` rounds, then, while an entry was
    noisy, more up to what its rounds' scatter asked for, at most ``max_rounds``. Looking at the
    data twice gives a false alarm two chances, so each look tests at alpha / looks (Bonferroni):
    the chance of any false alarm over both stays under the comparison's level."""

    first: int
    total: int
    max_rounds: int
    noisy_after_first: list[str]  # the entries that asked for more rounds

    @property
    def looks(self) -> int:
        return 1 if self.max_rounds <= self.first else 2

    def describe(self, alpha: float) -> str:
        if self.looks == 1:
            return f"Rounds: {self.total} a side."
        if self.total > self.first:
            ran = (f"{self.first}, then {self.total - self.first} more (at most {self.max_rounds}): "
                   f"{', '.join(self.noisy_after_first)} noisy after {self.first}")
        else:
            ran = f"{self.first} (up to {self.max_rounds} while an entry is noisy: none was)"
        return (f"Rounds: {ran}. Each look at the data ({self.looks} at most) tests at p < "
                f"{alpha:.2g}, so the chance of any false alarm stays under "
                f"{alpha * self.looks:.2g}.")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "looks": self.looks}


@dataclass(frozen=True)
class Comparison:
    entries: list[EntryOutcome]
    busy_runs: list[BusyRun]  # measured on a busy host: left out unless compared anyway
    not_compared: list[str]  # entries of both sides left without a comparable run on one
    unchecked_runs: int  # runs without a contention check: older files, --no-contention-check
    only_base: list[str]
    only_head: list[str]
    base_commits: list[str]
    head_commits: list[str]
    machines_differ: bool
    environment_changes: list[EnvironmentChange]
    alpha: float = 0.01  # family-wise level of this look at the data
    sequential: SequentialRounds | None = None  # set by --base-rev/--head-rev

    @property
    def regressions(self) -> list[EntryOutcome]:
        return [e for e in self.entries if e.decision == "regression"]

    def count(self, decision: str) -> int:
        return sum(1 for e in self.entries if e.decision == decision)

    @property
    def verdict(self) -> str:
        counts = ", ".join(f"{self.count(d)} {d}" for d in DECISIONS)
        missing = self.count(REPLICATES_MISSING)
        if self.regressions:
            head = f"**{len(self.regressions)} regression(s)**"
        elif self.count("improvement"):
            head = f"**{self.count('improvement')} improvement(s), no regression**"
        elif missing:
            head = f"**No regression found; {missing} undecided (replicates missing)**"
        elif not self.entries:
            head = "**Nothing compared**"
        else:
            head = "**No significant change**"
        left_out = sum(1 for run in self.busy_runs if not run.compared)
        busy = f"; {left_out} run(s) left out, measured on a busy host" if left_out else ""
        return f"{head} in {len(self.entries)} entries ({counts}){busy}"

    def warning(self) -> str | None:
        if not self.machines_differ:
            return None
        return ("WARNING: base and head were measured on different machines (machine "
                "fingerprints differ): differences between machines can exceed any code change; "
                "compare results from one machine, ideally one job")

    def notes(self) -> list[str]:
        """What a reader must know beside the table: what was compared and what was not."""
        notes = [self.sequential.describe(self.alpha)] if self.sequential else []
        if self.count(REPLICATES_MISSING):
            notes.append(REPLICATES_ADVICE)
        if self.not_compared:
            notes.append(f"Not compared, no run left on one side once runs on a busy host were "
                         f"left out: {', '.join(self.not_compared)}")
        tested = [e for e in self.entries if e.p_adjusted is not None]
        needed = replicates_needed(len(tested))
        # a paired t-test has no such floor: its p falls with the consistency of the ratios
        short = [e.name for e in tested
                 if min(e.base_runs, e.head_runs) < needed and not e.figures.endswith(PAIRED)]
        if short:
            notes.append(f"With fewer than {needed} runs a side, no change of the {len(tested)} "
                         f"entries compared can be significant after Holm's correction "
                         f"(p < {self.alpha:.2g}): {', '.join(short)}; run {needed} rounds")
        for entry in self.noisy_paired:
            notes.append(self._rounds_advice(entry))
        if self.unchecked_runs:
            notes.append(f"{self.unchecked_runs} run(s) carry no contention check (result files "
                         "of an older harness, or --no-contention-check): a busy host is not "
                         "ruled out for them")
        return notes

    @property
    def noisy_paired(self) -> list[EntryOutcome]:
        """Entries tested paired by round whose interval still reaches past their threshold."""
        return [e for e in self.entries if e.decision == "noisy" and e.round_ratio_sd is not None]

    @property
    def _strictest_alpha(self) -> float:
        return self.alpha / max(1, sum(1 for e in self.entries if e.p_adjusted is not None))

    def rounds_needed(self, entry: EntryOutcome) -> int | None:
        """Rounds that would resolve a noisy paired entry, from its rounds' scatter, at Holm's
        strictest step; None above ``MAX_ROUNDS_ADVISED``."""
        return paired_rounds_needed(entry.round_ratio_sd, entry.threshold_pct,
                                    self._strictest_alpha)

    def _rounds_advice(self, entry: EntryOutcome) -> str:
        needed = self.rounds_needed(entry)
        rounds = f"about {needed}" if needed else f"more than {MAX_ROUNDS_ADVISED}"
        return (f"{entry.name}: its {entry.n_base} rounds' ratios scatter by "
                f"{100 * math.expm1(entry.round_ratio_sd):.1f}% (one standard deviation), too "
                f"much to resolve a {entry.threshold_pct:g}% change; {rounds} rounds would find "
                f"one with {POWER:.0%} probability at p < {self._strictest_alpha:.2g} "
                "(`--rounds N`, `--max-rounds N`)")

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.replace("**", ""),
            "warning": self.warning(),
            "notes": self.notes(),
            "base_commits": self.base_commits,
            "head_commits": self.head_commits,
            "entries": [e.to_dict() for e in self.entries],
            "busy_host_runs": [run.to_dict() for run in self.busy_runs],
            "not_compared": self.not_compared,
            "only_base": self.only_base,
            "only_head": self.only_head,
            "environment_changes": [c.to_dict() for c in self.environment_changes],
            "alpha": self.alpha,
            "rounds": self.sequential.to_dict() if self.sequential else None,
        }


def compare_results(base: list[BenchRunRecord], head: list[BenchRunRecord],
                    default_threshold_pct: float | None = None, alpha: float = 0.01,
                    include_contended: bool = False) -> Comparison:
    """Compare two sets of result files; ``default_threshold_pct`` overrides the entries' own,
    ``include_contended`` compares runs measured on a busy host too."""
    runs: dict[str, dict[str, list[BenchRun]]] = {side: defaultdict(list) for side in SIDES}
    thresholds = {}
    for side, results in zip(SIDES, (base, head)):
        for result in results:
            run = BenchRun.of(result)
            runs[side][run.key].append(run)
            thresholds[run.key] = default_threshold_pct or result.threshold_pct
    common = sorted(set(runs["base"]) & set(runs["head"]))
    if not common:
        raise ComparisonError(f"no entry is in both base ({', '.join(sorted(runs['base']))}) "
                              f"and head ({', '.join(sorted(runs['head']))})")
    comparable = {side: {key: [run for run in runs[side][key]
                               if include_contended or not run.contended] for key in common}
                  for side in SIDES}
    not_compared = [key for key in common
                    if not (comparable["base"][key] and comparable["head"][key])]
    figures = {key: _figures(comparable["base"][key], comparable["head"][key])
               for key in common if key not in not_compared}
    tested = {key: f for key, f in figures.items() if f.kind not in UNTESTED}
    tests = {test.name: test for test in compare_entries(
        {key: (f.base, f.head) for key, f in tested.items()},
        thresholds={key: thresholds[key] for key in tested}, alpha=alpha,
        paired={key for key, f in tested.items() if f.kind.endswith(PAIRED)})}
    entries = []
    for key, f in figures.items():
        counts = (len(comparable["base"][key]), len(comparable["head"][key]))
        entries.append(EntryOutcome.tested(tests[key], f.kind, counts) if key in tests else
                       EntryOutcome.untested(key, f, thresholds[key], counts))
    machines = {side: {r.machine_fingerprint for r in results}
                for side, results in zip(SIDES, (base, head))}
    return Comparison(
        entries=entries,
        busy_runs=[BusyRun(key, side, run.source, run.contention_reasons, include_contended)
                   for side in SIDES for key in sorted(runs[side]) for run in runs[side][key]
                   if run.contended],
        not_compared=not_compared,
        unchecked_runs=sum(1 for side in SIDES for entry_runs in runs[side].values()
                           for run in entry_runs if not run.contention_checked),
        only_base=sorted(set(runs["base"]) - set(runs["head"])),
        only_head=sorted(set(runs["head"]) - set(runs["base"])),
        base_commits=sorted({r.commit for r in base}),
        head_commits=sorted({r.commit for r in head}),
        machines_differ=machines["base"] != machines["head"],
        environment_changes=diff_environments(base[0].environment, head[0].environment),
        alpha=alpha,
    )


def _timestamp(text: str | None) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text) if text else None
    except (TypeError, ValueError):
        return None
    # harness writes UTC with its offset; a hand-made file without one is read as UTC, so that
    # times with and without an offset still order
    return moment.replace(tzinfo=timezone.utc) if moment and moment.tzinfo is None else moment


def alternating(base: list[BenchRun], head: list[BenchRun]) -> bool:
    """Whether the runs of the two sides alternate in time, as ``--base-rev/--head-rev`` runs
    them: in order of time, each consecutive two runs are one base and one head run, so the i-th
    of each side were measured side by side. Runs of unknown or equal times never do."""
    if len(base) != len(head) or any(run.created is None for run in [*base, *head]):
        return False
    timeline = sorted([(run.created, "base") for run in base] +
                      [(run.created, "head") for run in head])
    times = [created for created, _ in timeline]
    if len(set(times)) < len(times):
        return False
    return all({timeline[i][1], timeline[i + 1][1]} == {"base", "head"}
               for i in range(0, len(timeline), 2))


def _figures(base: list[BenchRun], head: list[BenchRun]) -> ComparedFigures:
    """The figures one entry is compared on (see the module docstring)."""
    corrected = all(run.corrected_samples_ms is not None for run in [*base, *head]) and \
        len({run.probe for run in [*base, *head]}) == 1
    if min(len(base), len(head)) >= MIN_REPLICATE_RUNS:
        paired = PAIRED if alternating(base, head) else ""
        if paired:
            base, head = (sorted(runs, key=lambda run: run.created) for runs in (base, head))
        if corrected:
            quiet_ms = min(run.probe_quiet_ms for run in base)
            return ComparedFigures(
                CORRECTED_MEDIANS + paired,
                *([r.corrected_median_ms * quiet_ms / r.probe_quiet_ms for r in runs]
                  for runs in (base, head)))
        return ComparedFigures(RAW_MEDIANS + paired, [r.raw_median_ms for r in base],
                               [r.raw_median_ms for r in head])

    def pooled(runs: list[BenchRun], corrected: bool) -> list[float]:
        return [sample for run in runs
                for sample in (run.corrected_samples_ms if corrected else run.raw_samples_ms)]

    return ComparedFigures(CORRECTED_SAMPLES_UNTESTED if corrected else RAW_SAMPLES_UNTESTED,
                           pooled(base, corrected), pooled(head, corrected))
