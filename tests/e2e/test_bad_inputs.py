"""Bad or odd inputs across params, data and model files, each with its exact outcome.

Run through the stage scripts' own commands: a bad input is one `error:` line that names the key
or file and what to do, with no traceback and no output left behind; an odd but usable input is
taken, and what was skipped or changed is in `metrics/download/report.json`. The cases run in
this process (`stage_in_process`, milliseconds each); one error and one success also run in a
real process, as a user runs them, for what only a process shows: stderr, the exit status.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support.project import assert_one_line_error, copy_prepared, stage, stage_in_process, tiny_overrides, write_params

REPORT = "metrics/download/report.json"


def png_bytes(size: int = 28, mode: str = "L", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    shape = (size, size) if mode == "L" else (size, size, 3)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode=mode).save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(size: int = 64, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# params.yaml: caught by the first stage that reads it, before anything is written


@dataclass(frozen=True)
class ParamsCase:
    overrides: dict
    fragments: tuple[str, ...]


PARAMS_CASES = {
    "unknown key": ParamsCase({"train": {"epochz": 3}}, ("train.epochz", "allowed keys", "epochs")),
    "unknown top-level key": ParamsCase({"modle": "cnn"}, ("'modle'", "allowed keys")),
    "wrong type": ParamsCase({"train": {"epochs": "ten"}}, ("train.epochs", "'ten'")),
    "fractions not summing to 1": ParamsCase({"split": {"train": 0.7, "val": 0.1, "test": 0.1}}, ("sum to 1",)),
    "negative fraction": ParamsCase({"split": {"train": 1.1, "val": -0.1, "test": 0.0}}, ("split.train", "[0, 1]")),
    "channels 2": ParamsCase({"image": {"channels": 2}}, ("image.channels", "1 or 3")),
    "image size 4": ParamsCase({"image": {"size": 4}}, ("image.size", ">= 8")),
    "limit 0": ParamsCase({"data": {"limit": 0}}, ("data.limit", ">= 1")),
    "threshold 1.5": ParamsCase({"train": {"threshold": 1.5}}, ("train.threshold",)),
    "threshold word": ParamsCase({"train": {"threshold": "maybe"}}, ("train.threshold",)),
    "unknown task": ParamsCase({"task": "regression"}, ("task", "multiclass", "multilabel")),
    "max_side 4": ParamsCase({"augment": {"max_side": 4}}, ("augment.max_side", ">= 8")),
    "max_extract_gb 0": ParamsCase({"data": {"max_extract_gb": 0}}, ("data.max_extract_gb",)),
    "shear 90": ParamsCase({"augment": {"shear": 90}}, ("augment.shear", "[0, 90)")),
}


def write_case_params(folder: Path, source: Path, case: ParamsCase) -> None:
    """params.yaml in `folder`: tiny params on `source`, with the case's overrides merged in."""
    overrides = tiny_overrides(source)
    for key, value in case.overrides.items():
        overrides[key] = {**overrides.get(key, {}), **value} if isinstance(value, dict) else value
    write_params(folder / "params.yaml", overrides)


@pytest.mark.parametrize("case", PARAMS_CASES, ids=list(PARAMS_CASES))
def test_bad_params_value(tmp_path: Path, shapes_dir: Path, case: str):
    write_case_params(tmp_path, shapes_dir, PARAMS_CASES[case])
    result = stage_in_process("download", cwd=tmp_path)
    assert_one_line_error(result, "params.yaml", *PARAMS_CASES[case].fragments)
    assert not (tmp_path / "data").exists() and not (tmp_path / "metrics").exists()


def test_bad_params_in_a_real_process_is_one_line_on_stderr_and_exit_status_1(tmp_path: Path, shapes_dir: Path):
    write_case_params(tmp_path, shapes_dir, PARAMS_CASES["unknown key"])
    result = stage("download", cwd=tmp_path)
    assert result.returncode == 1
    assert_one_line_error(result, "params.yaml", *PARAMS_CASES["unknown key"].fragments)
    assert result.stdout == ""
    assert not (tmp_path / "data").exists() and not (tmp_path / "metrics").exists()


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("train: [unclosed\n", ("not valid YAML", "line")),
        ("- a\n- list\n", ("must be a mapping",)),
        ("train:\n\tepochs: 3\n", ("not valid YAML",)),
    ],
    ids=["unclosed bracket", "a list", "tab indent"],
)
def test_params_file_that_is_not_a_mapping_of_sections(tmp_path: Path, text: str, fragments: tuple[str, ...]):
    (tmp_path / "params.yaml").write_text(text)
    assert_one_line_error(stage_in_process("download", cwd=tmp_path), "params.yaml", *fragments)


def test_params_file_missing(tmp_path: Path):
    assert_one_line_error(stage_in_process("download", "--params", "nope.yaml", cwd=tmp_path), "nope.yaml", "not found")


# ---------------------------------------------------------------------------------------------
# Data folders: fatal only when a class is left empty or nothing usable remains


def run_download(tmp_path: Path, source: Path | str, run=stage_in_process, **data) -> tuple:
    """The download stage in `tmp_path` on `source` (`data` merged into params' data section):
    its result and the report it wrote, or None."""
    write_params(tmp_path / "params.yaml", {**tiny_overrides(Path(source)), "data": {"source": str(source), **data}})
    result = run("download", cwd=tmp_path)
    report = json.loads((tmp_path / REPORT).read_text()) if (tmp_path / REPORT).exists() else None
    return result, report


def skipped(report: dict) -> dict[str, str]:
    return {entry["file"]: entry["reason"] for entry in report["skipped"]}


def test_missing_source_folder(tmp_path: Path):
    result, _ = run_download(tmp_path, tmp_path / "nowhere")
    assert_one_line_error(result, "data.source", "nowhere", "does not exist")
    assert not (tmp_path / "data").exists() and not (tmp_path / "metrics").exists()


def test_source_is_a_file(tmp_path: Path):
    (tmp_path / "images.png").write_bytes(png_bytes())
    result, _ = run_download(tmp_path, tmp_path / "images.png")
    assert_one_line_error(result, "data.source", "images.png", "not a folder")


def test_unknown_builtin(tmp_path: Path):
    result, _ = run_download(tmp_path, "builtin:imagenet")
    assert_one_line_error(result, "builtin:imagenet", "builtin:digits")


def test_class_left_empty_after_skipping_is_fatal(tmp_path: Path, shapes_dir: Path):
    (shapes_dir / "empty").mkdir()
    (shapes_dir / "empty" / "broken.jpg").write_bytes(b"")
    (shapes_dir / "empty" / "notes.txt").write_text("not an image")
    result, _ = run_download(tmp_path, shapes_dir)
    assert_one_line_error(result, "class folder", "empty", "no usable images", "add images or remove")
    assert not (tmp_path / "data").exists() and not (tmp_path / REPORT).exists()


def test_nothing_usable_is_fatal(tmp_path: Path):
    source = tmp_path / "src"
    (source / "cat").mkdir(parents=True)
    (source / "cat" / "a.jpg").write_bytes(os.urandom(300))
    (source / "dog").mkdir()
    (source / "dog" / "b.png").write_bytes(b"")
    result, _ = run_download(tmp_path, source)
    assert_one_line_error(result, "data.source", "no usable images")


def test_images_outside_class_folders_only(tmp_path: Path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.png").write_bytes(png_bytes())
    result, _ = run_download(tmp_path, source)
    assert_one_line_error(result, "data.source", "no class sub-folders")


@dataclass(frozen=True)
class SkipCase:
    name: str  # file name inside a class folder (or a path relative to the source)
    content: Callable[[], bytes]
    reason: str  # a fragment of the reason the report gives


SKIP_CASES = {
    "zero bytes": SkipCase("circle/empty.png", lambda: b"", "empty"),
    "random bytes named .png": SkipCase("circle/noise.png", lambda: os.urandom(2048), "not an image"),
    "truncated jpeg": SkipCase("circle/cut.jpg", lambda: jpeg_bytes(128)[: len(jpeg_bytes(128)) // 2], "truncated"),
    "spreadsheet": SkipCase("circle/notes.xlsx", lambda: b"PK\x03\x04" + os.urandom(200), "not an image"),
    "text file": SkipCase("circle/README.txt", lambda: b"hello", "not an image"),
    ".DS_Store": SkipCase("circle/.DS_Store", lambda: os.urandom(64), "macOS"),
    "Thumbs.db": SkipCase("circle/Thumbs.db", lambda: os.urandom(64), "Windows"),
    "AppleDouble": SkipCase("circle/._circle_00.png", lambda: b"\x00\x05\x16\x07" + os.urandom(60), "AppleDouble"),
    "__MACOSX": SkipCase("__MACOSX/circle/._circle_01.png", lambda: os.urandom(64), "macOS"),
    "loose file at the top": SkipCase("labels.txt", lambda: b"circle\n", "not inside a class folder"),
}


def skip_case(tmp_path: Path, shapes_dir: Path, case: str, run=stage_in_process) -> None:
    """Add the case's file to the shapes set, download it: taken, the file skipped and reported."""
    spec = SKIP_CASES[case]
    target = shapes_dir / spec.name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(spec.content())
    result, report = run_download(tmp_path, shapes_dir, run=run)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert spec.reason.lower() in skipped(report)[spec.name].lower(), report["skipped"]
    assert "skipped 1 files" in result.stdout
    assert report["images"] == 30
    assert sorted(report["classes"]) == ["circle", "cross", "square"]  # no __MACOSX class


@pytest.mark.parametrize("case", SKIP_CASES, ids=list(SKIP_CASES))
def test_unusable_file_is_skipped_and_reported(tmp_path: Path, shapes_dir: Path, case: str):
    skip_case(tmp_path, shapes_dir, case)


def test_a_skipped_file_in_a_real_process_exits_0_with_the_summary_on_stdout(tmp_path: Path, shapes_dir: Path):
    skip_case(tmp_path, shapes_dir, ".DS_Store", run=stage)


def test_image_with_wrong_or_no_extension_is_kept_by_content(tmp_path: Path, shapes_dir: Path):
    (shapes_dir / "circle" / "really_a_png.jpg").write_bytes(png_bytes(seed=1))
    (shapes_dir / "circle" / "scan (1)").write_bytes(png_bytes(seed=2))
    result, report = run_download(tmp_path, shapes_dir)
    assert result.returncode == 0, result.stderr
    assert report["images"] == 32 and report["skipped"] == []
    assert (tmp_path / "data/raw/circle/really_a_png.jpg").is_file()
    assert report["renamed"] == [{"file": "circle/scan (1)", "to": "circle/scan (1).png"}]
    assert (tmp_path / "data/raw/circle/scan (1).png").is_file()


def test_duplicates_with_conflicting_labels_are_reported(tmp_path: Path, shapes_dir: Path):
    shutil.copyfile(shapes_dir / "circle" / "circle_00.png", shapes_dir / "square" / "copy.png")
    result, report = run_download(tmp_path, shapes_dir)
    assert result.returncode == 0, result.stderr
    assert report["duplicates"] == [
        {"files": ["circle/circle_00.png", "square/copy.png"], "labels": ["circle", "square"], "conflict": True}
    ]
    assert "1 duplicate sets (1 with conflicting labels)" in result.stdout


def test_split_folders_mixed_with_class_folders(tmp_path: Path, shapes_dir: Path):
    source = tmp_path / "src"
    shutil.copytree(shapes_dir, source / "train")
    shutil.copytree(shapes_dir / "circle", source / "circle")
    result, _ = run_download(tmp_path, source)
    assert_one_line_error(result, "data.source", "mixes split folders (train)", "circle")


def test_respect_existing_on_data_not_split_on_disk(prepared_shapes: Path, tmp_path: Path):
    work = copy_prepared(prepared_shapes, tmp_path / "work")
    (work / "data/annotations.csv").unlink()
    write_params(work / "params.yaml", {**tiny_overrides(Path("unused")), "split": {"respect_existing": True}})
    result = stage_in_process("split", cwd=work)
    assert_one_line_error(result, "split.respect_existing", "not split on disk", "set it to false")
    assert not (work / "data/annotations.csv").exists()


def test_archive_with_a_member_escaping_the_target(tmp_path: Path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("cat/a.png", png_bytes())
        zf.writestr("../../outside.png", png_bytes())
    result, _ = run_download(tmp_path, archive.as_uri())
    assert_one_line_error(result, "data.source", "evil.zip", "../../outside.png")
    assert not (tmp_path.parent / "outside.png").exists()
    assert not (tmp_path / "data").exists()


def test_archive_bigger_than_the_extract_limit(tmp_path: Path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("cat/zeros.png", bytes(3_000_000))
    result, _ = run_download(tmp_path, archive.as_uri(), max_extract_gb=0.001)
    assert_one_line_error(result, "data.source", "bomb.zip", "data.max_extract_gb")
    assert not (tmp_path / "data").exists()


def test_archive_checksum_mismatch(tmp_path: Path, shapes_dir: Path):
    archive = Path(shutil.make_archive(str(tmp_path / "shapes"), "zip", shapes_dir))
    result, _ = run_download(tmp_path, archive.as_uri(), sha256="0" * 64)
    assert_one_line_error(result, "data.sha256", "shapes.zip", "expected " + "0" * 64)
    assert not (tmp_path / "data").exists()
    result, report = run_download(tmp_path, archive.as_uri(), sha256=hashlib.sha256(archive.read_bytes()).hexdigest())
    assert result.returncode == 0 and report["classes"] == {"circle": 10, "cross": 10, "square": 10}


# ---------------------------------------------------------------------------------------------
# Model files given to evaluate and predict (on the session's `prepared_shapes`, only read)


class Opaque:
    """Anything `torch.save` can only store by pickling its class."""


def model_file(kind: str, path: Path) -> None:
    if kind == "text":
        path.write_text("this is not a model\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "pickled object":
        torch.save({"format": 2, "payload": Opaque()}, path)
    elif kind == "other dict":
        torch.save({"weights": torch.zeros(3)}, path)
    elif kind == "wrong shapes":
        from imgpipe.models.catalog import create_model
        from imgpipe.models.checkpoint import ModelSpec, save_checkpoint

        spec = ModelSpec("cnn", ["circle", "cross", "square"], 28, 1, [0.0], [1.0])
        weights = create_model("mlp", num_classes=3, in_channels=1, image_size=28).state_dict()
        save_checkpoint(path, spec, weights, extra={})


MODEL_CASES = {
    "missing": ("model file not found", "run the train stage"),
    "text": ("not a loadable imgpipe model file", "retrain"),
    "empty": ("not a loadable imgpipe model file", "retrain"),
    "pickled object": ("needs pickle, refused for safety",),
    "other dict": ("not an imgpipe model file",),
    "wrong shapes": ("weights do not fit model 'cnn'",),
}


# Every case through evaluate; predict shares `load_checkpoint`, so two cases prove it reports the same.
@pytest.mark.parametrize(
    "kind, command",
    [(kind, "evaluate") for kind in MODEL_CASES] + [("pickled object", "predict"), ("wrong shapes", "predict")],
)
def test_bad_model_file(prepared_shapes: Path, tmp_path: Path, kind: str, command: str):
    path = tmp_path / "model.pt"
    if kind != "missing":
        model_file(kind, path)
    out = tmp_path / "out"
    args = ["--model", str(path), "--out", str(out / ("predictions.tsv" if command == "predict" else "evaluate"))]
    result = stage_in_process(command, *args, cwd=prepared_shapes)
    assert_one_line_error(result, str(path), *MODEL_CASES[kind])
    assert not out.exists()
