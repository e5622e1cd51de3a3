"""Where models run: a CUDA GPU when one is visible, else the CPU, with no param change."""

from __future__ import annotations

import torch
from torch import nn

from imgpipe.core.errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` is cuda when torch sees a GPU, else cpu; `cuda` without a GPU is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device is cuda but torch sees no CUDA GPU; set train.device: auto (or cpu)")
    return torch.device(name)


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """The autocast dtype for training on `device`: bf16 on GPUs that support it, else fp16 (with
    loss scaling); None (full fp32) on the CPU, or when `train.amp` is off."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
