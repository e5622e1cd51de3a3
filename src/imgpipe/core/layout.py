"""The names stages pass each other: their outputs, files inside them, and table columns.

A stage's output reaches it as an option that dvc.yaml sets; its default, for a stage run by
hand, `imgpipe train` and bench/, is the same path, named here once (tests/repo/test_dvc_deps.py keeps
dvc.yaml's commands on these). Everything inside an output that a later stage reads is named
here too.
"""

from pathlib import Path

# Each stage's outputs, as dvc.yaml names them
RAW = Path("data/raw")  # download
AUGMENTED = Path("data/augmented")  # augment
ANNOTATIONS = Path("data/annotations.csv")  # split
MODEL = Path("models/model.pt")  # train
ONNX_MODEL = Path("models/model.onnx")  # export
PREDICTIONS = Path("predictions/predictions.tsv")  # predict
DOWNLOAD_METRICS = Path("metrics/download")
AUGMENT_METRICS = Path("metrics/augment")
SPLIT_METRICS = Path("metrics/split")
TRAIN_METRICS = Path("metrics/train")
EVALUATE_METRICS = Path("metrics/evaluate")
EXPORT_METRICS = Path("metrics/export")
CV_FOLDS = Path("cv/folds")  # cv_fold: one folder per fold, <fold>/ (DVC cache)
CV_WORK = Path("cv/.work")  # cv_fold: a fold's training in progress (its resume state), <fold>/; git-ignored
CV_METRICS = Path("metrics/cv")  # cv_summary

# download -> data/raw (and metrics/download)
IMAGES_DIR = "images"  # multi-label: the images, beside LABELS_FILE
LABELS_FILE = "labels.csv"  # multi-label: path, group and one 0/1 LABEL_PREFIX column per label
SOURCES_FILE = "sources.csv"  # single-label: path (<class>/<file>), origin, group, split as shipped on disk
FILES_LIST = "files.csv"  # every other file of data/raw with the md5 of its bytes (augment's dependency)
REPORT_FILE = "report.json"  # in metrics/download: what happened to every file
METRICS_FILE = "metrics.json"  # in metrics/download: the totals

# augment -> data/augmented
MANIFEST = "manifest.csv"  # one row per image: ANNOTATION_COLUMNS but `split`, plus the labels
SHARDS_DIR = "shards"  # the augmented copies, packed into tar shards (imgpipe.data.shards)

# augment -> metrics/augment (a result, committed): logged with dvclive under plots/images/
SAMPLES = "samples.png"  # a few sources beside their variants, for people to look at

# Columns
LABEL = "label"  # single-label: the class name
LABEL_PREFIX = "label:"  # multi-label: one 0/1 column per label, `label:<name>`
SPLIT_ON_DISK = "split_on_disk"  # the split folder an image shipped in ("" when none)

# split -> data/annotations.csv: the rows train, evaluate and predict read images through
ANNOTATION_COLUMNS = ("path", "source", "transform", "file", "offset", "size", "split", "md5")

# evaluate -> metrics/evaluate
OUTCOMES_FILE = "outcomes.json"  # each test image's outcome (imgpipe.task.outcomes), for `imgpipe review`
RELIABILITY_FILE = "reliability.json"  # in metrics/evaluate: the reliability diagram's bins (imgpipe.task.calibration)

# cv_fold -> cv/folds/<fold>/, read by cv_summary
FOLD_SCORES = "scores.csv"  # each held-out image: path, md5, fold, decision, a `prob:<class>` probability column per class
FOLD_METRICS = "metrics.json"  # the held-out fold's metrics (the evaluate stage's names), K, the fold's digest
FOLD_TRAINING = "train"  # the fold's dvclive training log

# cv_summary -> metrics/cv
FOLDS_TABLE = "folds.csv"  # one row per fold, a column per metric (dvc plots: metric by fold)
LABEL_ISSUES = "label_issues.tsv"  # training images whose labels look wrong, most suspect first
