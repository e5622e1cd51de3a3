"""Cross-validation folds (`imgpipe.data.folds`): grouped, stratified, the test split in none,
the same on every call, and a clear error when a class is too small for the folds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from support.project import prepare_folders

from imgpipe.core.errors import UserError
from imgpipe.core.params import CvParams
from imgpipe.data.annotations import read_annotations
from imgpipe.data.folds import OUT_OF_FOLDS, assign_folds, fold_table, folds_digest
from imgpipe.data.labelsets import label_matrix
from imgpipe.data.stratify import iterative_assign, iterative_split


@pytest.fixture
def shapes_table(prepared_shapes) -> pd.DataFrame:
    return read_annotations(prepared_shapes / "data/annotations.csv")


def test_folds_group_copies_stratify_classes_and_leave_test_out(shapes_table):
    folds = assign_folds(shapes_table, 3, seed=0)
    test = (shapes_table["split"] == "test").to_numpy()
    assert (folds[test] == OUT_OF_FOLDS).all() and (folds[~test] >= 0).all()
    per_group = pd.Series(folds[~test]).groupby(shapes_table.loc[~test, "group"].to_numpy()).nunique()
    assert (per_group == 1).all()  # a source and its copies share a fold
    originals = shapes_table[~test & (shapes_table["transform"] == "original").to_numpy()]
    counts = pd.crosstab(originals["label"], folds[originals.index])
    assert (counts.max(axis=1) - counts.min(axis=1) <= 1).all()  # each class spread evenly over the folds
    assert np.array_equal(folds, assign_folds(shapes_table, 3, seed=0))
    assert not np.array_equal(folds, assign_folds(shapes_table, 3, seed=1))


def test_a_folds_table_trains_on_the_others_and_holds_out_its_originals(shapes_table):
    folds = assign_folds(shapes_table, 3, seed=0)
    table = fold_table(shapes_table, folds, 1)
    assert set(table["split"]) == {"train", "val"}
    assert set(table["path"]).isdisjoint(shapes_table.loc[shapes_table["split"] == "test", "path"])
    held = table[table["split"] == "val"]
    assert (held["transform"] == "original").all()
    assert set(held["group"]).isdisjoint(table.loc[table["split"] == "train", "group"])  # no copy of a held-out image trains
    assert len(held) == int(((folds == 1) & (shapes_table["transform"] == "original").to_numpy()).sum())
    assert set(table["path"]) <= set(shapes_table.loc[folds >= 0, "path"])


def test_more_folds_than_a_class_has_groups_is_one_error_naming_the_class(shapes_table):
    smallest = shapes_table[shapes_table["split"] != "test"].drop_duplicates("group")["label"].value_counts()
    with pytest.raises(UserError, match=rf"class '{smallest.idxmin()}' has {smallest.min()} group\(s\)"):
        assign_folds(shapes_table, int(smallest.min()) + 1, seed=0)


def test_the_digest_names_the_assignment(shapes_table):
    folds = assign_folds(shapes_table, 3, seed=0)
    assert folds_digest(shapes_table, folds) == folds_digest(shapes_table, assign_folds(shapes_table, 3, seed=0))
    assert folds_digest(shapes_table, folds) != folds_digest(shapes_table, assign_folds(shapes_table, 3, seed=1))
    assert folds_digest(shapes_table, folds) != folds_digest(shapes_table, assign_folds(shapes_table, 4, seed=0))


def test_multilabel_folds_are_iteratively_stratified_by_group(tmp_path, tags_dir):
    table = read_annotations(prepare_folders(tmp_path / "run", str(tags_dir)) / "annotations.csv")
    folds = assign_folds(table, 2, seed=0)
    pooled = folds >= 0
    assert (pd.Series(folds[pooled]).groupby(table.loc[pooled, "group"].to_numpy()).nunique() == 1).all()
    originals = pooled & (table["transform"] == "original").to_numpy()
    per_fold = np.array([label_matrix(table[originals & (folds == f)]).sum(axis=0) for f in range(2)])  # (2, K)
    assert (per_fold > 0).all()  # every label in both folds
    with pytest.raises(UserError, match=r"label '.+' has \d+ group\(s\)"):
        assign_folds(table, 50, seed=0)


def test_iterative_split_is_iterative_assign_over_three_splits():
    rng = np.random.default_rng(0)
    targets = (rng.random((60, 4)) < 0.3).astype(int)
    groups = [str(i // 2) for i in range(60)]
    names = iterative_split(targets, groups, (0.6, 0.2, 0.2), seed=3)
    assert list(names) == [("train", "val", "test")[i] for i in iterative_assign(targets, groups, (0.6, 0.2, 0.2), seed=3)]
    five = iterative_assign(targets, groups, [0.2] * 5, seed=3)
    assert sorted(set(five.tolist())) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("folds", "summary", "fragment"), [
    ([0], [1], "at least two folds"),
    ([0, 2], [2], "[0, 1, ..., K-1]"),
    ([0, 1, 2], [], "[3] with cv.folds [0, 1, 2]"),
    ([], [3], "[] while cv.folds is []"),
])
def test_cv_params_name_what_to_write(folds, summary, fragment):
    with pytest.raises(UserError, match=r"'cv\.(folds|summary)'") as caught:
        CvParams(tuple(folds), tuple(summary))
    assert fragment in str(caught.value)
    assert CvParams((0, 1, 2), (3,)).k == 3 and CvParams().k == 0
