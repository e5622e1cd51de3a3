"""A name -> factory registry, in the spirit of torchvision's `models/_api.py`."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from imgpipe.errors import UserError

ModelFactory = Callable[..., nn.Module]
_MODELS: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: register `factory(num_classes, in_channels, image_size) -> nn.Module`."""

    def wrap(factory: ModelFactory) -> ModelFactory:
        if name in _MODELS:
            raise ValueError(f"model '{name}' is already registered")
        _MODELS[name] = factory
        return factory

    return wrap


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, *, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """Build a registered model; an unknown name is a `UserError` listing the valid ones."""
    if name not in _MODELS:
        raise UserError(f"params: model '{name}' is not registered; choose one of: {', '.join(list_models())}")
    return _MODELS[name](num_classes=num_classes, in_channels=in_channels, image_size=image_size)
