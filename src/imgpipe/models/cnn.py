"""Small convolutional networks.

Each takes `width`, the channels of its first conv (later blocks scale with it, as listed per
model), and `dropout`, the rate just before the classifier. Their defaults are the architectures
as first written, so leaving `model_args` empty builds exactly those.
"""

from __future__ import annotations

import math

from torch import nn

from imgpipe.models.registry import check_dropout, register_model, require_arg


def check_width_dropout(width: int, dropout: float) -> None:
    require_arg(width >= 1, "width", width, "an integer >= 1")
    check_dropout(dropout)


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
def cnn(*, num_classes: int, in_channels: int, image_size: int, width: int = 32, dropout: float = 0.2) -> nn.Module:
    """Three conv blocks (width, 2x, 4x channels), global average pooling, one hidden linear layer."""
    check_width_dropout(width, dropout)
    w = width  # W in the shape comments
    return nn.Sequential(
        conv_block(in_channels, w),  # (B, W, S/2, S/2)
        conv_block(w, 2 * w),  # (B, 2W, S/4, S/4)
        conv_block(2 * w, 4 * w),  # (B, 4W, S/8, S/8)
        nn.AdaptiveAvgPool2d(1),  # any input size >= 8 px
        nn.Flatten(),  # (B, 4W)
        nn.Linear(4 * w, 4 * w),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(4 * w, num_classes),
    )


@register_model("cnn_spatial", head="8")
def cnn_spatial(
    *, num_classes: int, in_channels: int, image_size: int, width: int = 32, dropout: float = 0.3
) -> nn.Module:
    """The `cnn` blocks with a head that keeps *where* features are: for labels tied to a place
    in the image (the i-th digit of a number). Global pooling would average that away; as in
    multi-digit recognisers (Goodfellow et al., 2013), a 4x4 map is flattened into dense layers
    (the hidden one 8x `width`)."""
    check_width_dropout(width, dropout)
    w = width  # W in the shape comments
    return nn.Sequential(
        conv_block(in_channels, w),  # (B, W, S/2, S/2)
        conv_block(w, 2 * w),  # (B, 2W, S/4, S/4)
        conv_block(2 * w, 4 * w),  # (B, 4W, S/8, S/8)
        nn.AdaptiveAvgPool2d(4),  # (B, 4W, 4, 4) at any size
        nn.Flatten(),  # (B, 64W)
        nn.Linear(4 * w * 16, 8 * w),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(8 * w, num_classes),
    )


@register_model("cnn_deep", head="13")
def cnn_deep(*, num_classes: int, in_channels: int, image_size: int, width: int = 32, dropout: float = 0.5) -> nn.Module:
    """Five conv blocks (width, 2x, 4x, 4x, 8x channels) with average pooling, dropout 0.25 after
    blocks 1, 3 and 5, one hidden layer (4x width); `dropout` is the last one, before the classifier."""
    check_width_dropout(width, dropout)
    w = width  # W in the shape comments
    return nn.Sequential(
        conv_block(in_channels, w, nn.AvgPool2d(2)),  # (B, W, S/2, S/2)
        nn.Dropout(0.25),
        conv_block(w, 2 * w, nn.AvgPool2d(2)),  # (B, 2W, S/4, S/4)
        conv_block(2 * w, 4 * w, nn.AvgPool2d(2)),  # (B, 4W, S/8, S/8)
        nn.Dropout(0.25),
        conv_block(4 * w, 4 * w, nn.AvgPool2d(2)),  # (B, 4W, S/16, S/16): 1x1 at 28 px
        # Global pooling in the fifth block: a sixth halving would reach 0x0 at 28 px, and it
        # makes the classifier independent of the image size (any S >= 16 works).
        conv_block(4 * w, 8 * w, nn.AdaptiveAvgPool2d(1)),  # (B, 8W, 1, 1)
        nn.Flatten(),  # (B, 8W)
        nn.Dropout(0.25),
        nn.Linear(8 * w, 4 * w, bias=False),  # the batch norm's shift replaces the bias
        nn.BatchNorm1d(4 * w),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(4 * w, num_classes),
    )


@register_model("cnn_custom", head="10")
def cnn_custom(
    *, num_classes: int, in_channels: int, image_size: int, width: int = 25, dropout: float = 0.25
) -> nn.Module:
    """Three conv + max-pool stages (25, 50, 70 filters: `width`, 2x, 2.8x), batch norm after the
    second, two dense layers (256 and 128 units, whatever the width).

    The pools use ceil_mode so odd sizes round up: a 28 px image goes 28 -> 14 -> 7 -> 4 -> 2 -> 1
    instead of losing the last row and column at 7 -> 3, and no size ever pools down to 0. The
    dense layers see the whole flattened map (1x1 up to 32 px, 2x2 at 64 px), sized from `image_size`.
    """
    check_width_dropout(width, dropout)
    side = math.ceil(image_size / 32)  # total stride 1*2 * 2*2 * 2*2, each step rounding up
    w1, w2, w3 = width, 2 * width, round(width * 70 / 25)  # 25, 50, 70 by default
    return nn.Sequential(
        conv_relu_pool(in_channels, w1, kernel=5, stride=1),  # (B, w1, S/2, S/2)
        conv_relu_pool(w1, w2, kernel=5, stride=2),  # (B, w2, S/8, S/8)
        nn.BatchNorm2d(w2),
        conv_relu_pool(w2, w3, kernel=3, stride=2),  # (B, w3, S/32, S/32): 1x1 at 28 and 32 px
        nn.Flatten(),  # (B, w3 * side * side)
        nn.Linear(w3 * side * side, 256),
        nn.ReLU(inplace=True),
        nn.Linear(256, 128),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(128, num_classes),
    )
