"""Numeric precision of a built fp32 model: int8 dynamic quantisation or a bf16/fp16 cast.

Which precisions a device *accelerates* is the device's to say (``BaseDevice.knob_support``);
this module only converts.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

Converter = Callable[[nn.Module, torch.Tensor], tuple[nn.Module, torch.Tensor]]


def _keep_fp32(model: nn.Module, inputs: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    return model, inputs


def _quantize_int8(model: nn.Module, inputs: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """Linear layers with int8 weights and dynamically quantised int8 activations.

    ``torch.ao.quantization.quantize_dynamic`` is deprecated in torch 2.13 but still the fastest
    int8 path measured on CPU (torchao's int8 configs were far slower in eager mode); the
    quantised engine is torch's default for the CPU (``x86``, fbgemm kernels).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    return quantized, inputs


def _cast(dtype: torch.dtype) -> Converter:
    def convert(model: nn.Module, inputs: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
        return model.to(dtype), inputs.to(dtype)

    return convert


PRECISION_CONVERTERS: dict[str, Converter] = {
    "fp32": _keep_fp32,
    "int8": _quantize_int8,
    "bf16": _cast(torch.bfloat16),
    "fp16": _cast(torch.float16),
}


def convert_precision(
    model: nn.Module, inputs: torch.Tensor, precision: str
) -> tuple[nn.Module, torch.Tensor]:
    """``model`` and ``inputs`` in ``precision`` (one of ``config.PRECISIONS``)."""
    return PRECISION_CONVERTERS[precision](model, inputs)
