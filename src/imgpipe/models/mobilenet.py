"""torchvision MobileNetV3s, adapted to the number of input channels and classes.

torchvision is imported when a model is built, not with this module (see `imgpipe.models.registry`).
"""

from __future__ import annotations

from torch import nn

from imgpipe.models.adapt import with_input_channels
from imgpipe.models.registry import check_dropout, register_model

STEM_CONV = "features.0.0"  # the first Conv2dNormActivation's Conv2d
# torchvision builds MobileNetV3 with BatchNorm momentum 0.01, tuned for ImageNet's 600-epoch
# schedule. On short runs the running statistics then lag so far behind the weights that
# eval-mode accuracy stays at chance (measured on the digits after 4 epochs: 0.10 with 0.01,
# 0.99 with 0.1), so we use PyTorch's default. Momentum is not stored in state dicts, so
# ImageNet weights still load.
BN_MOMENTUM = 0.1


def with_bn_momentum(model: nn.Module, momentum: float = BN_MOMENTUM) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = momentum
    return model


# IMAGENET1K_V1 for both: it is all torchvision has for Small, so both sizes share one training recipe.
@register_model("mobilenetv3", head="classifier.3", weights="MobileNet_V3_Large_Weights.IMAGENET1K_V1")
def mobilenetv3(*, num_classes: int, in_channels: int, image_size: int, dropout: float = 0.2) -> nn.Module:
    """torchvision's MobileNetV3-Large, from scratch (random init), BatchNorm momentum 0.1;
    `dropout` before the classifier (torchvision's default 0.2)."""
    from torchvision.models import mobilenet_v3_large

    check_dropout(dropout)
    model = mobilenet_v3_large(weights=None, num_classes=num_classes, dropout=dropout)
    return with_bn_momentum(with_input_channels(model, STEM_CONV, in_channels))


@register_model("mobilenetv3_small", head="classifier.3", weights="MobileNet_V3_Small_Weights.IMAGENET1K_V1")
def mobilenetv3_small(*, num_classes: int, in_channels: int, image_size: int, dropout: float = 0.2) -> nn.Module:
    """torchvision's MobileNetV3-Small, from scratch (random init), BatchNorm momentum 0.1;
    `dropout` before the classifier (torchvision's default 0.2)."""
    from torchvision.models import mobilenet_v3_small

    check_dropout(dropout)
    model = mobilenet_v3_small(weights=None, num_classes=num_classes, dropout=dropout)
    return with_bn_momentum(with_input_channels(model, STEM_CONV, in_channels))
