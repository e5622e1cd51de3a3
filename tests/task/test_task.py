"""The task decides once and owns every single-label vs multi-label difference (imgpipe.task.tasks)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from imgpipe.core.params import TrainParams
from imgpipe.data.labelsets import make_table, natural_sorted
from imgpipe.models.checkpoint import ModelSpec
from imgpipe.task.decision import DecisionRule
from imgpipe.task.outcomes import record_outcomes
from imgpipe.task.tasks import Multiclass, Multilabel, task_from_spec, task_of

SINGLE_TABLE = pd.DataFrame({"path": ["a", "b", "c", "d"], "label": ["p10", "p2", "cat", "p2"]})
MULTI_TABLE = make_table(["a", "b", "c"], ["p1=0", "p1=1", "sunny"], np.array([[1, 0, 1], [0, 1, 0], [1, 0, 0]]))


def test_the_task_is_read_from_the_table():
    single, multi = task_of(SINGLE_TABLE), task_of(MULTI_TABLE)
    assert isinstance(single, Multiclass) and single.classes == ["cat", "p2", "p10"]  # natural order
    assert isinstance(multi, Multilabel) and multi.classes == ["p1=0", "p1=1", "sunny"]  # vocabulary order
    assert single.targets(SINGLE_TABLE).tolist() == [2, 1, 0, 1]
    assert multi.targets(MULTI_TABLE).tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 0]]
    assert single.label_matrix(SINGLE_TABLE).sum(axis=0).tolist() == [1, 2, 1]


def test_one_natural_order_for_classes_labels_and_groups():
    assert natural_sorted(["p10", "p2", "10", "9", "b", "a"]) == ["9", "10", "a", "b", "p2", "p10"]


@pytest.mark.parametrize(
    "task",
    [Multiclass(["a", "b", "c"]), Multilabel(["p1=0", "p1=1", "x"], DecisionRule([0.3, 0.5, 0.7], [[0, 1]]))],
    ids=["multiclass", "multilabel"],
)
def test_the_model_file_carries_the_task_and_its_decision_rule(task):
    spec = ModelSpec("mlp", task.classes, 32, 1, [0.5], [0.2], **task.spec_fields())
    assert task_from_spec(spec) == task


def test_decisions_and_one_hot_have_each_tasks_shape():
    logits = torch.tensor([[2.0, -1.0, 0.1], [-3.0, 0.5, 0.4]])
    single = Multiclass(["a", "b", "c"])
    assert single.decide(logits).tolist() == [0, 1]
    assert single.one_hot(single.decide(logits)).tolist() == [[True, False, False], [False, True, False]]
    multi = Multilabel(["p1=0", "p1=1", "x"], DecisionRule([0.5, 0.5, 0.5], [[0, 1]]))
    # The one-of group p1 takes its argmax even below threshold; x is decided by its threshold.
    assert multi.decide(logits).tolist() == [[1, 0, 1], [0, 1, 1]]


def test_validation_scores_name_the_same_keys_for_both_tasks_plus_micro_f1():
    logits = torch.tensor([[2.0, -1.0], [-1.0, 2.0]])
    single = Multiclass(["a", "b"]).validation_scores(torch.tensor([0, 0]), logits)
    multi = Multilabel(["a", "b"], DecisionRule([0.5, 0.5], [])).validation_scores(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), logits)
    assert single == {"accuracy": 0.5, "f1_macro": pytest.approx(1 / 3)}
    assert set(multi) == {"accuracy", "f1_macro", "f1_micro"} and multi["accuracy"] == 0.5


def test_prediction_rows_read_each_task_as_users_see_it():
    logits = torch.tensor([[0.0, 3.0, -2.0]])
    row = Multiclass(["a", "b", "c"]).prediction_rows(["x.png"], logits)[0]
    assert row["label"] == "b" and row["probability"] == pytest.approx(torch.softmax(logits, 1)[0, 1].item(), abs=1e-6)
    multi = Multilabel(["p1=7", "p1=blank", "p2=3", "p2=blank"], DecisionRule([0.5] * 4, [[0, 1], [2, 3]]))
    row = multi.prediction_rows(["y.png"], torch.tensor([[2.0, -2.0, -2.0, 2.0]]))[0]
    assert row["labels"] == "p1=7 p2=blank" and row["sequence"] == "7"
    assert list(row)[-4:] == ["prob:p1=7", "prob:p1=blank", "prob:p2=3", "prob:p2=blank"]


def test_test_scores_give_per_class_rows_and_confusion_for_both_tasks():
    single = Multiclass(["a", "b"]).test_scores(np.array([0, 1, 1]), np.array([0, 1, 0]))
    assert single.metrics["accuracy"] == pytest.approx(2 / 3) and single.metrics["test_images"] == 3
    assert [r["class"] for r in single.per_class] == ["a", "b"]
    assert {"actual": "b", "predicted": "a", "count": 1} in single.confusion
    multi = Multilabel(["p1=0", "p1=1"], DecisionRule([0.4, 0.6], [[0, 1]]))
    scores = multi.test_scores(np.array([[1, 0], [0, 1]]), np.array([[1, 0], [1, 0]]))
    assert scores.metrics["exact_match_accuracy"] == 0.5 and scores.metrics["sequence_accuracy"] == 0.5
    assert scores.metrics["position_accuracy"] == {"p1": 0.5}
    assert [r["threshold"] for r in scores.per_class] == [0.4, 0.6]


@pytest.mark.parametrize(
    "task,actual,predicted",
    [
        (Multiclass(["a", "b", "c"]), np.array([0, 2, 1]), np.array([0, 1, 1])),
        (Multilabel(["a", "b", "c"]), np.array([[1, 0, 1], [0, 0, 0], [1, 1, 1]]), np.array([[1, 0, 1], [1, 0, 0], [1, 1, 1]])),
    ],
    ids=["multiclass", "multilabel"],
)
def test_outcome_records_round_trip_through_the_tasks_codec(task, actual, predicted):
    record = record_outcomes(["m1", "m2", "m3"], task.classes, actual, predicted, task.name)
    assert isinstance(task, record.kind) and record.kind.name == task.name
    raw = task.encode(record.actual, len(task.classes))
    assert np.array_equal(task.decode(raw, 3, len(task.classes)), record.actual)
    assert record.correct().sum() == 2


def test_params_that_do_not_fit_the_task_are_refused_before_any_image_is_decoded():
    from imgpipe.core.errors import UserError

    base = TrainParams()
    with pytest.raises(UserError, match="val/f1_micro is for multi-label"):
        Multiclass(["a"]).check_params(dataclasses.replace(base, monitor="val/f1_micro"))
    with pytest.raises(UserError, match="'cross_entropy' is single-label"):
        Multilabel(["a"]).check_params(dataclasses.replace(base, loss="cross_entropy"))


def test_the_task_param_offers_auto_and_every_kind():
    """params.yaml's `task:` choices (core, which cannot import the task layer) name the kinds."""
    from imgpipe.core.params import TASK_CHOICES
    from imgpipe.task.kinds import KINDS

    assert TASK_CHOICES == ("auto", *KINDS)
