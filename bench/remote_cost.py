"""The cost of sharing a run through an S3 remote: push, pull and cloud-status times, and objects.

    .venv/bin/python bench/remote_cost.py [--images 0 --images 10000] [--work DIR] [--keep]

Needs the s3 extra (`pip install -e '.[dev,s3]'`, which `make test` installs). Per `--images`
(0: the default data, builtin:digits with params.yaml as it is; N: a folder of N real JPEG files
in 10 classes from bench/photos.py, with cheap training, since only the files matter here):

1. a fresh git + DVC project from this repo's pipeline (tests/helpers.make_project), `dvc repro`;
2. an S3 remote on a real S3 API server on loopback (moto's ThreadedMotoServer, in this process,
   as in the tests: tests/remotes.py), then `dvc push`: wall time, objects and bytes in the bucket;
3. `dvc status -c` with nothing to do (every object already on the remote);
4. `git clone` + `dvc pull` into a second project with its own empty cache;
5. the reviewer's pull (README: `dvc pull models/model.pt predictions/predictions.tsv`) in a third.

Times are wall seconds on this machine against a server on the same machine: no network latency,
so they are the floor of what a real remote costs, and what is left is per object (moto handles
each request in Python). Work goes to `--work` (default: a new folder under /tmp) and is removed
unless `--keep`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from photos import make_photos

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "tests"))
from helpers import make_project, run  # noqa: E402  (the end-to-end tests' project setup, shared)
from remotes import REVIEWER_PULL, s3_extra_missing, s3_server  # noqa: E402

SIZE = 32  # px: the cost is per object, and small files make it show
CHEAP_TRAINING = {"model": "mlp", "image": {"size": 16}, "train": {"epochs": 1, "batch_size": 256, "log_every": 100}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, action="append", default=None,
                        help="source images; 0 = the default data (repeat to compare; default: 0 and 10000)")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a new one under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    if reason := s3_extra_missing():
        raise SystemExit(reason)
    work = args.work or Path(tempfile.mkdtemp(prefix="imgpipe-remote-cost-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"dvc {dvc(['--version'], REPO).stdout.strip()}, {os.cpu_count()} cpus")
    try:
        with s3_server() as s3:
            for images in args.images or [0, 10_000]:
                measure(work, s3, images)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def measure(work: Path, s3, images: int) -> None:
    label = "[default data]" if images == 0 else f"[{images} images]"
    if images == 0:
        overrides = {}
    else:
        source = make_photos(work / f"source-{images}", images, SIZE, SIZE, classes=10)
        overrides = {"data": {"source": str(source)}, **CHEAP_TRAINING}
    a = work / f"a-{images}"
    shutil.rmtree(a, ignore_errors=True)
    make_project(a, overrides)
    seconds = timed(["repro"], a)
    bucket = s3.new_bucket()
    s3.add_remote(a, bucket)
    run(["git", "add", "-A"], a)
    run(["git", "commit", "-qm", "run"], a)
    files = {out: count_files(a / out) for out in ("data/raw", "data/augmented")}
    print(f"{label} dvc repro: {seconds:.1f} s; workspace files: "
          + ", ".join(f"{out} {n:,}" for out, n in files.items()))

    seconds = timed(["push"], a)
    objects = s3.objects(bucket)
    print(f"{label} dvc push: {seconds:.1f} s; {len(objects):,} objects, {sum(objects.values()):,} bytes"
          + (f" ({len(objects) / images:.2f} objects per source image)" if images else ""))
    seconds = timed(["status", "-c"], a)
    print(f"{label} dvc status -c (nothing to push): {seconds:.1f} s")

    for name, args in (("dvc pull", ["pull"]), ("reviewer's pull", REVIEWER_PULL)):
        b = work / f"b-{images}"
        shutil.rmtree(b, ignore_errors=True)
        run(["git", "clone", "-q", str(a), str(b)], work)
        s3.add_credentials(b)
        seconds = timed(args, b)
        print(f"{label} {name} into a fresh clone: {seconds:.1f} s; "
              f"{count_files(b / 'data'):,} files under data/, model {'present' if (b / 'models/model.pt').exists() else 'absent'}")
        shutil.rmtree(b)


def count_files(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def dvc(args: list[str], cwd: Path):
    return run([str(BIN / "dvc"), *args], cwd)


def timed(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    dvc(args, cwd)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
