"""Shared fixtures: a tiny search space and a fast CPU profile so searches take seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_SPACE = """\
schema_version: 1
name: tiny
description: a small space for tests (32 px images, 16 tokens)
params:
  embed_dim: [32, 48]
  depth: {low: 2, high: 3}
  num_heads: {choices: [1, 2], per_layer: true}
  mlp_ratio: [2.0, 4.0]
  head_dim: 16
  patch_size: 8
  img_size: 32
  num_classes: 10
  keep_rate: [1.0, 0.5]
  keep_layers: [2]
"""

FAST_CPU = """\
schema_version: 1
name: fastcpu
kind: cpu
description: the host CPU with a short measurement protocol, for tests
measurement:
  batch_size: 1
  threads: 1
  warmup_min_s: 0.001
  warmup_min_iters: 2
  min_samples: 10
  max_samples: 40
  target_ci_rel: 0.05
  time_cap_s: 0.05
accelerates:
  precision: [int8, bf16, fp16]
"""


@pytest.fixture
def tiny_space_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPACE)
    return path


@pytest.fixture
def fast_device_file(tmp_path: Path) -> Path:
    path = tmp_path / "fastcpu.yaml"
    path.write_text(FAST_CPU)
    return path


@pytest.fixture(autouse=True)
def isolated_data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """FPGA calibration records go to a fresh directory: tests never see the user's."""
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path_factory.mktemp("harness-data")))
