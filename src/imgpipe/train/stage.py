"""The train stage: fit a registered model on the train split, keep the best epoch by validation.

Training is resumable: after every epoch the full state (model, optimizer, scheduler, RNG
states, best epoch, dvclive history) is saved beside the model file, and a rerun with the same
params and data continues from there, ending with the same metrics as an uninterrupted run.

Training runs at the model's pace: every image is decoded once into a memory-mapped uint8 file
beside the model, and the online augmentations and normalisation run on whole batches on the
device (`imgpipe.feed.batches`). On a CUDA GPU (used when present) batches are gathered one ahead
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
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from dvclive import Live
from torch import nn

from imgpipe.models.checkpoint import ModelSpec, write_checkpoint
from imgpipe.data.annotations import read_annotations
from imgpipe.feed.batches import OnlineAugment, batches
from imgpipe.data.profile import needs_profile, profile_images, resolve_image
from imgpipe.feed.tensors import LabelledImages, channel_stats, load_split, map_split, members, to_model_input
from imgpipe.feed.device import amp_dtype, resolve_device
from imgpipe.train.distributed import SINGLE, Ranks, parallel, rank_device, sync_batchnorm
from imgpipe.core.errors import UserError
from imgpipe.train.footprint import check_fits, estimate
from imgpipe.feed.inference import predict_logits
from imgpipe.models.catalog import create_model, get_model_entry
from imgpipe.train.optim import LossFn, Schedule, create_optimizer, create_schedule
from imgpipe.core.atomic import scratch_dir, staged_outputs
from imgpipe.core.params import LAUNCH_KEYS, ImageParams, TrainParams
from imgpipe.models.pretrained import fetch_imagenet_weights, freeze_backbone, load_pretrained, normalization, set_train_mode
from imgpipe.core.progress import progress
from imgpipe.train.resume import (
    STATE_FILE, LoopState, StateWriter, cpu_weights, load_payload, restore_state, state_payload, truncate_history,
)
from imgpipe.task.tasks import Multiclass, Task, task_of

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
    # The training forward pass runs `model` through this when set: DistributedDataParallel
    # (several ranks) and/or torch.compile (`train.compile`); `model` holds the weights.
    wrapped: nn.Module | None = None
    scaler: torch.amp.GradScaler | None = None  # fp16 loss scaling
    ranks: Ranks = field(default=SINGLE)  # this process's share of the work (imgpipe.train.distributed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.wrapped or self.model)(x)


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
    if params.freeze == "backbone":  # (`train.freeze_epochs` freezes in `make_fit`, for its first phase)
        freeze_backbone(model, get_model_entry(name).head)
    return model


def train_one_epoch(fit: Fit, data: LabelledImages, batch_size: int, generator: torch.Generator, on_batch) -> float:
    """One pass over `data` in a shuffled order; returns the mean training loss.

    Distributed, every rank draws the same order and steps on its share of each batch.
    `on_batch` gets each batch's loss as a 0-d tensor on the device (distributed: this rank's
    part of it, summed over the ranks by `fit.ranks.sum`): reading it (`.item()`) waits for the
    GPU, so callers do that only for the batches they log.
    """
    set_train_mode(fit.model, fit.head, fit.frozen)
    n = len(data.targets)
    order = torch.randperm(n, generator=generator)
    total = torch.zeros((), device=fit.device)
    mean, std = (torch.tensor(v, device=fit.device) for v in (fit.mean, fit.std))  # copied once, not per batch
    plan = functools.partial(fit.augment.plan, generator=generator) if fit.augment.active else None
    share = fit.ranks.share if fit.ranks.world > 1 else None
    feed = batches(data.images, data.targets, order, batch_size, fit.device, plan, share=share)
    sizes = (min(batch_size, n - start) for start in range(0, n, batch_size))  # whole batches, over all ranks
    bar = progress(feed, desc="train", total=math.ceil(n / batch_size), show=fit.ranks.main)
    for (images, targets, *drawn), size in zip(bar, sizes, strict=True):
        if drawn:
            images = fit.augment.apply(images, drawn[0])
        part = len(targets) / size  # 1 on a single process
        loss = train_step(fit, to_model_input(images, mean, std), targets, weight=part * fit.ranks.world)
        total += loss * len(targets)
        on_batch(loss if part == 1 else loss * part)
    return fit.ranks.sum(total).item() / n


def train_step(fit: Fit, x: torch.Tensor, targets: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """One optimisation step on a ready float batch; returns its loss, detached, on the device.

    Distributed, `weight` is this rank's share of the whole batch times the number of ranks:
    DistributedDataParallel averages the ranks' gradients, and weighted so, that average is the
    gradient of the whole batch's mean loss even when the last batch does not split evenly.
    """
    scaler = fit.scaler or NO_SCALING
    if fit.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(fit.device.type, dtype=fit.amp, enabled=fit.amp is not None):
        logits = fit.forward(x)
        # a rank with no images in a short last batch still takes part in the gradient average
        loss = fit.loss_fn(logits, targets) if len(targets) else logits.sum() * 0.0
    fit.model.zero_grad(set_to_none=True)  # all of them: weights outside the optimizer may get some (freeze_epochs)
    scaler.scale(loss if weight == 1.0 else loss * weight).backward()
    if fit.clip_grad_norm > 0:
        scaler.unscale_(fit.optimizer)
        nn.utils.clip_grad_norm_([p for group in fit.optimizer.param_groups for p in group["params"]], fit.clip_grad_norm)
    scaler.step(fit.optimizer)
    scaler.update()
    fit.schedule.after_batch()
    return loss.detach().float()


@torch.no_grad()
def validate(fit: Fit, data: LabelledImages) -> dict[str, float]:
    """`val/loss`, `val/accuracy` and `val/f1_macro` (multi-label: exact-match accuracy, and
    `val/f1_micro` too), as the task decides and scores.

    Distributed, each rank runs its share of the images (no padding, so none counts twice), the
    logits are gathered, and every rank gets rank 0's scores: the same decisions everywhere.
    """
    part = fit.ranks.share(len(data.targets))
    logits = fit.ranks.gather_rows(predict_logits(fit.model, data.images[part], fit.mean, fit.std))

    def scores() -> dict[str, float]:
        loss = fit.loss_fn(logits.to(fit.device), data.targets.to(fit.device)).item()
        found = {"loss": loss, **fit.task.validation_scores(data.targets, logits)}
        return {f"val/{name}": value for name, value in found.items()}

    return fit.ranks.from_main(scores)


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
    """Identifies a training run: a saved state resumes only a run with the same fingerprint.
    How many processes train is not part of it (`LAUNCH_KEYS`): it changes the speed only."""
    args = sorted((model_args or {}).items())
    train = {k: v for k, v in asdict(params).items() if k not in LAUNCH_KEYS}
    digest = hashlib.sha256(json.dumps([model_name, args, asdict(image), train, seed]).encode())
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
    ranks: Ranks = SINGLE,
) -> dict[str, float] | None:
    """Train `model_name` (built with `model_args`) and write the best epoch's model file and dvclive metrics.

    Returns the best epoch's validation metrics; as one of several distributed `ranks`, rank 0
    does that and writes everything, and the other ranks return None.
    """
    seed_everything(seed)
    table = read_annotations(annotations)
    task = task_of(table)
    for split in ("train", "val"):
        if not (table["split"] == split).any():
            raise UserError(f"{annotations}: the {split} split is empty; raise split.{split} or add images")
    task.check_params(params)
    image = resolved_image(image, table, images_root, ranks)
    run_id = fingerprint(model_name, image, params, seed, annotations, model_args)
    same_run_everywhere(ranks, run_id)
    # Pretrained weights expect RGB: grayscale images are read as 3 equal channels.
    channels = 3 if params.pretrained != "none" else image.channels
    check_fits_before_decoding(model_name, model_args or {}, len(task.classes), channels, image.size, params, table, model_out, ranks)
    if params.pretrained == "imagenet" and ranks.local_rank == 0:
        fetch_imagenet_weights(model_name)  # one download per machine; the other ranks read the cache
    ranks.barrier()
    model = build_model(model_name, params, len(task.classes), channels, image.size, model_args)
    train_data, val_data = decode_splits(table, images_root, task, image.size, channels, model_out, ranks)
    fit = make_fit(model_name, model, params, image.normalize, train_data,
                   task.for_training(params, train_data.targets), ranks)
    generator = torch.Generator().manual_seed(seed)
    resume_dir = resume_dir_for(model_out)
    state, fit = start_or_resume(resume_dir, run_id, fit, generator, params, len(train_data.targets))

    live_dir = resume_dir / "live"
    logger = Live(str(live_dir), resume=state.epoch > 0, dvcyaml=None, save_dvc_exp=False) if ranks.main else nullcontext(NotLogged())
    with logger as live, StateWriter(resume_dir) as writer:
        live.log_params({"image": {"size": image.size, "channels": channels}})  # as trained, `auto` resolved

        def checkpoint(fit: Fit) -> None:
            if ranks.main:  # one writer
                writer.save(state_payload(run_id, state, fit, generator))

        fit = run_epochs(fit, params, train_data, val_data, generator, live, state, checkpoint)
        live.summary["best"] = state.best
    if not ranks.main:
        return None

    task = fit.task.after_training(params, lambda: best_logits(fit, state, val_data), val_data.targets)
    spec = ModelSpec(model_name, task.classes, image.size, channels, fit.mean, fit.std,
                     model_args=dict(model_args or {}), **task.spec_fields())
    with staged_outputs() as staged:  # the model file and its metrics land together
        write_checkpoint(staged.file(model_out), spec, state.best_state, {"best_epoch": int(state.best["epoch"])})
        shutil.copytree(live_dir, staged.folder(metrics_dir), dirs_exist_ok=True)
    shutil.rmtree(resume_dir)
    return state.best


class NotLogged:
    """Stands in for dvclive's `Live` on the ranks that do not log (all but rank 0)."""

    def __init__(self) -> None:
        self.step = 0
        self.summary: dict = {}

    def log_metric(self, name: str, value: float) -> None:
        pass

    def make_summary(self) -> None:
        pass

    def log_params(self, params: dict) -> None:
        pass


def check_fits_before_decoding(
    model_name: str, model_args: dict, num_classes: int, channels: int, size: int, params: TrainParams, table, model_out: Path,
    ranks: Ranks = SINGLE,
) -> None:
    """Refuse, before minutes of decoding, a run whose share of a batch cannot fit its device (a GPU
    per rank; on the CPU, the machine's ranks share its memory) or whose decoded images cannot fit
    the disk beside `model_out`."""
    batch = math.ceil(params.batch_size / ranks.world)  # each rank's share (`Ranks.share`)
    decoded = int(table["split"].isin(["train", "val"]).sum())
    scratch = next(p for p in (Path(model_out).absolute().parent, *Path(model_out).absolute().parents) if p.exists())
    device = resolve_device(params.device)
    footprint = estimate(model_name, model_args, num_classes, channels, size, batch, decoded)
    if footprint is not None and device.type != "cuda":
        footprint = replace(footprint, activations=footprint.activations * ranks.local_world,
                            weights=footprint.weights * ranks.local_world)
    check_fits(footprint, device, scratch, size)


def resolved_image(image: ImageParams, table, images_root: Path, ranks: Ranks = SINGLE) -> ImageParams:
    """`image` with `auto` resolved from the training originals (`imgpipe.data.profile`), said once."""
    if not needs_profile(image):
        return image
    originals = table[(table["split"] == "train") & (table["transform"] == "original")]
    profile = ranks.from_main(lambda: profile_images(members(originals, images_root)))
    image, said = resolve_image(image, profile)
    if ranks.main:
        for line in said:
            print(f"train: {line}")
    return image


def same_run_everywhere(ranks: Ranks, run_id: str) -> None:
    """Every rank must train the same run: another machine with other params or data would
    silently train something else."""
    ids = ranks.all_objects(run_id)
    for rank, other in enumerate(ids):
        if other != ids[0]:
            raise UserError(f"rank {rank}'s params or annotation file differ from rank 0's; give every machine "
                            "the same commit and data (git pull && dvc pull) and the same params.yaml")


def decode_splits(
    table, images_root: Path, task: Task, size: int, channels: int, model_out: Path, ranks: Ranks = SINGLE,
) -> tuple[LabelledImages, LabelledImages]:
    """The train and val images, decoded once per machine into memory-mapped files.

    Local rank 0 decodes into a scratch folder beside `model_out`; the machine's other ranks wait,
    then map the same files. The folder goes when every rank has mapped it: an unlinked file lives
    until its last map closes, so nothing is left behind and no rank holds the images in its own memory.
    """
    decodes = ranks.local_rank == 0
    with scratch_dir(model_out) if decodes else nullcontext() as pixels:
        pixels = ranks.node_value(pixels)
        if decodes:
            loaded = [load_split(table, s, images_root, task, size, channels, cache_dir=pixels) for s in ("train", "val")]
        ranks.barrier()
        if not decodes:
            loaded = [map_split(table, s, task, pixels) for s in ("train", "val")]
        ranks.barrier()
    return loaded[0], loaded[1]


@torch.no_grad()
def best_logits(fit: Fit, state: LoopState, data: LabelledImages) -> torch.Tensor:
    """The best epoch's logits on `data` (loads its weights into `fit.model`)."""
    fit.model.load_state_dict(state.best_state)
    return predict_logits(fit.model, data.images, fit.mean, fit.std)


def make_fit(
    model_name: str, model: nn.Module, params: TrainParams, normalize: bool, train_data: LabelledImages,
    task: Task | None = None, ranks: Ranks = SINGLE,
) -> Fit:
    """Optimizer, the task's loss, schedule and input normalisation for training `model` on
    `train_data` (`task` None: single-label); moves `model` to `train.device` (distributed: the
    rank's GPU) and, for several `ranks`, wraps it in DistributedDataParallel."""
    task = task or Multiclass([])
    channels = train_data.images.shape[1]
    mean, std = ranks.from_main(lambda: normalization(model_name, params.pretrained) or (  # one pass over the images, not one per rank
        channel_stats(train_data.images) if normalize else ([0.0] * channels, [1.0] * channels)
    ))
    device = rank_device(resolve_device(params.device), ranks)
    if ranks.world > 1 and params.sync_batchnorm:
        model = sync_batchnorm(model, device)
    channels_last = device.type == "cuda"  # NHWC convolutions are the fast ones on GPUs
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    head = get_model_entry(model_name).head
    head_only = params.freeze_epochs > 0  # the first phase of train.freeze_epochs
    if head_only and ranks.world == 1:
        freeze_backbone(model, head)  # no backward pass through the backbone; under DDP every weight
        # keeps its gradient (DDP's reducer is built once, for the weights that need one), unused
    wrapped = parallel(model, device) if ranks.world > 1 else None
    trainable = model.get_submodule(head).parameters() if head_only else (p for p in model.parameters() if p.requires_grad)
    optimizer = create_optimizer(list(trainable), params)
    steps_per_epoch = math.ceil(len(train_data.targets) / params.batch_size)
    autocast = amp_dtype(device, params.amp)
    return Fit(
        model=model,
        head=head,
        frozen=params.freeze == "backbone" or head_only,
        optimizer=optimizer,
        loss_fn=task.create_loss(params, train_data.targets.to(device)),
        schedule=create_schedule(optimizer, phase_params(params, params.freeze_epochs or params.epochs), steps_per_epoch),
        clip_grad_norm=params.clip_grad_norm,
        mean=list(mean),
        std=list(std),
        task=task,
        augment=OnlineAugment(params.crop_padding, params.flip),
        device=device,
        amp=autocast,
        channels_last=channels_last,
        wrapped=torch.compile(wrapped or model) if params.compile else wrapped,
        scaler=torch.amp.GradScaler(device.type) if autocast == torch.float16 else None,
        ranks=ranks,
    )


def phase_params(params: TrainParams, epochs: int) -> TrainParams:
    """`params` for a phase of `epochs` epochs: a schedule spans one phase (`train.freeze_epochs`)."""
    return replace(params, epochs=epochs, freeze_epochs=0, warmup_epochs=min(params.warmup_epochs, epochs - 1))


def unfrozen(fit: Fit, params: TrainParams, train_size: int) -> Fit:
    """The second phase of `train.freeze_epochs` (fastai's `fine_tune`): every weight trains, with a
    fresh optimizer and the lr schedule restarted over the remaining epochs."""
    for param in fit.model.parameters():
        param.requires_grad_(True)
    optimizer = create_optimizer(list(fit.model.parameters()), params)
    steps_per_epoch = math.ceil(train_size / params.batch_size)
    schedule = create_schedule(optimizer, phase_params(params, params.epochs - params.freeze_epochs), steps_per_epoch)
    return replace(fit, frozen=params.freeze == "backbone", optimizer=optimizer, schedule=schedule)


def in_second_phase(params: TrainParams, epoch: int) -> bool:
    """Whether epoch `epoch` (1-based) trains every weight under `train.freeze_epochs`."""
    return 0 < params.freeze_epochs < epoch


def start_or_resume(
    resume_dir: Path, run_id: str, fit: Fit, generator: torch.Generator, params: TrainParams, train_size: int,
) -> tuple[LoopState, Fit]:
    """The loop state and `fit`: restored from an interrupted run with the same fingerprint, else
    fresh. Distributed, rank 0 reads the state file and sends it to every rank."""
    ranks = fit.ranks
    payload = ranks.from_main(lambda: load_payload(resume_dir / STATE_FILE, run_id))
    if payload is None:
        if ranks.main:
            shutil.rmtree(resume_dir, ignore_errors=True)
        return LoopState(), fit
    if in_second_phase(params, payload["epoch"]):  # its optimizer state is the second phase's
        fit = unfrozen(fit, params, train_size)
    state = restore_state(payload, fit, generator)
    if ranks.main:
        truncate_history(resume_dir / "live", state.step)
        print(f"train: resuming after epoch {state.epoch} from {resume_dir}")
    return state, fit


def run_epochs(
    fit: Fit, params: TrainParams, train_data: LabelledImages, val_data: LabelledImages,
    generator: torch.Generator, live: Live, state: LoopState, checkpoint: Callable[[Fit], None],
) -> Fit:
    """The epoch loop from `state.epoch + 1`, with early stopping; updates `state` in place, calls
    `checkpoint` after each epoch, and returns `fit` as the last epoch trained it (`train.freeze_epochs`
    swaps its optimizer)."""

    def on_batch(loss: torch.Tensor) -> None:
        state.step += 1
        if state.step % params.log_every == 0:
            live.step = state.step
            live.log_metric("train/batch_loss", fit.ranks.sum(loss).item())

    say = print if fit.ranks.main else lambda *_: None
    for epoch in range(state.epoch + 1, params.epochs + 1):
        if fit.frozen and in_second_phase(params, epoch):
            fit = unfrozen(fit, params, len(train_data.targets))
            state.bad_epochs = 0  # patience counts from the unfreezing: the head alone may plateau
            say(f"train: epoch {epoch}: unfreezing the backbone after train.freeze_epochs {params.freeze_epochs}; the lr schedule restarts")
        head_only = params.freeze_epochs and epoch <= params.freeze_epochs  # the backbone's turn is still to come
        if params.patience and state.bad_epochs >= params.patience and not head_only:
            say(f"train: early stop, {params.monitor} has not improved for {params.patience} epochs")
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
        say(f"epoch {epoch}: train/loss {train_loss:.4f} " + " ".join(f"{k} {v:.4f}" for k, v in val.items()))
        state.bad_epochs = 0 if improved(val, state.best, params.monitor, tie_break=False) else state.bad_epochs + 1
        if improved(val, state.best, params.monitor):
            state.best = {"epoch": epoch, **val}
            state.best_state = cpu_weights(fit.model)
        state.epoch = epoch
        live.make_summary()
        checkpoint(fit)
    return fit
