"""The augment stage: rotated, inverted and sheared copies in tar shards, with a manifest."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from support.datasets import write_shapes_dataset

from imgpipe.core.errors import UserError
from imgpipe.core.layout import MANIFEST
from imgpipe.core.params import AugmentParams
from imgpipe.data.augment import augment_dataset
from imgpipe.data.shards import members

PARAMS = AugmentParams(rotations=(-15.0, 15.0), invert=True, shear=25.0)


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def image_paths(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))


def unpacked(out: Path) -> dict[str, bytes]:
    """Every member of every shard, as `tar -xf` would unpack them."""
    files = {}
    for shard in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for info in tar.getmembers():
                assert info.isfile() and info.mtime == 0 and info.uname == "", info
                files[info.name] = tar.extractfile(info).read()
    return files


def read(out: Path, manifest: pd.DataFrame) -> dict[str, bytes]:
    """Each manifest row's image bytes, read from where the manifest says they are."""
    rows = manifest.astype(str)
    return {row: m.read_bytes() for row, m in zip(rows["path"], members(rows, out), strict=True)}


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture
def small_raw(tmp_path: Path) -> Path:
    return write_shapes_dataset(tmp_path / "raw", per_class=3, size=28)


def test_manifest_has_original_and_one_row_per_transform(tmp_path, small_raw):
    out = tmp_path / "augmented"
    manifest = augment_dataset(small_raw, out, PARAMS, seed=0)

    assert list(manifest.columns) == [
        "path", "label", "group", "split_on_disk", "source", "transform", "file", "offset", "size", "md5"
    ]
    # the md5 of every image's bytes, which downstream stages depend on instead of the files
    images = read(out, manifest)
    assert all(hashlib.md5(images[p]).hexdigest() == h for p, h in zip(manifest["path"], manifest["md5"], strict=True))
    assert manifest["md5"].equals(pd.read_csv(out / "manifest.csv")["md5"])
    sources = image_paths(small_raw)
    assert len(sources) == 9
    assert len(manifest) == 9 * (1 + 2 + 1 + 1)
    assert sorted(manifest["source"].unique()) == sources

    for source, rows in manifest.groupby("source"):
        label = source.split("/")[0]
        assert set(rows["label"]) == {label}
        by_transform = dict(zip(rows["transform"], rows["path"], strict=True))
        shear_name = next(t for t in by_transform if t.startswith("shear("))
        assert re.fullmatch(r"shear\(-?\d+\.\d\d\)", shear_name)
        assert abs(float(shear_name[6:-1])) <= 25.0
        assert by_transform == {
            "original": f"original/{source}",
            "rotate(-15)": f"rot-15/{source}.png",
            "rotate(15)": f"rot15/{source}.png",
            "invert": f"invert/{source}.png",
            shear_name: f"shear/{source}.png",
        }

    # Originals are read where the download stage put them; every copy is in a shard, and
    # every shard member is in the manifest exactly once, at the offset recorded there.
    assert manifest["path"].is_unique
    originals = manifest[manifest["transform"] == "original"]
    assert (originals["file"] == "../raw/" + originals["source"]).all()
    copies = manifest[manifest["transform"] != "original"]
    assert copies["file"].str.fullmatch(r"shards/\d\d\.tar").all()
    shards = unpacked(out)
    assert sorted(shards) == sorted(copies["path"])
    assert all(shards[p] == images[p] for p in copies["path"])
    assert image_paths(out) == []  # the sample sheet is a result, in metrics/augment (tests/evaluate/test_gallery.py)
    on_disk = pd.read_csv(out / MANIFEST, dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(on_disk, manifest.astype(str))


def test_only_requested_transforms_are_made(tmp_path, small_raw):
    manifest = augment_dataset(small_raw, tmp_path / "out", AugmentParams(rotations=(), invert=False, shear=0.0), seed=0)
    assert set(manifest["transform"]) == {"original"}
    assert len(manifest) == 9

    manifest = augment_dataset(small_raw, tmp_path / "out", AugmentParams(rotations=(7.5,), invert=False, shear=0.0), seed=0)
    assert sorted(manifest["transform"].value_counts().items()) == [("original", 9), ("rotate(7.5)", 9)]
    assert "rot7.5/circle/circle_00.png.png" in unpacked(tmp_path / "out")


def test_same_seed_gives_byte_identical_outputs(tmp_path, small_raw):
    a = augment_dataset(small_raw, tmp_path / "a", PARAMS, seed=7)
    b = augment_dataset(small_raw, tmp_path / "b", PARAMS, seed=7)
    pd.testing.assert_frame_equal(a, b)
    assert tree(tmp_path / "a") == tree(tmp_path / "b")


def test_another_seed_gives_another_shear(tmp_path, small_raw):
    a = augment_dataset(small_raw, tmp_path / "a", PARAMS, seed=1)
    b = augment_dataset(small_raw, tmp_path / "b", PARAMS, seed=2)
    shear_a = a[a["transform"].str.startswith("shear(")].set_index("source")["transform"]
    shear_b = b[b["transform"].str.startswith("shear(")].set_index("source")["transform"]
    assert (shear_a != shear_b.loc[shear_a.index]).all()
    # Deterministic transforms do not depend on the seed; the sheared pixels do.
    files_a, files_b = unpacked(tmp_path / "a"), unpacked(tmp_path / "b")
    assert files_a.keys() == files_b.keys()
    for path in files_a:
        if path.startswith("shear/"):
            assert files_a[path] != files_b[path], path
        else:
            assert files_a[path] == files_b[path], path


def test_shear_angle_differs_between_images(tmp_path, small_raw):
    manifest = augment_dataset(small_raw, tmp_path / "out", PARAMS, seed=0)
    shears = manifest.loc[manifest["transform"].str.startswith("shear("), "transform"]
    assert shears.nunique() == len(shears)  # drawn per image, not one angle for all


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_outputs_have_the_input_size_and_mode(tmp_path, mode):
    raw = tmp_path / "raw"
    rng = np.random.default_rng(0)
    for label, size in (("a", (28, 28)), ("b", (40, 24))):
        (raw / label).mkdir(parents=True)
        shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(raw / label / "img.png")
    out = tmp_path / "out"
    manifest = augment_dataset(raw, out, PARAMS, seed=0)
    assert len(manifest) == 10
    images = read(out, manifest)
    for row in manifest.itertuples():
        with Image.open(io.BytesIO(images[row.path])) as img, Image.open(raw / row.source) as src:
            assert img.size == src.size, row.path
            assert img.mode == mode, row.path


def test_originals_are_read_from_raw_as_they_are(tmp_path, small_raw):
    # A JPEG too: the original is never re-encoded, nor copied.
    with Image.open(small_raw / "circle" / "circle_00.png") as img:
        img.convert("RGB").save(small_raw / "circle" / "photo.jpg", quality=75)
    out = tmp_path / "out"
    manifest = augment_dataset(small_raw, out, PARAMS, seed=0)
    originals = manifest[manifest["transform"] == "original"]
    assert len(originals) == 10
    assert (originals["path"] == "original/" + originals["source"]).all()
    images = read(out, manifest)
    for path, rel in zip(originals["path"], originals["source"], strict=True):
        assert images[path] == (small_raw / rel).read_bytes(), rel
    assert not (out / "original").exists()


def test_invert_and_rotation_change_pixels_as_expected(tmp_path, small_raw):
    out = tmp_path / "out"
    augment_dataset(small_raw, out, AugmentParams(rotations=(90.0,), invert=True, shear=0.0), seed=0)
    src = np.asarray(Image.open(small_raw / "cross" / "cross_01.png"))
    files = unpacked(out)
    inverted = decoded(files["invert/cross/cross_01.png.png"])
    np.testing.assert_array_equal(inverted, 255 - src)
    rotated = decoded(files["rot90/cross/cross_01.png.png"])
    np.testing.assert_array_equal(rotated, np.rot90(src))  # counter-clockwise, square image


def test_same_stem_in_one_class_gives_distinct_outputs(tmp_path, small_raw):
    # `a.png` and `a.jpg` are two different source images; their augmented copies
    # must not overwrite each other (that would also leak one source into the other's split).
    with Image.open(small_raw / "square" / "square_00.png") as img:
        img.convert("RGB").save(small_raw / "circle" / "circle_00.jpg", quality=90)
    out = tmp_path / "out"
    manifest = augment_dataset(small_raw, out, PARAMS, seed=0)
    assert manifest["path"].is_unique, manifest[manifest["path"].duplicated(keep=False)].to_string()


def test_empty_raw_folder_is_a_user_error(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    with pytest.raises(UserError, match="no images to augment; run the download stage first"):
        augment_dataset(raw, tmp_path / "out", PARAMS, seed=0)
    assert not (tmp_path / "out").exists()


def test_one_new_source_image_rewrites_one_shard(tmp_path, small_raw, monkeypatch):
    # Force several shards on a tiny dataset: a source's copies go to the shard its name hashes
    # to, so a new image changes that shard only, and DVC pushes one new object, not all.
    monkeypatch.setattr("imgpipe.data.shards.SHARD_BYTES", 5000)  # 8 shards for these 9 sources
    before = augment_dataset(small_raw, tmp_path / "a", PARAMS, seed=0)
    shards_before = tree(tmp_path / "a" / "shards")
    assert len(shards_before) > 3, sorted(shards_before)
    with Image.open(small_raw / "square" / "square_00.png") as img:
        img.rotate(90).save(small_raw / "square" / "square_new.png")
    after = augment_dataset(small_raw, tmp_path / "b", PARAMS, seed=0)
    shards_after = tree(tmp_path / "b" / "shards")
    changed = {name for name in shards_after if shards_before.get(name) != shards_after[name]}
    new = after[(after["source"] == "square/square_new.png") & (after["transform"] != "original")]
    new_shard = new["file"].unique().tolist()
    assert [f"shards/{name}" for name in changed] == new_shard
    assert len(after) == len(before) + 5
