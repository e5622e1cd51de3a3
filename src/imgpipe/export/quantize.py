"""int8: ONNX Runtime's static quantization of the exported graph (QDQ format, int8 weights per
channel, uint8 activations), with activation ranges calibrated (min-max) on training images.

It trades accuracy for size and speed, so it has its own gate: the test split's accuracy with the
int8 file may fall at most `export.max_drop` below torch's.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx

from imgpipe.predict.onnx_model import INPUT

CALIBRATION_BATCH = 32


def quantize_int8(float_file: Path, out: Path, calibration: np.ndarray, props: dict[str, str]) -> None:
    """Write the int8 version of `float_file` to `out`, calibrated on `calibration` (N, C, H, W)
    uint8 images, with `props` as its metadata."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{INPUT: calibration[i : i + CALIBRATION_BATCH]} for i in range(0, len(calibration), CALIBRATION_BATCH)])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    quiet = logging.getLogger("root").level
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static logs its progress at INFO
    try:
        with tempfile.TemporaryDirectory(dir=Path(out).parent) as tmp, contextlib.redirect_stdout(io.StringIO()):
            prepared = Path(tmp) / "prepared.onnx"
            quant_pre_process(str(float_file), str(prepared), skip_symbolic_shape=True)
            quantize_static(str(prepared), str(out), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        logging.getLogger().setLevel(quiet)
    proto = onnx.load(str(out))
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, props)
    onnx.save_model(proto, str(out))
