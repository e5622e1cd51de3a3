"""The model card, `metrics/export/model_card.md`: what the exported model is, what it was trained
and tested on, how sure its test numbers are, where it is known to be weak, what it expects as
input, how it compares with torch, and ten lines of Python that use it with onnxruntime alone.

Everything in it is read from the run (params, the annotation table, the earlier stages'
committed results, the export's own measurements), so a pull request that changes the model
shows how its card changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from imgpipe.core.params import Params
from imgpipe.export.parity import Parity
from imgpipe.export.speed import Speed
from imgpipe.predict.onnx_model import INPUT, OUTPUT, RESIZE, ServingInfo
from imgpipe.review.defaults import RESAMPLES
from imgpipe.review.markdown import table
from imgpipe.review.stats import LEVEL, Alone

FEW_TEST_IMAGES = 10  # a class with fewer test images than this has a per-class score that says little
SHOWN_CLASSES = 30  # rows of the per-class table before it is cut


@dataclass(frozen=True)
class RunFacts:
    """What the earlier stages found, as the card reports it."""

    params: Params
    counts: pd.DataFrame  # images per class (rows) and split (columns: train, val, test)
    split_images: dict[str, int]  # images per split
    download: dict  # metrics/download/report.json: source, skipped files by reason, ...
    test_metrics: dict  # metrics/evaluate/metrics.json
    test_summary: Alone  # accuracy and macro F1 with their bootstrap intervals (as `imgpipe review`)
    best_epoch: int | None
    loss: str  # the loss trained with (`auto` resolved)


def model_card(info: ServingInfo, model: str, facts: RunFacts, parity: Parity, speeds: list[Speed], threads: int,
               file_bytes: int, onnx_name: str, quantized: dict | None = None) -> str:
    sections = [
        f"# Model card: `{model}`, {describe_task(info)}",
        "Written by the export stage from this run's params and results; `dvc repro` rewrites it.",
        task_section(info),
        data_section(facts),
        training_section(model, info, facts),
        metrics_section(info, facts),
        limits_section(facts),
        input_section(info),
        parity_section(parity, speeds, threads, file_bytes, quantized),
        snippet_section(info, onnx_name),
    ]
    return "\n\n".join(sections) + "\n"


def describe_task(info: ServingInfo) -> str:
    k = len(info.classes)
    return f"single-label classifier over {k} classes" if info.task == "multiclass" else f"multi-label classifier over {k} labels"


def names(items: list[str], limit: int = 20) -> str:
    shown = ", ".join(f"`{c}`" for c in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def task_section(info: ServingInfo) -> str:
    lines = ["## Task and classes"]
    if info.task == "multiclass":
        lines.append(f"One class per image, the most probable of {len(info.classes)}: {names(info.classes)}.")
    else:
        lines.append(f"Any set of {len(info.classes)} labels per image: {names(info.classes)}. A label is present "
                     "when its probability reaches its threshold (below).")
        if info.groups:
            lines.append(f"{len(info.groups)} one-of group(s) (`group=value` labels): exactly one value of each, the most probable.")
        lines.append("")
        lines.append(table(["label", "threshold"], [[f"`{c}`", f"{t:.3f}"] for c, t in zip(info.classes, info.thresholds, strict=True)][:SHOWN_CLASSES]))
    return "\n".join(lines)


def data_section(facts: RunFacts) -> str:
    p, report = facts.params, facts.download
    skipped = report.get("skipped_files", 0)
    reasons = ", ".join(f"{n} {why}" for why, n in sorted(report.get("skipped_by_reason", {}).items())) or "none"
    augment = p.augment
    copies = [f"rotations {list(augment.rotations)}"] if augment.rotations else []
    copies += ["colour inversion"] if augment.invert else []
    copies += [f"shear up to {augment.shear:g} degrees"] if augment.shear else []
    counts = facts.counts
    rows = [[f"`{label}`", *(str(int(counts.loc[label, s])) for s in counts.columns)] for label in counts.index[:SHOWN_CLASSES]]
    if len(counts) > SHOWN_CLASSES:
        rows.append([f"... {len(counts) - SHOWN_CLASSES} more", *("" for _ in counts.columns)])
    rows.append(["**images**", *(str(facts.split_images.get(s, 0)) for s in counts.columns)])
    return "\n".join([
        "## Data",
        f"Source: `{report.get('source', p.data.source)}`; {report.get('images', '?')} images read, {skipped} file(s) skipped ({reasons}).",
        f"Split train/val/test {p.split.train:g}/{p.split.val:g}/{p.split.test:g} by source image (copies and "
        f"duplicates stay in one split), seed {p.seed}. Training images augmented with {', '.join(copies) or 'nothing'}"
        + ("." if not p.split.eval_augmented else "; val and test keep their augmented copies."),
        "",
        "Images per class and split (multi-label: images carrying the label):",
        "",
        table(["class", *counts.columns], rows),
    ])


def training_section(model: str, info: ServingInfo, facts: RunFacts) -> str:
    p = facts.params
    t = p.train
    rows = [
        ["model", f"`{model}`" + (f" with {p.model_args}" if p.model_args else "")],
        ["input", f"{info.image_size} x {info.image_size} px, {info.channels} channel(s)" + (", standardised with the training split's mean and std" if p.image.normalize else "")],
        ["epochs", f"{t.epochs}" + (f" (best: {facts.best_epoch}, by {t.monitor})" if facts.best_epoch is not None else "")],
        ["batch size", str(t.batch_size)],
        ["optimizer", f"{t.optimizer}, lr {t.lr:g}, weight decay {t.weight_decay:g}, scheduler {t.scheduler}"],
        ["loss", f"{facts.loss}" + (f", label smoothing {t.label_smoothing:g}" if t.label_smoothing else "")],
        ["pretrained", f"{t.pretrained}" + (f", freeze {t.freeze}" if t.freeze != "none" else "")],
        ["online augmentation", ", ".join([f"shift up to {t.crop_padding} px"] * bool(t.crop_padding) + ["left-right flips"] * t.flip) or "none"],
        ["seed", str(p.seed)],
    ]
    return "## Training\n" + table(["", ""], rows)


CALIBRATION_NAMES = {"ece": "ECE (15 bins)", "nll": "NLL", "brier": "Brier score"}


def metrics_section(info: ServingInfo, facts: RunFacts) -> str:
    s, m = facts.test_summary, facts.test_metrics
    accuracy = "exact-match accuracy" if info.task == "multilabel" else "accuracy"
    rows = [
        [accuracy, f"{s.accuracy:.4f}", f"{s.accuracy_interval.low:.4f} to {s.accuracy_interval.high:.4f}"],
        ["macro F1", f"{s.f1_macro:.4f}", f"{s.f1_macro_interval.low:.4f} to {s.f1_macro_interval.high:.4f}"],
        ["macro recall" + (" (balanced accuracy)" if info.task == "multiclass" else ""), f"{s.recall_macro:.4f}",
         f"{s.recall_macro_interval.low:.4f} to {s.recall_macro_interval.high:.4f}"],
    ]
    shown = {"accuracy", "exact_match_accuracy", "f1_macro", "recall_macro", "test_images"}
    if info.task == "multiclass":
        shown.add("balanced_accuracy")  # = macro recall
    rows += [[key.replace("_", " "), f"{value:.4f}" if isinstance(value, float) else str(value), ""]
             for key, value in m.items() if key not in shown and isinstance(value, int | float)]
    calibration = m.get("calibration", {})
    before = calibration.get("before", {})
    rows += [[f"{CALIBRATION_NAMES[key]}", f"{calibration[key]:.4f}" + (f" (before temperature {before[key]:.4f})" if key in before else ""), ""]
             for key in CALIBRATION_NAMES if key in calibration]
    return "\n".join([
        f"## Test metrics ({s.images} test images)",
        f"Intervals are {LEVEL} bootstrap intervals over the test images ({RESAMPLES} resamples), as `imgpipe review` computes them.",
        "",
        table(["metric", "value", f"{LEVEL} interval"], rows),
    ])


def limits_section(facts: RunFacts) -> str:
    test = facts.counts["test"]
    none = [str(c) for c in test.index[test == 0]]
    few = [str(c) for c in test.index[(test > 0) & (test < FEW_TEST_IMAGES)]]
    lines = ["## Known limits"]
    if none:
        lines.append(f"- {len(none)} class(es) have no test image, so nothing here measures them: {names(none)}.")
    if few:
        lines.append(f"- {len(few)} class(es) have fewer than {FEW_TEST_IMAGES} test images; their scores say little: {names(few)}.")
    n = facts.test_summary.images
    width = facts.test_summary.accuracy_interval.high - facts.test_summary.accuracy_interval.low
    if facts.test_summary.accuracy == 1.0:  # the bootstrap of an all-correct set has no width
        lines.append(f"- Every one of the {n} test images is right, so the bootstrap interval has no width; the "
                     f"error rate on images like these may still be up to about {3 / n:.1%} (3/n, the rule of three, 95%).")
    else:
        lines.append(f"- The test split is {n} images: the accuracy interval is {width:.3f} wide, so a change "
                     "smaller than that between two models is not shown by this split.")
    skipped = facts.download.get("skipped_files", 0)
    if skipped:
        lines.append(f"- {skipped} source file(s) could not be read and were left out (metrics/download/report.json lists them).")
    lines.append("- It knows only these classes: every image gets one of them (multi-label: a set of them), "
                 "however unlike the training data it is.")
    return "\n".join(lines)


def input_section(info: ServingInfo) -> str:
    rows = [[f"`{key}`", value] for key, value in info.props().items() if key not in ("classes", "thresholds", "groups", "params")]
    return "\n".join([
        "## Input and output",
        f"`{INPUT}`: uint8, shape (batch, {info.channels}, {info.image_size}, {info.image_size}), values 0 to 255; "
        f"`{OUTPUT}`: float32 (batch, {len(info.classes)}). Resize rule: {RESIZE}.",
        "",
        "The file's metadata (`session.get_modelmeta().custom_metadata_map`; lists as JSON: `classes`, `thresholds`, `groups`, `params`):",
        "",
        table(["key", "value"], rows),
    ])


def parity_section(parity: Parity, speeds: list[Speed], threads: int, file_bytes: int, quantized: dict | None) -> str:
    rows = [[f"batch {s.batch}", f"{s.torch_ms:.3f}", f"{s.onnx_ms:.3f}", f"{s.torch_ms / s.onnx_ms:.1f}x"] for s in speeds]
    lines = [
        "## Parity and speed",
        f"On the {parity.images} test images, ONNX Runtime and torch decide the same for {parity.agreement:.2%} of them; "
        f"the largest probability difference is {parity.max_abs_diff:.1e}.",
        "",
        f"Milliseconds per image on the machine that ran the export, {threads} thread(s) each (medians of interleaved rounds):",
        "",
        table(["", "torch eager", "ONNX Runtime", "speed-up"], rows),
        "",
        f"File size: {file_bytes / 2**20:.2f} MiB.",
    ]
    if quantized:
        lines += ["", f"The file is quantised to int8 (calibrated on {quantized['calibration_images']} training images), and the "
                  f"ONNX Runtime column and file size are the int8 file's. Against torch: decisions agree on "
                  f"{quantized['agreement']:.2%} of the test images, the largest probability difference is {quantized['max_abs_diff']:.1e}, "
                  f"test accuracy {quantized['accuracy']:.4f} against {quantized['torch_accuracy']:.4f} ({quantized['accuracy_change']:+.4f}). "
                  "The float export passed the gate above before it was quantised."]
    return "\n".join(lines)


def snippet_section(info: ServingInfo, onnx_name: str) -> str:
    decide = (
        "print(classes[int(probs.argmax())], float(probs.max()))"
        if info.task == "multiclass"
        else 'print([c for c, p, t in zip(classes, probs, json.loads(meta["thresholds"])) if p >= t])  # one-of groups: see `groups`'
    )
    code = f'''import json, sys
import numpy as np, onnxruntime as ort
from PIL import Image, ImageOps

session = ort.InferenceSession("{onnx_name}")
meta = session.get_modelmeta().custom_metadata_map
size, classes = int(meta["image_size"]), json.loads(meta["classes"])
img = Image.open(sys.argv[1])
img.draft(None, (size, size))  # JPEG: decode at the scale the pipeline reads it
img = ImageOps.exif_transpose(img).convert("L" if meta["channels"] == "1" else "RGB")
x = np.asarray(img.resize((size, size), Image.BILINEAR, reducing_gap=None), dtype=np.uint8)
x = x[None, None] if x.ndim == 2 else x.transpose(2, 0, 1)[None]  # (1, C, H, W)
probs = session.run(["{OUTPUT}"], {{"{INPUT}": x}})[0][0]
{decide}'''
    return "\n".join([
        "## Using it without imgpipe",
        "With `pip install onnxruntime numpy pillow`, as `python predict.py photo.jpg` "
        "(images with transparency: composite them onto white first, as the pipeline does):",
        "",
        "```python",
        code,
        "```",
    ])
