"""The train stage: fit a registered model on the train split, keep the best epoch by validation.

Training is resumable: after every epoch the full state (model, optimizer, scheduler, RNG
states, best epoch, dvclive history) is saved beside the model file, and a rerun with the same
params and data continues from there, ending with the same metrics as an uninterrupted run.

Training runs at the model's pace: every image is decoded once into a memory-mapped uint8 file
beside the model, and the online augmentations and normalisation run on whole batches on the
device (`imgpipe.data.batches`). On a CUDA GPU (used when present) batches are gathered one ahead
on a background thread and travel pinned and non-blocking, and the model runs channels_last
under mixed precision (`train.amp`); `train.compile` compiles it on any device.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from dvclive import Live
from torch import nn

from imgpipe.checkpoint import ModelSpec, write_checkpoint
from imgpipe.data.annotations import read_annotations
from imgpipe.data.batches import OnlineAugment, batches
from imgpipe.data.tensors import LabelledImages, channel_stats, load_split, to_model_input
from imgpipe.device import amp_dtype, resolve_device
from imgpipe.errors import UserError
from imgpipe.inference import predict_logits
from imgpipe.models.registry import create_model, get_model_entry
from imgpipe.optim import LossFn, Schedule, create_optimizer, create_schedule
from imgpipe.outputs import scratch_dir, staged_outputs
from imgpipe.params import ImageParams, TrainParams
from imgpipe.pretrained import freeze_backbone, load_pretrained, normalization, set_train_mode
from imgpipe.progress import progress
from imgpipe.resume import LoopState, restore_state, save_state, truncate_history
from imgpipe.task import Multiclass, Task, task_of


NO_SCALING = torch.amp.GradScaler("cpu", enabled=False)  # without fp16, scale/step/update pass through


@dataclass(frozen=True, kw_only=True)
class Fit:
    """Everything one optimisation step needs, and the task that scores validation."""

    model: nn.Module
    head: str
    frozen: bool  # train.freeze == backbone
    optimizer: torch.optim.Optimizer
    loss_fn: LossFn
    schedule: Schedule
    clip_grad_norm: float
    mean: list[float]
    std: list[float]
    task: Task  # turns validation logits into decisions and scores
    augment: OnlineAugment = OnlineAugment()
    device: torch.device = torch.device("cpu")
    amp: torch.dtype | None = None  # autocast dtype, None = fp32
    channels_last: bool = False
    compiled: nn.Module | None = None  # torch.compile(model), used for the training forward pass
    scaler: torch.amp.GradScaler | None = None  # fp16 loss scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.compiled or self.model)(x)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(
    name: str, params: TrainParams, num_classes: int, channels: int, image_size: int, model_args: dict | None = None
) -> nn.Module:
    """A fresh or pretrained model built with `model_args` (params.yaml's); with `freeze: backbone`
    only its head stays trainable."""
    model_args = model_args or {}
    if params.pretrained == "none":
        return create_model(name, num_classes=num_classes, in_channels=channels, image_size=image_size, **model_args)
    model = load_pretrained(name, params.pretrained, num_classes, image_size, model_args)
    if params.freeze == "backbone":
        freeze_backbone(model, get_model_entry(name).head)
    return model


def train_one_epoch(fit: Fit, data: LabelledImages, batch_size: int, generator: torch.Generator, on_batch) -> float:
    """One pass over `data` in a shuffled order; returns the mean training loss.

    `on_batch` gets each batch's loss as a 0-d tensor on the device: reading it (`.item()`)
    waits for the GPU, so callers do that only for the batches they log.
    """
    set_train_mode(fit.model, fit.head, fit.frozen)
    order = torch.randperm(len(data.targets), generator=generator)
    total = torch.zeros((), device=fit.device)
    mean, std = (torch.tensor(v, device=fit.device) for v in (fit.mean, fit.std))  # copied once, not per batch
    plan = functools.partial(fit.augment.plan, generator=generator) if fit.augment.active else None
    feed = batches(data.images, data.targets, order, batch_size, fit.device, plan)
    for images, targets, *drawn in progress(feed, desc="train", total=math.ceil(len(order) / batch_size)):
        if drawn:
            images = fit.augment.apply(images, drawn[0])
        loss = train_step(fit, to_model_input(images, mean, std), targets)
        total += loss * len(targets)
        on_batch(loss)
    return total.item() / len(order)


def train_step(fit: Fit, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """One optimisation step on a ready float batch; returns its loss, detached, on the device."""
    scaler = fit.scaler or NO_SCALING
    if fit.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(fit.device.type, dtype=fit.amp, enabled=fit.amp is not None):
        loss = fit.loss_fn(fit.forward(x), targets)
    fit.optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if fit.clip_grad_norm > 0:
        scaler.unscale_(fit.optimizer)
        nn.utils.clip_grad_norm_(fit.model.parameters(), fit.clip_grad_norm)
    scaler.step(fit.optimizer)
    scaler.update()
    fit.schedule.after_batch()
    return loss.detach().float()


@torch.no_grad()
def validate(fit: Fit, data: LabelledImages) -> dict[str, float]:
    """`val/loss`, `val/accuracy` and `val/f1_macro` (multi-label: exact-match accuracy, and
    `val/f1_micro` too), as the task decides and scores."""
    logits = predict_logits(fit.model, data.images, fit.mean, fit.std)
    loss = fit.loss_fn(logits.to(fit.device), data.targets.to(fit.device)).item()
    scores = {"loss": loss, **fit.task.validation_scores(data.targets, logits)}
    return {f"val/{name}": value for name, value in scores.items()}


def improved(val: dict[str, float], best: dict[str, float], monitor: str, tie_break: bool = True) -> bool:
    """Whether this epoch's `val/...` metrics beat the best so far on `monitor`; ties go to the
    lower validation loss when `tie_break` (choosing the saved epoch), never for early stopping."""
    if not best:
        return True
    sign = -1.0 if monitor == "val/loss" else 1.0
    if not tie_break:
        return sign * val[monitor] > sign * best[monitor]
    return (sign * val[monitor], -val["val/loss"]) > (sign * best[monitor], -best["val/loss"])


def fingerprint(
    model_name: str, image: ImageParams, params: TrainParams, seed: int, annotations: Path, model_args: dict | None = None
) -> str:
    """Identifies a training run: a saved state resumes only a run with the same fingerprint."""
    args = sorted((model_args or {}).items())
    digest = hashlib.sha256(json.dumps([model_name, args, asdict(image), asdict(params), seed]).encode())
    digest.update(Path(annotations).read_bytes())
    return digest.hexdigest()


def resume_dir_for(model_out: Path) -> Path:
    return Path(model_out).parent / f".{Path(model_out).name}.resume"


def train(
    model_name: str,
    image: ImageParams,
    params: TrainParams,
    seed: int,
    annotations: Path,
    images_root: Path,
    model_out: Path,
    metrics_dir: Path,
    model_args: dict | None = None,
) -> dict[str, float]:
    """Train `model_name` (built with `model_args`) and write the best epoch's model file and dvclive metrics.

    Returns the best epoch's validation metrics.
    """
    seed_everything(seed)
    table = read_annotations(annotations)
    task = task_of(table)
    for split in ("train", "val"):
        if not (table["split"] == split).any():
            raise UserError(f"{annotations}: the {split} split is empty; raise split.{split} or add images")
    task.check_params(params)
    # Pretrained weights expect RGB: grayscale images are read as 3 equal channels.
    channels = 3 if params.pretrained != "none" else image.channels
    model = build_model(model_name, params, len(task.classes), channels, image.size, model_args)
    # Decoded into memory-mapped files; the folder goes when the block ends, but the open maps
    # keep their data (an unlinked file lives until its last map closes), so nothing is left behind.
    with scratch_dir(model_out) as pixels:
        train_data = load_split(table, "train", images_root, task, image.size, channels, cache_dir=pixels)
        val_data = load_split(table, "val", images_root, task, image.size, channels, cache_dir=pixels)
    fit = make_fit(model_name, model, params, image.normalize, train_data, task.for_training(params, train_data.targets))
    generator = torch.Generator().manual_seed(seed)
    resume_dir = resume_dir_for(model_out)
    run_id = fingerprint(model_name, image, params, seed, annotations, model_args)
    state = start_or_resume(resume_dir, run_id, fit, generator)

    live_dir = resume_dir / "live"
    with Live(str(live_dir), resume=state.epoch > 0, dvcyaml=None, save_dvc_exp=False) as live:
        run_epochs(fit, params, train_data, val_data, generator, live, state,
                   checkpoint=lambda: save_state(resume_dir, run_id, state, fit, generator))
        live.summary["best"] = state.best

    task = fit.task.after_training(params, lambda: best_logits(fit, state, val_data), val_data.targets)
    spec = ModelSpec(model_name, task.classes, image.size, channels, fit.mean, fit.std,
                     model_args=dict(model_args or {}), **task.spec_fields())
    with staged_outputs() as staged:  # the model file and its metrics land together
        write_checkpoint(staged.file(model_out), spec, state.best_state, {"best_epoch": int(state.best["epoch"])})
        shutil.copytree(live_dir, staged.folder(metrics_dir), dirs_exist_ok=True)
    shutil.rmtree(resume_dir)
    return state.best


@torch.no_grad()
def best_logits(fit: Fit, state: LoopState, data: LabelledImages) -> torch.Tensor:
    """The best epoch's logits on `data` (loads its weights into `fit.model`)."""
    fit.model.load_state_dict(state.best_state)
    return predict_logits(fit.model, data.images, fit.mean, fit.std)


def make_fit(
    model_name: str, model: nn.Module, params: TrainParams, normalize: bool, train_data: LabelledImages,
    task: Task | None = None,
) -> Fit:
    """Optimizer, the task's loss, schedule and input normalisation for training `model` on
    `train_data` (`task` None: single-label); moves `model` to `train.device`."""
    task = task or Multiclass([])
    channels = train_data.images.shape[1]
    mean, std = normalization(model_name, params.pretrained) or (
        channel_stats(train_data.images) if normalize else ([0.0] * channels, [1.0] * channels)
    )
    device = resolve_device(params.device)
    channels_last = device.type == "cuda"  # NHWC convolutions are the fast ones on GPUs
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    optimizer = create_optimizer([p for p in model.parameters() if p.requires_grad], params)
    steps_per_epoch = math.ceil(len(train_data.targets) / params.batch_size)
    autocast = amp_dtype(device, params.amp)
    return Fit(
        model=model,
        head=get_model_entry(model_name).head,
        frozen=params.freeze == "backbone",
        optimizer=optimizer,
        loss_fn=task.create_loss(params, train_data.targets.to(device)),
        schedule=create_schedule(optimizer, params, steps_per_epoch),
        clip_grad_norm=params.clip_grad_norm,
        mean=list(mean),
        std=list(std),
        task=task,
        augment=OnlineAugment(params.crop_padding, params.flip),
        device=device,
        amp=autocast,
        channels_last=channels_last,
        compiled=torch.compile(model) if params.compile else None,
        scaler=torch.amp.GradScaler(device.type) if autocast == torch.float16 else None,
    )


def start_or_resume(resume_dir: Path, run_id: str, fit: Fit, generator: torch.Generator) -> LoopState:
    """The loop state: restored from an interrupted run with the same fingerprint, else fresh."""
    state = restore_state(resume_dir, run_id, fit, generator)
    if state is None:
        shutil.rmtree(resume_dir, ignore_errors=True)
        return LoopState()
    truncate_history(resume_dir / "live", state.step)
    print(f"train: resuming after epoch {state.epoch} from {resume_dir}")
    return state


def run_epochs(
    fit: Fit, params: TrainParams, train_data: LabelledImages, val_data: LabelledImages,
    generator: torch.Generator, live: Live, state: LoopState, checkpoint: Callable[[], None],
) -> None:
    """The epoch loop from `state.epoch + 1`, with early stopping; updates `state` in place and
    calls `checkpoint` after each epoch."""

    def on_batch(loss: torch.Tensor) -> None:
        state.step += 1
        if state.step % params.log_every == 0:
            live.step = state.step
            live.log_metric("train/batch_loss", loss.item())

    for epoch in range(state.epoch + 1, params.epochs + 1):
        if params.patience and state.bad_epochs >= params.patience:
            print(f"train: early stop, {params.monitor} has not improved for {params.patience} epochs")
            break
        lr = fit.optimizer.param_groups[0]["lr"]
        train_loss = train_one_epoch(fit, train_data, params.batch_size, generator, on_batch)
        val = validate(fit, val_data)
        fit.schedule.after_epoch(val[params.monitor])
        live.step = state.step
        live.log_metric("epoch", epoch)
        live.log_metric("lr", lr)
        live.log_metric("train/loss", train_loss)
        for name, value in val.items():
            live.log_metric(name, value)
        print(f"epoch {epoch}: train/loss {train_loss:.4f} " + " ".join(f"{k} {v:.4f}" for k, v in val.items()))
        state.bad_epochs = 0 if improved(val, state.best, params.monitor, tie_break=False) else state.bad_epochs + 1
        if improved(val, state.best, params.monitor):
            state.best = {"epoch": epoch, **val}
            state.best_state = {k: v.detach().to("cpu", copy=True) for k, v in fit.model.state_dict().items()}
        state.epoch = epoch
        live.make_summary()
        checkpoint()
