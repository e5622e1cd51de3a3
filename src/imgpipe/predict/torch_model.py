"""The trained model file (`models/model.pt`) as a `Predictor`: torch, on the device the run
would choose, with the decision rule training stored in it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from imgpipe.feed.device import resolve_device
from imgpipe.feed.inference import predict_logits
from imgpipe.models.checkpoint import load_checkpoint
from imgpipe.task.tasks import task_from_spec


class TorchPredictor:
    def __init__(self, path: Path, device: str = "auto") -> None:
        self.model, self.spec = load_checkpoint(path)
        self.kind = task_from_spec(self.spec)
        self.model.to(resolve_device(device))
        self.image_size, self.channels = self.spec.image_size, self.spec.channels

    def logits(self, pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> (B, K) logits on the CPU."""
        return predict_logits(self.model, torch.as_tensor(pixels), self.spec.mean, self.spec.std)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        return self.kind.probabilities(self.logits(pixels)).numpy()
