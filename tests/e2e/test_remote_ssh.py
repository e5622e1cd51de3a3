"""DVC's SSH remote against a real OpenSSH server on loopback (tests/support/sshd.py), with the real `dvc`
and `git` CLIs: machine A (a copy of the session's `committed_run`) pushes; a fresh clone B, its
cache empty, pulls the same bytes and reruns nothing; keys the server cannot use fail with DVC's
one-line errors (docs/remotes.md, Troubleshooting).

Every command here runs with HOME an empty folder and no SSH agent. The SSH client under DVC
(dvc-ssh on asyncssh) reads ~/.ssh/config, offers the agent's keys and falls back to ~/.ssh/id_*
(asking for their passphrases), so the developer's own setup could change what these tests see; it
never checks the server's host key (sshfs connects with known_hosts=None), so no known_hosts file
is read or written either.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.project import copy_project, run
from support.remotes import assert_up_to_date, tree_md5
from support.sshd import SSHServer, sshd_missing, sshd_server

OUTPUTS = ("data", "models", "predictions")  # every DVC-cached output of the pipeline lives here


@pytest.fixture(scope="module")
def sshd(tmp_path_factory) -> Iterator[SSHServer]:
    """One real sshd for the module; each test pushes into a folder of its own."""
    if reason := sshd_missing():
        pytest.skip(reason)
    with sshd_server(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(autouse=True)
def empty_home(monkeypatch, tmp_path: Path) -> Iterator[Path]:
    """HOME for every command of the test: an empty folder, no agent; still empty afterwards."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    yield home
    assert not (home / ".ssh").exists(), "the SSH client wrote into ~/.ssh"


def test_a_run_goes_to_an_ssh_server_and_back(committed_run, sshd: SSHServer, tmp_path: Path):
    a = copy_project(committed_run.repo, tmp_path / "a")
    store = tmp_path / "store"  # the remote's folder, on the server's side
    sshd.add_remote(a, store)
    start = time.perf_counter()
    run(["dvc", "push"], a)
    push_s = time.perf_counter() - start
    objects = [p for p in store.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".dir") for p in objects) and len(objects) > 5, sshd.log_tail()
    assert f"Accepted publickey for {sshd.user} from 127.0.0.1" in sshd.log.read_text()

    # Machine B: a fresh clone with its own, empty cache pulls, and nothing reruns.
    b = tmp_path / "b"
    run(["git", "clone", "-q", str(a), str(b)], tmp_path)
    assert not (b / ".dvc/cache").exists() and not (b / "models/model.pt").exists()
    sshd.add_remote(b, store)
    start = time.perf_counter()
    run(["dvc", "pull"], b)
    pull_s = time.perf_counter() - start
    print(f"ssh round trip: push {push_s:.1f} s + pull {pull_s:.1f} s, {len(objects)} objects")

    pulled = {out: tree_md5(b / out) for out in OUTPUTS}
    assert "model.pt" in pulled["models"] and "predictions.tsv" in pulled["predictions"]
    assert pulled == {out: tree_md5(a / out) for out in OUTPUTS}
    assert_up_to_date(b)


def test_keys_the_server_cannot_use_fail_with_dvcs_error(committed_run, sshd: SSHServer, tmp_path: Path):
    a = copy_project(committed_run.repo, tmp_path / "a")  # has every output in its cache to push
    b = tmp_path / "b"  # a fresh clone: has everything to pull
    run(["git", "clone", "-q", str(committed_run.repo), str(b)], tmp_path)
    store = tmp_path / "store"
    url = f"{store}/files/md5"  # where DVC 3 keeps the objects, as its errors name it

    sshd.add_remote(a, store, key=sshd.wrong_key)  # a valid key the server's authorized_keys lacks
    sshd.add_remote(b, store, key=sshd.wrong_key)

    def fails(repo: Path, command: str, message: str) -> None:
        result = run(["dvc", command], repo, check=False)
        assert result.returncode != 0
        assert result.stderr.splitlines()[0] == message, result.stderr + sshd.log_tail()
        assert "Traceback" not in result.stderr

    denied = f"Permission denied for user {sshd.user} on host 127.0.0.1"
    fails(a, "push", f"ERROR: unexpected error - {denied}: {denied}")
    fails(b, "pull", f"ERROR: failed to connect to ssh ({url}) - {denied}: {denied}")
    missing = tmp_path / "no-such-key"  # dvc-ssh reads the keyfile before it connects
    sshd.use_key(a, missing)
    fails(a, "push", f"ERROR: unexpected error - [Errno 2] No such file or directory: '{missing}'")
    assert not store.exists() and not (b / "models/model.pt").exists() and not (b / ".dvc/cache").exists()
    # The same remote with the key the server knows gets through: only the key was wrong.
    sshd.use_key(b, sshd.key)
    run(["dvc", "status", "-c"], b)
