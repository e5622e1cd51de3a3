"""The model file: everything predict needs, loadable with `torch.load(weights_only=True)`."""

from __future__ import annotations

import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from imgpipe.core.atomic import atomic_file
from imgpipe.core.errors import UserError
from imgpipe.models.catalog import create_model

# 2 added the multi-label fields (version 1 files load as multiclass); 3 added model_args, so an
# older imgpipe refuses a file whose model it would rebuild without them; 4 added temperature, which
# an older imgpipe would ignore and serve uncalibrated probabilities.
FORMAT_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)


@dataclass(frozen=True)
class ModelSpec:
    """How to rebuild the model and feed it: stored beside the weights."""

    model: str
    classes: list[str]
    image_size: int
    channels: int
    mean: list[float]
    std: list[float]
    model_args: dict = field(default_factory=dict)  # params.yaml's `model_args`, passed to create_model
    # The task and its decision rule (`imgpipe.task.tasks`: `spec_fields` writes them, `task_from_spec` reads them)
    task: str = "multiclass"  # or multilabel: `classes` are then the labels
    thresholds: list[float] = field(default_factory=list)  # multilabel: one per label
    groups: list[list[int]] = field(default_factory=list)  # multilabel: one-of groups, decoded by argmax
    temperature: list[float] = field(default_factory=list)  # train.calibrate: [] (none), [T], or one per label


def save_checkpoint(path: Path, spec: ModelSpec, state_dict: dict[str, torch.Tensor], extra: dict) -> None:
    """Write the model file atomically."""
    with atomic_file(Path(path)) as tmp:
        write_checkpoint(tmp, spec, state_dict, extra)


def write_checkpoint(path: Path, spec: ModelSpec, state_dict: dict[str, torch.Tensor], extra: dict) -> None:
    """Write the model file (plain types and tensors only, no pickled classes) to `path` as is."""
    torch.save({"format": FORMAT_VERSION, **asdict(spec), "state_dict": state_dict, **extra}, path)


def load_checkpoint(path: Path) -> tuple[nn.Module, ModelSpec]:
    """Rebuild the trained model (in eval mode) and its spec from a model file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model file not found; run the train stage first")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # weights_only refuses pickled code: the file was not written by imgpipe.
        raise UserError(f"{path}: not a loadable imgpipe model file (it needs pickle, refused for safety); retrain it") from None
    except Exception as err:  # noqa: BLE001  torch.load raises many types on garbage bytes
        raise UserError(f"{path}: not a loadable imgpipe model file ({type(err).__name__}); retrain it") from None
    required = ["model", "classes", "image_size", "channels", "mean", "std", "state_dict"]
    if not isinstance(payload, dict) or payload.get("format") not in READABLE_VERSIONS or not set(required) <= set(payload):
        raise UserError(f"{path}: not an imgpipe model file (format {FORMAT_VERSION}); retrain it")
    spec = ModelSpec(**{k: payload[k] for k in ModelSpec.__dataclass_fields__ if k in payload})
    try:
        model = create_model(
            spec.model, num_classes=len(spec.classes), in_channels=spec.channels, image_size=spec.image_size,
            **spec.model_args,
        )
    except UserError as err:  # the model's code changed since the file was written
        raise UserError(f"{path}: {str(err).removeprefix('params: ')}; retrain it") from None
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError:
        raise UserError(f"{path}: weights do not fit model '{spec.model}' as defined now; retrain it") from None
    return model.eval(), spec
