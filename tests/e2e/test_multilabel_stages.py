"""Multi-label data through the library stages: download, augment, split, train, evaluate, predict."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from support.datasets import write_multilabel_shapes, write_shapes_dataset
from support.project import IMAGE, TINY
from support.project import prepare_folders as prepare

from imgpipe.core.errors import UserError
from imgpipe.core.params import ImageParams
from imgpipe.data.labelsets import label_matrix, label_names
from imgpipe.data.sources import LabelOptions, download
from imgpipe.evaluate.stage import evaluate
from imgpipe.models.checkpoint import load_checkpoint
from imgpipe.predict.rows import predict
from imgpipe.predict.stage import open_model
from imgpipe.review.stats import compare_paired
from imgpipe.task.outcomes import loads
from imgpipe.train.stage import train


@pytest.fixture(scope="module")
def tags(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tags")
    return prepare(root, str(write_multilabel_shapes(root / "source", count=40)))


def test_download_detects_the_annotation_file(tags):
    table = pd.read_csv(tags / "raw/labels.csv", dtype=str, keep_default_na=False)
    assert label_names(table) == ["circle", "cross", "square"]
    assert table["path"].str.startswith("images/").all()
    assert all((tags / "raw" / p).is_file() for p in table["path"])
    source = pd.read_csv(tags / "source/labels.csv", dtype=str, keep_default_na=False)
    expected = [sorted(t.split()) for t in source["tags"]]
    got = [sorted(np.array(label_names(table))[row.astype(bool)]) for row in label_matrix(table)]
    assert got == expected  # including images with no tags at all


def test_augment_and_split_carry_label_sets_and_groups(tags):
    manifest = pd.read_csv(tags / "augmented/manifest.csv", dtype=str, keep_default_na=False)
    annotations = pd.read_csv(tags / "annotations.csv", dtype=str, keep_default_na=False)
    assert list(manifest.columns) == ["path", "group", "label:circle", "label:cross", "label:square", "source", "transform",
                                     "file", "offset", "size", "md5"]
    copies = manifest.groupby("source")[["label:circle", "label:cross", "label:square"]].nunique()
    assert (copies == 1).all().all()  # every copy carries its source's labels
    assert annotations.groupby("group")["split"].nunique().max() == 1
    assert set(annotations["split"]) == {"train", "val", "test"}
    assert (annotations.loc[annotations["split"] != "train", "transform"] == "original").all()
    counts = pd.read_csv(tags / "split/class_counts.csv")
    assert list(counts.columns) == ["label", "split", "count"]
    in_train = counts[(counts["label"] == "circle") & (counts["split"] == "train")]["count"].item()
    assert in_train == annotations[annotations["split"] == "train"]["label:circle"].astype(int).sum()


@pytest.fixture(scope="module")
def trained(tags, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    params = dataclasses.replace(TINY, threshold="tune", pos_weight="auto")
    train("cnn", IMAGE, params, 0, tags / "annotations.csv", tags / "augmented", out / "model.pt", out / "metrics")
    return out


def test_multilabel_training_logs_exact_match_and_f1(trained):
    summary = json.loads((trained / "metrics/metrics.json").read_text())
    assert {"val/loss", "val/accuracy", "val/f1_macro", "val/f1_micro"} <= set(summary["best"])
    assert (trained / "metrics/plots/metrics/val/f1_micro.tsv").is_file()


def test_model_file_keeps_tuned_thresholds(trained):
    _, spec = load_checkpoint(trained / "model.pt")
    assert spec.task == "multilabel" and spec.classes == ["circle", "cross", "square"]
    assert len(spec.thresholds) == 3 and all(0 < t < 1 for t in spec.thresholds)
    assert spec.groups == []


def test_evaluate_and_predict_multilabel(tags, trained, tmp_path):
    metrics = evaluate(trained / "model.pt", tags / "annotations.csv", tags / "augmented", tmp_path / "eval")
    for key in ("exact_match_accuracy", "hamming_accuracy", "precision_micro", "recall_micro", "f1_micro",
                "precision_macro", "recall_macro", "f1_macro", "balanced_accuracy", "test_images",
                "labels_without_test_examples", "calibration"):
        assert key in metrics
    written = json.loads((tmp_path / "eval/metrics.json").read_text())
    calibration = written.pop("calibration")
    assert written == pytest.approx({k: v for k, v in metrics.items() if k != "calibration"})
    assert calibration == metrics["calibration"] and {"ece", "nll", "brier"} <= calibration.keys()
    per_label = pd.read_csv(tmp_path / "eval/per_class.csv")
    assert list(per_label["class"]) == ["circle", "cross", "square"]
    assert {"precision", "recall", "f1", "support", "accuracy", "threshold", "ece"} <= set(per_label.columns)
    assert per_label["support"].sum() > 0
    confusion = json.loads((tmp_path / "eval/label_confusion.json").read_text())
    assert len(confusion) == 12 and sum(r["count"] for r in confusion) == 3 * metrics["test_images"]
    # The per-image record the review pairs on gives back the stage's own exact match and macro F1.
    outcomes = loads((tmp_path / "eval/outcomes.json").read_text())
    assert outcomes.task == "multilabel" and outcomes.actual.shape == (metrics["test_images"], 3)
    scored = compare_paired(outcomes, outcomes, resamples=100)
    assert scored.accuracy[0] == pytest.approx(metrics["exact_match_accuracy"])
    assert scored.f1_macro[0] == pytest.approx(metrics["f1_macro"])

    images = sorted((tags / "raw").rglob("*.png"))[:5]
    table = pd.DataFrame(predict(open_model(trained / "model.pt"), images, tmp_path / "pred.tsv").rows)
    assert list(table.columns) == ["path", "labels", "prob:circle", "prob:cross", "prob:square"]
    written = pd.read_csv(tmp_path / "pred.tsv", sep="\t", dtype={"labels": str}, keep_default_na=False)
    _, spec = load_checkpoint(trained / "model.pt")
    for _, row in written.iterrows():
        probs = [row[f"prob:{c}"] for c in spec.classes]
        chosen = [c for c, p, t in zip(spec.classes, probs, spec.thresholds, strict=True) if p >= t]
        assert row["labels"].split() == chosen


def test_multidigit_end_to_end_decodes_one_value_per_position(tmp_path):
    root = prepare(tmp_path, "builtin:multidigit", limit=240, rotations=())
    out = tmp_path / "run"
    train("cnn_custom", ImageParams(size=32), TINY, 0, root / "annotations.csv", root / "augmented",
          out / "model.pt", out / "metrics")
    _, spec = load_checkpoint(out / "model.pt")
    assert len(spec.classes) == 55 and len(spec.groups) == 5
    assert [spec.classes[m[0]] for m in spec.groups] == [f"p{i}=0" for i in range(1, 6)]
    metrics = evaluate(out / "model.pt", root / "annotations.csv", root / "augmented", tmp_path / "eval")
    assert list(metrics["position_accuracy"]) == [f"p{i}" for i in range(1, 6)]
    assert metrics["sequence_accuracy"] == metrics["exact_match_accuracy"]  # every label is in a group
    images = sorted((root / "raw/images").glob("*.png"))[:8]
    table = pd.DataFrame(predict(open_model(out / "model.pt"), images, tmp_path / "pred.tsv").rows)
    for labels, sequence in zip(table["labels"], table["sequence"], strict=True):
        chosen = labels.split()
        assert [c.split("=")[0] for c in chosen] == ["p1", "p2", "p3", "p4", "p5"]
        assert sequence == " ".join(c.split("=")[1] for c in chosen if not c.endswith("=blank"))


def test_task_multilabel_turns_class_folders_into_one_label_per_image(tmp_path):
    source = write_shapes_dataset(tmp_path / "shapes", per_class=2)
    summary = download(str(source), tmp_path / "raw", labels=LabelOptions(task="multilabel"))
    assert summary.multilabel and summary.counts == {"circle": 2, "cross": 2, "square": 2}
    table = pd.read_csv(tmp_path / "raw/labels.csv", dtype=str, keep_default_na=False)
    assert (label_matrix(table).sum(axis=1) == 1).all()
    assert table["path"].tolist()[0] == "images/circle/circle_00.png"


def test_digit_tags_limit_keeps_the_first_images(tmp_path):
    summary = download("builtin:digit-tags", tmp_path / "raw", limit=30)
    assert summary.images == 30 and list(summary.counts) == [str(d) for d in range(10)]
    assert len(list((tmp_path / "raw/images").glob("*.png"))) == 30


def test_multilabel_builtin_refuses_task_multiclass(tmp_path):
    with pytest.raises(UserError, match="builtin:multidigit' is multi-label; set task to auto or multilabel"):
        download("builtin:multidigit", tmp_path / "raw", labels=LabelOptions(task="multiclass"))
    assert not (tmp_path / "raw").exists()


def test_model_and_annotations_of_different_tasks_are_refused(tags, trained, tmp_path):
    single = prepare(tmp_path / "single", str(write_shapes_dataset(tmp_path / "shapes", per_class=6)))
    with pytest.raises(UserError, match="is single-label but the model .* is multi-label; retrain"):
        evaluate(trained / "model.pt", single / "annotations.csv", single / "augmented", tmp_path / "eval")
    assert not (tmp_path / "eval").exists()


def test_version_1_model_files_still_load_as_multiclass(tmp_path):
    from imgpipe.models.catalog import create_model

    model = create_model("mlp", num_classes=2, in_channels=1, image_size=28)
    payload = {"format": 1, "model": "mlp", "classes": ["a", "b"], "image_size": 28, "channels": 1,
               "mean": [0.0], "std": [1.0], "state_dict": model.state_dict()}
    torch.save(payload, tmp_path / "old.pt")
    _, spec = load_checkpoint(tmp_path / "old.pt")
    assert spec.task == "multiclass"


def test_task_multilabel_with_limit_keeps_images_of_every_class(tmp_path):
    source = write_shapes_dataset(tmp_path / "shapes", per_class=4)
    summary = download(str(source), tmp_path / "raw", limit=2, labels=LabelOptions(task="multilabel"))
    assert summary.counts == {"circle": 2, "cross": 2, "square": 2}


def test_a_stray_csv_beside_class_folders_is_ignored_with_a_note(tmp_path):
    source = write_shapes_dataset(tmp_path / "shapes", per_class=2)
    (source / "metadata.csv").write_text("author,licence\nme,cc0\n")
    summary = download(str(source), tmp_path / "raw")
    assert not summary.multilabel and summary.counts == {"circle": 2, "cross": 2, "square": 2}
    assert any("reading class folders; no usable annotation file" in note for note in summary.notes)
    # Asked for explicitly, the same file is an error.
    with pytest.raises(UserError, match="metadata.csv"):
        download(str(source), tmp_path / "raw2", labels=LabelOptions(annotations="metadata.csv"))


def test_archive_with_images_and_an_annotation_file(tmp_path):
    import tarfile

    source = write_multilabel_shapes(tmp_path / "tags", count=6)
    archive = tmp_path / "tags.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(source, arcname="tags-v1")  # one wrapper folder, as most archives have
    summary = download(archive.as_uri(), tmp_path / "raw")
    assert summary.multilabel and summary.images == 6
    table = pd.read_csv(tmp_path / "raw/labels.csv", dtype=str, keep_default_na=False)
    assert label_names(table) == ["circle", "cross", "square"]
    assert all((tmp_path / "raw" / p).is_file() for p in table["path"])
