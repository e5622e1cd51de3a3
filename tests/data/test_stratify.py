"""Multi-label iterative stratification over groups."""

from __future__ import annotations

import time

import numpy as np
import pytest

from imgpipe.data.stratify import SPLITS, aggregate_groups, iterative_split

DEFAULT = (0.8, 0.1, 0.1)


def imbalanced_set(seed: int, n: int = 2000, k: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) targets with label frequencies from 50% down to 0.5%, in groups of 1 to 3 items."""
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, k)) < np.geomspace(0.5, 0.005, k)).astype(np.uint8)  # (n, k)
    groups = np.repeat(np.arange(n), rng.integers(1, 4, size=n))[:n].astype(str)  # (n,)
    return targets, groups


def random_group_split(groups: np.ndarray, fractions: tuple[float, ...], seed: int) -> np.ndarray:
    """The baseline: shuffle the groups and cut the item sequence at the fractions."""
    _, item_group = np.unique(groups, return_inverse=True)
    order = np.random.default_rng(seed).permutation(item_group.max() + 1)
    sizes = np.bincount(item_group)[order]  # (G,) in shuffled order
    before = (np.cumsum(sizes) - sizes) / len(groups)  # share of items ahead of each group
    split_of = np.empty(len(order), dtype=int)
    split_of[order] = np.searchsorted(np.cumsum(fractions)[:-1], before, side="right")
    return np.array(SPLITS)[split_of[item_group]]


def split_of_groups(out: np.ndarray, groups: np.ndarray) -> dict[str, str]:
    """group -> its single split (asserts there is only one)."""
    seen: dict[str, set[str]] = {}
    for group, split in zip(groups, out, strict=True):
        seen.setdefault(group, set()).add(split)
    assert all(len(s) == 1 for s in seen.values()), {g: s for g, s in seen.items() if len(s) > 1}
    return {g: s.pop() for g, s in seen.items()}


def label_deviation(targets: np.ndarray, out: np.ndarray, fractions: tuple[float, ...], keep: np.ndarray) -> np.ndarray:
    """|share of each kept label in val/test - its fraction|, (2, K_kept)."""
    totals = targets.sum(axis=0)[keep]  # (K_kept,)
    shares = [targets[out == split].sum(axis=0)[keep] / totals for split in ("val", "test")]
    return np.abs(np.stack(shares) - np.array(fractions[1:])[:, None])


def test_groups_never_straddle_splits():
    targets, groups = imbalanced_set(seed=0)
    out = iterative_split(targets, groups, DEFAULT, seed=0)
    assert out.shape == (len(targets),)
    assert set(out) == set(SPLITS)
    split_of_groups(out, groups)


def test_zero_fraction_split_stays_empty():
    targets, groups = imbalanced_set(seed=1)
    out = iterative_split(targets, groups, (0.9, 0.0, 0.1), seed=1)
    assert "val" not in set(out)
    assert set(iterative_split(targets, groups, (1.0, 0.0, 0.0), seed=1)) == {"train"}


def test_deterministic_per_seed_and_differs_across_seeds():
    targets, groups = imbalanced_set(seed=2)
    first = iterative_split(targets, groups, DEFAULT, seed=5)
    assert (first == iterative_split(targets, groups, DEFAULT, seed=5)).all()
    assert (first != iterative_split(targets, groups, DEFAULT, seed=6)).any()


def test_split_sizes_follow_fractions():
    rng = np.random.default_rng(0)
    targets = (rng.random((1000, 5)) < 0.3).astype(np.uint8)
    groups = [f"img{i}" for i in range(1000)]
    out = iterative_split(targets, groups, DEFAULT, seed=0)
    for split, fraction in zip(SPLITS, DEFAULT, strict=True):
        assert abs((out == split).mean() - fraction) <= 0.02, split


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_proportions_beat_a_random_group_split(seed):
    targets, groups = imbalanced_set(seed)
    keep = targets.sum(axis=0) >= 10  # (K,)
    stratified = label_deviation(targets, iterative_split(targets, groups, DEFAULT, seed), DEFAULT, keep)
    baseline = label_deviation(targets, random_group_split(groups, DEFAULT, seed), DEFAULT, keep)
    # Within two occurrences of the ideal count, or 2% of the label's share for frequent labels.
    tolerance = np.maximum(2 / targets.sum(axis=0)[keep], 0.02)  # (K_kept,)
    assert (stratified <= tolerance).all(), stratified.round(3)
    assert stratified.mean() < baseline.mean() / 2, (stratified.mean(), baseline.mean())


@pytest.mark.parametrize("seed", range(5))
def test_rare_label_reaches_every_split(seed):
    """A label with 3 occurrences at 0.8/0.1/0.1 wants 2.4/0.3/0.3; it gets one per split, not 3 in train."""
    rng = np.random.default_rng(seed)
    targets = np.zeros((200, 2), dtype=np.uint8)
    targets[:, 0] = rng.random(200) < 0.5
    rare = rng.choice(200, size=3, replace=False)
    targets[rare, 1] = 1
    out = iterative_split(targets, [f"g{i}" for i in range(200)], DEFAULT, seed)
    assert sorted(out[rare]) == sorted(SPLITS)


@pytest.mark.parametrize(("occurrences", "expected"), [(1, {"train": 1}), (2, {"train": 1, "eval": 1})])
def test_rarer_labels_favour_train_then_one_eval_split(occurrences, expected):
    targets = np.zeros((100, 1), dtype=np.uint8)
    targets[:occurrences, 0] = 1
    out = iterative_split(targets, [f"g{i}" for i in range(100)], DEFAULT, seed=0)[:occurrences]
    got = {"train": int((out == "train").sum()), "eval": int((out != "train").sum())}
    assert {k: v for k, v in got.items() if v} == expected


def test_label_counts_are_aggregated_per_group():
    targets = np.array([[1, 1]] + [[1, 0]] * 4 + [[1, 0]] * 5)  # (10, 2): "big" has 5 items with A, one with B
    groups = ["big"] * 5 + [f"one{i}" for i in range(5)]
    item_group, sizes, counts = aggregate_groups(targets, groups)
    big = item_group[0]
    assert sizes[big] == 5 and counts[big].tolist() == [5, 1]
    for seed in range(5):
        # B is rarest, so "big" goes first and fills its split's quota of A (5 of 10) on its own.
        out = iterative_split(targets, groups, (0.5, 0.5, 0.0), seed)
        assert (out[5:] != out[0]).all(), out


def test_items_without_labels_are_distributed():
    out = iterative_split(np.zeros((300, 4), dtype=np.uint8), [f"g{i}" for i in range(300)], DEFAULT, seed=0)
    assert [(out == split).sum() for split in SPLITS] == [240, 30, 30]
    targets, groups = imbalanced_set(seed=3)
    targets[::2] = 0
    out = iterative_split(targets, groups, DEFAULT, seed=3)
    unlabelled = out[targets.sum(axis=1) == 0]
    assert set(unlabelled) == set(SPLITS)


@pytest.mark.parametrize("labelled", [True, False])
@pytest.mark.parametrize("seed", range(5))
def test_tiny_input_gives_each_split_one_group(labelled, seed):
    targets = np.full((5, 1), int(labelled))
    out = iterative_split(targets, ["a", "a", "b", "c", "c"], DEFAULT, seed)
    assert sorted(split_of_groups(out, np.array(["a", "a", "b", "c", "c"])).values()) == sorted(SPLITS)


def test_fewer_groups_than_splits_and_empty_input():
    out = iterative_split(np.ones((2, 1)), ["a", "b"], DEFAULT, seed=0)
    assert len(set(out)) == 2
    assert iterative_split(np.zeros((0, 3)), [], DEFAULT, seed=0).shape == (0,)


@pytest.mark.parametrize(
    ("targets", "groups", "fractions"),
    [
        (np.ones(4), list("abcd"), DEFAULT),  # targets not (N, K)
        (np.ones((4, 2)), list("abc"), DEFAULT),  # one group short
        (np.ones((4, 2)), [list("ab"), list("cd")], DEFAULT),  # groups not (N,)
        (np.full((4, 2), 2), list("abcd"), DEFAULT),  # not 0/1
        (np.ones((4, 2)), list("abcd"), (0.8, 0.2)),  # two fractions
        (np.ones((4, 2)), list("abcd"), (0.8, 0.1, 0.2)),  # sum 1.1
        (np.ones((4, 2)), list("abcd"), (1.2, -0.1, -0.1)),  # negative
    ],
)
def test_invalid_input_raises(targets, groups, fractions):
    with pytest.raises(ValueError):
        iterative_split(targets, groups, fractions, seed=0)


@pytest.mark.slow
def test_fast_on_a_large_set():
    rng = np.random.default_rng(0)
    targets = (rng.random((50_000, 100)) < np.geomspace(0.5, 0.001, 100)).astype(np.uint8)
    start = time.perf_counter()
    out = iterative_split(targets, [f"g{i}" for i in range(50_000)], DEFAULT, seed=0)
    assert time.perf_counter() - start < 10  # about 0.3 s on a laptop-class CPU
    assert abs((out == "val").mean() - 0.1) < 0.01
