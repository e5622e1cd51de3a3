"""End to end on a messy dataset: `dvc repro` takes it as it is, reports every odd file, and
predicts; the user's folder is left exactly as it was."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.messy import CLASSES, CONVERTED_MODES, PLAIN_PER_CLASS, SKIPPED, odd_images, write_messy_dataset
from support.project import make_project, run, tiny_overrides

from imgpipe.data.readers import load_pixels
from imgpipe.data.sources import download


def fingerprint(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*")
            if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> Path:
    return write_messy_dataset(tmp_path_factory.mktemp("messy") / "dataset")


@pytest.fixture(scope="module")
def project(messy: Path, tmp_path_factory) -> tuple[Path, dict]:
    before = fingerprint(messy)
    overrides = tiny_overrides(messy)
    overrides["split"] = {**overrides["split"], "respect_existing": True}
    overrides["image"] = {**overrides["image"], "channels": 3}
    repo = make_project(tmp_path_factory.mktemp("messy-e2e") / "repo", overrides)
    result = run(["dvc", "repro"], repo)
    assert fingerprint(messy) == before  # read only: same files, bytes and mtimes
    return repo, {"stdout": result.stdout, "stderr": result.stderr}


def report(repo: Path) -> dict:
    return json.loads((repo / "metrics/download/report.json").read_text())


def test_every_usable_image_is_kept(project):
    repo, _ = project
    kept = report(repo)
    per_class = PLAIN_PER_CLASS + len(odd_images("circle"))
    assert kept["classes"] == {"bird": per_class + 1, "cat": per_class + 1, "dog": per_class}  # + the copies
    assert kept["images"] == sum(kept["classes"].values())
    assert kept["splits_on_disk"] == {"train": 3 * 26 + 1, "val": 6, "test": 3 * 3 + 1}


def test_every_odd_file_is_skipped_with_its_reason(project):
    repo, run_output = project
    skipped = {entry["file"]: entry["reason"] for entry in report(repo)["skipped"]}
    assert set(skipped) == set(SKIPPED)
    for name, reason in SKIPPED.items():
        assert reason.lower() in skipped[name].lower(), (name, skipped[name])
    assert f"skipped {len(SKIPPED)} files" in run_output["stdout"]
    totals = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)[""]["data"]
    assert totals["metrics/download/metrics.json"]["data"]["skipped_files"] == len(SKIPPED)


def test_conversions_repairs_renames_and_duplicates_are_reported(project):
    repo, _ = project
    found = report(repo)
    assert found["converted_by_mode"] == {mode: len(CLASSES) for mode in sorted(CONVERTED_MODES)}
    assert sorted(r["file"] for r in found["repaired"]) == [f"Training/{c}/no end marker.jpg" for c in sorted(CLASSES)]
    assert sorted(r["to"] for r in found["renamed"]) == [
        f"{c}/Training/scan_no_extension.png" for c in sorted(CLASSES)
    ]
    duplicates = {tuple(d["files"]): d["conflict"] for d in found["duplicates"]}
    assert duplicates == {
        ("Training/cat/000.png", "test/cat/copy of 000.png"): False,
        ("Training/bird/dog_or_bird.png", "Training/dog/001.png"): True,
    }


def test_the_shipped_split_is_kept_and_the_straddling_copy_flagged(project):
    repo, run_output = project
    split = json.loads((repo / "metrics/split/split.json").read_text())
    assert split["split_on_disk_kept"] is True
    assert split["duplicate_sets_across_splits"] == 1
    assert "1 sets of byte-identical images span more than one split" in run_output["stderr"]
    annotations = pd.read_csv(repo / "data/annotations.csv", dtype=str, keep_default_na=False)
    originals = annotations[annotations["transform"] == "original"]
    shipped = originals["source"].str.split("/").str[1].map({"Training": "train", "Validation": "val", "test": "test"})
    assert (originals["split"] == shipped).all()


def test_predictions_cover_the_test_images(project):
    repo, _ = project
    predictions = pd.read_csv(repo / "predictions/predictions.tsv", sep="\t")
    assert len(predictions) == 3 * 3 + 1
    assert set(predictions["label"]) <= set(CLASSES)
    metrics = json.loads((repo / "metrics/evaluate/metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0


def test_every_stage_reads_the_same_upright_pixels(project):
    repo, _ = project
    # The sideways phone photo comes out upright in the training input: compare with the
    # original-orientation image the fixture stored rotated.
    from support.messy import shape_image

    upright = np.asarray(shape_image("circle", 110).resize((28, 28), 2).convert("RGB")).transpose(2, 0, 1)
    decoded = load_pixels(repo / "data/raw/cat/Training/sideways.jpg", 28, 3)
    assert np.abs(decoded.astype(int) - upright).mean() < 12  # JPEG noise, not a 90 degree turn
    turned = np.rot90(upright, k=1, axes=(1, 2))
    assert np.abs(decoded.astype(int) - turned).mean() > 2 * np.abs(decoded.astype(int) - upright).mean()


def test_the_same_dataset_as_a_zip_with_a_wrapper_folder_gives_the_same_images(messy: Path, tmp_path: Path):
    archive = tmp_path / "messy.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(messy.rglob("*")):
            zf.write(path, Path("messy-dataset") / path.relative_to(messy))
        zf.writestr("__MACOSX/messy-dataset/._Training", b"\x00\x05\x16\x07")
    from_zip = download(archive.as_uri(), tmp_path / "from_zip")
    from_folder = download(str(messy), tmp_path / "from_folder")
    assert from_zip.counts == from_folder.counts
    assert from_zip.splits_on_disk == from_folder.splits_on_disk
    assert fingerprint(tmp_path / "from_zip").keys() == fingerprint(tmp_path / "from_folder").keys()
    shutil.rmtree(tmp_path / "from_zip")
