"""The split stage: write the annotation file with a train/val/test split per image.

Splits are drawn over *source* images, stratified by class, so every augmented copy
follows its source: no variant of a validation or test image can leak into train. Multi-label
data is split by iterative stratification over label sets, grouped by the `group` column.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from imgpipe.core.atomic import staged_outputs
from imgpipe.core.errors import UserError
from imgpipe.core.layout import LABEL, MANIFEST, SPLIT_ON_DISK
from imgpipe.core.params import SplitParams
from imgpipe.data.labelsets import is_multilabel, label_matrix, label_sets
from imgpipe.data.stratify import SPLITS, iterative_split


def split_dataset(manifest: pd.DataFrame, params: SplitParams, seed: int) -> pd.DataFrame:
    """Add a `split` column; val/test keep only originals unless `params.eval_augmented`."""
    if params.respect_existing:
        out = manifest.assign(split=manifest["source"].map(split_on_disk(manifest, params, seed)))
    elif is_multilabel(manifest):
        out = split_multilabel(manifest, params, seed)
    else:
        out = manifest.assign(split=manifest["source"].map(split_by_class(manifest, params, seed)))
    if not params.eval_augmented:
        out = out[(out["split"] == "train") | (out["transform"] == "original")]
    return out.reset_index(drop=True)


def split_by_class(
    manifest: pd.DataFrame, params: SplitParams, seed: int, fractions: tuple[float, float, float] | None = None
) -> dict[str, str]:
    """Source image -> split, drawn per class so each class is split in proportion.

    Sources sharing a `group` (byte-identical copies) share a split; a group counts for the
    class of its first source.
    """
    key = "group" if "group" in manifest.columns else "source"
    sources = manifest.drop_duplicates("source")
    groups = sources.drop_duplicates(key)[[key, LABEL]]
    fractions = fractions or (params.train, params.val, params.test)
    by_group = {}
    rng = np.random.default_rng(seed)
    for _, members in groups.groupby(LABEL, sort=True):
        names = members[key].to_numpy()
        names = names[rng.permutation(len(names))]
        by_group.update(zip(names, allocate(len(names), fractions), strict=True))
    return dict(zip(sources["source"], sources[key].map(by_group), strict=True))


def split_on_disk(manifest: pd.DataFrame, params: SplitParams, seed: int) -> dict[str, str]:
    """Source image -> the split of the folder it shipped in (`split.respect_existing`).

    A split the dataset lacks but the params ask for (no `val/` folder, say) is drawn from the
    shipped train images, per class, in proportion to the fractions.
    """
    if SPLIT_ON_DISK not in manifest.columns or (manifest[SPLIT_ON_DISK] == "").any():
        raise UserError(
            "split.respect_existing is true but data.source is not split on disk "
            "(class folders inside train/, val/ or test/ folders); set it to false"
        )
    sources = manifest.drop_duplicates("source")
    assignment = dict(zip(sources["source"], sources[SPLIT_ON_DISK], strict=True))
    shipped = set(assignment.values())
    missing = [s for s in SPLITS if s not in shipped and getattr(params, s) > 0]
    if missing and "train" in shipped:
        wanted = [getattr(params, s) if s == "train" or s in missing else 0.0 for s in SPLITS]
        fractions = tuple(f / sum(wanted) for f in wanted)
        train = manifest[manifest["source"].map(assignment) == "train"]
        assignment.update(split_by_class(train, params, seed, fractions))
    return assignment


def duplicates_across_splits(annotations: pd.DataFrame) -> int:
    """Groups of byte-identical images that ended up in more than one split (only possible when
    a split shipped on disk is kept)."""
    if "group" not in annotations.columns:
        return 0
    return int((annotations.groupby("group")["split"].nunique() > 1).sum())


def split_multilabel(manifest: pd.DataFrame, params: SplitParams, seed: int) -> pd.DataFrame:
    """Iterative stratification over label sets, by `group`: all images of one group (every copy
    of a source, every image built from one set of digit instances) share a split."""
    originals = manifest.drop_duplicates("source")
    splits = iterative_split(
        label_matrix(originals), originals["group"].to_numpy(), (params.train, params.val, params.test), seed
    )
    assignment = dict(zip(originals["group"], splits, strict=True))
    return manifest.assign(split=manifest["group"].map(assignment))


def allocate(n: int, fractions: tuple[float, float, float]) -> list[str]:
    """Split names for `n` shuffled items of one class, in proportion to the train/val/test fractions.

    Every split with a non-zero fraction gets at least one item when the class has enough.
    """
    fractions = np.array(fractions)
    counts = np.floor(fractions * n).astype(int)
    # Hand out the remainder by largest fractional part, then make sure no non-empty
    # split is starved while another split has items to spare.
    for i in np.argsort(-(fractions * n - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    for i in np.flatnonzero((fractions > 0) & (counts == 0)):
        donor = int(np.argmax(counts))
        if counts[donor] > 1:
            counts[donor] -= 1
            counts[i] += 1
    return [name for name, c in zip(SPLITS, counts, strict=True) for _ in range(c)]


def class_counts(annotations: pd.DataFrame) -> pd.DataFrame:
    """Images per class (multi-label: per label) and split (rows: classes, columns: splits)."""
    names, ones = label_sets(annotations)
    table = pd.DataFrame(ones, columns=names).groupby(annotations["split"].to_numpy()).sum().T
    return table.rename_axis(index="label", columns="split").reindex(columns=list(SPLITS), fill_value=0)


def classes_without_images(counts: pd.DataFrame, params: SplitParams) -> dict[str, list[str]]:
    """Per val/test split with a non-zero fraction, the classes (multi-label: labels with any
    image) it received no image of: too few images for the fractions. `counts` is `class_counts`."""
    present = counts[counts.sum(axis=1) > 0]
    missing = {s: present.index[present[s] == 0].tolist() for s in SPLITS[1:] if getattr(params, s) > 0}
    return {s: names for s, names in missing.items() if names}


def warn_missing_classes(missing: dict[str, list[str]]) -> None:
    """One terminal line naming the classes some evaluation split has no image of."""
    if not missing:
        return
    parts = [f"no {s} images of {len(names)} class(es) ({_preview(names)})" for s, names in missing.items()]
    print(
        "split: warning: too few images for the split fractions: " + "; ".join(parts)
        + ("; evaluate leaves classes without test images out of its macro averages" if "test" in missing else "")
        + " (metrics/split/split.json lists them)",
        file=sys.stderr,
    )


def _preview(names: list[str], count: int = 10) -> str:
    return ", ".join(names[:count]) + (f" (+{len(names) - count} more)" if len(names) > count else "")


def check_no_split_starved(annotations: pd.DataFrame, params: SplitParams) -> None:
    """A split with a non-zero fraction but no image would only fail later, in train or evaluate."""
    sizes = annotations["split"].value_counts()
    unit = "groups" if "group" in annotations.columns else "source images"
    units = annotations["group" if unit == "groups" else "source"].nunique()
    for split in SPLITS:
        if getattr(params, split) > 0 and sizes.get(split, 0) == 0:
            raise UserError(
                f"split.{split} is {getattr(params, split):g} but no image landed in {split}: only {units} {unit}; "
                "add images (or raise data.limit), or set the fraction to 0"
            )


def read_manifest(folder: Path) -> pd.DataFrame:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise UserError(f"{path}: manifest not found; run the augment stage first")
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def write_split(augmented: Path, annotations_out: Path, metrics_dir: Path, params: SplitParams, seed: int) -> pd.DataFrame:
    """Split the augment stage's manifest; write the annotation file and class counts per split."""
    annotations = split_dataset(read_manifest(augmented), params, seed)
    check_no_split_starved(annotations, params)
    counts = class_counts(annotations)
    long = counts.stack().rename("count").reset_index()  # rows: label, split, count
    sizes = annotations["split"].value_counts()
    straddling = duplicates_across_splits(annotations)
    if straddling:
        print(
            f"split: warning: {straddling} sets of byte-identical images span more than one split as shipped "
            "on disk (see the download report's duplicates); set split.respect_existing: false to keep them together",
            file=sys.stderr,
        )
    missing = classes_without_images(counts, params)
    warn_missing_classes(missing)
    summary = {
        "images": {split: int(sizes.get(split, 0)) for split in SPLITS},
        "classes": len(counts),
        "split_on_disk_kept": params.respect_existing,
        "duplicate_sets_across_splits": straddling,
    }
    if missing:  # only then, so the split report of data with enough images stays as it was
        summary["classes_without_images"] = missing
    with staged_outputs() as staged:
        metrics = staged.folder(metrics_dir)
        long.to_csv(metrics / "class_counts.csv", index=False)
        (metrics / "split.json").write_text(json.dumps(summary, indent=2))
        annotations.to_csv(staged.file(annotations_out), index=False)
    return annotations
