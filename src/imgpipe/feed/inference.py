"""Batched forward passes shared by validation, evaluation and prediction."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from imgpipe.feed.batches import batches
from imgpipe.feed.device import model_device
from imgpipe.feed.tensors import to_model_input


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 256,
) -> torch.Tensor:
    """Logits (N, K) on the CPU for uint8 images (N, C, H, W), in eval mode and full precision,
    computed on the model's device."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    mean, std = (torch.tensor(v, device=device) for v in (mean, std))
    order = torch.arange(len(images))
    outputs = [model(to_model_input(x, mean, std)).float() for x, _ in batches(images, order, order, batch_size, device)]
    model.train(was_training)
    return torch.cat(outputs).cpu() if outputs else torch.empty(0, 0)
