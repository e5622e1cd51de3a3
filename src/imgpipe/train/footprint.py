"""How much memory and disk a training run needs, estimated before it starts.

`image.size: 5000` used to get the train stage killed by the kernel (DVC: "exited with -9") after
minutes of decoding. The estimate costs milliseconds. Every layer's output is counted, since
autograd keeps about that much for the backward pass: one image at each of `REFERENCE_SIZES` goes
through the model, a line `a + b * pixels` is fitted to the two counts (convolutions' outputs grow
with the picture's area; an MLP's hidden layers do not) and taken at image.size, times the batch.
(PyTorch's `meta` device would compute the shapes at full size without allocating, but its first
forward pass costs about 2 s of imports.) The weights are counted on the `meta`
device at full size, which allocates nothing, four times over (the weights, their gradients and
two optimizer moments). The decoded images go to a memory-mapped file beside the model, so they
count against that disk.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from imgpipe.core.errors import UserError
from imgpipe.models.catalog import create_model

GB = 1024**3
WEIGHT_COPIES = 4  # weights, gradients, and Adam's two moments
REFERENCE_SIZES = (32, 64)  # px: images whose layer outputs are counted, then extrapolated to image.size


@dataclass(frozen=True)
class Footprint:
    activations: int  # bytes kept for the backward pass of one batch
    weights: int  # bytes of weights, gradients and optimizer state
    decoded: int  # bytes of the decoded train and val images (on disk, memory-mapped)

    @property
    def memory(self) -> int:
        return self.activations + self.weights


def estimate(
    model_name: str, model_args: dict, num_classes: int, channels: int, size: int, batch: int, images: int
) -> Footprint | None:
    """The footprint of training on `images` decoded images in batches of `batch`; None when the
    model cannot be measured (then nothing is refused)."""
    def one_image(side: int) -> int:
        model = create_model(model_name, num_classes=num_classes, in_channels=channels, image_size=side, **model_args)
        return output_bytes(model.eval(), torch.zeros(1, channels, side, side))

    try:
        with torch.random.fork_rng(devices=[]):  # building models draws weights: the seeded state stays the run's
            with torch.device("meta"):
                model = create_model(model_name, num_classes=num_classes, in_channels=channels, image_size=size, **model_args)
            if size <= REFERENCE_SIZES[1]:
                per_image = one_image(size)
            else:
                (s1, s2), (o1, o2) = REFERENCE_SIZES, [one_image(s) for s in REFERENCE_SIZES]
                per_pixel = (o2 - o1) / (s2 * s2 - s1 * s1)
                per_image = o1 + per_pixel * (size * size - s1 * s1)
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return None
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) * WEIGHT_COPIES
    return Footprint(round(per_image * batch), weights, images * channels * size * size)


def output_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of every leaf module's output for the input `x`."""
    total = 0

    def count(_module: nn.Module, _inputs, output) -> None:
        nonlocal total
        for out in output if isinstance(output, tuple | list) else (output,):
            if isinstance(out, torch.Tensor):
                total += out.numel() * out.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return total


def memory_limit(device: torch.device) -> int:
    """Bytes the run may use: the GPU's memory, or the RAM available to this process (the cgroup
    limit when there is one)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1]
    available = _meminfo("MemAvailable") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min(available, _cgroup_limit() or available)


def check_fits(footprint: Footprint | None, device: torch.device, scratch: Path, size: int) -> None:
    """Refuse, in one line with the estimate and the limit, a run that cannot fit."""
    if footprint is None:
        return
    limit = memory_limit(device)
    if footprint.memory > limit:
        where = "GPU memory" if device.type == "cuda" else "memory available"
        raise UserError(
            f"image.size {size}: training needs about {footprint.memory / GB:.1f} GB "
            f"(activations {footprint.activations / GB:.1f} GB, weights and optimizer {footprint.weights / GB:.1f} GB) "
            f"but {where} is {limit / GB:.1f} GB; lower image.size (or image.size: auto) or train.batch_size"
        )
    free = shutil.disk_usage(scratch).free
    if footprint.decoded > free:
        raise UserError(
            f"image.size {size}: the decoded images need {footprint.decoded / GB:.1f} GB beside the model in "
            f"'{scratch}' but that disk has {free / GB:.1f} GB free; lower image.size or free space"
        )


def _meminfo(key: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == key:
                return int(value.split()[0]) * 1024
    except OSError:
        pass
    return None


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # "max", or v1's "unlimited" huge number
            return int(text)
    return None
