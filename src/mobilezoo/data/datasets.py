"""Labelled image datasets for training and evaluation, in three on-disk layouts.

- **ImageFolder** trees (ImageNet layout): ``root/<class>/<image>`` (``root`` being ``train/``, ``val/`` or ``test/``);
- **PaddleClas file lists**: a text file of ``relative/path.jpg label`` lines, paths relative to a root folder;
- **torchvision's CIFAR-10/100 python batches** (``cifar-10-batches-py/``, ``cifar-100-python/``), read with the
  project's restricted unpickler (numpy arrays and plain containers only).

Every dataset yields ``(uint8 CHW tensor, label)`` and keeps its class names. A file that cannot be decoded is
reported once (which file, why); for training it is replaced by the next readable sample, so a long run does not
stop; for evaluation (``skip_unreadable``) it yields None and the loader leaves it out and counts it, so no image is
counted twice. A dataset with no readable file left fails with a clear error. :func:`open_split` finds a split of a
dataset root in any layout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as F

from .images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, ImageError, load_image

__all__ = [
    "DatasetError",
    "ImageDataset",
    "SplitNotFoundError",
    "open_split",
    "read_cifar_batches",
    "read_file_list",
    "scan_image_folder",
    "scan_unlabeled",
]

log = logging.getLogger("mobilezoo.data")

TRAIN_SPLITS = ("train",)
EVAL_SPLITS = ("val", "test", "validation")


class DatasetError(ValueError):
    """A dataset that cannot be used (missing, empty, malformed, or with no readable image)."""


class SplitNotFoundError(DatasetError):
    pass


@dataclass
class ImageDataset(Dataset):
    """Samples as ``(path, label)`` pairs or as an in-memory uint8 ``N x 3 x H x W`` array (CIFAR batches).

    ``transform`` maps a uint8 CHW tensor to the training/eval tensor; ``seed_fn(index)`` (set by the training loop)
    seeds the random augmentation of each sample, which makes runs reproducible whatever the worker that loads it.
    """

    samples: list[tuple[str, int]] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    arrays: np.ndarray | None = None
    labels: np.ndarray | None = None
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    source: str = ""
    seed_fn: Callable[[int], int] | None = None
    skip_unreadable: bool = False
    """evaluation: an unreadable sample is None (left out and counted by the loader), never another sample"""
    _bad: set[int] = field(default_factory=set, repr=False)

    def __len__(self) -> int:
        return len(self.arrays) if self.arrays is not None else len(self.samples)

    @property
    def targets(self) -> list[int]:
        if self.labels is not None:
            return [int(v) for v in self.labels]
        return [lbl for _, lbl in self.samples]

    def read(self, index: int) -> tuple[torch.Tensor, int]:
        """The raw uint8 CHW image and label of one sample; :class:`ImageError` if it cannot be decoded."""
        if self.arrays is not None:
            return torch.from_numpy(np.ascontiguousarray(self.arrays[index])), int(self.labels[index])
        path, label = self.samples[index]
        return F.pil_to_tensor(load_image(path, max_pixels=self.max_pixels)), label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        if self.skip_unreadable:
            try:
                img, label = self.read(index)
            except ImageError as e:
                log.warning("skipping unreadable image: %s", e)
                return None
            return (self.transform(img) if self.transform is not None else img), label
        n = len(self)
        for attempt in range(n):
            i = (index + attempt) % n
            if i in self._bad:
                continue
            try:
                img, label = self.read(i)
            except ImageError as e:
                self._bad.add(i)
                log.warning("skipping unreadable training image: %s", e)
                continue
            if self.transform is not None:
                if self.seed_fn is not None:  # augmentation seeded per sample, global RNG left untouched
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(self.seed_fn(index))
                        img = self.transform(img)
                else:
                    img = self.transform(img)
            return img, label
        raise DatasetError(f"{self.source or 'dataset'}: none of its {n} images could be read")


def scan_image_folder(root: str | Path) -> tuple[list[tuple[str, int]], list[str]]:
    """``root/<class>/**/<image>`` -> samples and sorted class names (torchvision's ImageFolder convention)."""
    root = Path(root)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DatasetError(f"{root}: no class folders (expected {root}/<class>/<image>)")
    samples = []
    for idx, c in enumerate(classes):
        files = sorted(p for p in (root / c).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        samples += [(str(p), idx) for p in files]
    if not samples:
        raise DatasetError(f"{root}: class folders hold no image files ({', '.join(IMAGE_SUFFIXES)})")
    return samples, classes


def scan_unlabeled(folders: Sequence[str | Path]) -> list[tuple[str, int]]:
    """Every image under the folders, with label -1 (for distillation on unlabeled data)."""
    out = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise DatasetError(f"unlabeled data folder not found: {folder}")
        out += [(str(p), -1) for p in sorted(folder.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not out:
        raise DatasetError(f"no image files under {', '.join(map(str, folders))}")
    return out


def read_file_list(list_file: str | Path, root: str | Path | None = None) -> list[tuple[str, int]]:
    """PaddleClas's ``relative/path.jpg label`` lines (paths relative to ``root``, default the list's folder)."""
    list_file = Path(list_file)
    root = Path(root) if root is not None else list_file.parent
    samples = []
    for n, line in enumerate(list_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DatasetError(f"{list_file}:{n}: expected 'relative/path.jpg label', got {line!r}")
        samples.append((str(root / parts[0]), int(parts[1])))
    if not samples:
        raise DatasetError(f"{list_file}: empty file list")
    return samples


def read_cifar_batches(folder: str | Path, train: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """torchvision's CIFAR-10/100 python format -> (uint8 N x 3 x 32 x 32, labels, class names)."""
    folder = Path(folder)
    if (folder / "batches.meta").is_file():  # CIFAR-10
        files = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        meta, label_key, names_key = folder / "batches.meta", b"labels", b"label_names"
    elif (folder / "meta").is_file():  # CIFAR-100
        files = ["train"] if train else ["test"]
        meta, label_key, names_key = folder / "meta", b"fine_labels", b"fine_label_names"
    else:
        raise DatasetError(f"{folder}: not a CIFAR python-batches folder (no batches.meta or meta)")

    from .safe_pickle import RestrictedUnpickler  # CIFAR batches: dicts, lists, bytes and numpy arrays only

    def load(p: Path) -> dict:
        with p.open("rb") as f:
            return RestrictedUnpickler(f, encoding="bytes").load()

    xs, ys = [], []
    for name in files:
        d = load(folder / name)
        xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(d[label_key], dtype=np.int64))
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in load(meta)[names_key]]
    return np.concatenate(xs), np.concatenate(ys), names


def open_split(
    root: str | Path,
    split: str = "train",
    *,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ImageDataset:
    """The ``split`` ("train" or "eval") of a dataset root in any supported layout.

    - ``root/train/<class>/...`` and ``root/val|test/<class>/...`` (ImageFolder);
    - ``root/train_list.txt`` / ``root/val_list.txt`` (PaddleClas file lists, paths relative to ``root``);
    - ``root/cifar-10-batches-py`` or ``root`` itself holding CIFAR python batches.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    train = split == "train"
    names = TRAIN_SPLITS if train else EVAL_SPLITS
    for cand in (root, root / "cifar-10-batches-py", root / "cifar-100-python"):
        if (cand / "batches.meta").is_file() or ((cand / "meta").is_file() and (cand / "train").is_file()):
            x, y, classes = read_cifar_batches(cand, train)
            return ImageDataset(arrays=x, labels=y, class_names=classes, transform=transform, source=str(cand))
    for s in names:
        lst = root / f"{s}_list.txt"
        if lst.is_file():
            samples = read_file_list(lst, root)
            labels_file = root / "label_list.txt"
            n_cls = max(lbl for _, lbl in samples) + 1
            classes = _read_label_names(labels_file, n_cls) if labels_file.is_file() else [str(i) for i in range(n_cls)]
            return ImageDataset(samples, classes, transform=transform, max_pixels=max_pixels, source=str(lst))
    for s in names:
        d = root / s
        if d.is_dir():
            samples, classes = scan_image_folder(d)
            return ImageDataset(samples, classes, transform=transform, max_pixels=max_pixels, source=str(d))
    want = " or ".join(f"{root}/{s}/" for s in names)
    raise SplitNotFoundError(f"{root}: no {split} split found (looked for {want}, *_list.txt, CIFAR batches)")


def _read_label_names(path: Path, n: int) -> list[str]:
    """PaddleClas ``label_list.txt``: ``index name`` per line."""
    names = [str(i) for i in range(n)]
    for line in path.read_text().splitlines():
        parts = line.split(maxsplit=1)
        if len(parts) == 2 and parts[0].isdigit() and int(parts[0]) < n:
            names[int(parts[0])] = parts[1]
    return names
