"""Stage scripts run by hand: --help works, and bad input is one clear line with no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import assert_one_line_error, stage, tiny_overrides, write_params

STAGES = ("download", "augment", "split", "train", "evaluate", "predict")


@pytest.mark.parametrize("name", STAGES)
def test_help_explains_options(name: str, tmp_path: Path):
    result = stage(name, "--help", cwd=tmp_path, check=True)
    assert "--params" in result.stdout or "--model" in result.stdout
    assert "Usage" in result.stdout


@pytest.fixture
def prepared(tmp_path: Path, shapes_dir: Path) -> Path:
    """A working folder where download, augment and split already ran."""
    write_params(tmp_path / "params.yaml", tiny_overrides(shapes_dir))
    for name in ("download", "augment", "split"):
        stage(name, cwd=tmp_path, check=True)
    return tmp_path


def test_unknown_model_lists_registered_names(prepared: Path):
    write_params(prepared / "params.yaml", {**tiny_overrides(Path("unused")), "model": "resnet9000"})
    result = stage("train", cwd=prepared)
    assert_one_line_error(result, "model 'resnet9000'", "cnn", "mlp", "resnet18")
    assert not (prepared / "models").exists()
    assert not (prepared / "metrics/train").exists()


def test_split_fractions_must_sum_to_one(prepared: Path):
    (prepared / "data/annotations.csv").unlink()
    write_params(prepared / "params.yaml", {"split": {"train": 0.7, "val": 0.1, "test": 0.1}})
    result = stage("split", cwd=prepared)
    assert_one_line_error(result, "split.train + split.val + split.test", "sum to 1")
    assert not (prepared / "data/annotations.csv").exists()


def test_predict_on_a_folder_names_classes(prepared: Path, shapes_dir: Path):
    stage("train", cwd=prepared, check=True)
    write_params(prepared / "params.yaml", {**tiny_overrides(shapes_dir), "predict": {"input": str(shapes_dir / "cross")}})
    stage("predict", cwd=prepared, check=True)
    rows = (prepared / "predictions/predictions.tsv").read_text().splitlines()
    assert rows[0] == "path\tlabel\tprobability"
    assert len(rows) == 1 + 10
    assert all(row.split("\t")[1] in {"circle", "cross", "square"} for row in rows[1:])
