"""`train.freeze_epochs`: the head alone for N epochs, then every weight, the lr schedule restarting
(fastai's `fine_tune`); and a run interrupted in either phase resumes to the same result."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from support.project import REPO, copy_prepared, prepare, run, stage_in_process

from imgpipe.core.params import TrainParams
from imgpipe.data.annotations import read_annotations
from imgpipe.feed.tensors import load_split
from imgpipe.models.catalog import create_model
from imgpipe.task.tasks import task_of
from imgpipe.train.fit import build_model, make_fit, unfrozen
from imgpipe.train.loop import train_one_epoch

STATE = Path("models/.model.pt.resume/state.pt")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("freeze")
    weights = root / "cnn-start.pt"  # a state dict to start from, as a user's own pretrained file
    torch.manual_seed(0)
    torch.save(create_model("cnn", num_classes=10, in_channels=3, image_size=32).state_dict(), weights)
    params = {
        "data": {"source": "builtin:digits", "limit": 12},
        "augment": {"rotations": [], "shear": 0},
        "image": {"size": 32},
        "train": {"epochs": 3, "batch_size": 16, "log_every": 2, "scheduler": "onecycle", "pretrained": str(weights),
                  "freeze_epochs": 1},
    }
    return prepare(root / "prepared", params)


def fit_for(prepared: Path, **train):
    table = read_annotations(prepared / "data/annotations.csv")
    task = task_of(table)
    data = load_split(table, "train", prepared / "data/augmented", task, 32, 3)
    params = TrainParams(epochs=3, batch_size=16, scheduler="onecycle", pretrained=str(next(prepared.parent.glob("*.pt"))), **train)
    model = build_model("cnn", params, len(task.classes), 3, 32)
    return make_fit("cnn", model, params, True, data, task), params, data


def test_first_phase_trains_only_the_head_and_the_second_everything(prepared):
    fit, params, data = fit_for(prepared, freeze_epochs=1)
    head = {id(p) for p in fit.model.get_submodule(fit.head).parameters()}
    assert fit.frozen and {id(p) for p in fit.optimizer.param_groups[0]["params"]} == head
    before = {k: v.clone() for k, v in fit.model.state_dict().items()}
    first_lr = fit.optimizer.param_groups[0]["lr"]
    train_one_epoch(fit, data, 16, torch.Generator().manual_seed(0), lambda loss: None)
    after = {k: v.clone() for k, v in fit.model.state_dict().items()}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(f"{fit.head}.") for k in changed)  # batch-norm statistics too stay as they were

    second = unfrozen(fit, params, len(data.targets))
    assert not second.frozen and len(second.optimizer.param_groups[0]["params"]) == len(list(fit.model.parameters()))
    assert second.optimizer.param_groups[0]["lr"] == pytest.approx(first_lr)  # onecycle starts over
    train_one_epoch(second, data, 16, torch.Generator().manual_seed(0), lambda loss: None)
    assert any(not k.startswith(f"{fit.head}.") and not torch.equal(after[k], v) for k, v in second.model.state_dict().items())


@pytest.fixture(scope="module")
def baseline(prepared: Path, tmp_path_factory) -> tuple[Path, str]:
    """An uninterrupted run, and what it printed."""
    work = copy_prepared(prepared, tmp_path_factory.mktemp("freeze") / "uninterrupted")
    return work, run([sys.executable, str(REPO / "stages/train.py")], work).stdout


def test_the_stage_says_when_it_unfreezes_and_restarts_the_schedule(baseline):
    work, printed = baseline
    assert "train: epoch 2: unfreezing the backbone after train.freeze_epochs 1; the lr schedule restarts" in printed
    with open(work / "metrics/train/plots/metrics/lr.tsv") as f:
        lrs = [float(row["lr"]) for row in csv.DictReader(f, delimiter="\t")]
    assert lrs[1] == pytest.approx(lrs[0]) and lrs[2] > lrs[1]  # each phase starts at onecycle's lowest lr


def saved_epoch(folder: Path) -> int:
    try:
        return torch.load(folder / STATE, weights_only=True)["epoch"]
    except (FileNotFoundError, RuntimeError, EOFError, KeyError):
        return 0


def outputs(folder: Path) -> dict[str, bytes]:
    files = [p for p in sorted((folder / "metrics/train").rglob("*")) if p.is_file()]
    return {str(p.relative_to(folder)): p.read_bytes() for p in files} | {"model": (folder / "models/model.pt").read_bytes()}


@pytest.mark.parametrize(
    "after_epoch", [pytest.param(1, marks=pytest.mark.slow), 2], ids=["killed-after-the-frozen-phase", "killed-in-the-second-phase"]
)
def test_killed_run_resumes_to_the_uninterrupted_result(prepared, baseline, tmp_path, after_epoch):
    folder = copy_prepared(prepared, tmp_path / "killed")
    process = subprocess.Popen([sys.executable, str(REPO / "stages/train.py")], cwd=folder, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while saved_epoch(folder) < after_epoch and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    if saved_epoch(folder) != after_epoch:
        pytest.skip(f"the run was not stopped right after epoch {after_epoch} (state: {saved_epoch(folder)})")
    result = run([sys.executable, str(REPO / "stages/train.py")], folder)
    assert f"resuming after epoch {after_epoch}" in result.stdout
    assert outputs(folder) == outputs(baseline[0])


def test_patience_waits_for_the_unfrozen_phase(prepared, tmp_path):
    """A head that stops improving does not end the run before the backbone has trained."""
    work = copy_prepared(prepared, tmp_path / "patience")
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["train"].update(epochs=3, freeze_epochs=2, patience=1, lr=1e-12)  # nothing improves after epoch 1
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    printed = stage_in_process("train", cwd=work, check=True).stdout
    assert "train: epoch 3: unfreezing the backbone" in printed
    assert "epoch 3: train/loss" in printed
