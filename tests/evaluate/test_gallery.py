"""The gallery of mistakes (evaluate) and the sample sheet (augment): which test images are the
worst, how a tile is drawn, the PNGs the real stages write, and that they stay small for git."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.datasets import write_shapes_dataset
from support.project import REPO, copy_prepared, run, stage_in_process

from imgpipe.core.params import AugmentParams
from imgpipe.data import pictures as drawing
from imgpipe.data.augment import SAMPLE_ROWS, augment_dataset, sample_sources
from imgpipe.data.pictures import IMAGE_SIDE, draw_tile, fit
from imgpipe.evaluate.gallery import MAX_MISTAKES, mistake_name, mistake_tiles, worst_images
from imgpipe.task.kinds import MulticlassKind, MultilabelKind
from imgpipe.task.mistakes import highest_first

TILE_BYTES = 12_000  # a tile's PNG, at most, whatever the picture (noise is the worst case)
RUN_BYTES = 200_000  # every picture one run commits to git, at most
MISTAKES = Path("metrics/evaluate/plots/images")
SAMPLES = Path("metrics/augment/plots/images/samples.png")


def png_bytes(image: Image.Image) -> int:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # as dvclive saves it
    return len(buffer.getvalue())


# --- choosing the worst ---------------------------------------------------------------------


def test_highest_first_breaks_ties_by_the_next_key_then_by_index():
    assert highest_first(np.array([1.0, 3.0, 2.0, 3.0]), k=4).tolist() == [1, 3, 2, 0]
    assert highest_first(np.array([1, 1, 0]), np.array([0.5, 0.9, 5.0]), k=2).tolist() == [1, 0]


def test_single_label_worst_are_the_highest_losses_in_order():
    task = MulticlassKind(["cat", "dog", "owl"])
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(40, 3)) * 3
    y_true = rng.integers(0, 3, size=40)
    y_pred = logits.argmax(1)
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    losses = -log_probs[np.arange(40), y_true]  # cross-entropy of the true class

    worst = worst_images(task, logits, y_true, y_pred, k=5)

    assert [w.index for w in worst] == np.argsort(-losses)[:5].tolist()
    first = worst[0]
    assert first.right == (y_true[first.index] == y_pred[first.index])
    probs = np.exp(log_probs[first.index])
    assert first.caption == (
        f"actual: {task.classes[y_true[first.index]]} ({probs[y_true[first.index]]:.2f})",
        f"predicted: {task.classes[y_pred[first.index]]} ({probs[y_pred[first.index]]:.2f})",
        f"loss {losses[first.index]:.2f}",
    )


def test_a_confident_mistake_outranks_an_unsure_right_answer():
    task = MulticlassKind(["a", "b"])
    logits = np.array([[2.0, 0.0], [0.1, 0.0], [0.0, 6.0], [5.0, 0.0]])  # truth a: right, unsure, very wrong, right
    worst = worst_images(task, logits, np.zeros(4, dtype=int), logits.argmax(1), k=12)
    assert [w.index for w in worst] == [2, 1, 0, 3]  # all 4: fewer test images than MAX_MISTAKES
    assert [w.right for w in worst] == [False, True, True, True]
    assert worst[0].caption[:2] == ("actual: a (0.00)", "predicted: b (1.00)")


def test_multilabel_worst_have_the_most_wrong_labels_then_the_higher_loss():
    task = MultilabelKind(["circle", "cross", "square"])
    y_true = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 0]])
    y_pred = np.array([[1, 0, 0], [0, 0, 0], [1, 0, 1], [0, 1, 0], [0, 0, 0]])  # wrong: 0, 2, 1, 3, 1 labels
    logits = np.where(y_pred == 1, 1.0, -1.0)
    logits[4, 1] = -4.0  # image 4 misses `cross` more confidently than image 2 adds `circle`

    worst = worst_images(task, logits, y_true, y_pred, k=4)

    assert [w.index for w in worst] == [3, 1, 4, 2]
    assert [w.right for w in worst] == [False] * 4
    assert worst[0].caption == (
        "actual: circle square",
        "predicted: cross",
        "3 wrong: circle 0.27, cross 0.73, square 0.27",
    )
    assert worst_images(task, logits, y_true, y_pred, k=5)[-1].caption[1:] == ("predicted: circle", "all right, loss 0.94")
    assert worst_images(task, logits, y_true, y_pred, k=5)[-1].right
    empty = worst_images(task, logits[[4]], y_true[[4]], y_pred[[4]], k=1)[0]
    assert empty.caption[1] == "predicted: (none)"


# --- drawing --------------------------------------------------------------------------------


def test_fit_enlarges_a_tiny_image_by_a_whole_factor_with_sharp_pixels():
    digit = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    shown = fit(digit, IMAGE_SIDE)
    factor = IMAGE_SIDE // 8
    assert shown.size == (8 * factor, 8 * factor)
    assert (np.asarray(shown) == np.kron(np.asarray(digit), np.ones((factor, factor), dtype=np.uint8))).all()
    photo = Image.new("RGB", (500, 375))
    assert fit(photo, IMAGE_SIDE).size == (IMAGE_SIDE, 72)


def test_a_tile_shows_the_image_and_a_readable_caption_in_a_few_kb():
    noise = np.random.default_rng(0).integers(0, 256, size=(3, IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
    caption = ("actual: a very long class name indeed, longer than a tile", "predicted: b (0.97)", "loss 3.51")
    tile = draw_tile(drawing.to_image(noise), caption, right=False)

    assert tile.mode == "P"  # a palette PNG
    assert tile.height == IMAGE_SIDE + 2 * drawing.PAD + drawing.CAPTION_LINES * drawing.LINE
    assert png_bytes(tile) < TILE_BYTES  # random colour noise: the most bytes any picture can take
    rgb = np.asarray(tile.convert("RGB")).astype(int)
    text = rgb[IMAGE_SIDE + 2 * drawing.PAD :]
    red = (text[..., 0] > 150) & (text[..., 1] < 90)  # the prediction, in red: it is wrong
    assert red.sum() > 30
    dark = text.sum(axis=2) < 200
    assert dark[:, : drawing.TILE_WIDTH // 2].sum() > 50  # caption text, not a blank band
    assert rgb[: IMAGE_SIDE + drawing.PAD].std() > 50  # the noise is there


def test_mistake_tiles_are_named_by_rank_and_bounded():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(30, 1, 8, 8), dtype=np.uint8)
    logits = rng.normal(size=(30, 4))
    tiles = mistake_tiles(MulticlassKind(list("abcd")), images, logits, rng.integers(0, 4, 30), logits.argmax(1))
    assert list(tiles) == [mistake_name(r) for r in range(1, MAX_MISTAKES + 1)]
    assert list(tiles)[:2] == ["mistake_01.png", "mistake_02.png"]
    assert all(png_bytes(t) < TILE_BYTES for t in tiles.values())


# --- the real stages ------------------------------------------------------------------------


def pictures(work: Path) -> dict[str, int]:
    return {p.relative_to(work).as_posix(): p.stat().st_size for p in sorted((work / "metrics").rglob("*.png"))}


def test_evaluate_writes_the_worst_test_images_as_small_pngs(ran_shapes):
    test_images = json.loads((ran_shapes / "metrics/evaluate/metrics.json").read_text())["test_images"]
    names = sorted(p.name for p in (ran_shapes / MISTAKES).iterdir())
    assert names == [mistake_name(r) for r in range(1, min(MAX_MISTAKES, test_images) + 1)]
    for name in names:
        with Image.open(ran_shapes / MISTAKES / name) as tile:
            assert tile.format == "PNG" and tile.width == drawing.TILE_WIDTH
            assert np.asarray(tile.convert("L"))[: IMAGE_SIDE].std() > 20  # a shape on noise, not a blank
    sizes = pictures(ran_shapes)
    assert len(sizes) <= MAX_MISTAKES + 1 and sum(sizes.values()) < RUN_BYTES, sizes
    assert all(size < TILE_BYTES for name, size in sizes.items() if "mistake_" in name), sizes


def test_a_rerun_of_evaluate_rewrites_the_same_files_and_no_stale_ones(ran_shapes, tmp_path):
    work = copy_prepared(ran_shapes, tmp_path / "work")
    before = {name: (work / name).read_bytes() for name in pictures(work) if name.startswith("metrics/evaluate")}
    (work / MISTAKES / "mistake_99.png").write_bytes(b"from an older run")
    stage_in_process("evaluate", cwd=work, check=True)
    after = {name: (work / name).read_bytes() for name in pictures(work) if name.startswith("metrics/evaluate")}
    assert after == before  # deterministic, and the old folder replaced whole


def test_augment_writes_a_sample_sheet_outside_the_cached_folder(prepared_shapes):
    assert not list((prepared_shapes / "data/augmented").rglob("*.png"))  # DVC caches that folder
    assert sorted((prepared_shapes / "metrics/augment").rglob("*")) == [
        prepared_shapes / "metrics/augment/plots", *[prepared_shapes / p for p in (SAMPLES.parent, SAMPLES)]
    ]
    with Image.open(prepared_shapes / SAMPLES) as sheet:
        # shapes: 3 classes (fewer than SAMPLE_ROWS), each the original, rotate(10) and a shear
        assert sheet.size == (drawing.PAD + 3 * drawing.SAMPLE_CELL_WIDTH, 3 * drawing.SAMPLE_ROW_HEIGHT)
    assert (prepared_shapes / SAMPLES).stat().st_size < RUN_BYTES // 4


def test_dvc_plots_show_renders_every_picture(ran_shapes, tmp_path):
    """dvc.yaml's top-level `plots:` lists the two folders; `dvc plots show` finds each PNG in
    them and puts it on the page as an image of its own."""
    work = copy_prepared(ran_shapes, tmp_path / "work")
    shutil.copy2(REPO / "dvc.yaml", work)
    shutil.copytree(REPO / ".dvc", work / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache", "config.local"))
    run(["git", "init", "-q"], work)
    run(["dvc", "plots", "show", "-o", "page"], work)
    page = (work / "page/index.html").read_text()
    shown = re.findall(r'<img src="static/workspace_([^"]+)"', page)
    assert shown == [name.replace("/", "_") for name in pictures(work)]  # samples.png, then mistake_01.png ...
    assert all((work / "page/static" / f"workspace_{name}").is_file() for name in shown)


@pytest.mark.parametrize("rows, expected", [(5, 4), (2, 2)])
def test_sample_sheet_has_one_row_per_source_and_one_column_per_image(rows, expected):
    items = [(f"c{k}/{i}.png", {"label": f"c{k}"}) for k in range(rows) for i in range(3)]
    chosen = sample_sources(items)
    assert list(chosen) == [f"c{k}/0.png" for k in range(min(rows, SAMPLE_ROWS))]
    assert len(chosen) == expected
    sheet = drawing.sample_sheet([(c, [("original", Image.new("L", (8, 8), 200)), ("invert", Image.new("L", (8, 8)))])
                                  for c in chosen])
    assert sheet.size == (drawing.PAD + 2 * drawing.SAMPLE_CELL_WIDTH, expected * drawing.SAMPLE_ROW_HEIGHT)


def test_augment_sheet_shows_each_source_beside_all_its_copies_and_only_when_asked(tmp_path):
    raw = write_shapes_dataset(tmp_path / "raw", per_class=2, size=20)
    params = AugmentParams(rotations=(-15.0, 15.0), invert=True, shear=25.0)
    manifest = augment_dataset(raw, tmp_path / "a", params, seed=0)  # as a library, no sheet
    assert not list(tmp_path.rglob("*/plots"))
    assert manifest["transform"].str.startswith("shear(").sum() == 6

    augment_dataset(raw, tmp_path / "b", params, seed=0, samples=tmp_path / "metrics")
    augment_dataset(raw, tmp_path / "c", params, seed=0, samples=tmp_path / "again")
    sheet_file = tmp_path / "metrics/plots/images/samples.png"
    assert sheet_file.read_bytes() == (tmp_path / "again/plots/images/samples.png").read_bytes()  # deterministic
    with Image.open(sheet_file) as sheet:
        # 3 classes -> 3 rows; original, rotate(-15), rotate(15), invert, shear(...) -> 5 columns
        assert sheet.size == (drawing.PAD + 5 * drawing.SAMPLE_CELL_WIDTH, 3 * drawing.SAMPLE_ROW_HEIGHT)
        grey = np.asarray(sheet.convert("L"))
    for row in range(3):
        top = row * drawing.SAMPLE_ROW_HEIGHT + drawing.PAD + drawing.LINE
        band = grey[top : top + drawing.SAMPLE_SIDE]
        for column in range(5):
            cell = band[:, drawing.PAD + column * drawing.SAMPLE_CELL_WIDTH :][:, : drawing.SAMPLE_SIDE]
            assert cell.std() > 20, (row, column)  # a picture in every cell
