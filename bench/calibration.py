"""Calibration before and after temperature scaling, and what class weights and balanced sampling
do on imbalanced data, measured with the pipeline's own stages.

    .venv/bin/python bench/calibration.py [--sets digits,photos,digit-tags] [--imbalance] [--workdir DIR]

Each calibration set runs download, augment, split, train and evaluate (stage scripts, new
interpreters, params.yaml with the set's overrides and `train.calibrate: temperature`) and prints
the val and test ECE, NLL and Brier the stages recorded before and after the temperature, the
fitted temperature, the test accuracy (the same before and after: single-label decisions do not
move) and the seconds the fit took.

`--imbalance` prepares `builtin:digits-imbalanced` once and trains the four combinations of
`train.class_weight` (none, balanced) and `train.sampler` (shuffle, balanced) on it; it prints
macro F1, balanced accuracy and the rarest class's recall of each, and each combination's
change from none/shuffle with the paired bootstrap interval `imgpipe review` gives: on the test
split, and on the 1,062 scans the dataset leaves out (`imgpipe evaluate --data`), where the rare
classes have hundreds of images instead of two or three.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import BIN, REPO, prepare, run, stage, write_params
from photos import make_photos
from PIL import Image

from imgpipe.core.layout import OUTCOMES_FILE
from imgpipe.data.sources import BUILTIN_DIGITS_SIZE, long_tail
from imgpipe.review.stats import compare_paired
from imgpipe.task.outcomes import loads

PHOTOS = 3000  # bench/photos.py crops, 300 per class: val and test get 300 images each
SETS = {  # name -> the params overrides of its run (photos: its folder is filled in)
    "digits": {},
    "photos": {"image": {"size": 32}},
    # docs/multilabel.md's recipe for it
    "digit-tags": {"data": {"source": "builtin:digit-tags"}, "image": {"size": 48},
                   "train": {"epochs": 20, "lr": 0.003, "scheduler": "onecycle", "threshold": "tune"}},
}
COMBINATIONS = [("none", "shuffle"), ("balanced", "shuffle"), ("none", "balanced"), ("balanced", "balanced")]
RAREST = "9"  # builtin:digits-imbalanced keeps a tenth of the 9s


def read(work: Path, path: str) -> dict:
    return json.loads((work / path).read_text())


def calibration_row(name: str, work: Path) -> list[str]:
    train = read(work, "metrics/train/metrics.json")["calibration"]
    test = read(work, "metrics/evaluate/metrics.json")
    cal = test["calibration"]
    t = train.get("temperature", 1.0)
    shown_t = f"{t:.3f}" if isinstance(t, float) else f"{t['min']:.2f}-{t['max']:.2f} (median {t['median']:.2f})"
    accuracy = test.get("accuracy", test.get("exact_match_accuracy"))
    return [
        name, shown_t,
        f"{train['val_before']['ece']:.4f} -> {train['val']['ece']:.4f}",
        f"{train['val_before']['nll']:.4f} -> {train['val']['nll']:.4f}",
        f"{cal['before']['ece']:.4f} -> {cal['ece']:.4f}",
        f"{cal['before']['nll']:.4f} -> {cal['nll']:.4f}",
        f"{cal['before']['brier']:.4f} -> {cal['brier']:.4f}",
        f"{accuracy:.4f}", fit_ms(work),
    ]


def fit_ms(work: Path) -> str:
    """The temperature fit's time, as the train stage's note says it (`... (0.001 s)`)."""
    found = re.findall(r"train: val ECE .* \(([0-9.]+) s\)", (work / TRAIN_LOG).read_text())
    return f"{1000 * float(found[-1]):.1f}" if found else "?"


TRAIN_LOG = "train.log"


def train_and_evaluate(work: Path) -> float:
    """The train and evaluate stages' seconds; train's output is kept in `TRAIN_LOG`."""
    started = time.perf_counter()
    done = run([sys.executable, str(REPO / "stages" / "train.py")], work)
    (work / TRAIN_LOG).write_text(done.stdout)
    return time.perf_counter() - started + stage("evaluate", work)


def calibration(sets: list[str], root: Path) -> None:
    header = ["set", "T", "val ECE", "val NLL", "test ECE", "test NLL", "test Brier", "test accuracy", "fit ms"]
    rows = []
    for name in sets:
        overrides = {**SETS[name], "train": {**SETS[name].get("train", {}), "calibrate": "temperature"}}
        if name == "photos":
            source = make_photos(root / "photo-source", PHOTOS, 160, 120)
            overrides["data"] = {"source": str(source)}
        work = prepare(root / name, overrides)
        seconds = train_and_evaluate(work)
        rows.append(calibration_row(name, work))
        print(f"{name}: train + evaluate {seconds:.0f} s", flush=True)
    print_table(header, rows)


def imbalance(root: Path, seed: int = 42) -> None:
    base = prepare(root / "imbalanced", {"seed": seed, "data": {"source": "builtin:digits-imbalanced"}})
    runs = {}
    for weight, sampler in COMBINATIONS:
        work = root / f"imbalanced-{weight}-{sampler}"
        shutil.copytree(base, work)
        write_params(work / "params.yaml", {"seed": seed, "data": {"source": "builtin:digits-imbalanced"},
                                            "train": {"class_weight": weight, "sampler": sampler}})
        started = time.perf_counter()
        train_and_evaluate(work)
        print(f"class_weight {weight}, sampler {sampler}: {time.perf_counter() - started:.0f} s", flush=True)
        runs[(weight, sampler)] = work
    print("The test split:")
    scores_table(runs, "metrics/evaluate")
    # The scans builtin:digits-imbalanced leaves out are real digits no run has seen: a test set
    # with hundreds of the rare classes, where the split's has two or three of each.
    held_out = write_left_out(root / "left-out")
    for work in runs.values():
        run([str(BIN / "imgpipe"), "evaluate", "--model", "models/model.pt", "--data", str(held_out), "--out", HELD_OUT], work)
    print(f"The scans builtin:digits-imbalanced leaves out ({held_out}, `imgpipe evaluate --data`):")
    scores_table(runs, HELD_OUT)


HELD_OUT = "metrics/left-out"


def write_left_out(out: Path) -> Path:
    """Class folders of the digit scans `builtin:digits-imbalanced` does not keep (none of the 0s)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label in range(1, 10):
        scans = np.flatnonzero(digits.target == label)
        (out / str(label)).mkdir(parents=True, exist_ok=True)
        for i in scans[round(long_tail(label) * len(scans)):]:
            ink = (digits.images[i] / 16.0 * 255).round().astype(np.uint8)
            Image.fromarray(ink, mode="L").resize((BUILTIN_DIGITS_SIZE,) * 2, Image.Resampling.BICUBIC).save(out / str(label) / f"{i:04d}.png")
    return out


def scores_table(runs: dict, folder: str) -> None:
    reference = loads((runs[COMBINATIONS[0]] / folder / OUTCOMES_FILE).read_text())
    counts = {row["class"]: int(row["support"]) for row in per_class(runs[COMBINATIONS[0]], folder)}
    print(f"images per class: {counts}")
    header = ["class_weight", "sampler", "accuracy", "macro F1", "balanced accuracy", f"recall of {RAREST}",
              "macro F1 change (95%)", "balanced accuracy change (95%)"]
    rows = []
    for (weight, sampler), work in runs.items():
        metrics = read(work, f"{folder}/metrics.json")
        rare = next(r for r in per_class(work, folder) if r["class"] == RAREST)
        paired = compare_paired(reference, loads((work / folder / OUTCOMES_FILE).read_text()))
        rows.append([
            weight, sampler, f"{metrics['accuracy']:.4f}", f"{metrics['f1_macro']:.4f}", f"{metrics['balanced_accuracy']:.4f}",
            f"{float(rare['recall']):.3f} ({rare['support']} images)",
            change(paired.f1_macro, paired.f1_macro_change), change(paired.recall_macro, paired.recall_macro_change),
        ])
    print_table(header, rows)


def per_class(work: Path, folder: str = "metrics/evaluate") -> list[dict]:
    with open(work / folder / "per_class.csv", newline="") as f:
        return list(csv.DictReader(f))


def change(values: tuple[float, float], interval) -> str:
    return f"{values[1] - values[0]:+.4f} ({interval.low:+.4f} to {interval.high:+.4f})"


def print_table(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="digits,photos,digit-tags", help=f"comma-separated, of: {', '.join(SETS)}; empty for none")
    parser.add_argument("--imbalance", action="store_true", help="the four weight x sampler runs on builtin:digits-imbalanced")
    parser.add_argument("--seed", type=int, default=42, help="--imbalance: the runs' seed (split and training)")
    parser.add_argument("--workdir", type=Path, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    sets = [s for s in args.sets.split(",") if s]
    unknown = [s for s in sets if s not in SETS]
    if unknown:
        raise SystemExit(f"--sets: unknown {', '.join(unknown)}; choose from {', '.join(SETS)}")
    with tempfile.TemporaryDirectory(prefix="imgpipe-calibration-") as tmp:
        root = args.workdir or Path(tmp)
        if sets:
            calibration(sets, root)
        if args.imbalance:
            imbalance(root, args.seed)


if __name__ == "__main__":
    main()
