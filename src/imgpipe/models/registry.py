"""A name -> factory registry, in the spirit of torchvision's `models/_api.py`.

torchvision is imported only when a torchvision model or its weights are asked for: importing
it imports torch._dynamo (through torchvision.ops), 1.4 s of every stage's start on a laptop CPU,
which the default `cnn` never needs.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from imgpipe.core.errors import UserError
from imgpipe.core.params import PIPELINE_MODEL_ARGS, TYPE_NAMES, convert, require

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

ModelFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    build: ModelFactory  # (num_classes, in_channels, image_size, **model_args) -> nn.Module
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
    """Decorator: register `factory(*, num_classes, in_channels, image_size, ...) -> nn.Module`.

    Any further keyword arguments of `factory` (`width: int = 32`) are the model's own, set by
    `model_args` in params.yaml; their annotations say which YAML values they take.

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


def create_model(name: str, *, num_classes: int, in_channels: int, image_size: int, **model_args: Any) -> nn.Module:
    """Build a registered model with freshly initialised weights.

    `model_args` (params.yaml's `model_args`) go to its factory as keyword arguments, checked
    first against the factory's signature: a name it does not take, or a value of the wrong
    type, is a one-line `UserError`.
    """
    entry = get_model_entry(name)
    kwargs = check_model_args(name, entry.build, model_args)
    return entry.build(num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)


def model_args_of(factory: ModelFactory) -> list[str]:
    """The names `model_args` may set for `factory`: its keyword arguments but num_classes, in_channels
    and image_size."""
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = inspect.signature(factory).parameters.values()
    return [p.name for p in params if p.kind in kinds and p.name not in PIPELINE_MODEL_ARGS]


def check_model_args(name: str, factory: ModelFactory, model_args: Mapping[str, Any]) -> dict[str, Any]:
    """`model_args` checked against `factory`'s signature, an int passed where a float is annotated
    converted (YAML's `0` for a dropout). A factory taking `**kwargs` accepts any name, as timm's do."""
    accepted = model_args_of(factory)
    any_name = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(factory).parameters.values())
    try:
        hints = typing.get_type_hints(factory)
    except NameError:  # an annotation that does not resolve: values go unchecked
        hints = {}
    checked = {}
    for key, value in model_args.items():
        if key not in accepted and not any_name:
            takes = f"it takes: {', '.join(accepted)}" if accepted else "it takes none"
            raise UserError(f"params: model_args '{key}' is not an argument of model '{name}'; {takes}")
        checked[key] = _typed(value, hints.get(key), f"model_args.{key}")
    return checked


def _typed(value: Any, hint: Any, key: str) -> Any:
    """`value` as a bool, int, float or str annotation asks, checked as params.yaml's own values
    are; other annotations pass it as is."""
    if hint not in TYPE_NAMES:
        return value
    try:
        return convert(hint, value, key)
    except UserError as err:
        raise UserError(f"params: {err}") from None


def require_arg(ok: bool, key: str, value: Any, allowed: str) -> None:
    """A factory's range check on one of its `model_args`, as params.yaml's own are reported."""
    try:
        require(ok, f"model_args.{key}", value, allowed)
    except UserError as err:
        raise UserError(f"params: {err}") from None


def check_dropout(dropout: float) -> None:
    require_arg(0 <= dropout < 1, "dropout", dropout, "a rate in [0, 1)")
