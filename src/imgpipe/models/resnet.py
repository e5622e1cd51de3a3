"""torchvision ResNets, adapted to the number of input channels and classes.

torchvision is imported when a model is built, not with this module (see `imgpipe.models.registry`).
"""

from __future__ import annotations

from torch import nn

from imgpipe.models.adapt import init_conv, with_input_channels
from imgpipe.models.registry import register_model


@register_model("resnet18", head="fc", weights="ResNet18_Weights.IMAGENET1K_V1")
def resnet18(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """torchvision's ResNet18, from scratch (random init)."""
    from torchvision.models import resnet18

    return with_input_channels(resnet18(weights=None, num_classes=num_classes), "conv1", in_channels)


@register_model("resnet50", head="fc", weights="ResNet50_Weights.IMAGENET1K_V2")
def resnet50(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """torchvision's ResNet50, from scratch (random init)."""
    from torchvision.models import resnet50

    return with_input_channels(resnet50(weights=None, num_classes=num_classes), "conv1", in_channels)


@register_model("resnet18_small", head="fc")
def resnet18_small(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """ResNet18 with a small-image stem: 5x5 stride-1 conv, then adaptive max pooling.

    torchvision's stem (7x7 stride-2 conv, then a stride-2 max pool) divides the image by 4 before
    the first residual block, leaving 28 px digits 7x7; this one divides by 2 only. No ImageNet
    weights: a 5x5 conv1 cannot take the 7x7 pretrained kernels.
    """
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = init_conv(nn.Conv2d(in_channels, 64, kernel_size=5, stride=1, padding=2, bias=False))  # (B, 64, S, S)
    # A fixed output of S // 2 halves the map whatever S is (28 px -> 14x14, so layer4 sees 2x2);
    # an adaptive pool also tolerates odd sizes, where MaxPool2d(2) would drop the last row.
    model.maxpool = nn.AdaptiveMaxPool2d(image_size // 2)  # (B, 64, S/2, S/2)
    return model
