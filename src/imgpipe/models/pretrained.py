"""`train.pretrained` and `train.freeze`: start from saved weights, optionally train only the head.

Weights come from a local state-dict file or, for `imagenet`, torchvision's file in the torch hub
cache, downloaded there the first time as torchvision does (torch's own downloader: a progress bar,
the SHA-256 that the file name carries checked). A download that fails leaves nothing in the
cache, and offline the run stops with one line saying which file to fetch and where to put it.
"""

from __future__ import annotations

import os
import sys
import uuid
from http.client import HTTPException
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urlparse

import torch
from torch import nn

from imgpipe.core.errors import UserError
from imgpipe.models.registry import ModelEntry, create_model, get_model_entry, list_models


def imagenet_cache_file(entry: ModelEntry) -> Path:
    """Where torchvision keeps (and looks for) this entry's ImageNet weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(entry.weights.url).path).name


def pretrained_file(name: str, source: str) -> Path:
    """The state-dict file for `train.pretrained` (`imagenet`, downloaded if missing, or a path)."""
    if source == "imagenet":
        return fetch_imagenet_weights(name)
    path = Path(source)
    if not path.is_file():
        raise UserError(f"train.pretrained: weights file '{path}' does not exist")
    return path


def fetch_imagenet_weights(name: str) -> Path:
    """The torch cache's file of `name`'s ImageNet weights, downloaded first when it is not there."""
    entry = get_model_entry(name)
    if entry.weights is None:
        with_weights = [m for m in list_models() if get_model_entry(m).weights is not None]
        raise UserError(
            f"train.pretrained: model '{name}' has no ImageNet weights; models that do: {', '.join(with_weights)}"
        )
    path = imagenet_cache_file(entry)
    if not path.is_file():
        download_weights(name, entry.weights.url, path)
    return path


def download_weights(name: str, url: str, path: Path) -> None:
    """`url` to `path` with torch's downloader, a progress bar on stderr; `path` appears only once the
    whole file is there: checked against the SHA-256 prefix in its name (`resnet18-f37072fd.pth`),
    or, for a name without one, loaded once (a cut-off file does not load)."""
    print(f"train.pretrained: downloading {url} to {path}", file=sys.stderr)
    match = torch.hub.HASH_REGEX.search(path.name)
    hash_prefix = match.group(1) if match else ""
    staged = path.with_name(f"{path.name}.{uuid.uuid4().hex}.download")  # one per process: ranks may race
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(staged), hash_prefix or None, progress=True)
        if not hash_prefix:
            check_loads(url, staged, path)
        os.replace(staged, path)
    except (OSError, HTTPException) as err:  # offline, refused, HTTP 404, cut off mid-read, disk full
        why = str(err) if isinstance(err, HTTPError) else getattr(err, "reason", None) or err
        raise UserError(
            f"train.pretrained: ImageNet weights for '{name}' are not in the torch cache and could not be "
            f"downloaded ({why}); download {url} to {path} (or set TORCH_HOME), then rerun"
        ) from None
    except RuntimeError:  # the downloader's hash check; a short body is not an error to urllib
        raise UserError(
            f"train.pretrained: the download of {url} was cut off or altered (its SHA-256 does not begin "
            f"with the {hash_prefix} in its name); nothing was kept in {path.parent}; rerun to download it again"
        ) from None
    finally:
        staged.unlink(missing_ok=True)


def check_loads(url: str, staged: Path, path: Path) -> None:
    """A downloaded file without a hash in its name must at least load: a cut-off or HTML file does not."""
    try:
        torch.load(staged, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  torch.load raises many types on files it cannot read
        raise UserError(
            f"train.pretrained: the file downloaded from {url} is cut off or not a state-dict file "
            f"({type(err).__name__}); nothing was kept in {path.parent}; rerun to download it again"
        ) from None


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
    except Exception as err:  # noqa: BLE001  torch.load raises many types on files it cannot read
        again = "; delete it and rerun to download it again" if source == "imagenet" else ""
        raise UserError(f"train.pretrained: '{path}' is not a weights-only state-dict file ({type(err).__name__}){again}") from None
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
