"""The training-free proxies (``proxy:NAME``): registration, determinism, what each one sees."""

from __future__ import annotations

import math

import pytest
import torch

from harness.accuracy import PROXIES, get_estimator
from harness.accuracy.proxies import BATCH, Naswot
from harness.config import CandidateConfig
from harness.cost import estimate_cost
from harness.models import build_model

NAMES = ("dss", "params", "gmacs", "naswot", "synflow", "gradnorm")
TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "head_dim": 16, "patch_size": 8,
        "img_size": 32, "num_classes": 10}


def _config(**overrides: object) -> CandidateConfig:
    return CandidateConfig(**{**TINY, **overrides})


@pytest.mark.parametrize("name", NAMES)
def test_proxy_is_registered_and_named_by_its_spec(name):
    estimator = get_estimator(f"proxy:{name}")
    assert name in PROXIES
    assert isinstance(estimator, PROXIES[name])
    assert estimator.spec == f"proxy:{name}"
    assert estimator.description and "\n" not in estimator.description


@pytest.mark.parametrize("name", NAMES)
def test_proxy_is_deterministic_and_leaves_the_model_alone(name):
    config = _config(merge_r=2)  # token merging on, so its path runs too
    model = build_model(config)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    estimator = get_estimator(f"proxy:{name}")
    first, second = estimator.estimate(model, config), estimator.estimate(model, config)
    assert math.isfinite(first)
    assert first == second
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[key], after[key]) for key in before)
    assert all(parameter.grad is None for parameter in model.parameters())
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())
    assert not any(module._forward_hooks for module in model.modules())


@pytest.mark.parametrize("overrides", [{}, {"embed_dim": 64, "depth": 4, "mlp_ratio": 2.0}])
def test_baselines_equal_the_cost_model(overrides):
    config = _config(**overrides)
    model = build_model(config)
    cost = estimate_cost(config)
    assert get_estimator("proxy:params").estimate(model, config) == pytest.approx(cost.params_m)
    assert get_estimator("proxy:gmacs").estimate(model, config) == cost.gmacs


@pytest.mark.parametrize("name", ["params", "naswot", "synflow", "gradnorm"])
def test_larger_model_scores_higher(name):
    # Checked over seeds 0-2 when written: the margins (gradnorm ≥ 0.2, synflow ≥ 0.5 in log10)
    # are far above the seed-to-seed spread, so this is not luck of one draw.
    small, large = _config(), _config(embed_dim=64, depth=4)
    estimator = get_estimator(f"proxy:{name}")
    assert estimator.estimate(build_model(large), large) > estimator.estimate(
        build_model(small), small)


def test_naswot_kernel_is_a_psd_hamming_kernel():
    config = _config()
    kernel = Naswot().kernel(build_model(config), config)
    # Code length: every hidden unit of every token of every block.
    units = config.depth * (config.num_patches + 1) * config.mlp_hidden_at(0)
    assert kernel.shape == (BATCH, BATCH)
    assert kernel.dtype == torch.float64
    assert torch.equal(kernel, kernel.T)
    assert torch.all(kernel.diagonal() == units)  # an image agrees with itself everywhere
    assert torch.all((kernel >= 0) & (kernel <= units))
    assert torch.equal(kernel, kernel.round())  # counts of agreeing units
    assert torch.linalg.eigvalsh(kernel).min() >= -1e-9 * units
    score = Naswot().estimate(build_model(config), config)
    assert math.isfinite(score)
    assert score == pytest.approx(torch.linalg.slogdet(kernel).logabsdet.item())


def test_token_merging_lowers_gmacs_and_changes_naswot():
    configs = [_config(merge_r=r) for r in (0, 2, 4)]
    gmacs = [get_estimator("proxy:gmacs").estimate(build_model(c), c) for c in configs]
    naswot = [Naswot().estimate(build_model(c), c) for c in configs]
    assert gmacs[0] > gmacs[1] > gmacs[2]
    # Merged tokens contribute no bits: a shorter code, lower agreement counts, a lower score.
    assert naswot[0] > naswot[1] > naswot[2]


def test_weight_sparsity_lowers_synflow_but_not_params():
    dense, sparse = _config(), _config(weight_sparsity="2:4")
    synflow, params = get_estimator("proxy:synflow"), get_estimator("proxy:params")
    # Zeroed weights have zero saliency θ·∂R/∂θ; they are still stored parameters.
    assert synflow.estimate(build_model(sparse), sparse) < synflow.estimate(
        build_model(dense), dense)
    assert params.estimate(build_model(sparse), sparse) == params.estimate(
        build_model(dense), dense)


@pytest.mark.parametrize("name", NAMES)
def test_every_attention_variant_is_scored(name):
    # Pooled attention has q and kv projections instead of qkv; DSS once looked only for qkv.
    estimator = get_estimator(f"proxy:{name}")
    scores = {}
    for attention in ("global", "window", "pooled"):
        config = _config(attention=attention, window_size=2)
        scores[attention] = estimator.estimate(build_model(config), config)
    assert all(math.isfinite(score) for score in scores.values())
    if name == "params":  # q and kv hold exactly the weights of qkv
        assert scores["pooled"] == scores["global"]
    else:
        assert scores["pooled"] != scores["global"]
