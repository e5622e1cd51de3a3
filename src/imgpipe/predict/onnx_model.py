"""The exported model (`models/model.onnx`, written by the export stage) as a `Predictor`: ONNX
Runtime, numpy and Pillow; torch is never imported.

The file explains itself to any consumer through the ONNX model's metadata (string values; lists
as JSON), so serving it needs no imgpipe code. `ServingInfo` is the one home of those keys: the
export stage writes them and this module reads them back.

    input   `images`: uint8 (batch, channels, image_size, image_size), 0..255; normalisation is inside
    output  `probabilities`: float32 (batch, K); softmax over the classes, or a sigmoid per label,
            of the logits divided by the model's `temperature` (`train.calibrate`)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imgpipe.core.errors import UserError
from imgpipe.task.kinds import KINDS, MulticlassKind, MultilabelKind

INPUT = "images"
OUTPUT = "probabilities"
RESIZE = (
    "decode upright (EXIF orientation applied), transparency composited onto white, convert to L "
    "(channels 1) or RGB (channels 3), then resize to image_size x image_size with bilinear filtering, "
    "aspect ratio not kept (Pillow: img.resize((s, s), Image.BILINEAR, reducing_gap=None); JPEGs decoded "
    "with img.draft(None, (s, s)) first)"
)
INPUT_TEXT = "uint8 NCHW (batch, channels, image_size, image_size), values 0-255, channels in RGB order; normalisation is inside the graph"
TEMPERATURE_TEXT = ("temperature scaling, fitted on the val split (train.calibrate): the logits are divided by "
                    "`temperature` (one value, or one per label) before the softmax or sigmoid, inside the graph")
DECISIONS = {
    "multiclass": "the class with the highest probability",
    "multilabel": "label k is present when probabilities[k] >= thresholds[k]; within each one-of group (label indices) only the most probable label",
}


@dataclass(frozen=True)
class ServingInfo:
    """What a consumer of the ONNX file needs to feed it and read its output."""

    task: str  # multiclass | multilabel
    classes: list[str]  # output column k's name (multi-label: labels)
    image_size: int
    channels: int  # 1 (greyscale) or 3 (RGB)
    thresholds: list[float] = field(default_factory=list)  # multilabel: one per label
    groups: list[list[int]] = field(default_factory=list)  # multilabel: one-of groups, decided by argmax
    # train.calibrate: the logits' divisor (one, or one per label), applied inside the graph already
    temperature: list[float] = field(default_factory=list)
    about: dict[str, str] = field(default_factory=dict)  # provenance: model, params, trained_model_md5, ...

    @classmethod
    def of(cls, kind: MulticlassKind | MultilabelKind, image_size: int, channels: int, about: dict[str, str] | None = None) -> ServingInfo:
        """What a model of `kind` (with its decision rule) taking this input tells a consumer."""
        fields = kind.spec_fields()
        return cls(kind.name, list(kind.classes), image_size, channels, fields["thresholds"], fields["groups"],
                   fields["temperature"], about or {})

    def props(self) -> dict[str, str]:
        """The ONNX metadata_props: every value a string, lists and mappings as JSON."""
        return {
            "task": self.task,
            "classes": json.dumps(self.classes),
            "output": f"{OUTPUT}: float32 (batch, {len(self.classes)}), "
            + ("softmax over the classes" if self.task == "multiclass" else "a sigmoid per label"),
            "decision": DECISIONS[self.task],
            "thresholds": json.dumps(self.thresholds),
            "groups": json.dumps(self.groups),
            "temperature": json.dumps(self.temperature),
            "calibration": TEMPERATURE_TEXT if self.temperature else "none: the model's own probabilities",
            "input": f"{INPUT}: {INPUT_TEXT}",
            "image_size": str(self.image_size),
            "channels": str(self.channels),
            "resize": RESIZE,
            **self.about,
        }

    @classmethod
    def from_props(cls, props: dict[str, str], where: Path) -> ServingInfo:
        required = ("task", "classes", "image_size", "channels")
        missing = [key for key in required if key not in props]
        if missing:
            raise UserError(f"{where}: an ONNX model without the metadata imgpipe exports ({', '.join(missing)} missing); export it with the export stage (dvc repro export)")
        try:
            info = cls(
                props["task"], list(json.loads(props["classes"])), int(props["image_size"]), int(props["channels"]),
                list(json.loads(props.get("thresholds", "[]"))), list(json.loads(props.get("groups", "[]"))),
                [float(t) for t in json.loads(props.get("temperature", "[]"))],
            )
        except (ValueError, TypeError) as err:
            raise UserError(f"{where}: unreadable metadata ({err}); export it again (dvc repro export)") from None
        if info.task not in KINDS:
            raise UserError(f"{where}: metadata task '{info.task}' is not one of {', '.join(KINDS)}")
        return info

    def kind(self) -> MulticlassKind | MultilabelKind:
        return KINDS[self.task].from_fields(self.classes, self.thresholds, self.groups, self.temperature)


def session(path: Path, threads: int = 0, spin: bool = True):
    """An ONNX Runtime CPU session for `path` (`threads` 0: ONNX Runtime's default, one per core).
    `spin` False: its threads sleep between runs instead of busy-waiting for the next one, which
    would take the cores from whatever runs in between (torch, when the two are timed in turn)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model file not found; run the export stage first (dvc repro export)")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no optimizer chatter on stderr
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001  onnxruntime raises its own types (InvalidProtobuf, Fail, InvalidGraph, ...)
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"{path}: not a loadable ONNX model ({type(err).__name__}: {reason[:160]}); export it again (dvc repro export)") from None


class OnnxPredictor:
    def __init__(self, path: Path, threads: int = 0, spin: bool = True) -> None:
        self.session = session(path, threads, spin)
        self.info = ServingInfo.from_props(dict(self.session.get_modelmeta().custom_metadata_map), Path(path))
        self.kind = self.info.kind()
        self.image_size, self.channels = self.info.image_size, self.info.channels
        names = [i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()]
        if names != ([INPUT], [OUTPUT]):
            raise UserError(f"{path}: inputs {names[0]} and outputs {names[1]}, not [{INPUT}] and [{OUTPUT}]; export it again (dvc repro export)")

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(pixels, dtype=np.uint8)})[0]
