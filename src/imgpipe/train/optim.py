"""Name -> factory dicts for optimizers and learning-rate schedules (`train.*`); the losses are the task's (`imgpipe.task.losses`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR, ReduceLROnPlateau, StepLR

from imgpipe.core.params import TrainParams, choose

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


def create_optimizer(parameters: Params, params: TrainParams) -> torch.optim.Optimizer:
    return choose(OPTIMIZERS, "optimizer", params.optimizer)(parameters, params)


def create_schedule(optimizer: torch.optim.Optimizer, params: TrainParams, steps_per_epoch: int) -> Schedule:
    return choose(SCHEDULES, "scheduler", params.scheduler)(optimizer, params, steps_per_epoch)
