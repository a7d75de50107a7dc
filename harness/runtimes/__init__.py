"""Runtimes: how a prepared model is run (eager PyTorch, torch.compile, ONNX Runtime)."""

from harness.runtimes import compiled, eager, onnx  # noqa: F401 - registers each runtime
from harness.runtimes.base import (
    PARITY_BOUNDS,
    RUNTIME_CLASSES,
    ParityError,
    Runtime,
    RuntimeRefused,
    check_runnable,
    deploy,
    get_runtime,
    register_runtime,
)

__all__ = [
    "PARITY_BOUNDS",
    "RUNTIME_CLASSES",
    "ParityError",
    "Runtime",
    "RuntimeRefused",
    "check_runnable",
    "deploy",
    "get_runtime",
    "register_runtime",
]
