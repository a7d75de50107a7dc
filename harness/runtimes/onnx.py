"""ONNX export (torch.export, then the ONNX exporter) and ONNX Runtime sessions.

``export_onnx`` writes the ONNX file that both the ``onnxruntime`` runtime and ``harness export``
use. Token pruning and merging have data-dependent token order but a fixed token count for a
given configuration, so every structural knob exports with static shapes; the batch dimension
may be left dynamic. Two knobs do not export: int8 (torch's dynamic quantisation has no ONNX
form here) and bf16 (ONNX Runtime has no bf16 kernels for the exported convolution).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.config import CandidateConfig
from harness.runtimes.base import Runtime, register_runtime

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
# ONNX keeps initializers inside the file up to protobuf's 2 GB limit.
MAX_INLINE_BYTES = 2**31 - 2**26
INSTALL_HINT = "install it with: pip install 'vit-harness[onnx]'"
# Providers tried on a CUDA device, best first; the CPU provider on a CPU.
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
NOT_EXPORTABLE = {
    "int8": "int8 is torch's dynamic quantisation, which has no ONNX export; use fp32 or fp16",
    "bf16": "ONNX Runtime has no bf16 kernels for the exported graph (its Conv); use fp32 or fp16",
}


def missing_packages() -> list[str]:
    """The packages ONNX export and ONNX Runtime need that are not installed."""
    return [name for name in ("onnx", "onnxscript", "onnxruntime")
            if importlib.util.find_spec(name) is None]


def export_refusal(config: CandidateConfig) -> str | None:
    """Why ``config`` cannot be exported to ONNX, or None."""
    return NOT_EXPORTABLE.get(config.precision)


def export_onnx(model: nn.Module, inputs: torch.Tensor, path: Path,
                dynamic_batch: bool = False) -> dict[str, Any]:
    """Write ``model`` (eager, prepared) as ONNX to ``path``; what was exported, as JSON values.

    The exporter's own progress lines and warnings are kept out of the harness's output."""
    batch = {0: torch.export.Dim("batch", min=1, max=4096)} if dynamic_batch else None
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    chatter = io.StringIO()
    with (warnings.catch_warnings(), contextlib.redirect_stdout(chatter),
          _quiet_logger("torch.onnx"), _quiet_logger("onnxscript")):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (inputs,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes=(batch,) if batch else None, verbose=False)
        program.save(str(path), external_data=size > MAX_INLINE_BYTES)
    import onnx  # installed with onnxscript, which the exporter needs

    opset = next((o.version for o in onnx.load(str(path), load_external_data=False).opset_import
                  if o.domain in ("", "ai.onnx")), None)
    return {"opset": opset, "dynamic_batch": dynamic_batch, "exporter": "torch.onnx (dynamo)",
            "torch": torch.__version__}


@contextlib.contextmanager
def _quiet_logger(name: str):
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class OnnxRuntimeModel(nn.Module):
    """An ONNX Runtime session behind ``nn.Module``'s call, so devices time it like any model:
    CPU tensors go through NumPy without copies, CUDA tensors are bound in place."""

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session
        self.output_type = session.get_outputs()[0].type

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.is_cuda:
            return self._run_on_gpu(images)
        return torch.from_numpy(self.session.run(None, {INPUT_NAME: images.contiguous().numpy()})[0])

    def _run_on_gpu(self, images: torch.Tensor) -> torch.Tensor:
        images = images.contiguous()
        binding = self.session.io_binding()
        binding.bind_input(INPUT_NAME, "cuda", images.device.index or 0,
                           _numpy_dtype(images.dtype),
                           list(images.shape), images.data_ptr())
        binding.bind_output(OUTPUT_NAME, "cuda", images.device.index or 0)
        self.session.run_with_iobinding(binding)
        return torch.from_dlpack(binding.get_outputs()[0].to_dlpack())


def _numpy_dtype(dtype: torch.dtype) -> Any:
    import numpy as np

    return {torch.float32: np.float32, torch.float16: np.float16}[dtype]


def session_for(path: Path, device_kind: str, threads: int) -> Any:
    """An ONNX Runtime session of ``path`` with the providers of ``device_kind``.

    Raises:
        RuntimeError: a CUDA device without a GPU provider in this ONNX Runtime build."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Idle threads sleep instead of spinning: a spinning pool keeps the cores busy between calls,
    # which slows the reference probe timed between the blocks (a DeiT-Tiny at 1.8x its quiet
    # time), and the drift correction would then "correct" by that.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if device_kind == "cuda":
        providers = [p for p in GPU_PROVIDERS if p in ort.get_available_providers()]
        if not providers:
            raise RuntimeError(f"this onnxruntime build has no GPU provider (found "
                               f"{', '.join(ort.get_available_providers())}); install "
                               "onnxruntime-gpu")
    else:
        providers = ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


@register_runtime
class OnnxRuntime(Runtime):
    name = "onnxruntime"
    install_hint = INSTALL_HINT

    def availability(self) -> tuple[bool, str]:
        missing = missing_packages()
        if missing:
            return False, f"{', '.join(missing)} not installed"
        return True, ""

    def refusal(self, config: CandidateConfig, device_kind: str) -> str | None:
        return export_refusal(config)

    def build(self, model: nn.Module, inputs: torch.Tensor, config: CandidateConfig,
              threads: int) -> tuple[nn.Module, dict[str, Any]]:
        device_kind = "cuda" if inputs.is_cuda else "cpu"
        with tempfile.TemporaryDirectory(prefix="harness-onnx-") as folder:
            path = Path(folder) / "model.onnx"
            detail = export_onnx(model, inputs, path)
            detail["onnx_bytes"] = path.stat().st_size
            session = session_for(path, device_kind, threads)
        import onnxruntime as ort

        return OnnxRuntimeModel(session), {**detail, "providers": session.get_providers(),
                                           "threads": threads, "onnxruntime": ort.__version__}
