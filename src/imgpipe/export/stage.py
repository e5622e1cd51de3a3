"""The export stage: `models/model.pt` -> `models/model.onnx` (preprocessing and activation inside,
metadata for any consumer), gated on parity with torch over the test split, timed against torch,
optionally quantised to int8, and described in `metrics/export/model_card.md`.

Nothing is written unless the gate passes: the ONNX file is staged beside its target and moves in
with metrics.json and the card (`imgpipe.core.atomic`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from imgpipe.core.atomic import staged_outputs
from imgpipe.core.errors import UserError
from imgpipe.core.layout import METRICS_FILE, OUTCOMES_FILE, REPORT_FILE
from imgpipe.core.params import Params
from imgpipe.data.annotations import read_annotations
from imgpipe.data.decoding import decode_images
from imgpipe.data.shards import members
from imgpipe.data.split import class_counts
from imgpipe.export.card import RunFacts, model_card
from imgpipe.export.graph import WithPreprocessing, export_onnx
from imgpipe.export.parity import check_parity, parity
from imgpipe.export.quantize import quantize_int8
from imgpipe.export.speed import compare_speed
from imgpipe.predict.onnx_model import OnnxPredictor, ServingInfo
from imgpipe.predict.torch_model import TorchPredictor
from imgpipe.review.stats import summarize_alone
from imgpipe.task.outcomes import loads
from imgpipe.task.tasks import check_task_matches, task_of

CARD_FILE = "model_card.md"
SPEED_BATCHES = (1, 64)
PROVENANCE = ("seed", "model", "model_args", "data", "image", "augment", "split", "train")  # params that shaped the model


@dataclass(frozen=True)
class EarlierResults:
    """The earlier stages' committed results the card reads (metrics/<stage>/)."""

    download: Path
    evaluate: Path


def export_stage(params: Params, model_path: Path, annotations: Path, images_root: Path, out: Path, metrics_dir: Path,
                 earlier: EarlierResults) -> dict:
    """Export, gate, time, write; returns metrics.json's content."""
    trained = TorchPredictor(model_path, device="cpu")
    spec, kind = trained.spec, trained.kind
    table = read_annotations(annotations)
    check_task_matches(kind, task_of(table), annotations, model_path)
    test_rows = table[table["split"] == "test"]
    if test_rows.empty:
        raise UserError(f"{annotations}: the test split is empty; the export's parity gate needs test images (raise split.test)")
    pixels, _ = decode_images(members(test_rows, images_root), spec.image_size, spec.channels, desc="export")
    reference = trained.probabilities(pixels)
    model_bytes = Path(model_path).read_bytes()  # once: its md5 for the metadata, its best epoch for the card
    info = ServingInfo.of(kind, spec.image_size, spec.channels, about=provenance(params, model_bytes))
    served = WithPreprocessing(trained.model, spec.mean, spec.std, kind.activation, kind.temperature)
    threads = torch.get_num_threads()
    with staged_outputs() as staged:
        onnx_file = staged.file(out)
        export_onnx(served, info, spec.model, onnx_file)
        exported = OnnxPredictor(onnx_file, threads=threads, spin=False)
        gate = parity(kind, reference, exported.probabilities(pixels))
        check_parity(gate, params.export.atol, f"model '{spec.model}' exported to {out}")
        int8 = None
        if params.export.quantize == "int8":
            calibrated = to_int8(onnx_file, info, params, table, images_root)
            exported = OnnxPredictor(onnx_file, threads=threads, spin=False)
            int8 = int8_numbers(kind, reference, exported.probabilities(pixels), kind.targets(test_rows).numpy(),
                                params.export.max_drop, calibrated)
        speeds = [compare_speed(torch_run(served), exported.probabilities, batch_of(pixels, n)) for n in SPEED_BATCHES]
        file_bytes = onnx_file.stat().st_size
        metrics = {
            "parity": gate.as_dict(),
            **({"int8": int8} if int8 else {}),
            "speed": {"threads": threads, **{f"batch_{s.batch}": s.as_dict() for s in speeds}},
            "file_mb": round(file_bytes / 2**20, 3),
        }
        facts = run_facts(params, table, earlier, model_bytes, kind.loss_name(params.train))
        card = model_card(info, spec.model, facts, gate, speeds, threads, file_bytes, out.name, int8)
        staged.file(metrics_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=4) + "\n")
        staged.file(metrics_dir / CARD_FILE).write_text(card)
    return metrics


def to_int8(onnx_file: Path, info: ServingInfo, params: Params, table, images_root: Path) -> int:
    """Replace the float file with its int8 version, calibrated on `export.calibration_images`
    training images (evenly spaced through the split); how many calibrated it."""
    train_rows = table[table["split"] == "train"]
    picks = np.unique(np.linspace(0, len(train_rows) - 1, min(params.export.calibration_images, len(train_rows))).round().astype(int))
    calibration, _ = decode_images(members(train_rows.iloc[picks], images_root), info.image_size, info.channels, desc="calibrate")
    props = {**info.props(), "quantized": f"int8 (ONNX Runtime static quantization, QDQ; calibrated on {len(picks)} training images)"}
    float_copy = onnx_file.with_name(onnx_file.name + ".float")
    os.replace(onnx_file, float_copy)
    try:
        quantize_int8(float_copy, onnx_file, calibration, props)
    finally:
        float_copy.unlink(missing_ok=True)
    return len(picks)


def int8_numbers(task, reference: np.ndarray, quantized: np.ndarray, actual: np.ndarray, max_drop: float, calibrated: int) -> dict:
    """The int8 file against torch on the test split, for metrics.json; refused (`check_int8`)
    when its accuracy falls more than `max_drop` below torch's."""
    accuracy = {name: float(task.correct(actual, task.decide_probabilities(probs)).mean())
                for name, probs in (("torch", reference), ("int8", quantized))}
    check_int8(accuracy["torch"], accuracy["int8"], max_drop)
    gate = parity(task, reference, quantized)
    return {"agreement": gate.agreement, "max_abs_diff": gate.max_abs_diff, "accuracy": accuracy["int8"],
            "torch_accuracy": accuracy["torch"], "accuracy_change": accuracy["int8"] - accuracy["torch"], "calibration_images": calibrated}


def check_int8(torch_accuracy: float, int8_accuracy: float, max_drop: float) -> float:
    """The int8 gate: the accuracy drop, or a UserError when it is above `max_drop`."""
    drop = torch_accuracy - int8_accuracy
    if drop > max_drop + 1e-12:  # an equal drop passes, whatever the float rounding
        raise UserError(f"export.quantize int8: test accuracy falls from {torch_accuracy:.4f} to {int8_accuracy:.4f} "
                        f"({drop:.4f} > export.max_drop {max_drop:g}); keep quantize: none or raise max_drop; nothing written")
    return drop


def provenance(params: Params, model_bytes: bytes) -> dict[str, str]:
    """Metadata naming what produced the model: its architecture, the params that shaped it and
    the md5 of the trained model file (as dvc.lock records it: `git log -S<md5> dvc.lock` finds
    the commit)."""
    whole = dataclasses.asdict(params)
    return {
        "model": params.model,
        "params": json.dumps({key: whole[key] for key in PROVENANCE}, sort_keys=True),
        "trained_model_md5": hashlib.md5(model_bytes).hexdigest(),
        "producer": "imgpipe export stage (torch.onnx.export, dynamo)",
    }


def torch_run(served: WithPreprocessing):
    """Torch eager on uint8 numpy images, as a server without ONNX would run it."""

    def run(batch: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            return served(torch.from_numpy(batch))

    return run


def batch_of(pixels: np.ndarray, n: int) -> np.ndarray:
    """`n` test images (repeated when the split has fewer)."""
    return np.ascontiguousarray(np.resize(pixels, (n, *pixels.shape[1:])))


def run_facts(params: Params, table, earlier: EarlierResults, model_bytes: bytes, loss: str) -> RunFacts:
    report = read_json(earlier.download / REPORT_FILE)
    test_metrics = read_json(earlier.evaluate / METRICS_FILE)
    outcomes_file = earlier.evaluate / OUTCOMES_FILE
    try:
        outcomes = loads(outcomes_file.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{outcomes_file}: cannot read the evaluate stage's outcomes ({err}); rerun dvc repro") from None
    payload = torch.load(io.BytesIO(model_bytes), map_location="cpu", weights_only=True)  # the file's extras: best_epoch
    counts = class_counts(table)
    return RunFacts(params, counts, table["split"].value_counts().to_dict(), report, test_metrics, summarize_alone(outcomes),
                    payload.get("best_epoch"), loss)


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot read an earlier stage's result ({err}); rerun dvc repro") from None

