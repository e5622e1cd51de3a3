"""A plain multilayer perceptron on flattened pixels."""

from __future__ import annotations

from torch import nn

from imgpipe.models.registry import check_dropout, register_model, require_arg


def make_mlp(in_features: int, hidden: list[int], num_classes: int, dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]  # (B, C, H, W) -> (B, C*H*W)
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU(inplace=True)]
        in_features = width
    if dropout > 0:  # in the last ReLU's slot, so the classifier keeps its index (the registered head)
        layers[-1] = nn.Sequential(layers[-1], nn.Dropout(dropout))
    layers.append(nn.Linear(in_features, num_classes))
    return nn.Sequential(*layers)


@register_model("mlp", head="11")
def mlp(*, num_classes: int, in_channels: int, image_size: int, width: int = 512, dropout: float = 0.0) -> nn.Module:
    """Six fully connected layers with ReLU between them: `width` hidden units, then 1/2, 1/2, 1/4
    and 1/8 of it (512, 256, 256, 128, 64 by default); `dropout` before the classifier (none by default)."""
    require_arg(width >= 8, "width", width, "an integer >= 8 (the last hidden layer has width / 8 units)")
    check_dropout(dropout)
    hidden = [width, width // 2, width // 2, width // 4, width // 8]
    return make_mlp(in_channels * image_size * image_size, hidden, num_classes, dropout)
