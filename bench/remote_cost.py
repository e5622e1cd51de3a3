"""The cost of sharing a run through an S3 remote: push, pull and cloud-status times, and objects.

    .venv/bin/python bench/remote_cost.py [--images 0 --images 10000] [--work DIR] [--keep]

Needs the s3 extra (`pip install -e '.[dev,s3]'`, which `make test` installs). Per `--images`
(0: the default data, builtin:digits with params.yaml as it is; N: a folder of N real JPEG files
in 10 classes from bench/photos.py, with cheap training, since only the files matter here):

1. a fresh git + DVC project from this repo's pipeline (bench/common.py's `make_project`), `dvc repro`;
2. an S3 remote on a real S3 API server on loopback (moto's ThreadedMotoServer, in this process,
   as the tests start theirs), set up as README tells a team to, then `dvc push`: wall time, objects
   and bytes in the bucket;
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
import itertools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from common import BIN, REPO, make_project, run
from photos import make_photos

from imgpipe.core.layout import AUGMENTED, MODEL, PREDICTIONS, RAW

SIZE = 32  # px: the cost is per object, and small files make it show
CHEAP_TRAINING = {"model": "mlp", "image": {"size": 16}, "train": {"epochs": 1, "batch_size": 256, "log_every": 100}}
REVIEWER_PULL = ["pull", str(MODEL), str(PREDICTIONS)]  # README's `dvc pull` for a reviewer
KEY_ID = SECRET = "testing"  # moto accepts any credentials; these never leave the machine


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
    files = {out.as_posix(): count_files(a / out) for out in (RAW, AUGMENTED)}
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
              f"{count_files(b / RAW.parent):,} files under {RAW.parent}/, model {'present' if (b / MODEL).exists() else 'absent'}")
        shutil.rmtree(b)


def s3_extra_missing() -> str | None:
    """Why this bench cannot run here (the `[s3]` extra, and moto from `[dev]`), or None."""
    try:
        import boto3  # noqa: F401
        import dvc_s3  # noqa: F401
        from moto.server import ThreadedMotoServer  # noqa: F401
    except ImportError as err:
        return f"needs the s3 extra and moto (pip install -e '.[dev,s3]'; `make test` does): {err}"
    return None


@dataclass
class S3:
    """A moto S3 server at `endpoint`: buckets, what they hold, and a repository's remote on one."""

    endpoint: str
    _buckets: Iterator[int] = field(default_factory=itertools.count)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=KEY_ID,
                            aws_secret_access_key=SECRET, region_name="us-east-1")

    def new_bucket(self) -> str:
        name = f"imgpipe-{next(self._buckets)}"
        self.client().create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str) -> dict[str, int]:
        """Every object's key and size in `bucket` (each DVC cache object is one)."""
        out = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket):
            out.update((o["Key"], o["Size"]) for o in page.get("Contents", []))
        return out

    def add_remote(self, repo: Path, bucket: str, name: str = "storage") -> None:
        """README's commands: `dvc remote add -d` and the endpoint in `.dvc/config`, the credentials local."""
        run(["dvc", "remote", "add", "-f", "-d", name, f"s3://{bucket}/dvcstore"], repo)
        run(["dvc", "remote", "modify", name, "endpointurl", self.endpoint], repo)
        self.add_credentials(repo, name)

    def add_credentials(self, repo: Path, name: str = "storage") -> None:
        run(["dvc", "remote", "modify", "--local", name, "access_key_id", KEY_ID], repo)
        run(["dvc", "remote", "modify", "--local", name, "secret_access_key", SECRET], repo)


@contextmanager
def s3_server() -> Iterator[S3]:
    """A moto S3 server on 127.0.0.1 and a free port, for the duration of the block."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3(f"http://{host}:{port}")
    finally:
        server.stop()


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
