"""Pictures of a run for people to look at, small enough for git: the test images the model got
most wrong (the evaluate stage, like fastai's `plot_top_losses`) and the augment stage's sample
sheet (a few sources beside their copies).

Which test images are the worst:
- single-label: the highest loss, the cross-entropy of the true class (ties: test-split order);
- multi-label: the most wrong labels (the task's decisions against the truth), ties by the
  summed binary cross-entropy, then test-split order.
Always the top `MAX_MISTAKES` (fewer only when the test split is smaller), right or not, so a
run has a fixed set of file names (`mistake_01.png` is the worst) and a rerun overwrites them;
an image the model got right is captioned in green.

Each picture is a palette PNG (`PALETTE_COLOURS`) at most `IMAGE_SIDE` px per image, so a tile
is a few KB even for photos (docs/pipeline.md gives the sizes). numpy and Pillow only: the
augment stage, which must not import torch, draws its sheet here too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from imgpipe.kinds import LabelSets, SingleLabel

MAX_MISTAKES = 12  # tiles the evaluate stage writes, at most
IMAGE_SIDE = 96  # px: each image is scaled to fit a square this size
SAMPLE_SIDE = 64  # px: the same, in the augment stage's sample sheet
SAMPLE_COLUMNS = 6  # images per row of the sample sheet: the original and its first 5 copies
PALETTE_COLOURS = 128  # photos as 8-bit palette PNGs: about a third of the bytes of RGB
FONT_SIZE = 11  # px, Pillow's built-in font
LINE = 13  # px per caption line
TILE_WIDTH = 168  # px: room for a caption line of about 28 characters
CAPTION_LINES = 3
PAD = 4
SAMPLE_CELL_WIDTH = max(SAMPLE_SIDE, 84) + PAD  # px: room for a title such as `shear(-12.34)`
SAMPLE_ROW_HEIGHT = LINE + SAMPLE_SIDE + LINE + 2 * PAD  # px: caption, images, their titles
RIGHT, WRONG, TEXT = (46, 125, 50), (198, 40, 40), (33, 33, 33)


def mistake_name(rank: int) -> str:
    """The file name of the `rank`-th worst test image (1 = the worst)."""
    return f"mistake_{rank:02d}.png"


@dataclass(frozen=True)
class Worst:
    """One test image among the worst, with what its tile says."""

    index: int  # row of the test split
    right: bool  # the model's decision is right (single-label: the class; multi-label: every label)
    caption: tuple[str, ...]  # CAPTION_LINES lines: actual, predicted, probability and loss


def worst_images(
    task: SingleLabel | LabelSets, logits: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, k: int = MAX_MISTAKES
) -> list[Worst]:
    """The `k` test images the model got most wrong, the worst first (see the module docstring).
    `logits` (N, K); `y_true`, `y_pred` as the task decides them: (N,) indices or (N, K) 0/1."""
    return WORST[task.name](list(task.classes), np.asarray(logits, dtype=np.float64), y_true, y_pred, k)


def highest_first(*keys: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` largest entries by `keys` (the first decides, the next break ties),
    then by index: a stable, deterministic order."""
    n = len(keys[0])
    return np.lexsort([np.arange(n), *(-np.asarray(key, dtype=np.float64) for key in reversed(keys))])[:k]


def worst_single_label(
    classes: list[str], logits: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, k: int
) -> list[Worst]:
    """Highest cross-entropy of the true class first."""
    log_probs = logits - logits.max(axis=1, keepdims=True)  # (N, K), log-softmax, stable
    log_probs -= np.log(np.exp(log_probs).sum(axis=1, keepdims=True))
    rows = np.arange(len(logits))
    losses = -log_probs[rows, y_true]  # (N,)
    probs = np.exp(log_probs)
    worst = []
    for i in highest_first(losses, k=k):
        actual, predicted = int(y_true[i]), int(y_pred[i])
        worst.append(Worst(int(i), actual == predicted, (
            f"actual: {classes[actual]} ({probs[i, actual]:.2f})",
            f"predicted: {classes[predicted]} ({probs[i, predicted]:.2f})",
            f"loss {losses[i]:.2f}",
        )))
    return worst


def worst_label_sets(
    classes: list[str], logits: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, k: int
) -> list[Worst]:
    """Most wrong labels first; ties: the higher summed binary cross-entropy."""
    truth, chosen = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)  # (N, K)
    wrong = truth != chosen
    losses = (np.maximum(logits, 0) - logits * truth + np.log1p(np.exp(-np.abs(logits)))).sum(axis=1)  # (N,)
    probs = 1 / (1 + np.exp(-logits))
    worst = []
    for i in highest_first(wrong.sum(axis=1), losses, k=k):
        shown = ", ".join(f"{classes[j]} {probs[i, j]:.2f}" for j in np.flatnonzero(wrong[i]))  # with p(label)
        worst.append(Worst(int(i), not wrong[i].any(), (
            f"actual: {_names(classes, truth[i])}",
            f"predicted: {_names(classes, chosen[i])}",
            f"{wrong[i].sum()} wrong: {shown}" if shown else f"all right, loss {losses[i]:.2f}",
        )))
    return worst


WORST: dict[str, Callable[..., list[Worst]]] = {SingleLabel.name: worst_single_label, LabelSets.name: worst_label_sets}


def _names(classes: list[str], bits: np.ndarray) -> str:
    return " ".join(classes[j] for j in np.flatnonzero(bits)) or "(none)"


def mistake_tiles(
    task: SingleLabel | LabelSets, images, logits: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, k: int = MAX_MISTAKES
) -> dict[str, Image.Image]:
    """File name -> tile of each of the `k` worst test images; `images` (N, C, H, W) uint8, the
    pixels the model was given (before normalisation)."""
    return {
        mistake_name(rank): draw_tile(to_image(np.asarray(images[w.index])), w.caption, w.right)
        for rank, w in enumerate(worst_images(task, logits, y_true, y_pred, k), 1)
    }


def to_image(pixels: np.ndarray) -> Image.Image:
    """(C, H, W) uint8, C = 1 or 3, as an 'L' or 'RGB' image."""
    return Image.fromarray(pixels[0]) if pixels.shape[0] == 1 else Image.fromarray(pixels.transpose(1, 2, 0))


def fit(image: Image.Image, side: int) -> Image.Image:
    """Scale to fit a `side` square: a small image grows by a whole factor with NEAREST, so an 8x8
    digit shows its pixels sharp and equal; a large one shrinks smoothly."""
    longest = max(image.size)
    if longest <= side:
        factor = side // longest
        return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    size = (max(1, round(image.width * side / longest)), max(1, round(image.height * side / longest)))
    return image.resize(size, Image.Resampling.LANCZOS)


@functools.cache
def font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in font at FONT_SIZE (its fixed-size bitmap font without FreeType)."""
    return ImageFont.load_default(size=FONT_SIZE)


def shorten(text: str, width: int) -> str:
    """`text`, cut with "..." to fit `width` px."""
    if font().getlength(text) <= width:
        return text
    while text and font().getlength(text + "...") > width:
        text = text[:-1]
    return text + "..."


def draw_tile(image: Image.Image, caption: Sequence[str], right: bool) -> Image.Image:
    """The image, centred in IMAGE_SIDE, above its caption lines; the second line (the
    prediction) in green when right, red when wrong. A palette image, ready to save as PNG."""
    tile = Image.new("RGB", (TILE_WIDTH, IMAGE_SIDE + 2 * PAD + CAPTION_LINES * LINE), "white")
    shown = fit(image, IMAGE_SIDE).convert("RGB")
    tile.paste(shown, ((TILE_WIDTH - shown.width) // 2, PAD + (IMAGE_SIDE - shown.height) // 2))
    draw = ImageDraw.Draw(tile)
    for n, line in enumerate(caption[:CAPTION_LINES]):
        colour = (RIGHT if right else WRONG) if n == 1 else TEXT
        draw.text((PAD, IMAGE_SIDE + 2 * PAD + n * LINE), shorten(line, TILE_WIDTH - 2 * PAD), fill=colour, font=font())
    return compact(tile)


def sample_sheet(rows: Sequence[tuple[str, Sequence[tuple[str, Image.Image]]]]) -> Image.Image:
    """One row per sample source: its caption on a line, then the original and each copy (at most
    SAMPLE_COLUMNS images) at SAMPLE_SIDE px, each titled with its transform (`rotate(-15)`)."""
    columns = min(SAMPLE_COLUMNS, max(len(images) for _, images in rows))
    sheet = Image.new("RGB", (PAD + columns * SAMPLE_CELL_WIDTH, len(rows) * SAMPLE_ROW_HEIGHT), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (caption, images) in enumerate(rows):
        top = r * SAMPLE_ROW_HEIGHT + PAD
        draw.text((PAD, top), shorten(caption, sheet.width - 2 * PAD), fill=TEXT, font=font())
        for c, (transform, image) in enumerate(images[:columns]):
            left = PAD + c * SAMPLE_CELL_WIDTH
            shown = fit(image, SAMPLE_SIDE).convert("RGB")
            x = left + (SAMPLE_CELL_WIDTH - PAD - shown.width) // 2
            sheet.paste(shown, (x, top + LINE + (SAMPLE_SIDE - shown.height) // 2))
            draw.text((left, top + LINE + SAMPLE_SIDE + 2), shorten(transform, SAMPLE_CELL_WIDTH - PAD), fill=TEXT, font=font())
    return compact(sheet)


def compact(image: Image.Image) -> Image.Image:
    """`image` with at most PALETTE_COLOURS colours (median cut, no dithering, deterministic)."""
    return image.quantize(PALETTE_COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
