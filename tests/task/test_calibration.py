"""Calibration scores, the reliability diagram's bins and temperature scaling, against values
worked out by hand and against data whose true temperature is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import brier_score_loss, log_loss

from imgpipe.core.params import TrainParams
from imgpipe.task import calibration
from imgpipe.task.kinds import MulticlassKind, MultilabelKind
from imgpipe.task.tasks import Multiclass, Multilabel


def test_ece_of_hand_made_bins():
    # Two images at 0.95 confidence, one right (bin 15: |0.5 - 0.95|); two at 0.55, both right
    # (bin 9: |1 - 0.55|): ECE = (2 * 0.45 + 2 * 0.45) / 4.
    confidence = np.array([0.95, 0.95, 0.55, 0.55])
    hit = np.array([True, False, True, True])
    assert calibration.expected_calibration_error(confidence, hit) == pytest.approx(0.45)
    bins = calibration.reliability_bins(confidence, hit)
    assert [(b["bin"], b["confidence"], b["accuracy"], b["count"]) for b in bins] == [(9, 0.55, 1.0, 2), (15, 0.95, 0.5, 2)]
    assert bins[0]["low"] == pytest.approx(8 / 15) and bins[0]["high"] == pytest.approx(9 / 15)


def test_bin_edges_are_right_closed():
    # (b/15, (b+1)/15]: 1/15 is in the first bin, a hair above it in the second, 0 and 1 at the ends.
    assert calibration.bin_index(np.array([0.0, 1 / 15, 1 / 15 + 1e-9, 1.0])).tolist() == [0, 0, 1, 14]


def test_single_label_scores_match_scikit_learn():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 4)) * 3
    targets = rng.integers(0, 4, 200)
    found = calibration.single_label(logits, targets).scores
    probs = torch.softmax(torch.tensor(logits), 1).numpy()
    assert found["nll"] == pytest.approx(log_loss(targets, probs, labels=range(4)))
    one_hot = np.eye(4)[targets]
    assert found["brier"] == pytest.approx(((probs - one_hot) ** 2).sum(1).mean())
    conf, hit = probs.max(1), probs.argmax(1) == targets
    manual = sum(abs(hit[m].mean() - conf[m].mean()) * m.sum() for b in range(15)
                 if (m := (conf > b / 15) & (conf <= (b + 1) / 15)).any()) / 200
    assert found["ece"] == pytest.approx(manual)


def test_multi_label_scores_pool_every_label_and_keep_each_labels_ece():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(300, 3)) * 2
    targets = (rng.random((300, 3)) < 1 / (1 + np.exp(-logits))).astype(np.uint8)
    found = calibration.multi_label(logits, targets)
    probs = 1 / (1 + np.exp(-logits))
    assert found.scores["nll"] == pytest.approx(log_loss(targets.ravel(), probs.ravel()))
    assert found.scores["brier"] == pytest.approx(brier_score_loss(targets.ravel(), probs.ravel()))
    assert len(found.per_label_ece) == 3
    assert found.per_label_ece[0] == pytest.approx(calibration.expected_calibration_error(probs[:, 0], targets[:, 0].astype(bool)))
    assert sum(b["count"] for b in found.bins) == 900


def sampled(temperature: float, n: int = 4000, k: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose labels are drawn from softmax(logits / temperature): that temperature calibrates them."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 4
    probs = torch.softmax(torch.tensor(logits / temperature), 1).numpy()
    targets = np.array([rng.choice(k, p=p) for p in probs])
    return logits, targets


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_fitted_temperature_recovers_the_true_one_and_lowers_ece(true_t):
    logits, targets = sampled(true_t)
    fitted = calibration.fit_single_label(logits, targets)
    assert fitted == pytest.approx(true_t, rel=0.1)
    before = calibration.single_label(logits, targets).scores
    after = calibration.single_label(logits / fitted, targets).scores
    assert after["nll"] < before["nll"] and after["ece"] < before["ece"]


def test_val_with_every_decision_right_keeps_temperature_one():
    # Every val image right: the NLL falls without end towards T -> 0, so there is no optimum to
    # fit and the model keeps its own scale, for single-label and for each such label.
    logits = np.array([[5.0, 0.0], [0.0, 5.0]] * 10)
    targets = np.array([0, 1] * 10)
    assert calibration.fit_single_label(logits, targets) == 1.0
    one_wrong = targets.copy()
    one_wrong[0] = 1
    assert calibration.fit_single_label(logits, one_wrong) != 1.0
    z = np.array([[3.0, 3.0], [-2.0, -2.0], [1.0, 1.0]] * 10)
    y = np.array([[1, 1], [0, 0], [1, 0]] * 10)  # label 0 all on the right side of 0.5; label 1 not
    fitted = calibration.fit_multi_label(z, y)
    assert fitted[0] == 1.0 and calibration.LOWEST <= fitted[1] <= calibration.HIGHEST and fitted[1] != 1.0


def test_multi_label_fits_one_temperature_per_label_and_leaves_one_sided_labels_at_one():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(3000, 3)) * 3
    truth = rng.random((3000, 3)) < 1 / (1 + np.exp(-logits / np.array([0.5, 3.0, 1.0])))
    truth[:, 2] = False  # never present on val: nothing to fit
    fitted = calibration.fit_multi_label(logits, truth.astype(np.uint8))
    assert fitted[0] == pytest.approx(0.5, rel=0.15) and fitted[1] == pytest.approx(3.0, rel=0.15)
    assert fitted[2] == 1.0


def test_temperature_changes_no_single_label_decision_and_is_used_by_every_probability():
    logits, targets = sampled(2.0, n=500)
    task = Multiclass([str(k) for k in range(5)])
    params = TrainParams(calibrate="temperature")
    tuned, notes = task.after_training(params, torch.tensor(logits, dtype=torch.float32), torch.tensor(targets))
    (t,) = tuned.temperature
    assert t == pytest.approx(2.0, rel=0.2) and "temperature" in notes[0].text
    x = torch.tensor(logits, dtype=torch.float32)
    assert np.array_equal(tuned.decide(x), task.decide(x))
    assert torch.allclose(tuned.probabilities(x), torch.softmax(x / t, 1))
    rows = tuned.probability_rows(range(500), tuned.probabilities(x).numpy())
    assert rows[0]["probability"] == pytest.approx(float(torch.softmax(x[0] / t, 0).max()), abs=1e-6)
    # stored and read back as the model file and the ONNX metadata keep it
    assert tuned.spec_fields()["temperature"] == [t]
    assert MulticlassKind.from_fields(tuned.classes, temperature=[t]).temperature == (t,)
    none, _ = task.after_training(TrainParams(calibrate="none"), x, torch.tensor(targets))
    assert none.temperature == ()


def test_multilabel_thresholds_are_tuned_on_calibrated_probabilities():
    rng = np.random.default_rng(3)
    logits = torch.tensor(rng.normal(size=(400, 2)) * 4, dtype=torch.float32)
    targets = torch.tensor((rng.random((400, 2)) < torch.sigmoid(logits / 2).numpy()).astype(np.float32))
    task, _ = Multilabel(["a", "b"]).for_training(TrainParams(threshold="tune"), targets)
    tuned, _ = task.after_training(TrainParams(threshold="tune", calibrate="temperature"), logits, targets)
    plain, _ = task.after_training(TrainParams(threshold="tune", calibrate="none"), logits, targets)
    assert len(tuned.temperature) == 2 and all(t > 1.3 for t in tuned.temperature)
    # the same cut on val, expressed on the calibrated scale: sigmoid(logit / T) of plain's logit cut
    for k, (t_cal, t_plain) in enumerate(zip(tuned.rule.thresholds, plain.rule.thresholds, strict=True)):
        cut = math.log(t_plain / (1 - t_plain))
        assert t_cal == pytest.approx(1 / (1 + math.exp(-cut / tuned.temperature[k])), abs=0.05)
    assert MultilabelKind.from_fields(["a", "b"], tuned.rule.thresholds, [], tuned.temperature).temperature == tuned.temperature
