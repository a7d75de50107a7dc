"""A pretrained checkpoint scored on your validation images: the evaluation transform, the
stratified subset, Δtop-1 with a paired CI, and one-line refusals of unusable images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from harness.accuracy.validation import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    load_validation_images,
    stratified_subset,
)
from harness.cli import main
from harness.config import CandidateConfig
from harness.errors import ConfigError
from harness.models import build_model

SMALL = CandidateConfig(embed_dim=32, depth=2, num_heads=2, head_dim=16, mlp_ratio=2.0,
                        img_size=32, patch_size=8, num_classes=3)


@pytest.fixture
def digit_folder(tmp_path):
    """Real images: scikit-learn's 8×8 digits 0, 1 and 2 written as PNGs, 8 of each."""
    digits = load_digits()
    root = tmp_path / "val"
    for label in range(3):
        folder = root / f"n0000000{label}"
        folder.mkdir(parents=True)
        for index in np.flatnonzero(digits.target == label)[:8]:
            pixels = (digits.images[index] * 255 / 16).astype(np.uint8)
            Image.fromarray(pixels).resize((40, 48)).save(folder / f"{index}.png")
    return root


def _checkpoint(folder, path):
    """A tiny model trained for a few steps on the folder's images: a real checkpoint."""
    data = load_validation_images(f"imagefolder:{folder}", 100, EvalTransform(img_size=32))
    model = build_model(SMALL, seed=1).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(5):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(data.images), data.labels).backward()
        optimizer.step()
    torch.save({"model": model.state_dict()}, path)


def test_the_eval_transform_resizes_crops_and_normalises_as_timm():
    transform = EvalTransform(img_size=32)
    image = Image.new("RGB", (64, 40), (255, 128, 0))
    tensor = transform(image)
    assert tensor.shape == (3, 32, 32)
    expected = [(value / 255 - mean) / std
                for value, mean, std in zip((255, 128, 0), IMAGENET_MEAN, IMAGENET_STD)]
    assert torch.allclose(tensor.mean(dim=(1, 2)), torch.tensor(expected), atol=1e-5)
    # the shorter side goes to floor(32 / 0.875) = 36 and the centre is kept: a left band
    # narrower than the crop's margin disappears
    banded = Image.new("RGB", (64, 40), (0, 0, 0))
    banded.paste((255, 255, 255), (0, 0, 8, 40))  # 8 of 64 px → 7 of 57, the margin is 12
    black = (0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    assert torch.allclose(transform(banded)[0], torch.full((32, 32), black), atol=1e-5)


def test_the_subset_is_seeded_and_as_stratified_as_the_classes_allow(tmp_path):
    pairs = ([(tmp_path / f"a{i}", 0) for i in range(6)] + [(tmp_path / f"b{i}", 1) for i in range(6)]
             + [(tmp_path / f"c{i}", 2) for i in range(2)])
    subset = stratified_subset(pairs, 9, seed=0)
    assert sorted(np.bincount([label for _, label in subset])) == [2, 3, 4]
    assert stratified_subset(pairs, 9, seed=0) == subset
    assert stratified_subset(pairs, 9, seed=1) != subset
    assert stratified_subset(pairs, 100, seed=0) == pairs


def test_knobs_off_score_exactly_the_checkpoint_and_on_they_give_a_paired_delta(
        digit_folder, tmp_path, capsys):
    weights = tmp_path / "tiny.pth"
    _checkpoint(digit_folder, weights)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(SMALL.replace(num_classes=1000).to_dict()))
    command = ["measure", "--config", str(config), "--weights", str(weights), "--data",
               f"imagefolder:{digit_folder}", "--val-images", "12", "--no-latency", "--json"]
    assert main(command) == 0
    accuracy = json.loads(capsys.readouterr().out)["accuracy"]
    assert accuracy["heldout_images"] == 12 and accuracy["data"]["available"] == 24
    assert accuracy["data"]["classes"] == 3 and accuracy["weights"]["num_classes"] == 3
    assert accuracy["top1"] == accuracy["baseline_top1"] and accuracy["delta_top1"] == 0
    assert accuracy["ci95"] == [0, 0]
    assert main([*command, "--set", "merge_r=4", "--set", "precision=int8"]) == 0
    merged = json.loads(capsys.readouterr().out)["accuracy"]
    assert merged["baseline_top1"] == accuracy["baseline_top1"]
    assert merged["delta_top1"] == pytest.approx(merged["top1"] - merged["baseline_top1"])
    assert merged["ci95"][0] <= merged["delta_top1"] <= merged["ci95"][1]
    assert main(command[:-1]) == 0  # the text form says it too
    assert "Δ top-1     +0.00 points against the unmodified checkpoint" in capsys.readouterr().out


def test_a_file_list_names_images_and_labels(digit_folder, tmp_path):
    listing = digit_folder / "val.txt"
    lines = [f"{path.relative_to(digit_folder)} {path.parent.name[-1]}"
             for path in sorted(digit_folder.rglob("*.png"))]
    listing.write_text("# path label\n" + "\n".join(lines) + "\n")
    from_list = load_validation_images(f"filelist:{listing}", 12, EvalTransform(img_size=32))
    from_folder = load_validation_images(f"imagefolder:{digit_folder}", 12,
                                         EvalTransform(img_size=32))
    assert torch.equal(from_list.labels, from_folder.labels)
    assert torch.equal(from_list.images, from_folder.images)


def _break(kind, folder):
    if kind == "empty class":
        (folder / "n00000005").mkdir()
    elif kind == "unreadable image":
        (folder / "n00000001" / "broken.png").write_bytes(b"not a png")
    elif kind == "one class":
        for sub in ("n00000001", "n00000002"):
            for file in (folder / sub).iterdir():
                file.unlink()
            (folder / sub).rmdir()
    return f"imagefolder:{folder}"


@pytest.mark.parametrize("kind, message", [
    ("empty class", (r"class folder 'n00000005' holds no images .*; every later class's index "
                    r"would shift \(1 empty\)$")),
    ("unreadable image", r"cannot read .*n00000001/broken\.png: "),
    ("one class", r"needs a sub-folder of images per class, at least 2, found 1$"),
])
def test_unusable_validation_images_are_one_line(kind, message, digit_folder):
    with pytest.raises(ConfigError, match=message) as raised:
        load_validation_images(_break(kind, digit_folder), 100, EvalTransform(img_size=32))
    assert "\n" not in str(raised.value)


def test_bad_validation_options_are_one_line_exit_2(digit_folder, tmp_path, capsys):
    weights = tmp_path / "tiny.pth"
    _checkpoint(digit_folder, weights)
    listing = tmp_path / "bad.txt"
    listing.write_text("a.png 0\nb.png\n")
    base = ["measure", "--config", str(tmp_path / "tiny.json"), "--no-latency"]
    (tmp_path / "tiny.json").write_text(json.dumps(SMALL.to_dict()))
    for extra, message in [
        (["--data", f"imagefolder:{digit_folder}"], ("--data scores a pretrained checkpoint: "
                                                     "give its --weights PATH too")),
        (["--weights", str(weights), "--data", f"filelist:{listing}"],
         "line 2: expected 'PATH LABEL' with a label of 0 or more, got 'b.png'"),
        (["--weights", str(weights), "--data", f"imagefolder:{digit_folder}", "--crop-pct", "2"],
         "--crop-pct must be in (0, 1], got 2.0"),
        (["--weights", str(weights), "--data", "cifar"], "expected imagefolder:PATH"),
    ]:
        assert main([*base, *extra]) == 2
        error = capsys.readouterr().err.strip()
        assert error.count("\n") == 0 and message in error, error


KNOB_SPACE = """\
schema_version: 1
name: tiny_knobs
description: the tiny checkpoint's architecture, with the knobs that need no training
params:
  embed_dim: 32
  depth: 2
  num_heads: 2
  mlp_ratio: 2.0
  head_dim: 16
  patch_size: 8
  img_size: 32
  num_classes: 1000
  merge_r: {choices: [0, 2, 4], per_layer: true}
  precision: [fp32, int8]
"""


def test_a_training_free_search_scores_every_candidate_against_the_checkpoint(
        digit_folder, fast_device_file, tmp_path):
    weights = tmp_path / "tiny.pth"
    _checkpoint(digit_folder, weights)
    space = tmp_path / "knobs.yaml"
    space.write_text(KNOB_SPACE)
    out = tmp_path / "out"
    assert main(["search", "--space", str(space), "--device", str(fast_device_file),
                 "--weights", str(weights), "--data", f"imagefolder:{digit_folder}",
                 "--val-images", "12", "--trials", "4", "--out", str(out), "--quiet"]) == 0
    trials = json.loads((out / "trials.json").read_text())
    accuracies = [t["accuracy"] for t in trials["trials"] if t["state"] == "COMPLETE"]
    assert len(accuracies) == 4
    baseline = accuracies[0]["baseline_top1"]
    assert all(a["baseline_top1"] == baseline and a["heldout_images"] == 12 and
               a["ci95"][0] <= a["delta_top1"] <= a["ci95"][1] and
               a["delta_top1"] == pytest.approx(a["top1"] - baseline) for a in accuracies)
    report = (out / "report.html").read_text()
    sha256 = accuracies[0]["weights"]["sha256"]
    assert "Latency against the change of top-1" in report and sha256 in report


def test_a_search_with_weights_refuses_a_space_that_needs_training(
        digit_folder, tiny_space_file, fast_device_file, tmp_path, capsys):
    weights = tmp_path / "tiny.pth"
    _checkpoint(digit_folder, weights)
    base = ["search", "--device", str(fast_device_file), "--weights", str(weights),
            "--out", str(tmp_path / "out")]
    assert main([*base, "--space", str(tiny_space_file), "--data",
                 f"imagefolder:{digit_folder}"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and (
        "--weights keeps the checkpoint's architecture, and space tiny varies embed_dim, depth, "
        "num_heads, mlp_ratio, which would need training") in error
    space = tmp_path / "knobs.yaml"
    space.write_text(KNOB_SPACE)
    assert main([*base, "--space", str(space)]) == 2
    assert "give --data imagefolder:PATH" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_rank_check_against_a_checkpoints_accuracy_on_your_images(digit_folder, tmp_path, capsys):
    weights = tmp_path / "tiny.pth"
    _checkpoint(digit_folder, weights)
    space = tmp_path / "knobs.yaml"
    space.write_text(KNOB_SPACE)
    command = ["rank-check", "--space", str(space), "--weights", str(weights), "--n", "4",
               "--accuracy", "proxy:naswot", "--json"]
    assert main([*command, "--data", f"imagefolder:{digit_folder}", "--val-images", "12"]) == 0
    check = json.loads(capsys.readouterr().out)
    assert check["reference"] == f"pretrained:imagefolder:{digit_folder}"
    assert check["noise_ceiling"] is None  # the checkpoint's top-1 has no seed to vary
    references = [point["scores"][check["reference"]] for point in check["points"]]
    assert all(score["heldout_images"] == 12 and "delta_top1" in score for score in references)
    assert main([*command, "--data", f"imagefolder:{digit_folder}", "--reference",
                 "train:digits"]) == 2
    assert "give its --weights PATH, and no --reference" in capsys.readouterr().err
