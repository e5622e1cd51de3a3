"""Helpers that adapt torchvision models to imgpipe's inputs."""

from __future__ import annotations

from torch import nn


def init_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """Initialise a replacement conv as torchvision's ResNet and MobileNet init theirs."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def with_input_channels(model: nn.Module, conv: str, in_channels: int) -> nn.Module:
    """Replace the Conv2d at dotted path `conv` by a fresh one taking `in_channels`.

    Everything else about the layer (width, kernel, stride, padding, bias) is kept, so the rest of
    the network is unchanged. A no-op when the channels already match, which keeps a 3-channel
    model's state dict identical to torchvision's (and so able to load ImageNet weights).
    """
    old = model.get_submodule(conv)
    if not isinstance(old, nn.Conv2d):
        raise TypeError(f"'{conv}' is a {type(old).__name__}, not a Conv2d")
    if in_channels != old.in_channels:
        new = nn.Conv2d(
            in_channels,
            old.out_channels,
            old.kernel_size,
            old.stride,
            old.padding,
            old.dilation,
            bias=old.bias is not None,
            padding_mode=old.padding_mode,
        )
        parent, _, attr = conv.rpartition(".")
        setattr(model.get_submodule(parent), attr, init_conv(new))
    return model
