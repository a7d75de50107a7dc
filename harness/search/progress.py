"""Per-trial progress on stderr: what was measured, the front so far, and an ETA."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from optuna.trial import TrialState

from harness.knobs import BASELINE
from harness.records import ContentionRecord, KnobSupport
from harness.search.results import pareto_trials
from harness.search.study import counts_as_measured, measured_count


class Progress:
    def __init__(self, n_trials: int, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.n_trials = n_trials
        self.quiet = quiet
        self.stream = stream
        self.started = time.perf_counter()
        self.finished = self.finished_before = 0  # trials that count towards n_trials

    def _print(self, line: str) -> None:
        if not self.quiet:
            print(line, file=self.stream or sys.stderr, flush=True)

    def start(self, settings: Any, study: Any) -> None:
        budgets = ", ".join(b.describe() for b in settings.budgets) or "none"
        done = measured_count(study)
        # a worker counts its own trials (--trials N of its own); a search fills the study
        self.finished = self.finished_before = 0 if settings.is_worker else done
        resumed = f"; resuming with {done} measured trials kept" if done else ""
        workers = f", {settings.local_workers} local workers" if settings.local_workers > 1 else ""
        self._print(
            f"harness: searching {settings.space.name} on {settings.device.name} "
            f"({settings.n_trials} trials, budgets: {budgets}, sampler {settings.sampler}, "
            f"seed {settings.seed}{workers}){resumed}"
        )

    def on_trial(self, outcome: Any, study: Any) -> None:
        # counted here rather than read from the study: local workers report trials in batches
        record = outcome.record
        self.finished += counts_as_measured(outcome.state, record.attributes)
        gmacs = f"{record.gmacs:.3f} GMACs" if record.gmacs is not None else ""
        if outcome.state == TrialState.COMPLETE:
            lat = record.latency
            spread = "" if lat.estimated else (
                f" [{lat.ci95[0]:.2f}, {lat.ci95[1]:.2f}] n={lat.n}")
            detail = (f"{'estimated' if lat.estimated else 'measured'} {gmacs} "
                      f"{_knob_tags(record.knobs)} latency {lat.median:.2f} ms"
                      f"{spread}  accuracy {record.accuracy_value:.4f}"
                      f"{_host_note(record.measurement.contention)}")
        elif outcome.state == TrialState.PRUNED and "pruned" in record.attributes:
            detail = f"stopped early {gmacs}: {record.note}"
        elif outcome.state == TrialState.PRUNED:
            detail = f"rejected {gmacs}: {record.note}"
        else:
            detail = f"FAILED: {record.attributes.get('error', 'unknown error')}"
        elapsed = time.perf_counter() - self.started
        self._print(
            f"[{self.finished:>3}/{self.n_trials}] trial {outcome.number}: {detail} | "
            f"{_best_so_far(study)} | elapsed {_clock(elapsed)} ETA {self._eta(elapsed)}"
        )

    def _eta(self, elapsed: float) -> str:
        """From this run's pace: rejected and early-stopped candidates, and parallel workers,
        are in it."""
        done = self.finished - self.finished_before
        if not done:
            return "-:--"
        return _clock(elapsed / done * max(self.n_trials - self.finished, 0))

    def finish(self, front_size: int) -> None:
        """The closing line, with the size of the front the report shows (re-measured or not)."""
        self._print(f"harness: done in {_clock(time.perf_counter() - self.started)}; "
                    f"{front_size} Pareto-optimal configurations within budget")


def _knob_tags(knobs: list[KnobSupport]) -> str:
    """``[tome+int8]``: the knobs on, ``(slow)`` after one the device does not accelerate."""
    tags = [k.value + ("" if k.accelerated else "(slow)") for k in knobs
            if BASELINE.get(k.knob) != k.value]
    return f"[{'+'.join(tags) or 'plain'}]"


def _host_note(contention: ContentionRecord | None) -> str:
    """What the host did to this measurement: said at once, not left for the report."""
    if contention is None:
        return ""
    if contention.contended:
        busiest = ", ".join(contention.busiest) or "other work"
        return (f"  HOST BUSY after {contention.takes} takes ({busiest}): kept out of the "
                "front")
    if contention.takes > 1:
        return f"  (retaken: the host was busy, waited {contention.waited_s:.0f} s)"
    return ""


def _best_so_far(study: Any) -> str:
    front = pareto_trials(study, study.get_trials(deepcopy=False))
    if not front:
        return "no feasible point yet"
    fastest = min(t.values[0] for t in front)
    best = max(t.values[1] for t in front)
    return f"front {len(front)}: fastest {fastest:.2f} ms, best accuracy {best:.4f}"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"
