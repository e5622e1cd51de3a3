"""The task: single-label (`Multiclass`) or multi-label (`Multilabel`) classification.

Every difference between the two lives here, so a stage or the training loop asks its task and
never tests the kind itself. The task is decided once, from the annotation table (`task_of`: a
multi-label table has `label:<name>` columns, a single-label one a `label` column), and stored in
the model file (`spec_fields`, read back by `task_from_spec`), so evaluate and predict apply the
decision rule training chose. A new metric or output is one method on each class.

What a result is per image (names, one-hot, exact match, the outcome record's codec) is the
numpy-only base of each task in `imgpipe.task.kinds`, so `imgpipe review` runs without torch.

Shapes: logits and probabilities are (N, K). Single-label targets and decisions are (N,) class
indices; multi-label ones are (N, K) 0/1 label sets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import nn

from imgpipe.core.errors import UserError
from imgpipe.core.notes import Note
from imgpipe.core.params import TrainParams, choose
from imgpipe.data.labelsets import is_multilabel, label_matrix, label_names, natural_sorted, split_group
from imgpipe.task.decision import DecisionRule, one_of_groups, tune_thresholds
from imgpipe.task.kinds import MulticlassKind, MultilabelKind
from imgpipe.task.losses import LOSSES, MULTILABEL_LOSSES, LossFn, positive_weights
from imgpipe.task.metrics import (
    balanced_accuracy,
    classes_without_examples,
    classification_metrics,
    confusion_counts,
    cooccurrence_counts,
    group_accuracy,
    labels_without_examples,
    multilabel_metrics,
    per_class_table,
    per_label_table,
)

if TYPE_CHECKING:
    from imgpipe.models.checkpoint import ModelSpec


@dataclass(frozen=True)
class HeldOutScores:
    """The evaluate stage's results on the test split."""

    metrics: dict  # metrics.json
    per_class: list[dict]  # per_class.csv rows (multi-label: per label)
    confusion: list[dict]  # confusion.json rows (multi-label: label co-occurrence)
    notes: tuple[Note, ...] = ()  # for the evaluate stage to print


@dataclass(frozen=True)
class Multiclass(MulticlassKind):
    """One class per image: softmax over the classes, argmax decides."""

    @classmethod
    def from_table(cls, table: pd.DataFrame) -> Multiclass:
        return cls(natural_sorted(table["label"].unique().tolist()))

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> Multiclass:
        return cls.from_fields(spec.classes, temperature=spec.temperature)

    def label_matrix(self, rows: pd.DataFrame) -> np.ndarray:
        """(N, K) 0/1: each row's class, one-hot."""
        return np.eye(len(self.classes), dtype=np.uint8)[self.indices(rows)]

    def indices(self, rows: pd.DataFrame) -> np.ndarray:
        index = {name: i for i, name in enumerate(self.classes)}
        return np.array([index[label] for label in rows["label"]], dtype=np.int64)

    def targets(self, rows: pd.DataFrame) -> torch.Tensor:
        """(N,) int64 class indices."""
        return torch.from_numpy(self.indices(rows))

    def check_params(self, params: TrainParams) -> None:
        if params.monitor == "val/f1_micro":
            raise UserError("params: train.monitor val/f1_micro is for multi-label data (single-label: use val/accuracy)")
        if params.pos_weight != "none":
            raise UserError("params: train.pos_weight is for multi-label data; set it to none")
        if params.class_weight != "none" and self.loss_name(params) != "cross_entropy":
            raise UserError(f"params: train.class_weight weights the cross_entropy loss, not '{self.loss_name(params)}'; "
                            "set train.loss to cross_entropy (or auto), or train.class_weight to none")
        if isinstance(params.class_weight, dict) and self.classes:
            unknown = [name for name in params.class_weight if name not in self.classes]
            if unknown:
                raise UserError(f"params: train.class_weight names '{unknown[0]}', which is not a class of the data; "
                                f"the classes are {', '.join(self.classes[:20])}" + (" ..." if len(self.classes) > 20 else ""))

    def loss_name(self, params: TrainParams) -> str:
        return "cross_entropy" if params.loss == "auto" else params.loss

    def class_weights(self, params: TrainParams, train_targets: torch.Tensor) -> dict[str, float] | None:
        """`train.class_weight` per class, or None (`none`): `balanced` is scikit-learn's
        n / (k * n_c) over the train split's (N,) targets (a class with no training image gets 1);
        a mapping names some classes, the others weigh 1."""
        if params.class_weight == "none":
            return None
        if isinstance(params.class_weight, dict):
            return {name: float(params.class_weight.get(name, 1.0)) for name in self.classes}
        counts = torch.bincount(train_targets.cpu(), minlength=len(self.classes)).double()  # (K,)
        n, k = float(counts.sum()), len(self.classes)
        return {name: round(n / (k * c), 6) if c else 1.0 for name, c in zip(self.classes, counts.tolist(), strict=True)}

    def create_loss(self, params: TrainParams, train_targets: torch.Tensor) -> LossFn:
        self.check_params(params)
        name = self.loss_name(params)
        weights = self.class_weights(params, train_targets)
        if weights is not None:
            return weighted_cross_entropy(torch.tensor(list(weights.values()), device=train_targets.device), params.label_smoothing)
        return choose(LOSSES, "loss", name)(dataclasses.replace(params, loss=name))

    def sample_weights(self, params: TrainParams, train_targets: torch.Tensor) -> torch.Tensor | None:
        """`train.sampler: balanced`: (N,) each training image's chance to be drawn, 1 / its
        class's count, so every class is drawn equally often; None for `shuffle`."""
        if params.sampler == "shuffle":
            return None
        counts = torch.bincount(train_targets.cpu(), minlength=len(self.classes)).double()
        return 1.0 / counts[train_targets.cpu()]

    def for_training(self, params: TrainParams, train_targets: torch.Tensor) -> tuple[Multiclass, list[Note]]:
        return self, []

    def after_training(self, params: TrainParams, val_logits: torch.Tensor, val_targets: torch.Tensor) -> tuple[Multiclass, list[Note]]:
        """`train.calibrate: temperature`: the temperature fitted on the best epoch's val logits."""
        return calibrated(self, params, val_logits, val_targets)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, K) class probabilities, summing to 1 per image (after the temperature)."""
        return torch.softmax(scaled(self, logits), dim=1)

    def decide(self, logits: torch.Tensor) -> np.ndarray:
        return logits.argmax(1).numpy()  # (N,): the argmax of the probabilities, without computing them

    def validation_scores(self, targets: torch.Tensor, logits: torch.Tensor) -> dict[str, float]:
        scores = classification_metrics(targets.numpy(), self.decide(logits))
        return {"accuracy": scores["accuracy"], "f1_macro": scores["f1_macro"]}

    def test_scores(self, y_true: np.ndarray, y_pred: np.ndarray) -> HeldOutScores:
        """Macro averages cover the classes with test images; the others (too few images for the
        split) are counted in `classes_without_test_images` and named in a warning."""
        metrics: dict = {**classification_metrics(y_true, y_pred, np.unique(y_true)),
                         "balanced_accuracy": balanced_accuracy(y_true, y_pred), "test_images": len(y_true)}
        missing = classes_without_examples(y_true, self.classes)
        notes = []
        if missing:  # only then, so the metrics of data with every class in test stay as they were
            metrics["classes_without_test_images"] = len(missing)
            notes.append(Note(f"{len(missing)} class(es) have no test image (left out of the macro "
                              "averages): " + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""), warning=True))
        return HeldOutScores(
            metrics,
            per_class_table(y_true, y_pred, self.classes),
            confusion_counts(y_true, y_pred, self.classes),
            tuple(notes),
        )

    def check_matches(self, table_task: Multiclass | Multilabel) -> str | None:
        """What keeps a model of this task from scoring `table_task`'s table, or None."""
        unknown = [name for name in table_task.classes if name not in self.classes]
        return ", ".join(unknown[:5]) or None

    def prediction_rows(self, paths: Sequence[object], logits: torch.Tensor) -> list[dict]:
        """`path`, the predicted `label` and its `probability` (`probability_rows`)."""
        return self.probability_rows(paths, self.probabilities(logits).numpy())


@dataclass(frozen=True)
class Multilabel(MultilabelKind):
    """Any set of labels per image (`classes` are the labels, in vocabulary order): a sigmoid
    per label, decided by `rule` (per-label thresholds, argmax within `group=value` groups)."""

    @classmethod
    def from_table(cls, table: pd.DataFrame) -> Multilabel:
        return cls(label_names(table))

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> Multilabel:
        return cls.from_fields(spec.classes, spec.thresholds, spec.groups, spec.temperature)

    def label_matrix(self, rows: pd.DataFrame) -> np.ndarray:
        """(N, K) 0/1 in vocabulary order."""
        return label_matrix(rows).reshape(len(rows), len(self.classes))

    def targets(self, rows: pd.DataFrame) -> torch.Tensor:
        """(N, K) float 0/1."""
        return torch.tensor(self.label_matrix(rows), dtype=torch.float32)

    def check_params(self, params: TrainParams) -> None:
        name = self.loss_name(params)
        if name == "cross_entropy":
            raise UserError(
                "params: train.loss 'cross_entropy' is single-label (one softmax over all classes); "
                f"for multi-label data use auto or one of: {', '.join(MULTILABEL_LOSSES)}"
            )
        if params.label_smoothing > 0:
            raise UserError("params: train.label_smoothing is for cross_entropy on single-label data; set it to 0")
        if params.pos_weight == "auto" and name != "bce":
            raise UserError(f"params: train.pos_weight auto works with train.loss bce, not '{name}'")
        if params.class_weight != "none":
            raise UserError("params: train.class_weight is for single-label data; multi-label: train.pos_weight auto "
                            "weights each label's positives")
        if params.sampler != "shuffle":
            raise UserError("params: train.sampler balanced is for single-label data (an image carries several "
                            "labels, so no draw balances them all); multi-label: train.pos_weight auto")

    def loss_name(self, params: TrainParams) -> str:
        return "bce" if params.loss == "auto" else params.loss

    def create_loss(self, params: TrainParams, train_targets: torch.Tensor) -> LossFn:
        self.check_params(params)
        pos_weight = positive_weights(train_targets) if params.pos_weight == "auto" else None
        return choose(MULTILABEL_LOSSES, "loss", self.loss_name(params))(pos_weight)

    def for_training(self, params: TrainParams, train_targets: torch.Tensor) -> tuple[Multilabel, list[Note]]:
        """The validation rule: `train.threshold` (0.5 while `tune` waits for the end) and the
        groups that are one-of in the train split; a note names the groups that are not."""
        groups, broken = one_of_groups(self.classes, train_targets.numpy())
        notes = [Note(f"label group(s) {', '.join(broken)} are not one-of in the train split; "
                      "decoded per label by threshold")] if broken else []
        threshold = 0.5 if params.threshold == "tune" else float(params.threshold)
        return dataclasses.replace(self, rule=DecisionRule([threshold] * len(self.classes), groups)), notes

    def class_weights(self, params: TrainParams, train_targets: torch.Tensor) -> dict[str, float] | None:
        return None  # check_params refuses train.class_weight (train.pos_weight weighs labels)

    def sample_weights(self, params: TrainParams, train_targets: torch.Tensor) -> torch.Tensor | None:
        return None  # check_params refuses train.sampler balanced

    def after_training(self, params: TrainParams, val_logits: torch.Tensor, val_targets: torch.Tensor) -> tuple[Multilabel, list[Note]]:
        """`train.calibrate: temperature`: one temperature per label on the best epoch's val
        logits; then `threshold: tune`: per-label thresholds for the best F1 on val, on the
        calibrated probabilities, and a note of them."""
        task, notes = calibrated(self, params, val_logits, val_targets)
        if params.threshold != "tune":
            return task, notes
        thresholds = tune_thresholds(task.probabilities(val_logits).numpy(), val_targets.numpy())
        notes.append(Note("tuned thresholds on val: " + ", ".join(f"{t:.2f}" for t in thresholds[:10])
                          + (" ..." if len(thresholds) > 10 else "")))
        return dataclasses.replace(task, rule=DecisionRule(list(thresholds), task.rule.groups)), notes

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, K) independent per-label probabilities (after each label's temperature)."""
        return torch.sigmoid(scaled(self, logits))

    def decide(self, logits: torch.Tensor) -> np.ndarray:
        return self.decide_probabilities(self.probabilities(logits).numpy())  # (N, K)

    def validation_scores(self, targets: torch.Tensor, logits: torch.Tensor) -> dict[str, float]:
        scores = multilabel_metrics(targets.numpy().astype(np.uint8), self.decide(logits))
        return {"accuracy": scores["exact_match_accuracy"], "f1_macro": scores["f1_macro"], "f1_micro": scores["f1_micro"]}

    def test_scores(self, y_true: np.ndarray, y_pred: np.ndarray) -> HeldOutScores:
        """Metrics (with per-position accuracy for one-of groups), per-label rows with their
        thresholds, and label co-occurrence counts."""
        y_true = y_true.astype(np.uint8)
        metrics: dict = {**multilabel_metrics(y_true, y_pred), "test_images": len(y_true)}
        if self.rule.groups:
            metrics.update(group_accuracy(y_true, y_pred, {split_group(self.classes[m[0]])[0]: m for m in self.rule.groups}))
        missing = labels_without_examples(y_true, self.classes)
        metrics["labels_without_test_examples"] = len(missing)
        notes = []
        if missing:  # also visible in per_class.csv: support 0, recall and F1 empty
            notes.append(Note(f"{len(missing)} label(s) have no test example (left out of macro averages): "
                              + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")))
        per_label = per_label_table(y_true, y_pred, self.classes)
        for row, threshold in zip(per_label, self.rule.thresholds, strict=True):
            row["threshold"] = round(threshold, 6)
        return HeldOutScores(metrics, per_label, cooccurrence_counts(y_true, y_pred, self.classes), tuple(notes))

    def check_matches(self, table_task: Multiclass | Multilabel) -> str | None:
        if table_task.classes == self.classes:
            return None
        unknown = [name for name in table_task.classes if name not in self.classes]
        return ", ".join(unknown[:5]) or "in a different order"

    def prediction_rows(self, paths: Sequence[object], logits: torch.Tensor) -> list[dict]:
        """`path`, `labels`, `sequence` with groups, one `prob:<label>` per label (`probability_rows`)."""
        return self.probability_rows(paths, self.probabilities(logits).numpy())


Task = Multiclass | Multilabel


def scaled(task: Task, logits: torch.Tensor) -> torch.Tensor:
    """(N, K) logits divided by the task's temperature (none: as they are)."""
    return logits / torch.tensor(task.temperature, dtype=logits.dtype, device=logits.device) if task.temperature else logits


def calibrated(task: Task, params: TrainParams, val_logits: torch.Tensor, val_targets: torch.Tensor) -> tuple[Task, list[Note]]:
    """`task` with the temperature `train.calibrate` fits on the val split (none: as it is), and a note of it."""
    if params.calibrate == "none":
        return task, []
    temperature = task.fit_temperature(val_targets.numpy(), val_logits.numpy())
    shown = f"{temperature[0]:.3f}" if len(temperature) == 1 else f"{min(temperature):.3f} to {max(temperature):.3f} over the labels"
    return dataclasses.replace(task, temperature=temperature), [Note(f"temperature {shown}, fitted on val (train.calibrate)")]


def weighted_cross_entropy(weights: torch.Tensor, label_smoothing: float = 0.0) -> LossFn:
    """Cross-entropy with each image's term times its class's weight, averaged over the images.
    Not `nn.CrossEntropyLoss(weight=)`, which divides by the batch's summed weight: that sum
    differs between the ranks' shares of a batch, so two processes would not learn what one does;
    balanced weights average 1 over the train split, so `train.lr` means what it did."""

    def compute(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        losses = nn.functional.cross_entropy(logits, targets, reduction="none", label_smoothing=label_smoothing)
        return (losses * weights.to(losses.dtype)[targets]).mean()

    return compute
TASKS_BY_KIND: dict[str, type[Multiclass | Multilabel]] = {cls.name: cls for cls in (Multiclass, Multilabel)}  # by kind


def task_of(table: pd.DataFrame) -> Task:
    """The task of an annotation table (or manifest): multi-label when it has `label:` columns."""
    return (Multilabel if is_multilabel(table) else Multiclass).from_table(table)


def task_from_spec(spec: ModelSpec) -> Task:
    """The task a model file was trained for, with its decision rule."""
    return TASKS_BY_KIND[spec.task].from_spec(spec)


def check_task_matches(model_task: Task, table_task: Task, annotations: Path, model_path: Path) -> None:
    """The annotation file must be of the model's task, with labels the model knows."""
    if table_task.name != model_task.name:
        raise UserError(
            f"{annotations} is {table_task.adjective} but the model {model_path} is {model_task.adjective}; retrain (dvc repro)"
        )
    if shown := model_task.check_matches(table_task):
        raise UserError(f"{annotations}: label(s) {shown} do not match the model {model_path}; retrain")
