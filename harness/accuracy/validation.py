"""Your own validation images, for scoring a pretrained checkpoint (``--weights`` with ``--data``).

* ``imagefolder:PATH``: one sub-folder per class, as ImageNet's val layout after the usual
  ``valprep`` step; classes are the sub-folders in sorted order, which is how timm and torchvision
  number ImageNet's classes, so a checkpoint's head lines up. An empty class folder is refused:
  skipping it would shift every later class's index.
* ``filelist:FILE``: one ``PATH LABEL`` per line (whitespace or a comma between them), paths
  relative to the file's folder, labels the head's class indices.

A fixed, seeded, class-stratified subset of ``--val-images`` images (default 2,000) is decoded
once, with progress, through timm's default evaluation transform (resize the shorter side to
``img_size / crop_pct`` bicubically, centre-crop ``img_size``, normalise with ImageNet's mean and
standard deviation) and the same tensors score every candidate.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from harness.accuracy.datasets import IMAGE_SUFFIXES
from harness.errors import ConfigError, FileError, shorten
from harness.files import check_readable_file, read_text

DEFAULT_VAL_IMAGES = 2000
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROGRESS_EVERY = 250  # decoded images between two progress lines
_LIST_LINE = re.compile(r"\s*(?P<path>.+?)\s*[,\s]\s*(?P<label>-?\d+)\s*")


@dataclass(frozen=True)
class EvalTransform:
    """timm's default evaluation transform (``resolve_data_config`` of a DeiT or ViT)."""

    img_size: int = 224
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __call__(self, image) -> torch.Tensor:
        from PIL import Image

        resample = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
                    "nearest": Image.Resampling.NEAREST}[self.interpolation]
        image = image.convert("RGB")
        scale = math.floor(self.img_size / self.crop_pct)
        width, height = image.size
        if width <= height:
            size = (scale, int(scale * height / width))
        else:
            size = (int(scale * width / height), scale)
        image = image.resize(size, resample)
        left = round((size[0] - self.img_size) / 2.0)
        top = round((size[1] - self.img_size) / 2.0)
        image = image.crop((left, top, left + self.img_size, top + self.img_size))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (pixels - mean) / std


@dataclass(frozen=True)
class ValidationImages:
    """The decoded subset: images N×3×S×S, normalised; labels the head's class indices."""

    source: str
    images: torch.Tensor
    labels: torch.Tensor
    available: int  # images the source lists, before the subset
    classes: int
    transform: EvalTransform

    def describe(self) -> dict:
        return {"source": self.source, "images": len(self.labels), "available": self.available,
                "classes": self.classes, "transform": asdict(self.transform)}


def list_images(spec: str) -> tuple[list[tuple[Path, int]], int]:
    """The (file, label) pairs ``spec`` names and its number of classes; one line if unusable."""
    kind, _, argument = spec.partition(":")
    if kind == "imagefolder" and argument:
        return _image_folder(spec, Path(argument))
    if kind == "filelist" and argument:
        return _file_list(spec, Path(argument))
    raise ConfigError(f"--data {shorten(spec)}: expected imagefolder:PATH (one sub-folder per "
                      "class) or filelist:FILE (lines 'PATH LABEL')")


def _image_folder(spec: str, folder: Path) -> tuple[list[tuple[Path, int]], int]:
    if not folder.is_dir():
        raise ConfigError(f"--data {shorten(spec)}: not a directory")
    try:
        classes = sorted(sub for sub in folder.iterdir() if sub.is_dir())
        files = {sub: sorted(f for f in sub.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
                 for sub in classes}
    except OSError as error:
        raise ConfigError(f"--data {shorten(spec)}: cannot list {error.filename or folder} "
                          f"({error.strerror})") from None
    if len(classes) < 2:
        raise ConfigError(f"--data {shorten(spec)}: needs a sub-folder of images per class, at "
                          f"least 2, found {len(classes)}")
    empty = [sub.name for sub in classes if not files[sub]]
    if empty:
        raise ConfigError(f"--data {shorten(spec)}: class folder {shorten(empty[0])} holds no "
                          f"images ({', '.join(s.lstrip('.') for s in IMAGE_SUFFIXES)}); every "
                          f"later class's index would shift ({len(empty)} empty)")
    return [(file, label) for label, sub in enumerate(classes) for file in files[sub]], len(classes)


def _file_list(spec: str, listing: Path) -> tuple[list[tuple[Path, int]], int]:
    pairs = []
    for number, line in enumerate(read_text(listing, "image list").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LIST_LINE.fullmatch(line)
        if match is None or int(match["label"]) < 0:
            raise ConfigError(f"--data {shorten(spec)}: line {number}: expected 'PATH LABEL' "
                              f"with a label of 0 or more, got {shorten(line)}")
        pairs.append((listing.parent / match["path"], int(match["label"])))
    if len({label for _, label in pairs}) < 2:
        raise ConfigError(f"--data {shorten(spec)}: needs images of at least 2 classes")
    return pairs, max(label for _, label in pairs) + 1


def stratified_subset(pairs: list[tuple[Path, int]], n: int, seed: int) -> list[tuple[Path, int]]:
    """``n`` pairs (all, if fewer), the classes as evenly represented as their sizes allow: each
    class's images in a seeded order, taken round-robin across classes."""
    if n >= len(pairs):
        return list(pairs)
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[tuple[Path, int]]] = {}
    for pair in pairs:
        by_class.setdefault(pair[1], []).append(pair)
    queues = [[members[i] for i in rng.permutation(len(members))]
              for _, members in sorted(by_class.items())]
    chosen: list[tuple[Path, int]] = []
    depth = 0
    while len(chosen) < n:
        for queue in queues:
            if depth < len(queue) and len(chosen) < n:
                chosen.append(queue[depth])
        depth += 1
    return sorted(chosen)


def load_validation_images(spec: str, n: int = DEFAULT_VAL_IMAGES,
                           transform: EvalTransform | None = None, seed: int = 0,
                           on_progress: Callable[[str], None] | None = None) -> ValidationImages:
    """Decode the seeded, stratified subset of ``spec`` once; an unreadable image is one line
    naming it."""
    from PIL import Image, UnidentifiedImageError

    if n < 1:
        raise ConfigError(f"--val-images must be at least 1, got {n}")
    transform = transform or EvalTransform()
    pairs, classes = list_images(spec)
    chosen = stratified_subset(pairs, n, seed)
    images = torch.empty(len(chosen), 3, transform.img_size, transform.img_size)
    for index, (file, _) in enumerate(chosen):
        try:
            check_readable_file(file, "image")  # Image.open would block on a FIFO
            with Image.open(file) as image:
                images[index] = transform(image)
        except (OSError, UnidentifiedImageError, FileError) as error:
            raise ConfigError(f"--data {shorten(spec)}: cannot read {file}: "
                              f"{shorten(str(error))}") from None
        if on_progress and ((index + 1) % PROGRESS_EVERY == 0 or index + 1 == len(chosen)):
            on_progress(f"decoding validation images: {index + 1}/{len(chosen)}")
    labels = torch.tensor([label for _, label in chosen], dtype=torch.int64)
    return ValidationImages(spec, images, labels, len(pairs), classes, transform)
