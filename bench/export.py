"""The export stage's numbers for any registered model, and what a user waits for when predicting
one image with the trained model file against its ONNX export.

1. Parity and speed (`--model`, `--size`, `--channels`, `--classes`): the model (random weights,
   seeded: speed and parity do not depend on training) exported as the export stage exports it,
   on real images (the built-in digits, decoded by the pipeline's reader at the model's size);
   the largest probability difference and decision agreement against torch, and milliseconds per
   image at batch 1 and 64, torch eager against ONNX Runtime, interleaved rounds, medians, the
   same number of threads each (`imgpipe.export.speed`), and the file's size. `--all` prints one
   row per registered model.
2. One image, end to end (`--predict`, in a project after `make run`): `imgpipe predict IMAGE
   --model models/model.pt` against `--model models/model.onnx`, each a new process as a user
   starts it, interleaved, `--rounds` each: median wall seconds and the peak resident memory of
   the process (`ru_maxrss`, read in a small parent process of its own, so one run's peak never
   hides another's).

    .venv/bin/python bench/export.py --model cnn --size 32
    .venv/bin/python bench/export.py --all --size 32
    .venv/bin/python bench/export.py --predict --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
import numpy as np
import torch

from imgpipe.core.layout import MODEL, ONNX_MODEL
from imgpipe.data.decoding import decode_images
from imgpipe.data.readers import list_images
from imgpipe.data.sources import write_builtin_digits
from imgpipe.export.graph import WithPreprocessing, export_onnx
from imgpipe.export.parity import parity
from imgpipe.export.speed import compare_speed
from imgpipe.export.stage import SPEED_BATCHES, batch_of, torch_run
from imgpipe.models.catalog import create_model, list_models
from imgpipe.predict.onnx_model import OnnxPredictor, ServingInfo
from imgpipe.task.tasks import Multiclass

# Runs `imgpipe predict` in a child and prints its peak RSS (KiB) as the last line of stderr.
PEAK = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
if done.returncode: sys.exit(done.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
"""


def digit_pixels(size: int, channels: int, count: int = 256) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        write_builtin_digits(Path(tmp))
        files = list_images(Path(tmp))[:: max(1, 1797 // count)][:count]
        return decode_images(files, size, channels)[0]


def measure(name: str, size: int, channels: int, classes: int, pixels: np.ndarray) -> dict:
    torch.manual_seed(0)
    model = create_model(name, num_classes=classes, in_channels=channels, image_size=size).eval()
    kind = Multiclass([str(i) for i in range(classes)])
    served = WithPreprocessing(model, [0.5] * channels, [0.25] * channels, kind.activation)
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.onnx"
        export_onnx(served, ServingInfo.of(kind, size, channels), name, out)
        onnx_model = OnnxPredictor(out, threads=threads, spin=False)
        with torch.inference_mode():
            reference = served(torch.from_numpy(pixels)).numpy()
        gate = parity(kind, reference, onnx_model.probabilities(pixels))
        speeds = [compare_speed(torch_run(served), onnx_model.probabilities, batch_of(pixels, n)) for n in SPEED_BATCHES]
        return {"model": name, "size": size, "threads": threads, "agreement": gate.agreement, "max_abs_diff": gate.max_abs_diff,
                **{f"batch_{s.batch}": s.as_dict() for s in speeds}, "file_mb": round(out.stat().st_size / 2**20, 2)}


def print_table(rows: list[dict]) -> None:
    print(f"{'model':<18} {'px':>4} {'agree':>6} {'max |dp|':>9}   {'b1 torch':>9} {'b1 ORT':>8} {'x':>6}   {'b64 torch':>9} {'b64 ORT':>8} {'x':>6}  {'MiB':>6}")
    for r in rows:
        b1, b64 = r["batch_1"], r["batch_64"]
        print(f"{r['model']:<18} {r['size']:>4} {r['agreement']:>6.3f} {r['max_abs_diff']:>9.1e}   {b1['torch_ms']:>9.3f} {b1['onnx_ms']:>8.3f} "
              f"{b1['speedup']:>5.1f}x   {b64['torch_ms']:>9.3f} {b64['onnx_ms']:>8.3f} {b64['speedup']:>5.1f}x  {r['file_mb']:>6.2f}")
    print(f"(ms per image, {rows[0]['threads']} threads each; medians of interleaved rounds; random weights, built-in digits)")


def one_image(project: Path, rounds: int) -> None:
    models = {"pt": project / MODEL, "onnx": project / ONNX_MODEL}
    missing = [str(p) for p in models.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"{', '.join(missing)} missing: run `make run` in {project} first")
    with tempfile.TemporaryDirectory() as tmp:
        write_builtin_digits(Path(tmp))
        image = list_images(Path(tmp))[0]
        times: dict[str, list[float]] = {k: [] for k in models}
        peaks: dict[str, list[int]] = {k: [] for k in models}
        for _ in range(rounds):
            for kind, model in models.items():
                args = [sys.executable, "-c", PEAK, str(common.BIN / "imgpipe"), "predict", str(image), "--model", str(model)]
                start = time.perf_counter()
                done = subprocess.run(args, cwd=project, env=common.command_env(), capture_output=True, text=True)
                times[kind].append(time.perf_counter() - start)
                if done.returncode:
                    raise SystemExit(done.stderr)
                peaks[kind].append(int(done.stderr.strip().splitlines()[-1]))
    wall = {k: statistics.median(v) for k, v in times.items()}
    peak = {k: statistics.median(v) / 1024 for k, v in peaks.items()}
    print(f"imgpipe predict, one image, {rounds} interleaved runs each (median):")
    print(f"{'model file':<20} {'wall s':>7} {'peak MiB':>9}")
    for kind, model in models.items():
        print(f"{model.relative_to(project).as_posix():<20} {wall[kind]:>7.2f} {peak[kind]:>9.0f}")
    print(f"pt / onnx: {wall['pt'] / wall['onnx']:.1f}x the wall time, {peak['pt'] / peak['onnx']:.1f}x the memory")
    print(json.dumps({"wall_s": wall, "peak_mib": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cnn", choices=list_models())
    parser.add_argument("--all", action="store_true", help="every registered model")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=1, choices=(1, 3))
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--predict", action="store_true", help="time `imgpipe predict` on one image, .pt against .onnx")
    parser.add_argument("--project", type=Path, default=common.REPO, help="with --predict: where models/ is")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.predict:
        one_image(args.project, args.rounds)
        return
    pixels = digit_pixels(args.size, args.channels)
    rows = []
    for name in list_models() if args.all else [args.model]:
        rows.append(measure(name, args.size, args.channels, args.classes, pixels))
        print(f"{name}: done", file=sys.stderr, flush=True)
    print_table(rows)


if __name__ == "__main__":
    main()
