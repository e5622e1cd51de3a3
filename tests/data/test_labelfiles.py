"""Reading a multi-label dataset (image folder + one annotation source) into the normalised table."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imgpipe.core.errors import UserError
from imgpipe.data.labelfiles import find_annotations, read_label_source
from imgpipe.data.labelsets import label_matrix, label_names


def write_images(root: Path, *names: str) -> Path:
    """Tiny real images (PNG or JPEG by suffix) at the given paths relative to `root`."""
    for i, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), i * 20 % 256, dtype=np.uint8)).save(path)
    return root


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def labels_by_path(table: pd.DataFrame) -> dict[str, set[str]]:
    names = label_names(table)
    rows = label_matrix(table)
    return {p: {names[k] for k in np.flatnonzero(row)} for p, row in zip(table["path"], rows, strict=True)}


def user_error(call: Callable[[], object], *needles: str) -> str:
    """Run `call`, expect a one-line UserError holding every needle; return the message."""
    with pytest.raises(UserError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


# --- format 1: one labels column joined by a delimiter ---------------------------------------------------------


def test_quoted_comma_labels(tmp_path: Path) -> None:
    write_images(tmp_path, "1.jpg", "2.jpg", "3.jpg", "4.jpg")
    write_text(
        tmp_path / "labels.csv", 'image,tags\n4.jpg,"desert,mountains"\n1.jpg,sea\n2.jpg," sea , sun "\n3.jpg,\n'
    )
    table, report = read_label_source(tmp_path)
    assert list(table.columns) == ["path", "group", "label:desert", "label:mountains", "label:sea", "label:sun"]
    assert table["path"].tolist() == ["1.jpg", "2.jpg", "3.jpg", "4.jpg"]
    assert labels_by_path(table) == {
        "1.jpg": {"sea"},
        "2.jpg": {"sea", "sun"},
        "3.jpg": set(),  # empty cell: a valid all-negative example
        "4.jpg": {"desert", "mountains"},
    }
    assert report == []


@pytest.mark.parametrize("delimiter", ["|", ";", " ", " | "])
def test_label_delimiters(tmp_path: Path, delimiter: str) -> None:
    write_images(tmp_path, "a.png", "b.png", "c.png")
    rows = [f"a.png,cat{delimiter}dog", "b.png,dog", f"c.png,{delimiter.join(['bird', 'cat', 'dog'])}"]
    write_text(tmp_path / "labels.csv", "image,labels\n" + "\n".join(rows) + "\n")
    table, report = read_label_source(tmp_path)
    assert label_names(table) == ["bird", "cat", "dog"]
    assert labels_by_path(table) == {"a.png": {"cat", "dog"}, "b.png": {"dog"}, "c.png": {"bird", "cat", "dog"}}
    assert report == []


def test_space_joined_ids_without_extension(tmp_path: Path) -> None:
    """The Kaggle planet layout: ids without extension, labels joined by spaces."""
    write_images(tmp_path, "train-jpg/train_0.jpg", "train-jpg/train_9516.jpg")
    write_text(tmp_path / "train_v2.csv", "image_name,tags\ntrain_0,haze primary\ntrain_9516,clear  primary water\n")
    table, report = read_label_source(tmp_path)
    assert labels_by_path(table) == {
        "train-jpg/train_0.jpg": {"haze", "primary"},
        "train-jpg/train_9516.jpg": {"clear", "primary", "water"},
    }
    assert report == []


def test_single_label_per_cell_keeps_spaces_out_of_play(tmp_path: Path) -> None:
    write_images(tmp_path, "a.png", "b.png")
    write_text(tmp_path / "labels.csv", "file,label\na.png,cat\nb.png,dog\n")
    table, _ = read_label_source(tmp_path)
    assert labels_by_path(table) == {"a.png": {"cat"}, "b.png": {"dog"}}


def test_tsv_file(tmp_path: Path) -> None:
    write_images(tmp_path, "a.png", "b.png")
    write_text(tmp_path / "labels.tsv", "filename\tclasses\na.png\tcat,dog\nb.png\tdog\n")
    table, report = read_label_source(tmp_path)
    assert labels_by_path(table) == {"a.png": {"cat", "dog"}, "b.png": {"dog"}}
    assert report == []


def test_semicolon_separated_file(tmp_path: Path) -> None:
    write_images(tmp_path, "a.png", "b.png")
    write_text(tmp_path / "labels.csv", "image;labels\na.png;cat,dog\nb.png;dog\n")
    table, _ = read_label_source(tmp_path)
    assert labels_by_path(table) == {"a.png": {"cat", "dog"}, "b.png": {"dog"}}


def test_crlf_and_bom(tmp_path: Path) -> None:
    write_images(tmp_path, "a.png", "b.png")
    write_text(tmp_path / "labels.csv", "\ufeffImage,Tags\r\na.png,cat|dog\r\nb.png,dog\r\n")
    table, report = read_label_source(tmp_path)
    assert label_names(table) == ["cat", "dog"]
    assert labels_by_path(table) == {"a.png": {"cat", "dog"}, "b.png": {"dog"}}
    assert report == []


def test_numeric_looking_names_stay_strings(tmp_path: Path) -> None:
    write_images(tmp_path, "02.png", "2.png", "10.png")
    write_text(tmp_path / "labels.csv", "id,labels\n02,02|10\n2,1\n10,02\n")
    table, _ = read_label_source(tmp_path)
    assert label_names(table) == ["1", "02", "10"]  # numeric names numerically, `02` kept as written
    assert labels_by_path(table) == {"02.png": {"02", "10"}, "2.png": {"1"}, "10.png": {"02"}}


def test_names_with_and_without_extension_and_subfolders(tmp_path: Path) -> None:
    write_images(tmp_path, "a/x.png", "b/x.png", "y.jpg", "c/z.png", "c/w.png", "c/v.png")
    rows = ["a/x.png,cat", "b/x,dog", "y,cat", "z.png,dog", "./c/w.png,cat", "v,cat", "x,bird"]
    write_text(tmp_path / "labels.csv", "path,labels\n" + "\n".join(rows) + "\n")
    table, report = read_label_source(tmp_path)
    assert labels_by_path(table) == {
        "a/x.png": {"cat"},
        "b/x.png": {"dog"},
        "c/v.png": {"cat"},
        "c/w.png": {"cat"},
        "c/z.png": {"dog"},
        "y.jpg": {"cat"},
    }
    # `x` names both a/x.png and b/x.png: dropped and reported rather than guessed.
    assert (
        len(report) == 1 and "1 name(s) match several images" in report[0] and "'x (a/x.png or b/x.png)'" in report[0]
    )


def test_missing_rows_and_unnamed_images_are_reported(tmp_path: Path) -> None:
    write_images(tmp_path, *[f"img{i}.png" for i in range(9)])
    rows = [f"img{i}.png,cat" for i in range(2)] + [f"gone{i}.png,dog" for i in range(7)]
    write_text(tmp_path / "labels.csv", "image,labels\n" + "\n".join(rows) + "\n")
    table, report = read_label_source(tmp_path)
    assert table["path"].tolist() == ["img0.png", "img1.png"]
    assert label_names(table) == ["cat", "dog"]  # the vocabulary is what the file declares
    missing, unnamed = report
    assert "labels.csv" in missing and "7 name(s) match no image" in missing
    assert "'gone0.png', 'gone1.png', 'gone2.png', 'gone3.png', 'gone4.png' (+2 more)" in missing
    assert "7 image(s) named by no row" in unnamed and "'img2.png'" in unnamed and "(+2 more)" in unnamed


def test_duplicate_rows_are_merged_and_reported(tmp_path: Path) -> None:
    write_images(tmp_path, "a.png", "b.png")
    write_text(tmp_path / "labels.csv", "image,labels\na.png,cat\nb.png,dog\na,dog\n")
    table, report = read_label_source(tmp_path)
    assert labels_by_path(table) == {"a.png": {"cat", "dog"}, "b.png": {"dog"}}
    assert len(report) == 1 and "1 image(s) on several rows" in report[0] and "'a.png'" in report[0]


def test_explicit_columns_and_ignored_columns(tmp_path: Path) -> None:
    write_images(tmp_path, "a.png", "b.png")
    write_text(tmp_path / "meta" / "ann.csv", "split,photo,objects\ntrain,a.png,cat dog\nval,b.png,dog\n")
    table, report = read_label_source(tmp_path, "meta/ann.csv", image_column="photo", labels_column="objects")
    assert labels_by_path(table) == {"a.png": {"cat", "dog"}, "b.png": {"dog"}}
    assert report == [f"annotation file {tmp_path / 'meta' / 'ann.csv'}: column(s) ignored: 'split'"]


def test_first_column_guessed_as_image_column(tmp_path: Path) -> None:
    write_images(tmp_path, "a.png", "b.png")
    write_text(tmp_path / "labels.csv", "photo,objects\na,cat\nb,dog\n")
    table, _ = read_label_source(tmp_path)
    assert labels_by_path(table) == {"a.png": {"cat"}, "b.png": {"dog"}}


def test_named_labels_column_among_text_columns(tmp_path: Path) -> None:
    write_images(tmp_path, "a.png", "b.png")
    write_text(tmp_path / "labels.csv", "image,source,tags\na.png,web,cat|dog\nb.png,phone,dog\n")
    table, report = read_label_source(tmp_path)
    assert labels_by_path(table) == {"a.png": {"cat", "dog"}, "b.png": {"dog"}}
    assert "column(s) ignored: 'source'" in report[0]


# --- format 2: one-hot columns ---------------------------------------------------------------------------------


def test_one_hot_columns_in_header_order(tmp_path: Path) -> None:
    write_images(tmp_path, "a.png", "b.png", "c.png")
    write_text(tmp_path / "labels.csv", "image,dog,cat,02\na.png,1,0,1\nb.png,0.0,1.0,0\nc.png,0,0,0\n")
    table, report = read_label_source(tmp_path)
    assert label_names(table) == ["dog", "cat", "02"]
    assert labels_by_path(table) == {"a.png": {"dog", "02"}, "b.png": {"cat"}, "c.png": set()}
    assert table["label:dog"].tolist() == [1, 0, 0]
    assert report == []


def test_single_one_hot_column(tmp_path: Path) -> None:
    write_images(tmp_path, "a.png", "b.png")
    write_text(tmp_path / "labels.csv", "image,cat\na.png,1\nb.png,0\n")
    table, _ = read_label_source(tmp_path)
    assert labels_by_path(table) == {"a.png": {"cat"}, "b.png": set()}


def test_labels_column_overrides_one_hot_guess(tmp_path: Path) -> None:
    """A labels column whose names are all 0 or 1 reads as one-hot unless data.labels_column says otherwise."""
    write_images(tmp_path, "a.png", "b.png")
    write_text(tmp_path / "labels.csv", "image,labels\na.png,1\nb.png,0\n")
    table, _ = read_label_source(tmp_path, labels_column="labels")
    assert labels_by_path(table) == {"a.png": {"1"}, "b.png": {"0"}}


# --- format 3: a folder of <label>.txt files -------------------------------------------------------------------


def test_label_folder(tmp_path: Path) -> None:
    write_images(tmp_path, "img/a.png", "img/b.png", "img/c.png", "img/d.png")
    write_text(tmp_path / "annotations" / "cat.txt", "a\n\nimg/b.png\r\n")
    write_text(tmp_path / "annotations" / "dog.txt", "b.png\nghost\n")
    write_text(tmp_path / "annotations" / "10.txt", "c\n")
    write_text(tmp_path / "annotations" / "2.txt", "")
    table, report = read_label_source(tmp_path)
    assert label_names(table) == ["2", "10", "cat", "dog"]
    assert labels_by_path(table) == {
        "img/a.png": {"cat"},
        "img/b.png": {"cat", "dog"},
        "img/c.png": {"10"},
        "img/d.png": set(),  # listed in no file: all-negative, not reported
    }
    assert len(report) == 1 and "1 name(s) match no image" in report[0] and "'ghost'" in report[0]


def test_explicit_label_folder_never_counts_as_images(tmp_path: Path) -> None:
    write_images(tmp_path, "a.png", "b.png", "meta/preview.png")
    write_text(tmp_path / "meta" / "cat.txt", "a\n")
    table, report = read_label_source(tmp_path, "meta")
    assert labels_by_path(table) == {"a.png": {"cat"}, "b.png": set()}
    assert "non-.txt entries ignored: 'preview.png'" in report[0]


# --- detection -------------------------------------------------------------------------------------------------


def test_find_annotations(tmp_path: Path) -> None:
    write_images(tmp_path, "a.png")
    assert find_annotations(tmp_path) is None
    write_text(tmp_path / "masks" / "a.txt", "")  # not a recognised folder name
    write_images(tmp_path / "labels", "mask.png")  # holds an image: not a label folder
    assert find_annotations(tmp_path) is None
    csv = write_text(tmp_path / "Labels.CSV", "image,labels\n")
    assert find_annotations(tmp_path) == csv
    csv.unlink()
    folder = tmp_path / "annotations"
    write_text(folder / "cat.txt", "a\n")
    write_text(folder / ".DS_Store", "")
    assert find_annotations(tmp_path) == folder


def test_ambiguous_annotation_sources(tmp_path: Path) -> None:
    write_images(tmp_path, "a.png")
    write_text(tmp_path / "train.csv", "image,labels\na.png,cat\n")
    write_text(tmp_path / "annotations" / "cat.txt", "a\n")
    user_error(lambda: find_annotations(tmp_path), "annotations, train.csv", "data.annotations")
    user_error(lambda: read_label_source(tmp_path), "annotations, train.csv", "data.annotations")
    table, _ = read_label_source(tmp_path, "train.csv")  # naming one settles it
    assert labels_by_path(table) == {"a.png": {"cat"}}


# --- errors ----------------------------------------------------------------------------------------------------


def test_no_annotation_source(tmp_path: Path) -> None:
    write_images(tmp_path, "a.png")
    user_error(lambda: read_label_source(tmp_path), str(tmp_path), "set data.annotations")


def test_annotations_param_points_to_missing_file(tmp_path: Path) -> None:
    write_images(tmp_path, "a.png")
    user_error(lambda: read_label_source(tmp_path, "nope.csv"), "data.annotations", "'nope.csv'", str(tmp_path))


def test_image_column_not_found(tmp_path: Path) -> None:
    write_images(tmp_path, "a.png")
    write_text(tmp_path / "labels.csv", "photo,objects\nq,cat\n")
    user_error(
        lambda: read_label_source(tmp_path),
        "labels.csv",
        "cannot find the image column",
        "data.image_column",
        "photo, objects",
    )
    user_error(lambda: read_label_source(tmp_path, image_column="pic"), "labels.csv", "'pic'", "photo, objects")
    user_error(
        lambda: read_label_source(tmp_path, image_column="photo", labels_column="tags"),
        "labels.csv",
        "'tags'",
        "photo, objects",
    )


def test_one_hot_column_with_bad_value(tmp_path: Path) -> None:
    write_images(tmp_path, "a.png", "b.png")
    write_text(tmp_path / "labels.csv", "image,cat,dgo,bird\na.png,1,0,0\nb.png,0,dog,1\n")
    user_error(lambda: read_label_source(tmp_path), "labels.csv", "'dgo'", "'dog'", "data row 2")


def test_labels_column_mixed_with_one_hot_columns(tmp_path: Path) -> None:
    write_images(tmp_path, "a.png")
    write_text(tmp_path / "labels.csv", "image,labels,cat\na.png,cat dog,1\n")
    user_error(lambda: read_label_source(tmp_path), "labels.csv", "'labels'", "'cat'")


def test_ambiguous_text_columns(tmp_path: Path) -> None:
    write_images(tmp_path, "a.png")
    write_text(tmp_path / "labels.csv", "image,colour,shape\na.png,red,round\n")
    user_error(lambda: read_label_source(tmp_path), "labels.csv", "image, colour, shape", "data.labels_column")


def test_mixed_label_delimiters(tmp_path: Path) -> None:
    write_images(tmp_path, "a.png", "b.png")
    write_text(tmp_path / "labels.csv", "image,tags\na.png,cat|dog\nb.png,cat;bird\n")
    user_error(lambda: read_label_source(tmp_path), "labels.csv", "'tags'", "mixing formats", "'|'", "';'")


@pytest.mark.parametrize("text", ["", "  \r\n", "image,labels\n"])
def test_empty_annotation_file(tmp_path: Path, text: str) -> None:
    write_images(tmp_path, "a.png")
    write_text(tmp_path / "labels.csv", text)
    user_error(lambda: read_label_source(tmp_path), "labels.csv")


def test_empty_label_folder(tmp_path: Path) -> None:
    write_images(tmp_path, "a.png")
    write_text(tmp_path / "annotations" / "cat.txt", "\n")
    user_error(lambda: read_label_source(tmp_path), "annotations", "empty")


def test_no_usable_images(tmp_path: Path) -> None:
    write_text(tmp_path / "labels.csv", "image,labels\na.png,cat\n")
    user_error(lambda: read_label_source(tmp_path), "no images")
    write_images(tmp_path, "b.png")
    user_error(lambda: read_label_source(tmp_path), "labels.csv", "no row names an image", "'a.png'")


def test_unquoted_commas_give_a_parse_error(tmp_path: Path) -> None:
    write_images(tmp_path, "a.png")
    write_text(tmp_path / "labels.csv", "image,labels\na.png,cat,dog,bird\n")
    user_error(lambda: read_label_source(tmp_path), "labels.csv", "quote")


def test_source_folder_missing(tmp_path: Path) -> None:
    user_error(lambda: read_label_source(tmp_path / "nope"), "nope")
