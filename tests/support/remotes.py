"""DVC remotes for tests and benchmarks: a real S3 API server on loopback, as dvc-s3's tests use.

`s3_server()` starts moto's `ThreadedMotoServer` on 127.0.0.1 and a free port and stops it on
exit; `S3.add_remote` configures a repository the way README tells a team to (the URL and
endpoint in the committed `.dvc/config`, credentials in `.dvc/config.local`).
`tree_md5` and `assert_up_to_date` check what a pull brought, for any remote (tests/support/sshd.py has
the SSH server).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from support.project import dvc_json, run

REVIEWER_PULL = ["pull", "models/model.pt", "predictions/predictions.tsv"]  # README's `dvc pull` for a reviewer
KEY_ID = SECRET = "testing"  # moto accepts any credentials; these never leave the machine


def s3_extra_missing() -> str | None:
    """Why the S3 tests cannot run here (the `[s3]` and `[dev]` extras), or None."""
    try:
        import boto3  # noqa: F401
        import dvc_s3  # noqa: F401
        from moto.server import ThreadedMotoServer  # noqa: F401
    except ImportError as err:
        return f"needs the s3 extra and moto (pip install -e '.[dev,s3]'; `make test` does): {err}"
    return None


@dataclass
class S3:
    endpoint: str
    _buckets: Iterator[int] = field(default_factory=itertools.count)

    def client(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )

    def new_bucket(self) -> str:
        """An empty bucket of its own, so tests sharing one server never see each other's objects."""
        name = f"imgpipe-{next(self._buckets)}"
        self.client().create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str) -> dict[str, int]:
        """Every object's key and size in `bucket` (each DVC cache object is one)."""
        out = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket):
            out.update((o["Key"], o["Size"]) for o in page.get("Contents", []))
        return out

    def add_remote(self, repo: Path, bucket: str, name: str = "storage", local: bool = False) -> None:
        """README's commands: `dvc remote add -d` and the endpoint (in `.dvc/config`, or only in
        `.dvc/config.local` with `local`), then the credentials (always local to `repo`)."""
        scope = ["--local"] if local else []
        run(["dvc", "remote", "add", *scope, "-f", "-d", name, f"s3://{bucket}/dvcstore"], repo)
        run(["dvc", "remote", "modify", *scope, name, "endpointurl", self.endpoint], repo)
        self.add_credentials(repo, name)

    def add_credentials(self, repo: Path, name: str = "storage") -> None:
        run(["dvc", "remote", "modify", "--local", name, "access_key_id", KEY_ID], repo)
        run(["dvc", "remote", "modify", "--local", name, "secret_access_key", SECRET], repo)


@contextmanager
def credentials_checked(s3: S3) -> Iterator[None]:
    """Within the block the server checks credentials, as S3 does: ours then are unknown to it.
    (moto's own switch: POST /moto-api/reset-auth with the number of requests to let through.)"""
    import urllib.request

    def reset_auth(count: str) -> None:
        request = urllib.request.Request(f"{s3.endpoint}/moto-api/reset-auth", count.encode(), {"Content-Type": "text/plain"})
        urllib.request.urlopen(request).close()

    reset_auth("0")
    try:
        yield
    finally:
        reset_auth("inf")


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


def tree_md5(root: Path) -> dict[str, str]:
    """The md5 of every file under `root`, by path: equal for two byte-identical trees."""
    return {
        p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def assert_up_to_date(repo: Path) -> None:
    """`dvc status` clean and `dvc repro` runs no stage: nothing is recomputed after a pull."""
    assert dvc_json(repo, "status") == {}
    out = run(["dvc", "repro"], repo).stdout
    assert "Running stage" not in out, out
