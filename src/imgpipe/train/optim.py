"""Name -> factory dicts for optimizers, losses and learning-rate schedules (`train.*`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR, ReduceLROnPlateau, StepLR

from imgpipe.core.errors import UserError
from imgpipe.core.params import TrainParams

Params = Iterable[nn.Parameter]

OPTIMIZERS: dict[str, Callable[[Params, TrainParams], torch.optim.Optimizer]] = {
    "adam": lambda ps, p: torch.optim.Adam(ps, lr=p.lr, weight_decay=p.weight_decay),
    "adamw": lambda ps, p: torch.optim.AdamW(ps, lr=p.lr, weight_decay=p.weight_decay),
    "sgd": lambda ps, p: torch.optim.SGD(
        ps, lr=p.lr, momentum=p.momentum, nesterov=p.nesterov and p.momentum > 0, weight_decay=p.weight_decay
    ),
    "adamax": lambda ps, p: torch.optim.Adamax(ps, lr=p.lr, weight_decay=p.weight_decay),
    "adadelta": lambda ps, p: torch.optim.Adadelta(ps, lr=p.lr, weight_decay=p.weight_decay),
}


def _on_one_hot(loss: nn.Module, probabilities: bool) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Adapt a loss on one-hot targets to class-index targets (for comparison with cross entropy)."""

    def compute(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:  # (B, K), (B,)
        one_hot = nn.functional.one_hot(targets, logits.shape[1]).to(logits.dtype)  # (B, K)
        return loss(logits.softmax(dim=1) if probabilities else logits, one_hot)

    return compute


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES: dict[str, Callable[[TrainParams], LossFn]] = {
    "cross_entropy": lambda p: nn.CrossEntropyLoss(label_smoothing=p.label_smoothing),
    "bce": lambda p: _on_one_hot(nn.BCEWithLogitsLoss(), probabilities=False),
    "multilabel_soft_margin": lambda p: _on_one_hot(nn.MultiLabelSoftMarginLoss(), probabilities=False),
    # Regression losses compare the softmax probabilities with the one-hot target.
    "mse": lambda p: _on_one_hot(nn.MSELoss(), probabilities=True),
    "l1": lambda p: _on_one_hot(nn.L1Loss(), probabilities=True),
}


def _on_sigmoid(loss: nn.Module) -> LossFn:
    """A regression loss between per-label probabilities and the 0/1 targets."""
    return lambda logits, targets: loss(torch.sigmoid(logits), targets)


# Multi-label targets are (B, K) 0/1 floats; every label is its own binary decision. Which table
# serves a run, and `auto`, are the task's choice (`imgpipe.task.tasks`).
MULTILABEL_LOSSES: dict[str, Callable[[torch.Tensor | None], LossFn]] = {
    "bce": lambda pos_weight: nn.BCEWithLogitsLoss(pos_weight=pos_weight),
    "multilabel_soft_margin": lambda pos_weight: nn.MultiLabelSoftMarginLoss(),
    "mse": lambda pos_weight: _on_sigmoid(nn.MSELoss()),
    "l1": lambda pos_weight: _on_sigmoid(nn.L1Loss()),
}


def positive_weights(targets: torch.Tensor) -> torch.Tensor:
    """`pos_weight: auto`: negatives / positives per label of (N, K) training targets."""
    positives = targets.sum(dim=0)  # (K,)
    ratio = (len(targets) - positives) / positives.clamp_min(1)
    # A label on every image (or on none) has no imbalance to correct; 0 would silence it.
    return torch.where((positives > 0) & (positives < len(targets)), ratio, torch.ones_like(ratio))


@dataclass
class Schedule:
    """A learning-rate scheduler and when it steps: after every batch or after every epoch."""

    scheduler: LRScheduler | ReduceLROnPlateau | None
    per_batch: bool = False

    def after_batch(self) -> None:
        if self.scheduler is not None and self.per_batch:
            self.scheduler.step()

    def after_epoch(self, monitored: float) -> None:
        if self.scheduler is None or self.per_batch:
            return
        if isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step(monitored)
        else:
            self.scheduler.step()

    def state_dict(self) -> dict:
        return self.scheduler.state_dict() if self.scheduler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state)


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR factor: linear warm-up to 1, then cosine decay to 0 at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


SCHEDULES: dict[str, Callable[[torch.optim.Optimizer, TrainParams, int], Schedule]] = {
    "none": lambda opt, p, n: Schedule(None),
    "step": lambda opt, p, n: Schedule(StepLR(opt, step_size=p.lr_step_size, gamma=p.lr_gamma)),
    "cosine": lambda opt, p, n: Schedule(
        LambdaLR(opt, warmup_cosine(p.warmup_epochs * n, p.epochs * n)), per_batch=True
    ),
    "onecycle": lambda opt, p, n: Schedule(OneCycleLR(opt, max_lr=p.lr, total_steps=p.epochs * n), per_batch=True),
    "plateau": lambda opt, p, n: Schedule(
        ReduceLROnPlateau(
            opt, mode="min" if p.monitor == "val/loss" else "max", factor=p.lr_gamma, patience=p.lr_patience
        )
    ),
}


def choose(table: dict, key: str, value: str):
    """`table[value]`, or a one-line error naming `train.<key>` and the choices."""
    if value not in table:
        raise UserError(f"params: train.{key} '{value}' is unknown; choose one of: {', '.join(table)}")
    return table[value]


def create_optimizer(parameters: Params, params: TrainParams) -> torch.optim.Optimizer:
    return choose(OPTIMIZERS, "optimizer", params.optimizer)(parameters, params)


def create_schedule(optimizer: torch.optim.Optimizer, params: TrainParams, steps_per_epoch: int) -> Schedule:
    return choose(SCHEDULES, "scheduler", params.scheduler)(optimizer, params, steps_per_epoch)
