"""`model_args` from params.yaml to the model file: the train stage builds the model with them,
stores them in its spec, keys its resume state on them, and passes them to pretrained models."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import typer
import yaml
from conftest import REPO, write_shapes_dataset
from torch import nn

from imgpipe.checkpoint import load_checkpoint
from imgpipe.data.augment import augment_dataset
from imgpipe.data.sources import download
from imgpipe.data.split import write_split
from imgpipe.errors import UserError
from imgpipe.models import create_model
from imgpipe.params import AugmentParams, ImageParams, SplitParams, TrainParams
from imgpipe.pretrained import load_pretrained
from imgpipe.training import fingerprint


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """download -> augment (originals only) -> split on 3 classes x 12 shape images."""
    root = tmp_path_factory.mktemp("prepared")
    source = write_shapes_dataset(root / "shapes", per_class=12)
    download(str(source), root / "raw")
    augment_dataset(root / "raw", root / "augmented", AugmentParams(rotations=(), shear=0.0), seed=0)
    write_split(root / "augmented", root / "annotations.csv", root / "split", SplitParams(0.5, 0.25, 0.25), seed=0)
    return root


def train_stage():
    """stages/train.py's command, imported as a function (the script is not a package module)."""
    spec = importlib.util.spec_from_file_location("train_stage", REPO / "stages" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def write_params(path: Path, **overrides) -> Path:
    """The repo's params.yaml with top-level `overrides`, for a run of a few seconds."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["image"]["size"] = 28
    params["train"].update(epochs=1, batch_size=8, log_every=1)
    params.update(overrides)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def run_stage(prepared: Path, out: Path, **overrides) -> Path:
    model_out = out / "models" / "model.pt"
    train_stage()(
        params=write_params(out / "params.yaml", **overrides), annotations=prepared / "annotations.csv",
        images=prepared / "augmented", out=model_out, metrics=out / "metrics",
    )
    return model_out


def test_train_stage_builds_and_saves_the_model_with_params_yaml_model_args(prepared, tmp_path):
    model_out = run_stage(prepared, tmp_path, model="cnn", model_args={"width": 8})

    model, spec = load_checkpoint(model_out)
    assert spec.model_args == {"width": 8}
    assert model[0][0].out_channels == 8  # the first conv
    assert torch.load(model_out, weights_only=True)["model_args"] == {"width": 8}


def test_train_stage_refuses_an_unknown_model_arg_in_one_line(prepared, tmp_path, capsys):
    with pytest.raises(typer.Exit) as info:
        run_stage(prepared, tmp_path, model="cnn", model_args={"widht": 8})
    assert info.value.exit_code == 1
    assert capsys.readouterr().err == (
        "error: params: model_args 'widht' is not an argument of model 'cnn'; it takes: width, dropout\n"
    )
    assert not (tmp_path / "models").exists()


def test_a_resumed_run_never_mixes_model_args(prepared):
    def run_id(model_args):
        return fingerprint("cnn", ImageParams(), TrainParams(), 0, prepared / "annotations.csv", model_args)

    assert run_id({"width": 8}) != run_id({"width": 16}) != run_id({})
    assert run_id({"width": 8, "dropout": 0.1}) == run_id({"dropout": 0.1, "width": 8})
    assert run_id(None) == run_id({})


def saved_weights(path: Path, **model_args) -> Path:
    torch.manual_seed(0)
    torch.save(create_model("cnn", num_classes=4, in_channels=3, image_size=28, **model_args).state_dict(), path)
    return path


def test_pretrained_weights_take_a_new_dropout(tmp_path):
    model = load_pretrained("cnn", str(saved_weights(tmp_path / "w.pt")), 3, 28, {"dropout": 0.45})
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.45]
    assert model[8].out_features == 3  # a fresh head for the 3 classes


def test_pretrained_weights_take_the_width_they_were_trained_with(tmp_path):
    model = load_pretrained("cnn", str(saved_weights(tmp_path / "w.pt", width=8)), 3, 28, {"width": 8})
    assert model[0][0].out_channels == 8


def test_pretrained_weights_of_another_width_are_a_one_line_error(tmp_path):
    weights = saved_weights(tmp_path / "w.pt")
    with pytest.raises(UserError) as info:
        load_pretrained("cnn", str(weights), 3, 28, {"width": 8, "dropout": 0.3})
    assert str(info.value) == (
        f"train.pretrained: the weights in '{weights}' do not fit model 'cnn' with model_args width=8, dropout=0.3; "
        "keep only arguments that leave its shapes as the weights have them (dropout does, width does not)"
    )
