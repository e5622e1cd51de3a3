"""Fetch dataset archives and extract them without letting them write outside their folder.

Every member is checked before anything is written: absolute paths, `..` that climbs out, links
that point out, device files and FIFOs are refused, and so is an archive whose declared sizes
add up to more than a limit. A link that stays inside is written as a copy of the file it points
to, so no link ever lands on disk: no later member can be redirected through one, and the path
checks here, which only look at names, are complete.

Names are written as the archive spells them: tar names as bytes (like a Linux folder's, whatever
their encoding); zip names as UTF-8 when flagged so, or when an Info-ZIP Unicode Path field gives
them, or when their bytes are valid UTF-8 (tools on Linux and macOS often leave the flag unset),
else as CP437, the zip format's own encoding (a Latin-1 `é` from Windows reads as `Θ`).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import posixpath
import re
import shutil
import stat
import struct
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from imgpipe.core.errors import UserError
from imgpipe.core.params import DataParams
from imgpipe.core.progress import progress

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
MIB = 1 << 20
GB = 10**9  # data.max_extract_gb counts decimal gigabytes
LINK_TEXT_MAX = 4096  # PATH_MAX; a zip link's data is its target path
ZIP_UTF8_FLAG = 0x800  # general purpose bit 11: the name is UTF-8
ZIP_UNICODE_PATH = 0x7075  # Info-ZIP Unicode Path extra field: version, crc32 of the stored name, UTF-8 name
DRIVE = re.compile(r"[A-Za-z]:")  # `C:` at the start makes a Windows path absolute
LINKS = ("symbolic link", "hard link")
CONTENTS = ("file", "folder")
TAR_KINDS = (
    ("symbolic link", tarfile.TarInfo.issym),
    ("hard link", tarfile.TarInfo.islnk),
    ("character device", tarfile.TarInfo.ischr),
    ("block device", tarfile.TarInfo.isblk),
    ("FIFO", tarfile.TarInfo.isfifo),
    ("folder", tarfile.TarInfo.isdir),
)  # anything else tarfile writes as a regular file
# OSError covers URLError (HTTPError too), timeouts and connection resets; ValueError a malformed URL.
DOWNLOAD_ERRORS = (OSError, http.client.HTTPException, ValueError)
# TarError includes tarfile's FilterError; a cut-off stream raises EOFError, a bad CRC BadGzipFile.
CORRUPT_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile)


@dataclass(frozen=True)
class Member:
    """An archive member reduced to what the safety checks need, for zip and tar alike."""

    name: str  # as stored in the archive; quoted in messages
    kind: str  # "file", "folder", one of LINKS, or a special file ("FIFO", ...)
    size: int  # declared uncompressed bytes
    link: str | None = None  # a link's target, as stored


@dataclass(frozen=True)
class Plan:
    """Where each member lands inside the destination, and which links become file copies."""

    paths: list[str]  # one per member, relative posix paths
    copies: dict[str, str]  # link path -> path of the file it points to


# --- download ------------------------------------------------------------------------------


def fetch_url(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Download `url` (http, https or file) to `dest` with a progress bar.

    A download that fails or stops short is deleted, so a partial archive is never checked or
    extracted. Stopping short is checked by hand: when the server closes the connection early,
    http.client's `read(amt)` returns the short body without an error.
    """
    try:
        received, expected = _download(url, dest, timeout)
        if expected is not None and received < expected:
            raise UserError(f"data.source: download of '{url}' stopped after {received} of {expected} bytes; try again")
    except DOWNLOAD_ERRORS as err:
        dest.unlink(missing_ok=True)
        raise UserError(
            f"data.source: could not download '{url}': {_download_reason(err)}; "
            "check the URL and your network, then try again"
        ) from None
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


def _download(url: str, dest: Path, timeout: float) -> tuple[int, int | None]:
    """Stream `url` into `dest`; returns the bytes received and the Content-Length, if sent."""
    with _open_url(url, timeout) as (response, expected), open(dest, "wb") as f:
        chunks = iter(lambda: response.read(MIB), b"")
        total = math.ceil(expected / MIB) if expected else None  # the bar counts 1 MiB chunks
        received = 0
        for chunk in progress(chunks, desc=f"download {dest.name}", total=total):
            f.write(chunk)
            received += len(chunk)
    return received, expected


@contextmanager
def _open_url(url: str, timeout: float) -> Iterator[tuple[BinaryIO, int | None]]:
    """The stream of `url` and its length, if known. A local file:// URL is opened by the bytes its
    `%XX` spell: urllib decodes them as UTF-8, so a file name that is not UTF-8 would name no file."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() == "file" and parts.netloc in ("", "localhost") and os.name == "posix":
        with open(os.fsdecode(urllib.parse.unquote_to_bytes(parts.path)), "rb") as f:
            yield f, os.fstat(f.fileno()).st_size
        return
    with urllib.request.urlopen(url, timeout=timeout) as response:
        yield response, _content_length(response.headers.get("Content-Length"))


def _content_length(value: str | None) -> int | None:
    return int(value) if value and value.strip().isdigit() else None


def _download_reason(err: BaseException) -> str:
    """urllib wraps most failures in URLError, whose `reason` reads better than its str()."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return _describe(err.reason)
    return _describe(err)


def _describe(err: object) -> str:
    return str(err) or type(err).__name__


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks so a large archive needs little memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


# --- extraction ----------------------------------------------------------------------------


def extract_archive(archive: Path, dest: Path, limit_bytes: int = int(DataParams.max_extract_gb * GB)) -> None:
    """Extract a .zip, .tar, .tar.gz or .tgz archive into `dest`, which must not exist yet.

    Unsafe members and archives over `limit_bytes` are refused before `dest` is created. If
    extraction fails later (a corrupt archive), `dest` is removed again, so a half-extracted
    dataset is never used.
    """
    try:
        if archive.name.lower().endswith(".zip"):
            _extract_zip(archive, dest, limit_bytes)
        else:
            _extract_tar(archive, dest, limit_bytes)
    except CORRUPT_ERRORS as err:
        raise UserError(
            f"data.source: cannot extract '{archive.name}': {_describe(err)}; "
            "the archive is corrupt or incomplete, download it again"
        ) from None
    except (NotImplementedError, RuntimeError) as err:  # zipfile: Deflate64 and friends, encryption
        raise UserError(
            f"data.source: cannot extract '{archive.name}': {_describe(err)}; "
            "re-create it without a password, with the usual deflate compression"
        ) from None


def _extract_zip(archive: Path, dest: Path, limit_bytes: int) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        members = [_zip_member(zf, info) for info in infos]
        plan = _plan(members, archive.name, limit_bytes)
        with _new_folder(dest):
            for info, member, path in zip(infos, members, plan.paths, strict=True):
                if member.kind == "folder":
                    (dest / path).mkdir(parents=True, exist_ok=True)
                elif member.kind == "file":
                    _write_zip_file(zf, info, dest / path)
            _copy_links(dest, plan.copies)


def _zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Member:
    """Unix zips mark a symlink in the high 16 bits of external_attr and store its target as the
    entry's data; zipfile.extractall would write that target out as a small text file."""
    if stat.S_ISLNK(info.external_attr >> 16):
        with zf.open(info) as f:
            target = f.read(LINK_TEXT_MAX).decode("utf-8", "replace")
        return Member(_zip_name(info), "symbolic link", 0, target)
    kind = "folder" if _posix(info.filename).endswith("/") else "file"
    return Member(_zip_name(info), kind, info.file_size)


def _zip_name(info: zipfile.ZipInfo) -> str:
    """The member's name (see the module's docstring); zipfile itself reads every unflagged name as CP437."""
    if info.flag_bits & ZIP_UTF8_FLAG:
        return info.filename
    stored = info.filename.encode("cp437")  # zipfile's decoding, undone: CP437 maps each byte to one character
    extra = info.extra
    while len(extra) >= 4:
        tag, size = struct.unpack("<HH", extra[:4])
        field = extra[4 : 4 + size]
        # version 1, and the crc32 of the stored name: else the name changed after the field was written
        if tag == ZIP_UNICODE_PATH and field[:1] == b"\x01" and field[1:5] == struct.pack("<L", zlib.crc32(stored)):
            stored = field[5:]  # UTF-8 by definition; not valid UTF-8 falls through to CP437 below
            break
        extra = extra[4 + size :]
    try:
        return stored.decode("utf-8")
    except UnicodeDecodeError:
        return info.filename


def _write_zip_file(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    """Stream one member to disk.

    zipfile never returns more than the size declared in the central directory (ZipExtFile._read1
    cuts every chunk to the bytes still `_left`, then checks the CRC), so the declared sizes that
    `_plan` summed bound what lands on disk even when the compressed data holds more.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(info) as src, open(target, "wb") as out:
        shutil.copyfileobj(src, out, MIB)


def _extract_tar(archive: Path, dest: Path, limit_bytes: int) -> None:
    with tarfile.open(archive) as tf:
        infos = tf.getmembers()
        _read_to_end(tf.fileobj)
        members = [_tar_member(info) for info in infos]
        plan = _plan(members, archive.name, limit_bytes)
        contents = [
            info.replace(name=path, deep=False)
            for info, member, path in zip(infos, members, plan.paths, strict=True)
            if member.kind in CONTENTS
        ]
        with _new_folder(dest):
            tf.extractall(dest, members=contents, filter="data")  # the data filter: a second line of defence
            _copy_links(dest, plan.copies)


def _tar_member(info: tarfile.TarInfo) -> Member:
    kind = next((kind for kind, test in TAR_KINDS if test(info)), "file")
    return Member(info.name, kind, info.size, info.linkname if kind in LINKS else None)


def _read_to_end(stream: BinaryIO) -> None:
    """tarfile stops reading at the end-of-archive marker, before the gzip trailer, so a .tar.gz
    with corrupt data or a cut-off trailer would extract without error; reading on makes gzip
    check its CRC and length before anything is written."""
    while stream.read(MIB):
        pass


def _plan(members: Sequence[Member], archive: str, limit_bytes: int) -> Plan:
    """Check every member before anything is written; raise UserError naming the first unsafe one.

    A link is kept only if it points at a file in the archive, and then becomes a copy of that
    file, counted in the size like the file itself: a thousand links to one large file unpack to
    a thousand large files.
    """
    paths = [_checked_path(member, archive) for member in members]
    files = {path: member for path, member in zip(paths, members, strict=True) if member.kind == "file"}
    copies = {}
    for path, member in zip(paths, members, strict=True):
        if member.kind in LINKS:
            target = posixpath.normpath(_link_target(path, member))
            if target not in files:
                problem = f"is a {member.kind} to {member.link!r}, which is not a file in the archive"
                raise _refused(archive, member, problem, "replace the link with the file it points to")
            copies[path] = target
    total = sum(m.size for m in members if m.kind == "file") + sum(files[t].size for t in copies.values())
    if total > limit_bytes:
        raise UserError(
            f"data.source: archive '{archive}' unpacks to {_size(total)}, over the limit of {_size(limit_bytes)}; "
            "nothing was extracted, raise data.max_extract_gb in params.yaml if you trust this archive"
        )
    return Plan(paths, copies)


def _checked_path(member: Member, archive: str) -> str:
    """The member's normalised path inside the destination, or UserError if it is unsafe."""
    reason = _outside_reason(member.name)
    if reason:
        problem = f"points outside the archive ({reason})"
        raise _refused(archive, member, problem, "re-create the archive with relative paths")
    path = posixpath.normpath(_posix(member.name))
    if member.kind in LINKS and _outside_reason(_link_target(path, member)):
        problem = f"is a {member.kind} to {member.link!r}, which points outside the archive"
        raise _refused(archive, member, problem, "re-create the archive without that link")
    if member.kind not in CONTENTS + LINKS:
        fix = "a dataset holds only files and folders, re-create the archive without it"
        raise _refused(archive, member, f"is a {member.kind}", fix)
    return path


def _outside_reason(name: str) -> str | None:
    """Why a path would land outside the extraction folder, or None if it stays inside."""
    posix = _posix(name)
    if posix.startswith("/") or DRIVE.match(posix):
        return "an absolute path"
    normal = posixpath.normpath(posix)
    if normal == ".." or normal.startswith("../"):
        return "'..' climbs above its top folder"
    return None


def _posix(name: str) -> str:
    """Backslashes count as separators, as on Windows: zips made there use them, and an
    extractor there would honour them."""
    return name.replace("\\", "/")


def _link_target(path: str, member: Member) -> str:
    """A link's target relative to the archive's top: a symlink is relative to its own folder,
    a tar hard link names another member."""
    folder = posixpath.dirname(path) if member.kind == "symbolic link" else ""
    return posixpath.join(folder, _posix(member.link or ""))


def _refused(archive: str, member: Member, problem: str, fix: str) -> UserError:
    """Member names and link targets come from the archive, so they are quoted with repr: a name
    holding a newline or a quote cannot break the message over lines or forge it."""
    return UserError(f"data.source: archive '{archive}' member {member.name!r} {problem}; nothing was extracted, {fix}")


def _size(n: int) -> str:
    return f"{n:,} bytes ({n / GB:.1f} GB)"


@contextmanager
def _new_folder(path: Path) -> Iterator[Path]:
    """Create `path`, and remove it again if the body fails, so a half-extracted archive is never used."""
    path.mkdir(parents=True)
    try:
        yield path
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise


def _copy_links(dest: Path, copies: dict[str, str]) -> None:
    for link, target in copies.items():
        (dest / link).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(dest / target, dest / link)
