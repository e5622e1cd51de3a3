"""The evaluate stage's per-image outcome record: compact, keyed to the test set, lossless."""

from __future__ import annotations

import numpy as np
import pytest

from imgpipe.task.outcomes import dumps, loads, record_outcomes

CLASSES = ["cat", "dog", "fox"]


def fake_md5s(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"{v:032x}" for v in rng.integers(0, 2**62, size=n)]


def test_multiclass_record_round_trips_in_canonical_order():
    md5s = fake_md5s(50)
    actual = np.arange(50) % 3
    predicted = (actual + (np.arange(50) % 7 == 0)) % 3
    record = record_outcomes(md5s, CLASSES, actual, predicted, "multiclass")
    back = loads(dumps(record))
    assert back.test_set == record.test_set and back.classes == CLASSES and back.task == "multiclass"
    np.testing.assert_array_equal(back.actual, record.actual)
    np.testing.assert_array_equal(back.predicted, record.predicted)
    # Stored sorted by md5: the same images listed in another order give the same record.
    order = np.random.default_rng(1).permutation(50)
    shuffled = record_outcomes([md5s[i] for i in order], CLASSES, actual[order], predicted[order], "multiclass")
    assert shuffled.test_set == record.test_set
    np.testing.assert_array_equal(shuffled.predicted, record.predicted)
    assert record.correct().sum() == (actual == predicted).sum()


def test_key_names_the_test_images_and_their_truth():
    md5s, actual = fake_md5s(20), np.arange(20) % 3
    key = record_outcomes(md5s, CLASSES, actual, actual, "multiclass").test_set
    assert record_outcomes(md5s, CLASSES, actual, (actual + 1) % 3, "multiclass").test_set == key  # predictions: same set
    relabelled = actual.copy()
    relabelled[0] = (relabelled[0] + 1) % 3
    assert record_outcomes(md5s, CLASSES, relabelled, actual, "multiclass").test_set != key
    assert record_outcomes(fake_md5s(20, seed=5), CLASSES, actual, actual, "multiclass").test_set != key
    assert record_outcomes(md5s[:-1], CLASSES, actual[:-1], actual[:-1], "multiclass").test_set != key


def test_multilabel_record_round_trips_label_bits():
    rng = np.random.default_rng(0)
    labels = [f"p{i}={d}" for i in range(1, 6) for d in [*"0123456789", "blank"]]  # 55, as multidigit
    actual = (rng.random((40, 55)) < 0.1).astype(np.uint8)
    predicted = actual.copy()
    predicted[::5, 3] ^= 1
    md5s = fake_md5s(40)
    record = loads(dumps(record_outcomes(md5s, labels, actual, predicted, "multilabel")))
    order = np.argsort(md5s)  # stored by md5
    np.testing.assert_array_equal(record.actual, actual[order])
    np.testing.assert_array_equal(record.predicted, predicted[order])
    assert record.correct().sum() == 40 - 8  # exact match: rows 0, 5, ..., 35 have one wrong label
    # A model that lists the labels in another order scored the same test set.
    shuffled = np.random.default_rng(1).permutation(55)
    other = record_outcomes(md5s, [labels[k] for k in shuffled], actual[:, shuffled], predicted[:, shuffled], "multilabel")
    assert other.test_set == record.test_set


def test_a_few_bytes_per_image_at_ten_thousand_images():
    rng = np.random.default_rng(0)
    actual = rng.integers(0, 10, size=10_000)
    predicted = np.where(rng.random(10_000) < 0.9, actual, rng.integers(0, 10, size=10_000))
    text = dumps(record_outcomes(fake_md5s(10_000), [str(i) for i in range(10)], actual, predicted, "multiclass"))
    assert len(text) / 10_000 < 3  # bytes per image, truth and prediction together


def test_more_than_256_classes_use_wider_indices():
    classes = [f"c{i}" for i in range(300)]
    actual = np.arange(300)
    record = loads(dumps(record_outcomes(fake_md5s(300), classes, actual, actual[::-1].copy(), "multiclass")))
    assert record.actual.max() == 299 and sorted(record.actual) == list(range(300))


@pytest.mark.parametrize("text", ["", "{}", '{"format": 99, "task": "multiclass"}', "[1, 2]",
                                  '{"format": 1, "task": "multilabel", "images": -1, "classes": ["a"], "test_set": "x", "actual": "eJwDAAAAAAE=", "predicted": "eJwDAAAAAAE="}',
                                  '{"format": 1, "task": "multiclass", "images": 0, "classes": "abc", "test_set": "x", "actual": "eJwDAAAAAAE=", "predicted": "eJwDAAAAAAE="}',
                                  '{"format": 1, "task": "multiclass", "images": 2, "classes": ["a"], "test_set": "x", "actual": "!!", "predicted": ""}'])
def test_garbage_is_refused_with_a_value_error(text: str):
    with pytest.raises(ValueError, match="not an imgpipe outcome record"):
        loads(text)
