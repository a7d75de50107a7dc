"""The reference probe: ViT blocks whose speed stands for the host's.

Timed in short blocks between a candidate's timing blocks (ABAB), the probe says how fast the
host ran over the candidate's window; it runs in the candidate's precision. Its quiet time is
calibrated once per machine (fingerprint), device, thread count and precision (the probe's
name), on a quiet host, and stored under ``$HARNESS_DATA_DIR/probes/``. A candidate's
drift-corrected latency is its raw latency times quiet probe time / probe time during the
window: measurements minutes apart, or in two runs, compare as if side by side.

The calibration is kept, not refreshed on every quiet moment: a yardstick that moved with the
host would correct nothing between runs. It is retaken when missing, or when torch or the probe
changed; delete the file to retake it by hand. A VM's speed moves in phases of seconds, so the
calibration is the fastest of several short windows' medians, after a warm-up: the host's best
sustained speed, rather than whatever phase one window fell in (a single 0.3 s window once
calibrated at 2.32 ms a probe that ran 1.4-1.9 ms beside the models, and every corrected latency
on that machine read 1.2-1.7x slow). A slow phase can still outlast all the windows: one
calibration of 1.5 s read the probe 1.6x slower than it then ran, for minutes, beside deit_tiny.
So when a quiet measurement sees the probe run more than ``1 - RETAKE_BELOW`` faster than its
calibration, the calibration is retaken and stored if faster (``retake_if_faster``). One
process keeps the calibration it started with, so that the measurements of one search or bench
run share one yardstick; ``harness compare`` rescales runs corrected by different ones. A probe
in another precision than fp32 is calibrated against the fp32 probe, the two timed in the same
windows, so that every precision's yardstick is taken at the same moment's speed
(``take_anchored_calibration``); its quiet time follows the fp32 probe's when that is retaken.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from harness.devices.contention import HostMonitor
from harness.files import data_home, safe_name, write_atomically
from harness.layers.attention import Attention
from harness.models import Block
from harness.precision import convert_precision
from harness.records import ContentionEvidence

# 1: a 256x256 GEMM; 2: one block, calibrated as the median of one 0.3 s window; 3: one block,
# the fastest of five windows; 4: twelve blocks in turn
PROBE_VERSION = 4
PROBE_SEED = 0
PROBE_WIDTH, PROBE_HEADS, PROBE_TOKENS = 192, 3, 197
PROBE_BLOCKS = 12
CALIBRATION_WARMUP_S = 0.5
CALIBRATION_WINDOWS, CALIBRATION_WINDOW_S = 5, 0.2
PROBE_SHARE = 0.08  # probe time kept to this share of the candidate's timed time
RETAKE_BELOW = 0.85  # a quiet window's probe median / quiet time below this: retake the calibration
ANCHOR_PRECISION = "fp32"  # the probe whose quiet time the other precisions' are measured against

Timer = Callable[[], float]  # one timed call of a probe, in ms

# The calibration each process started with (by file), and the files it has retaken
_IN_USE: dict[Path, ProbeCalibration] = {}
_RETAKEN: set[Path] = set()


class ReferenceProbe(torch.nn.Module):
    """DeiT-Tiny's twelve blocks (width 192, 3 heads, MLP 768; distinct weights) on ``batch``
    images' 197 tokens, in ``precision`` (as ``harness.precision`` converts a candidate); each
    call runs the next block, in turn.

    Blocks, not a bare GEMM: the host's speed moves a ViT through its matmuls, softmax, norms and
    memory traffic together. Timed beside deit_tiny in two runs on a 2-core VM (the slower
    perhaps beside other work), a 256x256 GEMM moved 3% while the model moved 20%; a block 16%.
    Twelve in turn, not one: like a model's, their 21 MB of weights do not stay in the core's
    caches between calls, so the probe slows with the memory hierarchy as a model does. In
    150 s traces of deit_tiny with both timed in the same probe blocks (one after the other,
    either order), the 3 s windows' drift-corrected medians scattered by 0.7% and 0.8% corrected
    by the blocks in turn against 1.1% and 1.2% by one block, which over-corrected slow phases
    (in logs, the model slowed by 0.92-0.95 of the block's slowdown and by 0.99-1.01 of the
    twelve's). In the candidate's precision, not always fp32: int8 kernels can slow with the
    host otherwise than fp32 ones. On one VM int8 deit_tiny moved 1.75x an fp32 probe's log
    time, and its 3 s windows' corrected medians scattered by 7-8%, against 3.9% by an int8
    probe; on another both probes tracked it (slopes 1.05 and 1.00; 3.0% and 2.8%)."""

    def __init__(self, batch: int, precision: str = "fp32") -> None:
        super().__init__()
        self.batch, self.precision = batch, precision
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(PROBE_SEED)
            blocks = torch.nn.ModuleList(
                Block(PROBE_WIDTH, Attention(PROBE_WIDTH, PROBE_HEADS, PROBE_WIDTH // PROBE_HEADS),
                      4 * PROBE_WIDTH) for _ in range(PROBE_BLOCKS)).eval()
        blocks.requires_grad_(False)
        generator = torch.Generator().manual_seed(PROBE_SEED + 1)
        tokens = torch.randn(batch, PROBE_TOKENS, PROBE_WIDTH, generator=generator)
        self.blocks, self._example_input = convert_precision(blocks, tokens, precision)
        self.next_block = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        block = self.blocks[self.next_block]
        self.next_block = (self.next_block + 1) % len(self.blocks)
        return block(x)[0]

    def example_input(self) -> torch.Tensor:
        return self._example_input

    @property
    def name(self) -> str:
        return f"vit-{PROBE_BLOCKS}blocks{PROBE_WIDTH}x{PROBE_TOKENS}-b{self.batch}-{self.precision}"


@dataclass(frozen=True)
class ProbeCalibration:
    """The probe's median time on a quiet host, and where and when that was measured."""

    probe: str
    quiet_ms: float
    samples: int
    calibrated_at: str
    machine_fingerprint: str
    device: str
    threads: int
    torch: str
    evidence: dict[str, Any]
    version: int = PROBE_VERSION
    window_medians_ms: list[float] = field(default_factory=list)  # quiet_ms is the smallest
    # A probe in another precision than ``ANCHOR_PRECISION``: the anchor probe's name and quiet
    # time, and this probe's time over the anchor's, timed in the same windows; its quiet_ms is
    # their product (``take_anchored_calibration``)
    anchor: str | None = None
    anchor_quiet_ms: float | None = None
    ratio_to_anchor: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _machine_fingerprint() -> str:
    # imported here: harness.environment describes devices, so it imports this package
    from harness.environment import capture_machine_fingerprint

    return capture_machine_fingerprint()


def calibration_path(device: str, threads: int, probe: str) -> Path:
    fingerprint = _machine_fingerprint()[:16]
    return data_home() / "probes" / f"{safe_name(device)}-{probe}-t{threads}-{fingerprint}.json"


def load_calibration(device: str, threads: int, probe: str) -> ProbeCalibration | None:
    """The stored calibration, or None when there is none for this torch and probe version."""
    path = calibration_path(device, threads, probe)
    try:
        values = json.loads(path.read_text())
        calibration = ProbeCalibration(**values)
    except (OSError, ValueError, TypeError):
        return None
    if calibration.version != PROBE_VERSION or calibration.torch != torch.__version__:
        return None
    return calibration


def _timed_windows(timers: list[Timer]) -> list[list[list[float]]]:
    """Warm the probes for ``CALIBRATION_WARMUP_S``, then time them, their calls alternating, in
    ``CALIBRATION_WINDOWS`` windows of ``CALIBRATION_WINDOW_S`` (at least 3 calls each): for
    each window, each probe's timings."""
    start = time.perf_counter()
    while time.perf_counter() - start < CALIBRATION_WARMUP_S:
        for time_once in timers:
            time_once()
    windows = []
    for _ in range(CALIBRATION_WINDOWS):
        samples: list[list[float]] = [[] for _ in timers]
        start = time.perf_counter()
        while time.perf_counter() - start < CALIBRATION_WINDOW_S or len(samples[0]) < 3:
            for time_once, kept in zip(timers, samples):
                kept.append(time_once())
        windows.append(samples)
    return windows


def time_probe_windows(time_once: Timer) -> list[list[float]]:
    """One probe's timings in each calibration window (``_timed_windows``)."""
    return [window[0] for window in _timed_windows([time_once])]


def time_paired_windows(time_once: Timer, anchor_once: Timer
                        ) -> list[tuple[list[float], list[float]]]:
    """A probe's and the anchor probe's timings in each calibration window, their calls
    alternating: both timed in the same phases of the host."""
    return [(probe, anchor) for probe, anchor in _timed_windows([time_once, anchor_once])]


def take_calibration(time_once: Callable[[], float], device: str, threads: int, probe: str
                     ) -> ProbeCalibration | ContentionEvidence:
    """Time the probe on this host: its quiet time is the fastest window's median when the host
    was quiet; otherwise the evidence that it was not. Nothing is stored."""
    monitor = HostMonitor(threads)
    windows = time_probe_windows(time_once)
    evidence = monitor.evidence()
    if evidence.contended:
        return evidence
    medians = [round(statistics.median(window), 6) for window in windows]
    return ProbeCalibration(
        probe=probe, quiet_ms=min(medians), samples=sum(len(window) for window in windows),
        calibrated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        machine_fingerprint=_machine_fingerprint(), device=device, threads=threads,
        torch=torch.__version__, evidence=evidence.to_json(), window_medians_ms=medians,
    )


def take_anchored_calibration(time_once: Timer, anchor_once: Timer, anchor: ProbeCalibration,
                              probe: str) -> ProbeCalibration | ContentionEvidence:
    """Time the probe beside the anchor probe, whose calibration is ``anchor``: its quiet time
    is the anchor's times the median over the windows of its median over the anchor's, when
    the host was quiet; otherwise the evidence that it was not. Nothing is stored.

    Each precision's own fastest window would be a yardstick drawn at another moment: on a VM
    whose speed moves by tens of percent between phases, an int8 probe calibrated on its own in
    a slow phase (at 1.25x the fp32 probe's quiet time; beside it, in the same windows, 0.84x)
    read int8 deit_tiny 50% slower than the fp32 probe did. Measured against the anchor in the same windows, the ratio holds whatever the
    phase, and one search's candidates keep one yardstick in every precision."""
    monitor = HostMonitor(anchor.threads)
    windows = time_paired_windows(time_once, anchor_once)
    evidence = monitor.evidence()
    if evidence.contended:
        return evidence
    ratio = round(statistics.median(statistics.median(probe_ms) / statistics.median(anchor_ms)
                                    for probe_ms, anchor_ms in windows), 6)
    return ProbeCalibration(
        probe=probe, quiet_ms=round(anchor.quiet_ms * ratio, 6),
        samples=sum(len(probe_ms) for probe_ms, _ in windows),
        calibrated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        machine_fingerprint=_machine_fingerprint(), device=anchor.device, threads=anchor.threads,
        torch=torch.__version__, evidence=evidence.to_json(),
        window_medians_ms=[round(statistics.median(probe_ms), 6) for probe_ms, _ in windows],
        anchor=anchor.probe, anchor_quiet_ms=anchor.quiet_ms, ratio_to_anchor=ratio,
    )


def store_calibration(calibration: ProbeCalibration) -> None:
    path = calibration_path(calibration.device, calibration.threads, calibration.probe)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(calibration.to_dict(), indent=2) + "\n")


def calibrate(time_once: Callable[[], float], device: str, threads: int, probe: str
              ) -> ProbeCalibration | ContentionEvidence:
    """``take_calibration``, stored when the host was quiet."""
    result = take_calibration(time_once, device, threads, probe)
    if isinstance(result, ProbeCalibration):
        store_calibration(result)
    return result


def quiet_calibration(time_once: Timer, device: str, threads: int, probe: str,
                      anchor: Callable[[], tuple[Timer, str]] | None = None
                      ) -> ProbeCalibration | str:
    """The calibration this process started with: the stored one, or one taken now; why there
    is none when the host is busy. ``anchor`` gives the anchor probe's timer and name, for a
    probe calibrated against it (``take_anchored_calibration``)."""
    path = calibration_path(device, threads, probe)
    if path in _IN_USE:
        return _IN_USE[path]
    if anchor is None:
        result = load_calibration(device, threads, probe) or \
            calibrate(time_once, device, threads, probe)
    else:
        result = _anchored_calibration(time_once, device, threads, probe, *anchor())
        if isinstance(result, str):
            return result
    if isinstance(result, ContentionEvidence):
        return (f"the probe was never calibrated on this machine and the host is busy now "
                f"({'; '.join(result.reasons)})")
    _IN_USE[path] = result
    return result


def _anchored_calibration(time_once: Timer, device: str, threads: int, probe: str,
                          anchor_once: Timer, anchor_probe: str
                          ) -> ProbeCalibration | ContentionEvidence | str:
    """The stored calibration against the anchor's, its quiet time brought to the anchor's
    calibration in use (retaken since: the ratio holds), or one taken now and stored."""
    anchor = quiet_calibration(anchor_once, device, threads, anchor_probe)
    if isinstance(anchor, str):
        return anchor
    stored = load_calibration(device, threads, probe)
    if stored is None or stored.anchor != anchor.probe or stored.ratio_to_anchor is None:
        result = take_anchored_calibration(time_once, anchor_once, anchor, probe)
    elif stored.anchor_quiet_ms != anchor.quiet_ms:
        result = replace(stored, quiet_ms=round(anchor.quiet_ms * stored.ratio_to_anchor, 6),
                         anchor_quiet_ms=anchor.quiet_ms)
    else:
        return stored
    if isinstance(result, ProbeCalibration):
        store_calibration(result)
    return result


def retake_if_faster(time_once: Callable[[], float], in_use: ProbeCalibration,
                     window_probe_ms: float) -> ProbeCalibration | None:
    """When the probe's median over a quiet window was under ``RETAKE_BELOW`` of its calibrated
    quiet time, the calibration caught the host in a slow phase: retake it (once a process) and
    store the new one if faster, for the processes after this one. The new one, or None. A
    probe calibrated against the anchor is not retaken: its quiet time follows the anchor's."""
    if in_use.anchor is not None:
        return None
    path = calibration_path(in_use.device, in_use.threads, in_use.probe)
    stored = load_calibration(in_use.device, in_use.threads, in_use.probe) or in_use
    if path in _RETAKEN or window_probe_ms >= RETAKE_BELOW * stored.quiet_ms:
        return None
    _RETAKEN.add(path)
    retaken = take_calibration(time_once, in_use.device, in_use.threads, in_use.probe)
    if not isinstance(retaken, ProbeCalibration) or retaken.quiet_ms >= stored.quiet_ms:
        return None
    store_calibration(retaken)
    return retaken
