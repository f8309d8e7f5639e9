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
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..data.datasets import DatasetError, ImageDataset, open_split, scan_unlabeled
from ..data.transforms import EvalPreprocess, TrainAugment, eval_preprocess
from .checkpoint import load_checkpoint, model_from_checkpoint, rng_state, save_checkpoint, set_rng_state
from .evaluate import EvalResult, evaluate
from .loader import GlobalBatchSampler, MemoryLoader, StreamLoader, decode_to_memory
from .losses import classification_loss, distill_loss
from .recipes import Recipe

__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "TrainingInterrupted", "build_eval_loader", "fit"]

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


def lr_factor(recipe: Recipe, steps_per_epoch: int):
    """Per-iteration lr multiplier: linear warmup from 0, then cosine to 0 (or piecewise by epoch)."""
    total = recipe.epochs * steps_per_epoch
    warm = round(recipe.warmup_epochs * steps_per_epoch)

    def f(it: int) -> float:
        if it < warm:
            return it / warm
        if recipe.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(it - warm, total - warm) / max(1, total - warm)))
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
    ds: ImageDataset, pre: EvalPreprocess, mode: str, device: torch.device, channels_last: bool, batch: int = 256
):
    sampler = GlobalBatchSampler(len(ds), batch, shuffle=False, drop_last=False)
    if mode == "memory":
        images, labels = decode_to_memory(ds, geometry=pre)
        sampler.n = len(images)
        return MemoryLoader(
            images, labels, sampler, pre, device=device, train=False, crop=pre.crop_size, channels_last=channels_last
        )
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


def fit(cfg: TrainConfig) -> TrainResult:
    from ..models import create_model, get_entry

    recipe = cfg.recipe
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = _device(cfg.device)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    main = rank == 0
    out = Path(cfg.output)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    if device.type == "cpu" and world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))

    # ---- data
    train_ds = open_split(cfg.data, "train")
    val_ds = open_split(cfg.data, "eval")
    class_names = train_ds.class_names
    num_classes = len(class_names)
    if cfg.unlabeled:
        if train_ds.arrays is not None:
            raise DatasetError("unlabeled folders are supported with image-folder datasets, not CIFAR batches")
        train_ds.samples += scan_unlabeled(cfg.unlabeled)

    # ---- model
    entry = get_entry(cfg.model)
    model_kwargs: dict[str, Any] = {"small_input": recipe.small_input}
    if recipe.drop_rate is not None:
        model_kwargs["drop_rate"] = recipe.drop_rate
    torch.manual_seed(recipe.seed)
    resume_ck = load_checkpoint(cfg.resume) if cfg.resume else None
    if resume_ck is not None:
        if get_entry(resume_ck["model_name"]).arch != entry.arch or resume_ck["num_classes"] != num_classes:
            raise ValueError(
                f"{cfg.resume} is a {resume_ck['model_name']} with {resume_ck['num_classes']} classes; this run trains "
                f"a {entry.name} on {num_classes} classes"
            )
        model = create_model(entry.name, num_classes=num_classes, **model_kwargs)
    else:
        model = create_model(entry.name, num_classes=num_classes, pretrained=cfg.pretrained, **model_kwargs)
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

    teacher = None
    if cfg.teacher:
        if cfg.teacher_ckpt and str(cfg.teacher_ckpt).endswith(".ckpt"):
            teacher = model_from_checkpoint(cfg.teacher_ckpt)
        else:
            teacher = create_model(
                cfg.teacher, num_classes=num_classes, pretrained=cfg.teacher_ckpt or False, **model_kwargs
            )
        if teacher.num_classes != num_classes:
            raise ValueError(f"teacher has {teacher.num_classes} classes, the data {num_classes}")
        teacher.eval().requires_grad_(False).to(device)
        if recipe.channels_last:
            teacher.to(memory_format=torch.channels_last)

    # ---- loaders
    mode = _choose_mode(train_ds, recipe)
    global_batch = recipe.batch_size * world
    accum = max(1, recipe.accum_steps)
    if recipe.batch_size % accum:
        raise ValueError(f"batch_size {recipe.batch_size} is not divisible by accum_steps {accum}")
    train_sampler = GlobalBatchSampler(len(train_ds), global_batch, recipe.seed, rank, world)
    if mode == "memory":
        images, labels = decode_to_memory(train_ds, progress=cfg.progress and main)
        train_sampler.n = len(images)
        train_loader: Any = MemoryLoader(
            images,
            labels,
            train_sampler,
            pre,
            device=device,
            train=True,
            crop=recipe.train_crop,
            channels_last=recipe.channels_last,
        )
    else:
        aug = TrainAugment(recipe.train_crop, recipe.augment, recipe.autoaugment, normalize=pre)
        train_loader = StreamLoader(
            train_ds, train_sampler, aug, device=device, workers=recipe.workers, channels_last=recipe.channels_last
        )
    eval_loader = build_eval_loader(val_ds, pre, mode, device, recipe.channels_last) if main else None
    steps_per_epoch = train_sampler.steps_per_epoch()

    # ---- optimisation
    lr = recipe.lr_for(global_batch)
    fused = device.type == "cuda"  # one kernel for the whole update on GPU
    opt = torch.optim.SGD(
        _param_groups(model, recipe), lr=lr, momentum=recipe.momentum, nesterov=recipe.nesterov, fused=fused or None
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(recipe, steps_per_epoch))
    amp_dtype = _amp_dtype(recipe, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    ema = None
    if recipe.ema_decay > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True)
    net: nn.Module = model
    if world > 1:
        if recipe.sync_bn and device.type == "cuda":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if recipe.compile:
        net = torch.compile(net)

    start_epoch, start_step, global_step, best_top1 = 0, 0, 0, -1.0
    if resume_ck is not None:
        model.load_state_dict(resume_ck["model"])
        opt.load_state_dict(resume_ck["optimizer"])
        sched.load_state_dict(resume_ck["scheduler"])
        scaler.load_state_dict(resume_ck["scaler"])
        if ema is not None and resume_ck.get("ema") is not None:
            ema.load_state_dict(resume_ck["ema"])
        start_epoch, start_step = resume_ck["epoch"], resume_ck["step_in_epoch"]
        global_step, best_top1 = resume_ck["global_step"], resume_ck.get("best_top1", -1.0)
        set_rng_state(resume_ck["rng"][rank] if isinstance(resume_ck["rng"], list) else resume_ck["rng"])
        if main:
            print(f"resumed from {cfg.resume}: epoch {start_epoch + 1}, step {start_step}/{steps_per_epoch}")

    meta = {
        "model_name": entry.name,
        "num_classes": num_classes,
        "class_names": class_names,
        "model_kwargs": model_kwargs,
        "default_cfg": {"resize_short": pre.resize_short, "crop_size": pre.crop_size},
        "recipe": recipe.to_dict(),
        "data": str(cfg.data),
        "data_mode": mode,
        "world_size": world,
    }
    if main:
        (out / "recipe.toml").write_text(recipe.to_toml())

    def state(epoch: int, step: int, rngs: Any, weights: str = "model") -> dict[str, Any]:
        st = {
            **meta,
            "epoch": epoch,
            "step_in_epoch": step,
            "global_step": global_step,
            "best_top1": best_top1,
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rngs,
            "ema": ema.state_dict() if ema is not None else None,
        }
        st["model"] = model.state_dict() if weights == "model" else _ema_weights(ema)
        return st

    teacher_cache = (
        _teacher_logits(teacher, train_ds, pre, device, out, mode) if teacher and cfg.cache_teacher else None
    )
    writer = _tb_writer(out) if main and cfg.tensorboard else None
    history: list[dict[str, Any]] = _read_log(out / "log.csv") if resume_ck is not None and main else []
    steps_this_run = 0
    last_path = out / "last.ckpt"
    bad = torch.zeros((), dtype=torch.bool, device=device)

    from tqdm import tqdm

    with _Stop() as stop:
        for epoch in range(start_epoch, recipe.epochs):
            train_sampler.epoch = epoch
            train_sampler.start_step = start_step if epoch == start_epoch else 0
            net.train()
            t0, seen = time.perf_counter(), 0
            loss_sum = torch.zeros((), device=device)
            n_loss = 0
            bar = tqdm(
                total=steps_per_epoch,
                initial=train_sampler.start_step,
                desc=f"epoch {epoch + 1}/{recipe.epochs}",
                disable=not (cfg.progress and main),
                dynamic_ncols=True,
            )
            step = train_sampler.start_step
            for x, y, idx in _with_index(train_loader, train_sampler):
                opt.zero_grad(set_to_none=True)
                micro = list(zip(x.chunk(accum), y.chunk(accum), idx.chunk(accum)))
                for j, (xm, ym, im) in enumerate(micro):
                    ctx = net.no_sync() if world > 1 and j < len(micro) - 1 else nullcontext()  # sync on the last
                    with (
                        ctx,
                        torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None),
                    ):
                        logits = net(xm)
                        loss = _loss(logits, ym, im, teacher, teacher_cache, xm, recipe)
                    scaler.scale(loss / accum).backward()
                    loss_sum += loss.detach().float() / accum
                    bad |= ~torch.isfinite(loss.detach())
                if recipe.grad_clip > 0:
                    scaler.unscale_(opt)
                    nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
                scaler.step(opt)
                scaler.update()
                sched.step()
                if ema is not None:
                    ema.update_parameters(model)
                step += 1
                global_step += 1
                steps_this_run += 1
                n_loss += 1
                seen += x.shape[0] * world
                check = step % recipe.log_every == 0 or step == steps_per_epoch
                if world > 1 and check:  # a signal may reach one rank only: stop together
                    flag = torch.tensor([0 if stop.signum is None else int(stop.signum)], device=device)
                    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                    if flag.item() and stop.signum is None:
                        stop.signum = int(flag.item())
                if check or (world == 1 and stop.signum is not None):
                    if bool(bad):
                        raise TrainingDiverged(
                            f"loss became NaN/inf at epoch {epoch + 1}, step {step} (lr {sched.get_last_lr()[0]:.4g}); "
                            f"stopped. The last good checkpoint is {last_path if last_path.exists() else 'none yet'}; "
                            "try a lower lr, grad_clip=1.0 or amp=none"
                        )
                    rate = seen / max(1e-9, time.perf_counter() - t0)
                    bar.set_postfix(
                        loss=f"{float(loss_sum) / n_loss:.4f}", lr=f"{sched.get_last_lr()[0]:.4g}", img_s=f"{rate:.0f}"
                    )
                bar.update(1)
                hit_max = cfg.max_steps is not None and steps_this_run >= cfg.max_steps
                if (stop.signum is not None and (world == 1 or check)) or hit_max:
                    if bool(bad):
                        raise TrainingDiverged(f"loss became NaN/inf at epoch {epoch + 1}, step {step}")
                    rngs = _gather_rng(world)
                    if main:
                        save_checkpoint(state(epoch, step, rngs), last_path)
                    _barrier(world)
                    bar.close()
                    why = signal.Signals(stop.signum).name if stop.signum is not None else f"max_steps={cfg.max_steps}"
                    raise TrainingInterrupted(
                        f"{why}: stopped at epoch {epoch + 1}, step {step}/{steps_per_epoch}; state saved to "
                        f"{last_path} (continue with --resume {last_path})",
                        last_path,
                    )
            bar.close()
            start_step = 0
            train_time = time.perf_counter() - t0
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_loss": float(loss_sum) / max(1, n_loss),
                "lr": sched.get_last_lr()[0],
                "img_s": seen / max(1e-9, train_time),
                "epoch_time_s": train_time,
            }
            rngs = _gather_rng(world)
            if main:
                evaluated = (epoch + 1) % recipe.eval_every == 0 or epoch + 1 == recipe.epochs
                if evaluated:
                    r = evaluate(model, eval_loader, num_classes, class_names)
                    row.update(top1=r.top1, top5=r.top5, val_loss=r.loss)
                    er: EvalResult | None = None
                    if ema is not None:
                        er = evaluate(ema.module, eval_loader, num_classes, class_names)
                        row.update(ema_top1=er.top1, ema_top5=er.top5)
                    cand, which = (er.top1, "ema") if er is not None and er.top1 > r.top1 else (r.top1, "model")
                    if cand > best_top1:
                        best_top1 = cand
                        save_checkpoint(
                            {**state(epoch + 1, 0, rngs, which), "weights_from": which, "metrics": row},
                            out / "best.ckpt",
                        )
                    print(
                        f"epoch {epoch + 1}/{recipe.epochs}: loss {row['train_loss']:.4f}  top-1 {r.top1:.2f}%  "
                        f"top-5 {r.top5:.2f}%"
                        + (f"  EMA top-1 {er.top1:.2f}%" if er else "")
                        + f"  ({row['img_s']:.0f} img/s, {train_time:.1f} s)",
                        flush=True,
                    )
                history.append(row)
                _append_log(out / "log.csv", row)
                if writer is not None:
                    for k, v in row.items():
                        if k != "epoch":
                            writer.add_scalar(k, v, epoch + 1)
                    writer.flush()
                save_checkpoint(state(epoch + 1, 0, rngs), last_path)
            _barrier(world)
    if writer is not None:
        writer.close()
    best = out / "best.ckpt"
    return TrainResult(out, best_top1, last_path, best if best.exists() else None, history)


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
