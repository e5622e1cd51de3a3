"""The train stage: fit a registered model on the train split, keep the best epoch by validation."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from dvclive import Live
from torch import nn

from imgpipe.checkpoint import ModelSpec, save_checkpoint
from imgpipe.data.annotations import class_names, read_annotations
from imgpipe.data.tensors import LabelledImages, channel_stats, load_split, to_model_input
from imgpipe.errors import UserError
from imgpipe.inference import predict_logits
from imgpipe.metrics import classification_metrics
from imgpipe.models import create_model
from imgpipe.outputs import atomic_dir
from imgpipe.params import ImageParams, TrainParams
from imgpipe.progress import progress

OPTIMIZERS: dict[str, Callable[[Iterable[nn.Parameter], TrainParams], torch.optim.Optimizer]] = {
    "adam": lambda params, p: torch.optim.Adam(params, lr=p.lr, weight_decay=p.weight_decay),
    "sgd": lambda params, p: torch.optim.SGD(params, lr=p.lr, momentum=0.9, weight_decay=p.weight_decay),
}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def create_optimizer(model: nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    if params.optimizer not in OPTIMIZERS:
        raise UserError(
            f"params: train.optimizer '{params.optimizer}' is unknown; choose one of: {', '.join(OPTIMIZERS)}"
        )
    return OPTIMIZERS[params.optimizer](model.parameters(), params)


def train_one_epoch(model, optimizer, data: LabelledImages, mean, std, batch_size, generator, on_batch) -> float:
    """One pass over `data` in a shuffled order; returns the mean training loss."""
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    order = torch.randperm(len(data.targets), generator=generator)
    total, seen = 0.0, 0
    batches = range(0, len(order), batch_size)
    for start in progress(batches, desc="train", total=len(batches)):
        idx = order[start : start + batch_size]
        x = to_model_input(data.images[idx], mean, std)  # (B, C, H, W) float
        loss = loss_fn(model(x), data.targets[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(idx)
        seen += len(idx)
        on_batch(loss.item())
    return total / seen


def validate(model, data: LabelledImages, mean, std) -> dict[str, float]:
    logits = predict_logits(model, data.images, mean, std)
    loss = nn.functional.cross_entropy(logits, data.targets).item()
    scores = classification_metrics(data.targets.numpy(), logits.argmax(1).numpy())
    return {"loss": loss, "accuracy": scores["accuracy"], "f1_macro": scores["f1_macro"]}


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
    model = create_model(model_name, num_classes=len(classes), in_channels=image.channels, image_size=image.size)
    optimizer = create_optimizer(model, params)
    train_data = load_split(table, "train", images_root, classes, image.size, image.channels)
    val_data = load_split(table, "val", images_root, classes, image.size, image.channels)
    mean, std = channel_stats(train_data.images) if image.normalize else ([0.0] * image.channels, [1.0] * image.channels)

    generator = torch.Generator().manual_seed(seed)
    best: dict[str, float] = {}
    best_state = None
    with atomic_dir(metrics_dir) as live_dir, Live(str(live_dir), dvcyaml=None, save_dvc_exp=False) as live:
        step = 0  # optimizer steps so far: the x axis of every dvclive plot

        def on_batch(loss: float) -> None:
            nonlocal step
            step += 1
            if step % params.log_every == 0:
                live.step = step
                live.log_metric("train/batch_loss", loss)

        for epoch in range(1, params.epochs + 1):
            train_loss = train_one_epoch(model, optimizer, train_data, mean, std, params.batch_size, generator, on_batch)
            val = validate(model, val_data, mean, std)
            live.step = step
            live.log_metric("epoch", epoch)
            live.log_metric("train/loss", train_loss)
            for name, value in val.items():
                live.log_metric(f"val/{name}", value)
            print(f"epoch {epoch}: train/loss {train_loss:.4f} " + " ".join(f"val/{k} {v:.4f}" for k, v in val.items()))
            # Best by validation accuracy; ties go to the lower validation loss.
            if not best or (val["accuracy"], -val["loss"]) > (best["val/accuracy"], -best["val/loss"]):
                best = {"epoch": epoch, **{f"val/{k}": v for k, v in val.items()}}
                best_state = copy.deepcopy(model.state_dict())
        live.summary["best"] = best

    spec = ModelSpec(model_name, classes, image.size, image.channels, list(mean), list(std))
    save_checkpoint(model_out, spec, best_state, extra={"best_epoch": int(best["epoch"])})
    return best
