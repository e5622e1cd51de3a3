"""The split stage: stratified, grouped by source, originals only in val/test by default."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest
from support.datasets import write_shapes_dataset

from imgpipe.core.errors import UserError
from imgpipe.core.params import AugmentParams, SplitParams
from imgpipe.data.augment import augment_dataset
from imgpipe.data.shards import members
from imgpipe.data.split import SPLITS, allocate, class_counts, split_dataset, write_split

TRANSFORMS = ("original", "rotate(-10)", "rotate(10)", "shear")


def synthetic_manifest(per_class: dict[str, int]) -> pd.DataFrame:
    """A manifest like the augment stage's: an original and three copies per source."""
    rows = []
    for label, n in per_class.items():
        for i in range(n):
            source = f"{label}/{label}_{i:03d}.png"
            for t in TRANSFORMS:
                path = source if t == "original" else f"{label}/{label}_{i:03d}__{t}.png"
                rows.append((path, label, source, t))
    return pd.DataFrame(rows, columns=["path", "label", "source", "transform"])


DEFAULT = SplitParams(train=0.8, val=0.1, test=0.1)
BALANCED = {"a": 40, "b": 40, "c": 40}


def split_of_sources(annotations: pd.DataFrame) -> pd.Series:
    """source -> its single split (asserts there is only one)."""
    per_source = annotations.groupby("source")["split"].unique()
    assert (per_source.map(len) == 1).all(), per_source[per_source.map(len) > 1]
    return per_source.map(lambda s: s[0])


def test_columns_and_rows(tmp_path):
    manifest = synthetic_manifest(BALANCED)
    out = split_dataset(manifest, DEFAULT, seed=0)
    assert list(out.columns) == ["path", "label", "source", "transform", "split"]
    assert set(out["split"]) == set(SPLITS)
    assert list(out.index) == list(range(len(out)))
    # train keeps all four rows per source, val/test only the original
    splits = split_of_sources(out)
    n_train = int((splits == "train").sum())
    assert len(out) == 4 * n_train + (len(splits) - n_train)


def test_fractions_are_respected_per_class():
    out = split_dataset(synthetic_manifest(BALANCED), DEFAULT, seed=0)
    splits = split_of_sources(out)
    labels = splits.index.str.split("/").str[0]
    counts = pd.crosstab(labels, splits)
    for label in BALANCED:
        assert counts.loc[label].to_dict() == {"test": 4, "train": 32, "val": 4}


@pytest.mark.parametrize(
    ("fractions", "n", "expected"),
    [
        ((0.8, 0.1, 0.1), 100, (80, 10, 10)),
        ((0.7, 0.2, 0.1), 10, (7, 2, 1)),
        ((0.6, 0.2, 0.2), 7, (4, 2, 1)),  # remainder by largest fractional part (stable)
        ((1.0, 0.0, 0.0), 5, (5, 0, 0)),
        ((0.8, 0.1, 0.1), 3, (1, 1, 1)),  # every split gets one when the class has enough
        ((0.8, 0.1, 0.1), 2, (1, 1, 0)),
        ((0.8, 0.1, 0.1), 1, (1, 0, 0)),
        ((0.5, 0.5, 0.0), 9, (5, 4, 0)),
    ],
)
def test_allocate_counts(fractions, n, expected):
    names = allocate(n, fractions)
    assert len(names) == n
    assert tuple(names.count(s) for s in SPLITS) == expected


def test_fractions_approximately_respected_on_uneven_classes():
    per_class = {"big": 97, "mid": 33, "small": 11}
    params = SplitParams(train=0.6, val=0.25, test=0.15)
    out = split_dataset(synthetic_manifest(per_class), params, seed=3)
    splits = split_of_sources(out)
    labels = splits.index.str.split("/").str[0]
    counts = pd.crosstab(labels, splits)
    for label, n in per_class.items():
        for split, fraction in zip(SPLITS, (0.6, 0.25, 0.15), strict=True):
            assert abs(counts.loc[label, split] - fraction * n) <= 1, (label, split)
        assert counts.loc[label].sum() == n


def test_every_class_in_every_split_when_enough_images():
    per_class = {"a": 3, "b": 5, "c": 12, "d": 4}
    out = split_dataset(synthetic_manifest(per_class), DEFAULT, seed=11)
    table = class_counts(out)
    assert list(table.columns) == list(SPLITS)
    assert sorted(table.index) == sorted(per_class)
    assert (table > 0).all().all(), table


def test_all_rows_of_a_source_share_one_split():
    manifest = synthetic_manifest(BALANCED)
    out = split_dataset(manifest, SplitParams(0.6, 0.2, 0.2, eval_augmented=True), seed=5)
    assert len(out) == len(manifest)  # nothing dropped with eval_augmented
    splits = split_of_sources(out)
    assert set(splits) == set(SPLITS)


def test_no_copy_of_a_val_or_test_source_in_train():
    for eval_augmented in (False, True):
        out = split_dataset(synthetic_manifest(BALANCED), SplitParams(0.6, 0.2, 0.2, eval_augmented), seed=1)
        held_out = set(out.loc[out["split"] != "train", "source"])
        train_sources = set(out.loc[out["split"] == "train", "source"])
        assert held_out
        assert not held_out & train_sources


def test_val_and_test_have_only_originals_by_default():
    out = split_dataset(synthetic_manifest(BALANCED), DEFAULT, seed=0)
    held_out = out[out["split"] != "train"]
    assert set(held_out["transform"]) == {"original"}
    assert (held_out["path"] == held_out["source"]).all()
    train = out[out["split"] == "train"]
    assert sorted(train["transform"].value_counts().items()) == sorted((t, 96) for t in TRANSFORMS)


def test_eval_augmented_keeps_copies_in_val_and_test():
    out = split_dataset(synthetic_manifest(BALANCED), SplitParams(0.8, 0.1, 0.1, eval_augmented=True), seed=0)
    for split in ("val", "test"):
        part = out[out["split"] == split]
        assert sorted(part["transform"].value_counts().items()) == sorted((t, 12) for t in TRANSFORMS)


def test_deterministic_for_the_seed():
    manifest = synthetic_manifest(BALANCED)
    a = split_dataset(manifest, DEFAULT, seed=42)
    b = split_dataset(manifest, DEFAULT, seed=42)
    pd.testing.assert_frame_equal(a, b)
    c = split_dataset(manifest, DEFAULT, seed=43)
    assert not split_of_sources(a).equals(split_of_sources(c).loc[split_of_sources(a).index])


def test_manifest_is_not_modified():
    manifest = synthetic_manifest(BALANCED)
    before = manifest.copy()
    split_dataset(manifest, DEFAULT, seed=0)
    pd.testing.assert_frame_equal(manifest, before)


def test_write_split_on_a_real_augmented_folder(tmp_path):
    raw = write_shapes_dataset(tmp_path / "raw", per_class=10, size=16)
    augmented = tmp_path / "augmented"
    augment_dataset(raw, augmented, AugmentParams(rotations=(10.0,), invert=False, shear=10.0), seed=0)
    annotations_out = tmp_path / "data" / "annotations.csv"
    metrics = tmp_path / "metrics" / "split"

    out = write_split(augmented, annotations_out, metrics, DEFAULT, seed=0)

    on_disk = pd.read_csv(annotations_out, dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(on_disk, out.astype(str))
    assert all(hashlib.md5(m.read_bytes()).hexdigest() == md5  # each image is where the row says
               for m, md5 in zip(members(on_disk, augmented), on_disk["md5"], strict=True))
    summary = json.loads((metrics / "split.json").read_text())
    # 10 sources per class -> 8/1/1; train keeps 3 files per source (original, rotation, shear)
    assert summary == {
        "images": {"train": 3 * 8 * 3, "val": 3, "test": 3},
        "classes": 3,
        "split_on_disk_kept": False,
        "duplicate_sets_across_splits": 0,
    }
    counts = pd.read_csv(metrics / "class_counts.csv")
    assert list(counts.columns) == ["label", "split", "count"]
    assert len(counts) == 9
    assert counts["count"].sum() == len(out)


def test_write_split_without_manifest_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="manifest not found; run the augment stage first"):
        write_split(tmp_path, tmp_path / "a.csv", tmp_path / "m", DEFAULT, seed=0)
    assert not (tmp_path / "a.csv").exists()
    assert not (tmp_path / "m").exists()


def shipped_manifest(on_disk: dict[str, int], classes=("a", "b"), copies: dict[str, str] | None = None) -> pd.DataFrame:
    """Originals of a dataset shipped split on disk: `on_disk` = images per class in each split."""
    rows = []
    for label in classes:
        for split, n in on_disk.items():
            for i in range(n):
                source = f"{label}/{split}/{i}.png"
                group = (copies or {}).get(source, source)
                rows.append({"path": f"original/{source}", "label": label, "group": group,
                             "split_on_disk": split, "source": source, "transform": "original"})  # fmt: skip
    return pd.DataFrame(rows)


def test_respect_existing_keeps_the_shipped_split():
    manifest = shipped_manifest({"train": 6, "val": 2, "test": 3})
    params = SplitParams(train=0.8, val=0.1, test=0.1, respect_existing=True)
    out = split_dataset(manifest, params, seed=0)
    assert (out["split"] == out["split_on_disk"]).all()


def test_respect_existing_draws_a_missing_val_split_from_train_per_class():
    manifest = shipped_manifest({"train": 9, "test": 3})
    params = SplitParams(train=0.6, val=0.3, test=0.1, respect_existing=True)
    out = split_dataset(manifest, params, seed=0)
    assert (out.loc[out["split_on_disk"] == "test", "split"] == "test").all()
    shipped_train = out[out["split_on_disk"] == "train"]
    # val takes 0.3 / (0.6 + 0.3) of each class's shipped train images: 3 of 9.
    assert shipped_train.groupby("label")["split"].value_counts().unstack().to_dict("index") == {
        "a": {"train": 6, "val": 3}, "b": {"train": 6, "val": 3},
    }


def test_respect_existing_on_data_not_shipped_split_is_refused():
    manifest = shipped_manifest({"train": 4}).assign(split_on_disk="")
    with pytest.raises(UserError, match="split.respect_existing is true but data.source is not split on disk"):
        split_dataset(manifest, SplitParams(respect_existing=True), seed=0)


def test_byte_identical_copies_share_a_split_when_re_splitting():
    copies = {f"a/train/{i}.png": "a/train/0.png" for i in range(1, 5)}  # five copies of one image
    manifest = shipped_manifest({"train": 20}, classes=("a",), copies=copies)
    for seed in range(5):
        out = split_dataset(manifest, SplitParams(train=0.5, val=0.25, test=0.25), seed=seed)
        assert out[out["group"] == "a/train/0.png"]["split"].nunique() == 1
