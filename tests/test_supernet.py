"""The weight-sharing supernet (``supernet:DATASET``): sandwich sampling, slicing, resumable
training, its cache and the estimator. Tiny space and scikit-learn's digits: seconds per test."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

import harness
from harness.accuracy import get_estimator
from harness.accuracy import supernet as supernet_module
from harness.accuracy.datasets import load_dataset
from harness.accuracy.spread import unpack_correct
from harness.accuracy.supernet import (
    SupernetError,
    SupernetSpec,
    largest_and_smallest,
    sandwich,
    score,
    score_split,
    subnet_weights,
    train_supernet,
)
from harness.accuracy.training import training_config
from harness.cli import main
from harness.config import CandidateConfig
from harness.errors import ConfigError
from harness.models import build_model
from harness.space import parse_space
from tests.conftest import TINY_SPACE

TOKEN_SPACE = TINY_SPACE.replace("keep_layers: [2]\n", "keep_layers: [2]\n  merge_r: [0, 2]\n"
                                 "  precision: [fp32, int8]\n")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture
def space():
    return parse_space(TOKEN_SPACE, "tiny.yaml")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _weights(spec: SupernetSpec) -> dict[str, torch.Tensor]:
    return torch.load(spec.folder / "weights.pt", weights_only=True)


def test_every_step_trains_the_largest_and_the_smallest_and_two_random_subnets(space, digits):
    bread = largest_and_smallest(space)
    largest, smallest = (training_config(c.replace(precision="fp32"), digits) for c in bread)
    assert (largest.embed_dim, largest.depth, largest.mlp_ratio, largest.merge_r,
            largest.keep_rate) == (48, 3, 4.0, 0, 1.0)
    assert (smallest.embed_dim, smallest.depth, smallest.mlp_ratio, smallest.keep_rate) == (
        32, 2, 2.0, 0.5)
    steps = [sandwich(space, bread, digits, seed=0, step=step) for step in range(20)]
    assert all(configs[:2] == [largest, smallest] for configs in steps)
    drawn = [config for configs in steps for config in configs[2:]]
    assert len(drawn) == 40 and len({c.key() for c in drawn}) > 10
    # the knobs are sampled too (token reduction is trained), precision is not (applied when scored)
    assert {c.merge_r for c in drawn} == {0, 2} and {c.keep_rate for c in drawn} == {1.0, 0.5}
    assert {c.precision for c in drawn} == {"fp32"}
    assert sandwich(space, bread, digits, 0, 7) == steps[7]  # deterministic for (seed, step)
    assert sandwich(space, bread, digits, 1, 7) != steps[7]
    # the draws depend only on what the cache key holds: pinning precision changes none of them
    fp32_only = space.with_choices({"precision": ("fp32",)})
    assert [sandwich(fp32_only, bread, digits, 0, step) for step in range(20)] == steps


def test_a_candidate_inherits_exactly_the_leading_weights_of_the_supernet(space, digits):
    bread = largest_and_smallest(space)
    supernet = build_model(training_config(bread[0], digits), seed=3).state_dict()
    config = training_config(CandidateConfig.from_dict({
        "embed_dim": 32, "depth": 2, "num_heads": [1, 2], "mlp_ratio": 2.0, "head_dim": 16,
        "patch_size": 8, "img_size": 32, "num_classes": 10}), digits)
    weights = subnet_weights(build_model(config), supernet)
    # the supernet has 2 heads of 16 per part (q, k, v): block 0 takes 1, block 1 both
    qkv0, qkv1 = (supernet[f"blocks.{b}.attn.qkv.weight"].unflatten(0, (3, 32)) for b in (0, 1))
    assert torch.equal(weights["blocks.0.attn.qkv.weight"], qkv0[:, :16, :32].flatten(0, 1))
    assert torch.equal(weights["blocks.1.attn.qkv.weight"], qkv1[:, :32, :32].flatten(0, 1))
    assert torch.equal(weights["blocks.1.mlp.fc1.weight"], supernet["blocks.1.mlp.fc1.weight"][:64, :32])
    assert torch.equal(weights["head.weight"], supernet["head.weight"][:, :32])
    assert set(weights) == set(build_model(config).state_dict())
    too_wide = training_config(CandidateConfig(embed_dim=64, depth=2, num_heads=1, head_dim=16,
                                               patch_size=8, img_size=32, num_classes=10), digits)
    with pytest.raises(SupernetError, match=r"larger than the supernet's"):
        subnet_weights(build_model(too_wide), supernet)


def test_an_interrupted_training_resumes_from_its_checkpoint(space, digits, tmp_path, monkeypatch):
    monkeypatch.setattr(supernet_module, "LOG_EVERY", 1)
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "whole"))
    whole = SupernetSpec(space, "digits", "6steps")
    train_supernet(whole, digits)
    expected = _weights(whole)

    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "interrupted"))
    spec = SupernetSpec(space, "digits", "6steps")

    def stop_at_step_4(progress):
        if progress.step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_supernet(spec, digits, stop_at_step_4, checkpoint_every_s=1e9)
    checkpoint = torch.load(spec.folder / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 4 and not (spec.folder / "weights.pt").exists()
    resumed = []
    record = train_supernet(spec, digits, resumed.append)
    assert [p.step for p in resumed] == [5, 6] and resumed[0].resumed_from == 4
    assert record.steps == 6 and not (spec.folder / "checkpoint.pt").exists()
    assert all(torch.equal(expected[name], tensor) for name, tensor in _weights(spec).items())
    assert [entry["step"] for entry in record.log] == [1, 2, 3, 4, 5, 6]


def test_the_cache_key_follows_the_space_and_the_data_not_the_device(space):
    key = SupernetSpec(space, "digits", "6steps").key
    assert SupernetSpec(space, "digits", "6steps").key == key
    assert SupernetSpec(space, "mnist", "6steps").key != key
    assert SupernetSpec(space, "digits", "7steps").key != key
    assert SupernetSpec(space, "digits", "6steps", seed=1).key != key
    wider = parse_space(TOKEN_SPACE.replace("embed_dim: [32, 48]", "embed_dim: [32, 64]"), "x")
    assert SupernetSpec(wider, "digits", "6steps").key != key
    # precision is applied when scoring: a device that drops int8 from the space reuses it
    fp32_only = space.with_choices({"precision": ("fp32",)})
    assert SupernetSpec(fp32_only, "digits", "6steps").key == key


def test_the_estimator_is_deterministic_and_scores_as_measured(space, digits, monkeypatch):
    first, second = (get_estimator("supernet:digits@4steps") for _ in range(2))
    for estimator in (first, second):
        estimator.prepare(space)
    configs = space.sample(4, seed=0)
    scores = [first.record(None, config) for config in configs]
    assert scores == [second.record(None, config) for config in configs]
    assert all(s["heldout_images"] == 359 and s["supernet"]["key"] == first.record_of.key and
               0 <= s["value"] <= 1 and s["heldout_loss"] > 0 for s in scores)
    # which images each got right, for paired comparisons, agrees with its top-1
    assert all(unpack_correct(s["heldout_correct"], 359).sum() == round(s["value"] * 359)
               for s in scores)
    converted = []
    real = supernet_module.convert_precision

    def spy(model, inputs, precision):
        converted.append(precision)
        return real(model, inputs, precision)

    monkeypatch.setattr(supernet_module, "convert_precision", spy)
    int8 = configs[0].replace(precision="int8")
    first.record(None, int8)
    assert converted == ["int8"]  # int8 is scored as int8
    other = get_estimator("supernet:digits@4steps@seed1")
    other.prepare(space)
    assert other.spec == "supernet:digits@4steps@seed1" and other.record_of.key != first.record_of.key


def test_a_search_with_pins_reuses_the_supernet_of_its_space(space, tmp_path):
    estimator = get_estimator("supernet:digits@2steps")
    estimator.prepare(space)
    trained = estimator.record_of
    estimator.prepare(space.with_fixed({"embed_dim": 32}))  # a --set pin: the same supernet
    assert estimator.record_of is trained


@pytest.mark.parametrize(("spec", "message"), [
    ("supernet:cifar", "unknown dataset 'cifar'; valid: mnist, fashion-mnist, digits"),
    ("supernet:digits@fast", "expected supernet:DATASET[@Nsteps|@Ns][@seedK]"),
    ("supernet:digits@0steps", "the budget must be positive"),
])
def test_bad_specs_are_one_line(spec, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")
                       .replace("|", r"\|")):
        get_estimator(spec)


def test_a_damaged_cache_is_named_and_another_versions_is_not_reused(space, digits, capsys):
    estimator = get_estimator("supernet:digits@2steps")
    estimator.prepare(space)
    folder = estimator.spec_of.folder
    (folder / "weights.pt").write_bytes(b"not a checkpoint")
    assert main(["supernet", "train", "--space", str(_space_file(folder.parent)), "--data",
                 "digits", "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weights.pt: unreadable" in err and "remove it" in err
    record = json.loads((folder / "supernet.json").read_text())
    (folder / "supernet.json").write_text(json.dumps({**record, "harness_version": "0.0.1"}))
    notes = []
    SupernetEstimator = type(estimator)
    newer = SupernetEstimator("digits@2steps")
    real_version = harness.__version__
    try:
        harness.__version__ = "0.2.0"  # the next release finds this release's supernet
        newer.prepare(space, on_progress=notes.append)
        assert newer.spec_of.folder != folder and (newer.spec_of.folder / "weights.pt").exists()
    finally:
        harness.__version__ = real_version
    assert any("was trained by harness 0.0.1" in note and "not reused" in note for note in notes)


def _space_file(where: Path) -> Path:
    path = where / "tiny.yaml"
    path.write_text(TOKEN_SPACE)
    return path


def test_a_space_whose_largest_model_cannot_be_built_is_one_line(tmp_path, capsys):
    space = tmp_path / "odd.yaml"
    space.write_text("name: odd\nparams: {img_size: [32, 30], patch_size: [8, 5], depth: 2}\n")
    assert main(["supernet", "train", "--space", str(space), "--data", "digits",
                 "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "its largest configuration cannot be built" in err


def test_supernet_train_and_measure_from_the_command_line(tmp_path, capsys):
    space = _space_file(tmp_path)
    assert main(["supernet", "train", "--space", str(space), "--data", "digits", "--steps", "3",
                 "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["steps"] == 3 and record["accuracy"] == "supernet:digits@3steps"
    assert Path(record["folder"], "weights.pt").is_file()
    args = ["measure", "--no-latency", "--json", "--accuracy", "supernet:digits@3steps", "--set",
            "embed_dim=32", "--set", "depth=2", "--set", "num_heads=2", "--set", "head_dim=16"]
    assert main(args) == 2
    assert "pass --space NAME" in capsys.readouterr().err
    assert main([*args, "--space", str(space)]) == 0
    accuracy = json.loads(capsys.readouterr().out)["accuracy"]
    weights = Path(record["folder"], "weights.pt")
    assert accuracy["supernet"] == {"key": record["key"], "dataset": "digits", "steps": 3,
                                    "seed": 0, "weights_sha256": _sha256(weights)}
    assert accuracy["estimator"] == "supernet:digits@3steps"
    assert main(["supernet", "train", "--steps", "0"]) == 2
    assert "--steps must be positive" in capsys.readouterr().err


def test_score_split_is_fixed_and_stratified(digits):
    assert len(score_split(digits)[1]) == len(digits.test_labels)  # fewer than SCORE_IMAGES: all
    fashion_like = type(digits)("x", "x", digits.train_images, digits.train_labels,
                                digits.train_images.repeat(3, 1, 1, 1),
                                digits.train_labels.repeat(3), 10, 2)
    labels = score_split(fashion_like)[1]
    assert len(labels) == supernet_module.SCORE_IMAGES
    assert labels.bincount().tolist() == [100] * 10
    assert torch.equal(score_split(fashion_like)[1], labels)


def test_scores_differ_by_candidate_after_training(space, digits, tmp_path, monkeypatch):
    """A few dozen steps: the largest sub-network already beats chance, the score says so."""
    spec = SupernetSpec(space, "digits", "150steps")
    record = train_supernet(spec, digits)
    assert record.heldout["largest_top1"] > 0.2  # chance: 0.1
    images, labels = score_split(digits)
    largest = largest_and_smallest(space)[0]
    result = score(largest, digits, _weights(spec), images, labels)
    assert result["value"] == pytest.approx(record.heldout["largest_top1"], abs=1e-4)


def test_a_search_report_and_pareto_json_say_where_each_accuracy_comes_from(
        tmp_path, fast_device_file, capsys):
    space = _space_file(tmp_path)
    out = tmp_path / "out"
    assert main(["search", "--space", str(space), "--device", str(fast_device_file),
                 "--accuracy", "supernet:digits@3steps", "--trials", "3", "--out", str(out),
                 "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "training the supernet of space 'tiny' on digits (3steps, seed 0) once" in err
    assert "supernet trained: 3 steps" in err
    front = json.loads((out / "pareto.json").read_text())
    trained = json.loads((out / "trials.json").read_text())["metadata"]["accuracy_source"]
    key = trained["supernet"]["key"]
    assert front and all(entry["accuracy"]["estimator"] == "supernet:digits@3steps" and
                         entry["accuracy"]["supernet"]["key"] == key and
                         len(entry["accuracy"]["supernet"]["weights_sha256"]) == 64 and
                         "accuracy_rank_checks" in entry for entry in front)
    page = (out / "report.html").read_text()
    assert f"Supernet <code>{key}</code>" in page and "scored as measured" in page
    # a second search (another budget) reuses it: nothing is trained
    assert main(["search", "--space", str(space), "--device", str(fast_device_file),
                 "--accuracy", "supernet:digits@3steps", "--trials", "2", "--out",
                 str(tmp_path / "again"), "--budget", "10mparams", "--quiet"]) == 0
    assert "training the supernet" not in capsys.readouterr().err
