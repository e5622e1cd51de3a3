"""`Fit`: everything one optimisation step needs (model, optimizer, the task's loss, schedule,
normalisation, device, precision, the ranks), built by `make_fit`; and the models it trains, fresh
or pretrained, with `train.freeze_epochs`' two phases (`unfrozen`)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from imgpipe.core.params import TrainParams
from imgpipe.feed.batches import OnlineAugment
from imgpipe.feed.device import amp_dtype, resolve_device
from imgpipe.feed.tensors import LabelledImages, channel_stats
from imgpipe.models.catalog import create_model, get_model_entry
from imgpipe.models.pretrained import freeze_backbone, load_pretrained, normalization
from imgpipe.task.losses import LossFn
from imgpipe.task.tasks import Multiclass, Task
from imgpipe.train.distributed import SINGLE, Ranks, parallel, rank_device, sync_batchnorm
from imgpipe.train.optim import Schedule, create_optimizer, create_schedule

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
    # train.sampler balanced: (N,) each training image's chance to be drawn (`draw_order`); None: a shuffle
    sampling: torch.Tensor | None = None
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
        sampling=task.sample_weights(params, train_data.targets),
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
