"""`image.size: auto` and `image.channels: auto`: look at the training images, pick what suits them.

A colour photo set trained in grey at 32 px loses what tells its classes apart; the digits lose
nothing. So `auto` reads the training originals (up to `SAMPLE` of them, evenly spread over the
annotation file's order, so the choice is deterministic and costs well under a second):
- channels: 3 when any of them carries colour (pixels whose channels differ, not only an RGB
  mode: a grey scan saved as an RGB JPEG is grey), else 1;
- size: their median shorter side, rounded down to a multiple of `SIZE_STEP` and clamped to
  `SIZE_RANGE`, a range that trains in minutes on a laptop CPU. Rounding down never upsamples.
  Why not up to 128: on 1,000 colour photos (bench/auto_image.py, the default cnn, 8 epochs) 64 px
  scored best, 0.75 test accuracy in 104 s, against 0.72 at 32 px (35 s), 0.65 at 96 px (298 s)
  and less at 128 px: the small default models see no more of a larger picture, only slower. A
  deeper or pretrained model can use more: set image.size yourself.
"""

from __future__ import annotations

import io
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from imgpipe.core.params import AUTO, ImageParams
from imgpipe.data.readers import Readable, UnreadableImage, load_pixels

SAMPLE = 1000  # training originals looked at, at most
SIZE_RANGE = (32, 64)  # px, what `auto` may choose (see above)
SIZE_STEP = 32  # the models halve the resolution up to five times; multiples of 32 divide evenly
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
COLOUR_SPREAD = 24  # a pixel is coloured when its channels differ by more than this (JPEG noise is less)
COLOUR_SHARE = 0.01  # an image carries colour when more than this share of its pixels are coloured
LOOK_SIZE = 64  # px, the colour check's decoding size


@dataclass(frozen=True)
class Profile:
    """What the training images look like."""

    images: int  # how many were looked at
    short_side: int  # their median shorter side, px
    colour: bool  # any of them carries colour


def evenly_spaced(items: Sequence, count: int) -> list:
    """At most `count` of `items`, spread evenly from the first on."""
    if len(items) <= count:
        return list(items)
    return [items[i * len(items) // count] for i in range(count)]


def profile_images(images: Sequence[Readable], sample: int = SAMPLE) -> Profile:
    """Median shorter side and colour of (up to `sample` of) `images`; unreadable ones are passed over."""
    sides, colour, looked = [], False, 0
    for path in evenly_spaced(images, sample):
        try:
            data = path.read_bytes()
            with Image.open(io.BytesIO(data)) as img:  # the header only: no pixels decoded
                sides.append(min(img.size))
                mode = img.mode
            looked += 1
            # Decoding costs; one coloured image settles it.
            colour = colour or (mode not in GREY_MODES and carries_colour(load_pixels(path, LOOK_SIZE, 3)))
        except (OSError, UnreadableImage, ValueError):
            continue
    return Profile(looked, int(statistics.median(sides)) if sides else SIZE_RANGE[0], colour)


def carries_colour(pixels: np.ndarray) -> bool:
    """True when more than `COLOUR_SHARE` of an RGB image's (3, H, W) pixels are not grey."""
    spread = pixels.max(axis=0).astype(np.int16) - pixels.min(axis=0)
    return bool((spread > COLOUR_SPREAD).mean() > COLOUR_SHARE)


def auto_size(short_side: int) -> int:
    """`short_side` rounded down to a multiple of `SIZE_STEP`, within `SIZE_RANGE`."""
    low, high = SIZE_RANGE
    return max(low, min(high, short_side // SIZE_STEP * SIZE_STEP))


def resolve_image(image: ImageParams, profile: Profile) -> tuple[ImageParams, list[str]]:
    """`image` with `auto` replaced by what suits `profile`; and a line saying so for each."""
    resolved, said = image, []
    if image.size == AUTO:
        resolved = replace(resolved, size=auto_size(profile.short_side))
        said.append(
            f"image.size auto -> {resolved.size} (median shorter side {profile.short_side} px "
            f"of {profile.images} training images; auto picks {SIZE_RANGE[0]} to {SIZE_RANGE[1]})"
        )
    if image.channels == AUTO:
        resolved = replace(resolved, channels=3 if profile.colour else 1)
        said.append(f"image.channels auto -> {resolved.channels} (the training images are {'in colour' if profile.colour else 'grey'})")
    return resolved, said


def needs_profile(image: ImageParams) -> bool:
    return AUTO in (image.size, image.channels)
