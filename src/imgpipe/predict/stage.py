"""The predict stage and `imgpipe predict`: open the model file given (`open_model`: ONNX Runtime
for `.onnx`, torch otherwise, each imported only when chosen) and write its rows (`imgpipe.predict.rows`)."""

from __future__ import annotations

from pathlib import Path

from imgpipe.core.params import Params
from imgpipe.predict.rows import Predicted, Predictor, images_to_predict, predict


def open_model(path: Path) -> Predictor:
    """The model in `path`: an ONNX export (`.onnx`, without torch) or the trained model file."""
    if Path(path).suffix.lower() == ".onnx":
        from imgpipe.predict.onnx_model import OnnxPredictor

        return OnnxPredictor(path)
    from imgpipe.predict.torch_model import TorchPredictor

    return TorchPredictor(path)


def predict_stage(params: Params, model: Path, onnx_model: Path, annotations: Path, images: Path, out: Path) -> Predicted:
    """`predict.model` picks the model file (pt: `model`, onnx: `onnx_model`); `predict.input`
    the images (null: the test split)."""
    paths = images_to_predict(params.predict.input, annotations, images)
    return predict(open_model(onnx_model if params.predict.model == "onnx" else model), paths, out)
