"""How well can any model read scikit-learn digits it has never seen? The ceiling of builtin:multidigit.

    .venv/bin/python bench/digit_ceiling.py

builtin:multidigit keeps digit instances apart: test images are built only from scans that no
training image uses. This fits an RBF SVM (a strong classifier for these 8x8 scans) on single
digits with the same 60 instance groups, holds out 6 groups at a time (10 folds, like the 10%
test split), and prints its accuracy on the unseen scans and the whole-sequence accuracy that
accuracy implies for 1 to 5 digits per image (p ** n, averaged over n).
"""

from __future__ import annotations

import numpy as np
from sklearn.svm import SVC

from imgpipe.data.builtin import GROUPS, load_digit_scans, partition_instances

FOLDS = 10


def main() -> None:
    scans, labels = load_digit_scans()
    x = scans.reshape(len(scans), -1) / 255.0
    groups = partition_instances(labels, GROUPS, np.random.default_rng(0))  # seed 0, as builtin:multidigit
    held = GROUPS // FOLDS
    accuracies = []
    for fold in range(FOLDS):
        test = np.concatenate(groups[fold * held : (fold + 1) * held])
        train = np.setdiff1d(np.arange(len(x)), test)
        model = SVC(C=10, gamma=0.02).fit(x[train], labels[train])
        accuracies.append(float((model.predict(x[test]) == labels[test]).mean()))
    p = float(np.mean(accuracies))
    print(f"per-digit accuracy on unseen scans: mean {p:.4f}, folds {min(accuracies):.4f}..{max(accuracies):.4f}")
    for name, q in (("measured", p), ("needed for 0.97", 0.99)):
        implied = np.mean([q**n for n in range(1, 6)])
        print(f"sequence accuracy implied by per-digit {q:.4f} ({name}): {implied:.4f}")


if __name__ == "__main__":
    main()
