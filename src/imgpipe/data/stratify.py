"""Multi-label iterative stratification over groups (Sechidis, Tsoumakas & Vlahavas 2011).

Whole groups are assigned (all augmented copies of one source image, all images built from one set of
digit instances), so no group straddles two splits. Each group carries its item count and the sum of its
items' targets. The rarest label that is still unassigned is handled first: each of its unassigned groups,
in a seeded random order, goes to the split that still wants most of that label, then the split that wants
most items, then a random one. Groups without labels fill the splits by item count.

Two additions to the paper, both for evaluation splits that would otherwise see nothing:
- a split that has none of a label yet is given the label's last groups when there are no more of them
  left than such starved splits (a label with 3 occurrences at 0.8/0.1/0.1 gets one per split instead of
  three in train; with 2 occurrences, one in train and one in val or test; with 1, train);
- a split with a non-zero fraction that ends with no group takes the smallest group of the split holding
  most groups, when there are at least as many groups as non-zero splits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# split.py imports this module and may take SPLITS from here; importing it from there would be circular.
SPLITS = ("train", "val", "test")
UNASSIGNED = -1


def iterative_split(targets: np.ndarray, groups: Sequence[str], fractions: Sequence[float], seed: int) -> np.ndarray:
    """Split names, (N,), for (N, K) 0/1 targets; `fractions` are train/val/test and sum to 1."""
    if len(fractions) != len(SPLITS):
        raise ValueError(f"fractions must be ({len(SPLITS)},) for {SPLITS}, got {len(fractions)}")
    return np.array(SPLITS)[iterative_assign(targets, groups, fractions, seed)]


def iterative_assign(targets: np.ndarray, groups: Sequence[str], fractions: Sequence[float], seed: int) -> np.ndarray:
    """A bin index per item, (N,), for (N, K) 0/1 targets and S bins of the given `fractions`
    (summing to 1): the splits, or K equal cross-validation folds."""
    targets, fractions_ = _check_inputs(targets, groups, fractions)
    if len(targets) == 0:
        return np.array([], dtype=int)
    rng = np.random.default_rng(seed)
    item_group, sizes, counts = aggregate_groups(targets, groups)
    split_of = _stratify_groups(counts, sizes, fractions_, rng)  # (G,)
    _fill_empty_splits(split_of, sizes, counts, fractions_ > 0)
    return split_of[item_group]


def _check_inputs(
    targets: np.ndarray, groups: Sequence[str], fractions: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Raise ValueError on malformed arguments (a caller's bug); return targets and fractions as arrays."""
    targets = np.asarray(targets)
    if targets.ndim != 2:
        raise ValueError(f"targets must be (N, K), got shape {targets.shape}")
    if np.ndim(groups) != 1 or len(groups) != len(targets):
        raise ValueError(f"groups must be ({len(targets)},), got shape {np.shape(groups)}")
    if not np.isin(targets, (0, 1)).all():
        raise ValueError("targets must hold only 0 and 1")
    fractions_ = np.asarray(fractions, dtype=float)
    if fractions_.ndim != 1 or len(fractions_) < 2:
        raise ValueError(f"fractions must be a list of at least two, got shape {fractions_.shape}")
    if (fractions_ < 0).any() or not np.isclose(fractions_.sum(), 1.0):
        raise ValueError(f"fractions must be non-negative and sum to 1, got {fractions_.tolist()}")
    return targets, fractions_


def aggregate_groups(targets: np.ndarray, groups: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per item its group index (N,); per group its item count (G,) and label counts (G, K)."""
    _, item_group = np.unique(np.asarray(groups), return_inverse=True)  # (N,) indices into sorted names
    item_group = item_group.reshape(-1)  # numpy 2.0 kept the input's shape here
    sizes = np.bincount(item_group)  # (G,)
    order = np.argsort(item_group, kind="stable")  # (N,) items grouped together
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))  # (G,) first item of each group in `order`
    counts = np.add.reduceat(targets[order].astype(np.int64), starts, axis=0)  # (G, K)
    return item_group, sizes, counts


def _stratify_groups(
    counts: np.ndarray, sizes: np.ndarray, fractions: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Split index per group, (G,): labelled groups rarest label first, then the unlabelled ones."""
    open_ = fractions > 0  # (S,) splits that may receive groups
    want_labels = fractions[:, None] * counts.sum(axis=0)  # (S, K) label occurrences still wanted
    want_items = fractions * sizes.sum()  # (S,) items still wanted
    have_labels = np.zeros_like(want_labels)  # (S, K) label occurrences received
    split_of = np.full(len(sizes), UNASSIGNED)  # (G,)
    remaining = counts.sum(axis=0)  # (K,) occurrences in unassigned groups
    while (remaining > 0).any():
        label = _rarest_label(remaining, rng)
        members = np.flatnonzero((split_of == UNASSIGNED) & (counts[:, label] > 0))  # (M,)
        members = members[rng.permutation(len(members))]
        chosen = _place_label(
            counts[members, label], sizes[members], want_labels[:, label], want_items, have_labels[:, label], open_, rng
        )  # (M,)
        split_of[members] = chosen
        # The placement only read this label's column; the other labels are updated once, in bulk.
        received = np.eye(len(fractions))[chosen].T @ counts[members]  # (S, M) @ (M, K) -> (S, K)
        want_labels -= received
        have_labels += received
        remaining -= received.sum(axis=0).astype(remaining.dtype)
    unlabelled = np.flatnonzero(split_of == UNASSIGNED)
    unlabelled = unlabelled[rng.permutation(len(unlabelled))]
    split_of[unlabelled] = _place_by_size(sizes[unlabelled], want_items, open_, rng)
    return split_of


def _rarest_label(remaining: np.ndarray, rng: np.random.Generator) -> int:
    """The label with the fewest unassigned occurrences (remaining is (K,)); ties at random."""
    fewest = remaining[remaining > 0].min()
    return int(rng.choice(np.flatnonzero(remaining == fewest)))


def _place_label(
    occurrences: np.ndarray,
    sizes: np.ndarray,
    want_label: np.ndarray,
    want_items: np.ndarray,
    have_label: np.ndarray,
    open_: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Split index (M,) for M groups carrying one label, in the given order; updates `want_items` in place.

    `occurrences` and `sizes` are (M,); `want_label`, `want_items`, `have_label` and `open_` are (S,).
    """
    ties = rng.random((len(sizes), len(open_))).tolist()  # (M, S)
    wanted, items, have = want_label.tolist(), want_items.tolist(), have_label.tolist()
    splits = [s for s in range(len(open_)) if open_[s]]
    chosen = []
    for i, (n, size) in enumerate(zip(occurrences.tolist(), sizes.tolist(), strict=True)):
        starved = [s for s in splits if have[s] == 0]
        # Only as many groups left as splits without the label: give each of those splits one.
        candidates = starved if starved and len(sizes) - i <= len(starved) else splits
        best = max(candidates, key=lambda s: (wanted[s], items[s], ties[i][s]))
        wanted[best] -= n
        items[best] -= size
        have[best] += n
        chosen.append(best)
    want_items[:] = items
    return np.array(chosen, dtype=int)


def _place_by_size(
    sizes: np.ndarray, want_items: np.ndarray, open_: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Split index (M,) for M groups, (M,) sizes, each to the split wanting most items; updates `want_items`."""
    ties = rng.random((len(sizes), len(open_))).tolist()  # (M, S)
    items = want_items.tolist()
    splits = [s for s in range(len(open_)) if open_[s]]
    chosen = []
    for i, size in enumerate(sizes.tolist()):
        best = max(splits, key=lambda s: (items[s], ties[i][s]))
        items[best] -= size
        chosen.append(best)
    want_items[:] = items
    return np.array(chosen, dtype=int)


def _fill_empty_splits(split_of: np.ndarray, sizes: np.ndarray, counts: np.ndarray, open_: np.ndarray) -> None:
    """Give each empty open split the smallest group of the fullest split, when there are groups enough.

    `split_of` and `sizes` are (G,), `counts` (G, K), `open_` (S,); `split_of` is updated in place.
    """
    if len(split_of) < open_.sum():
        return
    for empty in np.flatnonzero(open_):
        per_split = np.bincount(split_of, minlength=len(open_))  # (S,)
        if per_split[empty] > 0:
            continue
        donor = int(np.argmax(per_split))  # holds >= 2 groups: G >= open splits, one of them is empty
        members = np.flatnonzero(split_of == donor)
        # Smallest first; among equals, the one carrying fewest label occurrences.
        smallest = members[np.lexsort((counts[members].sum(axis=1), sizes[members]))[0]]
        split_of[smallest] = empty
