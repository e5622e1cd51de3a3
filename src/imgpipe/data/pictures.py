"""Small pictures for people to look at, drawn with Pillow (no torch: the augment stage uses them):
an image with its caption (a tile), a sheet of rows of titled images, each a palette PNG of a few KB
so git can hold it (`imgpipe.evaluate.gallery` draws the evaluate stage's worst test images with these)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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
