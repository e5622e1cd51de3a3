"""Feed training batches at the model's pace: gather, copy to the device, augment there.

The decoded uint8 images (in memory or memory-mapped, see `imgpipe.feed.tensors`) are gathered a
batch at a time (on CUDA one batch ahead, on a background thread) and copied to the device. The
online augmentations then run on whole uint8 batches on the device, so they cost a few
element-wise ops per batch instead of a PIL call per image.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_DONE = object()


@dataclass(frozen=True)
class OnlineAugment:
    """Random augmentations drawn anew for every batch (`train.crop_padding`, `train.flip`)."""

    crop_padding: int = 0  # like torchvision RandomCrop(size, padding): zero-pad, crop at a random offset
    flip: bool = False  # like RandomHorizontalFlip(0.5)

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.flip

    def plan(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """The random choices for `n` images, drawn on the CPU from `generator` (so a run is
        reproducible and resumable on any device): (n, 3) int64 rows of crop row offset, crop
        column offset (each in [0, 2 * crop_padding]) and 1 to mirror."""
        plan = torch.zeros(n, 3, dtype=torch.long)
        if self.crop_padding:
            plan[:, :2] = torch.randint(0, 2 * self.crop_padding + 1, (n, 2), generator=generator)
        if self.flip:
            plan[:, 2] = torch.rand(n, generator=generator) < 0.5
        return plan

    def apply(self, images: torch.Tensor, plan: torch.Tensor) -> torch.Tensor:
        """Augment a (B, C, H, W) batch as `plan` (on the batch's device) says."""
        if self.crop_padding:
            images = random_crop(images, self.crop_padding, plan[:, 0], plan[:, 1])
        if self.flip:
            images = torch.where(plan[:, 2].bool().view(-1, 1, 1, 1), images.flip(3), images)
        return images


def random_crop(images: torch.Tensor, padding: int, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """Crop image i of the zero-padded batch at (top[i], left[i]) back to H x W: a shift by up to
    `padding` pixels on both axes, zeros shifted in."""
    b, c, h, w = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = (top.view(b, 1) + torch.arange(h, device=device)).view(b, 1, h, 1)
    cols = (left.view(b, 1) + torch.arange(w, device=device)).view(b, 1, 1, w)
    return padded[torch.arange(b, device=device).view(b, 1, 1, 1), torch.arange(c, device=device).view(1, c, 1, 1), rows, cols]


def batches(
    images: torch.Tensor,
    targets: torch.Tensor,
    order: torch.Tensor,
    batch_size: int,
    device: torch.device,
    plan: Callable[[int], torch.Tensor] | None = None,
    prefetch: bool | None = None,
    share: Callable[[int], slice] | None = None,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """(images, targets[, plan(batch size)]) in `order`, `batch_size` at a time, on `device`.

    With `share` (a distributed rank's, `imgpipe.train.distributed.Ranks.share`) only that part of each
    batch, after the whole batch's `plan` is drawn: every rank draws the same random numbers, so
    the images are augmented as on a single process.

    On CUDA the batches are gathered one ahead on a background thread, pinned and copied without
    blocking, so the GPU never waits and the CPU never waits for it (nothing pageable is copied,
    which would synchronise). On the CPU they are gathered in line: the copy is tiny, and a third
    thread would only take turns with the model's own threads on a small machine. `prefetch`
    overrides that choice.
    """
    cuda = device.type == "cuda"
    prefetch = cuda if prefetch is None else prefetch

    def gather() -> Iterator[list[torch.Tensor]]:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            drawn = [plan(len(idx))] if plan else []
            if share:
                part = share(len(idx))
                idx, drawn = idx[part], [d[part] for d in drawn]
            parts = [images[idx], targets[idx], *drawn]
            yield [p.pin_memory() for p in parts] if cuda else parts

    for parts in ahead(gather()) if prefetch else gather():
        yield tuple(p.to(device, non_blocking=cuda) for p in parts)


def ahead(items: Iterator, depth: int = 2) -> Iterator:
    """Run `items` on a background thread, up to `depth` items ahead of the consumer.

    The gathering is mostly copies that release the GIL. An error in the thread is raised here;
    a consumer that stops early (break, Ctrl-C) stops the thread too.
    """
    box: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _put(box, item, stop):
                    return
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            _put(box, err, stop)
            return
        _put(box, _DONE, stop)

    thread = threading.Thread(target=produce, name="imgpipe-batches", daemon=True)
    thread.start()
    try:
        while (item := box.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def _put(box: queue.Queue, item, stop: threading.Event) -> bool:
    """Put `item` unless the consumer has gone; False when it has."""
    while not stop.is_set():
        try:
            box.put(item, timeout=0.1)
            return True
        except queue.Full:
            pass
    return False
