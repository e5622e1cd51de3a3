"""An interrupted train stage resumes from its last epoch and ends exactly like an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from support.project import REPO, copy_prepared, prepare, run, write_params

PARAMS = {
    "data": {"source": "builtin:digits", "limit": 40},
    "augment": {"rotations": [], "shear": 0},
    "image": {"size": 32},
    "train": {"epochs": 4, "batch_size": 16, "log_every": 5, "scheduler": "cosine", "warmup_epochs": 1},
}
STATE = Path("models/.model.pt.resume/state.pt")


def stage(name: str) -> list[str]:
    return [sys.executable, str(REPO / "stages" / f"{name}.py")]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """params.yaml and the data stages' outputs, made once; each test trains in its own copy."""
    return prepare(tmp_path_factory.mktemp("resume") / "prepared", PARAMS)


def outputs(folder: Path) -> dict[str, bytes]:
    files = sorted((folder / "metrics/train").rglob("*"))
    return {str(p.relative_to(folder)): p.read_bytes() for p in files if p.is_file()}


@pytest.fixture(scope="module")
def baseline(prepared: Path, tmp_path_factory) -> Path:
    folder = copy_prepared(prepared, tmp_path_factory.mktemp("resume") / "uninterrupted")
    run(stage("train"), folder)
    return folder


def saved_epoch(folder: Path) -> int:
    try:
        return torch.load(folder / STATE, weights_only=True)["epoch"]
    except (FileNotFoundError, RuntimeError, EOFError, KeyError):
        return 0


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_interrupted_training_resumes_to_identical_results(prepared: Path, baseline: Path, tmp_path: Path, sig):
    folder = copy_prepared(prepared, tmp_path / "interrupted")
    process = subprocess.Popen(stage("train"), cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while saved_epoch(folder) < 1 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, sig)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0, "training finished before it could be interrupted"
    assert "Traceback" not in stderr
    assert not (folder / "models/model.pt").exists()
    assert 1 <= saved_epoch(folder) < 4

    resumed = run(stage("train"), folder)
    assert "resuming after epoch" in resumed.stdout
    assert outputs(folder) == outputs(baseline)
    a = torch.load(folder / "models/model.pt", weights_only=True)["state_dict"]
    b = torch.load(baseline / "models/model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in b)
    assert not (folder / STATE).exists()


def test_balanced_sampling_resumes_to_identical_results(prepared: Path, tmp_path: Path):
    """The balanced sampler's draws come from the generator the state saves: a resumed run draws
    the epochs the uninterrupted one did."""
    settings = {**PARAMS, "train": {**PARAMS["train"], "sampler": "balanced", "class_weight": "balanced"}}
    whole = copy_prepared(prepared, tmp_path / "whole")
    write_params(whole / "params.yaml", settings)
    run(stage("train"), whole)
    folder = copy_prepared(prepared, tmp_path / "interrupted")
    write_params(folder / "params.yaml", settings)
    process = subprocess.Popen(stage("train"), cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while saved_epoch(folder) < 1 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.kill()
    process.wait()
    assert 1 <= saved_epoch(folder) < 4
    assert "resuming after epoch" in run(stage("train"), folder).stdout
    assert outputs(folder) == outputs(whole)


def test_changed_params_start_over(prepared: Path, tmp_path: Path):
    folder = copy_prepared(prepared, tmp_path / "changed")
    process = subprocess.Popen(stage("train"), cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while saved_epoch(folder) < 1 and process.poll() is None:
        time.sleep(0.01)
    process.kill()
    process.wait()
    write_params(folder / "params.yaml", {**PARAMS, "train": {**PARAMS["train"], "lr": 0.01}})
    result = run(stage("train"), folder)
    assert "resuming" not in result.stdout
    assert "epoch 1:" in result.stdout


def test_state_written_at_the_best_epoch_holds_its_weights_once(tmp_path: Path):
    """At the best epoch the payload's model is the best copy itself: torch.save writes those
    tensors once, and loading gives the same weights under both keys."""
    from types import SimpleNamespace

    from imgpipe.train.resume import LoopState, cpu_weights, save_state, state_payload

    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.BatchNorm1d(64))
    optimizer = torch.optim.Adam(model.parameters())
    fit = SimpleNamespace(
        model=model, optimizer=optimizer, schedule=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0),
        device=torch.device("cpu"), scaler=None,
    )
    sizes = {}
    for name, best_epoch in [("best now", 2), ("best earlier", 1)]:
        state = LoopState(epoch=2, best={"epoch": best_epoch, "val/loss": 0.5}, best_state=cpu_weights(model))
        save_state(tmp_path / name, state_payload("run", state, fit, torch.Generator()))
        sizes[name] = (tmp_path / name / "state.pt").stat().st_size
        loaded = torch.load(tmp_path / name / "state.pt", weights_only=True)
        assert all(torch.equal(loaded["model"][k], v) for k, v in model.state_dict().items())
        assert all(torch.equal(loaded["best_state"][k], v) for k, v in model.state_dict().items())
    weights = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    assert sizes["best earlier"] - sizes["best now"] >= 0.9 * weights
