"""Labels in file names (`data.labels_from: filename`): the pattern, and the real download stage
(and, for sequences, the train and predict stages' per-position decoding) on real PNG and JPEG files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from support.datasets import draw_shape
from support.project import assert_one_line_error, listing, run_stages, stage_in_process, write_params

from imgpipe.core.errors import UserError
from imgpipe.data.filenames import compile_pattern, matched_name, sequence_labels
from imgpipe.data.sources import LabelOptions, download

PETS = r"(?P<label>.+)_\d+"
CAPTCHA = r"(?P<sequence>[a-z0-9]+)"
BREEDS = {"Abyssinian": "circle", "Bengal": "cross", "great_pyrenees": "square"}


def write_pets(root: Path, per_class: int = 4) -> Path:
    """root/images/<Breed>_<i>.jpg|png, the way the Oxford-IIIT Pet set names them, plus junk."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    for breed, shape in BREEDS.items():
        for i in range(1, per_class + 1):
            img = draw_shape(shape, 32, rng).convert("RGB")
            if i % 2:
                img.save(root / "images" / f"{breed}_{i}.jpg", quality=90)
            else:
                img.save(root / "images" / f"{breed}_{i}.png")
    draw_shape("circle", 32, rng).save(root / "images" / "cover.png")  # an image the pattern does not name
    (root / "README.txt").write_text("Oxford-IIIT Pet, a few of them\n")
    (root / "images" / "._Abyssinian_1.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    return root


def captcha_image(text: str, rng: np.random.Generator) -> Image.Image:
    """One shape per character, side by side: learnable per position, as a captcha is."""
    shapes = {c: ("circle", "cross", "square")[ord(c) % 3] for c in text}
    canvas = np.zeros((16, 16 * 5), np.uint8)
    for i, c in enumerate(text):
        canvas[:, 16 * i : 16 * (i + 1)] = np.asarray(draw_shape(shapes[c], 16, rng))
    return Image.fromarray(canvas)


CAPTCHAS = ["226md", "3b7x", "mn2d8", "x8b3", "d2n6m", "8x3bd", "b6m2n", "n7d3", "6mx8b", "7n2dx", "2d8mb", "md63x"]


def write_captchas(root: Path) -> Path:
    rng = np.random.default_rng(1)
    root.mkdir(parents=True)
    for text in CAPTCHAS:
        captcha_image(text, rng).save(root / f"{text}.png")
    (root / "Thumbs.db").write_bytes(b"\x00" * 16)
    return root


# --- units ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern, fragments",
    [
        ("(?P<label>.+_\\d+", ("not a valid regular expression", "missing )")),
        ("(.+)_\\d+", ("neither of the named groups", "(?P<label>...)")),
        ("(?P<label>.)(?P<sequence>.+)", ("both of the named groups",)),
    ],
)
def test_a_pattern_without_one_named_group_is_refused(pattern, fragments):
    with pytest.raises(UserError) as info:
        compile_pattern(pattern)
    message = str(info.value)
    assert message.startswith("data.filename_pattern: ") and "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_the_pattern_matches_the_name_without_its_image_extension():
    assert matched_name("Abyssinian_12.jpg") == "Abyssinian_12"
    assert matched_name("226md.PNG") == "226md"
    assert matched_name("v1.2_3.jpeg") == "v1.2_3"
    assert matched_name("scan") == "scan"  # no extension: the whole name
    assert matched_name("notes.txt") == "notes.txt"  # not an image's extension: kept


def test_sequence_labels_per_position_with_blank_after_a_shorter_sequence():
    labels, targets = sequence_labels(["226md", "3b7"])
    values = ["2", "3", "6", "7", "b", "d", "m", "blank"]
    assert labels == [f"p{i}={v}" for i in range(1, 6) for v in values]
    assert targets.shape == (2, 40) and (targets.sum(axis=1) == 5).all()  # one value per position
    first = [labels[k] for k in np.flatnonzero(targets[0])]
    second = [labels[k] for k in np.flatnonzero(targets[1])]
    assert first == ["p1=2", "p2=2", "p3=6", "p4=m", "p5=d"]
    assert second == ["p1=3", "p2=b", "p3=7", "p4=blank", "p5=blank"]


def test_sequences_of_one_length_get_no_blank():
    labels, _ = sequence_labels(["ab", "ba"])
    assert labels == ["p1=a", "p1=b", "p2=a", "p2=b"]


# --- the download stage ---------------------------------------------------------------------


def run_download(work: Path, source: Path, pattern: str, **data) -> object:
    write_params(work / "params.yaml", {"data": {"source": str(source), "labels_from": "filename",
                                                 "filename_pattern": pattern, **data}})
    return stage_in_process("download", cwd=work)


def test_class_from_the_file_name_writes_class_folders(tmp_path):
    source = write_pets(tmp_path / "pets")
    before = listing(source)
    work = tmp_path / "work"
    work.mkdir()
    result = run_download(work, source, PETS)
    assert result.returncode == 0, result.stderr
    assert "12 images, 3 classes" in result.stdout and "1 name does not match data.filename_pattern" in result.stdout
    raw = work / "data" / "raw"
    assert (raw / "Abyssinian" / "images" / "Abyssinian_1.jpg").read_bytes() == (
        source / "images" / "Abyssinian_1.jpg"
    ).read_bytes()
    assert sorted(p.name for p in (raw / "great_pyrenees" / "images").iterdir()) == [
        "great_pyrenees_1.jpg", "great_pyrenees_2.png", "great_pyrenees_3.jpg", "great_pyrenees_4.png"
    ]
    report = json.loads((work / "metrics" / "download" / "report.json").read_text())
    assert report["classes"] == {"Abyssinian": 4, "Bengal": 4, "great_pyrenees": 4}
    reasons = {entry["file"]: entry["reason"] for entry in report["skipped"]}
    assert reasons == {
        "README.txt": "not an image file",
        "images/._Abyssinian_1.jpg": "AppleDouble resource fork (._*)",
        "images/cover.png": "name does not match data.filename_pattern",
    }
    sources = pd.read_csv(raw / "sources.csv")
    assert set(sources["origin"]) == {f"images/{b}_{i}.{'jpg' if i % 2 else 'png'}" for b in BREEDS for i in range(1, 5)}
    assert listing(source) == before  # the source is only read


def test_a_class_folder_source_read_by_file_name_when_asked(tmp_path, shapes_dir):
    """Files below class folders named `circle_00.png`: the pattern, not the folder, gives the class."""
    result = run_download(tmp_path, shapes_dir, r"(?P<label>[a-z]+)_0[0-4]")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "metrics" / "download" / "report.json").read_text())
    assert report["classes"] == {"circle": 5, "cross": 5, "square": 5}
    assert report["skipped_by_reason"] == {"name does not match data.filename_pattern": 15}
    assert (tmp_path / "data" / "raw" / "circle" / "circle" / "circle_00.png").is_file()


def test_no_matching_name_is_one_line_naming_the_pattern(tmp_path):
    source = write_pets(tmp_path / "pets")
    result = run_download(tmp_path, source, r"(?P<label>[a-z]+)-\d+")
    assert_one_line_error(result, "data.filename_pattern", "no image file name", "matches", "Abyssinian_1")
    assert not (tmp_path / "data" / "raw").exists()


def test_a_bad_regex_is_one_line_before_anything_is_read(tmp_path):
    result = run_download(tmp_path, tmp_path / "missing", "(?P<label>[a-z")
    assert_one_line_error(result, "data.filename_pattern", "not a valid regular expression")


def test_one_class_from_the_file_names_is_refused(tmp_path):
    source = write_pets(tmp_path / "pets")
    result = run_download(tmp_path, source, r"(?P<label>Bengal)_\d+")
    assert_one_line_error(result, "data.filename_pattern", "class 'Bengal' (4 images)", "two or more classes")


def test_sequence_is_refused_for_task_multiclass(tmp_path):
    source = write_captchas(tmp_path / "captchas")
    write_params(tmp_path / "params.yaml", {"task": "multiclass", "data": {
        "source": str(source), "labels_from": "filename", "filename_pattern": CAPTCHA}})
    result = stage_in_process("download", cwd=tmp_path)
    assert_one_line_error(result, "data.filename_pattern", "multi-label", "task")


def test_builtin_source_with_labels_from_filename_is_refused(tmp_path):
    with pytest.raises(UserError, match="data.labels_from: filename reads your own files"):
        download("builtin:digits", tmp_path / "raw", labels=LabelOptions(labels_from="filename", filename_pattern=PETS))


def test_sequence_writes_the_multilabel_layout(tmp_path):
    source = write_captchas(tmp_path / "captchas")
    work = tmp_path / "work"
    work.mkdir()
    result = run_download(work, source, CAPTCHA)
    assert result.returncode == 0, result.stderr
    assert "sequences of 4 to 5 characters" in result.stderr
    raw = work / "data" / "raw"
    table = pd.read_csv(raw / "labels.csv", dtype=str)
    assert (raw / "images" / "226md.png").read_bytes() == (source / "226md.png").read_bytes()
    row = table[table["path"] == "images/226md.png"].iloc[0]
    assert [c.removeprefix("label:") for c in table.columns if c.startswith("label:") and row[c] == "1"] == [
        "p1=2", "p2=2", "p3=6", "p4=m", "p5=d"
    ]
    short = table[table["path"] == "images/3b7x.png"].iloc[0]
    assert short["label:p5=blank"] == "1" and short["label:p4=x"] == "1"
    report = json.loads((work / "metrics" / "download" / "report.json").read_text())
    assert report["images"] == 12 and report["skipped_by_reason"] == {"Windows thumbnail cache": 1}


def test_sequence_is_decoded_per_position_by_train_and_predict(tmp_path):
    """The labels `p<i>=<char>` form one-of groups: train stores them in the model file and predict
    writes one value per position, a well-formed sequence."""
    source = write_captchas(tmp_path / "captchas")
    work = tmp_path / "work"
    work.mkdir()
    write_params(work / "params.yaml", {
        "data": {"source": str(source), "labels_from": "filename", "filename_pattern": CAPTCHA},
        "augment": {"rotations": [], "shear": 0}, "split": {"train": 0.5, "val": 0.25, "test": 0.25},
        "image": {"size": 16, "channels": 1}, "train": {"epochs": 1, "batch_size": 8},
    })
    done = run_stages(work, ("download", "augment", "split", "train", "predict"))
    with open(done / "predictions" / "predictions.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert rows and all("sequence" in row for row in rows)
    for row in rows:
        positions = [label.split("=")[0] for label in row["labels"].split()]
        assert positions == ["p1", "p2", "p3", "p4", "p5"], row["labels"]  # exactly one value each
        assert len(row["sequence"].split()) <= 5
