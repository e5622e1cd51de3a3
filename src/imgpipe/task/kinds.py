"""The two kinds of result, per image: one class (`MulticlassKind`) or a set of labels (`MultilabelKind`).

Each kind's name, its words, its one-hot view, what counts as right, and how the evaluate
stage's per-image outcome record stores it (`imgpipe.task.outcomes`). numpy only: `imgpipe review`
reads outcome records without importing torch. The tasks that train and predict
(`imgpipe.task.tasks.Multiclass`, `Multilabel`) extend these.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from imgpipe.task.mistakes import Worst, worst_label_sets, worst_single_label


@dataclass(frozen=True)
class MulticlassKind:
    """Per image, a class index (N,)."""

    classes: list[str]
    name: ClassVar[str] = "multiclass"
    adjective: ClassVar[str] = "single-label"  # in messages: "data.csv is single-label"
    unit: ClassVar[str] = "class"  # what one prediction is, in words
    accuracy_name: ClassVar[str] = "Accuracy"

    def one_hot(self, values: np.ndarray) -> np.ndarray:
        """(N, K) bool, for decisions or targets of this kind."""
        return np.eye(len(self.classes), dtype=bool)[values]

    @staticmethod
    def correct(actual: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        return actual == predicted

    @staticmethod
    def truth(row: np.ndarray, classes: list[str]) -> str:
        """An image's true class by name: the same whatever order a model lists the classes in."""
        return classes[int(row)]

    @staticmethod
    def encode(values: np.ndarray, k: int) -> bytes:
        return values.astype(_index_dtype(k)).tobytes()  # (N,)

    @staticmethod
    def decode(raw: bytes, n: int, k: int) -> np.ndarray:
        values = np.frombuffer(raw, dtype=_index_dtype(k)).astype(np.int64)  # (N,)
        if len(values) != n or (n and values.max() >= k):
            raise ValueError(f"{len(values)} class indices for {n} images of {k} classes")
        return values

    def worst(self, logits: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, k: int) -> list[Worst]:
        """The `k` images with the highest loss, captioned (`imgpipe.task.mistakes`)."""
        return worst_single_label(list(self.classes), logits, y_true, y_pred, k)


@dataclass(frozen=True)
class MultilabelKind:
    """Per image, 0/1 per label (N, K)."""

    classes: list[str]
    name: ClassVar[str] = "multilabel"
    adjective: ClassVar[str] = "multi-label"
    unit: ClassVar[str] = "label set"
    accuracy_name: ClassVar[str] = "Exact-match accuracy"

    def one_hot(self, values: np.ndarray) -> np.ndarray:
        return values.astype(bool)

    @staticmethod
    def correct(actual: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        return (actual == predicted).all(axis=1)  # exact match

    @staticmethod
    def truth(row: np.ndarray, classes: list[str]) -> str:
        """An image's sorted label names."""
        return json.dumps(sorted(classes[k] for k in np.flatnonzero(row)))

    @staticmethod
    def encode(values: np.ndarray, k: int) -> bytes:
        return np.packbits(values.astype(bool), axis=1).tobytes()  # (N, ceil(K / 8))

    @staticmethod
    def decode(raw: bytes, n: int, k: int) -> np.ndarray:
        packed = np.frombuffer(raw, dtype=np.uint8).reshape(n, (k + 7) // 8)
        return np.unpackbits(packed, axis=1, count=k)  # (N, K) uint8

    def worst(self, logits: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, k: int) -> list[Worst]:
        """The `k` images with the most wrong labels, captioned (`imgpipe.task.mistakes`)."""
        return worst_label_sets(list(self.classes), logits, y_true, y_pred, k)


KINDS: dict[str, type[MulticlassKind | MultilabelKind]] = {cls.name: cls for cls in (MulticlassKind, MultilabelKind)}


def _index_dtype(k: int) -> np.dtype:
    return np.dtype(np.uint8 if k <= 2**8 else np.uint16 if k <= 2**16 else np.uint32)
