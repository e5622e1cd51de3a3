"""A name -> factory registry, in the spirit of torchvision's `models/_api.py`.

torchvision is imported only when a torchvision model or its weights are asked for: importing
it imports torch._dynamo (through torchvision.ops), 1.4 s of every stage's start on a laptop CPU,
which the default `cnn` never needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from imgpipe.errors import UserError

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

ModelFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    build: ModelFactory  # (num_classes, in_channels, image_size) -> nn.Module
    head: str  # dotted path of the final classifier nn.Linear, e.g. "fc"; dummy's is a bias-only module
    weights_name: str | None = None  # torchvision's ImageNet weights, e.g. "ResNet18_Weights.IMAGENET1K_V1"

    @property
    def weights(self) -> WeightsEnum | None:
        """torchvision's ImageNet weights, for `train.pretrained: imagenet`."""
        if self.weights_name is None:
            return None
        from torchvision.models import get_weight

        return get_weight(self.weights_name)


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, *, head: str, weights: str | None = None) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: register `factory(*, num_classes, in_channels, image_size) -> nn.Module`.

    `head` names the output layer (replaced for pretrained weights, the only part trained
    with `train.freeze: backbone`); `weights`, torchvision's name for ImageNet weights
    (`ResNet18_Weights.IMAGENET1K_V1`), enables `train.pretrained: imagenet`.
    """

    def wrap(factory: ModelFactory) -> ModelFactory:
        if name in _MODELS:
            raise ValueError(f"model '{name}' is already registered")
        _MODELS[name] = ModelEntry(factory, head, weights)
        return factory

    return wrap


def list_models() -> list[str]:
    return sorted(_MODELS)


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry; an unknown name is a `UserError` listing the valid ones."""
    if name not in _MODELS:
        raise UserError(f"params: model '{name}' is not registered; choose one of: {', '.join(list_models())}")
    return _MODELS[name]


def create_model(name: str, *, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """Build a registered model with freshly initialised weights."""
    return get_model_entry(name).build(num_classes=num_classes, in_channels=in_channels, image_size=image_size)
