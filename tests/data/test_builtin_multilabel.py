"""The builtin multi-label datasets composed from real sklearn digits: files, labels, groups, pixels."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imgpipe.data.builtin import (
    BUILTIN_MULTILABEL,
    DIGITS,
    GROUPS,
    MAX_LEFT_MARGIN,
    MULTIDIGIT_LABELS,
    digit_tags_layout,
    load_digit_scans,
    multidigit_layout,
    partition_instances,
    plan_images,
    write_digit_tags,
    write_multidigit,
)
from imgpipe.data.labelsets import label_groups, label_matrix, label_names

IMAGES = 120
WRITERS = {"multidigit": (write_multidigit, MULTIDIGIT_LABELS), "digit-tags": (write_digit_tags, DIGITS)}


def write(name: str, out: Path, seed: int = 0) -> pd.DataFrame:
    out.mkdir(parents=True)
    return WRITERS[name][0](out, seed=seed, images=IMAGES)


def pixels(out: Path, path: str) -> np.ndarray:
    return np.asarray(Image.open(out / path))  # (64, 64)


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def digit_classes() -> np.ndarray:
    return load_digit_scans()[1]


# --- both datasets -------------------------------------------------------------------------


def test_registry_names_both_writers():
    assert BUILTIN_MULTILABEL == {"builtin:multidigit": write_multidigit, "builtin:digit-tags": write_digit_tags}


@pytest.mark.parametrize("name", WRITERS)
def test_writes_64px_grayscale_pngs_and_a_table_in_vocabulary_order(tmp_path, name):
    table = write(name, tmp_path / "raw")

    assert list(table.columns[:2]) == ["path", "group"]
    assert label_names(table) == WRITERS[name][1]
    assert len(table) == IMAGES and table["path"].is_unique
    assert sorted(table["path"]) == sorted(tree(tmp_path / "raw"))
    for path in table["path"]:
        assert path.startswith("images/") and path.endswith(".png")
        with Image.open(tmp_path / "raw" / path) as img:
            assert (img.format, img.mode, img.size) == ("PNG", "L", (64, 64))


@pytest.mark.parametrize("name", WRITERS)
def test_same_seed_same_table_and_bytes_other_seed_differs(tmp_path, name):
    first, second, other = write(name, tmp_path / "a"), write(name, tmp_path / "b"), write(name, tmp_path / "c", 1)

    pd.testing.assert_frame_equal(first, second)
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    assert tree(tmp_path / "a") != tree(tmp_path / "c")
    assert not first.equals(other)


@pytest.mark.parametrize("name", WRITERS)
def test_images_spread_evenly_over_sixty_groups(tmp_path, name):
    table = write(name, tmp_path / "raw")

    sizes = table["group"].value_counts()
    assert sorted(sizes.index) == [f"g{g:02d}" for g in range(GROUPS)]
    assert set(sizes) == {IMAGES // GROUPS}


def test_groups_take_turns_so_the_first_images_span_every_group():
    _, group_of, _ = plan_images(np.repeat(np.arange(10), 180), seed=0, images=125, layout=multidigit_layout)
    assert group_of[:60].tolist() == list(range(60))
    assert np.bincount(group_of).tolist() == [3] * 5 + [2] * 55


# --- the leakage rule ------------------------------------------------------------------------


def test_partition_is_disjoint_covers_every_instance_and_every_class_in_every_group(digit_classes):
    members = partition_instances(digit_classes, GROUPS, np.random.default_rng(0))

    everything = np.concatenate(members)
    assert len(members) == GROUPS
    assert np.array_equal(np.sort(everything), np.arange(len(digit_classes)))  # disjoint and complete
    assert max(map(len, members)) - min(map(len, members)) <= 1
    for group in members:
        counts = np.bincount(digit_classes[group], minlength=10)
        assert counts.min() >= 2 and counts.max() <= 4  # ~3 of each digit


def test_partition_depends_on_the_seed(digit_classes):
    first = partition_instances(digit_classes, GROUPS, np.random.default_rng(0))
    again = partition_instances(digit_classes, GROUPS, np.random.default_rng(0))
    other = partition_instances(digit_classes, GROUPS, np.random.default_rng(1))

    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("layout", [multidigit_layout, digit_tags_layout])
def test_each_image_uses_only_its_groups_instances_so_splits_by_group_never_share_one(digit_classes, layout):
    members, group_of, plans = plan_images(digit_classes, seed=3, images=600, layout=layout)

    for group, placements in zip(group_of, plans, strict=True):
        assert {p.instance for p in placements} <= set(members[group].tolist())
    train, test = range(40), range(50, 60)  # whole groups, as the split stage assigns them
    assert not instances_used(group_of, plans, train) & instances_used(group_of, plans, test)


def instances_used(group_of: np.ndarray, plans: list, groups: range) -> set[int]:
    return {p.instance for g, placements in zip(group_of, plans, strict=True) if g in groups for p in placements}


def test_group_column_matches_the_plan(tmp_path, digit_classes):
    table = write("multidigit", tmp_path / "raw", seed=5)
    _, group_of, plans = plan_images(digit_classes, seed=5, images=IMAGES, layout=multidigit_layout)

    assert table["group"].tolist() == [f"g{g:02d}" for g in group_of]
    classes = [[int(digit_classes[p.instance]) for p in placements] for placements in plans]
    assert [row_digits(row) for row in label_matrix(table)] == classes


# --- builtin:multidigit ----------------------------------------------------------------------


def row_digits(row: np.ndarray) -> list[int]:
    """The digits left to right from one (55,) target row; index 10 of a position is `blank`."""
    values = row.reshape(5, 11).argmax(axis=1)
    return [int(v) for v in values if v != 10]


def test_multidigit_has_one_positive_per_position_and_blanks_only_after_the_last_digit(tmp_path):
    table = write("multidigit", tmp_path / "raw")
    targets = label_matrix(table)  # (N, 55)

    assert list(label_groups(label_names(table))) == ["p1", "p2", "p3", "p4", "p5"]
    per_position = targets.reshape(-1, 5, 11)
    assert (per_position.sum(axis=2) == 1).all()
    blank = per_position[:, :, 10].astype(bool)  # (N, 5)
    assert not blank[:, 0].any()  # at least one digit
    assert (np.sort(blank, axis=1) == blank).all()  # once blank, blank to the end
    assert set((~blank).sum(axis=1)) == {1, 2, 3, 4, 5}


def test_multidigit_ink_fits_the_number_of_digits(tmp_path):
    out = tmp_path / "raw"
    table = write("multidigit", out)

    for path, row in zip(table["path"], label_matrix(table), strict=True):
        image = pixels(out, path)
        n = len(row_digits(row))
        columns = np.flatnonzero(image.max(axis=0) > 0)
        assert image.max() > 128
        assert columns[-1] - columns[0] + 1 <= 12 * n + (n - 1)
        assert count_runs(columns) <= n  # touching digits may merge, nothing extra appears
        if n == 1:
            assert columns[-1] - columns[0] + 1 <= 12


def count_runs(columns: np.ndarray) -> int:
    return int(1 + (np.diff(columns) > 1).sum())


def test_multidigit_layout_stays_on_the_canvas_left_to_right(digit_classes):
    members = partition_instances(digit_classes, GROUPS, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    for _ in range(300):
        placements = multidigit_layout(members[0], rng)
        assert 1 <= len(placements) <= 5
        assert len({p.instance for p in placements}) == len(placements)
        for p in placements:
            assert 10 <= p.width <= 12 and 14 <= p.height <= 18
            assert p.y >= 0 and p.y + p.height <= 64 and abs(p.y + p.height / 2 - 32) <= 7
        for left, right in itertools.pairwise(placements):
            assert 0 <= right.x - (left.x + left.width) <= 1
        assert 0 <= placements[0].x <= MAX_LEFT_MARGIN and placements[-1].x + placements[-1].width <= 64


# --- builtin:digit-tags ----------------------------------------------------------------------


def test_digit_tags_has_zero_to_four_positives_and_some_empty_images(tmp_path):
    out = tmp_path / "raw"
    table = write("digit-tags", out)
    positives = label_matrix(table).sum(axis=1)  # (N,)

    assert positives.min() == 0 and positives.max() <= 4
    for path, count in zip(table["path"], positives, strict=True):
        image = pixels(out, path)
        assert image.max() > 128 if count else image.max() == 0


def test_digit_tags_layout_places_square_digits_in_distinct_quadrants(digit_classes):
    members = partition_instances(digit_classes, GROUPS, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    counts = set()
    for _ in range(300):
        placements = digit_tags_layout(members[0], rng)
        counts.add(len(placements))
        quadrants = {(p.x // 32, p.y // 32) for p in placements}
        assert len(quadrants) == len(placements)
        for p in placements:
            assert p.width == p.height and 16 <= p.width <= 24
            assert (p.x + p.width - 1) // 32 == p.x // 32 and (p.y + p.height - 1) // 32 == p.y // 32
    assert counts == {0, 1, 2, 3, 4}
