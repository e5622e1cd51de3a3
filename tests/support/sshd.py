"""A real OpenSSH server for DVC's SSH remote: `/usr/sbin/sshd` on 127.0.0.1 and a free port, with
its own host key, config and authorized key, all in one folder.

`sshd_server(root)` generates the keys with `ssh-keygen` (one ed25519 key the server accepts,
another it does not), starts `sshd -D -e -f <root>/sshd_config` and stops it on exit;
`SSHServer.add_remote` configures a repository as docs/remotes.md tells a user to. The server lets
in only the user running the tests (as root, root), with its own sshd_config, not the system's.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from support.project import free_port, run

SBIN = ("/usr/sbin", "/usr/local/sbin")  # where sshd lives, often not on a user's PATH
PRIVSEP_DIR = Path("/run/sshd")  # compiled into Debian's sshd; it refuses to start as root without it


def find(program: str) -> str | None:
    """The absolute path of `program` on PATH or in SBIN."""
    return shutil.which(program, path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN]))


def sshd_missing() -> str | None:
    """Why the SSH remote tests cannot run here, or None."""
    for program, package in (("sshd", "openssh-server"), ("ssh-keygen", "openssh-client")):
        if find(program) is None:
            return f"needs OpenSSH's {program} (Debian: apt-get install {package}; .ci/run does as root)"
    try:
        import dvc_ssh  # noqa: F401
    except ImportError as err:
        return f"needs the ssh extra (pip install -e '.[ssh]'; make install-ssh): {err}"
    return None


@dataclass(frozen=True)
class SSHServer:
    port: int
    user: str
    key: Path  # private key whose public half is in the server's authorized_keys
    wrong_key: Path  # a valid private key the server does not know
    log: Path  # sshd's own log (-e): one line per connection, and why a login failed

    def url(self, path: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{path}"

    def add_remote(self, repo: Path, path: Path, key: Path | None = None, name: str = "storage") -> None:
        """docs/remotes.md's commands: `dvc remote add -d` and the `keyfile`, both in
        `.dvc/config.local` (the port and the folder belong to this test run)."""
        run(["dvc", "remote", "add", "--local", "-f", "-d", name, self.url(path)], repo)
        self.use_key(repo, key or self.key, name)

    def use_key(self, repo: Path, key: Path, name: str = "storage") -> None:
        run(["dvc", "remote", "modify", "--local", name, "keyfile", str(key)], repo)

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def keygen(path: Path) -> Path:
    """A new ed25519 key pair without a passphrase: `path` and `path`.pub."""
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], path.parent)
    return path


def write_config(root: Path, port: int, host_key: Path, authorized: Path) -> Path:
    config = root / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {host_key}\nPidFile {root / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized}\n"
        "StrictModes no\n"  # the key files live in a temporary folder, not in a checked ~/.ssh
        "UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\n"  # CI runs as root: its key is let in, nothing else
        "Subsystem sftp internal-sftp\n"  # DVC moves files over SFTP
    )
    return config


@contextmanager
def sshd_server(root: Path, timeout: float = 10) -> Iterator[SSHServer]:
    """A real sshd on 127.0.0.1 and a free port for the duration of the block, its files in `root`."""
    root.mkdir(parents=True, exist_ok=True)
    host_key, key, wrong_key = (keygen(root / name) for name in ("host_key", "user_key", "wrong_key"))
    authorized = root / "authorized_keys"
    authorized.write_text((root / "user_key.pub").read_text())
    port = free_port()
    config = write_config(root, port, host_key, authorized)
    if os.geteuid() == 0:
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)  # what Debian's service creates at boot
    log = root / "sshd.log"
    with log.open("w") as out:
        # An absolute path: sshd re-executes itself for each connection.
        proc = subprocess.Popen([str(Path(find("sshd")).resolve()), "-D", "-e", "-f", str(config)], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        server = SSHServer(port, pwd.getpwuid(os.getuid()).pw_name, key, wrong_key, log)
        wait_listening(proc, server, timeout)
        yield server
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the listener and any connection it still serves
        proc.wait(timeout=10)


def wait_listening(proc: subprocess.Popen, server: SSHServer, timeout: float) -> None:
    """Return once sshd says it listens; raise with its log when it exits or stays silent."""
    deadline = time.monotonic() + timeout
    while f"Server listening on 127.0.0.1 port {server.port}" not in server.log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"sshd did not start (exit status {proc.poll()}):\n{server.log_tail()}")
        time.sleep(0.02)
