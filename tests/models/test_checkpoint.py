"""The model file: a round trip, a plain weights-only payload, and clean errors for bad files."""

from __future__ import annotations

import dataclasses
import io
import pickle
import re

import pytest
import torch
from PIL import Image

from imgpipe.core.errors import UserError
from imgpipe.models.catalog import create_model
from imgpipe.models.checkpoint import FORMAT_VERSION, ModelSpec, load_checkpoint, save_checkpoint

SPEC = ModelSpec(model="cnn", classes=["circle", "cross", "square"], image_size=28, channels=1, mean=[0.25], std=[0.5])


class NotAModel:
    """An arbitrary picklable object, not allowed in a weights-only file."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


def trained_like_model(spec: ModelSpec = SPEC) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(
        spec.model, num_classes=len(spec.classes), in_channels=spec.channels, image_size=spec.image_size, **spec.model_args
    )
    model.train()
    model(torch.randn(4, spec.channels, spec.image_size, spec.image_size))  # moves BatchNorm running stats
    return model


def test_round_trip_restores_spec_weights_and_eval_mode(tmp_path):
    model = trained_like_model()
    path = tmp_path / "model" / "model.pt"
    save_checkpoint(path, SPEC, model.state_dict(), extra={"best_epoch": 3})

    loaded, spec = load_checkpoint(path)

    assert spec == SPEC
    assert not loaded.training
    saved, restored = model.state_dict(), loaded.state_dict()
    assert saved.keys() == restored.keys()
    for key in saved:
        assert torch.equal(saved[key], restored[key]), key
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temp file left


@pytest.mark.parametrize(("name", "channels", "size"), [("mlp", 3, 32), ("resnet18", 3, 28)])
def test_round_trip_other_models(tmp_path, name, channels, size):
    spec = ModelSpec(name, ["a", "b"], size, channels, [0.1, 0.2, 0.3], [1.0, 1.0, 1.0])
    model = trained_like_model(spec)
    save_checkpoint(tmp_path / "m.pt", spec, model.state_dict(), extra={})
    loaded, loaded_spec = load_checkpoint(tmp_path / "m.pt")
    assert loaded_spec == spec
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


def test_file_loads_with_weights_only(tmp_path):
    model = trained_like_model()
    path = tmp_path / "model.pt"
    save_checkpoint(path, SPEC, model.state_dict(), extra={"best_epoch": 7})

    payload = torch.load(path, map_location="cpu", weights_only=True)

    assert set(payload) == {
        "format", "model", "classes", "image_size", "channels", "mean", "std", "model_args", "task", "thresholds",
        "groups", "temperature", "state_dict", "best_epoch",
    }
    assert payload["model_args"] == {}
    assert payload["format"] == FORMAT_VERSION == 4
    assert (payload["task"], payload["thresholds"], payload["groups"], payload["temperature"]) == ("multiclass", [], [], [])
    assert payload["model"] == "cnn"
    assert payload["classes"] == ["circle", "cross", "square"]
    assert (payload["image_size"], payload["channels"]) == (28, 1)
    assert (payload["mean"], payload["std"]) == ([0.25], [0.5])
    assert payload["best_epoch"] == 7
    assert all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values())


def test_save_replaces_an_existing_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"old")
    save_checkpoint(path, SPEC, trained_like_model().state_dict(), extra={})
    assert load_checkpoint(path)[1] == SPEC


def test_missing_file_is_a_user_error(tmp_path):
    path = tmp_path / "model.pt"
    with pytest.raises(UserError) as info:
        load_checkpoint(path)
    assert str(info.value) == f"{path}: model file not found; run the train stage first"


def test_pickled_arbitrary_object_is_a_user_error(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(NotAModel(), path)
    with pytest.raises(UserError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"{path}: not a loadable imgpipe model file (")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_plain_pickle_of_an_object_is_a_user_error(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps(NotAModel()))
    with pytest.raises(UserError, match="not a loadable imgpipe model file"):
        load_checkpoint(path)


def test_dict_with_a_pickled_object_inside_is_a_user_error(tmp_path):
    path = tmp_path / "model.pt"
    state = trained_like_model().state_dict()
    torch.save({"format": FORMAT_VERSION, "model": "cnn", "state_dict": state, "evil": NotAModel()}, path)
    with pytest.raises(UserError, match="not a loadable imgpipe model file"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "payload",
    [torch.zeros(3), {"format": 99, "state_dict": {}}, [1, 2, 3]],
    ids=["tensor", "other-format", "list"],
)
def test_weights_only_payload_that_is_not_a_model_file(tmp_path, payload):
    path = tmp_path / "model.pt"
    torch.save(payload, path)
    with pytest.raises(UserError) as info:
        load_checkpoint(path)
    assert str(info.value) == f"{path}: not an imgpipe model file (format {FORMAT_VERSION}); retrain it"


def test_truncated_file_is_a_user_error(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, SPEC, trained_like_model().state_dict(), extra={})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="not a loadable imgpipe model file"):
        load_checkpoint(path)


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "content",
    [b"", png_bytes(), b'{"model": "cnn"}\n', b"seed: 42\n", b"hello world\n"],
    ids=["empty", "png", "json", "yaml", "text"],
)
def test_a_file_that_is_not_a_model_is_a_user_error(tmp_path, content):
    # e.g. `predict` pointed at the wrong file: one line, no traceback.
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match="not a loadable imgpipe model file"):
        load_checkpoint(path)


def test_model_file_with_missing_spec_fields_is_a_user_error(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"format": FORMAT_VERSION, "model": "cnn", "state_dict": {}}, path)  # no classes, size, ...
    with pytest.raises(UserError, match=re.escape(str(path))):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_model_are_a_user_error(tmp_path):
    # e.g. the model code changed since the file was trained: retrain, not a traceback.
    path = tmp_path / "model.pt"
    mlp_spec = ModelSpec("mlp", SPEC.classes, SPEC.image_size, SPEC.channels, SPEC.mean, SPEC.std)
    save_checkpoint(path, SPEC, trained_like_model(mlp_spec).state_dict(), extra={})  # cnn spec, mlp weights
    with pytest.raises(UserError, match=re.escape(str(path))):
        load_checkpoint(path)


@pytest.mark.parametrize(("name", "model_args"), [("cnn", {"width": 8, "dropout": 0.4}), ("mlp", {"width": 16, "dropout": 0.1})])
def test_model_args_are_saved_and_rebuild_the_same_model(tmp_path, name, model_args):
    spec = dataclasses.replace(SPEC, model=name, model_args=model_args)
    model = trained_like_model(spec)
    path = tmp_path / "model.pt"
    save_checkpoint(path, spec, model.state_dict(), extra={})

    loaded, loaded_spec = load_checkpoint(path)

    assert loaded_spec.model_args == model_args
    assert repr(loaded) == repr(model)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_a_model_file_without_model_args_loads_with_the_defaults(tmp_path):
    # Files written before model_args existed: the same payload without the key.
    model = trained_like_model()
    path = tmp_path / "model.pt"
    payload = {"format": FORMAT_VERSION, **dataclasses.asdict(SPEC), "state_dict": model.state_dict()}
    del payload["model_args"]
    torch.save(payload, path)

    loaded, spec = load_checkpoint(path)

    assert spec == SPEC and spec.model_args == {}
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_model_args_the_model_no_longer_takes_are_a_user_error(tmp_path):
    # e.g. a file trained when cnn took an argument since removed: retrain, not a traceback.
    path = tmp_path / "model.pt"
    payload = {"format": FORMAT_VERSION, **dataclasses.asdict(SPEC), "state_dict": trained_like_model().state_dict()}
    payload["model_args"] = {"depth": 4}
    torch.save(payload, path)
    with pytest.raises(UserError) as info:
        load_checkpoint(path)
    assert str(info.value) == (
        f"{path}: model_args 'depth' is not an argument of model 'cnn'; it takes: width, dropout; retrain it"
    )
