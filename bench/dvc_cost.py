"""The cost of DVC itself on a big source: no-op `dvc repro` time, and disk held by the cache.

    .venv/bin/python bench/dvc_cost.py --images 50000 [--cache-type project --cache-type copy]
        [--work /tmp/dvc_cost_work] [--keep]

Writes a folder-per-class source of `--images` real JPEG files (10 classes of photo crops, from
bench/photos.py), then, per `--cache-type`, a fresh git + DVC project made from this repo's
pipeline by `bench/common.py`'s `make_project`, as the end-to-end tests make theirs (dvc.yaml, stages,
src, .dvc/config; `project` keeps the repo's `cache.type`, any other value is written into the
copy's .dvc/config). data.source points at the folder; training is kept cheap (model mlp,
1 epoch, image.size 16) while augment keeps its default settings, so data/augmented holds
its 3 copies per source image in a few tar shards, as users get (before the shards, it held 4
files per source image: 250,002 output files at 50,000 images, against 50,012 now).

It times the first `dvc repro`, then `dvc repro` with nothing changed (3 runs and the median)
and `dvc status`, and prints, one line each: the files and bytes of the workspace outputs
data/raw and data/augmented, the bytes in .dvc/cache, how many workspace output files are the
cache object itself (same inode: a hard link, no second copy), and the bytes of the workspace
outputs that are a second copy of a cache object.

The images are tiny (32x32 px, about 1 KB) on purpose: DVC's cost on a no-op run is per file
(a stat and a state lookup for each output file) and its disk cost is per
byte, so the file count is what matters for time and the ratio (not the absolute size) is what
matters for space; real photos make the bytes, and the savings from links, larger.

Work goes to `--work` (default: a new folder under /tmp), never into this repo; it is removed
at the end unless `--keep` (the source folder is reused when it already holds `--images`).

Why .dvc/config says `cache.type = "hardlink,symlink"` (DVC 3.67, dvc-data 3.18):

- `reflink,hardlink,copy` (reflink first, the usual advice) keeps a second copy of every output
  on ext4 and any file system without reflinks: after a stage runs, DVC relinks an output file
  only if it can tell it is not linked the configured way, and a reflink looks like a plain
  file, so with `reflink` (or `copy`) in the list a freshly written output stays a copy
  (dvc-data `checkout._needs_relink`; treeverse/dvc#10549). Measured here, when data/augmented
  still held one file per image: 0 of 250,002 files linked, the same as `copy`.
- `hardlink,copy` links only outputs whose content is new to the cache: files already cached
  (anything a rerun reproduces, or a byte copy of a file already cached) stay
  copies, for the same reason (tests/e2e/test_pipeline_dvc.py catches it: 30 of 91 files).
- `hardlink` first, and nothing copy-like after it, links every output, and lets DVC move a
  new output into the cache by a hard link instead of copying it. `symlink` is the fallback
  where hard links fail (the cache on another disk: the case the DVC docs give symlinks for,
  user-guide/data-management/large-dataset-optimization). Its pitfalls (links dangle when the
  cache is moved or gc'ed; copying the workspace without .dvc/cache copies only links) only
  apply there, where the alternative is an error. Where neither works (exFAT, some network
  shares), `dvc config --local cache.type copy`.
- Hard links are read-only (DVC protects the shared inode; `dvc unprotect` to edit one), which
  is safe here: no stage edits an output in place (imgpipe.core.atomic writes temporaries and
  renames them; DVC deletes a stage's old outputs before running it), and the download stage
  copies the user's files (`shutil.copyfile`), so DVC never links or chmods a user's file.
- ext4 allows 65,000 links to one inode: a dataset with tens of thousands of byte-identical
  images would hit it (treeverse/dvc#6965).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import yaml
from common import BIN, REPO, make_project, run
from photos import make_photos

from imgpipe.core.layout import AUGMENTED, RAW

SIZE = 32  # px: DVC's cost is per file and per byte, not per pixel
OUTPUTS = (RAW.as_posix(), AUGMENTED.as_posix())  # as dvc.lock names them
OVERRIDES = {
    "model": "mlp",
    "image": {"size": 16},
    "train": {"epochs": 1, "batch_size": 256, "log_every": 100},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000, help="source images (spread over 10 classes)")
    parser.add_argument("--cache-type", action="append", default=None, metavar="TYPE",
                        help="'project' (the repo's .dvc/config) or a cache.type value such as 'copy'; "
                             "repeat to compare in one run (default: project)")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a new one under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--noop-runs", type=int, default=3)
    args = parser.parse_args()
    if args.work is not None and REPO in [args.work.resolve(), *args.work.resolve().parents]:
        raise SystemExit("--work must be outside the repository")

    work = args.work or Path(tempfile.mkdtemp(prefix="imgpipe-dvc-cost-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        source = work / f"source-{args.images}"
        start = time.perf_counter()
        make_photos(source, args.images, SIZE, SIZE, classes=10)
        print(f"source: {args.images} JPEG files in 10 classes, {tree_bytes(source):,} bytes "
              f"(ready in {time.perf_counter() - start:.1f} s): {source}")
        print(f"dvc {dvc(['--version'], REPO).stdout.strip()}, {os.cpu_count()} cpus, "
              f"file system: {filesystem(work)}")
        for cache_type in args.cache_type or ["project"]:
            measure(work, source, cache_type, args.noop_runs)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def measure(work: Path, source: Path, cache_type: str, noop_runs: int) -> None:
    repo = work / f"repo-{cache_type.replace(',', '-')}"
    if repo.exists():
        shutil.rmtree(repo)
    make_project(repo, {"data": {"source": str(source)}, **OVERRIDES})
    if cache_type != "project":
        dvc(["config", "cache.type", cache_type], repo)
    label = f"[{cache_type}: cache.type={dvc(['config', 'cache.type'], repo).stdout.strip()}]"

    seconds, out = timed(["repro"], repo)
    print(f"{label} first dvc repro: {seconds:.1f} s ({out.count('Running stage')} stages ran)")
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "first run"], repo)

    times = []
    for _ in range(noop_runs):
        seconds, out = timed(["repro"], repo)
        if "Running stage" in out:
            raise SystemExit(f"{label} a no-op dvc repro ran a stage:\n{out}")
        times.append(seconds)
    print(f"{label} no-op dvc repro: {', '.join(f'{t:.2f}' for t in times)} s; "
          f"median {statistics.median(times):.2f} s")
    seconds, out = timed(["status"], repo)
    print(f"{label} dvc status: {seconds:.2f} s ({out.strip().splitlines()[-1]})")

    total_bytes = total_second = 0
    for name in OUTPUTS:
        s = output_stats(repo, name)
        total_bytes += s["bytes"]
        total_second += s["second_copy_bytes"]
        print(f"{label} {name}: {s['files']:,} files, {s['bytes']:,} bytes; "
              f"{s['linked']:,} files are the cache object (same inode), {s['copies']:,} are separate copies; "
              f"{s['read_only']:,} read-only")
        print(f"{label} {name}: second copy of cached bytes in the workspace: {s['second_copy_bytes']:,} bytes "
              f"(avoided by links: {s['linked_bytes']:,} bytes)")
    cache_bytes, cache_files, cache_disk = du(repo / ".dvc" / "cache")
    print(f"{label} .dvc/cache: {cache_files:,} files, {cache_bytes:,} bytes ({cache_disk:,} bytes on disk)")
    print(f"{label} workspace outputs {total_bytes:,} bytes; of them held twice (workspace + cache): "
          f"{total_second:,} bytes")
    _, _, both_disk = du(repo / ".dvc" / "cache", *(repo / o for o in OUTPUTS))
    print(f"{label} disk used by {' + '.join(OUTPUTS)} + .dvc/cache (each inode once): {both_disk:,} bytes")


def output_stats(repo: Path, out: str) -> dict[str, int]:
    """Compare every file of a directory output with its cache object (from dvc.lock's .dir)."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    md5 = next(o["md5"] for s in lock["stages"].values() for o in s.get("outs", []) if o["path"] == out)
    entries = json.loads(cache_object(repo, md5).read_text())
    s = dict.fromkeys(("files", "bytes", "linked", "copies", "read_only", "linked_bytes", "second_copy_bytes"), 0)
    for entry in entries:
        ws = os.stat(repo / out / entry["relpath"])
        obj = os.stat(cache_object(repo, entry["md5"]))
        same = (ws.st_dev, ws.st_ino) == (obj.st_dev, obj.st_ino)
        s["files"] += 1
        s["bytes"] += ws.st_size
        s["linked" if same else "copies"] += 1
        s["linked_bytes" if same else "second_copy_bytes"] += ws.st_size
        s["read_only"] += not ws.st_mode & 0o222
    return s


def cache_object(repo: Path, md5: str) -> Path:
    return repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def du(*roots: Path) -> tuple[int, int, int]:
    """(bytes, files, bytes on disk) of the regular files under `roots`, each inode counted once."""
    seen: set[tuple[int, int]] = set()
    size = blocks = 0
    for root in roots:
        for path in walk_files(root):
            st = os.lstat(path)
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                size += st.st_size
                blocks += st.st_blocks * 512
    return size, len(seen), blocks


def tree_bytes(root: Path) -> int:
    return sum(os.lstat(p).st_size for p in walk_files(root))


def walk_files(root: Path) -> Iterator[str]:
    for folder, _, files in os.walk(root):
        for name in files:
            yield os.path.join(folder, name)


def filesystem(path: Path) -> str:
    result = subprocess.run(["df", "-T", str(path)], capture_output=True, text=True)
    lines = result.stdout.split()
    return lines[-6] if result.returncode == 0 and len(lines) >= 7 else "unknown"


def dvc(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return run([str(BIN / "dvc"), *args], cwd)


def timed(args: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    result = dvc(args, cwd)
    return time.perf_counter() - start, result.stdout


if __name__ == "__main__":
    main()
