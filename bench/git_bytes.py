"""What one run adds to git: the result files committed with dvc.lock, and `imgpipe review`'s time.

    .venv/bin/python bench/git_bytes.py                       # the built-in digits, default params
    .venv/bin/python bench/git_bytes.py --test-images 10000   # a photo set, 10,000 test images
        [--work /tmp/git_bytes_work] [--keep]

Makes a fresh git + DVC project from this repo's pipeline (`bench/common.py`'s `make_project`, as
the end-to-end tests do), runs `dvc repro`, commits, and prints every file the run put in git
(dvc.lock and metrics/, from `git ls-files`) with its bytes and its compressed size in git's
object store (zlib, as `git cat-file` reports), then the totals and the bytes per test image.
With `--test-images N`, the source is 1.25 N real JPEG crops (bench/photos.py, 10 classes,
64x48 px) split 10/10/80, so the test split holds N images; training is one cheap epoch (model
mlp, 16 px), since only the size of the results matters here. Then it times `imgpipe review`
of a second run (`dvc exp run -S model=dummy`, in the workspace) against the first, without
and with plots (median of 3 each).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import yaml
from common import BIN, make_project, run
from photos import make_photos

from imgpipe.core.layout import SPLIT_METRICS


def photo_overrides(source: Path) -> dict:
    return {
        "data": {"source": str(source)},
        "augment": {"rotations": [], "shear": 0},
        "split": {"train": 0.1, "val": 0.1, "test": 0.8},
        "model": "mlp",
        "image": {"size": 16, "channels": 3},
        "train": {"epochs": 1, "batch_size": 256},
    }


def committed_results(repo: Path) -> list[tuple[str, int, int]]:
    """(path, bytes, bytes in git's object store) of dvc.lock and every file under metrics/."""
    files = run(["git", "ls-files", "dvc.lock", "metrics"], repo).stdout.split()
    blobs = run(["git", "rev-parse", *[f"HEAD:{f}" for f in files]], repo).stdout.split()
    sizes = subprocess.run(
        ["git", "cat-file", "--batch-check=%(objectsize) %(objectsize:disk)"],
        cwd=repo, input="\n".join(blobs) + "\n", capture_output=True, text=True, check=True,
    ).stdout.split("\n")
    return [(f, *map(int, line.split())) for f, line in zip(files, sizes, strict=False)]


def time_review(repo: Path, *args: str, rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run([str(BIN / "imgpipe"), "review", "--base", "main", *args], repo)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test-images", type=int, default=0, help="0: the built-in digits with default params")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="git_bytes_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.test_images:
            source = make_photos(work / "photos", images=args.test_images * 5 // 4, width=64, height=48)
            overrides = photo_overrides(source)
        else:
            overrides = {}
        repo = work / "repo"
        shutil.rmtree(repo, ignore_errors=True)
        make_project(repo, overrides)
        run(["git", "branch", "-M", "main"], repo)
        start = time.perf_counter()
        run(["dvc", "repro"], repo)
        print(f"dvc repro: {time.perf_counter() - start:.0f} s")
        run(["git", "add", "-A"], repo)
        run(["git", "commit", "-qm", "run"], repo)

        rows = committed_results(repo)
        width = max(len(f) for f, *_ in rows)
        for path, size, disk in rows:
            print(f"{path:<{width}}  {size:>9,} B  {disk:>8,} B in git")
        total, disk = sum(r[1] for r in rows), sum(r[2] for r in rows)
        test = yaml.safe_load((repo / SPLIT_METRICS / "split.json").read_text())["images"]["test"]
        outcomes = next(r for r in rows if r[0].endswith("outcomes.json"))
        print(f"total: {len(rows)} files, {total:,} B ({disk:,} B compressed in git) for {test:,} test images")
        print(f"outcomes.json: {outcomes[1] / test:.2f} B per test image; "
              f"everything else: {(total - outcomes[1]):,} B")

        run(["git", "checkout", "-qb", "head"], repo)
        run(["dvc", "exp", "run", "-S", "model=dummy"], repo)  # reruns train, evaluate, predict
        print(f"imgpipe review (Markdown only): {time_review(repo):.2f} s")
        print(f"imgpipe review --out (with PNG plots): {time_review(repo, '--out', str(work / 'review/review.md')):.2f} s")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
