"""Distributed training when things go wrong, and across machines: a killed rank, Ctrl-C, and two
"machines" (two project copies on this one) meeting at a rendezvous on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from support.project import BIN, REPO, command_env, copy_prepared, free_port, stage_in_process

STATE = "models/.model.pt.resume/state.pt"


def with_train(folder: Path, **train) -> Path:
    """`folder`'s params.yaml with the mlp model and `train` overrides."""
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["model"] = "mlp"
    params["train"] |= train
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    return folder


def start_stage(folder: Path) -> subprocess.Popen:
    """The train stage in its own process group, as a terminal runs it."""
    return subprocess.Popen([sys.executable, str(REPO / "stages/train.py")], cwd=folder, env=command_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def saved_epoch(folder: Path) -> int:
    try:
        return torch.load(folder / STATE, weights_only=True)["epoch"]
    except (FileNotFoundError, RuntimeError, EOFError, KeyError):
        return 0


def wait_for_saved_epoch(folder: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while saved_epoch(folder) < 1 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "training ended before it could be interrupted"


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_a_killed_rank_stops_the_stage_and_a_rerun_on_one_process_resumes(prepared_shapes: Path, tmp_path: Path):
    folder = with_train(copy_prepared(prepared_shapes, tmp_path / "work"), nproc_per_node=2, epochs=40)
    process = start_stage(folder)
    wait_for_saved_epoch(folder, process)
    ranks = children(process.pid)
    assert len(ranks) == 2, ranks
    killed = time.monotonic()
    os.kill(ranks[-1], signal.SIGKILL)
    _, stderr = process.communicate(timeout=90)
    took = time.monotonic() - killed
    print(f"\nkilled one of 2 ranks: the stage exited {took:.1f} s later")
    assert took < 60
    assert process.returncode == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "killed by SIGKILL" in lines[0] and "outputs left unchanged" in lines[0], stderr
    assert not (folder / "models/model.pt").exists()
    assert all(not children(pid) for pid in ranks) and not children(process.pid)
    epoch = saved_epoch(folder)
    assert 1 <= epoch < 40

    with_train(folder, nproc_per_node=1)  # the rerun may use another number of processes
    resumed = stage_in_process("train", cwd=folder, check=True)
    assert f"resuming after epoch {epoch}" in resumed.stdout
    assert "epoch 40:" in resumed.stdout and f"epoch {epoch}:" not in resumed.stdout
    assert (folder / "models/model.pt").exists() and not (folder / STATE).exists()


@pytest.mark.parametrize(("sig", "group", "code"), [
    pytest.param(signal.SIGINT, True, 130, id="ctrl-c"),
    pytest.param(signal.SIGTERM, False, 143, id="sigterm", marks=pytest.mark.slow),
])
def test_ctrl_c_and_sigterm_stop_every_rank(prepared_shapes: Path, tmp_path: Path, sig, group, code):
    """Ctrl-C reaches the whole process group (launcher and ranks); DVC's SIGTERM reaches the
    launcher only, which stops the ranks. Either way: one line, the exit status, no outputs."""
    folder = with_train(copy_prepared(prepared_shapes, tmp_path / "work"), nproc_per_node=2, epochs=40)
    process = start_stage(folder)
    wait_for_saved_epoch(folder, process)
    ranks = children(process.pid)
    (os.killpg if group else os.kill)(process.pid, sig)
    _, stderr = process.communicate(timeout=90)
    assert process.returncode == code
    assert stderr.strip() == "interrupted: outputs left unchanged"
    assert not (folder / "models/model.pt").exists() and saved_epoch(folder) >= 1
    assert all(not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text() for pid in ranks)


@pytest.mark.slow
def test_two_machines_on_localhost_learn_what_one_process_does(prepared_shapes: Path, tmp_path: Path):
    """The head runs the train stage with train.nnodes 2; the other "machine", a second copy of
    the project (data as `dvc pull` leaves it; params.yaml without the head's -S launch keys),
    joins with `imgpipe train-worker --nnodes 2`. Only the head writes outputs."""
    one = with_train(copy_prepared(prepared_shapes, tmp_path / "one"))
    stage_in_process("train", cwd=one, check=True)

    endpoint = f"127.0.0.1:{free_port()}"
    head = with_train(copy_prepared(prepared_shapes, tmp_path / "head"), nnodes=2, rdzv_endpoint=endpoint)
    other = with_train(copy_prepared(prepared_shapes, tmp_path / "other"))  # nnodes 1: as after `exp run -S` on the head
    shutil.copytree(REPO / "stages", other / "stages")
    started = time.monotonic()
    lead = start_stage(head)
    join = subprocess.Popen([str(BIN / "imgpipe"), "train-worker", "--rdzv-endpoint", endpoint, "--nnodes", "2"], cwd=other,
                            env=command_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lead_out, lead_err = lead.communicate(timeout=240)
    join_out, join_err = join.communicate(timeout=60)
    print(f"\ntwo machines on localhost: {time.monotonic() - started:.1f} s")
    assert lead.returncode == 0, lead_err
    assert join.returncode == 0, join_err
    assert "waiting for 1 more machine(s)" in lead_out and "train: best epoch" in lead_out
    assert "joining the run at" in join_out
    assert not (other / "models").exists() and not (other / "metrics/train").exists()
    a, b = (torch.load(f / "models/model.pt", weights_only=True)["state_dict"] for f in (one, head))
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"two machines vs one process: largest weight difference {diff:.2e}")
    assert diff < 1e-5
