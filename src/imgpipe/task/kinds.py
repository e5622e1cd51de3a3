"""The two kinds of result, per image: one class (`MulticlassKind`) or a set of labels (`MultilabelKind`).

Each kind's name, its words, its one-hot view, what counts as right, how the evaluate stage's
per-image outcome record stores it (`imgpipe.task.outcomes`), and how probabilities become
decisions and prediction rows. numpy only: `imgpipe review` reads outcome records, and the ONNX
model predicts (`imgpipe.predict.onnx_model`), without importing torch. The tasks that train and
predict with torch (`imgpipe.task.tasks.Multiclass`, `Multilabel`) extend these.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Self

import numpy as np

from imgpipe.core.layout import LABEL, LABEL_PREFIX
from imgpipe.data.labelsets import split_group
from imgpipe.task import calibration, label_issues
from imgpipe.task.calibration import Calibration
from imgpipe.task.decision import DecisionRule
from imgpipe.task.label_issues import LabelIssues
from imgpipe.task.mistakes import Worst, worst_label_sets, worst_single_label


@dataclass(frozen=True)
class MulticlassKind:
    """Per image, a class index (N,). `temperature`: () or (T,), the logits' divisor before the
    softmax (`train.calibrate`, `imgpipe.task.calibration`)."""

    classes: list[str]
    temperature: tuple[float, ...] = ()
    name: ClassVar[str] = "multiclass"
    adjective: ClassVar[str] = "single-label"  # in messages: "data.csv is single-label"
    unit: ClassVar[str] = "class"  # what one prediction is, in words
    accuracy_name: ClassVar[str] = "Accuracy"
    activation: ClassVar[str] = "softmax"  # logits -> probabilities

    @classmethod
    def from_fields(
        cls, classes: Sequence[str], thresholds: Sequence[float] = (), groups: Sequence[Sequence[int]] = (),
        temperature: Sequence[float] = (),
    ) -> Self:
        """The kind as a model file (or an exported model's metadata) stores it; a single-label
        one has no decision rule to read."""
        return cls(list(classes), tuple(float(t) for t in temperature))

    def scaled(self, logits: np.ndarray) -> np.ndarray:
        """(N, K) logits divided by the temperature, float64: what the probabilities come from."""
        logits = np.asarray(logits, dtype=np.float64)
        return logits / np.asarray(self.temperature) if self.temperature else logits

    def calibration(self, targets: np.ndarray, logits: np.ndarray) -> Calibration:
        """ECE, NLL and Brier of the probabilities this kind gives (`imgpipe.task.calibration`)."""
        return calibration.single_label(self.scaled(logits), np.asarray(targets))

    @staticmethod
    def fit_temperature(targets: np.ndarray, logits: np.ndarray) -> tuple[float, ...]:
        """(T,) minimising the val NLL of `logits` (as the model gives them, unscaled)."""
        return (calibration.fit_single_label(np.asarray(logits, dtype=np.float64), np.asarray(targets)),)

    def decide_probabilities(self, probs: np.ndarray) -> np.ndarray:
        """(N, K) probabilities -> (N,) class indices."""
        return probs.argmax(axis=1)

    def probability_rows(self, paths: Sequence[object], probs: np.ndarray) -> list[dict]:
        """`path`, the predicted `label` and its `probability` (rounded to 6 places)."""
        index = self.decide_probabilities(probs)
        return [
            {"path": str(p), "label": self.classes[i], "probability": round(float(q[i]), 6)}
            for p, i, q in zip(paths, index.tolist(), probs, strict=True)
        ]

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
        """The `k` images with the highest loss, captioned with the calibrated probabilities
        (`imgpipe.task.mistakes`)."""
        return worst_single_label(list(self.classes), self.scaled(logits), y_true, y_pred, k)

    def spec_fields(self) -> dict:
        return {"task": self.name, "thresholds": [], "groups": [], "temperature": list(self.temperature)}

    def given(self, rows) -> np.ndarray:
        """(N,) class indices of an annotation table's rows, as labelled."""
        index = {name: i for i, name in enumerate(self.classes)}
        return np.array([index[name] for name in rows[LABEL]], dtype=int)

    @staticmethod
    def label_issues(targets: np.ndarray, probs: np.ndarray) -> LabelIssues:
        """The images whose labels look wrong given out-of-fold `probs` (`imgpipe.task.label_issues`)."""
        return label_issues.single_label(targets, probs)


@dataclass(frozen=True)
class MultilabelKind:
    """Per image, 0/1 per label (N, K): a probability per label, decided by `rule` (per-label
    thresholds, argmax within `group=value` groups)."""

    classes: list[str]
    rule: DecisionRule = field(default_factory=lambda: DecisionRule([], []))
    temperature: tuple[float, ...] = ()  # () or one per label (`train.calibrate`)
    name: ClassVar[str] = "multilabel"
    adjective: ClassVar[str] = "multi-label"
    unit: ClassVar[str] = "label set"
    accuracy_name: ClassVar[str] = "Exact-match accuracy"
    activation: ClassVar[str] = "sigmoid"

    @classmethod
    def from_fields(
        cls, classes: Sequence[str], thresholds: Sequence[float] = (), groups: Sequence[Sequence[int]] = (),
        temperature: Sequence[float] = (),
    ) -> Self:
        rule = DecisionRule([float(t) for t in thresholds], [[int(k) for k in m] for m in groups])
        return cls(list(classes), rule, tuple(float(t) for t in temperature))

    scaled = MulticlassKind.scaled

    def calibration(self, targets: np.ndarray, logits: np.ndarray) -> Calibration:
        return calibration.multi_label(self.scaled(logits), np.asarray(targets))

    @staticmethod
    def fit_temperature(targets: np.ndarray, logits: np.ndarray) -> tuple[float, ...]:
        """One temperature per label (`imgpipe.task.calibration.fit_multi_label`)."""
        return tuple(calibration.fit_multi_label(np.asarray(logits, dtype=np.float64), np.asarray(targets)))

    def decide_probabilities(self, probs: np.ndarray) -> np.ndarray:
        """(N, K) probabilities -> (N, K) 0/1 label sets."""
        return self.rule.decide(probs)

    def probability_rows(self, paths: Sequence[object], probs: np.ndarray) -> list[dict]:
        """`path`, `labels` (the predicted names joined by a space), `sequence` when the labels
        form `group=value` groups, and one `prob:<label>` column per label."""
        rows = []
        for path, chosen, p in zip(paths, self.decide_probabilities(probs), probs, strict=True):
            row = {"path": str(path), "labels": " ".join(self.classes[k] for k in np.flatnonzero(chosen))}
            if self.rule.groups:
                row["sequence"] = self.sequence(chosen)
            row.update({f"prob:{name}": round(float(q), 6) for name, q in zip(self.classes, p, strict=True)})
            rows.append(row)
        return rows

    def sequence(self, chosen: np.ndarray) -> str:
        """The chosen value of each group in order, joined by a space; `blank` values are left
        out (`p1=7 p2=3 p3=blank ...` reads `7 3`)."""
        values = [split_group(self.classes[k])[1] for members in self.rule.groups for k in members if chosen[k]]
        return " ".join(v for v in values if v != "blank")

    def spec_fields(self) -> dict:
        return {"task": self.name, "thresholds": list(self.rule.thresholds), "groups": self.rule.groups,
                "temperature": list(self.temperature)}

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
        return worst_label_sets(list(self.classes), self.scaled(logits), y_true, y_pred, k)

    def given(self, rows) -> np.ndarray:
        """(N, K) 0/1 labels of an annotation table's rows, as labelled."""
        return rows[[LABEL_PREFIX + name for name in self.classes]].to_numpy().astype(np.uint8)

    @staticmethod
    def label_issues(targets: np.ndarray, probs: np.ndarray) -> LabelIssues:
        return label_issues.multi_label(targets, probs)


KINDS: dict[str, type[MulticlassKind | MultilabelKind]] = {cls.name: cls for cls in (MulticlassKind, MultilabelKind)}


def _index_dtype(k: int) -> np.dtype:
    return np.dtype(np.uint8 if k <= 2**8 else np.uint16 if k <= 2**16 else np.uint32)
