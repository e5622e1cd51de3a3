"""The export stage on the session's run (`ran_shapes`: train, evaluate, export and predict on the
shapes set): the ONNX file and its metadata, the gate, the card and its snippet; predicting with
the ONNX file (`imgpipe predict --model`, `predict.model: onnx`) without torch, and as the
trained model does; a folder with unreadable images; and the bad inputs, one line each."""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import onnx
import pandas as pd
import pytest
from support.project import (
    REPO,
    assert_one_line_error,
    copy_prepared,
    imgpipe,
    listing,
    shapes_source,
    stage_in_process,
    tiny_overrides,
    write_params,
)

from imgpipe.core.layout import EXPORT_METRICS, MODEL, ONNX_MODEL, PREDICTIONS

ATOL = 1e-4


def read_tsv(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text), sep="\t")


# A fresh interpreter runs a module or script as `python -m` / `python` would, then says whether torch was imported.
WITHOUT_TORCH = """
import runpy, sys
target, sys.argv = sys.argv[1], sys.argv[1:]
code = 0
try:
    runpy.run_module(target, run_name="__main__") if not target.endswith(".py") else runpy.run_path(target, run_name="__main__")
except SystemExit as done:
    code = done.code
print("torch imported: " + str("torch" in sys.modules), file=sys.stderr)
sys.exit(code)
"""


def run_checking_torch(cwd: Path, target: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_TORCH, target, *map(str, args)], cwd=cwd, capture_output=True, text=True)


# --- what the stage writes ---------------------------------------------------------------------------


def test_the_stage_writes_a_gated_onnx_file_its_metrics_and_card(ran_shapes: Path):
    metrics = json.loads((ran_shapes / EXPORT_METRICS / "metrics.json").read_text())
    test_images = json.loads((ran_shapes / "metrics/evaluate/metrics.json").read_text())["test_images"]
    assert metrics["parity"]["agreement"] == 1.0 and metrics["parity"]["images"] == test_images
    assert 0 <= metrics["parity"]["max_abs_diff"] <= ATOL
    assert metrics["speed"]["threads"] >= 1
    for batch in ("batch_1", "batch_64"):
        assert metrics["speed"][batch]["torch_ms"] > 0 and metrics["speed"][batch]["onnx_ms"] > 0
    assert metrics["file_mb"] == pytest.approx((ran_shapes / ONNX_MODEL).stat().st_size / 2**20, abs=1e-3)
    props = {p.key: p.value for p in onnx.load(ran_shapes / ONNX_MODEL).metadata_props}
    assert props["trained_model_md5"] == hashlib.md5((ran_shapes / MODEL).read_bytes()).hexdigest()
    assert json.loads(props["classes"]) == ["circle", "cross", "square"]
    assert json.loads(props["params"])["train"]["epochs"] == 2 and (props["image_size"], props["channels"]) == ("28", "1")
    card = (ran_shapes / EXPORT_METRICS / "model_card.md").read_text()
    for heading in ("Task and classes", "Data", "Training", "Test metrics", "Known limits", "Input and output",
                    "Parity and speed", "Using it without imgpipe"):
        assert f"\n## {heading}" in card
    assert "`circle`, `cross`, `square`" in card and f"({test_images} test images)" in card


def card_snippet(run: Path) -> str:
    card = (run / EXPORT_METRICS / "model_card.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", card, re.S)
    return code


def test_the_cards_snippet_predicts_as_imgpipe_does_with_onnxruntime_alone(ran_shapes: Path, tmp_path: Path):
    script = tmp_path / "predict.py"
    script.write_text(card_snippet(ran_shapes))
    assert len(card_snippet(ran_shapes).strip().splitlines()) <= 15
    images = sorted(shapes_source(ran_shapes).rglob("*.png"))[::7]
    expected = read_tsv(imgpipe(ran_shapes, "predict", *images, "--model", ran_shapes / ONNX_MODEL).stdout)
    for image, (_, row) in zip(images, expected.iterrows(), strict=True):
        done = run_checking_torch(ran_shapes / "models", str(script), image)
        assert done.returncode == 0, done.stderr
        label, probability = done.stdout.split()
        assert label == row["label"] and float(probability) == pytest.approx(row["probability"], abs=ATOL)
        assert "torch imported: False" in done.stderr


# --- predicting with the ONNX file ------------------------------------------------------------------


def test_onnx_predict_matches_the_trained_model_on_the_test_split(ran_shapes: Path, tmp_path: Path):
    tables = {}
    for kind in ("pt", "onnx"):
        write_params(tmp_path / f"{kind}.yaml", {**tiny_overrides(shapes_source(ran_shapes)), "predict": {"model": kind}})
        stage_in_process("predict", "--params", tmp_path / f"{kind}.yaml", "--out", tmp_path / f"{kind}.tsv", cwd=ran_shapes, check=True)
        tables[kind] = pd.read_csv(tmp_path / f"{kind}.tsv", sep="\t")
    pt, on = tables["pt"], tables["onnx"]
    assert len(pt) == json.loads((ran_shapes / "metrics/evaluate/metrics.json").read_text())["test_images"]
    assert pt["path"].tolist() == on["path"].tolist() and pt["label"].tolist() == on["label"].tolist()
    assert (pt["probability"] - on["probability"]).abs().max() <= ATOL
    assert pd.read_csv(ran_shapes / PREDICTIONS, sep="\t").equals(pt)  # the stage's own run used pt


def test_imgpipe_predict_with_the_onnx_file_never_imports_torch(ran_shapes: Path):
    folder = shapes_source(ran_shapes)
    onnx_run = run_checking_torch(ran_shapes, "imgpipe.console", "predict", folder, "--model", ONNX_MODEL, "--top-k", "3")
    assert onnx_run.returncode == 0, onnx_run.stderr
    assert "torch imported: False" in onnx_run.stderr
    pt_run = run_checking_torch(ran_shapes, "imgpipe.console", "predict", folder, "--model", MODEL, "--top-k", "3")
    assert "torch imported: True" in pt_run.stderr  # the check sees torch where it is imported
    onnx_rows, pt_rows = read_tsv(onnx_run.stdout), read_tsv(pt_run.stdout)
    assert len(onnx_rows) == 30 and onnx_rows["label"].tolist() == pt_rows["label"].tolist()
    for i in (1, 2, 3):
        assert (onnx_rows[f"top{i}_probability"] - pt_rows[f"top{i}_probability"]).abs().max() <= ATOL


def test_the_predict_stage_with_the_onnx_file_never_imports_torch(ran_shapes: Path, tmp_path: Path):
    write_params(tmp_path / "params.yaml", {**tiny_overrides(shapes_source(ran_shapes)), "predict": {"model": "onnx"}})
    done = run_checking_torch(ran_shapes, str(REPO / "stages/predict.py"), "--params", tmp_path / "params.yaml", "--out", tmp_path / "p.tsv")
    assert done.returncode == 0, done.stderr
    assert "torch imported: False" in done.stderr and "predict: 6 images" in done.stdout


# --- a folder with images that cannot be read -----------------------------------------------------


@pytest.fixture
def folder_with_bad_images(ran_shapes: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    good = sorted(shapes_source(ran_shapes).rglob("*.png"))[:5]
    for image in good:
        (folder / image.name).write_bytes(image.read_bytes())
    (folder / "cut.png").write_bytes(good[0].read_bytes()[:60])  # a download cut short
    (folder / "empty.jpg").write_bytes(b"")
    return folder


@pytest.mark.parametrize("model", [MODEL, ONNX_MODEL], ids=["pt", "onnx"])
def test_predict_skips_unreadable_images_names_them_and_exits_3(ran_shapes: Path, folder_with_bad_images: Path, model: Path):
    done = imgpipe(ran_shapes, "predict", folder_with_bad_images, "--model", model, check=False)
    assert done.returncode == 3
    rows = read_tsv(done.stdout)
    assert len(rows) == 5 and not rows["path"].str.contains("cut|empty").any()
    assert f"predict: warning: skipped {folder_with_bad_images}/cut.png: truncated or corrupt image data" in done.stderr
    assert f"predict: warning: skipped {folder_with_bad_images}/empty.jpg: empty file (0 bytes)" in done.stderr
    assert f"predict: 5 images, 2 skipped ({folder_with_bad_images}/cut.png: truncated or corrupt image data and 1 more)" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_predict_stage_on_a_folder_with_unreadable_images_writes_the_others(ran_shapes: Path, folder_with_bad_images: Path, tmp_path: Path):
    write_params(tmp_path / "params.yaml", {**tiny_overrides(shapes_source(ran_shapes)), "predict": {"input": str(folder_with_bad_images)}})
    done = stage_in_process("predict", "--params", tmp_path / "params.yaml", "--out", tmp_path / "p.tsv", cwd=ran_shapes)
    assert done.returncode == 0, done.stderr
    assert len(pd.read_csv(tmp_path / "p.tsv", sep="\t")) == 5
    assert "skipped" in done.stderr and "cut.png" in done.stderr and "predict: 5 images, 2 skipped" in done.stdout


def test_a_folder_of_only_unreadable_images_is_one_error(ran_shapes: Path, folder_with_bad_images: Path):
    for image in folder_with_bad_images.glob("*.png"):
        if image.name != "cut.png":
            image.unlink()
    done = imgpipe(ran_shapes, "predict", folder_with_bad_images, "--model", ONNX_MODEL, check=False)
    assert_one_line_error(done, "none of the 2 images could be read", "cut.png: cannot read image")


# --- bad input --------------------------------------------------------------------------------------


def onnx_without_metadata(path: Path) -> None:
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["images"], ["probabilities"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("images", TensorProto.UINT8, [None, 1, 28, 28])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.UINT8, [None, 1, 28, 28])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)


BAD_MODELS = {
    "corrupt": (lambda p: p.write_bytes(b"\x08\x07garbage" * 50), ("bad.onnx", "not a loadable ONNX model")),
    "not onnx": (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64), ("bad.onnx", "not a loadable ONNX model")),
    "empty": (lambda p: p.write_bytes(b""), ("bad.onnx", "not a loadable ONNX model")),
    "no metadata": (onnx_without_metadata, ("bad.onnx", "without the metadata imgpipe exports", "task, classes, image_size, channels")),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_a_bad_onnx_file_is_one_line(ran_shapes: Path, tmp_path: Path, case: str):
    write, fragments = BAD_MODELS[case]
    write(tmp_path / "bad.onnx")
    image = next(shapes_source(ran_shapes).rglob("*.png"))
    assert_one_line_error(imgpipe(ran_shapes, "predict", image, "--model", tmp_path / "bad.onnx", check=False), *fragments)


def test_a_missing_onnx_file_says_to_run_the_export_stage(ran_shapes: Path, tmp_path: Path):
    image = next(shapes_source(ran_shapes).rglob("*.png"))
    done = imgpipe(ran_shapes, "predict", image, "--model", tmp_path / "none.onnx", check=False)
    assert_one_line_error(done, "none.onnx: model file not found", "dvc repro export")


@pytest.fixture
def exportable(ran_shapes: Path, tmp_path: Path) -> Path:
    """A private copy of the session's run, for a test whose export writes or fails."""
    return copy_prepared(ran_shapes, tmp_path / "work")


def test_the_gate_refuses_and_leaves_the_old_outputs(exportable: Path, tmp_path: Path):
    write_params(tmp_path / "params.yaml", {**tiny_overrides(shapes_source(exportable)), "export": {"atol": 1e-12}})
    before = listing(exportable / "models"), listing(exportable / EXPORT_METRICS)
    done = stage_in_process("export", "--params", tmp_path / "params.yaml", cwd=exportable)
    assert_one_line_error(done, "model 'cnn' exported to models/model.onnx: differs from torch", "decision agreement 1.0000", "export.atol 1e-12", "nothing written")
    assert (listing(exportable / "models"), listing(exportable / EXPORT_METRICS)) == before


def test_an_unwritable_output_is_one_line(exportable: Path):
    (exportable / "blocker").write_text("a file where a folder should be")
    done = stage_in_process("export", "--out", "blocker/model.onnx", cwd=exportable)
    assert_one_line_error(done, "blocker/model.onnx: cannot write the output there")
    assert (exportable / "blocker").read_text() == "a file where a folder should be"
    assert not list((exportable / EXPORT_METRICS).glob(".*tmp*")) and not list(exportable.glob(".*tmp*"))


# --- int8 ------------------------------------------------------------------------------------------


def test_int8_writes_a_quantised_file_with_its_own_numbers(exportable: Path, tmp_path: Path):
    float_bytes = (exportable / ONNX_MODEL).stat().st_size
    write_params(tmp_path / "params.yaml", {**tiny_overrides(shapes_source(exportable)), "export": {"quantize": "int8", "calibration_images": 40}})
    done = stage_in_process("export", "--params", tmp_path / "params.yaml", cwd=exportable)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((exportable / EXPORT_METRICS / "metrics.json").read_text())
    int8 = metrics["int8"]
    assert metrics["parity"]["agreement"] == 1.0  # the float graph passed the float gate first
    assert int8["calibration_images"] == 40 and int8["torch_accuracy"] - int8["accuracy"] <= 0.01
    assert int8["accuracy_change"] == pytest.approx(int8["accuracy"] - int8["torch_accuracy"])
    proto = onnx.load(exportable / ONNX_MODEL)
    assert "QuantizeLinear" in {node.op_type for node in proto.graph.node}
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["quantized"].startswith("int8") and json.loads(props["classes"]) == ["circle", "cross", "square"]
    assert (exportable / ONNX_MODEL).stat().st_size < float_bytes
    assert "quantised to int8" in (exportable / EXPORT_METRICS / "model_card.md").read_text()
    rows = read_tsv(imgpipe(exportable, "predict", shapes_source(exportable), "--model", ONNX_MODEL).stdout)
    assert len(rows) == 30  # the int8 file predicts as the float one does: no torch, same reader


def test_the_int8_gate_refuses_a_drop_above_max_drop():
    from imgpipe.core.errors import UserError
    from imgpipe.export.stage import check_int8

    assert check_int8(0.9, 0.89, 0.01) == pytest.approx(0.01)  # at the limit: kept
    with pytest.raises(UserError, match=r"test accuracy falls from 0\.9000 to 0\.8500 \(0\.0500 > export\.max_drop 0\.01\)"):
        check_int8(0.9, 0.85, 0.01)


def test_a_large_folder_loses_only_its_bad_images_whatever_batch_they_are_in(ran_shapes: Path, tmp_path: Path):
    """600 images in three batches of 256, with bad files at the start, across a batch boundary
    and at the end: every other image keeps its row, in order."""
    folder = tmp_path / "many"
    folder.mkdir()
    sources = sorted(shapes_source(ran_shapes).rglob("*.png"))
    bad = {0, 255, 256, 599}
    for i in range(600):
        data = sources[i % len(sources)].read_bytes()
        (folder / f"{i:04d}.png").write_bytes(data[:50] if i in bad else data)
    done = imgpipe(ran_shapes, "predict", folder, "--model", ONNX_MODEL, "--top-k", "1", check=False)
    assert done.returncode == 3
    rows = read_tsv(done.stdout)
    assert rows["path"].tolist() == [str(folder / f"{i:04d}.png") for i in range(600) if i not in bad]
    by_source = read_tsv(imgpipe(ran_shapes, "predict", *sources, "--model", ONNX_MODEL, "--top-k", "1").stdout)
    expected = dict(zip([Path(p).name for p in by_source["path"]], by_source["label"], strict=True))
    assert rows["label"].tolist() == [expected[sources[i % len(sources)].name] for i in range(600) if i not in bad]
    assert "predict: 596 images, 4 skipped" in done.stderr and done.stderr.count("warning: skipped") == 4
