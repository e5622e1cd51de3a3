"""Batched forward passes shared by validation, evaluation and prediction."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from imgpipe.data.tensors import to_model_input


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 256,
) -> torch.Tensor:
    """Logits (N, K) for uint8 images (N, C, H, W), in eval mode."""
    was_training = model.training
    model.eval()
    outputs = [
        model(to_model_input(images[i : i + batch_size], mean, std))
        for i in range(0, len(images), batch_size)
    ]
    model.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0, 0)
