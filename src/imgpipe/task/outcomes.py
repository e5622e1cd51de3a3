"""Each test image's outcome, recorded by the evaluate stage for the review of a pull request.

The record holds, per test image, the true and the predicted class (multi-label: the true and
the predicted label sets as bits): a few bytes per image, no paths and no probabilities, so it
is small enough to commit with every run. Images are stored in a canonical order, sorted by the
md5 of their bytes (the augment stage's `md5` column) and their truth, and the record carries a
key of that list: two records with the same key scored the same test images, in the same order,
so the review can pair the two models image by image (`imgpipe.review.stats`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgpipe.task.kinds import KINDS, MulticlassKind, MultilabelKind

FORMAT = 1
ENCODING = (
    "base64 of zlib of, per image in test_set order: the class index (uint8; uint16 past 256 classes, "
    "uint32 past 65,536), or for multilabel the label bits packed into ceil(K / 8) bytes"
)


@dataclass(frozen=True)
class Outcomes:
    task: str  # a name in imgpipe.task.kinds.KINDS: multiclass | multilabel
    classes: list[str]  # class (multi-label: label) names, the columns of `one_hot`
    test_set: str  # sha256 of the test images' md5 and truth, in the stored order
    actual: np.ndarray  # (N,) class indices, or (N, K) 0/1 for multi-label
    predicted: np.ndarray  # same shape as `actual`

    def __len__(self) -> int:
        return len(self.actual)

    @property
    def kind(self) -> type[MulticlassKind | MultilabelKind]:
        """The kind of result (`imgpipe.task.kinds`): how its outcomes are compared and named."""
        return KINDS[self.task]

    def one_hot(self) -> tuple[np.ndarray, np.ndarray]:
        """(N, K) bool truth and decisions; a single-label image is one-hot."""
        kind = self.kind(self.classes)
        return kind.one_hot(self.actual), kind.one_hot(self.predicted)

    def correct(self) -> np.ndarray:
        """(N,) bool: the image is right (multi-label: every label right, exact match)."""
        return self.kind.correct(self.actual, self.predicted)


def record_outcomes(
    md5s: Sequence[str], classes: Sequence[str], actual: np.ndarray, predicted: np.ndarray, task: str
) -> Outcomes:
    """The record of one evaluation: `actual` and `predicted` in the order of `md5s`, either
    (N,) class indices or (N, K) 0/1 label sets."""
    actual, predicted = np.asarray(actual), np.asarray(predicted)
    if not len(md5s) == len(actual) == len(predicted):
        raise ValueError(f"{len(md5s)} images, {len(actual)} true and {len(predicted)} predicted outcomes")
    classes = list(classes)
    truth = [KINDS[task].truth(row, classes) for row in actual]
    order = sorted(range(len(md5s)), key=lambda i: (md5s[i], truth[i]))
    key = hashlib.sha256(json.dumps([[md5s[i], truth[i]] for i in order]).encode()).hexdigest()
    return Outcomes(task, classes, key, actual[order], predicted[order])


def write_outcomes(path: Path, outcomes: Outcomes) -> None:
    Path(path).write_text(dumps(outcomes))


def dumps(outcomes: Outcomes) -> str:
    record = {
        "format": FORMAT,
        "task": outcomes.task,
        "test_set": outcomes.test_set,
        "images": len(outcomes),
        "classes": outcomes.classes,
        "encoding": ENCODING,
        "actual": _encode(outcomes.kind.encode(outcomes.actual, len(outcomes.classes))),
        "predicted": _encode(outcomes.kind.encode(outcomes.predicted, len(outcomes.classes))),
    }
    return json.dumps(record, indent=1) + "\n"


def loads(text: str) -> Outcomes:
    """Parse a record; ValueError when it is not one this version reads."""
    try:
        record = json.loads(text)
        if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("task") not in KINDS:
            raise ValueError(f"format {FORMAT} expected")
        n, classes, task = record["images"], record["classes"], record["task"]
        if not (isinstance(n, int) and n >= 0 and isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
            raise ValueError("images must be a count and classes a list of names")
        k = len(classes)
        actual, predicted = (KINDS[task].decode(_decode(record[name]), n, k) for name in ("actual", "predicted"))
        return Outcomes(task, classes, str(record["test_set"]), actual, predicted)
    except (KeyError, TypeError, ValueError, zlib.error, json.JSONDecodeError) as err:
        raise ValueError(f"not an imgpipe outcome record ({err})") from None


def _encode(raw: bytes) -> str:
    return base64.b64encode(zlib.compress(raw, 9)).decode("ascii")


def _decode(text: str) -> bytes:
    return zlib.decompress(base64.b64decode(text, validate=True))
