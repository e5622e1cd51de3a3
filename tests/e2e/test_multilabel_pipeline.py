"""End to end, multi-label: the real `dvc` CLI runs the six stages on images plus an annotation file."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from support.project import make_project, prepare, run, tiny_overrides

from imgpipe.models.checkpoint import load_checkpoint

STAGES = ("download", "augment", "split", "train", "evaluate", "export", "predict")
LABELS = ["circle", "cross", "square"]
LABEL_COLUMNS = [f"label:{name}" for name in LABELS]
SPLITS = ["train", "val", "test"]


def ran(output: str) -> set[str]:
    return {s for s in STAGES if f"Running stage '{s}'" in output}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The tags dataset (images/ + labels.csv with space-joined tags), detected as multi-label."""
    from support.datasets import write_multilabel_shapes

    root = tmp_path_factory.mktemp("ml-e2e")
    source = write_multilabel_shapes(root / "tags")
    # mlp: the smallest real model keeps both training runs of this file to a few seconds each.
    repo = make_project(root / "repo", {**tiny_overrides(source), "model": "mlp"})
    first = run(["dvc", "repro"], repo)
    assert ran(first.stdout) == set(STAGES), first.stdout
    assert "3 labels (multi-label)" in first.stdout
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "first run"], repo)
    return repo


def test_multilabel_data_stages_keep_label_columns(project: Path):
    raw = pd.read_csv(project / "data/raw/labels.csv", dtype=str)
    assert list(raw.columns) == ["path", "group", *LABEL_COLUMNS]
    assert len(raw) == 36
    assert all((project / "data/raw" / p).is_file() for p in raw["path"])

    annotations = pd.read_csv(project / "data/annotations.csv", dtype=str, keep_default_na=False)
    assert set(LABEL_COLUMNS) <= set(annotations.columns)
    assert set(annotations[LABEL_COLUMNS].stack()) <= {"0", "1"}
    assert set(annotations["split"]) == set(SPLITS)
    # Every copy of a source image (and every member of a group) lands in one split.
    assert (annotations.groupby("source")["split"].nunique() == 1).all()
    assert (annotations.groupby("group")["split"].nunique() == 1).all()
    held_out = annotations[annotations["split"] != "train"]
    assert (held_out["transform"] == "original").all()
    # Labels travel with their image: each original keeps the raw row's labels.
    originals = annotations[annotations["transform"] == "original"].set_index("source")[LABEL_COLUMNS]
    expected = raw.set_index("path")[LABEL_COLUMNS].sort_index()
    pd.testing.assert_frame_equal(originals.sort_index(), expected, check_names=False)


def test_multilabel_evaluate_writes_label_metrics(project: Path):
    metrics = json.loads((project / "metrics/evaluate/metrics.json").read_text())
    scores = {
        "exact_match_accuracy", "hamming_accuracy", "f1_micro", "f1_macro",
        "precision_micro", "precision_macro", "recall_micro", "recall_macro",
    }  # fmt: skip
    assert scores <= set(metrics), metrics
    assert all(0.0 <= metrics[name] <= 1.0 for name in scores)
    annotations = pd.read_csv(project / "data/annotations.csv", dtype=str)
    test_images = int((annotations["split"] == "test").sum())
    assert metrics["test_images"] == test_images > 0

    per_class = pd.read_csv(project / "metrics/evaluate/per_class.csv")
    assert per_class["class"].tolist() == LABELS
    assert {"precision", "recall", "f1", "support", "threshold"} <= set(per_class.columns)
    expected_support = annotations.loc[annotations["split"] == "test", LABEL_COLUMNS].astype(int).sum()
    assert per_class["support"].tolist() == expected_support.tolist()

    label_confusion = pd.DataFrame(json.loads((project / "metrics/evaluate/label_confusion.json").read_text()))
    assert label_confusion.groupby("label").size().to_dict() == {name: 4 for name in LABELS}
    assert (label_confusion.groupby("label")["count"].sum() == test_images).all()
    assert set(label_confusion["actual"]) == set(label_confusion["predicted"]) == {"positive", "negative"}
    assert (project / "metrics/evaluate/confusion.json").is_file()


def test_multilabel_predictions_name_labels_and_probabilities(project: Path):
    predictions = pd.read_csv(project / "predictions/predictions.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert list(predictions.columns) == ["path", "labels", *(f"prob:{name}" for name in LABELS)]
    annotations = pd.read_csv(project / "data/annotations.csv", dtype=str)
    assert len(predictions) == (annotations["split"] == "test").sum()
    for labels in predictions["labels"]:
        assert set(labels.split()) <= set(LABELS)
    probs = predictions[[f"prob:{name}" for name in LABELS]].astype(float)
    assert ((probs >= 0) & (probs <= 1)).all().all()
    # Threshold 0.5: the predicted labels are exactly those at or above it.
    decided = [" ".join(n for n in LABELS if row[f"prob:{n}"] >= 0.5) for _, row in probs.iterrows()]
    assert predictions["labels"].tolist() == decided


def test_multilabel_plots_render(project: Path):
    shown = run(["dvc", "plots", "show", "--json"], project)
    plots = json.loads(shown.stdout)
    assert "errors" not in plots, plots["errors"]
    for title in ("Per-class or per-label 2x2 confusion (test)", "Images per class and split"):
        text = json.dumps(plots["data"][title])
        assert '"errors"' not in text, text[:2000]
        for name in LABELS:
            assert f'"label": "{name}"' in text, title
    counts = json.dumps(plots["data"]["Images per class and split"])
    assert all(f'"split": "{s}"' in counts for s in SPLITS)


def test_multilabel_second_repro_is_a_no_op(project: Path):
    second = run(["dvc", "repro"], project)
    assert ran(second.stdout) == set(), second.stdout
    assert run(["dvc", "status"], project).stdout.strip() == "Data and pipelines are up to date."


def test_multilabel_tuned_thresholds_rerun_model_stages_only(project: Path):
    exp = run(["dvc", "exp", "run", "-S", "train.threshold=tune"], project)
    assert ran(exp.stdout) == {"train", "evaluate", "export", "predict"}, exp.stdout
    assert "tuned thresholds on val" in exp.stdout

    _, spec = load_checkpoint(project / "models/model.pt")
    assert spec.task == "multilabel"
    assert spec.classes == LABELS
    assert len(spec.thresholds) == 3
    assert all(0.0 < t < 1.0 for t in spec.thresholds)
    per_class = pd.read_csv(project / "metrics/evaluate/per_class.csv")
    assert per_class["threshold"].tolist() == pytest.approx(spec.thresholds, abs=1e-6)


# --- builtin:digit-tags through the data stages --------------------------------------------------------


@pytest.fixture(scope="module")
def digit_tags(tmp_path_factory) -> Path:
    """download, augment and split (no training) on the first 120 images of builtin:digit-tags."""
    overrides = {**tiny_overrides(Path("unused")), "data": {"source": "builtin:digit-tags", "limit": 120}}
    return prepare(tmp_path_factory.mktemp("digit-tags"), overrides)


def test_digit_tags_split_report_counts_labels_per_split(digit_tags: Path):
    raw = pd.read_csv(digit_tags / "data/raw/labels.csv", dtype=str)
    assert len(raw) == 120
    assert list(raw.columns) == ["path", "group", *(f"label:{d}" for d in range(10))]

    counts = pd.read_csv(digit_tags / "metrics/split/class_counts.csv", dtype={"label": str})
    assert list(counts.columns) == ["label", "split", "count"]
    assert sorted(counts["label"].unique(), key=int) == [str(d) for d in range(10)]
    assert all(sorted(splits) == sorted(SPLITS) for _, splits in counts.groupby("label")["split"])
    annotations = pd.read_csv(digit_tags / "data/annotations.csv", dtype=str)
    for row in counts.itertuples():
        in_split = annotations.loc[annotations["split"] == row.split, f"label:{row.label}"].astype(int)
        assert row.count == in_split.sum(), row


def test_digit_tags_limit_still_fills_every_split(digit_tags: Path):
    # Builtin datasets deal images to their 60 groups in turn, so the first N (data.limit) span
    # many groups and the group-aware split can fill every split.
    split = json.loads((digit_tags / "metrics/split/split.json").read_text())
    assert all(split["images"][name] > 0 for name in SPLITS), split
