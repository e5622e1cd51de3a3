"""A plain multilayer perceptron on flattened pixels."""

from __future__ import annotations

from torch import nn

from imgpipe.models.registry import register_model


def make_mlp(in_features: int, hidden: list[int], num_classes: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]  # (B, C, H, W) -> (B, C*H*W)
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU(inplace=True)]
        in_features = width
    layers.append(nn.Linear(in_features, num_classes))
    return nn.Sequential(*layers)


@register_model("mlp", head="11")
def mlp(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """Six fully connected layers with ReLU between them."""
    return make_mlp(in_channels * image_size * image_size, [512, 256, 256, 128, 64], num_classes)
