"""The train stage's options: pretrained weights, freezing, early stopping, monitor, limit, determinism."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torchvision
from support.datasets import write_shapes_dataset

from imgpipe.core.errors import UserError
from imgpipe.core.params import AugmentParams, ImageParams, SplitParams, TrainParams
from imgpipe.data.augment import augment_dataset
from imgpipe.data.sources import download
from imgpipe.data.split import write_split
from imgpipe.models.catalog import get_model_entry
from imgpipe.models.checkpoint import load_checkpoint
from imgpipe.models.pretrained import imagenet_cache_file

TINY = TrainParams(epochs=2, batch_size=8, lr=0.01, log_every=1)
IMAGE = ImageParams(size=28, channels=1, normalize=True)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """download -> augment (originals only) -> split on 3 classes x 12 shape images."""
    root = tmp_path_factory.mktemp("prepared")
    source = write_shapes_dataset(root / "shapes", per_class=12)
    download(str(source), root / "raw")
    augment_dataset(root / "raw", root / "augmented", AugmentParams(rotations=(), shear=0.0), seed=0)
    write_split(root / "augmented", root / "annotations.csv", root / "split", SplitParams(0.5, 0.25, 0.25), seed=0)
    return root


def history(out: Path, metric: str) -> list[float]:
    """The values dvclive logged for `metric` (e.g. "val/loss"), in step order."""
    path = out / "metrics/plots/metrics" / f"{metric}.tsv"
    with path.open(newline="") as f:
        return [float(row[metric.rsplit("/", 1)[-1]]) for row in csv.DictReader(f, delimiter="\t")]


def run_train(prepared: Path, out: Path, model: str = "cnn", params: TrainParams = TINY, image: ImageParams = IMAGE):
    from imgpipe.train.stage import train

    best = train(model, image, params, 0, prepared / "annotations.csv", prepared / "augmented",
                 out / "model.pt", out / "metrics")
    return best, json.loads((out / "metrics" / "metrics.json").read_text())


def test_same_params_same_metrics(prepared, tmp_path):
    _, a = run_train(prepared, tmp_path / "a")
    _, b = run_train(prepared, tmp_path / "b")
    assert a == b
    assert (tmp_path / "a/metrics/plots/metrics/train/batch_loss.tsv").read_text() == (
        tmp_path / "b/metrics/plots/metrics/train/batch_loss.tsv"
    ).read_text()
    assert not (tmp_path / "a" / ".model.pt.resume").exists()  # cleaned up after success


def test_early_stopping_stops_after_patience_epochs(prepared, tmp_path):
    # A learning rate this small cannot change the predictions: no epoch after the first improves.
    params = dataclasses.replace(TINY, epochs=10, lr=1e-12, patience=2, monitor="val/accuracy")
    best, metrics = run_train(prepared, tmp_path, params=params)
    # Accuracy never rises after epoch 1, so training stops after epochs 2 and 3; among the
    # equal-accuracy epochs the saved one is that with the lowest validation loss.
    assert metrics["epoch"] == 3
    losses = history(tmp_path, "val/loss")
    assert best["epoch"] == losses.index(min(losses)) + 1


def test_monitor_val_loss_keeps_the_lowest_loss_epoch(prepared, tmp_path):
    params = dataclasses.replace(TINY, epochs=4, monitor="val/loss")
    best, _ = run_train(prepared, tmp_path, params=params)
    losses = history(tmp_path, "val/loss")
    assert best["val/loss"] == min(losses)
    assert best["epoch"] == losses.index(min(losses)) + 1


@pytest.mark.parametrize("scheduler", ["step", "cosine", "onecycle", "plateau"])
def test_schedulers_change_the_logged_learning_rate(prepared, tmp_path, scheduler):
    params = dataclasses.replace(TINY, epochs=3, scheduler=scheduler, lr_step_size=1, lr_gamma=0.5,
                                 lr_patience=0, warmup_epochs=1, monitor="val/loss")
    run_train(prepared, tmp_path, params=params)
    lrs = history(tmp_path, "lr")
    assert len(lrs) == 3 and len(set(lrs)) > 1, lrs


def write_state_dict(path: Path, model: torch.nn.Module) -> Path:
    torch.save(model.state_dict(), path)
    return path


def test_pretrained_file_with_frozen_backbone_trains_only_the_head(prepared, tmp_path):
    torch.manual_seed(1)
    weights = write_state_dict(tmp_path / "resnet18.pth", torchvision.models.resnet18(num_classes=1000))
    params = dataclasses.replace(TINY, pretrained=str(weights), freeze="backbone")
    run_train(prepared, tmp_path, model="resnet18", params=params)

    model, spec = load_checkpoint(tmp_path / "model.pt")
    assert spec.channels == 3  # grayscale images repeated to 3 channels for the pretrained stem
    assert spec.mean == [0.485, 0.456, 0.406] and spec.std == [0.229, 0.224, 0.225]
    before = torch.load(weights, weights_only=True)
    after = model.state_dict()
    changed = {k for k in after if not k.startswith("fc.") and not torch.equal(after[k], before[k])}
    assert changed == set()  # backbone weights and batch-norm statistics untouched
    assert after["fc.weight"].shape == (3, 512)


def test_pretrained_file_fine_tuned_changes_the_backbone(prepared, tmp_path):
    torch.manual_seed(1)
    weights = write_state_dict(tmp_path / "resnet18.pth", torchvision.models.resnet18(num_classes=1000))
    run_train(prepared, tmp_path, model="resnet18", params=dataclasses.replace(TINY, pretrained=str(weights)))
    before = torch.load(weights, weights_only=True)
    after = load_checkpoint(tmp_path / "model.pt")[0].state_dict()
    assert not torch.equal(after["conv1.weight"], before["conv1.weight"])


def test_imagenet_weights_load_from_the_torch_cache(prepared, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = imagenet_cache_file(get_model_entry("resnet18"))
    cached.parent.mkdir(parents=True)
    torch.manual_seed(2)
    write_state_dict(cached, torchvision.models.resnet18(num_classes=1000))
    params = dataclasses.replace(TINY, epochs=1, pretrained="imagenet", freeze="backbone")
    run_train(prepared, tmp_path, model="resnet18", params=params)
    after = load_checkpoint(tmp_path / "model.pt")[0].state_dict()
    assert torch.equal(after["layer4.1.conv2.weight"], torch.load(cached, weights_only=True)["layer4.1.conv2.weight"])


def test_imagenet_for_a_model_without_weights_lists_those_with(prepared, tmp_path):
    with pytest.raises(UserError, match="model 'cnn' has no ImageNet weights; models that do: .*resnet18"):
        run_train(prepared, tmp_path, params=dataclasses.replace(TINY, pretrained="imagenet"))


def test_weights_file_for_another_architecture_is_refused(prepared, tmp_path):
    weights = write_state_dict(tmp_path / "r50.pth", torchvision.models.resnet50(num_classes=10))
    with pytest.raises(UserError, match="do not fit model 'resnet18'"):
        run_train(prepared, tmp_path, model="resnet18", params=dataclasses.replace(TINY, pretrained=str(weights)))


def test_freeze_without_pretrained_is_refused():
    with pytest.raises(UserError, match="train.freeze"):
        TrainParams(freeze="backbone")


def test_dummy_baseline_predicts_one_class(prepared, tmp_path):
    run_train(prepared, tmp_path, model="dummy", params=dataclasses.replace(TINY, epochs=3, lr=0.1))
    model, _ = load_checkpoint(tmp_path / "model.pt")
    with torch.no_grad():
        probs = model(torch.randn(5, 1, 28, 28)).softmax(1)
    assert torch.allclose(probs, probs[0].expand_as(probs))


def test_data_limit_keeps_the_first_n_images_per_class(tmp_path):
    source = write_shapes_dataset(tmp_path / "shapes", per_class=6)
    counts = download(str(source), tmp_path / "raw", limit=2).counts
    assert counts == {"circle": 2, "cross": 2, "square": 2}
    assert sorted(p.name for p in (tmp_path / "raw/cross").iterdir()) == ["cross_00.png", "cross_01.png"]
    assert len(list((source / "cross").iterdir())) == 6  # the user's folder is untouched
