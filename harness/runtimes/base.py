"""The runtime interface: how a prepared model is run, and the check that it computes what eager
PyTorch computes.

A runtime (``eager``, ``compile``, ``onnxruntime``) registers with ``@register_runtime``. It says
whether its packages are installed (``availability``), which configurations it cannot run and why
(``refusal``), and builds a callable module from the device-prepared eager model (``build``).
``deploy`` then checks the built model's logits against eager's on fixed inputs (``Parity``) and
times the whole preparation (export, session creation, compilation and the first calls) apart
from the measurement, as ``prepare_s``.
"""

from __future__ import annotations

import abc
import re
import time
from typing import Any, ClassVar

import torch
from torch import nn

from harness.config import RUNTIMES, CandidateConfig
from harness.errors import ConfigError, DeviceError
from harness.layers import inference_context
from harness.records import Parity, RuntimeRecord

# Largest |logit difference| from eager that a runtime may show, by precision. fp32 as issue-level
# parity demands; fp16/bf16/int8 round differently per fused kernel (measured on DeiT-shaped
# models: fp16 7e-4, bf16 6e-3, int8 3e-3 under torch.compile).
PARITY_BOUNDS = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 5e-2, "int8": 5e-2}
PARITY_BATCHES = 4  # input batches of the measured shape, drawn from PARITY_SEED
PARITY_SEED = 1234


class RuntimeRefused(ConfigError):
    """A runtime cannot run a configuration (a knob it cannot carry), or is not installed."""


class ParityError(DeviceError):
    """A runtime's logits differ from eager's beyond the bound: the candidate fails, with the
    figures, and is never measured as if it were right."""


class Runtime(abc.ABC):
    """One way to run a prepared model."""

    name: ClassVar[str]
    # What to install when it is missing, for the one-line refusal.
    install_hint: ClassVar[str] = ""

    def availability(self) -> tuple[bool, str]:
        """(installed, reason); never raises."""
        return True, ""

    def refusal(self, config: CandidateConfig, device_kind: str) -> str | None:
        """Why this runtime cannot run ``config`` on a device of ``device_kind``, or None."""
        return None

    @abc.abstractmethod
    def build(self, model: nn.Module, inputs: torch.Tensor, config: CandidateConfig,
              threads: int) -> tuple[nn.Module, dict[str, Any]]:
        """A module computing ``model``'s logits for inputs like ``inputs``, and its detail."""


RUNTIME_CLASSES: dict[str, type[Runtime]] = {}


def register_runtime(cls: type[Runtime]) -> type[Runtime]:
    if cls.name not in RUNTIMES:
        raise ValueError(f"runtime {cls.name!r} is not a value of the runtime key {RUNTIMES}")
    RUNTIME_CLASSES[cls.name] = cls
    return cls


def get_runtime(name: str) -> Runtime:
    return RUNTIME_CLASSES[name]()


def check_runnable(config: CandidateConfig, device_kind: str) -> None:
    """Refuse, in one line, a runtime that is not installed or cannot run ``config``.

    Raises:
        RuntimeRefused: naming the package to install, or the knob the runtime cannot carry."""
    runtime = get_runtime(config.runtime)
    installed, reason = runtime.availability()
    if not installed:
        raise RuntimeRefused(f"runtime {runtime.name}: {reason} ({runtime.install_hint})")
    refused = runtime.refusal(config, device_kind)
    if refused:
        raise RuntimeRefused(f"runtime {runtime.name} cannot run this configuration: {refused}")


_TERMINAL_COLOURS = re.compile(r"\x1b\[[0-9;]*m")


def first_line(error: BaseException) -> str:
    """``Type: first line of the message``, without the terminal colours exporters add."""
    text = _TERMINAL_COLOURS.sub("", str(error)).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:300]}" if text else type(error).__name__


def parity_inputs(inputs: torch.Tensor) -> list[torch.Tensor]:
    """``PARITY_BATCHES`` fixed batches shaped, typed and placed like ``inputs``."""
    generator = torch.Generator().manual_seed(PARITY_SEED)
    return [torch.randn(inputs.shape, generator=generator).to(inputs.device, inputs.dtype)
            for _ in range(PARITY_BATCHES)]


def check_parity(eager: nn.Module, built: nn.Module, inputs: list[torch.Tensor],
                 precision: str) -> Parity:
    """Compare ``built``'s logits with ``eager``'s on ``inputs``."""
    bound = PARITY_BOUNDS[precision]
    with inference_context(eager):
        expected = torch.cat([eager(x).float().cpu() for x in inputs])
        got = torch.cat([built(x).float().cpu() for x in inputs])
    top2 = expected.topk(min(2, expected.shape[1]), dim=1).values
    margin = top2[:, 0] - top2[:, -1]
    differs = expected.argmax(dim=1) != got.argmax(dim=1)
    return Parity(
        max_abs_diff=float((got - expected).abs().max()), bound=bound, images=len(expected),
        top1_agreement=float(1 - differs.float().mean()),
        decisive_disagreements=int((differs & (margin > 2 * bound)).sum()),
    )


def deploy(model: nn.Module, inputs: torch.Tensor, config: CandidateConfig, device_kind: str,
           threads: int) -> tuple[nn.Module, RuntimeRecord]:
    """``model`` (prepared by the device, in eager PyTorch) as ``config.runtime`` runs it, checked
    against eager on fixed inputs.

    Raises:
        RuntimeRefused: the runtime is not installed or cannot run the configuration.
        ParityError: its logits differ from eager's beyond the bound (the figures are named).
        DeviceError: export or compilation failed (the runtime's first line of the reason)."""
    if config.runtime == "eager":
        return model, RuntimeRecord("eager", 0.0, None, {})
    check_runnable(config, device_kind)
    runtime = get_runtime(config.runtime)
    start = time.perf_counter()
    try:
        built, detail = runtime.build(model, inputs, config, threads)
        parity = check_parity(model, built, parity_inputs(inputs), config.precision)
    except Exception as error:  # noqa: BLE001 - exporters, compilers and ORT raise their own types
        raise DeviceError(f"runtime {runtime.name} could not prepare the model: "
                          f"{first_line(error)}") from None
    if not parity.passed:
        raise ParityError(f"runtime {runtime.name} does not compute what eager computes: "
                          f"{parity.describe()}")
    return built, RuntimeRecord(runtime.name, time.perf_counter() - start, parity, detail)
