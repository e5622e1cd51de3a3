"""The cv_summary stage: the folds' metrics as mean, spread and range; a table by fold for
`dvc plots`; and, from the out-of-fold probabilities, the training images whose labels look
wrong (`imgpipe.task.label_issues`), listed and drawn. numpy, pandas, cleanlab and Pillow; no torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from imgpipe.core.atomic import atomic_dir
from imgpipe.core.errors import UserError
from imgpipe.core.layout import FOLD_METRICS, FOLD_SCORES, FOLDS_TABLE, LABEL, LABEL_ISSUES, METRICS_FILE
from imgpipe.core.params import CvParams
from imgpipe.data.annotations import read_annotations
from imgpipe.data.folds import assign_folds, folds_digest
from imgpipe.data.labelsets import positive_labels
from imgpipe.data.pictures import draw_tile
from imgpipe.data.readers import open_image
from imgpipe.data.shards import members
from imgpipe.task.kinds import KINDS

MAX_SUSPECTS = 12  # tiles of the most suspect training images, like the evaluate stage's mistakes
PROB = "prob:"  # the scores' probability columns (cv_fold)


def suspect_name(rank: int) -> str:
    """The file name of the `rank`-th most suspect image's tile (1 = the most suspect)."""
    return f"suspect_{rank:02d}.png"


def summarize(cv: CvParams, seed: int, annotations: Path, images_root: Path, folds_dir: Path, out_dir: Path) -> dict:
    """Read every fold's results; write metrics.json, folds.csv, label_issues.tsv and
    plots/images/suspect_<rank>.png under `out_dir`. Returns metrics.json's content."""
    if cv.k == 0:
        raise UserError("cv.summary: cv.folds is []; there are no folds to summarise")
    table = read_annotations(annotations)
    digest = folds_digest(table, assign_folds(table, cv.k, seed))
    results = [read_fold(Path(folds_dir) / str(fold), fold, cv.k, digest) for fold in range(cv.k)]
    per_fold = pd.DataFrame([{"fold": r["fold"], **flat_scores(r["metrics"])} for r in results])
    scores = pd.concat([r["scores"] for r in results], ignore_index=True)
    kind = KINDS[results[0]["task"]].from_fields([c.removeprefix(PROB) for c in scores.columns if c.startswith(PROB)])
    rows = table.drop_duplicates("path").set_index("path").loc[scores["path"]].reset_index()
    issues = issue_table(kind, rows, scores)
    summary = {
        "folds": cv.k, "digest": digest, "images": len(scores), "label_issues": len(issues),
        "metrics": spread(per_fold.drop(columns="fold")),
    }
    with atomic_dir(out_dir) as tmp:
        (tmp / METRICS_FILE).write_text(json.dumps(summary, indent=2))
        per_fold.to_csv(tmp / FOLDS_TABLE, index=False)
        issues.to_csv(tmp / LABEL_ISSUES, sep="\t", index=False)
        pictures = tmp / "plots" / "images"
        pictures.mkdir(parents=True)
        for name, tile in suspect_tiles(issues, rows, images_root).items():
            tile.save(pictures / name)
    return summary


def read_fold(folder: Path, fold: int, k: int, digest: str) -> dict:
    """A fold's metrics.json with its scores (a DataFrame under `scores`), checked to belong to this run."""
    path = folder / FOLD_METRICS
    if not path.is_file() or not (folder / FOLD_SCORES).is_file():
        raise UserError(f"{folder}: fold {fold}'s results not found; run `dvc repro` (the cv_fold@{fold} stage)")
    found = json.loads(path.read_text())
    if found.get("folds") != k or found.get("digest") != digest or found.get("fold") != fold:
        raise UserError(f"{folder}: fold {fold} was trained for other folds or data (cv.folds, seed or the split changed); "
                        f"rerun it with `dvc repro cv_fold@{fold}`")
    found["scores"] = pd.read_csv(folder / FOLD_SCORES, dtype={"path": str, "md5": str, "decision": str}, keep_default_na=False)
    return found


def flat_scores(metrics: dict, prefix: str = "") -> dict[str, float]:
    """The fold's numeric metrics, nested ones as `calibration.ece`."""
    flat: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, dict):
            flat |= flat_scores(value, f"{prefix}{name}.")
        elif isinstance(value, float):
            flat[f"{prefix}{name}"] = value
    return flat


def spread(per_fold: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per metric: its mean over the folds, sample standard deviation (ddof 1), min and max."""
    return {
        name: {"mean": float(values.mean()), "std": float(values.std(ddof=1)),
               "min": float(values.min()), "max": float(values.max())}
        for name, values in per_fold.items()
    }


def issue_table(kind, rows: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """The flagged images, most suspect first: path, given label(s), the held-out model's
    decision as the suggestion, self-confidence, fold."""
    probs = scores[[c for c in scores.columns if c.startswith(PROB)]].to_numpy(dtype=np.float64)
    found = kind.label_issues(kind.given(rows), probs)
    flagged = found.ranked
    return pd.DataFrame({
        "path": scores["path"].to_numpy()[flagged],
        "given": [given_text(rows.iloc[i]) for i in flagged],
        "suggested": scores["decision"].to_numpy()[flagged],
        "self_confidence": np.round(found.quality[flagged], 6),
        "fold": scores["fold"].to_numpy()[flagged],
    })


def given_text(row: pd.Series) -> str:
    """A row's label, or its labels joined by a space."""
    return row[LABEL] if LABEL in row.index else " ".join(positive_labels(row.to_dict()))


def suspect_tiles(issues: pd.DataFrame, rows: pd.DataFrame, images_root: Path) -> dict:
    """File name -> tile of each of the MAX_SUSPECTS most suspect images, as stored (not as the model saw it)."""
    top = issues.head(MAX_SUSPECTS)
    where = members(rows.set_index("path").loc[top["path"]].reset_index(), images_root)
    return {
        suspect_name(rank): draw_tile(open_image(member), [path, f"labelled {given}, looks {suggested or 'none'}",
                                                            f"p(labelled) {confidence:.3f}, fold {fold}"], right=False)
        for rank, (member, path, given, suggested, confidence, fold)
        in enumerate(zip(where, top["path"], top["given"], top["suggested"], top["self_confidence"], top["fold"], strict=True), 1)
    }
