"""A baseline that ignores the image and always predicts the training data's class prior."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from imgpipe.models.registry import register_model


class PriorLogits(nn.Module):
    """One learnable logit per class; trained with cross-entropy its softmax is the class prior."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, x: Tensor) -> Tensor:
        # repeat, not expand: callers get their own (B, num_classes) tensor, safe to modify in place
        return self.bias.repeat(x.shape[0], 1)  # (B, num_classes)


class ClassPrior(nn.Module):
    """The whole model is its head: `head` (a PriorLogits) holds its only parameter."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.head = PriorLogits(num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(x)  # (B, num_classes), the same row for every image


@register_model("dummy", head="head")
def dummy(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """The class-prior baseline: any model worth training must beat its accuracy and loss."""
    return ClassPrior(num_classes)
