"""torchvision ResNets, adapted to the number of input channels and classes."""

from __future__ import annotations

import torchvision
from torch import nn

from imgpipe.models.registry import register_model


def with_input_channels(model: nn.Module, in_channels: int) -> nn.Module:
    """Replace a torchvision ResNet stem so it takes `in_channels` instead of 3."""
    if in_channels != 3:
        old = model.conv1
        model.conv1 = nn.Conv2d(
            in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False
        )
    return model


@register_model("resnet18", head="fc", weights=torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
def resnet18(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """torchvision's ResNet18, from scratch (random init)."""
    return with_input_channels(torchvision.models.resnet18(weights=None, num_classes=num_classes), in_channels)
