"""Does the CUDA device kind work end to end on this GPU? A smoke run, not a benchmark of record.

Finds the bundled profile that matches the visible GPU (or uses the a100 protocol on the first GPU
when none does), then measures deit_tiny at batch 1 four ways (eager; CUDA graphs; L2 flushed
before each call; both), its energy per call from NVML, and fp16 and fp16 with 2:4 sparse weights
through the harness's ``prepare`` where the GPU runs them. Every latency is printed with its
stop reason, warm-up and throttle record. Without a CUDA GPU it prints one line and exits 0.

    python benchmarks/gpu_smoke.py [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from harness.config import CandidateConfig
from harness.devices import bundled_device_names, load_profile
from harness.devices.cuda import CudaDevice, visible_gpus
from harness.errors import DeviceError
from harness.models import build_model, preset_config
from harness.records import EnergyRecord
from harness.timing import LatencyMeasurement, MeasurementProtocol

ARCH = "deit_tiny"


def matching_device() -> CudaDevice:
    """The bundled profile whose match rule names a visible GPU; else the a100 protocol and
    knobs on the first GPU, with no datasheet figures (they would be another GPU's)."""
    for name in bundled_device_names():
        profile = load_profile(name)
        if profile.kind == "cuda" and CudaDevice(profile).availability()[0]:
            return CudaDevice(profile)
    return CudaDevice(dataclasses.replace(load_profile("a100"), name="unlisted-gpu", hardware={}))


def latency_line(label: str, result: LatencyMeasurement) -> str:
    s, c = result.summary, result.conditions
    p90 = f"{s.p90:.3f}" if s.p90 is not None else "n/a"
    p99 = f"{s.p99:.3f}" if s.p99 is not None else "n/a"
    clocks = c.get("sm_clock_mhz_range")
    temperature = c.get("temperature_c_range")
    return (f"  {label:<16} median {s.median:.3f} ms [{s.ci95[0]:.3f}, {s.ci95[1]:.3f}] "
            f"p90 {p90} p99 {p99} n={s.n} stop={result.stop_reason} | warm-up "
            f"{result.warmup_iterations} calls {result.warmup_s:.2f} s "
            f"({'steady' if c.get('warmup_steady') else 'NOT steady'}) | throttled="
            f"{result.throttled} {c.get('throttle_reasons_seen', c.get('nvml'))} | SM clock "
            f"{clocks} MHz, temperature {temperature} C")


def energy_line(energy: EnergyRecord) -> str:
    if energy.status == "unavailable":
        return f"  energy unavailable: {energy.reason}"
    low, high = energy.ci95 or (float("nan"), float("nan"))
    idle = f"{energy.idle_power_w:.1f} W" if energy.idle_power_w is not None else "unknown"
    return (f"  energy {energy.joules_per_call * 1000:.3f} mJ/call [{low * 1000:.3f}, "
            f"{high * 1000:.3f}] over {energy.windows} windows of {energy.window_s:.2f} s; idle "
            f"{idle} ({energy.status}, {energy.source}: {energy.reason})")


def measure(device: CudaDevice, config: CandidateConfig, protocol: MeasurementProtocol,
            variants: dict[str, dict[str, bool]], energy: bool) -> None:
    """Prepare ``config`` as the device runs it and time it under each protocol variant."""
    inputs = torch.randn(protocol.batch_size, 3, config.img_size, config.img_size,
                         generator=torch.Generator().manual_seed(0))
    for knob in device.knob_support(config):
        print(f"  {knob.knob} {knob.value}: {'accelerated' if knob.accelerated else 'NOT accelerated'}"
              f" ({knob.how})")
    try:
        model, inputs = device.prepare(build_model(config), inputs, config)
        for label, settings in variants.items():
            variant = dataclasses.replace(protocol, **settings)
            print(latency_line(label, device.measure_latency(model, inputs, variant)))
    except DeviceError as error:
        print(f"  skipped: {error}")
        return
    if energy:
        print(energy_line(device.measure_energy(model, inputs, protocol)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="shorter timing (2 s cap) and energy (3 windows of 1 s)")
    args = parser.parse_args()
    gpus = visible_gpus()
    if isinstance(gpus, str):
        print(f"gpu_smoke: nothing to measure, no CUDA GPU on this host: {gpus}")
        return
    device = matching_device()
    protocol = device.profile.protocol
    if args.quick:
        protocol = dataclasses.replace(protocol, time_cap_s=2.0, energy_window_s=1.0,
                                       energy_windows=3, idle_s=1.0)
    facts = device.describe()
    print(f"GPUs visible: {', '.join(gpus)}; profile {device.name!r} "
          f"({device.availability()[1]})")
    print(f"  {facts}")
    print(f"  protocol {protocol.to_dict()}")
    config = preset_config(ARCH)
    variants = {
        "eager": {},
        "cuda graphs": {"cuda_graphs": True},
        "l2 flush": {"l2_flush": True},
        "graphs + flush": {"cuda_graphs": True, "l2_flush": True},
    }
    print(f"{ARCH} fp32, batch {protocol.batch_size}:")
    measure(device, config, protocol, variants, energy=True)
    fast = {"eager": {}, "cuda graphs": {"cuda_graphs": True}}
    print(f"{ARCH} fp16:")
    measure(device, config.replace(precision="fp16"), protocol, fast, energy=True)
    print(f"{ARCH} fp16, 2:4 sparse weights:")
    measure(device, config.replace(precision="fp16", weight_sparsity="2:4"), protocol, fast,
            energy=False)


if __name__ == "__main__":
    main()
