"""Typed, validated view of `params.yaml`: one frozen dataclass per section.

`load_params(path)` builds them once, rejects unknown keys and wrong types, and names the
offending key and what is allowed. Library code takes these objects, never a raw dict.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from imgpipe.core.errors import UserError


@dataclass(frozen=True)
class DataParams:
    # `builtin:digits`, a local folder with one sub-folder per class, or an
    # http(s):// or file:// URL of a .zip/.tar/.tar.gz/.tgz archive.
    source: str = "builtin:digits"
    sha256: str | None = None  # expected checksum of a downloaded archive
    limit: int | None = None  # keep only the first N images per class (multi-label: in total), for quick runs
    # Multi-label sources: the annotation file (or folder of <label>.txt files) inside the source,
    # and its column names; null = detected when unambiguous.
    annotations: str | None = None
    image_column: str | None = None
    labels_column: str | None = None
    max_extract_gb: float = 20.0  # refuse archives that would expand beyond this (zip bombs)
    # Where labels come from: `folders` (class sub-folders, or an annotation file) or `filename`,
    # parsed with `filename_pattern` (never detected: a file name means nothing unless you say so).
    labels_from: str = "folders"
    filename_pattern: str | None = None

    def __post_init__(self) -> None:
        require(self.limit is None or self.limit >= 1, "data.limit", self.limit, "null or an integer >= 1")
        require(self.max_extract_gb > 0, "data.max_extract_gb", self.max_extract_gb, "a size in GB > 0")
        require(self.labels_from in LABELS_FROM, "data.labels_from", self.labels_from, " | ".join(LABELS_FROM))
        require(
            self.labels_from != "filename" or self.filename_pattern is not None,
            "data.filename_pattern", self.filename_pattern, "a regular expression when data.labels_from is filename",
        )


LABELS_FROM = ("folders", "filename")
AUTO = "auto"


@dataclass(frozen=True)
class ImageParams:
    # `auto` is resolved by the train stage from the training images (`imgpipe.data.profile`).
    size: int | str = "auto"  # images are resized to size x size; auto: from their typical shorter side
    channels: int | str = "auto"  # 1 (grayscale) or 3 (RGB); auto: 3 when the training images carry colour
    normalize: bool = True  # standardise with the training split's per-channel mean/std

    def __post_init__(self) -> None:
        require(self.channels in (1, 3, AUTO), "image.channels", self.channels, "auto, 1 or 3")
        require(self.size == AUTO or (isinstance(self.size, int) and self.size >= 8), "image.size", self.size, "auto, or an integer >= 8")


@dataclass(frozen=True)
class AugmentParams:
    rotations: tuple[float, ...] = (-15.0, 15.0)  # one rotated copy per angle, degrees
    invert: bool = False  # add a colour-inverted copy of every image
    shear: float = 25.0  # one copy sheared by a random angle in +-shear degrees; 0 = off
    # Copies are made from the image shrunk to at most this many pixels on its longer side, so a
    # 4000 px photo does not cost seconds per copy; originals are kept as they are. null = full size.
    max_side: int | None = 512

    def __post_init__(self) -> None:
        require(0 <= self.shear < 90, "augment.shear", self.shear, "degrees in [0, 90)")
        require(self.max_side is None or self.max_side >= 8, "augment.max_side", self.max_side, "null or an integer >= 8")


@dataclass(frozen=True)
class SplitParams:
    train: float = 0.8
    val: float = 0.1
    test: float = 0.1
    eval_augmented: bool = False  # keep augmented copies in val/test too
    # Keep the split of a dataset that ships train/ val/ test/ folders; false merges and re-splits.
    respect_existing: bool = False

    def __post_init__(self) -> None:
        for name in ("train", "val", "test"):
            value = getattr(self, name)
            require(0 <= value <= 1, f"split.{name}", value, "a fraction in [0, 1]")
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise UserError(
                f"split.train + split.val + split.test = {total:g}; they must sum to 1"
            )
        require(self.train > 0, "split.train", self.train, "a fraction > 0")


# Every model function's own arguments, set by the pipeline (see `imgpipe.models.register_model`):
# where each value comes from. model_args cannot set them.
PIPELINE_MODEL_ARGS = {"num_classes": "the classes in the data", "in_channels": "image.channels", "image_size": "image.size"}
MONITORS = ("val/accuracy", "val/f1_macro", "val/f1_micro", "val/loss")
TASK_CHOICES = ("auto", "multiclass", "multilabel")  # `task:`; the kinds are imgpipe.task.kinds.KINDS (tests/task/test_task.py)
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainParams:
    epochs: int = 12
    batch_size: int = 64
    lr: float = 2e-3  # the peak learning rate for onecycle and cosine
    optimizer: str = "adam"  # adam | adamw | sgd | adamax | adadelta
    momentum: float = 0.9  # sgd only
    nesterov: bool = True  # sgd only
    weight_decay: float = 1e-4
    # auto = cross_entropy (multiclass) or bce (multilabel); also bce | multilabel_soft_margin | mse | l1
    loss: str = "auto"
    label_smoothing: float = 0.0  # cross_entropy only
    pos_weight: str = "none"  # multilabel, bce: none | auto (negatives/positives per label, from train)
    threshold: float | str = 0.5  # multilabel decision rule: a probability in (0, 1), or `tune` per label on val
    scheduler: str = "none"  # none | step | cosine | onecycle | plateau
    lr_step_size: int = 5  # step: epochs between decays
    lr_gamma: float = 0.1  # step and plateau: decay factor
    lr_patience: int = 2  # plateau: epochs without improvement before a decay
    warmup_epochs: int = 0  # cosine: linear warm-up before the cosine decay
    clip_grad_norm: float = 0.0  # max gradient norm; 0 = no clipping
    monitor: str = "val/accuracy"  # picks the best epoch (and drives plateau, patience)
    patience: int = 0  # early stopping after N epochs without improvement; 0 = off
    pretrained: str = "none"  # none | imagenet | path to a state-dict file
    freeze: str = "none"  # none | backbone (train only the classifier head)
    # fastai's fine_tune: train only the head for N epochs, then everything (the lr schedule restarts)
    freeze_epochs: int = 0
    log_every: int = 20  # log the batch loss every N batches
    # Online augmentation, drawn anew each epoch on whole batches (on the GPU when training there).
    crop_padding: int = 0  # shift each image by up to N px (zero fill), like RandomCrop(size, padding=N)
    flip: bool = False  # mirror half the images left-right, like RandomHorizontalFlip
    # Speed; none of these change what is learned beyond floating-point noise.
    device: str = "auto"  # auto (a CUDA GPU when torch sees one) | cpu | cuda
    amp: bool = True  # on CUDA: mixed precision, bf16 where supported (else fp16 with loss scaling)
    compile: bool = False  # torch.compile the model (the first epoch pays the compile time)
    # Distributed training with torchrun + DistributedDataParallel (docs/distributed.md). These
    # change the speed, not what is learned: batch_size stays the global batch.
    nproc_per_node: int | str = 1  # processes per machine: 1, N, or auto (one per visible GPU; 1 on CPU)
    nnodes: int = 1  # machines; the others join with `imgpipe train-worker`
    rdzv_endpoint: str | None = None  # host:port on the head machine where the nodes meet (nnodes > 1)
    sync_batchnorm: bool = False  # batch-norm statistics over the global batch, not each process's share
    # Imbalance and calibration (docs/models-and-training.md#calibration-and-imbalance).
    # cross_entropy: none | balanced (n / (k * n_c) from the train split) | {class: weight} (others 1)
    class_weight: str | dict[str, float] = "none"
    sampler: str = "shuffle"  # shuffle (each image once per epoch) | balanced (classes equally often, with replacement)
    calibrate: str = "temperature"  # none | temperature (one, multi-label one per label, fitted on val by NLL)

    def __post_init__(self) -> None:
        require(self.epochs >= 1, "train.epochs", self.epochs, "an integer >= 1")
        require(self.batch_size >= 1, "train.batch_size", self.batch_size, "an integer >= 1")
        require(self.lr > 0, "train.lr", self.lr, "a number > 0")
        require(self.momentum >= 0, "train.momentum", self.momentum, "a number >= 0")
        require(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, "a number >= 0")
        require(0 <= self.label_smoothing < 1, "train.label_smoothing", self.label_smoothing, "a number in [0, 1)")
        require(self.lr_step_size >= 1, "train.lr_step_size", self.lr_step_size, "an integer >= 1")
        require(0 < self.lr_gamma <= 1, "train.lr_gamma", self.lr_gamma, "a number in (0, 1]")
        require(self.lr_patience >= 0, "train.lr_patience", self.lr_patience, "an integer >= 0")
        require(0 <= self.warmup_epochs < self.epochs, "train.warmup_epochs", self.warmup_epochs, "an integer in [0, train.epochs)")
        require(self.clip_grad_norm >= 0, "train.clip_grad_norm", self.clip_grad_norm, "a number >= 0 (0 = off)")
        require(self.monitor in MONITORS, "train.monitor", self.monitor, " | ".join(MONITORS))
        require(self.patience >= 0, "train.patience", self.patience, "an integer >= 0 (0 = off)")
        require(self.freeze in ("none", "backbone"), "train.freeze", self.freeze, "none | backbone")
        require(0 <= self.freeze_epochs < self.epochs, "train.freeze_epochs", self.freeze_epochs, "an integer in [0, train.epochs)")
        require(
            self.freeze_epochs == 0 or (self.pretrained != "none" and self.freeze == "none"),
            "train.freeze_epochs", self.freeze_epochs,
            "0, unless train.pretrained is set and train.freeze is none (freeze: backbone stays frozen throughout)",
        )
        require(self.log_every >= 1, "train.log_every", self.log_every, "an integer >= 1")
        require(self.crop_padding >= 0, "train.crop_padding", self.crop_padding, "an integer >= 0 (0 = off)")
        require(self.device in DEVICES, "train.device", self.device, " | ".join(DEVICES))
        require(
            self.nproc_per_node == "auto" or (isinstance(self.nproc_per_node, int) and self.nproc_per_node >= 1),
            "train.nproc_per_node", self.nproc_per_node, "an integer >= 1, or auto",
        )
        require(self.nnodes >= 1, "train.nnodes", self.nnodes, "an integer >= 1")
        require(
            self.rdzv_endpoint is None or _is_endpoint(self.rdzv_endpoint),
            "train.rdzv_endpoint", self.rdzv_endpoint, "null, or host:port of the head machine",
        )
        require(
            self.nnodes == 1 or self.rdzv_endpoint is not None,
            "train.rdzv_endpoint", self.rdzv_endpoint, "host:port of the head machine when train.nnodes > 1",
        )
        require(
            isinstance(self.class_weight, dict) or self.class_weight in CLASS_WEIGHTS,
            "train.class_weight", self.class_weight, "none | balanced | a mapping {class: weight > 0}",
        )
        if isinstance(self.class_weight, dict):
            for name, weight in self.class_weight.items():
                require(_is_weight(weight), f"train.class_weight.{name}", weight, "a number > 0")
        require(self.sampler in SAMPLERS, "train.sampler", self.sampler, " | ".join(SAMPLERS))
        require(self.calibrate in CALIBRATIONS, "train.calibrate", self.calibrate, " | ".join(CALIBRATIONS))
        require(self.pos_weight in ("none", "auto"), "train.pos_weight", self.pos_weight, "none | auto")
        require(
            self.threshold == "tune" or (not isinstance(self.threshold, str) and 0 < self.threshold < 1),
            "train.threshold",
            self.threshold,
            "a probability in (0, 1) exclusive, or tune",
        )
        require(
            self.freeze == "none" or self.pretrained != "none",
            "train.freeze",
            self.freeze,
            "none, unless train.pretrained is set (a frozen random backbone learns nothing)",
        )


CLASS_WEIGHTS = ("none", "balanced")
SAMPLERS = ("shuffle", "balanced")
CALIBRATIONS = ("none", "temperature")


def _is_weight(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


# Where and on how many processes training runs: not part of what a run learns, so a run
# interrupted under one setting resumes under another.
LAUNCH_KEYS = ("nproc_per_node", "nnodes", "rdzv_endpoint")


def _is_endpoint(text: str) -> bool:
    host, _, port = text.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


MODEL_FILES = ("pt", "onnx")  # predict.model: the trained model file, or the export stage's ONNX file
QUANTIZE = ("none", "int8")


@dataclass(frozen=True)
class PredictParams:
    input: str | None = None  # a folder of images; null = the test split's images
    model: str = "pt"  # pt (models/model.pt, torch) | onnx (models/model.onnx, ONNX Runtime; no torch)

    def __post_init__(self) -> None:
        require(self.model in MODEL_FILES, "predict.model", self.model, " | ".join(MODEL_FILES))


@dataclass(frozen=True)
class ExportParams:
    atol: float = 1e-4  # the parity gate: largest allowed |probability(ONNX) - probability(torch)| on the test split
    quantize: str = "none"  # none | int8 (ONNX Runtime static quantization, calibrated on training images)
    max_drop: float = 0.01  # int8: refuse when test accuracy falls by more than this (0.01 = one point)
    calibration_images: int = 300  # int8: training images that calibrate the activation ranges

    def __post_init__(self) -> None:
        require(0 < self.atol < 1, "export.atol", self.atol, "a number in (0, 1)")
        require(self.quantize in QUANTIZE, "export.quantize", self.quantize, " | ".join(QUANTIZE))
        require(0 <= self.max_drop <= 1, "export.max_drop", self.max_drop, "a number in [0, 1]")
        require(self.calibration_images >= 1, "export.calibration_images", self.calibration_images, "an integer >= 1")


@dataclass(frozen=True)
class CvParams:
    """k-fold cross-validation (docs/cross-validation.md). DVC makes one stage per item of a list
    and has no conditional stages, so the number of folds is written as the fold list, and the
    summary stage as a list of one item: K itself."""

    folds: tuple[int, ...] = ()  # [] = off; [0, 1, ..., K-1]: K folds, one cv_fold stage each
    summary: tuple[int, ...] = ()  # [] with no folds; [K] with K folds: the cv_summary stage

    def __post_init__(self) -> None:
        k = len(self.folds)
        require(self.folds == tuple(range(k)), "cv.folds", list(self.folds), "[] (off) or [0, 1, ..., K-1] for K folds")
        require(k != 1, "cv.folds", list(self.folds), "at least two folds, [0, 1]; [] for none")
        require(
            self.summary == ((k,) if k else ()), "cv.summary", list(self.summary),
            f"[{k}] with cv.folds {list(self.folds)}" if k else "[] while cv.folds is []",
        )

    @property
    def k(self) -> int:
        """The number of folds; 0 when cross-validation is off."""
        return len(self.folds)


@dataclass(frozen=True)
class Params:
    """The whole file. Every default equals params.yaml's value (tests/core/test_params.py checks), so
    deleting a key from params.yaml changes nothing."""

    seed: int = 42
    task: str = "auto"  # auto (multilabel when the source has annotations) | multiclass | multilabel
    model: str = "cnn"  # see imgpipe.models.list_models()
    # Keyword arguments for the model's factory, e.g. {width: 64, dropout: 0.2}; checked against
    # its signature when the model is built (`imgpipe.models.create_model`).
    model_args: dict[str, Any] = field(default_factory=dict)
    data: DataParams = field(default_factory=DataParams)
    image: ImageParams = field(default_factory=ImageParams)
    augment: AugmentParams = field(default_factory=AugmentParams)
    split: SplitParams = field(default_factory=SplitParams)
    train: TrainParams = field(default_factory=TrainParams)
    predict: PredictParams = field(default_factory=PredictParams)
    export: ExportParams = field(default_factory=ExportParams)
    cv: CvParams = field(default_factory=CvParams)

    def __post_init__(self) -> None:
        require(self.task in TASK_CHOICES, "task", self.task, " | ".join(TASK_CHOICES))
        for name in self.model_args:
            if name in PIPELINE_MODEL_ARGS:
                raise UserError(f"'model_args.{name}' is not for model_args: imgpipe sets it from {PIPELINE_MODEL_ARGS[name]}")


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file; every problem is a one-line `UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise UserError(f"{path}: not valid YAML{where}") from None
    try:
        return build(Params, {} if raw is None else raw, prefix="")
    except UserError as err:
        raise UserError(f"{path}: {err}") from None


def build(cls: type, raw: Any, prefix: str) -> Any:
    """Build dataclass `cls` from a mapping, checking keys and types recursively."""
    where = prefix.rstrip(".") or "top level"
    if not isinstance(raw, dict):
        raise UserError(f"'{where}' must be a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields), key=str)  # YAML keys may be ints or bools
    if unknown:
        raise UserError(
            f"unknown key '{prefix}{unknown[0]}'; allowed keys in {where}: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    values = {name: convert(hints[name], raw[name], f"{prefix}{name}") for name in raw}
    return cls(**values)


def convert(hint: Any, value: Any, key: str) -> Any:
    """`value` as the type `hint` asks, or a UserError naming `key` and what it must be."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value if value is not None else {}, prefix=f"{key}.")
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        if len(inner) == 1:
            return convert(inner[0], value, key)
        for option in inner:  # `float | str`: the first type that fits wins
            try:
                return convert(option, value, key)
            except UserError:
                pass
        names = " or ".join(TYPE_NAMES.get(o, o.__name__) for o in inner)
        raise UserError(f"'{key}' must be {names}, got {value!r}")
    if origin is dict:
        if typing.get_args(hint)[1] is float:  # {class: weight}: YAML reads a class `0` as a number
            return {str(name): v for name, v in _plain_mapping(_str_keys(value), key).items()}
        return _plain_mapping(value, key)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise UserError(f"'{key}' must be a list, got {value!r}")
        (inner, _) = typing.get_args(hint)
        return tuple(convert(inner, v, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"'{key}' must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"'{key}' must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads `1e-3` as a string
            value = _parse_float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"'{key}' must be a number, got {value!r}")
        if not math.isfinite(value):
            raise UserError(f"'{key}' must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"'{key}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported params type {hint!r} for {key}")


TYPE_NAMES = {float: "a number", int: "an integer", str: "a string", bool: "true or false"}
PLAIN_VALUE = "a number, string, true/false, null or a list of those"


def _plain_mapping(value: Any, key: str) -> dict[str, Any]:
    """A mapping of names to YAML scalars or lists of them (`model_args`); null means empty."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"'{key}' must be a mapping (name: value), got {value!r}")
    for name, item in value.items():
        if not isinstance(name, str):
            raise UserError(f"'{key}' keys must be names, got {name!r}")
        items = item if isinstance(item, list) else [item]
        if not all(_is_plain(v) for v in items):
            raise UserError(f"'{key}.{name}' must be {PLAIN_VALUE}, got {item!r}")
    return dict(value)


def _str_keys(value: Any) -> Any:
    """A mapping's int keys as the class names they were written as (`{0: 2}` names class `0`)."""
    if not isinstance(value, dict):
        return value
    return {str(k) if isinstance(k, int) and not isinstance(k, bool) else k: v for k, v in value.items()}


def _is_plain(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, bool | int | str)


def _parse_float(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """A range check: a UserError naming `key`, its value and what is allowed."""
    if not ok:
        raise UserError(f"'{key}' is {value!r}; allowed: {allowed}")


def choose(table: dict, key: str, value: str):
    """`table[value]`, or a one-line error naming `train.<key>` and the choices."""
    if value not in table:
        raise UserError(f"params: train.{key} '{value}' is unknown; choose one of: {', '.join(table)}")
    return table[value]
