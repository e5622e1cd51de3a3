"""Compare every registered model on the default digits data under the same training budget.

    .venv/bin/python bench/models.py [--budget 40] [--models cnn,mlp] [--workdir DIR]

Prepares the data once with the pipeline's own download, augment and split stages (params.yaml as
it is; bench/common.py's `prepare`), then trains each model with params.yaml's train settings for a
fixed wall-clock budget and prints parameters, training images per second, and test accuracy and
macro F1 of the final weights, decided and scored by the task as the evaluate stage does
(`decide`, `test_scores`): for multi-label data, accuracy is exact-match accuracy, and the
decision rule is the train stage's (train.threshold, one-of groups, thresholds tuned on val).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import prepare

from imgpipe.core.layout import ANNOTATIONS, AUGMENTED
from imgpipe.core.params import load_params
from imgpipe.data.annotations import read_annotations
from imgpipe.feed.inference import predict_logits
from imgpipe.feed.tensors import load_split
from imgpipe.models.catalog import list_models
from imgpipe.task.tasks import task_of
from imgpipe.train.fit import build_model, make_fit, seed_everything
from imgpipe.train.loop import train_one_epoch
from imgpipe.train.stage import resolved_image


class BudgetSpent(Exception):
    pass


def bench_model(name: str, params, table, images_root: Path, budget: float) -> dict:
    seed_everything(params.seed)
    image, train = resolved_image(params.image, table, images_root), params.train  # `auto` as the train stage resolves it
    task = task_of(table)
    data = {s: load_split(table, s, images_root, task, image.size, image.channels) for s in ("train", "val", "test")}
    task, _ = task.for_training(train, data["train"].targets)  # multi-label: the decision rule validation uses
    model = build_model(name, train, len(task.classes), image.channels, image.size)
    fit = make_fit(name, model, train, image.normalize, data["train"], task)
    generator = torch.Generator().manual_seed(params.seed)

    seen, epochs, start = 0, 0, time.perf_counter()

    def on_batch(loss: torch.Tensor) -> None:
        nonlocal seen
        seen += train.batch_size
        if time.perf_counter() - start > budget:
            raise BudgetSpent

    try:
        while True:
            train_one_epoch(fit, data["train"], train.batch_size, generator, on_batch)
            epochs += 1
    except BudgetSpent:
        pass
    seconds = time.perf_counter() - start

    def logits(split: str) -> torch.Tensor:
        return predict_logits(model, data[split].images, fit.mean, fit.std)

    # As the train and evaluate stages decide: train.threshold `tune` sets multi-label thresholds on val
    task, _ = task.after_training(train, lambda: logits("val"), data["val"].targets)
    scores = task.test_scores(data["test"].targets.numpy(), task.decide(logits("test"))).metrics
    return {
        "model": name,
        "params": sum(p.numel() for p in model.parameters()),
        "img_per_s": seen / seconds,
        "epochs": seen / len(data["train"].targets),
        "accuracy": scores.get("accuracy", scores.get("exact_match_accuracy")),  # multi-label: every label right
        "f1_macro": scores["f1_macro"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=40.0, help="training seconds per model")
    parser.add_argument("--models", default=",".join(list_models()))
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    work = prepare(args.workdir or Path(tempfile.mkdtemp(prefix="imgpipe-bench-models-")), {})
    params = load_params(work / "params.yaml")
    table = read_annotations(work / ANNOTATIONS)
    print(f"data: {params.data.source}, {int((table['split'] == 'train').sum())} train / "
          f"{int((table['split'] == 'test').sum())} test images, {params.image.size} px (auto: resolved per run), "
          f"{params.image.channels} channel(s); budget {args.budget:g} s per model; "
          f"{torch.get_num_threads()} torch threads")
    print(f"{'model':<18} {'params':>11} {'train img/s':>12} {'epochs':>7} {'test acc':>9} {'macro F1':>9}")
    for name in args.models.split(","):
        r = bench_model(name, params, table, work / AUGMENTED, args.budget)
        print(f"{r['model']:<18} {r['params']:>11,} {r['img_per_s']:>12.0f} {r['epochs']:>7.1f} "
              f"{r['accuracy']:>9.4f} {r['f1_macro']:>9.4f}", flush=True)


if __name__ == "__main__":
    main()
