"""The trained model as an ONNX graph that takes what a decoder gives (uint8 images, NCHW, at
the model's size and channels, any batch) and returns probabilities, with the training split's
normalisation and the task's activation inside, so a consumer re-implements nothing but the
resize (`imgpipe.predict.onnx_model.RESIZE`, stated in the file's metadata).

Exported with `torch.onnx.export(dynamo=True)` (torch.export, then onnxscript's translation):
the graph is traced from the model's code, and an operator ONNX cannot express fails here, as
one line naming the model, not in a server later.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import onnx
import torch
from torch import nn

from imgpipe.core.errors import UserError
from imgpipe.predict.onnx_model import INPUT, OUTPUT, ServingInfo

OPSET = 18  # torch.onnx's default for dynamo export; ONNX Runtime 1.14 and later run it


class WithPreprocessing(nn.Module):
    """uint8 (B, C, H, W) -> probabilities (B, K): scale to 0..1, standardise with the training
    split's mean and std, the model, the temperature (`train.calibrate`), then softmax (one class)
    or sigmoid (labels): the same
    arithmetic as `imgpipe.feed.tensors.to_model_input` and the task's `probabilities`."""

    def __init__(
        self, model: nn.Module, mean: Sequence[float], std: Sequence[float], activation: str, temperature: Sequence[float] = (),
    ) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        if activation not in ("softmax", "sigmoid"):
            raise ValueError(f"activation {activation!r}")
        self.activation = activation
        # train.calibrate: the logits' divisor, (1, 1) or (1, K); none: no division in the graph
        self.register_buffer("temperature", torch.tensor(temperature, dtype=torch.float32).view(1, -1) if temperature else None)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.to(torch.float32) / 255 - self.mean) / self.std
        logits = self.model(x)
        if self.temperature is not None:
            logits = logits / self.temperature
        return torch.softmax(logits, dim=1) if self.activation == "softmax" else torch.sigmoid(logits)


def export_onnx(served: WithPreprocessing, info: ServingInfo, name: str, out: Path) -> None:
    """Write `served` as ONNX to `out`, with `info` as the model's metadata. `name` (the model's
    registry name) is what an error names."""
    served = served.eval()
    example = torch.zeros((2, info.channels, info.image_size, info.image_size), dtype=torch.uint8)  # 2: not specialised to 1
    try:
        # torch.export and onnxscript print progress and warn about their own internals
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                served, (example,), dynamo=True, opset_version=OPSET, input_names=[INPUT], output_names=[OUTPUT],
                dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}}, verbose=False,
            )
    except Exception as err:  # noqa: BLE001  torch.export and the ONNX translation raise many types
        raise UserError(f"model '{name}': cannot be exported to ONNX ({why(err)}); use a model whose "
                        "operators ONNX supports (docs/inference.md#deploying-the-model)") from None
    proto = program.model_proto
    drop_stack_traces(proto)
    proto.producer_name, proto.producer_version = "imgpipe", ""  # no version: the same model gives the same bytes
    proto.doc_string = f"{name}: {info.task} image classifier over {len(info.classes)} {'classes' if info.task == 'multiclass' else 'labels'}"
    onnx.helper.set_model_props(proto, info.props())
    onnx.save_model(proto, str(out))


def drop_stack_traces(proto: onnx.ModelProto) -> None:
    """Remove the exporter's per-node stack traces: they name the source files by absolute path
    (and line), so the same model exported from another checkout would be other bytes, and a
    teammate's `dvc repro` would not reproduce `dvc.lock`'s hash."""
    for node in proto.graph.node:
        kept = [p for p in node.metadata_props if p.key != STACK_TRACE]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)


STACK_TRACE = "pkg.torch.onnx.stack_trace"


def why(err: BaseException) -> str:
    """The operator that failed, when the error chain names one (`torch.ops.prims.zeta.default`),
    else the first line of the innermost error."""
    chain = [err]
    while chain[-1].__cause__ is not None and len(chain) < 10:
        chain.append(chain[-1].__cause__)
    for e in chain:
        if op := re.search(r"target=(torch\.ops\.[\w.]+)", str(e)):
            return f"no ONNX translation for {op[1]}"
    lines = ANSI.sub("", str(chain[-1])).strip().splitlines()
    return f"{type(chain[-1]).__name__}: {(lines[0] if lines else '')[:200]}"


ANSI = re.compile(r"\x1b\[[0-9;]*m")
