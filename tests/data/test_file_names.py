"""Any name the file system allows, through the data stages (download, augment, split), from a
folder, a zip and a tar: bytes that are not UTF-8 in a file and in a class folder, newlines, tabs,
quotes, commas, leading dashes, spaces, `%`. Each is kept under the name `escape_name` gives it,
in data/raw and in every table, reversibly; junk with such names is skipped by that name."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from support.odd_names import (
    JUNK,
    ODD_CLASSES,
    expected_origins,
    fs,
    write_odd_dataset,
    write_tar,
    write_zip,
    zip_reading,
)
from support.project import assert_one_line_error, listing, prepare, stage_in_process, tiny_overrides, write_params

from imgpipe.data.archives import extract_archive
from imgpipe.data.readers import escape_name, unescape_name, unsafe_in_tables
from imgpipe.data.shards import Member
from imgpipe.data.sources import LabelOptions, download


def read_table(path: Path, sep: str = ",") -> pd.DataFrame:
    return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)


def source_of(kind: str, tmp_path: Path) -> str:
    """The odd dataset as `data.source`: the folder, or a file:// URL of a tar or zip of it."""
    folder = write_odd_dataset(tmp_path / "odd")
    if kind == "folder":
        return str(folder)
    writers = {"tar": lambda a: write_tar(folder, a), "tar-gnu": lambda a: write_tar(folder, a, tarfile.GNU_FORMAT),
               "zip": lambda a: write_zip(folder, a)}
    return writers[kind](fs(tmp_path, b"odd\xe9." + kind.split("-")[0].encode())).as_uri()  # a Latin-1 archive name too


def expected_from(kind: str) -> set[str]:
    """The names the tables show for the odd dataset's images, read from `kind`: a zip's names are
    stored without the UTF-8 flag, so those that are not UTF-8 read as CP437."""
    if kind != "zip":
        return expected_origins()
    return {escape_name(zip_reading(os.fsencode(unescape_name(name)))) for name in expected_origins()}


# --- the escape ---------------------------------------------------------------------------------


def test_escape_is_reversible_and_leaves_only_what_tables_hold():
    rng = random.Random(0)
    pieces = [bytes([b]) for b in range(1, 256) if b != ord("/")] + [b"%41", b"%4", b"\xc3\xa9", b"\xe2\x80\xa8", b"\xc2\x85"]
    for _ in range(20_000):
        name = os.fsdecode(b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 8))))
        escaped = escape_name(name)
        assert unescape_name(escaped) == name
        assert not unsafe_in_tables(escaped)
        escaped.encode("utf-8")  # strict: no surrogates left
    assert escape_name(os.fsdecode(b"a/caf\xe9\n\t%41%4%.png")) == "a/caf%E9%0A%09%2541%4%.png"
    plain = ["café ünïcode.png", 'say "cheese", ok.png', "-x.png", " spaced .png", "100%.png", "日本/猫.jpg"]
    assert [escape_name(n) for n in plain] == plain


# --- download -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["folder", "tar", "tar-gnu", "zip"])
def test_download_keeps_every_odd_name_and_skips_junk_by_it(tmp_path, kind):
    source = source_of(kind, tmp_path)
    before = listing(tmp_path / "odd")
    raw, metrics = tmp_path / "raw", tmp_path / "metrics"
    done = download(source, raw, report_dir=metrics)
    assert listing(tmp_path / "odd") == before  # the source is only read
    sources = read_table(raw / "sources.csv")
    assert set(sources["origin"]) == expected_from(kind)
    assert (sources["path"] == sources["origin"]).all()  # the copy is named as the table names it
    for path, origin in zip(sources["path"], sources["origin"], strict=True):
        assert not unsafe_in_tables(path)
        if kind != "zip":  # the copy holds the bytes of the file the origin names, byte for byte
            assert (raw / path).read_bytes() == fs(tmp_path / "odd", os.fsencode(unescape_name(origin))).read_bytes()
    classes = {"circle", *(label for _, label in ODD_CLASSES.values())} if kind != "zip" else {"circle", "cr÷ss", '-sq "uare", x'}
    assert set(done.counts) == classes
    report = json.loads((metrics / "report.json").read_text("utf-8"))
    junk = {shown: "AppleDouble" if "._" in shown else "not an image" for shown in JUNK.values()}
    if kind == "zip":
        junk = {escape_name(zip_reading(os.fsencode(unescape_name(k)))): v for k, v in junk.items()}
    assert {e["file"]: e["reason"].split(" ")[0] for e in report["skipped"]} == {k: v.split(" ")[0] for k, v in junk.items()}
    assert set(report["escaped"]) == {o for o in sources["origin"] if unescape_name(o) != o}
    assert f"escaped {len(report['escaped'])} names" in done.summary()
    assert set(read_table(raw / "files.csv")["path"]) == {*sources["path"], "sources.csv"}


def test_zip_names_read_as_utf8_when_they_are_else_as_cp437(tmp_path):
    done = download(source_of("zip", tmp_path), tmp_path / "raw")
    origins = set(read_table(tmp_path / "raw" / "sources.csv")["origin"])
    # Latin-1 é (0xE9) and è (0xE8) are CP437's Θ and Φ; UTF-8 é without the flag is still é
    assert {"circle/cafΘ.png", "circle/cafΦ.png", "circle/café.png", "circle/caf%25E9.png", "circle/line%0Abreak.png"} <= origins
    assert done.counts["cr÷ss"] == 12  # Latin-1 ö (0xF6) is CP437's ÷


def test_a_zip_names_member_by_its_unicode_path_field(tmp_path):
    """Info-ZIP's Unicode Path extra field (7-Zip and WinRAR write it) gives the UTF-8 name of a
    member stored in the local code page; a field whose CRC does not match the stored name is stale."""
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for stored, unicode_name, crc_ok in ((b"caf\x82.png", "café.png", True), (b"th\x82.png", "tea.png", False)):
            info = zipfile.ZipInfo(stored.decode("cp437"))
            utf8 = unicode_name.encode()
            crc = zlib.crc32(stored) if crc_ok else 0
            info.extra = struct.pack("<HHBL", 0x7075, 5 + len(utf8), 1, crc) + utf8
            zf.writestr(info, b"x")
    extract_archive(archive, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["café.png", "thé.png"]


def test_names_from_a_filename_pattern_are_escaped_labels(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    for i in range(4):
        for stem in (b"caf\xe9", b"tea\ttime"):
            Image.new("L", (8, 8), 40 * i + len(stem)).save(fs(root, stem + b"_%d.png" % i))
    Image.new("L", (8, 8), 7).save(fs(root, b"caf\xe9.png"))  # no _<n>: does not match
    labels = LabelOptions(labels_from="filename", filename_pattern=r"(?P<label>.+)_\d+")
    done = download(str(root), tmp_path / "raw", labels=labels)
    assert done.counts == {"caf%E9": 4, "tea%09time": 4}
    assert done.skipped == [{"file": "caf%E9.png", "reason": "name does not match data.filename_pattern"}]
    sources = read_table(tmp_path / "raw" / "sources.csv")
    assert "caf%E9/caf%E9_0.png" in set(sources["path"]) and (tmp_path / "raw" / "caf%E9" / "caf%E9_0.png").is_file()


def test_an_annotation_file_names_an_odd_image_by_its_escaped_name(tags_dir, tmp_path):
    (tags_dir / "images" / "img_000.png").rename(fs(tags_dir, b"images/img_\xe9.png"))
    (tags_dir / "images" / "img_001.png").rename(fs(tags_dir, b"images/img\n1.png"))
    lines = (tags_dir / "labels.csv").read_text().splitlines()
    lines = [line.replace("img_000.png", "img_%E9.png") for line in lines if not line.startswith("img_001.png")]
    (tags_dir / "labels.csv").write_text("\n".join(lines) + "\n")
    done = download(str(tags_dir), tmp_path / "raw")
    table = read_table(tmp_path / "raw" / "labels.csv")
    assert "images/images/img_%E9.png" in set(table["path"])  # the output's images/, then the source's path
    assert (tmp_path / "raw" / "images" / "images" / "img_%E9.png").read_bytes() == fs(tags_dir, b"images/img_\xe9.png").read_bytes()
    assert {"file": "images/img%0A1.png", "reason": "not named in the annotation file"} in done.skipped


# --- augment and split --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["folder", "tar", "zip"])
def test_augment_and_split_carry_odd_names_into_shards_and_tables(tmp_path, kind):
    work = prepare(tmp_path / "work", tiny_overrides(source_of(kind, tmp_path)))
    augmented = work / "data" / "augmented"
    manifest = read_table(augmented / "manifest.csv")
    assert set(manifest["source"]) == {f"{o}" for o in expected_from(kind)}
    for row in manifest.itertuples():  # every image's bytes are where the manifest says
        member = Member(augmented / row.file, int(row.offset), int(row.size))
        assert hashlib.md5(member.read_bytes()).hexdigest() == row.md5
    copies = manifest[manifest["transform"] != "original"]
    names = set()
    for shard in sorted((augmented / "shards").glob("*.tar")):
        with tarfile.open(shard) as tf:
            names |= set(tf.getnames())
    assert names == set(copies["path"])  # shard members are named as the manifest names them
    assert "rot10/circle/line%0Abreak.png.png" in names
    annotations = read_table(work / "data" / "annotations.csv")
    assert set(annotations["source"]) == set(manifest["source"])
    assert len((work / "data" / "annotations.csv").read_text("utf-8").splitlines()) == len(annotations) + 1


def test_augment_refuses_hand_written_class_folders_with_a_name_no_table_holds(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    write_params(work / "params.yaml", tiny_overrides(tmp_path / "unused"))
    for name in (b"circle/caf\xe9.png", b"square/a.png"):
        path = fs(work / "data" / "raw", name)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8), 9).save(path, format="PNG")
    done = stage_in_process("augment", cwd=work)
    assert_one_line_error(done, "'circle/caf%E9.png'", "run the download stage")
    assert not (work / "data" / "augmented").exists()


def test_report_json_and_sources_read_back_with_pandas_and_json(tmp_path):
    """The tables hold every name on one line each: a newline in a name cannot split a row."""
    raw = tmp_path / "raw"
    download(source_of("folder", tmp_path), raw, report_dir=tmp_path / "metrics")
    text = (raw / "sources.csv").read_text("utf-8")
    assert len(text.splitlines()) == len(read_table(io.StringIO(text))) + 1
    json.loads((tmp_path / "metrics" / "report.json").read_bytes().decode("utf-8"))
