"""Write stage outputs atomically so DVC never caches a half-written result.

A stage stages every output beside its target (`.<name>.tmp-<pid>-*`) and only when all of
them are complete moves them into place: first every old output out of the way, then every
new one in. Whatever moment a kill lands, the targets are the old set, the new set, or a set
with at least one output missing, which `dvc repro` reruns and `dvc commit` refuses; never a
mix of old and new files that looks complete. Ctrl-C and SIGTERM are held while temporaries are
created, removed or renamed (their handlers run once that step is done), so they never leave one
behind or interrupt the renames; temporaries left by SIGKILL (which skips all cleanup) are
removed by the next run that writes the same target.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from imgpipe.core.errors import UserError

_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)-")


@dataclass
class StagedOutputs:
    """Temporary outputs waiting to replace their targets together (see `staged_outputs`)."""

    pending: list[tuple[Path, Path]] = field(default_factory=list)  # (temporary, target)
    made: list[Path] = field(default_factory=list)  # parent folders created for the targets
    targets: list[Path] = field(default_factory=list)  # every target a temporary was asked for

    def folder(self, target: Path) -> Path:
        """An empty temporary folder that will become `target`."""
        with signals_deferred(), writable(target):  # created and registered together, so discard always finds it
            target = self._prepare(target)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
            self.pending.append((tmp, target))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; outputs get the usual mode
        return tmp

    def file(self, target: Path) -> Path:
        """A temporary file path that will become `target`."""
        with signals_deferred(), writable(target):
            target = self._prepare(target)
            fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent)
            tmp = Path(name)
            self.pending.append((tmp, target))
            os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())
        return tmp

    def _prepare(self, target: Path) -> Path:
        target = Path(target)
        if any(t == target for _, t in self.pending):
            raise ValueError(f"{target} is staged twice")
        missing = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
        target.parent.mkdir(parents=True, exist_ok=True)
        self.made += missing  # deepest first
        remove_leftovers(target)
        self.targets.append(target)  # before its temporary exists: discard finds it even unregistered
        return target

    def discard(self) -> None:
        """Remove the temporaries, and the folders made for them if nothing else landed there."""
        with signals_deferred():  # a second Ctrl-C must not cut the clean-up short
            self._discard()

    def _discard(self) -> None:
        for tmp, _ in self.pending:
            _remove(tmp)
        self.pending.clear()
        for target in self.targets:  # one made but not yet registered when an interrupt landed
            own = f".{target.name}.tmp-{os.getpid()}-"
            for path in target.parent.iterdir() if target.parent.is_dir() else []:
                if path.name.startswith(own):
                    _remove(path)
        self.targets.clear()
        for folder in self.made:
            with contextlib.suppress(OSError):
                folder.rmdir()

    def commit(self) -> None:
        """Old outputs out, then new ones in; each step is one rename. Ctrl-C and SIGTERM wait
        until all renames are done (only SIGKILL can land in between)."""
        with signals_deferred():
            self._commit()

    def _commit(self) -> None:
        olds = []
        for _, target in self.pending:
            if target.exists() or target.is_symlink():
                old = target.with_name(f".{target.name}.old-{os.getpid()}-{id(self):x}")
                os.replace(target, old)
                olds.append(old)
        for tmp, target in self.pending:
            os.replace(tmp, target)
        self.pending.clear()
        self.targets.clear()
        for old in olds:
            _remove(old)


@contextlib.contextmanager
def staged_outputs() -> Iterator[StagedOutputs]:
    """Stage several outputs; they replace their targets only if the block completes.

    On any error, Ctrl-C or SIGTERM (see `imgpipe.core.stage_app`) the temporaries are removed and the
    targets are untouched.
    """
    staged = StagedOutputs()
    try:
        yield staged
    except BaseException:
        staged.discard()
        raise
    staged.commit()


@contextlib.contextmanager
def writable(target: Path) -> Iterator[None]:
    """An output that cannot be created where it is asked for (a read-only folder, a parent that
    is a file, a full disk) is a UserError naming it, not a traceback."""
    try:
        yield
    except OSError as err:
        raise UserError(f"{target}: cannot write the output there ({err.strerror or err}); choose another path or fix its folder's permissions") from None


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target`; on success it replaces `target`."""
    with staged_outputs() as staged:
        yield staged.folder(target)


@contextlib.contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """Yield a temporary file path beside `target`; on success it replaces `target`."""
    with staged_outputs() as staged:
        yield staged.file(target)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends; their handlers then run as usual.

    The handlers are swapped for ones that only take note, rather than the signals blocked: a
    blocked process-wide signal goes to another thread (torch starts several), and Python then
    runs its handler in the main thread at once, inside the block.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread runs Python signal handlers
        return
    held = [signal.SIGINT, signal.SIGTERM]
    if any(signal.getsignal(signum) is None for signum in held):
        yield  # a handler installed outside Python cannot be put back
        return
    arrived: list[int] = []
    # ExitStack runs every callback even when one raises: each handler is put back, then what
    # arrived is raised again, and its own handler runs as if the signal came just then.
    with contextlib.ExitStack() as restore:
        restore.callback(_raise_again, arrived)
        for signum in held:
            restore.callback(signal.signal, signum, signal.getsignal(signum))
            signal.signal(signum, lambda signum, frame: arrived.append(signum))
        yield


def _raise_again(signums: list[int]) -> None:
    for signum in dict.fromkeys(signums):
        signal.raise_signal(signum)


def remove_leftovers(target: Path) -> None:
    """Delete temporaries of `target` left by runs that were killed (their process is gone)."""
    if not target.parent.is_dir():
        return
    for path in target.parent.iterdir():
        match = _LEFTOVER.match(path.name)
        if match and match["name"] == target.name and not _alive(int(match["pid"])):
            _remove(path)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def scratch_dir(beside: Path) -> Iterator[Path]:
    """A private working folder beside `beside` (on the same disk, not in a RAM-backed /tmp),
    removed when the block ends; one left by SIGKILL goes with the next run's leftovers."""
    beside = Path(beside)
    made = [p for p in [beside.parent, *beside.parent.parents] if not p.exists()]  # deepest first
    path = None
    try:
        beside.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(beside)
        # A signal held while the folder is made is raised right after the `with`, inside this
        # `try`, so the `finally` below still removes the folder.
        with signals_deferred():
            path = Path(tempfile.mkdtemp(prefix=f".{beside.name}.tmp-{os.getpid()}-scratch-", dir=beside.parent))
        yield path
    finally:
        with signals_deferred():
            if path is not None:
                _remove(path)
            for folder in made:  # only if nothing else landed there
                with contextlib.suppress(OSError):
                    folder.rmdir()
