"""atomic_dir / atomic_file: a stage output is either the old one or the complete new one."""

from __future__ import annotations

import os
import signal
import stat
import tempfile
import threading
import time

import pytest

from imgpipe.core.atomic import atomic_dir, atomic_file, scratch_dir, signals_deferred, staged_outputs


def tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def siblings(target):
    return sorted(p.name for p in target.parent.iterdir())


@pytest.fixture
def previous(tmp_path):
    target = tmp_path / "out"
    (target / "sub").mkdir(parents=True)
    (target / "a.txt").write_text("old a")
    (target / "sub" / "b.txt").write_text("old b")
    return target


class Boom(Exception):
    pass


def test_body_error_leaves_previous_target_and_no_temp_folder(previous):
    with pytest.raises(Boom), atomic_dir(previous) as tmp:
        assert tmp.parent == previous.parent
        assert tmp != previous
        assert list(tmp.iterdir()) == []
        (tmp / "a.txt").write_text("new a")
        (tmp / "half").mkdir()
        raise Boom("stage failed half way")
    assert tree(previous) == {"a.txt": b"old a", "sub/b.txt": b"old b"}
    assert not tmp.exists()
    assert siblings(previous) == ["out"]


def test_keyboard_interrupt_also_cleans_up(previous):
    with pytest.raises(KeyboardInterrupt), atomic_dir(previous) as tmp:
        (tmp / "x").write_text("partial")
        raise KeyboardInterrupt
    assert tree(previous) == {"a.txt": b"old a", "sub/b.txt": b"old b"}
    assert siblings(previous) == ["out"]


def test_body_error_without_previous_target_creates_nothing(tmp_path):
    target = tmp_path / "nested" / "out"
    with pytest.raises(Boom), atomic_dir(target) as tmp:
        (tmp / "x").write_text("partial")
        raise Boom
    assert not target.exists()
    assert not target.parent.exists()  # the folder made for it is gone too


def test_success_replaces_previous_target(previous):
    with atomic_dir(previous) as tmp:
        (tmp / "new.txt").write_text("new")
        (tmp / "deep" / "er").mkdir(parents=True)
        (tmp / "deep" / "er" / "c.txt").write_text("c")
        assert tree(previous) == {"a.txt": b"old a", "sub/b.txt": b"old b"}  # untouched until the end
    assert tree(previous) == {"new.txt": b"new", "deep/er/c.txt": b"c"}  # old files gone, not merged
    assert not tmp.exists()
    assert siblings(previous) == ["out"]  # no temp or backup folder left


def test_success_creates_missing_target_and_parents(tmp_path):
    target = tmp_path / "a" / "b" / "out"
    with atomic_dir(target) as tmp:
        (tmp / "f").write_text("x")
    assert tree(target) == {"f": b"x"}
    assert siblings(target) == ["out"]


def test_success_replaces_a_file_at_the_target(tmp_path):
    target = tmp_path / "out"
    target.write_text("a file")
    with atomic_dir(target) as tmp:
        (tmp / "f").write_text("x")
    assert target.is_dir()
    assert tree(target) == {"f": b"x"}
    assert siblings(target) == ["out"]


def test_empty_body_gives_empty_target(previous):
    with atomic_dir(previous):
        pass
    assert previous.is_dir()
    assert list(previous.iterdir()) == []


def test_output_folder_gets_the_usual_mode(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "out"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755


def test_atomic_file_success_and_failure(tmp_path):
    target = tmp_path / "sub" / "file.csv"
    with atomic_file(target) as tmp:
        tmp.write_text("v1")
    assert target.read_text() == "v1"
    with pytest.raises(Boom), atomic_file(target) as tmp:
        tmp.write_text("v2 half")
        raise Boom
    assert target.read_text() == "v1"
    assert siblings(target) == ["file.csv"]


def write_set(staged, root, version):
    """Stage the three outputs of a stage like split: a folder, a file, another folder."""
    folder = staged.folder(root / "metrics")
    (folder / "m.json").write_text(version)
    staged.file(root / "data" / "table.csv").write_text(version)
    (staged.folder(root / "models") / "w.bin").write_text(version)


OUTPUTS = ("metrics/m.json", "data/table.csv", "models/w.bin")


def versions(root):
    """What each output holds now, or None where it is missing."""
    return [(root / rel).read_text() if (root / rel).exists() else None for rel in OUTPUTS]


def test_staged_outputs_replace_all_targets_together(tmp_path):
    with staged_outputs() as staged:
        write_set(staged, tmp_path, "old")
    with staged_outputs() as staged:
        write_set(staged, tmp_path, "new")
        assert versions(tmp_path) == ["old", "old", "old"]  # nothing moves before the block ends
    assert versions(tmp_path) == ["new", "new", "new"]
    assert sorted(p.name for p in tmp_path.rglob(".*")) == []


def test_staged_outputs_failure_keeps_every_old_output(tmp_path):
    with staged_outputs() as staged:
        write_set(staged, tmp_path, "old")
    with pytest.raises(Boom), staged_outputs() as staged:
        write_set(staged, tmp_path, "new")
        raise Boom
    assert versions(tmp_path) == ["old", "old", "old"]
    assert sorted(p.name for p in tmp_path.rglob(".*")) == []


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs (commit has no cleanup path)."""


@pytest.mark.parametrize("renames_before_kill", range(6))
def test_a_kill_during_commit_never_leaves_a_complete_mix(tmp_path, monkeypatch, renames_before_kill):
    # Three old outputs out of the way, three new ones in: six renames. Whichever one the kill
    # lands before, the outputs are all old, all new, or at least one is missing (so `dvc repro`
    # reruns the stage and `dvc commit` refuses) -- never old and new files side by side.
    import imgpipe.core.atomic as outputs

    with staged_outputs() as staged:
        write_set(staged, tmp_path, "old")
    real_replace, done = os.replace, []

    def replace(src, dst):
        if len(done) == renames_before_kill:
            raise Killed
        done.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", replace)
    with pytest.raises(Killed), staged_outputs() as staged:
        write_set(staged, tmp_path, "new")
    now = versions(tmp_path)
    assert now == ["old"] * 3 or None in now, now
    assert not ({"old", "new"} <= set(now)) or None in now
    monkeypatch.setattr(outputs.os, "replace", real_replace)
    # The next run clears what the killed one left (its pid is gone) and writes a full set.
    monkeypatch.setattr(outputs, "_alive", lambda pid: False)
    with staged_outputs() as staged:
        write_set(staged, tmp_path, "next")
    assert versions(tmp_path) == ["next"] * 3
    assert sorted(p.name for p in tmp_path.rglob(".*")) == []


def test_leftovers_of_a_live_process_are_kept(tmp_path):
    target = tmp_path / "out"
    other = tmp_path / f".out.tmp-{os.getppid()}-abc"  # our parent is alive
    other.mkdir()
    with atomic_dir(target):
        pass
    assert other.exists()


def test_a_temporary_made_but_not_yet_registered_when_interrupted_is_removed(tmp_path, monkeypatch):
    """Ctrl-C raised between creating a temporary and recording it (Python raises a pending
    signal at its next check, which may fall inside tempfile) still leaves nothing behind."""
    made = tempfile.mkdtemp

    def interrupted(*args, **kwargs):
        made(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(tempfile, "mkdtemp", interrupted)
    with pytest.raises(KeyboardInterrupt), atomic_dir(tmp_path / "out"):
        pass
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def another_thread():
    """A second thread, as torch starts: the kernel may hand a process-wide signal to it."""
    done = threading.Event()
    thread = threading.Thread(target=done.wait)
    thread.start()
    yield
    done.set()
    thread.join()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_scratch_folder_is_made_leaves_nothing(tmp_path, monkeypatch, another_thread, signum):
    """The signal arrives while mkdtemp runs and is raised only once the folder is recorded for
    removal: the block's body never starts and the scratch folder goes."""
    made = tempfile.mkdtemp

    def signalled(*args, **kwargs):
        path = made(*args, **kwargs)
        os.kill(os.getpid(), signum)
        time.sleep(0.05)  # a signal raised in here would lose the folder
        return path

    def stop(signum, frame):
        raise KeyboardInterrupt

    monkeypatch.setattr(tempfile, "mkdtemp", signalled)
    previous = signal.signal(signum, stop)
    try:
        with pytest.raises(KeyboardInterrupt), scratch_dir(tmp_path / "sub" / "model.pt"):
            pytest.fail("the body ran although the signal came first")
    finally:
        signal.signal(signum, previous)
    assert list(tmp_path.iterdir()) == []


def test_signals_deferred_puts_the_handlers_back_and_runs_them_once_after_the_block():
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append("handler"))
    try:
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            seen.append("block ended")
        assert seen == ["block ended", "handler"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, previous)
