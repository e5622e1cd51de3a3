"""Shared fixtures: tiny real image datasets written into tmp_path; and, built once per session
and only read (a test that changes one works on a copy), the shapes set after the data stages,
after every stage, and after a committed `dvc repro`."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from helpers import copy_prepared, listing, make_project, prepare, run, run_stages, tiny_overrides

REPO = Path(__file__).resolve().parents[1]

# A suite started in the background of a script (`make test &`, `nohup`) inherits SIGINT ignored,
# and so would every stage it starts (an ignored signal stays ignored across exec): the Ctrl-C
# tests would see stages that cannot be interrupted. Give this process, and so its children,
# Python's usual handler, as a terminal's Ctrl-C meets it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def draw_shape(kind: str, size: int, rng: np.random.Generator) -> Image.Image:
    """A white shape on black with random position, size and noise: learnable, not constant."""
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    r = int(rng.integers(size // 5, size // 3))
    cx, cy = (int(v) for v in rng.integers(r + 1, size - r - 1, size=2))
    box = (cx - r, cy - r, cx + r, cy + r)
    if kind == "circle":
        draw.ellipse(box, outline=255, width=2)
    elif kind == "square":
        draw.rectangle(box, outline=255, width=2)
    else:  # cross
        draw.line((cx - r, cy, cx + r, cy), fill=255, width=2)
        draw.line((cx, cy - r, cx, cy + r), fill=255, width=2)
    noise = rng.integers(0, 40, size=(size, size), dtype=np.uint8)
    return Image.fromarray(np.maximum(np.asarray(img), noise))


def write_shapes_dataset(root: Path, per_class: int = 10, size: int = 28, seed: int = 0) -> Path:
    """root/<circle|square|cross>/<i>.png: a folder-per-class dataset of real PNG files."""
    rng = np.random.default_rng(seed)
    for kind in ("circle", "cross", "square"):
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw_shape(kind, size, rng).save(root / kind / f"{kind}_{i:02d}.png")
    return root


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
    """`prepared_shapes` with train, evaluate and predict run too: every stage's outputs. Read only."""
    work = copy_prepared(prepared_shapes, tmp_path_factory.mktemp("ran-shapes") / "work")
    yield from unchanged(run_stages(work, ("train", "evaluate", "predict")))


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


SHAPES = ("circle", "cross", "square")


def write_multilabel_shapes(root: Path, count: int = 36, size: int = 32, seed: int = 0) -> Path:
    """root/images/img_<i>.png with 0 to 3 shapes (one per quadrant) and root/labels.csv with an
    `image,tags` header and space-joined tags: a multi-label dataset of real PNG files."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = ["image,tags"]
    half = size // 2
    for i in range(count):
        present = [kind for kind in SHAPES if rng.random() < 0.5]
        canvas = np.asarray(Image.new("L", (size, size), 0)).copy()
        for kind, (x, y) in zip(present, rng.permutation([(0, 0), (half, 0), (0, half), (half, half)]), strict=False):
            canvas[y : y + half, x : x + half] = np.asarray(draw_shape(kind, half, rng))
        Image.fromarray(canvas).save(root / "images" / f"img_{i:03d}.png")
        rows.append(f"img_{i:03d}.png,{' '.join(present)}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def tags_dir(tmp_path: Path) -> Path:
    return write_multilabel_shapes(tmp_path / "tags")


@pytest.fixture(scope="session")
def s3():
    """A real S3 API server (moto) on 127.0.0.1 for the whole session; each test makes its buckets."""
    from remotes import s3_extra_missing, s3_server

    if reason := s3_extra_missing():
        pytest.skip(reason)
    with s3_server() as server:
        yield server


def write_photo_dataset(
    root: Path, per_class: int = 8, width: int = 160, height: int = 120, grey: bool = False, seed: int = 0
) -> Path:
    """root/<china|flower>/<i>.jpg: JPEG crops of scikit-learn's two sample photographs (real
    camera photos, as bench/photos.py makes at scale). `grey`: the same crops as grey scans saved
    as RGB JPEGs, so only their pixels say they carry no colour."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    for name, photo in zip(("china", "flower"), load_sample_images().images, strict=True):
        (root / name).mkdir(parents=True, exist_ok=True)
        ph, pw = photo.shape[:2]
        for i in range(per_class):
            left, top = int(rng.integers(0, pw - width)), int(rng.integers(0, ph - height))
            img = Image.fromarray(photo[top : top + height, left : left + width])
            if grey:
                img = img.convert("L").convert("RGB")
            img.save(root / name / f"{name}_{i:02d}.jpg", quality=90)
    return root
