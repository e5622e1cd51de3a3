"""Safe extraction and downloads: every archive is crafted member by member in tmp_path."""

from __future__ import annotations

import hashlib
import http.server
import io
import stat
import struct
import tarfile
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgpipe.core.errors import UserError
from imgpipe.data.archives import extract_archive, fetch_url, file_sha256

GOOD = {"shapes/circle/a.png": b"circle-a", "shapes/circle/b.png": b"circle-b", "shapes/square/c.png": b"square-c"}
MIB_TEST = 1 << 20  # 1 MiB of zeros deflates to about 1 KiB


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def tar_entry(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data)
    return info


def write_tar(path: Path, files: dict[str, bytes], *extra: tarfile.TarInfo) -> Path:
    """`files` as regular members, then `extra` members (links, devices) with no data."""
    with tarfile.open(path, "w:gz" if path.name.endswith(("gz", "tgz")) else "w") as tf:
        for name, data in files.items():
            tf.addfile(tar_entry(name, data), io.BytesIO(data))
        for info in extra:
            tf.addfile(info)
    return path


def zip_link(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    """A Unix symlink entry as Info-ZIP's `zip -y` writes it: S_IFLNK mode, target as data."""
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def write_zip(path: Path, files: dict[str, bytes], *extra: tuple[zipfile.ZipInfo, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(zipfile.ZipInfo(name), data)  # a ZipInfo keeps the name exactly as given
        for info, data in extra:
            zf.writestr(info, data)
    return path


def refuse(archive: Path, dest: Path, limit_bytes: int = 10**6) -> str:
    """Extract an archive that must be refused; checks nothing was written; returns the message."""
    with pytest.raises(UserError) as info:
        extract_archive(archive, dest, limit_bytes)
    assert not dest.exists()
    message = str(info.value)
    assert "\n" not in message
    return message


# --- what still extracts ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["data.zip", "data.tar", "data.tar.gz", "data.tgz"])
def test_archive_with_a_wrapper_folder_extracts(tmp_path, name):
    write = write_zip if name.endswith(".zip") else write_tar
    archive = write(tmp_path / name, GOOD)
    extract_archive(archive, tmp_path / "out")
    assert tree(tmp_path / "out") == GOOD


def test_inner_dotdot_that_stays_inside_is_allowed(tmp_path):
    archive = write_zip(tmp_path / "data.zip", {"shapes/circle/../square/c.png": b"c", "shapes\\circle\\a.png": b"a"})
    extract_archive(archive, tmp_path / "out")
    assert tree(tmp_path / "out") == {"shapes/square/c.png": b"c", "shapes/circle/a.png": b"a"}


@pytest.mark.parametrize("kind", ["tar symlink", "tar hardlink", "zip symlink"])
def test_link_to_a_file_inside_becomes_a_copy(tmp_path, kind):
    if kind == "zip symlink":
        archive = write_zip(tmp_path / "data.zip", GOOD, zip_link("shapes/square/d.png", "../circle/a.png"))
    else:
        link = tar_entry("shapes/square/d.png", kind=tarfile.SYMTYPE, link="../circle/a.png")
        if kind == "tar hardlink":
            link = tar_entry("shapes/square/d.png", kind=tarfile.LNKTYPE, link="shapes/circle/a.png")
        archive = write_tar(tmp_path / "data.tar.gz", GOOD, link)
    out = tmp_path / "out"
    extract_archive(archive, out)
    assert tree(out) == {**GOOD, "shapes/square/d.png": b"circle-a"}
    assert not any(p.is_symlink() for p in out.rglob("*"))


# --- paths that leave the destination --------------------------------------------------------


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("/tmp/evil.png", "an absolute path"),
        ("../evil.png", "'..' climbs above its top folder"),
        ("shapes/../../evil.png", "'..' climbs above its top folder"),
    ],
)
def test_member_outside_the_destination_is_refused(tmp_path, suffix, name, reason):
    write = write_zip if suffix == ".zip" else write_tar
    archive = write(tmp_path / f"evil{suffix}", {**GOOD, name: b"evil"})
    message = refuse(archive, tmp_path / "work" / "out")
    assert message == (
        f"data.source: archive 'evil{suffix}' member '{name}' points outside the archive ({reason}); "
        "nothing was extracted, re-create the archive with relative paths"
    )
    assert not list(tmp_path.rglob("evil.png"))


@pytest.mark.parametrize("name", ["C:\\evil.png", "c:evil.png", "\\\\server\\share\\evil.png", "..\\evil.png"])
def test_windows_style_zip_paths_are_refused(tmp_path, name):
    archive = write_zip(tmp_path / "evil.zip", {name: b"evil"})
    message = refuse(archive, tmp_path / "out")
    assert message.startswith(f"data.source: archive 'evil.zip' member {name!r} points outside the archive (")


@pytest.mark.parametrize(
    ("kind", "link"),
    [(tarfile.SYMTYPE, "/etc/passwd"), (tarfile.SYMTYPE, "../../../etc/passwd"), (tarfile.LNKTYPE, "../passwd")],
)
def test_tar_link_pointing_outside_is_refused(tmp_path, kind, link):
    archive = write_tar(tmp_path / "evil.tar", GOOD, tar_entry("shapes/link.png", kind=kind, link=link))
    message = refuse(archive, tmp_path / "out")
    word = "symbolic link" if kind == tarfile.SYMTYPE else "hard link"
    assert message == (
        f"data.source: archive 'evil.tar' member 'shapes/link.png' is a {word} to '{link}', which points outside "
        "the archive; nothing was extracted, re-create the archive without that link"
    )


def test_zip_symlink_pointing_outside_is_refused(tmp_path):
    archive = write_zip(tmp_path / "evil.zip", GOOD, zip_link("shapes/link.png", "../../home/user/.ssh/id_rsa"))
    message = refuse(archive, tmp_path / "out")
    assert message == (
        "data.source: archive 'evil.zip' member 'shapes/link.png' is a symbolic link to "
        "'../../home/user/.ssh/id_rsa', which points outside the archive; "
        "nothing was extracted, re-create the archive without that link"
    )


def test_link_to_a_folder_is_refused(tmp_path):
    """`up -> .` inside, then `up/../evil.png`: the classic way out through a link, stopped at the link."""
    archive = write_tar(
        tmp_path / "evil.tar",
        {"up/../evil.png": b"evil"},
        tar_entry("up", kind=tarfile.SYMTYPE, link="."),
    )
    message = refuse(archive, tmp_path / "out")
    assert message == (
        "data.source: archive 'evil.tar' member 'up' is a symbolic link to '.', which is not a file in the archive; "
        "nothing was extracted, replace the link with the file it points to"
    )


def test_zip_link_to_a_missing_file_is_refused(tmp_path):
    archive = write_zip(tmp_path / "data.zip", GOOD, zip_link("shapes/d.png", "missing.png"))
    assert "member 'shapes/d.png' is a symbolic link to 'missing.png', which is not a file" in refuse(
        archive, tmp_path / "out"
    )


@pytest.mark.parametrize(
    ("kind", "word"),
    [(tarfile.CHRTYPE, "character device"), (tarfile.BLKTYPE, "block device"), (tarfile.FIFOTYPE, "FIFO")],
)
def test_tar_special_files_are_refused(tmp_path, kind, word):
    archive = write_tar(tmp_path / "evil.tar.gz", GOOD, tar_entry("shapes/dev", kind=kind))
    assert refuse(archive, tmp_path / "out") == (
        f"data.source: archive 'evil.tar.gz' member 'shapes/dev' is a {word}; "
        "nothing was extracted, a dataset holds only files and folders, re-create the archive without it"
    )


# --- size ------------------------------------------------------------------------------------


def test_zip_over_the_size_limit_is_refused(tmp_path):
    archive = write_zip(tmp_path / "bomb.zip", {"a.png": bytes(600), "b.png": bytes(600)})  # 1200 bytes in all
    assert refuse(archive, tmp_path / "out", limit_bytes=1000) == (
        "data.source: archive 'bomb.zip' unpacks to 1,200 bytes (0.0 GB), over the limit of 1,000 bytes (0.0 GB); "
        "nothing was extracted, raise data.max_extract_gb in params.yaml if you trust this archive"
    )


def test_tar_gz_over_the_size_limit_is_refused(tmp_path):
    archive = write_tar(tmp_path / "bomb.tar.gz", {"a.png": bytes(5000)})
    assert "unpacks to 5,000 bytes (0.0 GB), over the limit of 1,000 bytes" in refuse(
        archive, tmp_path / "out", limit_bytes=1000
    )


def test_link_copies_count_toward_the_size_limit(tmp_path):
    links = [tar_entry(f"link{i}.png", kind=tarfile.SYMTYPE, link="a.png") for i in range(3)]
    archive = write_tar(tmp_path / "bomb.tar", {"a.png": bytes(400)}, *links)  # 4 x 400 bytes once copied
    assert "unpacks to 1,600 bytes" in refuse(archive, tmp_path / "out", limit_bytes=1000)


def lie_about_size(archive: Path, size: int, crc: int | None = None) -> None:
    """Rewrite the single member's uncompressed size (and CRC) in the central directory, which is
    what zipfile trusts; the local header and the data stay as they were."""
    data = bytearray(archive.read_bytes())
    at = data.index(b"PK\x01\x02")
    if crc is not None:
        struct.pack_into("<I", data, at + 16, crc)
    struct.pack_into("<I", data, at + 24, size)
    archive.write_bytes(bytes(data))


def test_zip_member_larger_than_declared_is_an_error_and_leaves_nothing(tmp_path):
    archive = write_zip(tmp_path / "liar.zip", {"a.png": bytes(MIB_TEST)})
    lie_about_size(archive, 10)
    message = refuse(archive, tmp_path / "out", limit_bytes=1000)
    assert message == (
        "data.source: cannot extract 'liar.zip': Bad CRC-32 for file 'a.png'; "
        "the archive is corrupt or incomplete, download it again"
    )


def test_zip_never_writes_more_than_the_declared_size(tmp_path):
    """Even with a CRC that matches the declared prefix, zipfile stops at the declared size."""
    archive = write_zip(tmp_path / "liar.zip", {"a.png": bytes(MIB_TEST)})
    lie_about_size(archive, 10, crc=zlib.crc32(bytes(10)))
    extract_archive(archive, tmp_path / "out", limit_bytes=1000)
    assert (tmp_path / "out" / "a.png").stat().st_size == 10


# --- corrupt archives ------------------------------------------------------------------------


def test_truncated_tar_gz_is_an_error(tmp_path):
    archive = write_tar(tmp_path / "data.tar.gz", GOOD)
    archive.write_bytes(archive.read_bytes()[:-10])  # only the gzip trailer is missing
    message = refuse(archive, tmp_path / "out")
    assert message == (
        "data.source: cannot extract 'data.tar.gz': Compressed file ended before the end-of-stream marker was "
        "reached; the archive is corrupt or incomplete, download it again"
    )


def test_tar_gz_with_a_flipped_byte_is_an_error(tmp_path):
    archive = write_tar(tmp_path / "data.tar.gz", {"a.png": bytes(range(256)) * 40})
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    assert refuse(archive, tmp_path / "out").startswith("data.source: cannot extract 'data.tar.gz': ")


def test_garbage_zip_is_an_error(tmp_path):
    archive = tmp_path / "data.zip"
    archive.write_bytes(b"this is not a zip file")
    assert refuse(archive, tmp_path / "out") == (
        "data.source: cannot extract 'data.zip': File is not a zip file; "
        "the archive is corrupt or incomplete, download it again"
    )


# --- downloads -------------------------------------------------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
    """/ok.zip: a whole body; /short.zip: Content-Length 1000, then 100 bytes and a close;
    /slow.zip: no answer for a second; anything else: 404."""

    def do_GET(self) -> None:
        if self.path == "/slow.zip":
            time.sleep(1)
            return
        if self.path not in ("/ok.zip", "/short.zip"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"x" * (1000 if self.path == "/ok.zip" else 100))

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_http_download_writes_the_body(tmp_path, server):
    fetch_url(f"{server}/ok.zip", tmp_path / "ok.zip")
    assert (tmp_path / "ok.zip").read_bytes() == b"x" * 1000


def test_download_that_stops_short_is_an_error_and_leaves_no_file(tmp_path, server):
    with pytest.raises(UserError) as info:
        fetch_url(f"{server}/short.zip", tmp_path / "short.zip")
    assert str(info.value) == (
        f"data.source: download of '{server}/short.zip' stopped after 100 of 1000 bytes; try again"
    )
    assert not (tmp_path / "short.zip").exists()


def test_http_404_is_a_one_line_error(tmp_path, server):
    with pytest.raises(UserError) as info:
        fetch_url(f"{server}/missing.zip", tmp_path / "missing.zip")
    assert str(info.value) == (
        f"data.source: could not download '{server}/missing.zip': HTTP 404 Not Found; "
        "check the URL and your network, then try again"
    )
    assert not (tmp_path / "missing.zip").exists()


def test_timeout_is_a_one_line_error(tmp_path, server):
    with pytest.raises(UserError, match=r"could not download '.*/slow\.zip': timed out; check the URL"):
        fetch_url(f"{server}/slow.zip", tmp_path / "slow.zip", timeout=0.2)
    assert not (tmp_path / "slow.zip").exists()


def test_file_url_download_and_sha256(tmp_path):
    src = write_zip(tmp_path / "data.zip", GOOD)
    dest = tmp_path / "copy.zip"
    fetch_url(src.as_uri(), dest)
    assert dest.read_bytes() == src.read_bytes()
    assert file_sha256(dest) == hashlib.sha256(src.read_bytes()).hexdigest()
