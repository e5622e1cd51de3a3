"""Small convolutional networks."""

from __future__ import annotations

from torch import nn

from imgpipe.models.registry import register_model


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """3x3 conv -> batch norm -> ReLU -> 2x2 max pool (halves H and W)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


@register_model("cnn", head="8")
def cnn(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """Three conv blocks, global average pooling, one hidden linear layer."""
    return nn.Sequential(
        conv_block(in_channels, 32),  # (B, 32, S/2, S/2)
        conv_block(32, 64),  # (B, 64, S/4, S/4)
        conv_block(64, 128),  # (B, 128, S/8, S/8)
        nn.AdaptiveAvgPool2d(1),  # any input size >= 8 px
        nn.Flatten(),  # (B, 128)
        nn.Linear(128, 128),
        nn.ReLU(inplace=True),
        nn.Dropout(0.2),
        nn.Linear(128, num_classes),
    )
