"""The harness's HLS kernels and how a report says which kernel (and which parameters) it is.

The FPGA cost model composes a ViT from four operators: a matrix-multiply unit (Linear layers,
QKᵀ and attention·V), and softmax, LayerNorm and GELU pipelines. A report can calibrate an
operator only if it says what was synthesized, so kernel top functions carry their parameters in
their name, as ``hls synth`` writes them::

    hk_matmul_n197_k192_m576_pe16_simd16_b8   # N rows × K inputs → M outputs, PE × SIMD lanes, 8-bit
    hk_softmax_r591_c197_l4_b16               # R rows of C values, L lanes, 16-bit
    hk_layernorm_r197_c192_l4_b16
    hk_gelu_r197_c768_l4_b16

A project built by other means can use the same names for its top functions to calibrate.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

KERNEL_PREFIX = "hk_"
# Operator → the parameters its name must carry, in order.
OPERATOR_PARAMS: dict[str, tuple[str, ...]] = {
    "matmul": ("n", "k", "m", "pe", "simd", "b"),
    "softmax": ("r", "c", "l", "b"),
    "layernorm": ("r", "c", "l", "b"),
    "gelu": ("r", "c", "l", "b"),
}
_NAME = re.compile(r"hk_(?P<op>[a-z]+)((?:_[a-z]+\d+)+)")
_PARAM = re.compile(r"_([a-z]+)(\d+)")


@dataclass(frozen=True)
class KernelSpec:
    """One operator kernel: what it computes and how parallel it is."""

    operator: str
    params: dict[str, int]

    @property
    def name(self) -> str:
        keys = OPERATOR_PARAMS[self.operator]
        return KERNEL_PREFIX + self.operator + "".join(f"_{k}{self.params[k]}" for k in keys)

    @property
    def lanes(self) -> int:
        """Values processed per cycle: PE × SIMD multipliers, or the pipeline's lanes."""
        if self.operator == "matmul":
            return self.params["pe"] * self.params["simd"]
        return self.params["l"]

    @property
    def ideal_cycles(self) -> int:
        """Cycles at an initiation interval of one with no pipeline fill: what a calibration
        scales. Matmul is FINN's matrix-vector unit, ``ceil(M/PE)·ceil(K/SIMD)·N``."""
        p = self.params
        if self.operator == "matmul":
            return math.ceil(p["m"] / p["pe"]) * math.ceil(p["k"] / p["simd"]) * p["n"]
        return p["r"] * math.ceil(p["c"] / p["l"])

    def to_dict(self) -> dict[str, object]:
        return {"operator": self.operator, "params": dict(self.params), "name": self.name}


def kernel_from_name(top: str | None) -> KernelSpec | None:
    """The kernel a top function's name describes; ``None`` for any other name."""
    match = _NAME.fullmatch(top or "")
    if match is None or match["op"] not in OPERATOR_PARAMS:
        return None
    params = {key: int(value) for key, value in _PARAM.findall(match.group(2))}
    if tuple(params) != OPERATOR_PARAMS[match["op"]] or min(params.values()) <= 0:
        return None
    return KernelSpec(match["op"], params)


def kernel(operator: str, **params: int) -> KernelSpec:
    """A kernel spec from keyword parameters (``kernel("gelu", r=197, c=768, l=4, b=16)``)."""
    keys = OPERATOR_PARAMS[operator]
    if set(params) != set(keys):
        raise ValueError(f"{operator} kernel needs parameters {', '.join(keys)}")
    return KernelSpec(operator, {key: params[key] for key in keys})
