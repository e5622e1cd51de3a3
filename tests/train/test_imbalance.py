"""Class weights, balanced sampling and temperature scaling in the train stage: their arithmetic,
their params, and the stages run on the shared shapes set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sklearn.utils.class_weight import compute_class_weight
from support.project import assert_one_line_error, copy_prepared, stage_in_process, write_params

from imgpipe.core.errors import UserError
from imgpipe.core.params import TrainParams, load_params
from imgpipe.task.tasks import Multiclass, Multilabel, weighted_cross_entropy
from imgpipe.train.loop import draw_order

CLASSES = ["a", "b", "c"]
TARGETS = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)


def test_balanced_weights_are_scikit_learns():
    found = Multiclass(CLASSES).class_weights(TrainParams(class_weight="balanced"), TARGETS)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=TARGETS.numpy())
    assert list(found) == CLASSES
    assert np.allclose(list(found.values()), expected, atol=1e-6)
    assert np.average(list(found.values()), weights=[60, 30, 10]) == pytest.approx(1.0)  # the loss keeps its scale


def test_named_weights_leave_the_other_classes_at_one():
    found = Multiclass(CLASSES).class_weights(TrainParams(class_weight={"c": 4.0}), TARGETS)
    assert found == {"a": 1.0, "b": 1.0, "c": 4.0}
    assert Multiclass(CLASSES).class_weights(TrainParams(), TARGETS) is None


def test_weighted_cross_entropy_weighs_each_image_by_its_class():
    logits = torch.randn(100, 3, generator=torch.Generator().manual_seed(0))
    plain = torch.nn.functional.cross_entropy(logits, TARGETS, reduction="none")
    weights = torch.tensor([0.5, 1.0, 3.0])
    assert weighted_cross_entropy(torch.ones(3))(logits, TARGETS) == pytest.approx(plain.mean().item())
    assert weighted_cross_entropy(weights)(logits, TARGETS) == pytest.approx((plain * weights[TARGETS]).mean().item())


def test_balanced_sampler_draws_every_class_about_equally_and_is_seeded():
    weights = Multiclass(CLASSES).sample_weights(TrainParams(sampler="balanced"), TARGETS)
    order = draw_order(100, torch.Generator().manual_seed(0), weights)
    assert len(order) == 100  # an epoch is as long as it was
    drawn = torch.stack([draw_order(100, torch.Generator().manual_seed(s), weights) for s in range(200)])
    share = torch.bincount(TARGETS[drawn.flatten()], minlength=3) / drawn.numel()
    assert torch.allclose(share, torch.full((3,), 1 / 3), atol=0.01)
    assert torch.equal(order, draw_order(100, torch.Generator().manual_seed(0), weights))
    assert Multiclass(CLASSES).sample_weights(TrainParams(), TARGETS) is None
    plain = draw_order(100, torch.Generator().manual_seed(0))
    assert sorted(plain.tolist()) == list(range(100))  # shuffle: a permutation, as before


def test_params_read_class_names_written_as_numbers(tmp_path: Path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  class_weight: {0: 2, 9: 0.5}\n")
    assert load_params(path).train.class_weight == {"0": 2.0, "9": 0.5}


@pytest.mark.parametrize(("text", "fragment"), [
    ("class_weight: {a: 0}", "'train.class_weight.a' is 0; allowed: a number > 0"),
    ("class_weight: {a: x}", "'train.class_weight.a' is 'x'; allowed: a number > 0"),
    ("class_weight: inverse", "'train.class_weight' is 'inverse'; allowed: none | balanced"),
    ("sampler: weighted", "'train.sampler' is 'weighted'; allowed: shuffle | balanced"),
    ("calibrate: platt", "'train.calibrate' is 'platt'; allowed: none | temperature"),
])
def test_bad_params_name_the_key(tmp_path: Path, text: str, fragment: str):
    path = tmp_path / "params.yaml"
    path.write_text(f"train:\n  {text}\n")
    with pytest.raises(UserError) as info:
        load_params(path)
    assert fragment in str(info.value)


def test_what_a_task_cannot_use_is_one_line():
    with pytest.raises(UserError, match="train.class_weight names 'z', which is not a class of the data; the classes are a, b, c"):
        Multiclass(CLASSES).check_params(TrainParams(class_weight={"z": 2.0}))
    with pytest.raises(UserError, match="train.class_weight weights the cross_entropy loss, not 'mse'"):
        Multiclass(CLASSES).check_params(TrainParams(class_weight="balanced", loss="mse"))
    with pytest.raises(UserError, match="train.sampler balanced is for single-label data"):
        Multilabel(CLASSES).check_params(TrainParams(sampler="balanced"))
    with pytest.raises(UserError, match="train.class_weight is for single-label data"):
        Multilabel(CLASSES).check_params(TrainParams(class_weight="balanced"))


# --- the stages on the shapes set -------------------------------------------------------


def run_with(prepared: Path, dest: Path, **train) -> Path:
    """Train and evaluate on a copy of the prepared shapes with `train` params changed."""
    work = copy_prepared(prepared, dest)
    params = yaml.safe_load((work / "params.yaml").read_text())
    write_params(work / "params.yaml", {**params, "train": {**params["train"], **train}})
    stage_in_process("train", cwd=work, check=True)
    stage_in_process("evaluate", cwd=work, check=True)
    return work


def test_temperature_changes_probabilities_not_decisions(prepared_shapes: Path, tmp_path: Path):
    plain = run_with(prepared_shapes, tmp_path / "none", calibrate="none")
    scaled = run_with(prepared_shapes, tmp_path / "temperature", calibrate="temperature")
    a, b = (torch.load(w / "models/model.pt", weights_only=True) for w in (plain, scaled))
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])  # trained alike
    assert a["temperature"] == [] and len(b["temperature"]) == 1 and b["temperature"][0] != 1.0
    # every test image's decision is the same: the outcome records are byte for byte equal
    assert (plain / "metrics/evaluate/outcomes.json").read_bytes() == (scaled / "metrics/evaluate/outcomes.json").read_bytes()
    metrics = [json.loads((w / "metrics/evaluate/metrics.json").read_text()) for w in (plain, scaled)]
    assert metrics[0]["accuracy"] == metrics[1]["accuracy"]
    assert "before" not in metrics[0]["calibration"]
    assert metrics[1]["calibration"]["before"] == {k: metrics[0]["calibration"][k] for k in ("ece", "nll", "brier")}
    assert metrics[1]["calibration"]["nll"] != metrics[0]["calibration"]["nll"]
    train = json.loads((scaled / "metrics/train/metrics.json").read_text())["calibration"]
    assert train["temperature"] == b["temperature"][0] and train["val"]["nll"] <= train["val_before"]["nll"]
    bins = json.loads((scaled / "metrics/evaluate/reliability.json").read_text())
    assert sum(row["count"] for row in bins) == metrics[1]["test_images"]
    assert all(0 <= row["confidence"] <= 1 and 0 <= row["accuracy"] <= 1 for row in bins)


def test_class_weights_and_balanced_sampling_train_and_are_logged(prepared_shapes: Path, tmp_path: Path):
    work = run_with(prepared_shapes, tmp_path / "balanced", class_weight="balanced", sampler="balanced")
    logged = yaml.safe_load((work / "metrics/train/params.yaml").read_text())
    weights = logged["train"]["class_weights"]
    assert sorted(weights) == ["circle", "cross", "square"] and all(w > 0 for w in weights.values())
    assert "balanced_accuracy" in json.loads((work / "metrics/evaluate/metrics.json").read_text())


def test_a_class_weight_for_no_class_is_one_line(prepared_shapes: Path, tmp_path: Path):
    work = copy_prepared(prepared_shapes, tmp_path / "work")
    params = yaml.safe_load((work / "params.yaml").read_text())
    write_params(work / "params.yaml", {**params, "train": {**params["train"], "class_weight": {"triangle": 2}}})
    done = stage_in_process("train", cwd=work)
    assert_one_line_error(done, "train.class_weight names 'triangle'", "circle, cross, square")
    assert not (work / "models/model.pt").exists()
