"""How fast each runtime predicts: milliseconds per image at a batch size, torch eager against
ONNX Runtime on the same images with the same number of threads.

Rounds interleave the two (torch, then ONNX Runtime, then torch ...) so a slow patch of the
machine (another process, a frequency change) falls on both; each round repeats the call
enough times to last about `ROUND_S`, and the result is the median round. The ONNX Runtime
session is made with spinning off (`OnnxPredictor(spin=False)`): by default its threads
busy-wait after each run, which took the cores from the torch call that followed and made torch
look twice as slow as it is alone (resnet18 at 32 px: 11.2 ms against 5.5 ms; cnn 1.7 against
0.95). ONNX Runtime itself is a little slower at batch 1 that way (cnn: 0.18 ms against 0.14).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

ROUNDS = 7
ROUND_S = 0.05  # seconds a round lasts, at least (one call at least)


@dataclass(frozen=True)
class Speed:
    batch: int
    torch_ms: float  # per image, median round
    onnx_ms: float

    def as_dict(self) -> dict:
        return {"torch_ms": round(self.torch_ms, 4), "onnx_ms": round(self.onnx_ms, 4),
                "speedup": round(self.torch_ms / self.onnx_ms, 2) if self.onnx_ms else None}


def per_image_ms(run: Callable[[np.ndarray], object], batch: np.ndarray, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        run(batch)
    return (time.perf_counter() - start) / repeats / len(batch) * 1000


def compare_speed(
    torch_run: Callable[[np.ndarray], object], onnx_run: Callable[[np.ndarray], object], batch: np.ndarray, rounds: int = ROUNDS
) -> Speed:
    """Median per-image milliseconds of `torch_run` and `onnx_run` on `batch` (B, C, H, W) uint8."""
    repeats = []
    for run in (torch_run, onnx_run):  # warm up (allocations, ONNX Runtime's first-run planning), then size the rounds
        run(batch)
        once = per_image_ms(run, batch, 1) * len(batch) / 1000
        repeats.append(max(1, round(ROUND_S / max(once, 1e-6))))
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for run, n, out in zip((torch_run, onnx_run), repeats, times, strict=True):
            out.append(per_image_ms(run, batch, n))
    return Speed(len(batch), statistics.median(times[0]), statistics.median(times[1]))
