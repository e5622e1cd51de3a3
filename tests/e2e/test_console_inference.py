"""`imgpipe predict` and `imgpipe evaluate --data`: new images through the predict stage's reader
and decision rule, and a labelled folder outside the pipeline through evaluate's metrics. In this
process (`in_process`), and once (marked slow) the installed console script."""

from __future__ import annotations

import dataclasses
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import precision_recall_fscore_support
from support.datasets import write_multilabel_shapes, write_shapes_dataset
from support.project import (
    BIN,
    assert_one_line_error,
    imgpipe,
    listing,
    run,
    shapes_source,
    stage_in_process,
    tiny_overrides,
    write_params,
)


def read_tsv(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text), sep="\t", dtype={"labels": str}, keep_default_na=False)


@pytest.fixture(scope="module")
def stage_predictions(ran_shapes: Path, tmp_path_factory) -> pd.DataFrame:
    """The predict stage's own TSV for every image of the shapes folder (predict.input)."""
    tmp = tmp_path_factory.mktemp("stage-predict")
    source = shapes_source(ran_shapes)
    write_params(tmp / "params.yaml", {**tiny_overrides(source), "predict": {"input": str(source)}})
    stage_in_process("predict", "--params", str(tmp / "params.yaml"), "--out", str(tmp / "p.tsv"), cwd=ran_shapes, check=True)
    return pd.read_csv(tmp / "p.tsv", sep="\t")


# --- predict ---------------------------------------------------------------------------------------


def test_predict_tsv_is_the_stage_decision_plus_the_top_k(ran_shapes: Path, stage_predictions: pd.DataFrame):
    done = imgpipe(ran_shapes, "predict", shapes_source(ran_shapes), "--top-k", "2")
    table = read_tsv(done.stdout)
    assert list(table.columns) == ["path", "label", "probability", "top1_label", "top1_probability", "top2_label", "top2_probability"]
    assert table["path"].tolist() == stage_predictions["path"].tolist()  # same images, same order
    assert table["label"].tolist() == stage_predictions["label"].tolist()
    assert table["probability"].tolist() == stage_predictions["probability"].tolist()
    assert table["top1_label"].tolist() == table["label"].tolist()
    assert table["top1_probability"].tolist() == table["probability"].tolist()
    assert (table["top1_probability"] >= table["top2_probability"]).all()
    assert (table["top1_label"] != table["top2_label"]).all()
    assert done.stderr.strip() == f"predict: {len(table)} images"  # progress and notes only on stderr


def test_predict_json_lists_every_class_when_k_exceeds_them(ran_shapes: Path, stage_predictions: pd.DataFrame):
    done = imgpipe(ran_shapes, "predict", shapes_source(ran_shapes), "--top-k", "5", "--format", "json")
    objects = json.loads(done.stdout)
    assert [o["path"] for o in objects] == stage_predictions["path"].tolist()
    for obj, (_, stage) in zip(objects, stage_predictions.iterrows(), strict=True):
        assert set(obj) == {"path", "label", "probability", "top_k"}
        assert (obj["label"], obj["probability"]) == (stage["label"], stage["probability"])
        probs = [best["probability"] for best in obj["top_k"]]
        assert sorted(best["label"] for best in obj["top_k"]) == ["circle", "cross", "square"]  # 3 classes, not 5
        assert probs == sorted(probs, reverse=True) and obj["top_k"][0]["label"] == obj["label"]
        assert sum(probs) == pytest.approx(1.0, abs=3e-6)  # the softmax, rounded to 6 places


def test_predict_takes_files_and_folders_recursively(ran_shapes: Path, tmp_path: Path):
    source = shapes_source(ran_shapes)
    folder = tmp_path / "mixed"
    (folder / "deeper").mkdir(parents=True)
    (folder / "notes.txt").write_text("not an image, skipped inside a folder")
    for i, image in enumerate(sorted((source / "square").iterdir())[:3]):
        (folder / ("deeper" if i else ".") / image.name).write_bytes(image.read_bytes())
    named = source / "circle" / "circle_00.png"
    table = read_tsv(imgpipe(ran_shapes, "predict", named, folder, "--top-k", "1").stdout)
    assert table["path"].tolist() == [str(named), *(str(p) for p in sorted(folder.rglob("*.png")))]
    assert list(table.columns) == ["path", "label", "probability", "top1_label", "top1_probability"]


@pytest.mark.slow  # a new interpreter importing torch: seconds; the review tests run the installed command too
def test_the_installed_command_writes_only_the_table_to_stdout(ran_shapes: Path):
    done = run([str(BIN / "imgpipe"), "predict", str(shapes_source(ran_shapes) / "cross"), "--format", "json"], ran_shapes)
    assert len(json.loads(done.stdout)) == 10
    assert "Traceback" not in done.stderr


# --- evaluate --data -------------------------------------------------------------------------------


def test_evaluate_data_scores_a_folder_as_its_predictions_say(ran_shapes: Path, tmp_path: Path):
    source = shapes_source(ran_shapes)
    out = tmp_path / "results"
    done = imgpipe(ran_shapes, "evaluate", "--data", source, "--out", out)
    metrics = json.loads((out / "metrics.json").read_text())
    predictions = read_tsv(imgpipe(ran_shapes, "predict", source).stdout)
    truth = [Path(p).parent.name for p in predictions["path"]]
    precision, recall, f1, _ = precision_recall_fscore_support(truth, predictions["label"], average="macro", zero_division=0)
    assert metrics["test_images"] == 30
    assert metrics["accuracy"] == pytest.approx(np.mean(np.array(truth) == predictions["label"].to_numpy()))
    assert (metrics["precision_macro"], metrics["recall_macro"], metrics["f1_macro"]) == pytest.approx((precision, recall, f1))
    assert f"accuracy {metrics['accuracy']:.4f}" in done.stdout and "test_images 30" in done.stdout
    per_class = pd.read_csv(out / "per_class.csv")
    assert list(per_class["class"]) == ["circle", "cross", "square"] and per_class["support"].tolist() == [10, 10, 10]
    assert json.loads((out / "download/metrics.json").read_text())["images"] == 30


def test_evaluate_data_without_out_leaves_nothing_behind(ran_shapes: Path, tmp_path: Path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "models").mkdir()
    (cwd / "models/model.pt").write_bytes((ran_shapes / "models/model.pt").read_bytes())
    before = listing(cwd)
    done = imgpipe(cwd, "evaluate", "--data", shapes_source(ran_shapes))
    assert done.stdout.startswith("evaluate: accuracy ")
    assert listing(cwd) == before
    assert not list(scratch.iterdir())


def test_evaluate_data_reads_an_archive(ran_shapes: Path, tmp_path: Path):
    import shutil

    source = shapes_source(ran_shapes)
    archive = shutil.make_archive(str(tmp_path / "shapes"), "gztar", source.parent, source.name)
    from_archive = imgpipe(ran_shapes, "evaluate", "--data", archive).stdout
    assert from_archive == imgpipe(ran_shapes, "evaluate", "--data", source).stdout


# --- multi-label -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tags_model(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny multi-label model (tuned thresholds) and the tagged folder it was trained on."""
    from support.project import IMAGE, TINY
    from support.project import prepare_folders as prepare

    from imgpipe.train.stage import train

    root = tmp_path_factory.mktemp("tags-model")
    prepare(root, str(write_multilabel_shapes(root / "source", count=40)))
    params = dataclasses.replace(TINY, threshold="tune")
    train("cnn", IMAGE, params, 0, root / "annotations.csv", root / "augmented", root / "model.pt", root / "metrics")
    return root / "model.pt", root / "source"


def test_multilabel_predict_gives_the_decided_labels_and_the_top_k(tags_model, tmp_path: Path):
    from imgpipe.predict.rows import predict
    from imgpipe.predict.stage import open_model

    model, source = tags_model
    images = sorted((source / "images").iterdir())
    stage = pd.DataFrame(predict(open_model(model), images, tmp_path / "stage.tsv").rows)
    objects = json.loads(imgpipe(tmp_path, "predict", source / "images", "--model", model, "--format", "json", "--top-k", "2").stdout)
    for obj, (_, row) in zip(objects, stage.iterrows(), strict=True):
        assert obj["path"] == row["path"] and obj["labels"] == row["labels"].split()
        probs = {name: row[f"prob:{name}"] for name in ("circle", "cross", "square")}
        best = sorted(probs.items(), key=lambda item: -item[1])[:2]
        assert [(b["label"], b["probability"]) for b in obj["top_k"]] == best
    table = read_tsv(imgpipe(tmp_path, "predict", source / "images", "--model", model).stdout)
    assert list(table.columns[:2]) == ["path", "labels"] and "prob:circle" not in table.columns
    assert table["labels"].tolist() == stage["labels"].fillna("").tolist()


def test_multilabel_evaluate_data_may_lack_labels_the_model_knows(tags_model, tmp_path: Path):
    model, source = tags_model
    data = tmp_path / "no-squares"
    (data / "images").mkdir(parents=True)
    rows = ["image,tags"]
    for line in (source / "labels.csv").read_text().splitlines()[1:]:
        name, tags = line.split(",")
        if "square" not in tags:
            (data / "images" / name).write_bytes((source / "images" / name).read_bytes())
            rows.append(line)
    (data / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "results"
    imgpipe(tmp_path, "evaluate", "--data", data, "--model", model, "--out", out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_images"] == len(rows) - 1 and metrics["labels_without_test_examples"] == 1
    predictions = json.loads(imgpipe(tmp_path, "predict", data / "images", "--model", model, "--format", "json").stdout)
    truth = {name: set(tags.split()) for name, tags in (line.split(",") for line in rows[1:])}
    exact = np.mean([set(p["labels"]) == truth[Path(p["path"]).name] for p in predictions])
    assert metrics["exact_match_accuracy"] == pytest.approx(exact)
    assert pd.read_csv(out / "per_class.csv")["class"].tolist() == ["circle", "cross", "square"]


# --- bad input: one line each ----------------------------------------------------------------------


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.png").write_text("not a PNG")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/readme.md").write_text("no images here")
    write_shapes_dataset(tmp_path / "odd", per_class=2)
    (tmp_path / "odd/cross").rename(tmp_path / "odd/triangle")
    return tmp_path


BAD_INPUTS = {
    "missing path": (["predict", "{bad}/nope.png"], ["nope.png", "no such file or folder"]),
    "named non-image": (["predict", "{bad}/notes.txt"], ["notes.txt", "not an image file"]),
    "broken image": (["predict", "{bad}/broken.png"], ["broken.png", "cannot read image"]),
    "folder without images": (["predict", "{bad}/empty"], ["empty", "has no images"]),
    "top-k below 1": (["predict", "{source}", "--top-k", "0"], ["--top-k 0", ">= 1"]),
    "unknown format": (["predict", "{source}", "--format", "xml"], ["--format 'xml'", "tsv, json"]),
    "not a model file": (["predict", "{source}", "--model", "{bad}/notes.txt"], ["notes.txt", "not a loadable imgpipe model file"]),
    "missing model file": (["evaluate", "--data", "{source}", "--model", "{bad}/no.pt"], ["no.pt", "model file not found"]),
    "missing data": (["evaluate", "--data", "{bad}/nope"], ["--data", "'", "nope", "does not exist"]),
    "data not an archive": (["evaluate", "--data", "{bad}/notes.txt"], ["--data", "notes.txt", "not a .zip"]),
    "data without classes": (["evaluate", "--data", "{bad}/empty"], ["--data", "empty"]),
    "unknown classes": (["evaluate", "--data", "{bad}/odd"], ["odd", "triangle", "do not match the model"]),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line(case: str, ran_shapes: Path, bad: Path):
    args, fragments = BAD_INPUTS[case]
    args = [a.format(bad=bad, source=shapes_source(ran_shapes)) for a in args]
    result = imgpipe(ran_shapes, *args, check=False)
    assert_one_line_error(result, *fragments)
    assert result.returncode == 1 and not result.stdout


def test_single_label_model_on_multilabel_data_is_one_line(ran_shapes: Path, tags_dir: Path):
    # read as the model's task (class folders), its one `images` folder is a class the model does not know
    assert_one_line_error(imgpipe(ran_shapes, "evaluate", "--data", tags_dir, check=False), str(tags_dir), "do not match the model")


def test_evaluate_out_never_replaces_a_folder_that_is_not_an_earlier_result(ran_shapes: Path, tmp_path: Path):
    source = shapes_source(ran_shapes)
    keep = tmp_path / "my-notes"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    before = listing(source)
    for out, fragment in [(keep, "is not an earlier imgpipe evaluate result"), (source, "is, holds or lies inside --data"),
                          (source / "results", "is, holds or lies inside --data")]:
        done = imgpipe(ran_shapes, "evaluate", "--data", source, "--out", out, check=False)
        assert_one_line_error(done, f"--out '{out}'", fragment)
    assert (keep / "notes.txt").read_text() == "mine" and listing(source) == before
    first = tmp_path / "results"
    imgpipe(ran_shapes, "evaluate", "--data", source, "--out", first)
    imgpipe(ran_shapes, "evaluate", "--data", source, "--out", first)  # an earlier result is replaced
    assert (first / "metrics.json").is_file()


def test_evaluate_data_with_one_class_scores_it(ran_shapes: Path, tmp_path: Path):
    """A holdout of one class is a fine set to score, though not to train on."""
    one = tmp_path / "circles"
    (one / "circle").mkdir(parents=True)
    for image in sorted((shapes_source(ran_shapes) / "circle").iterdir())[:4]:
        (one / "circle" / image.name).write_bytes(image.read_bytes())
    done = imgpipe(ran_shapes, "evaluate", "--data", one)
    assert "accuracy" in done.stdout
