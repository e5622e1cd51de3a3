"""Byte-identical images share one split without chaining the groups they came from into one."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from imgpipe.core.params import AugmentParams, SplitParams
from imgpipe.data.augment import augment_dataset
from imgpipe.data.ingest import group_duplicates
from imgpipe.data.labelsets import label_matrix
from imgpipe.data.sources import download
from imgpipe.data.split import write_split


def test_a_set_within_one_group_stays_there():
    assert group_duplicates(["g1", "g1", "g2"], [[0, 1]], ["a", "b", "c"]) == ["g1", "g1", "g2"]


def test_a_set_across_groups_moves_whole_and_leaves_the_groups_apart():
    groups = ["g1", "g1", "g2", "g2", "g3", "g3"]
    # A blank image in every group: merging its groups would leave one group for the whole split.
    assert group_duplicates(groups, [[1, 3, 5]], list("abcdef")) == ["g1", "b", "g2", "b", "g3", "b"]


def test_single_images_as_their_own_groups_join_their_first_copy():
    names = ["x.png", "y.png", "z.png"]
    assert group_duplicates(names, [[0, 2]], names) == ["x.png", "y.png", "x.png"]


@pytest.fixture(scope="module")
def digit_tags(tmp_path_factory) -> Path:
    """The builtin digit-tags set (about a fifth of its images blank, so byte-identical), split."""
    root = tmp_path_factory.mktemp("digit-tags")
    download("builtin:digit-tags", root / "raw", limit=300)
    augment_dataset(root / "raw", root / "augmented", AugmentParams(rotations=(), shear=0.0), seed=0)
    write_split(root / "augmented", root / "annotations.csv", root / "split", SplitParams(0.8, 0.1, 0.1), seed=0)
    return root


def test_blank_images_do_not_chain_the_sixty_groups_into_one(digit_tags):
    """The documented digit-tags recipe stopped at split ("only 1 groups") before this."""
    labels = pd.read_csv(digit_tags / "raw/labels.csv", dtype=str, keep_default_na=False)
    blank = label_matrix(labels).sum(axis=1) == 0
    assert blank.sum() > 30  # the set still holds the images that triggered it
    assert labels["group"].nunique() > 60  # 60 instance groups, plus the one of the blank copies
    assert labels.loc[blank, "group"].nunique() == 1  # the blanks stay together
    sizes = json.loads((digit_tags / "split/split.json").read_text())["images"]
    assert min(sizes.values()) > 0, sizes


def test_no_group_and_no_duplicate_straddles_two_splits(digit_tags):
    annotations = pd.read_csv(digit_tags / "annotations.csv", dtype=str, keep_default_na=False)
    assert (annotations.groupby("group")["split"].nunique() == 1).all()
    blank = label_matrix(annotations).sum(axis=1) == 0  # byte-identical: one duplicate set
    assert annotations.loc[blank, "split"].nunique() == 1
