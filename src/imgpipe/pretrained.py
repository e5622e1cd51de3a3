"""`train.pretrained` and `train.freeze`: start from saved weights, optionally train only the head.

Weights come from a local state-dict file or the torch hub cache; nothing is downloaded at run
time, so an offline machine fails with one line saying which file to fetch and where to put it.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from imgpipe.errors import UserError
from imgpipe.models.registry import ModelEntry, create_model, get_model_entry, list_models


def imagenet_cache_file(entry: ModelEntry) -> Path:
    """Where torchvision keeps (and looks for) this entry's ImageNet weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(entry.weights.url).path).name


def pretrained_file(name: str, source: str) -> Path:
    """The state-dict file for `train.pretrained` (`imagenet` or a path)."""
    entry = get_model_entry(name)
    if source != "imagenet":
        path = Path(source)
        if not path.is_file():
            raise UserError(f"train.pretrained: weights file '{path}' does not exist")
        return path
    if entry.weights is None:
        with_weights = [m for m in list_models() if get_model_entry(m).weights is not None]
        raise UserError(
            f"train.pretrained: model '{name}' has no ImageNet weights; models that do: {', '.join(with_weights)}"
        )
    path = imagenet_cache_file(entry)
    if not path.is_file():
        raise UserError(
            f"train.pretrained: ImageNet weights for '{name}' are not in the torch cache; "
            f"download {entry.weights.url} to {path} (or set TORCH_HOME), then rerun"
        )
    return path


def normalization(name: str, source: str) -> tuple[list[float], list[float]] | None:
    """The weights' own input mean/std (ImageNet's for torchvision weights), or None if unknown."""
    weights = get_model_entry(name).weights
    if source == "none" or weights is None:
        return None
    transform = weights.transforms()
    return list(transform.mean), list(transform.std)


def load_pretrained(name: str, source: str, num_classes: int, image_size: int, model_args: dict | None = None) -> nn.Module:
    """Build `name` for 3-channel input, load the weights, and put a fresh head for `num_classes`.

    `model_args` are passed on: those that add no weights (dropout) suit any weights; those that
    change their shapes (width) suit only weights trained with the same values, such as an
    imgpipe model file's.
    """
    model_args = model_args or {}
    entry = get_model_entry(name)
    path = pretrained_file(name, source)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types on files it cannot read
        raise UserError(f"train.pretrained: '{path}' is not a weights-only state-dict file ({type(err).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # an imgpipe model file, or a checkpoint that wraps its weights
    head_weight = state.get(f"{entry.head}.weight") if isinstance(state, dict) else None
    if head_weight is None:
        raise UserError(f"train.pretrained: '{path}' has no '{entry.head}.weight'; it is not a state dict for '{name}'")
    model = create_model(name, num_classes=head_weight.shape[0], in_channels=3, image_size=image_size, **model_args)
    try:
        model.load_state_dict(state)
    except RuntimeError:
        if model_args:
            args = ", ".join(f"{k}={v}" for k, v in model_args.items())
            raise UserError(
                f"train.pretrained: the weights in '{path}' do not fit model '{name}' with model_args {args}; "
                "keep only arguments that leave its shapes as the weights have them (dropout does, width does not)"
            ) from None
        raise UserError(f"train.pretrained: the weights in '{path}' do not fit model '{name}'") from None
    replace_head(model, entry.head, num_classes)
    return model


def replace_head(model: nn.Module, head: str, num_classes: int) -> None:
    """Swap the classifier `head` (an nn.Linear) for a freshly initialised one."""
    old = model.get_submodule(head)
    if not isinstance(old, nn.Linear):
        raise UserError(f"train.pretrained: the head '{head}' of this model is not a linear layer; train it from scratch")
    parent, _, attr = head.rpartition(".")
    setattr(model.get_submodule(parent), attr, nn.Linear(old.in_features, num_classes))


def freeze_backbone(model: nn.Module, head: str) -> None:
    """Only the head's parameters stay trainable."""
    for param in model.parameters():
        param.requires_grad_(False)
    for param in model.get_submodule(head).parameters():
        param.requires_grad_(True)


def set_train_mode(model: nn.Module, head: str, frozen: bool) -> None:
    """Train mode; with a frozen backbone its batch-norm statistics and dropout stay in eval mode."""
    if frozen:
        model.eval()
        model.get_submodule(head).train()
    else:
        model.train()
