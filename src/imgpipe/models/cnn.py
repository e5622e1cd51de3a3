"""Small convolutional networks."""

from __future__ import annotations

import math

from torch import nn

from imgpipe.models.registry import register_model


def conv_block(cin: int, cout: int, pool: nn.Module | None = None) -> nn.Sequential:
    """3x3 conv -> batch norm -> ReLU -> `pool` (by default a 2x2 max pool, halving H and W)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2) if pool is None else pool,
    )


def conv_relu_pool(cin: int, cout: int, kernel: int, stride: int) -> nn.Sequential:
    """Conv with 'same'-style padding -> ReLU -> 2x2 max pool that rounds odd sizes up."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2),  # (B, cout, ceil(H/stride), ...)
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2, ceil_mode=True),  # (B, cout, ceil(H/2), ceil(W/2))
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


@register_model("cnn_spatial", head="8")
def cnn_spatial(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """The `cnn` blocks with a head that keeps *where* features are: for labels tied to a place
    in the image (the i-th digit of a number). Global pooling would average that away; as in
    multi-digit recognisers (Goodfellow et al., 2013), a 4x4 map is flattened into dense layers."""
    return nn.Sequential(
        conv_block(in_channels, 32),  # (B, 32, S/2, S/2)
        conv_block(32, 64),  # (B, 64, S/4, S/4)
        conv_block(64, 128),  # (B, 128, S/8, S/8)
        nn.AdaptiveAvgPool2d(4),  # (B, 128, 4, 4) at any size
        nn.Flatten(),  # (B, 2048)
        nn.Linear(128 * 16, 256),
        nn.ReLU(inplace=True),
        nn.Dropout(0.3),
        nn.Linear(256, num_classes),
    )


@register_model("cnn_deep", head="13")
def cnn_deep(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """Five conv blocks with average pooling, dropout after blocks 1, 3 and 5, one hidden layer."""
    return nn.Sequential(
        conv_block(in_channels, 32, nn.AvgPool2d(2)),  # (B, 32, S/2, S/2)
        nn.Dropout(0.25),
        conv_block(32, 64, nn.AvgPool2d(2)),  # (B, 64, S/4, S/4)
        conv_block(64, 128, nn.AvgPool2d(2)),  # (B, 128, S/8, S/8)
        nn.Dropout(0.25),
        conv_block(128, 128, nn.AvgPool2d(2)),  # (B, 128, S/16, S/16): 1x1 at 28 px
        # Global pooling in the fifth block: a sixth halving would reach 0x0 at 28 px, and it
        # makes the classifier independent of the image size (any S >= 16 works).
        conv_block(128, 256, nn.AdaptiveAvgPool2d(1)),  # (B, 256, 1, 1)
        nn.Flatten(),  # (B, 256)
        nn.Dropout(0.25),
        nn.Linear(256, 128, bias=False),  # the batch norm's shift replaces the bias
        nn.BatchNorm1d(128),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(128, num_classes),
    )


@register_model("cnn_custom", head="10")
def cnn_custom(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """Three conv + max-pool stages (25, 50, 70 filters), batch norm after the second, two dense layers.

    The pools use ceil_mode so odd sizes round up: a 28 px image goes 28 -> 14 -> 7 -> 4 -> 2 -> 1
    instead of losing the last row and column at 7 -> 3, and no size ever pools down to 0. The
    dense layers see the whole flattened map (1x1 up to 32 px, 2x2 at 64 px), sized from `image_size`.
    """
    side = math.ceil(image_size / 32)  # total stride 1*2 * 2*2 * 2*2, each step rounding up
    return nn.Sequential(
        conv_relu_pool(in_channels, 25, kernel=5, stride=1),  # (B, 25, S/2, S/2)
        conv_relu_pool(25, 50, kernel=5, stride=2),  # (B, 50, S/8, S/8)
        nn.BatchNorm2d(50),
        conv_relu_pool(50, 70, kernel=3, stride=2),  # (B, 70, S/32, S/32): 1x1 at 28 and 32 px
        nn.Flatten(),  # (B, 70 * side * side)
        nn.Linear(70 * side * side, 256),
        nn.ReLU(inplace=True),
        nn.Linear(256, 128),
        nn.ReLU(inplace=True),
        nn.Dropout(0.25),
        nn.Linear(128, num_classes),
    )
