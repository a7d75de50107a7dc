"""The reference probe: ViT blocks whose speed stands for the host's.

Timed in short blocks between a candidate's timing blocks (ABAB), the probe says how fast the
host ran over the candidate's window. Its quiet time is calibrated once per machine (fingerprint),
device and thread count, on a quiet host, and stored under ``$HARNESS_DATA_DIR/probes/``. A
candidate's drift-corrected latency is its raw latency times quiet probe time / probe time
during the window: measurements minutes apart, or in two runs, compare as if side by side.

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
run share one yardstick; ``harness compare`` rescales runs corrected by different ones.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from harness.devices.contention import HostMonitor
from harness.files import data_home, safe_name, write_atomically
from harness.layers.attention import Attention
from harness.models import Block
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

# The calibration each process started with (by file), and the files it has retaken
_IN_USE: dict[Path, ProbeCalibration] = {}
_RETAKEN: set[Path] = set()


class ReferenceProbe(torch.nn.Module):
    """DeiT-Tiny's twelve blocks (width 192, 3 heads, MLP 768; distinct weights) on ``batch``
    images' 197 tokens, fp32; each call runs the next block, in turn.

    Blocks, not a bare GEMM: the host's speed moves a ViT through its matmuls, softmax, norms and
    memory traffic together. Timed beside deit_tiny in two runs on a 2-core VM (the slower
    perhaps beside other work), a 256x256 GEMM moved 3% while the model moved 20%; a block 16%.
    Twelve in turn, not one: like a model's, their 21 MB of weights do not stay in the core's
    caches between calls, so the probe slows with the memory hierarchy as a model does. In
    150 s traces of deit_tiny with both timed in the same probe blocks (one after the other,
    either order), the 3 s windows' drift-corrected medians scattered by 0.7% and 0.8% corrected
    by the blocks in turn against 1.1% and 1.2% by one block, which over-corrected slow phases
    (in logs, the model slowed by 0.92-0.95 of the block's slowdown and by 0.99-1.01 of the
    twelve's)."""

    def __init__(self, batch: int) -> None:
        super().__init__()
        self.batch = batch
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(PROBE_SEED)
            self.blocks = torch.nn.ModuleList(
                Block(PROBE_WIDTH, Attention(PROBE_WIDTH, PROBE_HEADS, PROBE_WIDTH // PROBE_HEADS),
                      4 * PROBE_WIDTH) for _ in range(PROBE_BLOCKS)).eval()
        self.blocks.requires_grad_(False)
        self.next_block = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        block = self.blocks[self.next_block]
        self.next_block = (self.next_block + 1) % len(self.blocks)
        return block(x)[0]

    def example_input(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(PROBE_SEED + 1)
        return torch.randn(self.batch, PROBE_TOKENS, PROBE_WIDTH, generator=generator)

    @property
    def name(self) -> str:
        return f"vit-{PROBE_BLOCKS}blocks{PROBE_WIDTH}x{PROBE_TOKENS}-b{self.batch}-fp32"


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


def time_probe_windows(time_once: Callable[[], float]) -> list[list[float]]:
    """Warm the probe for ``CALIBRATION_WARMUP_S``, then time it in ``CALIBRATION_WINDOWS``
    windows of ``CALIBRATION_WINDOW_S`` (at least 3 calls each)."""
    start = time.perf_counter()
    while time.perf_counter() - start < CALIBRATION_WARMUP_S:
        time_once()
    windows = []
    for _ in range(CALIBRATION_WINDOWS):
        samples, start = [], time.perf_counter()
        while time.perf_counter() - start < CALIBRATION_WINDOW_S or len(samples) < 3:
            samples.append(time_once())
        windows.append(samples)
    return windows


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


def quiet_calibration(time_once: Callable[[], float], device: str, threads: int, probe: str
                      ) -> ProbeCalibration | str:
    """The calibration this process started with: the stored one, or one taken now; why there
    is none when the host is busy."""
    path = calibration_path(device, threads, probe)
    if path in _IN_USE:
        return _IN_USE[path]
    result = load_calibration(device, threads, probe) or calibrate(time_once, device, threads, probe)
    if isinstance(result, ContentionEvidence):
        return (f"the probe was never calibrated on this machine and the host is busy now "
                f"({'; '.join(result.reasons)})")
    _IN_USE[path] = result
    return result


def retake_if_faster(time_once: Callable[[], float], in_use: ProbeCalibration,
                     window_probe_ms: float) -> ProbeCalibration | None:
    """When the probe's median over a quiet window was under ``RETAKE_BELOW`` of its calibrated
    quiet time, the calibration caught the host in a slow phase: retake it (once a process) and
    store the new one if faster, for the processes after this one. The new one, or None."""
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
