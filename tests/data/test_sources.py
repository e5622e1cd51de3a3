"""The download stage's sources: builtin digits, a local folder, file:// archives."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgpipe.core.errors import UserError
from imgpipe.data.sources import download

SHAPES = ("circle", "cross", "square")


def tree(folder: Path) -> dict[str, bytes]:
    """The images under `folder` (not the download stage's `sources.csv` and `files.csv`), as {path: bytes}."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in ("sources.csv", "files.csv")
    }


def leftovers(parent: Path, name: str) -> list[str]:
    """Temporary or backup folders atomic_dir may have left beside `parent / name`."""
    if not parent.exists():  # a failed first run removes the folder it made, too
        return []
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def make_tar_gz(src: Path, archive: Path, top: str | None) -> Path:
    with tarfile.open(archive, "w:gz") as tf:
        for path in sorted(src.rglob("*")):
            rel = path.relative_to(src).as_posix()
            tf.add(path, arcname=f"{top}/{rel}" if top else rel, recursive=False)
    return archive


def make_zip(src: Path, archive: Path, top: str | None) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(src.rglob("*")):
            rel = path.relative_to(src).as_posix()
            zf.write(path, arcname=f"{top}/{rel}" if top else rel)
    return archive


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_files_list_names_every_file_with_its_md5(tmp_path):
    # augment depends on files.csv instead of the folder, so it must change with any file in it
    out = tmp_path / "raw"
    download("builtin:digits", out, limit=3)
    listed = dict(line.split(",") for line in (out / "files.csv").read_text().splitlines()[1:])
    on_disk = {p.relative_to(out).as_posix(): p for p in out.rglob("*") if p.is_file() and p.name != "files.csv"}
    assert listed.keys() == on_disk.keys() and "sources.csv" in listed and len(listed) == 31
    assert all(hashlib.md5(on_disk[k].read_bytes()).hexdigest() == v for k, v in listed.items())


# --- builtin:digits ----------------------------------------------------------------------


def test_builtin_digits_writes_1797_pngs_in_ten_class_folders(tmp_path):
    out = tmp_path / "raw"
    counts = download("builtin:digits", out).counts

    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [str(d) for d in range(10)]
    assert counts == {str(d): len(list((out / str(d)).iterdir())) for d in range(10)}
    assert sum(counts.values()) == 1797
    files = sorted(out.rglob("*/*.*"))
    assert len(files) == 1797
    assert all(f.suffix == ".png" for f in files)
    # sklearn's per-class counts of the digits data set
    assert counts == {"0": 178, "1": 182, "2": 177, "3": 183, "4": 181,
                      "5": 182, "6": 181, "7": 179, "8": 174, "9": 180}
    with Image.open(out / "0" / "0000.png") as img:
        assert img.mode == "L"
        assert img.size == (32, 32)
        assert np.asarray(img).max() > 0  # real ink, not a blank image
    assert leftovers(tmp_path, "raw") == []


def test_builtin_digits_imbalanced_keeps_a_long_tail_of_the_same_scans(tmp_path):
    counts = download("builtin:digits-imbalanced", tmp_path / "raw").counts
    # 10^(-d/9) of each digit's scans: every 0, a tenth of the 9s, a constant ratio between
    assert counts == {"0": 178, "1": 141, "2": 106, "3": 85, "4": 65, "5": 51, "6": 39, "7": 30, "8": 22, "9": 18}
    full = tmp_path / "full"
    download("builtin:digits", full)
    kept = sorted(p.relative_to(tmp_path / "raw") for p in (tmp_path / "raw").rglob("*.png"))
    assert all((full / p).read_bytes() == (tmp_path / "raw" / p).read_bytes() for p in kept)  # the first scans, as they are


def test_builtin_digits_mislabelled_files_a_known_five_percent_under_a_wrong_digit(tmp_path):
    from imgpipe.data.sources import mislabelled_digits

    download("builtin:digits-mislabelled", tmp_path / "raw")
    full = tmp_path / "full"
    download("builtin:digits", full)
    filed = {p.name: p.parent.name for p in (tmp_path / "raw").rglob("*.png")}
    truth = {p.name: p.parent.name for p in full.rglob("*.png")}
    assert filed.keys() == truth.keys()  # every scan, once
    moved = {name: int(truth[name]) for name in filed if filed[name] != truth[name]}
    assert moved == mislabelled_digits() and len(moved) == round(0.05 * 1797)  # the answer key is what moved
    assert all((full / truth[n] / n).read_bytes() == (tmp_path / "raw" / filed[n] / n).read_bytes() for n in moved)


def test_unknown_builtin_is_rejected_and_creates_nothing(tmp_path):
    with pytest.raises(UserError, match=r"data.source 'builtin:cats' is unknown; builtin datasets: builtin:digits"):
        download("builtin:cats", tmp_path / "raw")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --- local folder --------------------------------------------------------------------------


def test_local_folder_is_copied_and_left_unchanged(tmp_path, shapes_dir):
    (shapes_dir / "circle" / "notes.txt").write_text("not an image")
    (shapes_dir / "circle" / ".hidden.png").write_bytes((shapes_dir / "circle" / "circle_00.png").read_bytes())
    old = 1_000_000_000  # an old, distinctive mtime
    for path in shapes_dir.rglob("*"):
        os.utime(path, (old, old))
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in shapes_dir.rglob("*") if p.is_file()}
    dirs_before = {p: p.stat().st_mtime_ns for p in [shapes_dir, *shapes_dir.rglob("*")] if p.is_dir()}

    out = tmp_path / "raw"
    counts = download(str(shapes_dir), out).counts

    assert counts == {"circle": 10, "cross": 10, "square": 10}
    copied = tree(out)
    expected = {
        p.relative_to(shapes_dir).as_posix(): p.read_bytes()
        for p in shapes_dir.rglob("*.png")
        if not p.name.startswith(".")
    }
    assert copied == expected  # images only, byte for byte; no notes.txt, no hidden file
    # The user's folder: same files, same bytes, same mtimes.
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in shapes_dir.rglob("*") if p.is_file()}
    assert after == before
    assert all(mtime == old * 10**9 for _, mtime in after.values())
    assert {p: p.stat().st_mtime_ns for p in [shapes_dir, *shapes_dir.rglob("*")] if p.is_dir()} == dirs_before


def test_local_folder_replaces_previous_output(tmp_path, shapes_dir):
    out = tmp_path / "raw"
    (out / "stale").mkdir(parents=True)
    (out / "stale" / "old.png").write_bytes(b"old")
    download(str(shapes_dir), out)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == list(SHAPES)
    assert leftovers(tmp_path, "raw") == []


def test_nested_images_inside_a_class_folder_are_kept(tmp_path, shapes_dir):
    nested = shapes_dir / "cross" / "batch2"
    nested.mkdir()
    (nested / "extra.png").write_bytes((shapes_dir / "cross" / "cross_00.png").read_bytes())
    counts = download(str(shapes_dir), tmp_path / "raw").counts
    assert counts["cross"] == 11
    assert (tmp_path / "raw" / "cross" / "batch2" / "extra.png").is_file()


def test_missing_folder_is_a_user_error(tmp_path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(UserError) as info:
        download(str(missing), tmp_path / "raw")
    assert str(info.value) == f"data.source: folder '{missing}' does not exist"
    assert not (tmp_path / "raw").exists()
    assert leftovers(tmp_path, "raw") == []


def test_folder_without_class_folders_is_a_user_error(tmp_path):
    src = tmp_path / "flat"
    src.mkdir()
    Image.new("L", (8, 8)).save(src / "a.png")
    with pytest.raises(UserError, match="has no class sub-folders"):
        download(str(src), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_class_folder_without_images_is_named(tmp_path, shapes_dir):
    empty = shapes_dir / "triangle"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    out = tmp_path / "raw"
    with pytest.raises(UserError) as info:
        download(str(shapes_dir), out)
    assert str(info.value) == (
        f"data.source: class folder '{empty}' has no usable images (the download report lists what "
        "was skipped); add images or remove the folder"
    )
    assert not out.exists()
    assert leftovers(tmp_path, "raw") == []


def test_a_file_is_not_a_source_folder(tmp_path):
    file = tmp_path / "data.csv"
    file.write_text("a,b\n")
    with pytest.raises(UserError, match="is not a folder"):
        download(str(file), tmp_path / "raw")


# --- file:// archives -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
@pytest.mark.parametrize("top", [None, "shapes-v1"])
def test_file_url_archive_extracts_to_class_folders(tmp_path, shapes_dir, kind, top):
    make = make_tar_gz if kind == "tar.gz" else make_zip
    archive = make(shapes_dir, tmp_path / f"shapes.{kind}", top)
    out = tmp_path / "raw"

    counts = download(archive.as_uri(), out).counts

    assert counts == {"circle": 10, "cross": 10, "square": 10}
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == list(SHAPES)
    assert tree(out) == tree(shapes_dir)
    assert leftovers(tmp_path, "raw") == []


def test_archive_with_two_wrapper_folders_is_descended(tmp_path, shapes_dir):
    archive = make_zip(shapes_dir, tmp_path / "shapes.zip", "outer/inner")
    counts = download(archive.as_uri(), tmp_path / "raw").counts
    assert counts == {"circle": 10, "cross": 10, "square": 10}
    assert tree(tmp_path / "raw") == tree(shapes_dir)


def test_archive_macos_metadata_folder_is_ignored(tmp_path, shapes_dir):
    archive = tmp_path / "shapes.zip"
    make_zip(shapes_dir, archive, "shapes")
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("__MACOSX/shapes/._circle", b"\x00\x05\x16\x07")
    counts = download(archive.as_uri(), tmp_path / "raw").counts
    assert counts == {"circle": 10, "cross": 10, "square": 10}


def test_correct_sha256_passes(tmp_path, shapes_dir):
    archive = make_tar_gz(shapes_dir, tmp_path / "shapes.tar.gz", "shapes")
    counts = download(archive.as_uri(), tmp_path / "raw", sha256=sha256_of(archive).upper()).counts
    assert counts == {"circle": 10, "cross": 10, "square": 10}


def test_sha256_mismatch_is_a_user_error_and_creates_no_output(tmp_path, shapes_dir):
    archive = make_zip(shapes_dir, tmp_path / "shapes.zip", None)
    actual = sha256_of(archive)
    wrong = "0" * 64
    out = tmp_path / "out" / "raw"
    with pytest.raises(UserError) as info:
        download(archive.as_uri(), out, sha256=wrong)
    message = str(info.value)
    assert "sha256" in message
    assert message == (
        f"data.sha256: archive 'shapes.zip' has sha256 {actual}, expected {wrong}; fix data.sha256 or the URL"
    )
    assert not out.exists()
    assert leftovers(out.parent, "raw") == []


def test_sha256_mismatch_keeps_previous_output(tmp_path, shapes_dir):
    archive = make_zip(shapes_dir, tmp_path / "shapes.zip", None)
    out = tmp_path / "raw"
    (out / "kept").mkdir(parents=True)
    (out / "kept" / "a.png").write_bytes(b"previous")
    with pytest.raises(UserError, match="sha256"):
        download(archive.as_uri(), out, sha256="f" * 64)
    assert tree(out) == {"kept/a.png": b"previous"}


def test_zip_member_with_dotdot_is_refused(tmp_path, shapes_dir):
    archive = make_zip(shapes_dir, tmp_path / "evil.zip", None)
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("../escaped.png", (shapes_dir / "circle" / "circle_00.png").read_bytes())
    out = tmp_path / "work" / "raw"
    with pytest.raises(UserError) as info:
        download(archive.as_uri(), out)
    assert str(info.value).startswith(
        "data.source: archive 'evil.zip' member '../escaped.png' points outside the archive"
    )
    assert not out.exists()
    assert not list(tmp_path.rglob("escaped.png"))


def test_zip_member_with_nested_dotdot_is_refused(tmp_path, shapes_dir):
    archive = make_zip(shapes_dir, tmp_path / "evil.zip", None)
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("circle/../../../escaped.png", b"x")
    with pytest.raises(UserError, match="member 'circle/../../../escaped.png' points outside the archive"):
        download(archive.as_uri(), tmp_path / "raw")
    assert not list(tmp_path.rglob("escaped.png"))


def test_zip_member_with_absolute_path_is_refused(tmp_path, shapes_dir):
    archive = make_zip(shapes_dir, tmp_path / "evil.zip", None)
    target = (tmp_path / "abs" / "escaped.png").as_posix()
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr(target, b"x")
    with pytest.raises(UserError, match="points outside the archive"):
        download(archive.as_uri(), tmp_path / "raw")
    assert not list(tmp_path.rglob("escaped.png"))


def test_tar_member_with_dotdot_is_refused(tmp_path, shapes_dir):
    archive = make_tar_gz(shapes_dir, tmp_path / "evil.tar.gz", None)
    payload = b"escaped"
    with tarfile.open(tmp_path / "evil2.tar.gz", "w:gz") as tf:
        with tarfile.open(archive) as src:
            for member in src.getmembers():
                tf.addfile(member, src.extractfile(member) if member.isfile() else None)
        info = tarfile.TarInfo("../escaped.png")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    with pytest.raises(UserError, match="archive 'evil2.tar.gz' member '../escaped.png' points outside the archive"):
        download((tmp_path / "evil2.tar.gz").as_uri(), tmp_path / "raw")
    assert not list(tmp_path.rglob("escaped.png"))
    assert not (tmp_path / "raw").exists()


def test_url_that_is_not_an_archive_is_rejected(tmp_path, shapes_dir):
    path = shapes_dir / "circle" / "circle_00.png"
    with pytest.raises(UserError, match=r"is not a \.zip, \.tar, \.tar\.gz, \.tgz archive"):
        download(path.as_uri(), tmp_path / "raw")


def test_missing_file_url_is_a_user_error(tmp_path):
    url = (tmp_path / "missing.zip").as_uri()
    with pytest.raises(UserError, match=f"could not download '{url}'"):
        download(url, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_corrupt_archive_is_a_user_error(tmp_path):
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"this is not a zip file")
    with pytest.raises(UserError, match="cannot extract 'broken.zip'"):
        download(archive.as_uri(), tmp_path / "raw")
