"""Shared fixtures: tiny real image datasets written into tmp_path; and, built once per session
and only read (a test that changes one works on a copy), the shapes set after the data stages,
after every stage, and after a committed `dvc repro`."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.datasets import write_multilabel_shapes, write_shapes_dataset
from support.project import copy_prepared, listing, make_project, prepare, run, run_stages, tiny_overrides

REPO = Path(__file__).resolve().parents[1]

# A suite started in the background of a script (`make test &`, `nohup`) inherits SIGINT ignored,
# and so would every stage it starts (an ignored signal stays ignored across exec): the Ctrl-C
# tests would see stages that cannot be interrupted. Give this process, and so its children,
# Python's usual handler, as a terminal's Ctrl-C meets it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def shapes_dir(tmp_path: Path) -> Path:
    return write_shapes_dataset(tmp_path / "shapes")


def unchanged(folder: Path) -> Iterator[Path]:
    """Yield `folder`; then, at the session's end, fail if a test wrote into it."""
    before = listing(folder)
    yield folder
    assert listing(folder) == before, f"a test changed the shared folder {folder}; copy it with copy_prepared"


@pytest.fixture(scope="session")
def prepared_shapes(tmp_path_factory) -> Iterator[Path]:
    """The shapes set (10 images per class) after download, augment and split with
    `tiny_overrides`: params.yaml, data/ and metrics/ as the stages leave them. Shared by the whole
    session: read it only; a test that writes works on `copy_prepared(prepared_shapes, ...)`."""
    root = tmp_path_factory.mktemp("prepared-shapes")
    work = prepare(root / "work", tiny_overrides(write_shapes_dataset(root / "shapes")))
    yield from unchanged(work)


@pytest.fixture(scope="session")
def ran_shapes(tmp_path_factory, prepared_shapes: Path) -> Iterator[Path]:
    """`prepared_shapes` with train, evaluate, export and predict run too: every stage's outputs. Read only."""
    work = copy_prepared(prepared_shapes, tmp_path_factory.mktemp("ran-shapes") / "work")
    yield from unchanged(run_stages(work, ("train", "evaluate", "export", "predict")))


@dataclass(frozen=True)
class CommittedRun:
    repo: Path  # read only: tests work on `copy_project(committed_run.repo, ...)`
    source: Path  # the shapes set that params.yaml's data.source names
    repro_output: str  # what the first `dvc repro` printed


@pytest.fixture(scope="session")
def committed_run(tmp_path_factory) -> CommittedRun:
    """The real `dvc repro` run once on the shapes set (`tiny_overrides`) in a fresh git + DVC
    repository (`make_project`), and everything committed."""
    root = tmp_path_factory.mktemp("committed-run")
    source = write_shapes_dataset(root / "shapes")
    repo = make_project(root / "repo", tiny_overrides(source))
    first = run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "first run"], repo)
    return CommittedRun(repo, source, first.stdout)


@pytest.fixture
def tags_dir(tmp_path: Path) -> Path:
    return write_multilabel_shapes(tmp_path / "tags")


@pytest.fixture(scope="session")
def s3():
    """A real S3 API server (moto) on 127.0.0.1 for the whole session; each test makes its buckets."""
    from support.remotes import s3_extra_missing, s3_server

    if reason := s3_extra_missing():
        pytest.skip(reason)
    with s3_server() as server:
        yield server


