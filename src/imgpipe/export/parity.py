"""Does the exported model answer as the trained one does? Both score the same decoded images;
the gate compares probabilities (largest absolute difference) and decisions (the share of images
decided the same: top-1, or every label of a label set)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imgpipe.core.errors import UserError
from imgpipe.task.kinds import MulticlassKind, MultilabelKind


@dataclass(frozen=True)
class Parity:
    images: int
    max_abs_diff: float  # largest |probability(exported) - probability(torch)|, over images and classes
    agreement: float  # share of images with the same decision (multi-label: every label)

    def as_dict(self) -> dict:
        return {"images": self.images, "max_abs_diff": self.max_abs_diff, "agreement": self.agreement}


def parity(kind: MulticlassKind | MultilabelKind, reference: np.ndarray, exported: np.ndarray) -> Parity:
    """Compare (N, K) probabilities of the same N images."""
    if reference.shape != exported.shape:
        raise ValueError(f"shapes {reference.shape} and {exported.shape}")
    if not len(reference):
        return Parity(0, 0.0, 1.0)
    ref, out = kind.decide_probabilities(reference), kind.decide_probabilities(exported)
    same = ref == out if ref.ndim == 1 else (ref == out).all(axis=1)
    diff = float(np.abs(reference.astype(np.float64) - exported.astype(np.float64)).max())
    return Parity(len(reference), diff, float(same.mean()))


def check_parity(result: Parity, atol: float, what: str) -> None:
    """The gate: a UserError naming `what` and the numbers unless every decision agrees and every
    probability is within `atol`."""
    if result.agreement < 1.0 or result.max_abs_diff > atol:
        raise UserError(
            f"{what}: differs from torch on the {result.images} test images (decision agreement {result.agreement:.4f}, "
            f"largest probability difference {result.max_abs_diff:.2e}, export.atol {atol:g}); nothing written"
        )
