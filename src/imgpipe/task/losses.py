"""The losses each task trains with, by `train.loss`: class-index targets (single-label) or (N, K)
0/1 targets (multi-label). Which table serves a run, and `auto`, are the task's choice
(`imgpipe.task.tasks`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from imgpipe.core.params import TrainParams


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


# Multi-label targets are (B, K) 0/1 floats; every label is its own binary decision.
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
