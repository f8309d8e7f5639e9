"""Feeding the training loop: a global-batch sampler and two loaders with the same contract.

Every step ``s`` of epoch ``e`` reads the global batch ``perm_e[s*G:(s+1)*G]`` (``perm_e`` a permutation seeded by
``(seed, e)``) and rank ``r`` of ``W`` takes its contiguous ``G/W`` slice. Augmentation randomness is a function of
``(seed, e, s)`` (memory loader) or ``(seed, e, sample index)`` (stream loader), never of worker scheduling. So a run
resumed at step ``s`` sees exactly the batches an uninterrupted run would, and ``W`` processes with per-device batch
``G/W`` see exactly what one process with batch ``G`` sees.

- :class:`MemoryLoader`: the whole split decoded once into a uint8 tensor on the training device (CIFAR: 150 MB),
  augmented a batch at a time on that device: the GPU is never starved by JPEG decoding. The decoded split is cached.
- :class:`StreamLoader`: torch DataLoader workers decoding files (ImageNet-sized folders), per-sample augmentation.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Sampler

from ..data.datasets import DatasetError, ImageDataset
from ..data.images import ImageError
from ..data.transforms import EvalPreprocess, TrainAugment, batch_pad_crop_flip

__all__ = ["GlobalBatchSampler", "MemoryLoader", "MixedSizesError", "StreamLoader", "decode_to_memory", "mix_seed"]

log = logging.getLogger("mobilezoo.train")


class MixedSizesError(DatasetError):
    """Images of several sizes cannot be held as one tensor (``data_mode=memory``); ``auto`` streams them instead."""


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across processes and runs)."""
    h = hashlib.blake2b(b",".join(str(int(p)).encode() for p in parts), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


@dataclass
class GlobalBatchSampler(Sampler[list[int]]):
    n: int
    global_batch: int
    seed: int = 0
    rank: int = 0
    world: int = 1
    shuffle: bool = True
    drop_last: bool = True
    epoch: int = 0
    start_step: int = 0
    stop_step: int | None = None
    """the epoch ends before this step (a run of ``total_steps`` ends inside its last epoch); None: in full"""

    def __post_init__(self) -> None:
        if self.global_batch % self.world:
            raise ValueError(f"global batch {self.global_batch} is not divisible by the world size {self.world}")
        if self.drop_last and self.n < self.global_batch:
            raise DatasetError(f"only {self.n} samples: fewer than one global batch of {self.global_batch}")

    def __len__(self) -> int:
        return max(0, self.end_step() - self.start_step)

    def steps_per_epoch(self) -> int:
        return self.n // self.global_batch if self.drop_last else math.ceil(self.n / self.global_batch)

    def end_step(self) -> int:
        """The step this epoch ends before: :meth:`steps_per_epoch`, or ``stop_step`` where that is earlier."""
        full = self.steps_per_epoch()
        return full if self.stop_step is None else min(full, self.stop_step)

    def order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(mix_seed(self.seed, self.epoch)))

    def __iter__(self) -> Iterator[list[int]]:
        perm = self.order()
        per = self.global_batch // self.world
        for s in range(self.start_step, self.end_step()):
            g = perm[s * self.global_batch : (s + 1) * self.global_batch]
            if len(g) < self.global_batch:  # last partial (eval only): split as evenly as possible
                yield g.tensor_split(self.world)[self.rank].tolist()
            else:
                yield g[self.rank * per : (self.rank + 1) * per].tolist()


def _dataset_key(ds: ImageDataset, size: tuple[int, int] | None) -> str:
    h = hashlib.sha1(f"{ds.source}|{size}|{len(ds)}".encode())
    for path, label in ds.samples:
        st = Path(path).stat()
        h.update(f"{path}|{label}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def decode_to_memory(
    ds: ImageDataset, *, geometry: EvalPreprocess | None = None, progress: bool = True, cache: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every sample of ``ds`` to one uint8 ``N x 3 x H x W`` tensor (+ int64 labels), cached on disk.

    All images must have one size (after ``geometry``, the eval resize/crop, if given). Unreadable files are reported
    and left out.
    """
    if ds.arrays is not None and geometry is None:
        return torch.from_numpy(ds.arrays), torch.from_numpy(ds.labels)
    from safetensors.torch import load_file, save_file

    from ..weights.hub import cache_dir

    size = (geometry.resize_short, geometry.crop_size) if geometry else None
    path = cache_dir() / "datasets" / f"{_dataset_key(ds, size)}.safetensors" if ds.samples else None
    if cache and path is not None and path.is_file():
        d = load_file(str(path))
        return d["images"], d["labels"]

    def one(i: int):
        try:
            img, label = ds.read(i)
        except ImageError as e:
            log.warning("skipping unreadable image: %s", e)
            return None
        return (geometry.geometry(img) if geometry else img), label

    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=4) as pool:
        it = pool.map(one, range(len(ds)), chunksize=64)
        items = [r for r in tqdm(it, total=len(ds), desc=f"decoding {ds.source}", disable=not progress, leave=False)]
    items = [r for r in items if r is not None]
    if not items:
        raise DatasetError(f"{ds.source}: none of its {len(ds)} images could be read")
    shapes = {tuple(t.shape) for t, _ in items}
    if len(shapes) != 1:
        raise MixedSizesError(f"{ds.source}: images of several sizes {sorted(shapes)[:3]}...: use data_mode=stream")
    images = torch.stack([t for t, _ in items])
    labels = torch.tensor([lbl for _, lbl in items], dtype=torch.int64)
    if cache and path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({"images": images, "labels": labels}, str(tmp))
        tmp.replace(path)
    return images, labels


class MemoryLoader:
    """Batches from a uint8 tensor held on ``device``; train batches augmented on the device (pad-crop-flip)."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        sampler: GlobalBatchSampler,
        normalize: EvalPreprocess,
        *,
        device: torch.device,
        train: bool,
        crop: int,
        channels_last: bool = False,
    ) -> None:
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.sampler, self.normalize, self.device, self.train, self.crop = sampler, normalize, device, train, crop
        self.channels_last = channels_last
        self.skipped = 0
        """unreadable images left out when the split was decoded (set by the eval loader's builder)"""
        self.mean = torch.tensor(normalize.mean, device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(normalize.std, device=device).view(1, -1, 1, 1) * 255

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        s = self.sampler
        perm = s.order()
        per = s.global_batch // s.world
        for step in range(s.start_step, s.end_step()):
            g = perm[step * s.global_batch : (step + 1) * s.global_batch]
            if self.train:
                gen = torch.Generator(device="cpu").manual_seed(mix_seed(s.seed, s.epoch, step, 7))
                x = self.images[g.to(self.device)]
                x = batch_pad_crop_flip(x, self.crop, gen)  # randomness drawn for the whole global batch
                lo, hi = s.rank * per, (s.rank + 1) * per
                x, y = x[lo:hi], self.labels[g[lo:hi].to(self.device)]
            else:
                idx = (
                    g.tensor_split(s.world)[s.rank] if len(g) < s.global_batch else g[s.rank * per : (s.rank + 1) * per]
                )
                x, y = self.images[idx.to(self.device)], self.labels[idx.to(self.device)]
            x = (x.float() - self.mean) / self.std  # == EvalPreprocess.normalize, batched on the device
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y


class StreamLoader:
    """torch DataLoader over files; per-sample augmentation seeded by (seed, epoch, index)."""

    def __init__(
        self,
        ds: ImageDataset,
        sampler: GlobalBatchSampler,
        transform,
        *,
        device: torch.device,
        workers: int = 2,
        channels_last: bool = False,
    ) -> None:
        self.ds, self.sampler, self.device, self.workers = ds, sampler, device, workers
        self.channels_last = channels_last
        self.skipped = 0
        """unreadable images left out (``ds.skip_unreadable``), counted over the last pass"""
        ds.transform = transform

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        seed, epoch = self.sampler.seed, self.sampler.epoch
        self.ds.seed_fn = _SeedFn(seed, epoch) if isinstance(self.ds.transform, TrainAugment) else None
        dl = DataLoader(
            self.ds,
            batch_sampler=self.sampler,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            generator=torch.Generator().manual_seed(mix_seed(seed, epoch, 3)),  # leaves the global RNG alone
            collate_fn=_collate_readable if self.ds.skip_unreadable else None,
        )
        self.skipped = 0
        for batch in dl:
            x, y = batch[0], batch[1]
            if self.ds.skip_unreadable:
                self.skipped += batch[2]
                if x is None:
                    continue
            x = x.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=True)


def _collate_readable(items: list) -> tuple[torch.Tensor | None, torch.Tensor | None, int]:
    """Collate the readable samples of a batch; the third element counts the unreadable ones (None)."""
    from torch.utils.data import default_collate

    ok = [it for it in items if it is not None]
    if not ok:
        return None, None, len(items)
    x, y = default_collate(ok)
    return x, y, len(items) - len(ok)


@dataclass(frozen=True)
class _SeedFn:  # picklable for worker processes
    seed: int
    epoch: int

    def __call__(self, index: int) -> int:
        return mix_seed(self.seed, self.epoch, index)
