"""Optimizer, loss and learning-rate schedule factories, and gradient clipping."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from imgpipe.core.errors import UserError
from imgpipe.core.params import TrainParams
from imgpipe.feed.tensors import LabelledImages
from imgpipe.task.losses import LOSSES
from imgpipe.task.tasks import Multiclass, Multilabel
from imgpipe.train.fit import Fit
from imgpipe.train.loop import train_one_epoch
from imgpipe.train.optim import OPTIMIZERS, SCHEDULES, create_optimizer, create_schedule, warmup_cosine

BASE = TrainParams(lr=0.05, epochs=4)
SINGLE = Multiclass(["a", "b", "c"])  # the loss is the task's choice (imgpipe.task.tasks)
MULTI = Multilabel(["a", "b", "c"])


def single_label_loss(params: TrainParams):
    return SINGLE.create_loss(params, torch.tensor([0, 1, 2]))


def toy_problem(seed: int = 0):
    torch.manual_seed(seed)
    x = torch.randn(64, 8)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()  # 3 classes
    return nn.Linear(8, 3), x, y


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_reduces_the_loss(name):
    model, x, y = toy_problem()
    lr = 1.0 if name == "adadelta" else 0.05  # adadelta's lr is a scale on its own step size
    optimizer = create_optimizer(model.parameters(), dataclasses.replace(BASE, optimizer=name, lr=lr))
    loss_fn = nn.CrossEntropyLoss()
    first = loss_fn(model(x), y).item()
    for _ in range(30):
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
    assert loss_fn(model(x), y).item() < first


def test_sgd_uses_momentum_and_nesterov():
    model, _, _ = toy_problem()
    group = create_optimizer(model.parameters(), dataclasses.replace(BASE, optimizer="sgd", momentum=0.8)).param_groups[0]
    assert group["momentum"] == 0.8 and group["nesterov"] is True
    group = create_optimizer(model.parameters(), dataclasses.replace(BASE, optimizer="sgd", nesterov=False)).param_groups[0]
    assert group["nesterov"] is False


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_is_finite_and_lower_for_the_right_class(name):
    loss_fn = single_label_loss(dataclasses.replace(BASE, loss=name))
    targets = torch.tensor([0, 2])
    right = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    wrong = torch.tensor([[0.0, 5.0, 0.0], [5.0, 0.0, 0.0]])
    assert torch.isfinite(loss_fn(right, targets))
    assert loss_fn(right, targets) < loss_fn(wrong, targets)


def test_label_smoothing_raises_the_loss_of_a_confident_right_answer():
    logits, targets = torch.tensor([[10.0, 0.0, 0.0]]), torch.tensor([0])
    plain = single_label_loss(BASE)(logits, targets)
    smoothed = single_label_loss(dataclasses.replace(BASE, label_smoothing=0.2))(logits, targets)
    assert smoothed > plain + 0.5


def test_mse_compares_softmax_probabilities_with_one_hot():
    logits, targets = torch.tensor([[0.0, 0.0]]), torch.tensor([1])
    # softmax = (0.5, 0.5) against (0, 1): mean squared error 0.25
    assert single_label_loss(dataclasses.replace(BASE, loss="mse"))(logits, targets).item() == pytest.approx(0.25)


def test_warmup_cosine_rises_then_decays_to_zero():
    factor = warmup_cosine(warmup_steps=4, total_steps=12)
    values = [factor(s) for s in range(13)]
    assert values[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(values[3:], values[4:], strict=False))
    assert values[12] == pytest.approx(0.0)
    assert values[8] == pytest.approx(0.5)  # half-way through the decay


def lrs(scheduler: str, epochs: int = 4, steps: int = 3, monitored=None, **overrides) -> list[float]:
    """The learning rate at the start of each epoch."""
    model, _, _ = toy_problem()
    params = dataclasses.replace(BASE, scheduler=scheduler, epochs=epochs, **overrides)
    optimizer = create_optimizer(model.parameters(), params)
    schedule = create_schedule(optimizer, params, steps)
    out = []
    for epoch in range(epochs):
        out.append(optimizer.param_groups[0]["lr"])
        for _ in range(steps):
            optimizer.step()
            schedule.after_batch()
        schedule.after_epoch(monitored[epoch] if monitored else 0.0)
    return out


def test_step_schedule_decays_every_lr_step_size_epochs():
    assert lrs("step", lr_step_size=2, lr_gamma=0.5) == pytest.approx([0.05, 0.05, 0.025, 0.025])


def test_onecycle_peaks_at_train_lr():
    values = lrs("onecycle", epochs=4, steps=5)
    assert max(values) <= 0.05 + 1e-9 and values[0] < 0.01


def test_plateau_decays_when_the_monitor_stalls():
    values = lrs("plateau", monitored=[0.5, 0.5, 0.5, 0.5], lr_patience=0, lr_gamma=0.5, monitor="val/accuracy")
    assert values == pytest.approx([0.05, 0.05, 0.025, 0.0125])


def test_none_keeps_the_learning_rate():
    assert lrs("none") == [0.05] * 4


@pytest.mark.parametrize("key,value,table", [("optimizer", "lamb", OPTIMIZERS), ("loss", "focal", LOSSES),
                                             ("scheduler", "cyclic", SCHEDULES)])
def test_unknown_names_list_the_choices(key, value, table):
    model, _, _ = toy_problem()
    params = dataclasses.replace(BASE, **{key: value})
    with pytest.raises(UserError) as info:
        optimizer = create_optimizer(model.parameters(), params if key == "optimizer" else BASE)
        single_label_loss(params)
        create_schedule(optimizer, params, 1)
    assert str(info.value) == f"params: train.{key} '{value}' is unknown; choose one of: {', '.join(table)}"


def test_gradient_clipping_bounds_each_update():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    before = [p.detach().clone() for p in model.parameters()]
    params = dataclasses.replace(BASE, optimizer="sgd", momentum=0.0, lr=1.0, clip_grad_norm=1e-3, weight_decay=0.0)
    optimizer = create_optimizer(model.parameters(), params)
    fit = Fit(model=model, head="1", frozen=False, optimizer=optimizer, loss_fn=single_label_loss(params),
              schedule=create_schedule(optimizer, params, 1), clip_grad_norm=params.clip_grad_norm,
              mean=[0.0], std=[1.0], task=SINGLE)
    data = LabelledImages(torch.full((4, 1, 2, 2), 255, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]))
    train_one_epoch(fit, data, batch_size=4, generator=torch.Generator().manual_seed(0), on_batch=lambda loss: None)
    step = math.sqrt(sum(((p - b) ** 2).sum().item() for p, b in zip(model.parameters(), before, strict=True)))
    assert step == pytest.approx(1e-3, rel=1e-3)  # lr 1 x clipped norm 1e-3


ML_TARGETS = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 1.0]])


@pytest.mark.parametrize("name", ["auto", "bce", "multilabel_soft_margin", "mse", "l1"])
def test_every_multilabel_loss_is_lower_for_the_right_label_set(name):
    loss_fn = MULTI.create_loss(dataclasses.replace(BASE, loss=name), ML_TARGETS)
    right = (ML_TARGETS * 2 - 1) * 5  # +5 where the label is present, -5 where absent
    assert torch.isfinite(loss_fn(right, ML_TARGETS))
    assert loss_fn(right, ML_TARGETS) < loss_fn(-right, ML_TARGETS)


def test_auto_loss_is_bce_for_multilabel_and_cross_entropy_otherwise():
    logits = torch.zeros(4, 3)
    bce = MULTI.create_loss(dataclasses.replace(BASE, loss="auto"), ML_TARGETS)(logits, ML_TARGETS)
    assert bce.item() == pytest.approx(math.log(2))
    ce = SINGLE.create_loss(dataclasses.replace(BASE, loss="auto"), torch.tensor([0, 1, 2, 0]))(logits, torch.tensor([0, 1, 2, 0]))
    assert ce.item() == pytest.approx(math.log(3))


def test_pos_weight_auto_is_negatives_over_positives_per_label():
    from imgpipe.task.losses import positive_weights

    assert positive_weights(ML_TARGETS).tolist() == pytest.approx([1 / 3, 3.0, 3.0])
    # A label on every image, or on none, keeps weight 1 (0 would stop it learning).
    assert positive_weights(torch.tensor([[1.0, 0.0], [1.0, 0.0]])).tolist() == [1.0, 1.0]
    # Weighting positives raises the loss of a missed positive of a rare label.
    logits = torch.zeros(4, 3)
    plain = MULTI.create_loss(dataclasses.replace(BASE, loss="bce"), ML_TARGETS)(logits, ML_TARGETS)
    weighted = MULTI.create_loss(dataclasses.replace(BASE, loss="bce", pos_weight="auto"), ML_TARGETS)(logits, ML_TARGETS)
    assert weighted.item() != pytest.approx(plain.item())


@pytest.mark.parametrize(
    "changes,fragment",
    [
        ({"loss": "cross_entropy"}, "train.loss 'cross_entropy' is single-label"),
        ({"loss": "mse", "pos_weight": "auto"}, "train.pos_weight auto works with train.loss bce"),
        ({"label_smoothing": 0.1}, "train.label_smoothing is for cross_entropy on single-label data"),
    ],
)
def test_multilabel_loss_misuse_is_a_user_error(changes, fragment):
    with pytest.raises(UserError, match=fragment.replace(".", r"\.")):
        MULTI.create_loss(dataclasses.replace(BASE, **changes), ML_TARGETS)


def test_pos_weight_on_single_label_data_is_a_user_error():
    with pytest.raises(UserError, match="train.pos_weight is for multi-label data"):
        SINGLE.create_loss(dataclasses.replace(BASE, pos_weight="auto"), torch.tensor([0, 1]))
