"""What the data stages say about data a classifier cannot learn well from, through the real stages:
images no annotation names (reported), one class (refused), classes too small for the split
fractions (warned, and left out of the test macro averages with a count)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from support.datasets import write_shapes_dataset
from support.project import assert_one_line_error, prepare, run_stages, stage_in_process, tiny_overrides, write_params

from imgpipe.core.errors import UserError
from imgpipe.core.notes import Note
from imgpipe.data.sources import LabelOptions, download
from imgpipe.task.tasks import Multiclass


def download_in(work: Path, source: Path, **overrides):
    work.mkdir(parents=True, exist_ok=True)
    write_params(work / "params.yaml", {"data": {"source": str(source)}, **overrides})
    return stage_in_process("download", cwd=work)


def report_of(work: Path) -> dict:
    return json.loads((work / "metrics" / "download" / "report.json").read_text())


# --- B: files beside the annotations --------------------------------------------------------


def test_images_no_annotation_names_are_reported_as_skipped(tmp_path, tags_dir):
    shutil.copy(tags_dir / "images" / "img_000.png", tags_dir / "images" / "extra.png")
    shutil.copy(tags_dir / "images" / "img_001.png", tags_dir / "images" / "._img_001.png")
    (tags_dir / "images" / "notes.txt").write_text("taken on a Tuesday\n")
    result = download_in(tmp_path / "work", tags_dir)
    assert result.returncode == 0, result.stderr
    skipped = {entry["file"]: entry["reason"] for entry in report_of(tmp_path / "work")["skipped"]}
    assert skipped == {
        "images/extra.png": "not named in the annotation file",
        "images/._img_001.png": "AppleDouble resource fork (._*)",
        "images/notes.txt": "not an image file",
    }
    assert "36 images, 3 labels (multi-label); skipped 3 files (" in result.stdout
    assert "1 not named in the annotation file" in result.stdout
    totals = json.loads((tmp_path / "work" / "metrics" / "download" / "metrics.json").read_text())
    assert totals["skipped_files"] == 3


def test_an_annotation_folder_names_no_extra_skips(tmp_path, tags_dir):
    """With <label>.txt files every image is an example (unlisted ones are all-negative): nothing skipped."""
    table = (tags_dir / "labels.csv").read_text().splitlines()[1:]
    (tags_dir / "labels.csv").unlink()
    (tags_dir / "annotations").mkdir()
    for shape in ("circle", "cross", "square"):
        names = [row.split(",")[0] for row in table if shape in row]
        (tags_dir / "annotations" / f"{shape}.txt").write_text("\n".join(names) + "\n")
    result = download_in(tmp_path / "work", tags_dir)
    assert result.returncode == 0, result.stderr
    assert report_of(tmp_path / "work")["skipped"] == []


# --- C: one class -----------------------------------------------------------------------------


def test_one_class_folder_is_refused_naming_it(tmp_path):
    source = write_shapes_dataset(tmp_path / "pets", per_class=4)
    for extra in ("cross", "square"):
        shutil.rmtree(source / extra)
    result = download_in(tmp_path / "work", source)
    assert_one_line_error(result, f"data.source: '{source}'", "one class folder ('circle', 4 images)",
                          "one sub-folder per class")
    assert not (tmp_path / "work" / "data" / "raw").exists()


def test_a_class_folder_given_as_the_source_is_refused(tmp_path):
    source = write_shapes_dataset(tmp_path / "pets", per_class=4) / "circle"
    result = download_in(tmp_path / "work", source)
    assert_one_line_error(result, "no class sub-folders (4 images directly inside)", "one sub-folder per class")


def test_multilabel_with_the_same_labels_on_every_image_is_refused(tmp_path):
    source = write_shapes_dataset(tmp_path / "pets", per_class=4)
    for extra in ("cross", "square"):
        shutil.rmtree(source / extra)
    with pytest.raises(UserError, match=r"all 4 images carry the same labels \(circle\)"):
        download(str(source), tmp_path / "raw", labels=LabelOptions(task="multilabel"))


def test_multilabel_with_one_label_present_on_some_images_is_kept(tmp_path, tags_dir):
    rows = (tags_dir / "labels.csv").read_text().splitlines()
    kept = ["image,tags"] + [f"{r.split(',')[0]},{'circle' if 'circle' in r else ''}" for r in rows[1:]]
    (tags_dir / "labels.csv").write_text("\n".join(kept) + "\n")
    report = download(str(tags_dir), tmp_path / "raw")
    assert list(report.counts) == ["circle"] and 0 < report.counts["circle"] < report.images


# --- D: classes too small for the split -----------------------------------------------------


def test_a_class_too_small_for_val_and_test_is_warned_about(tmp_path):
    source = write_shapes_dataset(tmp_path / "shapes", per_class=10)
    for extra in sorted((source / "square").iterdir())[2:]:
        extra.unlink()  # square keeps 2 images: one for train, one for val or test, never both
    overrides = {**tiny_overrides(source), "split": {"train": 0.8, "val": 0.1, "test": 0.1}}
    work = prepare(tmp_path / "work", overrides, stages=("download", "augment"))
    result = stage_in_process("split", cwd=work, check=True)
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "too few images for the split fractions" in warnings[0], result.stderr
    assert "(square)" in warnings[0] and "circle" not in warnings[0]
    summary = json.loads((work / "metrics" / "split" / "split.json").read_text())
    missing = summary["classes_without_images"]
    assert missing == {"test": ["square"]}  # 2 images: one to train, one to val (the larger remainder)


def test_enough_images_give_no_warning_and_no_new_keys(prepared_shapes):
    summary = json.loads((prepared_shapes / "metrics" / "split" / "split.json").read_text())
    assert "classes_without_images" not in summary


def test_class_without_test_images_is_left_out_of_macro_averages_with_a_count():
    task = Multiclass(["circle", "cross", "square"])
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 1, 1, 2])  # square predicted once, never true
    scores = task.test_scores(y_true, y_pred)
    # circle P 1, R 1/2, F1 2/3; cross P 1/2, R 1/2, F1 1/2; square (no test image) left out
    assert scores.metrics["precision_macro"] == pytest.approx(0.75)
    assert scores.metrics["recall_macro"] == pytest.approx(0.5)
    assert scores.metrics["f1_macro"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert scores.metrics["classes_without_test_images"] == 1
    assert scores.notes == (Note("1 class(es) have no test image (left out of the macro averages): square", warning=True),)
    assert [row["support"] for row in scores.per_class] == [2, 2, 0]  # still listed


def test_every_class_in_test_keeps_the_metrics_as_they_were(ran_shapes):
    metrics = json.loads((ran_shapes / "metrics" / "evaluate" / "metrics.json").read_text())
    assert "classes_without_test_images" not in metrics


def test_evaluate_counts_a_class_without_test_images(tmp_path):
    source = write_shapes_dataset(tmp_path / "shapes", per_class=8)
    for extra in sorted((source / "square").iterdir())[2:]:
        extra.unlink()  # square: two images, at 0.5/0.25/0.25 one for train and one for val
    overrides = {**tiny_overrides(source), "split": {"train": 0.5, "val": 0.25, "test": 0.25}}
    work = prepare(tmp_path / "work", overrides)
    split = json.loads((work / "metrics" / "split" / "split.json").read_text())
    assert split["classes_without_images"] == {"test": ["square"]}
    run_stages(work, ("train",))
    result = stage_in_process("evaluate", cwd=work, check=True)
    metrics = json.loads((work / "metrics" / "evaluate" / "metrics.json").read_text())
    assert metrics["classes_without_test_images"] == 1
    assert "square" in result.stderr and "left out of the macro averages" in result.stderr
