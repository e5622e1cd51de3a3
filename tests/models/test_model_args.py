"""`model_args` from params.yaml to the model file: the train stage builds the model with them,
stores them in its spec, keys its resume state on them, and passes them to pretrained models."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from support.project import assert_one_line_error, copy_prepared, stage_in_process
from torch import nn

from imgpipe.core.errors import UserError
from imgpipe.core.params import ImageParams, TrainParams
from imgpipe.models.catalog import create_model
from imgpipe.models.checkpoint import load_checkpoint
from imgpipe.models.pretrained import load_pretrained
from imgpipe.train.stage import fingerprint


def train_with(prepared_shapes: Path, work: Path, **top_level) -> tuple[Path, subprocess.CompletedProcess]:
    """The train stage, as DVC runs it, in a copy of the shared prepared set with `top_level`
    params (model, model_args) set in its params.yaml."""
    params_file = copy_prepared(prepared_shapes, work) / "params.yaml"
    params_file.write_text(yaml.safe_dump({**yaml.safe_load(params_file.read_text()), **top_level}, sort_keys=False))
    return work / "models" / "model.pt", stage_in_process("train", cwd=work)


def test_train_stage_builds_and_saves_the_model_with_params_yaml_model_args(prepared_shapes, tmp_path):
    model_out, result = train_with(prepared_shapes, tmp_path / "work", model="cnn", model_args={"width": 8})
    assert result.returncode == 0, result.stderr

    model, spec = load_checkpoint(model_out)
    assert spec.model_args == {"width": 8}
    assert model[0][0].out_channels == 8  # the first conv
    assert torch.load(model_out, weights_only=True)["model_args"] == {"width": 8}


def test_train_stage_refuses_an_unknown_model_arg_in_one_line(prepared_shapes, tmp_path):
    model_out, result = train_with(prepared_shapes, tmp_path / "work", model="cnn", model_args={"widht": 8})
    assert_one_line_error(result, "params: model_args 'widht' is not an argument of model 'cnn'; it takes: width, dropout")
    assert not model_out.parent.exists()


def test_a_resumed_run_never_mixes_model_args(prepared_shapes):
    def run_id(model_args):
        return fingerprint("cnn", ImageParams(), TrainParams(), 0, prepared_shapes / "data/annotations.csv", model_args)

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
