"""Every registered model goes through the export's graph and its parity gate: uint8 images in,
the pipeline's own probabilities out (softmax, or a sigmoid per label with the decision rule),
on real decoded images; and what ONNX cannot express is one line naming the operator."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from support.datasets import write_multilabel_shapes, write_shapes_dataset
from torch import nn

from imgpipe.core.errors import UserError
from imgpipe.data.decoding import decode_images
from imgpipe.data.readers import list_images
from imgpipe.export.graph import WithPreprocessing, export_onnx
from imgpipe.export.parity import Parity, check_parity, parity
from imgpipe.feed.inference import predict_logits
from imgpipe.models.catalog import create_model, list_models
from imgpipe.predict.onnx_model import INPUT, OUTPUT, OnnxPredictor, ServingInfo
from imgpipe.task.tasks import Multiclass, Multilabel

ATOL = 1e-4  # export.atol's default
SIZE = 32  # px: every registered model takes it (tests/models/test_models.py)
MEAN, STD = [0.31], [0.27]
# Multi-label exports of every model cost another ~45 s; these run in the default tier, the rest with -m slow.
MULTILABEL_FAST = {"cnn", "mlp", "mobilenetv3_small"}


@pytest.fixture(scope="module")
def pixels(tmp_path_factory) -> np.ndarray:
    """Real decoded images (shapes, single- and multi-label sets), as the pipeline reads them."""
    root = tmp_path_factory.mktemp("export-images")
    files = list_images(write_shapes_dataset(root / "single", per_class=4)) + list_images(write_multilabel_shapes(root / "multi", count=8) / "images")
    images, unread = decode_images(files, SIZE, 1)
    assert not unread
    return images  # (20, 1, 32, 32)


def the_task(kind: str):
    if kind == "multiclass":
        return Multiclass(["circle", "cross", "square"])
    labels = ["circle", "cross", "p1=a", "p1=b"]  # a one-of group beside two plain labels
    return Multilabel.from_fields(labels, [0.5, 0.4, 0.5, 0.5], [[2, 3]])


def exported(model: nn.Module, task, out: Path) -> OnnxPredictor:
    info = ServingInfo.of(task, SIZE, 1)
    export_onnx(WithPreprocessing(model, MEAN, STD, task.activation, task.temperature), info, "m", out)
    return OnnxPredictor(out)


def cases():
    for name in list_models():
        yield pytest.param(name, "multiclass", id=f"{name}-multiclass")
        marks = () if name in MULTILABEL_FAST else (pytest.mark.slow,)
        yield pytest.param(name, "multilabel", id=f"{name}-multilabel", marks=marks)


@pytest.mark.parametrize(("name", "kind"), list(cases()))
def test_every_registered_model_exports_and_passes_the_gate(name: str, kind: str, pixels: np.ndarray, tmp_path: Path):
    torch.manual_seed(0)
    task = the_task(kind)
    model = create_model(name, num_classes=len(task.classes), in_channels=1, image_size=SIZE).eval()
    if name == "dummy":  # zero logits: every class ties, which says nothing about parity
        nn.init.normal_(model.head.bias)
    onnx_model = exported(model, task, tmp_path / "m.onnx")
    reference = task.probabilities(predict_logits(model, torch.from_numpy(pixels), MEAN, STD)).numpy()
    result = parity(task, reference, onnx_model.probabilities(pixels))
    check_parity(result, ATOL, name)  # raises with the numbers when it fails
    assert result.agreement == 1.0 and result.max_abs_diff <= ATOL
    one = onnx_model.probabilities(pixels[:1])  # the batch is dynamic: 1 as well as 20
    assert one.shape == (1, len(task.classes)) and np.allclose(one, reference[:1], atol=ATOL)


def test_the_graph_takes_uint8_nchw_with_a_dynamic_batch_and_says_what_it_is(tmp_path: Path):
    task = the_task("multilabel")
    exported(create_model("cnn", num_classes=4, in_channels=1, image_size=SIZE), task, tmp_path / "m.onnx")
    proto = onnx.load(tmp_path / "m.onnx")
    (image_input,), (output,) = proto.graph.input, proto.graph.output
    assert (image_input.name, output.name) == (INPUT, OUTPUT)
    assert image_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = image_input.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, SIZE, SIZE]
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["task"] == "multilabel" and props["classes"] == '["circle", "cross", "p1=a", "p1=b"]'
    assert props["thresholds"] == "[0.5, 0.4, 0.5, 0.5]" and props["groups"] == "[[2, 3]]"
    assert {"image_size", "channels", "resize", "input", "output", "decision"} <= props.keys()
    back = ServingInfo.from_props(props, tmp_path / "m.onnx").kind()
    assert (back.classes, back.rule) == (task.classes, task.rule)  # the decision rule survives the file


@pytest.mark.parametrize("kind", ["multiclass", "multilabel"])
def test_the_temperature_is_inside_the_graph_and_in_its_metadata(kind: str, pixels: np.ndarray, tmp_path: Path):
    """`train.calibrate`: the ONNX probabilities are the calibrated ones torch's predict path gives."""
    torch.manual_seed(0)
    plain = the_task(kind)
    temperature = (2.5,) if kind == "multiclass" else (0.5, 1.0, 2.0, 4.0)
    task = dataclasses.replace(plain, temperature=temperature)
    model = create_model("cnn", num_classes=len(task.classes), in_channels=1, image_size=SIZE).eval()
    onnx_model = exported(model, task, tmp_path / "m.onnx")
    logits = predict_logits(model, torch.from_numpy(pixels), MEAN, STD)
    reference = task.probabilities(logits).numpy()
    assert not np.allclose(reference, plain.probabilities(logits).numpy(), atol=1e-3)  # the temperature does something
    check_parity(parity(task, reference, onnx_model.probabilities(pixels)), ATOL, "cnn")
    props = {p.key: p.value for p in onnx.load(tmp_path / "m.onnx").metadata_props}
    assert json.loads(props["temperature"]) == list(temperature) and "temperature scaling" in props["calibration"]
    assert onnx_model.kind.temperature == temperature


def test_the_same_model_exports_to_the_same_bytes_from_any_checkout(tmp_path: Path):
    torch.manual_seed(0)
    model = create_model("cnn", num_classes=3, in_channels=1, image_size=SIZE)
    for name in ("a.onnx", "b.onnx"):
        exported(model, the_task("multiclass"), tmp_path / name)
    data = (tmp_path / "a.onnx").read_bytes()
    assert data == (tmp_path / "b.onnx").read_bytes()
    # Nothing in the file depends on where the code lives (the exporter's stack traces named
    # src/imgpipe/... by absolute path: a clone elsewhere exported other bytes than dvc.lock's).
    source_dir = str(Path(__file__).resolve().parents[2]).encode()
    assert source_dir not in data and b"File \"" not in data


class Zeta(nn.Module):
    """A model with an operator ONNX has no translation for (Hurwitz zeta)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.flatten(1).mean(1)
        return torch.stack([v, torch.special.zeta(v + 2, torch.tensor(2.0))], 1)


def test_an_operator_onnx_cannot_express_is_one_line_naming_it(tmp_path: Path):
    info = ServingInfo("multiclass", ["a", "b"], 8, 1)
    with pytest.raises(UserError, match=r"model 'zeta': cannot be exported to ONNX \(no ONNX translation for torch\.ops\.prims\.zeta"):
        export_onnx(WithPreprocessing(Zeta(), [0.5], [0.2], "softmax"), info, "zeta", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_the_gate_names_the_numbers_and_fails_on_one_disagreement():
    task = the_task("multiclass")
    reference = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]], dtype=np.float32)
    close = reference + np.float32(3e-5)
    assert parity(task, reference, close) == Parity(2, pytest.approx(3e-5, rel=1e-3), 1.0)
    flipped = reference.copy()
    flipped[1] = [0.2, 0.3, 0.5]
    result = parity(task, reference, flipped)
    assert result.agreement == 0.5
    with pytest.raises(UserError, match=r"m: differs from torch on the 2 test images \(decision agreement 0\.5000, largest probability difference 2\.00e-01"):
        check_parity(result, ATOL, "m")
    with pytest.raises(UserError, match="export.atol 1e-06"):
        check_parity(parity(task, reference, close), 1e-6, "m")
