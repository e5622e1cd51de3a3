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

import dataclasses
import functools
import hashlib
import json
import math
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from dvclive import Live
from torch import nn

from imgpipe.checkpoint import ModelSpec, write_checkpoint
from imgpipe.data.annotations import class_names, read_annotations
from imgpipe.data.batches import OnlineAugment, batches
from imgpipe.data.labelsets import is_multilabel
from imgpipe.data.tensors import LabelledImages, channel_stats, load_split, to_model_input
from imgpipe.decision import DecisionRule, one_of_groups, tune_thresholds
from imgpipe.device import amp_dtype, resolve_device
from imgpipe.errors import UserError
from imgpipe.inference import predict_logits
from imgpipe.metrics import classification_metrics, multilabel_metrics
from imgpipe.models.registry import create_model, get_model_entry
from imgpipe.optim import LossFn, Schedule, create_loss, create_optimizer, create_schedule
from imgpipe.outputs import atomic_file, scratch_dir, staged_outputs
from imgpipe.params import ImageParams, TrainParams
from imgpipe.pretrained import freeze_backbone, load_pretrained, normalization, set_train_mode
from imgpipe.progress import progress
from imgpipe.resume import load_resume_state, truncate_history


NO_SCALING = torch.amp.GradScaler("cpu", enabled=False)  # without fp16, scale/step/update pass through


@dataclass(frozen=True)
class Fit:
    """Everything one optimisation step needs."""

    model: nn.Module
    head: str
    frozen: bool  # train.freeze == backbone
    optimizer: torch.optim.Optimizer
    loss_fn: LossFn
    schedule: Schedule
    clip_grad_norm: float
    mean: list[float]
    std: list[float]
    rule: DecisionRule | None = None  # multi-label: how validation turns probabilities into labels
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


def build_model(name: str, params: TrainParams, num_classes: int, channels: int, image_size: int) -> nn.Module:
    """A fresh or pretrained model; with `freeze: backbone` only its head stays trainable."""
    if params.pretrained == "none":
        return create_model(name, num_classes=num_classes, in_channels=channels, image_size=image_size)
    model = load_pretrained(name, params.pretrained, num_classes, image_size)
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
    """Validation loss, accuracy and macro F1 (multi-label: exact-match accuracy, micro F1 too)."""
    logits = predict_logits(fit.model, data.images, fit.mean, fit.std)
    loss = fit.loss_fn(logits.to(fit.device), data.targets.to(fit.device)).item()
    if not data.multilabel:
        scores = classification_metrics(data.targets.numpy(), logits.argmax(1).numpy())
        return {"loss": loss, "accuracy": scores["accuracy"], "f1_macro": scores["f1_macro"]}
    pred = fit.rule.decide(torch.sigmoid(logits).numpy())
    scores = multilabel_metrics(data.targets.numpy().astype(np.uint8), pred)
    return {
        "loss": loss,
        "accuracy": scores["exact_match_accuracy"],
        "f1_macro": scores["f1_macro"],
        "f1_micro": scores["f1_micro"],
    }


def improved(val: dict[str, float], best: dict[str, float], monitor: str, tie_break: bool = True) -> bool:
    """Whether this epoch beats the best so far on `monitor`; ties go to the lower validation loss
    when `tie_break` (choosing the saved epoch), never for early stopping."""
    if not best:
        return True
    key = monitor.removeprefix("val/")
    sign = -1.0 if key == "loss" else 1.0
    if not tie_break:
        return sign * val[key] > sign * best[monitor]
    return (sign * val[key], -val["loss"]) > (sign * best[monitor], -best["val/loss"])


def fingerprint(model_name: str, image: ImageParams, params: TrainParams, seed: int, annotations: Path) -> str:
    """Identifies a training run: a saved state resumes only a run with the same fingerprint."""
    digest = hashlib.sha256(json.dumps([model_name, asdict(image), asdict(params), seed]).encode())
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
) -> dict[str, float]:
    """Train `model_name` and write the best epoch's model file and dvclive metrics.

    Returns the best epoch's validation metrics.
    """
    seed_everything(seed)
    table = read_annotations(annotations)
    classes = class_names(table)
    for split in ("train", "val"):
        if not (table["split"] == split).any():
            raise UserError(f"{annotations}: the {split} split is empty; raise split.{split} or add images")
    if params.monitor == "val/f1_micro" and not is_multilabel(table):
        raise UserError("params: train.monitor val/f1_micro is for multi-label data (single-label: use val/accuracy)")
    # Pretrained weights expect RGB: grayscale images are read as 3 equal channels.
    channels = 3 if params.pretrained != "none" else image.channels
    model = build_model(model_name, params, len(classes), channels, image.size)
    # Decoded into memory-mapped files; the folder goes when the block ends, but the open maps
    # keep their data (an unlinked file lives until its last map closes), so nothing is left behind.
    with scratch_dir(model_out) as pixels:
        train_data = load_split(table, "train", images_root, classes, image.size, channels, cache_dir=pixels)
        val_data = load_split(table, "val", images_root, classes, image.size, channels, cache_dir=pixels)
    fit = make_fit(model_name, model, params, image.normalize, train_data, classes)
    generator = torch.Generator().manual_seed(seed)
    resume_dir = resume_dir_for(model_out)
    run_id = fingerprint(model_name, image, params, seed, annotations)
    state = start_or_resume(resume_dir, run_id, fit, generator)

    live_dir = resume_dir / "live"
    with Live(str(live_dir), resume=state["epoch"] > 0, dvcyaml=None, save_dvc_exp=False) as live:
        save = functools.partial(save_state, resume_dir, run_id, fit, generator, state)
        run_epochs(fit, params, train_data, val_data, generator, live, state, save)
        live.summary["best"] = state["best"]

    spec = ModelSpec(model_name, classes, image.size, channels, fit.mean, fit.std)
    if fit.rule is not None:
        spec = multilabel_spec(spec, fit, state["best_state"], params, val_data)
    with staged_outputs() as staged:  # the model file and its metrics land together
        write_checkpoint(staged.file(model_out), spec, state["best_state"], {"best_epoch": int(state["best"]["epoch"])})
        shutil.copytree(live_dir, staged.folder(metrics_dir), dirs_exist_ok=True)
    shutil.rmtree(resume_dir)
    return state["best"]


def make_fit(
    model_name: str, model: nn.Module, params: TrainParams, normalize: bool, train_data: LabelledImages,
    classes: list[str] | None = None,
) -> Fit:
    """Optimizer, loss, schedule, input normalisation (and, multi-label, the validation decision
    rule) for training `model` on `train_data`; moves `model` to `train.device`."""
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
        model, get_model_entry(model_name).head, params.freeze == "backbone", optimizer,
        create_loss(params, train_data.targets.to(device)), create_schedule(optimizer, params, steps_per_epoch),
        params.clip_grad_norm, list(mean), list(std), validation_rule(params, train_data, classes),
        augment=OnlineAugment(params.crop_padding, params.flip),
        device=device,
        amp=autocast,
        channels_last=channels_last,
        compiled=torch.compile(model) if params.compile else None,
        scaler=torch.amp.GradScaler(device.type) if autocast == torch.float16 else None,
    )


def validation_rule(params: TrainParams, train_data: LabelledImages, classes: list[str] | None) -> DecisionRule | None:
    """Multi-label only: `train.threshold` (0.5 while `tune` waits for the end) and one-of groups."""
    if not train_data.multilabel:
        return None
    labels = classes or [str(k) for k in range(train_data.targets.shape[1])]
    groups, broken = one_of_groups(labels, train_data.targets.numpy())
    if broken:
        print(f"train: label group(s) {', '.join(broken)} are not one-of in the train split; "
              "decoded per label by threshold")
    threshold = 0.5 if params.threshold == "tune" else float(params.threshold)
    return DecisionRule([threshold] * len(labels), groups)


@torch.no_grad()
def multilabel_spec(spec: ModelSpec, fit: Fit, best_state: dict, params: TrainParams, val_data: LabelledImages) -> ModelSpec:
    """The model file's decision rule; `threshold: tune` picks per-label thresholds for best F1 on val."""
    thresholds = fit.rule.thresholds
    if params.threshold == "tune":
        fit.model.load_state_dict(best_state)
        probs = torch.sigmoid(predict_logits(fit.model, val_data.images, fit.mean, fit.std)).numpy()
        thresholds = tune_thresholds(probs, val_data.targets.numpy())
        print("train: tuned thresholds on val: " + ", ".join(f"{t:.2f}" for t in thresholds[:10])
              + (" ..." if len(thresholds) > 10 else ""))
    return dataclasses.replace(spec, task="multilabel", thresholds=list(thresholds), groups=fit.rule.groups)


def start_or_resume(resume_dir: Path, run_id: str, fit: Fit, generator: torch.Generator) -> dict:
    """The loop state: restored from an interrupted run with the same fingerprint, else fresh."""
    state = load_resume_state(resume_dir, run_id)
    if state is None:
        shutil.rmtree(resume_dir, ignore_errors=True)
        return {"epoch": 0, "step": 0, "best": {}, "best_state": None, "bad_epochs": 0}
    restore(fit, generator, state)
    truncate_history(resume_dir / "live", state["step"])
    print(f"train: resuming after epoch {state['epoch']} from {resume_dir}")
    return state


def run_epochs(fit, params: TrainParams, train_data, val_data, generator, live: Live, state: dict, checkpoint) -> None:
    """The epoch loop from `state['epoch'] + 1`, with early stopping; updates `state` in place."""

    def on_batch(loss: torch.Tensor) -> None:
        state["step"] += 1
        if state["step"] % params.log_every == 0:
            live.step = state["step"]
            live.log_metric("train/batch_loss", loss.item())

    for epoch in range(state["epoch"] + 1, params.epochs + 1):
        if params.patience and state["bad_epochs"] >= params.patience:
            print(f"train: early stop, {params.monitor} has not improved for {params.patience} epochs")
            break
        lr = fit.optimizer.param_groups[0]["lr"]
        train_loss = train_one_epoch(fit, train_data, params.batch_size, generator, on_batch)
        val = validate(fit, val_data)
        fit.schedule.after_epoch(val[params.monitor.removeprefix("val/")])
        live.step = state["step"]
        live.log_metric("epoch", epoch)
        live.log_metric("lr", lr)
        live.log_metric("train/loss", train_loss)
        for name, value in val.items():
            live.log_metric(f"val/{name}", value)
        print(f"epoch {epoch}: train/loss {train_loss:.4f} " + " ".join(f"val/{k} {v:.4f}" for k, v in val.items()))
        progressed = improved(val, state["best"], params.monitor, tie_break=False)
        state["bad_epochs"] = 0 if progressed else state["bad_epochs"] + 1
        if improved(val, state["best"], params.monitor):
            state["best"] = {"epoch": epoch, **{f"val/{k}": v for k, v in val.items()}}
            state["best_state"] = {k: v.detach().to("cpu", copy=True) for k, v in fit.model.state_dict().items()}
        state["epoch"] = epoch
        live.make_summary()
        checkpoint()


def save_state(resume_dir: Path, run_id: str, fit: Fit, generator: torch.Generator, state: dict) -> None:
    """Everything needed to continue after the epoch in `state`, written atomically."""
    payload = {
        **state,
        "fingerprint": run_id,
        "model": fit.model.state_dict(),
        "optimizer": fit.optimizer.state_dict(),
        "schedule": fit.schedule.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if fit.device.type == "cuda" else [],
        "shuffle_rng": generator.get_state(),
        "scaler": fit.scaler.state_dict() if fit.scaler else {},
    }
    with atomic_file(resume_dir / "state.pt") as tmp:
        torch.save(payload, tmp)


def restore(fit: Fit, generator: torch.Generator, state: dict) -> None:
    fit.model.load_state_dict(state.pop("model"))
    fit.optimizer.load_state_dict(state.pop("optimizer"))
    fit.schedule.load_state_dict(state.pop("schedule"))
    torch.set_rng_state(state.pop("torch_rng"))
    cuda_rng = state.pop("cuda_rng", [])
    if cuda_rng and fit.device.type == "cuda":
        torch.cuda.set_rng_state_all(cuda_rng)
    generator.set_state(state.pop("shuffle_rng"))
    scaler = state.pop("scaler", {})
    if scaler and fit.scaler:
        fit.scaler.load_state_dict(scaler)
    state.pop("fingerprint")
