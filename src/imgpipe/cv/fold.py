"""One cv_fold stage: train on the other folds with the run's params, score the held-out fold.

The fold's training is the train stage's own (`imgpipe.train.stage.train`): the same model,
params, memory check, progress, resume and torchrun launch; its validation split is the held-out
fold, so the best epoch and the temperature are chosen on it, as the train stage chooses them on
val. The held-out images' calibrated probabilities are the out-of-fold scores the summary reads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from imgpipe.core.atomic import scratch_dir, staged_outputs
from imgpipe.core.errors import UserError
from imgpipe.core.layout import CV_WORK, FOLD_METRICS, FOLD_SCORES, FOLD_TRAINING
from imgpipe.core.params import Params
from imgpipe.data.annotations import read_annotations
from imgpipe.data.folds import assign_folds, fold_table, folds_digest
from imgpipe.feed.device import resolve_device
from imgpipe.feed.inference import predict_logits
from imgpipe.feed.tensors import load_split
from imgpipe.models.checkpoint import load_checkpoint
from imgpipe.task.tasks import Task, task_from_spec
from imgpipe.train.distributed import SINGLE, Ranks
from imgpipe.train.stage import train

FOLD_ANNOTATIONS = "annotations.csv"  # in the work folder: the table the fold trains with
FOLD_MODEL = "model.pt"  # in the work folder: the fold's model, scored then removed


def work_dir(fold: int, root: Path = CV_WORK) -> Path:
    """Where fold `fold` trains: its table, model and resume state (kept across an interruption)."""
    return Path(root) / str(fold)


def prepare(params: Params, annotations: Path, fold: int, work: Path) -> tuple[Path, str]:
    """Write the table fold `fold` trains with into `work`; returns its path and the folds' digest.

    Every rank of a torchrun launch calls this: the bytes are the same each time, replaced atomically.
    """
    k = params.cv.k
    if k == 0:
        raise UserError("cv.folds is []: there are no folds to train; set cv.folds, e.g. [0, 1, 2, 3, 4], and cv.summary [5]")
    if fold not in range(k):
        raise UserError(f"--fold {fold}: cv.folds has folds 0 to {k - 1}")
    table = read_annotations(annotations)
    folds = assign_folds(table, k, params.seed)
    path = work / FOLD_ANNOTATIONS
    with staged_outputs() as staged:
        fold_table(table, folds, fold).to_csv(staged.file(path), index=False)
    return path, folds_digest(table, folds)


def train_fold(params: Params, table: Path, images_root: Path, work: Path, ranks: Ranks = SINGLE) -> dict | None:
    """The train stage's training on the fold's table; the model and its dvclive log go in `work`."""
    return train(params.model, params.image, params.train, params.seed, table, images_root, work / FOLD_MODEL,
                 work / FOLD_TRAINING, model_args=params.model_args, ranks=ranks)


def score_fold(fold: int, k: int, digest: str, table: Path, images_root: Path, work: Path, out: Path) -> dict:
    """Score the held-out images with the fold's model; write `out` (scores, metrics, training log)
    in one step, then remove `work`."""
    model, spec = load_checkpoint(work / FOLD_MODEL)
    task = task_from_spec(spec)
    rows = read_annotations(table)
    rows = rows[rows["split"] == "val"]
    with scratch_dir(out) as pixels:
        held = load_split(rows, "val", images_root, task, spec.image_size, spec.channels, cache_dir=pixels)
        logits = predict_logits(model.to(resolve_device()), held.images, spec.mean, spec.std)
    y_true, y_pred = held.targets.numpy(), task.decide(logits)
    metrics = {**task.test_scores(y_true, y_pred).metrics,
               "calibration": task.calibration(y_true, logits.numpy()).scores}
    metrics.pop("test_images", None)
    summary = {"fold": fold, "folds": k, "digest": digest, "task": task.name, "images": len(rows), "metrics": metrics}
    with staged_outputs() as staged:
        folder = staged.folder(out)
        scores_table(task, rows, fold, logits).to_csv(folder / FOLD_SCORES, index=False)
        (folder / FOLD_METRICS).write_text(json.dumps(summary, indent=2))
        shutil.copytree(work / FOLD_TRAINING, folder / FOLD_TRAINING)
    shutil.rmtree(work)
    return metrics


def scores_table(task: Task, rows: pd.DataFrame, fold: int, logits) -> pd.DataFrame:
    """Per held-out image: path, md5, fold, the model's decision, one `prob:<class>` per class."""
    probs = task.probabilities(logits).numpy()
    decided = task.one_hot(task.decide(logits))
    table = pd.DataFrame({
        "path": rows["path"].to_numpy(), "md5": rows["md5"].to_numpy(), "fold": fold,
        "decision": [" ".join(task.classes[i] for i in np.flatnonzero(row)) for row in decided],
    })
    columns = pd.DataFrame(np.round(probs, 6), columns=[f"prob:{name}" for name in task.classes])
    return pd.concat([table, columns], axis=1)
