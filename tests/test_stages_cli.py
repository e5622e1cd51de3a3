"""Stage scripts run by hand: --help works, and bad input is one clear line with no traceback."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import pytest

from helpers import REPO, run, tiny_overrides, write_params

STAGES = ("download", "augment", "split", "train", "evaluate", "predict")


def stage(name: str, *args: str, cwd: Path, check: bool = False):
    return run(["python", str(REPO / "stages" / f"{name}.py"), *args], cwd, check=check)


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


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


def test_unknown_params_key_is_named(tmp_path: Path, shapes_dir: Path):
    write_params(tmp_path / "params.yaml", {**tiny_overrides(shapes_dir), "train": {"epochz": 3}})
    result = stage("download", cwd=tmp_path)
    assert_one_line_error(result, "params.yaml", "train.epochz", "epochs")
    assert not (tmp_path / "data").exists()


def test_split_fractions_must_sum_to_one(prepared: Path):
    (prepared / "data/annotations.csv").unlink()
    write_params(prepared / "params.yaml", {"split": {"train": 0.7, "val": 0.1, "test": 0.1}})
    result = stage("split", cwd=prepared)
    assert_one_line_error(result, "split.train + split.val + split.test", "sum to 1")
    assert not (prepared / "data/annotations.csv").exists()


def test_missing_source_folder(tmp_path: Path):
    missing = tmp_path / "no-such-folder"
    write_params(tmp_path / "params.yaml", tiny_overrides(missing))
    result = stage("download", cwd=tmp_path)
    assert_one_line_error(result, "data.source", str(missing), "does not exist")
    assert not (tmp_path / "data/raw").exists()


def test_class_folder_without_images(tmp_path: Path, shapes_dir: Path):
    (shapes_dir / "empty").mkdir()
    (shapes_dir / "empty" / "notes.txt").write_text("not an image")
    write_params(tmp_path / "params.yaml", tiny_overrides(shapes_dir))
    result = stage("download", cwd=tmp_path)
    assert_one_line_error(result, str(shapes_dir / "empty"), "no images")
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_archive_checksum_mismatch(tmp_path: Path, shapes_dir: Path):
    archive = tmp_path / "shapes.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(shapes_dir, arcname="shapes")
    overrides = {**tiny_overrides(shapes_dir), "data": {"source": archive.as_uri(), "sha256": "0" * 64}}
    write_params(tmp_path / "params.yaml", overrides)
    result = stage("download", cwd=tmp_path)
    assert_one_line_error(result, "data.sha256", "shapes.tar.gz", hashlib.sha256(archive.read_bytes()).hexdigest())
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())

    overrides["data"]["sha256"] = hashlib.sha256(archive.read_bytes()).hexdigest()
    write_params(tmp_path / "params.yaml", overrides)
    stage("download", cwd=tmp_path, check=True)
    assert sorted(p.name for p in (tmp_path / "data/raw").iterdir()) == ["circle", "cross", "square"]


def test_predict_on_a_folder_names_classes(prepared: Path, shapes_dir: Path):
    stage("train", cwd=prepared, check=True)
    write_params(prepared / "params.yaml", {**tiny_overrides(shapes_dir), "predict": {"input": str(shapes_dir / "cross")}})
    stage("predict", cwd=prepared, check=True)
    rows = (prepared / "predictions/predictions.tsv").read_text().splitlines()
    assert rows[0] == "path\tlabel\tprobability"
    assert len(rows) == 1 + 10
    assert all(row.split("\t")[1] in {"circle", "cross", "square"} for row in rows[1:])
