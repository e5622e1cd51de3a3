"""Old image defaults (32 px grey) against `image.size/channels: auto` on colour photos: test
accuracy and train-stage time of each, side by side in one run, same model, epochs and data.

    .venv/bin/python bench/auto_image.py [--images 1000] [--width 500] [--height 375] [--epochs 8]
        [--model cnn] [--workdir DIR] [--settings 32x1,auto,32x3,64x3]

The photos are bench/photos.py's JPEG crops of scikit-learn's two sample photographs (10 classes).
The data stages run once; then, for each setting, the real train and evaluate stage scripts run
in a copy of that folder (no DVC overhead), and the test accuracy comes from evaluate's metrics.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch
from common import prepare, stage, write_params
from photos import make_photos

from imgpipe.core.layout import ANNOTATIONS, EVALUATE_METRICS, METRICS_FILE, MODEL

OLD = "32x1"  # the defaults before `auto`: 32 px, grey


def image_params(setting: str) -> dict:
    """`auto`, or SIZExCHANNELS such as 64x3."""
    if setting == "auto":
        return {"size": "auto", "channels": "auto"}
    size, channels = setting.split("x")
    return {"size": int(size), "channels": int(channels)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--workdir", type=Path, default=None, help="reuse the photos and data stages of an earlier run")
    parser.add_argument("--settings", default=f"{OLD},auto", help="comma-separated: auto or SIZExCHANNELS")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="imgpipe-bench-auto-"))
    photos = make_photos(work / "photos", args.images, args.width, args.height)
    overrides = {"model": args.model, "data": {"source": str(photos)}, "train": {"epochs": args.epochs}}
    prepared = work / "prepared"
    if not (prepared / ANNOTATIONS).is_file():
        prepare(prepared, overrides)
    print(f"photos: {args.images} JPEGs {args.width}x{args.height}, 10 classes; model {args.model}, {args.epochs} epochs")
    print(f"{'setting':<34} {'resolved':>16} {'train s':>8} {'test accuracy':>14} {'macro F1':>9}")
    for name in args.settings.split(","):
        folder = work / f"run-{name}"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(prepared, folder)
        write_params(folder / "params.yaml", {**overrides, "image": image_params(name)})
        name = "old defaults (32 px, grey)" if name == OLD else name
        seconds = stage("train", folder)
        stage("evaluate", folder)
        metrics = json.loads((folder / EVALUATE_METRICS / METRICS_FILE).read_text())
        spec = torch.load(folder / MODEL, weights_only=True)
        resolved = f"{spec['image_size']} px, {spec['channels']} ch"
        print(f"{name:<34} {resolved:>16} {seconds:>8.1f} {metrics['accuracy']:>14.4f} {metrics['f1_macro']:>9.4f}")


if __name__ == "__main__":
    main()
