"""Any name the file system allows, end to end: the real `dvc repro` on a source folder holding a
Latin-1 file name and class folder, newlines, tabs, quotes, commas, leading dashes and spaces
(`odd_names`), to the last stage; then `imgpipe predict` (tsv, json) on that folder and `imgpipe
evaluate --data` on it, on a tar and on a zip of it, with its model."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from support.odd_names import ODD_CLASSES, expected_origins, fs, write_odd_dataset, write_tar, write_zip
from support.project import assert_one_line_error, imgpipe, make_project, run, tiny_overrides

from imgpipe.data.readers import unescape_name


def read_tsv(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text), sep="\t", dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory) -> tuple[Path, Path]:
    """(the project after `dvc repro`, the source folder); predict.input is that folder."""
    root = tmp_path_factory.mktemp("odd-names")
    source = write_odd_dataset(root / "odd")
    repo = make_project(root / "repo", {**tiny_overrides(source), "predict": {"input": str(source)}})
    run(["dvc", "repro"], repo)
    return repo, source


def test_dvc_repro_runs_every_stage_on_odd_names(odd_run):
    repo, source = odd_run
    assert json.loads(run(["dvc", "status", "--json"], repo).stdout) == {}  # every stage ran and is up to date
    sources = pd.read_csv(repo / "data/raw/sources.csv", dtype=str, keep_default_na=False)
    assert set(sources["origin"]) == expected_origins()
    classes = pd.read_csv(repo / "metrics/evaluate/per_class.csv", dtype=str, keep_default_na=False)
    assert {"circle", *(label for _, label in ODD_CLASSES.values())} <= set(classes.iloc[:, 0])
    text = (repo / "predictions/predictions.tsv").read_text("utf-8")
    table = read_tsv(text)
    assert len(text.splitlines()) == len(table) + 1  # one line per image: no name breaks a row
    assert {Path(p).relative_to(source).as_posix() for p in table["path"]} == expected_origins()
    for path in table["path"]:  # each row names its file reversibly
        assert Path(unescape_name(path)).is_file()


def test_imgpipe_predict_names_odd_files_in_tsv_and_json(odd_run):
    repo, source = odd_run
    stage = read_tsv((repo / "predictions/predictions.tsv").read_text("utf-8"))
    done = imgpipe(repo, "predict", source, "--top-k", "2")
    table = read_tsv(done.stdout)
    assert len(done.stdout.splitlines()) == len(table) + 1
    assert table["path"].tolist() == stage["path"].tolist()
    assert table["label"].tolist() == stage["label"].tolist()
    objects = json.loads(imgpipe(repo, "predict", source, "--format", "json").stdout)
    assert [o["path"] for o in objects] == stage["path"].tolist()


def test_imgpipe_predict_names_a_missing_odd_file_escaped(odd_run):
    repo, source = odd_run
    done = imgpipe(repo, "predict", fs(source, b"circle/gone\xe9\n.png"), check=False)
    assert_one_line_error(done, "circle/gone%E9%0A.png: no such file or folder")


def test_imgpipe_evaluate_data_reads_odd_names_from_a_folder_a_tar_and_a_zip(odd_run, tmp_path):
    repo, source = odd_run
    # A zip stores these names without the UTF-8 flag: Latin-1 reads as CP437 there, a class the
    # model does not know, so the zip holds the two classes whose names are UTF-8, odd file names and all.
    two = Path(shutil.copytree(source, tmp_path / "two"))
    shutil.rmtree(fs(two, ODD_CLASSES["cross"][0]))
    tar = write_tar(source, fs(tmp_path, b"odd\xe9.tar"))  # named in Latin-1 itself
    zipped = write_zip(two, tmp_path / "two.zip")
    for i, (data, images) in enumerate(((source, 36), (tar, 36), (zipped, 24))):
        out = tmp_path / f"eval-{i}"
        done = imgpipe(repo, "evaluate", "--data", data, "--out", out)
        assert done.stdout.startswith("evaluate: accuracy ")
        report = json.loads((out / "download" / "report.json").read_text("utf-8"))
        assert report["images"] == images and len(report["skipped"]) == 2, report["skipped"]
        assert "circle/line%0Abreak.png" in report["escaped"]
