"""A DVC remote under faults: a push and a pull killed halfway complete when run again, and a
push that cannot reach its remote fails with DVC's one-line error and changes nothing. The real
`dvc` and `git` CLIs, against an S3 API server on loopback (moto); the rest of the team's remote
workflow is tests/e2e/test_remotes.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from support.project import command_env, copy_project, dvc_json, make_project, run, tiny_overrides
from support.remotes import S3, credentials_checked, tree_md5


@pytest.fixture(scope="module")
def data_stages_ran(tmp_path_factory) -> Path:
    """A project whose data stages (download, augment) made a few hundred files, committed. Read only."""
    from support.datasets import write_shapes_dataset

    root = tmp_path_factory.mktemp("many-files")
    source = write_shapes_dataset(root / "shapes", per_class=100, size=16)
    repo = make_project(root / "a", tiny_overrides(source))
    run(["dvc", "repro", "augment"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "data"], repo)
    return repo


@pytest.fixture
def many_files(data_stages_ran: Path, tmp_path: Path) -> Path:
    """A private copy of `data_stages_ran` for a test that pushes, pulls and configures it."""
    return copy_project(data_stages_ran, tmp_path / "a")


def kill_when(args: list[str], cwd: Path, started, timeout: float = 60) -> bool:
    """Run `args`, SIGKILL it (and its children) once `started()` is true; False when it ended first."""
    proc = subprocess.Popen(args, cwd=cwd, env=command_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if started():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    proc.wait()
    return False


def test_an_interrupted_push_then_pull_complete_when_run_again(many_files: Path, s3: S3, tmp_path: Path):
    bucket = s3.new_bucket()
    s3.add_remote(many_files, bucket, local=True)
    expected = len(list((many_files / "data/raw").rglob("*.png")))
    assert kill_when(["dvc", "push", "-j", "1"], many_files, lambda: len(s3.objects(bucket)) > 10)
    assert 0 < len(s3.objects(bucket)) < expected  # killed halfway
    run(["dvc", "push"], many_files)
    assert dvc_json(many_files, "status", "-c") == {}

    b = tmp_path / "b"
    run(["git", "clone", "-q", str(many_files), str(b)], tmp_path)
    s3.add_remote(b, bucket, local=True)
    cache = b / ".dvc/cache/files"
    data_stages = ["download", "augment"]  # the only stages this project ran
    assert kill_when(["dvc", "pull", "-j", "1", *data_stages], b,
                     lambda: cache.exists() and sum(1 for _ in cache.rglob("*")) > 40)
    assert not (b / "data/raw").exists() or len(tree_md5(b / "data/raw")) < expected  # killed halfway
    run(["dvc", "pull", *data_stages], b)
    for out in ("data/raw", "data/augmented"):
        assert tree_md5(b / out) == tree_md5(many_files / out), out
    assert dvc_json(b, "status", *data_stages) == {}


def test_push_failures_are_dvc_one_liners_and_lose_nothing(many_files: Path, s3: S3, tmp_path: Path):
    before = {out: tree_md5(many_files / out) for out in ("data", ".dvc/cache")}

    def push_fails(*message: str, env: dict | None = None) -> None:
        result = subprocess.run(["dvc", "push"], cwd=many_files, env={**command_env(), **(env or {})},
                                capture_output=True, text=True, timeout=120)
        assert result.returncode != 0
        assert all(m in result.stderr for m in message), result.stderr
        assert "Traceback" not in result.stderr

    push_fails("no remote specified", "dvc remote add -d <remote name> <remote url>")  # README: Troubleshooting
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # a port nothing listens on: connections are refused
    port = closed.getsockname()[1]
    s3.add_remote(many_files, "bucket-x", name="refused", local=True)
    run(["dvc", "remote", "modify", "--local", "refused", "endpointurl", f"http://127.0.0.1:{port}"], many_files)
    push_fails("Could not connect to the endpoint URL", env={"AWS_MAX_ATTEMPTS": "1"})
    closed.close()
    s3.add_remote(many_files, s3.new_bucket(), local=True)
    with credentials_checked(s3):
        push_fails("Forbidden: An error occurred (403)")
    assert {out: tree_md5(many_files / out) for out in before} == before  # nothing local changed
    run(["dvc", "push"], many_files)  # with the credentials accepted again, the same push goes through
