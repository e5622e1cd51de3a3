"""A small EfficientNet-style network: MBConv blocks with squeeze-and-excitation.

torchvision's EfficientNets start at B0 (5.3 M parameters, total stride 32); this one keeps the
same building block (with torchvision's conv-norm-activation and squeeze-excitation layers) at
about 0.2 M parameters and a total stride of 16, so a 28 px image still has a 2x2 map at the end.
torchvision's layers are imported when a model is built (see `imgpipe.models.registry`).
"""

from __future__ import annotations

from torch import Tensor, nn

from imgpipe.models.registry import check_dropout, register_model

SE_RATIO = 0.25  # squeeze width, as a fraction of the block's input channels

# (expansion, kernel, stride, out_channels) for each MBConv block, after a 16-channel stem.
BLOCKS = (
    (4, 3, 1, 16),
    (4, 3, 2, 24),
    (4, 3, 1, 24),
    (4, 5, 2, 40),
    (4, 5, 1, 40),
    (4, 3, 2, 80),
    (4, 5, 1, 80),
)


class MBConv(nn.Module):
    """Inverted bottleneck: 1x1 expand -> depthwise conv -> squeeze-and-excitation -> 1x1 project."""

    def __init__(self, cin: int, cout: int, expansion: int, kernel: int, stride: int) -> None:
        super().__init__()
        from torchvision.ops import Conv2dNormActivation, SqueezeExcitation

        hidden = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.block = nn.Sequential(
            Conv2dNormActivation(cin, hidden, 1, activation_layer=nn.SiLU),
            Conv2dNormActivation(hidden, hidden, kernel, stride, groups=hidden, activation_layer=nn.SiLU),
            SqueezeExcitation(hidden, max(1, int(cin * SE_RATIO)), activation=nn.SiLU),
            Conv2dNormActivation(hidden, cout, 1, activation_layer=None),  # linear: no activation
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)  # (B, cout, H/stride, W/stride)
        return x + out if self.residual else out


class EfficientNetSE(nn.Module):
    """Stem, MBConv blocks, 1x1 conv head, global average pooling, dropout, linear classifier."""

    def __init__(self, in_channels: int, num_classes: int, stem: int = 16, width: int = 320, dropout: float = 0.2):
        super().__init__()
        from torchvision.ops import Conv2dNormActivation

        layers: list[nn.Module] = [Conv2dNormActivation(in_channels, stem, 3, stride=2, activation_layer=nn.SiLU)]
        cin = stem
        for expansion, kernel, stride, cout in BLOCKS:
            layers.append(MBConv(cin, cout, expansion, kernel, stride))
            cin = cout
        layers.append(Conv2dNormActivation(cin, width, 1, activation_layer=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)  # (B, width, S/16, S/16)
        x = self.avgpool(x).flatten(1)  # (B, width)
        return self.classifier(x)  # (B, num_classes)


@register_model("efficientnet_se", head="classifier.1")
def efficientnet_se(*, num_classes: int, in_channels: int, image_size: int, dropout: float = 0.2) -> nn.Module:
    """A seven-block EfficientNet-style network with 3x3 and 5x5 depthwise convs; `dropout` before
    the classifier."""
    check_dropout(dropout)
    return EfficientNetSE(in_channels, num_classes, dropout=dropout)
