"""The training loop: one process or many (torchrun/DDP), exact resume, distillation.

``fit(TrainConfig(...))`` trains a zoo model on a dataset root with a recipe, writing into ``output``:
``last.ckpt`` (every epoch, and at an interrupt, with the position inside the epoch), ``best.ckpt`` (best eval top-1,
of the raw or the EMA weights), ``log.csv``, TensorBoard events (``tb/``) and ``recipe.toml``.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from ..data.datasets import DatasetError, ImageDataset, open_split, scan_unlabeled
from ..data.transforms import EvalPreprocess, TrainAugment, eval_preprocess
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .evaluate import EvalResult, evaluate
from .loader import GlobalBatchSampler, MemoryLoader, MixedSizesError, StreamLoader, decode_to_memory
from .losses import classification_loss, distill_loss
from .recipes import Recipe, RecipeError

if TYPE_CHECKING:
    from ..models.registry import ModelEntry

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "build_eval_loader",
    "cosine_progress",
    "fit",
]

log = logging.getLogger("mobilezoo.train")


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM (or ``max_steps``): the state was saved to ``last.ckpt``; ``--resume`` continues exactly."""

    def __init__(self, msg: str, checkpoint: Path) -> None:
        super().__init__(msg)
        self.checkpoint = checkpoint


class TrainingDiverged(RuntimeError):
    """A NaN/inf loss: training stopped; the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    model: str
    data: str | Path
    output: str | Path
    recipe: Recipe = field(default_factory=Recipe)
    pretrained: bool | str = False
    resume: str | Path | None = None
    device: str = "auto"
    max_steps: int | None = None
    """stop (as if interrupted: last.ckpt saved with the position) after this many optimizer steps in this run"""
    progress: bool = True
    tensorboard: bool = True
    model_transform: Callable[[nn.Module], nn.Module] | None = None
    """applied to the freshly built model before training (and before a resume loads its state), e.g. QAT's
    BatchNorm folding and fake quantization; the checkpoints hold the transformed model's state dict"""
    # distillation
    teacher: str | None = None
    teacher_ckpt: str | Path | None = None
    unlabeled: list[str] = field(default_factory=list)
    cache_teacher: bool = False


@dataclass
class TrainResult:
    output: Path
    best_top1: float
    last: Path
    best: Path | None
    history: list[dict[str, Any]]


def _device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    d = torch.device(name)
    if d.type == "cuda" and d.index is None:
        d = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return d


def _amp_dtype(recipe: Recipe, device: torch.device) -> torch.dtype | None:
    amp = recipe.amp
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "none"
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None, "fp32": None}[amp]


def _param_groups(model: nn.Module, recipe: Recipe) -> list[dict[str, Any]]:
    """Coupled L2 on everything, except BatchNorm's gamma/beta where PaddleClas sets L2Decay(0.0)."""
    if not recipe.no_bn_decay:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": recipe.weight_decay}]
    bn = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()}
    decay = [p for p in model.parameters() if p.requires_grad and id(p) not in bn]
    no_decay = [p for p in model.parameters() if p.requires_grad and id(p) in bn]
    return [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def cosine_progress(recipe: Recipe, it: int, warm: int, total: int) -> float:
    """How far the cosine has gone at step ``it`` (0 at the warm-up's end, 1 at ``total``); with a knot
    (``cosine_knot_step``, a re-fitted run) linear to ``cosine_knot_progress`` there, then linear to 1."""
    k, pk = recipe.cosine_knot_step, recipe.cosine_knot_progress
    if k > warm:
        if it < k:
            return pk * (it - warm) / (k - warm)
        return min(1.0, pk + (1 - pk) * (it - k) / max(1, total - k))
    return min(it - warm, total - warm) / max(1, total - warm)


def lr_factor(recipe: Recipe, steps_per_epoch: int):
    """Per-iteration lr multiplier: linear warmup from 0, then cosine to 0 (or piecewise by epoch)."""
    total = recipe.total_steps or recipe.epochs * steps_per_epoch
    warm = round(recipe.warmup_epochs * steps_per_epoch)

    def f(it: int) -> float:
        if it < warm:
            return it / warm
        if recipe.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * cosine_progress(recipe, it, warm, total)))
        if recipe.schedule == "piecewise":
            return recipe.gamma ** sum(it >= m * steps_per_epoch for m in recipe.milestones)
        if recipe.schedule == "constant":
            return 1.0
        raise ValueError(f"unknown lr schedule {recipe.schedule!r} (cosine, piecewise, constant)")

    return f


def _choose_mode(ds: ImageDataset, recipe: Recipe) -> str:
    if recipe.data_mode in ("memory", "stream"):
        return recipe.data_mode
    if recipe.data_mode != "auto":
        raise ValueError(f"data_mode must be auto, memory or stream, not {recipe.data_mode!r}")
    if ds.arrays is not None:
        return "memory"
    from PIL import Image

    try:
        with Image.open(ds.samples[0][0]) as im:
            w, h = im.size
    except OSError:
        return "stream"
    return "memory" if max(w, h) <= 64 and len(ds) * 3 * w * h <= 4 << 30 else "stream"


def build_eval_loader(
    ds: ImageDataset,
    pre: EvalPreprocess,
    mode: str,
    device: torch.device,
    channels_last: bool,
    batch: int = 256,
    progress: bool = True,
):
    """Batches of the whole split in order; unreadable images are left out and counted (``loader.skipped``), never
    replaced by another sample. ``progress``: the decoding bar of ``memory`` mode."""
    sampler = GlobalBatchSampler(len(ds), batch, shuffle=False, drop_last=False)
    if mode == "memory":
        images, labels = decode_to_memory(ds, geometry=pre, progress=progress)
        sampler.n = len(images)
        loader = MemoryLoader(
            images, labels, sampler, pre, device=device, train=False, crop=pre.crop_size, channels_last=channels_last
        )
        loader.skipped = len(ds) - len(images)
        return loader
    ds.skip_unreadable = True
    return StreamLoader(ds, sampler, pre, device=device, workers=2, channels_last=channels_last)


class _Stop:
    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # second signal: give up at once
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\nmobilezoo: {signal.Signals(signum).name}: saving a checkpoint after this step...", file=sys.stderr)

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


@dataclass
class _Dist:
    """Where this process runs: the world size, its rank and its device."""

    world: int
    rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass
class _Loaders:
    mode: str
    global_batch: int
    accum: int
    train_sampler: GlobalBatchSampler
    train_loader: Any
    eval_loader: Any
    steps_per_epoch: int


@dataclass
class _Optim:
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    ema: Any


@dataclass
class _Position:
    """Where training stands; what ``last.ckpt`` records and a resume restores."""

    start_epoch: int = 0
    start_step: int = 0
    global_step: int = 0
    best_top1: float = -1.0
    steps_this_run: int = 0
    epoch_so_far: dict[str, Any] | None = None
    """an epoch interrupted inside: its training time, images and loss before the stop (its log row counts them)"""


@dataclass
class _Run:
    """Everything one :func:`fit` call builds, and its position."""

    cfg: TrainConfig
    dist: _Dist
    out: Path
    class_names: list[str]
    num_classes: int
    model: nn.Module
    net: nn.Module
    teacher: nn.Module | None
    loaders: _Loaders
    optim: _Optim
    meta: dict[str, Any]
    pos: _Position
    teacher_cache: torch.Tensor | None
    writer: Any
    history: list[dict[str, Any]]
    bad: torch.Tensor

    @property
    def last_path(self) -> Path:
        return self.out / "last.ckpt"


@dataclass
class _EpochMeter:
    t0: float
    loss_sum: torch.Tensor
    seen: int = 0
    n_loss: int = 0

    @classmethod
    def start(cls, device: torch.device, so_far: dict[str, Any] | None = None) -> _EpochMeter:
        """A new epoch's meter, or one carrying on from an interrupted epoch's ``so_far`` (:meth:`so_far`)."""
        if not so_far:
            return cls(time.perf_counter(), torch.zeros((), device=device))
        loss = torch.tensor(so_far["loss_sum"], dtype=torch.float32, device=device)
        return cls(time.perf_counter() - so_far["time_s"], loss, so_far["seen"], so_far["n_loss"])

    def so_far(self) -> dict[str, Any]:
        """What a checkpoint saved inside the epoch keeps, so the resumed epoch's row covers the whole epoch."""
        return {"time_s": time.perf_counter() - self.t0, "seen": self.seen, "loss_sum": float(self.loss_sum),
                "n_loss": self.n_loss}  # fmt: skip


def fit(cfg: TrainConfig) -> TrainResult:
    run = _setup(cfg)
    with _Stop() as stop:
        for epoch in range(run.pos.start_epoch, cfg.recipe.epochs):
            row = _train_epoch(run, epoch, stop)
            _end_epoch(run, epoch, row)
    if run.writer is not None:
        run.writer.close()
    if stop.signum is not None:  # after the last step (the final evaluation or save): the run is complete, but the
        # caller (a study's next model, a script's next stage) must stop as asked, not carry on with the signal lost
        raise TrainingInterrupted(
            f"{signal.Signals(stop.signum).name}: arrived as training finished ({cfg.recipe.epochs} epochs); its "
            f"checkpoints are saved in {run.out} (--resume {run.last_path} has nothing left to train)",
            run.last_path,
        )
    best = run.out / "best.ckpt"
    return TrainResult(run.out, run.pos.best_top1, run.last_path, best if best.exists() else None, run.history)


# ---- set-up


def _setup(cfg: TrainConfig) -> _Run:
    """Device and process group, data, model (and teacher), loaders, optimisation, and the resumed position."""
    from ..models import get_entry

    recipe = cfg.recipe.validate()
    d = _init_distributed(cfg)
    out = Path(cfg.output)
    train_ds, val_ds = _open_data(cfg)
    class_names = train_ds.class_names
    num_classes = len(class_names)
    entry = get_entry(cfg.model)
    model_kwargs: dict[str, Any] = {"small_input": recipe.small_input}
    if recipe.drop_rate is not None:
        model_kwargs["drop_rate"] = recipe.drop_rate
    torch.manual_seed(recipe.seed)
    resume_ck = _load_resume(cfg, entry, num_classes)
    model, pre = _build_model(cfg, entry.name, num_classes, model_kwargs, resume_ck is not None, d.device)
    _check_crops(recipe, model, entry.name)
    teacher = _build_teacher(cfg, num_classes, model_kwargs, d.device)
    loaders = _build_loaders(cfg, train_ds, val_ds, pre, d)
    _check_total_steps(recipe, loaders.steps_per_epoch)
    optim = _build_optim(model, recipe, d.device, loaders)
    net = _wrap_model(model, recipe, d)
    pos = _Position()
    if resume_ck is not None:
        pos = _restore(resume_ck, model, optim, d.rank)
        if d.main:
            where = f"epoch {pos.start_epoch + 1}, step {pos.start_step}/{loaders.steps_per_epoch}"
            print(f"resumed from {cfg.resume}: {where}")
    meta = {
        "model_name": entry.name,
        "num_classes": num_classes,
        "class_names": class_names,
        "model_kwargs": model_kwargs,
        "default_cfg": {"resize_short": pre.resize_short, "crop_size": pre.crop_size},
        "recipe": recipe.to_dict(),
        "data": str(cfg.data),
        "data_mode": loaders.mode,
        "world_size": d.world,
    }
    if d.main:  # everything checked and built: the run starts, and only now has a folder
        out.mkdir(parents=True, exist_ok=True)
        (out / "recipe.toml").write_text(recipe.to_toml())
    teacher_cache = (
        _teacher_logits(teacher, train_ds, pre, d.device, out, loaders.mode) if teacher and cfg.cache_teacher else None
    )
    return _Run(
        cfg=cfg,
        dist=d,
        out=out,
        class_names=class_names,
        num_classes=num_classes,
        model=model,
        net=net,
        teacher=teacher,
        loaders=loaders,
        optim=optim,
        meta=meta,
        pos=pos,
        teacher_cache=teacher_cache,
        writer=_tb_writer(out) if d.main and cfg.tensorboard else None,
        history=_read_log(out / "log.csv") if resume_ck is not None and d.main else [],
        bad=torch.zeros((), dtype=torch.bool, device=d.device),
    )


def _check_crops(recipe: Recipe, model: nn.Module, name: str) -> None:
    """Crops below the network's smallest input (its total stride) would train on feature maps of padding."""
    from ..models.base import min_input_size

    m = min_input_size(model)
    for key in ("train_crop", "eval_crop"):
        if getattr(recipe, key) < m:
            hint = "" if recipe.small_input else " (small_input=true lowers it)"
            raise RecipeError(f"recipe field {key!r}: {getattr(recipe, key)} is below {name}'s minimum input of "
                              f"{m}x{m} pixels{hint}")  # fmt: skip


def _check_total_steps(recipe: Recipe, steps_per_epoch: int) -> None:
    """``total_steps`` must end inside the last epoch: more epochs would train past the schedule's end; a cosine
    knot must lie inside the cosine."""
    n = recipe.total_steps
    if n and not (recipe.epochs - 1) * steps_per_epoch < n <= recipe.epochs * steps_per_epoch:
        need = math.ceil(n / steps_per_epoch)
        raise RecipeError(f"recipe field 'total_steps': {n} steps at {steps_per_epoch} per epoch end in epoch {need}, "
                          f"not in epoch {recipe.epochs} (set epochs={need})")  # fmt: skip
    k, total = recipe.cosine_knot_step, n or recipe.epochs * steps_per_epoch
    if k and not round(recipe.warmup_epochs * steps_per_epoch) < k < total:
        raise RecipeError(f"recipe field 'cosine_knot_step': {k} must lie after the warm-up and before the last "
                          f"step ({total})")  # fmt: skip


def _init_distributed(cfg: TrainConfig) -> _Dist:
    """The device; under torchrun (``WORLD_SIZE`` > 1) the process group too (NCCL on CUDA, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = _device(cfg.device)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    if device.type == "cpu" and world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))
    return _Dist(world, rank, device)


def _open_data(cfg: TrainConfig) -> tuple[ImageDataset, ImageDataset]:
    train_ds = open_split(cfg.data, "train")
    val_ds = open_split(cfg.data, "eval")
    if cfg.unlabeled:
        if train_ds.arrays is not None:
            raise DatasetError("unlabeled folders are supported with image-folder datasets, not CIFAR batches")
        train_ds.samples += scan_unlabeled(cfg.unlabeled)
    return train_ds, val_ds


def _load_resume(cfg: TrainConfig, entry: ModelEntry, num_classes: int) -> dict[str, Any] | None:
    """The checkpoint to resume from (None without ``resume``), checked to fit this run's model and classes."""
    from ..models import get_entry

    if not cfg.resume:
        return None
    ck = load_checkpoint(cfg.resume)
    if get_entry(ck["model_name"]).arch != entry.arch or ck["num_classes"] != num_classes:
        raise ValueError(
            f"{cfg.resume} is a {ck['model_name']} with {ck['num_classes']} classes; this run trains "
            f"a {entry.name} on {num_classes} classes"
        )
    return ck


def _build_model(
    cfg: TrainConfig, name: str, num_classes: int, model_kwargs: dict[str, Any], resuming: bool, device: torch.device
) -> tuple[nn.Module, EvalPreprocess]:
    """The model to train (pretrained unless resuming), its eval preprocessing, transformed and on the device."""
    from ..factory import create_model

    recipe = cfg.recipe
    if resuming:
        model = create_model(name, weights="random", num_classes=num_classes, **model_kwargs)  # resume loads it
    else:
        model = create_model(name, num_classes=num_classes, pretrained=cfg.pretrained, **model_kwargs)
    pre = eval_preprocess(model, resize_short=recipe.eval_resize_short, crop_size=recipe.eval_crop)
    model.default_cfg = {
        **model.default_cfg,
        "resize_short": pre.resize_short,
        "crop_size": pre.crop_size,
        "num_classes": num_classes,
    }
    if cfg.model_transform is not None:
        model = cfg.model_transform(model)
    model.to(device)
    if recipe.channels_last:
        model.to(memory_format=torch.channels_last)
    return model, pre


def _build_teacher(
    cfg: TrainConfig, num_classes: int, model_kwargs: dict[str, Any], device: torch.device
) -> nn.Module | None:
    """The frozen distillation teacher (None without ``teacher``)."""
    from ..factory import create_model

    if not cfg.teacher:
        return None
    # the teacher's weights in the one vocabulary (default: published); a training .ckpt keeps its own options
    own = cfg.teacher_ckpt is not None and str(cfg.teacher_ckpt).endswith(".ckpt")
    teacher = create_model(cfg.teacher, weights=cfg.teacher_ckpt, **({} if own else model_kwargs))
    if teacher.num_classes != num_classes:
        raise ValueError(
            f"the teacher {cfg.teacher} ({cfg.teacher_ckpt or 'published weights'}) has {teacher.num_classes} "
            f"classes, the data {num_classes}: give --teacher-ckpt, a teacher trained on these classes"
        )
    teacher.eval().requires_grad_(False).to(device)
    if cfg.recipe.channels_last:
        teacher.to(memory_format=torch.channels_last)
    return teacher


def _build_loaders(
    cfg: TrainConfig, train_ds: ImageDataset, val_ds: ImageDataset, pre: EvalPreprocess, d: _Dist
) -> _Loaders:
    """The sharded training loader (decoded into memory or streamed) and, on rank 0, the eval loader."""
    recipe = cfg.recipe
    mode = _choose_mode(train_ds, recipe)
    global_batch = recipe.batch_size * d.world
    accum = max(1, recipe.accum_steps)
    if recipe.batch_size % accum:
        raise ValueError(f"batch_size {recipe.batch_size} is not divisible by accum_steps {accum}")
    train_sampler = GlobalBatchSampler(len(train_ds), global_batch, recipe.seed, d.rank, d.world)
    if mode == "memory":
        try:
            images, labels = decode_to_memory(train_ds, progress=cfg.progress and d.main)
        except MixedSizesError:
            if recipe.data_mode != "auto":
                raise
            mode = "stream"  # images of several sizes: auto streams them (resized per sample) instead
            if d.main:
                print(f"{train_ds.source}: images of several sizes: data_mode=auto streams them", file=sys.stderr)
    if mode == "memory":
        train_sampler.n = len(images)
        train_loader: Any = MemoryLoader(
            images,
            labels,
            train_sampler,
            pre,
            device=d.device,
            train=True,
            crop=recipe.train_crop,
            channels_last=recipe.channels_last,
        )
    else:
        aug = TrainAugment(recipe.train_crop, recipe.augment, recipe.autoaugment, normalize=pre)
        train_loader = StreamLoader(
            train_ds, train_sampler, aug, device=d.device, workers=recipe.workers, channels_last=recipe.channels_last
        )
    eval_loader = (
        build_eval_loader(val_ds, pre, mode, d.device, recipe.channels_last, progress=cfg.progress) if d.main else None
    )
    steps = train_sampler.steps_per_epoch()
    return _Loaders(mode, global_batch, accum, train_sampler, train_loader, eval_loader, steps)


def _build_optim(model: nn.Module, recipe: Recipe, device: torch.device, loaders: _Loaders) -> _Optim:
    """SGD (fused on GPU), the per-iteration lr schedule, the fp16 loss scaler and the optional EMA."""
    lr = recipe.lr_for(loaders.global_batch)
    fused = device.type == "cuda"  # one kernel for the whole update on GPU
    opt = torch.optim.SGD(
        _param_groups(model, recipe), lr=lr, momentum=recipe.momentum, nesterov=recipe.nesterov, fused=fused or None
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(recipe, loaders.steps_per_epoch))
    amp_dtype = _amp_dtype(recipe, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    ema = None
    if recipe.ema_decay > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True)
    return _Optim(opt, sched, scaler, amp_dtype, ema)


def _wrap_model(model: nn.Module, recipe: Recipe, d: _Dist) -> nn.Module:
    """What the training step calls: the model, under DDP (SyncBatchNorm optional) and ``torch.compile``."""
    net: nn.Module = model
    if d.world > 1:
        if recipe.sync_bn and d.device.type == "cuda":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = nn.parallel.DistributedDataParallel(net, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    if recipe.compile:
        net = torch.compile(net)
    return net


# ---- resume and checkpoints


def _restore(ck: dict[str, Any], model: nn.Module, o: _Optim, rank: int) -> _Position:
    """Load a ``last.ckpt``: weights, optimizer, schedule, scaler, EMA and this rank's RNG; returns the position."""
    model.load_state_dict(ck["model"])
    o.opt.load_state_dict(ck["optimizer"])
    o.sched.load_state_dict(ck["scheduler"])
    o.scaler.load_state_dict(ck["scaler"])
    if o.ema is not None and ck.get("ema") is not None:
        o.ema.load_state_dict(ck["ema"])
    set_rng_state(ck["rng"][rank] if isinstance(ck["rng"], list) else ck["rng"])
    pos = _Position(ck["epoch"], ck["step_in_epoch"], ck["global_step"], ck.get("best_top1", -1.0))
    pos.epoch_so_far = ck.get("epoch_so_far") if pos.start_step else None
    return pos


def _state(
    run: _Run, epoch: int, step: int, rngs: Any, weights: str = "model", meter: _EpochMeter | None = None
) -> dict[str, Any]:
    """A checkpoint's contents: the run's metadata, its position (with the epoch's ``meter`` when inside one), and
    every piece of optimisation state."""
    o = run.optim
    st = {
        **run.meta,
        "epoch": epoch,
        "step_in_epoch": step,
        "global_step": run.pos.global_step,
        "best_top1": run.pos.best_top1,
        "optimizer": o.opt.state_dict(),
        "scheduler": o.sched.state_dict(),
        "scaler": o.scaler.state_dict(),
        "rng": rngs,
        "ema": o.ema.state_dict() if o.ema is not None else None,
        "epoch_so_far": meter.so_far() if meter is not None else None,
    }
    st["model"] = run.model.state_dict() if weights == "model" else _ema_weights(o.ema)
    return st


# ---- one epoch


def _train_epoch(run: _Run, epoch: int, stop: _Stop) -> dict[str, Any]:
    """Train one epoch (from the resumed step in the first); returns its log row (before evaluation)."""
    from tqdm import tqdm

    recipe, ld, d = run.cfg.recipe, run.loaders, run.dist
    sampler = ld.train_sampler
    sampler.epoch = epoch
    sampler.start_step = run.pos.start_step if epoch == run.pos.start_epoch else 0
    sampler.stop_step = recipe.total_steps - epoch * ld.steps_per_epoch if recipe.total_steps else None
    end = sampler.end_step()
    run.net.train()
    meter = _EpochMeter.start(d.device, run.pos.epoch_so_far if epoch == run.pos.start_epoch else None)
    bar = tqdm(
        total=end,
        initial=sampler.start_step,
        desc=f"epoch {epoch + 1}/{recipe.epochs}",
        disable=not (run.cfg.progress and d.main),
        dynamic_ncols=True,
    )
    step = sampler.start_step
    for x, y, idx in _with_index(ld.train_loader, sampler):
        _train_step(run, x, y, idx, meter)
        step += 1
        run.pos.global_step += 1
        run.pos.steps_this_run += 1
        meter.n_loss += 1
        meter.seen += x.shape[0] * d.world
        check = step % recipe.log_every == 0 or step == end
        if d.world > 1 and check:  # a signal may reach one rank only: stop together
            _agree_on_stop(stop, d.device)
        if check or (d.world == 1 and stop.signum is not None):
            _check_finite(run, epoch, step)
            _show_progress(run, bar, meter)
        bar.update(1)
        hit_max = run.cfg.max_steps is not None and run.pos.steps_this_run >= run.cfg.max_steps
        if (stop.signum is not None and (d.world == 1 or check)) or hit_max:
            _interrupt(run, stop, bar, epoch, step, meter)
    bar.close()
    run.pos.start_step, run.pos.epoch_so_far = 0, None
    train_time = time.perf_counter() - meter.t0
    return {
        "epoch": epoch + 1,
        "train_loss": float(meter.loss_sum) / max(1, meter.n_loss),
        "lr": run.optim.sched.get_last_lr()[0],
        "img_s": meter.seen / max(1e-9, train_time),
        "epoch_time_s": train_time,
    }


def _train_step(run: _Run, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, meter: _EpochMeter) -> None:
    """One optimizer step over ``accum`` micro-batches (DDP syncs gradients on the last), then lr and EMA."""
    recipe, o, world = run.cfg.recipe, run.optim, run.dist.world
    accum, device_type = run.loaders.accum, run.dist.device.type
    o.opt.zero_grad(set_to_none=True)
    micro = list(zip(x.chunk(accum), y.chunk(accum), idx.chunk(accum)))
    for j, (xm, ym, im) in enumerate(micro):
        ctx = run.net.no_sync() if world > 1 and j < len(micro) - 1 else nullcontext()  # sync on the last
        with (
            ctx,
            torch.autocast(device_type, dtype=o.amp_dtype or torch.float32, enabled=o.amp_dtype is not None),
        ):
            logits = run.net(xm)
            loss = _loss(logits, ym, im, run.teacher, run.teacher_cache, xm, recipe)
        o.scaler.scale(loss / accum).backward()
        meter.loss_sum += loss.detach().float() / accum
        run.bad |= ~torch.isfinite(loss.detach())
    if recipe.grad_clip > 0:
        o.scaler.unscale_(o.opt)
        nn.utils.clip_grad_norm_(run.model.parameters(), recipe.grad_clip)
    o.scaler.step(o.opt)
    o.scaler.update()
    o.sched.step()
    if o.ema is not None:
        o.ema.update_parameters(run.model)


def _agree_on_stop(stop: _Stop, device: torch.device) -> None:
    """Share a signal that reached any rank with all of them."""
    flag = torch.tensor([0 if stop.signum is None else int(stop.signum)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() and stop.signum is None:
        stop.signum = int(flag.item())


def _check_finite(run: _Run, epoch: int, step: int) -> None:
    if bool(run.bad):
        last = run.last_path
        raise TrainingDiverged(
            f"loss became NaN/inf at epoch {epoch + 1}, step {step} (lr {run.optim.sched.get_last_lr()[0]:.4g}); "
            f"stopped. The last good checkpoint is {last if last.exists() else 'none yet'}; "
            "try a lower lr, grad_clip=1.0 or amp=none"
        )


def _show_progress(run: _Run, bar: Any, meter: _EpochMeter) -> None:
    rate = meter.seen / max(1e-9, time.perf_counter() - meter.t0)
    bar.set_postfix(
        loss=f"{float(meter.loss_sum) / meter.n_loss:.4f}",
        lr=f"{run.optim.sched.get_last_lr()[0]:.4g}",
        img_s=f"{rate:.0f}",
    )


def _interrupt(run: _Run, stop: _Stop, bar: Any, epoch: int, step: int, meter: _EpochMeter) -> None:
    """A signal or ``max_steps``: save ``last.ckpt`` with the position inside the epoch and raise."""
    if bool(run.bad):
        raise TrainingDiverged(f"loss became NaN/inf at epoch {epoch + 1}, step {step}")
    world, last_path = run.dist.world, run.last_path
    rngs = _gather_rng(world)
    if run.dist.main:
        save_checkpoint(_state(run, epoch, step, rngs, meter=meter), last_path)
    _barrier(world)
    bar.close()
    why = signal.Signals(stop.signum).name if stop.signum is not None else f"max_steps={run.cfg.max_steps}"
    raise TrainingInterrupted(
        f"{why}: stopped at epoch {epoch + 1}, step {step}/{run.loaders.steps_per_epoch}; state saved to "
        f"{last_path} (continue with --resume {last_path})",
        last_path,
    )


# ---- end of an epoch: evaluation, checkpoints, logs


def _end_epoch(run: _Run, epoch: int, row: dict[str, Any]) -> None:
    """Evaluate when due (keeping ``best.ckpt``), log the row, save ``last.ckpt``; all ranks meet at the end."""
    recipe = run.cfg.recipe
    rngs = _gather_rng(run.dist.world)
    if run.dist.main:
        if (epoch + 1) % recipe.eval_every == 0 or epoch + 1 == recipe.epochs:
            _evaluate_epoch(run, epoch, row, rngs)
        run.history.append(row)
        _append_log(run.out / "log.csv", row)
        _log_tensorboard(run.writer, row, epoch + 1)
        save_checkpoint(_state(run, epoch + 1, 0, rngs), run.last_path)
    _barrier(run.dist.world)


def _evaluate_epoch(run: _Run, epoch: int, row: dict[str, Any], rngs: Any) -> None:
    """Eval top-1/top-5 of the model (and the EMA) into ``row``; a new best (of either) is saved to ``best.ckpt``."""
    ema = run.optim.ema
    r = evaluate(run.model, run.loaders.eval_loader, run.num_classes, run.class_names)
    row.update(top1=r.top1, top5=r.top5, val_loss=r.loss)
    er: EvalResult | None = None
    if ema is not None:
        er = evaluate(ema.module, run.loaders.eval_loader, run.num_classes, run.class_names)
        row.update(ema_top1=er.top1, ema_top5=er.top5)
    cand, which = (er.top1, "ema") if er is not None and er.top1 > r.top1 else (r.top1, "model")
    if cand > run.pos.best_top1:
        run.pos.best_top1 = cand
        save_checkpoint(
            {**_state(run, epoch + 1, 0, rngs, which), "weights_from": which, "metrics": row},
            run.out / "best.ckpt",
        )
    print(
        f"epoch {epoch + 1}/{run.cfg.recipe.epochs}: loss {row['train_loss']:.4f}  top-1 {r.top1:.2f}%  "
        f"top-5 {r.top5:.2f}%"
        + (f"  EMA top-1 {er.top1:.2f}%" if er else "")
        + f"  ({row['img_s']:.0f} img/s, {row['epoch_time_s']:.1f} s)",
        flush=True,
    )


def _log_tensorboard(writer: Any, row: dict[str, Any], epoch: int) -> None:
    if writer is None:
        return
    for k, v in row.items():
        if k != "epoch":
            writer.add_scalar(k, v, epoch)
    writer.flush()


def _with_index(loader, sampler: GlobalBatchSampler):
    """Batches with the dataset indices of their samples (for cached teacher logits)."""
    for batch, idx in zip(loader, sampler):
        yield batch[0], batch[1], torch.as_tensor(idx)


def _loss(logits, y, idx, teacher, cache, x, recipe: Recipe) -> torch.Tensor:
    if teacher is None:
        return classification_loss(logits, y, recipe.label_smoothing)
    if cache is not None:
        t_logits = cache[idx.to(cache.device)].to(logits.device)
    else:
        with torch.no_grad():
            t_logits = teacher(x)
    loss = distill_loss(logits, t_logits, recipe.distill_loss, recipe.temperature)
    if recipe.gt_weight > 0:
        loss = loss + recipe.gt_weight * classification_loss(logits, y, recipe.label_smoothing)
    return loss


@torch.no_grad()
def _teacher_logits(teacher, ds, pre, device, out: Path, mode: str) -> torch.Tensor:
    """Teacher logits on each training image under the eval preprocessing, computed once (SSLD's offline soft
    labels); cached in ``output/teacher_logits.safetensors``."""
    from safetensors.torch import load_file, save_file

    path = out / "teacher_logits.safetensors"
    if path.is_file():
        t = load_file(str(path))["logits"]
        if len(t) == len(ds):
            return t.to(device)
    loader = build_eval_loader(ds, pre, mode, device, channels_last=False)
    chunks = [teacher(b[0]).float().cpu() for b in loader]
    t = torch.cat(chunks)
    save_file({"logits": t}, str(path))
    return t.to(device)


def _ema_weights(ema) -> dict[str, torch.Tensor]:
    return {k.removeprefix("module."): v for k, v in ema.state_dict().items() if k.startswith("module.")}


def _gather_rng(world: int):
    st = rng_state()
    if world == 1:
        return st
    out: list[Any] = [None] * world
    dist.all_gather_object(out, st)
    return out


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def _tb_writer(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra
        return None
    return SummaryWriter(str(out / "tb"))


_LOG_FIELDS = ["epoch", "train_loss", "lr", "img_s", "epoch_time_s", "top1", "top5", "val_loss", "ema_top1", "ema_top5"]


def _append_log(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=_LOG_FIELDS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open() as f:
        return [{k: float(v) for k, v in r.items() if v} for r in csv.DictReader(f)]
