"""Multi-label input through the stage scripts' commands: every annotation format gives the same
labels, and bad input is one `error:` line with no traceback and no output left behind. In this
process (`stage_in_process`); test_bad_inputs runs an error and a success in a real process."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from support.project import (
    DATA_STAGES,
    assert_one_line_error,
    copy_prepared,
    prepare,
    stage_in_process,
    tiny_overrides,
    write_params,
)

LABELS = ("circle", "cross", "square")
# image -> its labels; 3.png carries none (an all-negative example every format must keep)
TRUTH = {
    "1.png": ["circle"],
    "2.png": ["circle", "square"],
    "3.png": [],
    "4.png": ["circle", "square"],
    "5.png": ["cross"],
    "6.png": ["circle", "cross", "square"],
}


def write_images(root: Path, names: tuple[str, ...] = tuple(TRUTH)) -> Path:
    """Tiny real PNGs (distinct grey levels) at the top of `root`."""
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("L", (12, 12), 30 * i).save(root / name)
    return root


def labelled_source(root: Path, file: str, text: str) -> Path:
    """The images plus one annotation file holding `text`."""
    write_images(root)
    (root / file).write_text(text)
    return root


def joined_csv() -> str:
    """`image,labels` with comma-joined labels, quoted (`4.png,"circle,square"`)."""
    return "image,labels\n" + "".join(f'{name},"{",".join(labels)}"\n' for name, labels in TRUTH.items())


def expected_table() -> pd.DataFrame:
    rows = [
        {"path": f"images/{name}", **{f"label:{k}": int(k in labels) for k in LABELS}} for name, labels in TRUTH.items()
    ]
    return pd.DataFrame(rows)


def raw_labels(folder: Path) -> pd.DataFrame:
    """data/raw/labels.csv without the group column, sorted by path."""
    table = pd.read_csv(folder / "data/raw/labels.csv")
    return table.drop(columns="group").sort_values("path").reset_index(drop=True)


def assert_no_output(target: Path) -> None:
    """The stage left neither its output nor atomic_dir/atomic_file temporaries beside it."""
    assert not target.exists(), f"{target} was written"
    if target.parent.exists():
        leftovers = [p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")]
        assert not leftovers, leftovers


def run_download(folder: Path, source: Path | str, **overrides):
    """The download stage in `folder` with tiny params, `overrides` merged one level deep."""
    params = tiny_overrides(Path(source))
    for key, value in overrides.items():
        params[key] = {**params.get(key, {}), **value} if isinstance(value, dict) else value
    write_params(folder / "params.yaml", params)
    return stage_in_process("download", cwd=folder)


# --- every annotation format gives the same label matrix ---------------------------------------------


def _csv_quoted_commas(root: Path) -> Path:
    return labelled_source(root, "labels.csv", joined_csv())


def _tsv_pipes(root: Path) -> Path:
    text = "image\tlabels\n" + "".join(f"{name}\t{'|'.join(labels)}\n" for name, labels in TRUTH.items())
    return labelled_source(root, "labels.tsv", text)


def _one_hot_csv(root: Path) -> Path:
    text = "image," + ",".join(LABELS) + "\n"
    for name, labels in TRUTH.items():
        text += f"{name}," + ",".join(str(int(k in labels)) for k in LABELS) + "\n"
    return labelled_source(root, "labels.csv", text)


def _label_txt_folder(root: Path) -> Path:
    write_images(root)
    (root / "annotations").mkdir()
    for label in LABELS:  # ids without the extension: matched to 1.png etc.
        ids = [Path(name).stem for name, labels in TRUTH.items() if label in labels]
        (root / "annotations" / f"{label}.txt").write_text("\n".join(ids) + "\n")
    return root


@pytest.mark.parametrize(
    "make_source", [_csv_quoted_commas, _tsv_pipes, _one_hot_csv, _label_txt_folder], ids=lambda f: f.__name__[1:]
)
def test_annotation_formats_give_the_same_labels(tmp_path: Path, make_source):
    source = make_source(tmp_path / "src")
    result = run_download(tmp_path, source)
    assert result.returncode == 0, result.stderr
    assert "6 images, 3 labels (multi-label)" in result.stdout
    pd.testing.assert_frame_equal(raw_labels(tmp_path), expected_table())
    assert sorted(p.name for p in (tmp_path / "data/raw/images").iterdir()) == sorted(TRUTH)


def test_missing_and_unnamed_images_are_reported_with_counts(tmp_path: Path):
    text = joined_csv().replace('6.png,"circle,cross,square"\n', "")  # 6.png: named by no row
    text += '7.png,circle\n8.png,"cross,square"\n'  # rows naming images that do not exist
    source = labelled_source(tmp_path / "src", "labels.csv", text)
    result = run_download(tmp_path, source)
    assert result.returncode == 0, result.stderr
    assert "2 name(s) match no image" in result.stderr and "'7.png'" in result.stderr, result.stderr
    assert "1 image(s) named by no row" in result.stderr and "6.png" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert raw_labels(tmp_path)["path"].tolist() == [f"images/{i}.png" for i in range(1, 6)]


# --- bad annotation files: one line, no data/raw ------------------------------------------------------


BAD_FILES = {
    # The image names sit in the second column, under a name nobody would guess.
    "image-column-not-found": (
        "labels.csv",
        "tags,picture\ncircle,1.png\ncross,5.png\n",
        ["image column", "data.image_column"],
    ),
    "one-hot-typo-column": (
        "labels.csv",
        "image,circle,cross,sqaure\n1.png,1,0,0\n2.png,1,0,1\n3.png,0,0,yes\n",
        ["one-hot column 'sqaure'", "'yes'", "not 0/1"],
    ),
    "mixed-delimiters": (
        "labels.csv",
        "image,labels\n1.png,circle\n2.png,circle;square\n6.png,cross|square\n",
        ["mixing", "';'", "'|'"],
    ),
    "zero-bytes": ("labels.csv", "", ["labels.csv", "empty"]),
    "header-only": ("labels.csv", "image,labels\n", ["labels.csv", "no rows"]),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_annotation_file_is_one_line(tmp_path: Path, case: str):
    file, text, fragments = BAD_FILES[case]
    source = labelled_source(tmp_path / "src", file, text)
    result = run_download(tmp_path, source)
    assert_one_line_error(result, *fragments)
    assert_no_output(tmp_path / "data/raw")


def test_annotations_param_naming_a_missing_file(tmp_path: Path):
    source = _csv_quoted_commas(tmp_path / "src")
    result = run_download(tmp_path, source, data={"annotations": "missing.csv"})
    assert_one_line_error(result, "data.annotations", "missing.csv", "not found")
    assert_no_output(tmp_path / "data/raw")


@pytest.mark.parametrize("threshold", [1.5, 0, "maybe"])
def test_bad_threshold_is_caught_at_download(tmp_path: Path, threshold):
    source = _csv_quoted_commas(tmp_path / "src")
    result = run_download(tmp_path, source, train={"threshold": threshold})
    assert_one_line_error(result, "params.yaml", "train.threshold", "tune")
    assert_no_output(tmp_path / "data/raw")
    assert not (tmp_path / "data").exists()  # params fail before anything is touched


def test_multiclass_task_with_a_multilabel_builtin(tmp_path: Path):
    result = run_download(tmp_path, "builtin:multidigit", task="multiclass")
    assert_one_line_error(result, "builtin:multidigit", "multi-label", "task")
    assert_no_output(tmp_path / "data/raw")


# --- params that do not fit the data: caught by the train stage ---------------------------------------


@pytest.fixture(scope="module")
def prepared_multilabel(tmp_path_factory) -> Path:
    """download, augment and split already ran on a tiny multi-label set (copied per test)."""
    folder = tmp_path_factory.mktemp("ml-prepared")
    source = write_images(folder / "src", tuple(f"{i}.png" for i in range(12)))
    rows = [f"{i}.png,{' '.join(LABELS[k] for k in range(3) if (i >> k) & 1 or i % 4 == k)}" for i in range(12)]
    (source / "labels.csv").write_text("image,tags\n" + "\n".join(rows) + "\n")
    return prepare(folder / "work", tiny_overrides(source))


TRAIN_MISFITS = {
    "cross-entropy-on-multilabel": ("multi", {"loss": "cross_entropy"}, ["train.loss", "cross_entropy", "bce"]),
    "pos-weight-with-mse": ("multi", {"loss": "mse", "pos_weight": "auto"}, ["train.pos_weight", "bce", "mse"]),
    "f1-micro-on-single-label": (
        "single", {"monitor": "val/f1_micro"}, ["train.monitor", "val/f1_micro", "multi-label"]
    ),
}


@pytest.mark.parametrize("case", TRAIN_MISFITS)
def test_train_params_that_do_not_fit_the_data(case: str, tmp_path: Path, request):
    kind, train, fragments = TRAIN_MISFITS[case]
    prepared = request.getfixturevalue("prepared_multilabel" if kind == "multi" else "prepared_shapes")
    work = copy_prepared(prepared, tmp_path / "work")
    params = tiny_overrides(Path("unused"))
    params["train"] = {**params["train"], **train}
    write_params(work / "params.yaml", params)
    result = stage_in_process("train", cwd=work)
    assert_one_line_error(result, *fragments)
    assert_no_output(work / "models/model.pt")
    assert_no_output(work / "models/.model.pt.resume")
    assert_no_output(work / "metrics/train")


def test_split_that_would_leave_test_empty_is_refused(tmp_path: Path):
    # Three groups cannot fill train, val and test at these fractions once limit keeps two images.
    overrides = {"data": {"source": "builtin:digit-tags", "limit": 2}, "augment": {"rotations": [], "shear": 0}}
    prepare(tmp_path, overrides, DATA_STAGES[:2])
    result = stage_in_process("split", cwd=tmp_path)
    assert_one_line_error(result, "split.", "no image landed in", "2 groups", "data.limit")
    assert not (tmp_path / "data/annotations.csv").exists()
    assert not (tmp_path / "metrics/split").exists()
