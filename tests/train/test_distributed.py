"""Distributed training under the real torchrun: 2 processes on the CPU (gloo) learn what 1 does.

The largest differences found are printed (run with -s to see them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from support.project import REPO, assert_one_line_error, copy_prepared, run, stage, stage_in_process

from imgpipe.core.errors import UserError
from imgpipe.core.params import TrainParams
from imgpipe.train.distributed import plan_launch


@pytest.fixture(scope="module")
def work(prepared_shapes: Path, tmp_path_factory) -> Path:
    """The prepared shapes (54 training images: 3 whole batches of 16 and one of 6), for this module's runs."""
    return copy_prepared(prepared_shapes, tmp_path_factory.mktemp("distributed") / "work")


def train(work: Path, name: str, procs: int, model: str, model_args: dict | None = None, **train) -> Path:
    """Run the train stage with `procs` processes into `work/name`; 1 runs in this process."""
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["model"], params["model_args"] = model, model_args or {}
    params["train"] |= {"nproc_per_node": procs, **train}
    (work / f"{name}.yaml").write_text(yaml.safe_dump(params))
    args = ["--params", f"{name}.yaml", "--out", f"{name}/model.pt", "--metrics", f"{name}/metrics"]
    if procs == 1:
        stage_in_process("train", *args, cwd=work, check=True)
    else:
        done = stage("train", *args, cwd=work, check=True)
        assert done.stdout.count("train: best epoch") == 1, done.stdout  # rank 0 alone reports
    return work / name


def history(folder: Path) -> dict[str, list[float]]:
    """Every per-epoch validation metric dvclive logged, in epoch order."""
    found = {}
    for tsv in sorted((folder / "metrics/plots/metrics/val").glob("*.tsv")):
        rows = [line.split("\t") for line in tsv.read_text().splitlines()[1:]]
        found[tsv.stem] = [float(row[-1]) for row in rows]
    return found


def weight_gaps(a: Path, b: Path) -> torch.Tensor:
    """Every weight's absolute difference between the two model files, flattened (float64)."""
    wa, wb = (torch.load(f / "model.pt", weights_only=True)["state_dict"] for f in (a, b))
    assert wa.keys() == wb.keys()
    return torch.cat([(wa[k].double() - wb[k].double()).abs().flatten() for k in wa])


def weight_diff(a: Path, b: Path) -> float:
    return weight_gaps(a, b).max().item()


def history_diff(a: Path, b: Path) -> float:
    ha, hb = history(a), history(b)
    assert ha.keys() == hb.keys() and all(len(ha[k]) == len(hb[k]) == 2 for k in ha)
    return max(abs(x - y) for k in ha for x, y in zip(ha[k], hb[k], strict=True))


def test_mlp_on_two_processes_learns_what_one_does(work: Path):
    """No batch norm: every step's gradient is the whole batch's, including the short last batch
    split 3 + 3; the weights and every epoch's validation metrics match to float precision."""
    one = train(work, "mlp1", 1, "mlp")
    two = train(work, "mlp2", 2, "mlp")
    gaps = weight_gaps(one, two)
    weights, metrics = gaps.max().item(), history_diff(one, two)
    print(f"\nmlp, 1 vs 2 processes: largest weight difference {weights:.2e}, largest val metric difference {metrics:.2e}")
    # Float sums in another order differ in the last bits; Adam's step (m / sqrt(v)) can blow that
    # up for a weight whose gradient is near zero: on one Xeon, one weight of the 640,000 moved
    # 3.0e-5, every other less than 1e-5. A wrongly weighted gradient moves most weights by ~lr.
    assert weights < 1e-4
    assert int((gaps > 1e-5).sum()) <= 10
    assert metrics < 1e-5
    assert not list(work.glob("mlp2/.*")), "the decoded images' scratch folder or resume state was left behind"


def test_balanced_sampling_and_class_weights_on_two_processes_learn_what_one_does(work: Path):
    """`train.sampler: balanced` draws the epoch from the shared generator, so every rank takes its
    share of the same draws; the class-weighted loss is a mean over images, so the ranks' shares
    add up to the whole batch's loss as the plain one does."""
    settings = {"sampler": "balanced", "class_weight": "balanced"}
    one = train(work, "balanced1", 1, "mlp", **settings)
    two = train(work, "balanced2", 2, "mlp", **settings)
    weights, metrics = weight_diff(one, two), history_diff(one, two)
    print(f"\nmlp, balanced sampler and class weights, 1 vs 2 processes: largest weight difference {weights:.2e}, "
          f"largest val metric difference {metrics:.2e}")
    assert weights < 1e-4
    assert metrics < 1e-5
    plain = train(work, "plain1", 1, "mlp")
    assert weight_diff(one, plain) > 1e-3  # the settings did change what was learned


CNN_ARGS = {"dropout": 0.0}  # dropout draws its masks per process: the same distribution, not the same draws


@pytest.fixture(scope="module")
def cnn_one(work: Path) -> Path:
    """cnn (batch norm after every conv) trained by one process, with sync_batchnorm on (a no-op there)."""
    return train(work, "cnn1", 1, "cnn", CNN_ARGS, sync_batchnorm=True)


def test_cnn_with_sync_batchnorm_on_two_processes_learns_what_one_does(work: Path, cnn_one: Path):
    """train.sync_batchnorm: statistics of the global batch, as on one process. ReLU and max-pool
    can turn float noise into small differences, so the bound is looser than the mlp's."""
    two = train(work, "cnn2", 2, "cnn", CNN_ARGS, sync_batchnorm=True)
    weights, metrics = weight_diff(cnn_one, two), history_diff(cnn_one, two)
    print(f"\ncnn + sync_batchnorm, 1 vs 2 processes: largest weight difference {weights:.2e}, "
          f"largest val metric difference {metrics:.2e}")
    assert weights < 1e-3
    assert metrics < 1e-3


@pytest.mark.slow
def test_cnn_without_sync_batchnorm_on_two_processes_learns_something_else(work: Path, cnn_one: Path):
    """The contrast: per-process batch statistics make the runs differ many times more."""
    two = train(work, "cnn2-unsynced", 2, "cnn", CNN_ARGS, sync_batchnorm=False)
    apart = weight_diff(cnn_one, two)
    print(f"\ncnn without sync_batchnorm, 1 vs 2 processes: largest weight difference {apart:.2e}")
    assert apart > 1e-2


def test_a_user_error_in_every_rank_is_one_line(work: Path):
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["train"] |= {"nproc_per_node": 2, "pos_weight": "auto"}  # multi-label only: every rank refuses it
    (work / "bad.yaml").write_text(yaml.safe_dump(params))
    result = stage("train", "--params", "bad.yaml", "--out", "bad/model.pt", "--metrics", "bad/metrics", cwd=work)
    assert_one_line_error(result, "train.pos_weight")
    assert result.returncode == 1
    assert not (work / "bad").exists()


def test_a_global_batch_that_does_not_split_is_refused_before_launching(work: Path):
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["train"] |= {"nproc_per_node": 3, "batch_size": 16}
    (work / "odd.yaml").write_text(yaml.safe_dump(params))
    result = stage_in_process("train", "--params", "odd.yaml", "--out", "odd/model.pt", cwd=work)
    assert_one_line_error(result, "train.batch_size 16 does not divide evenly over 3 processes", "multiple of 3")


def test_launch_plan():
    cpu = torch.device("cpu")
    assert plan_launch(TrainParams(nproc_per_node="auto"), cpu).world == 1  # auto: one per GPU, 1 on the CPU
    assert plan_launch(TrainParams(nproc_per_node=2, nnodes=2, rdzv_endpoint="head:29400", batch_size=64), cpu).world == 4
    with pytest.raises(UserError, match="train.rdzv_endpoint"):
        TrainParams(nnodes=2)
    with pytest.raises(UserError, match="train.nproc_per_node"):
        TrainParams(nproc_per_node="many")
    with pytest.raises(UserError, match="train.rdzv_endpoint"):
        TrainParams(nnodes=2, rdzv_endpoint="head")


def test_collectives_under_torchrun(prepared_shapes: Path, tmp_path: Path):
    """Sync batch norm, uneven gathers and decoding once per machine, on 2 ranks under torchrun."""
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(REPO / "tests/support/distributed_checks.py"), str(tmp_path), str(prepared_shapes)], tmp_path)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for found in ranks:
        sync = found["sync_batchnorm"]
        assert sync["same_keys"]
        assert sync["grad_diff"] < 1e-5 and sync["buffer_diff"] < 1e-5, sync
        assert found["gathered"] == torch.arange(21.0).view(7, 3).tolist()  # 3 + 4 rows, in order, none twice
        assert found["decode"]["mapped"] == ranks[0]["decode"]["mapped"]  # one file, mapped by both
        assert found["decode"]["mapped"].endswith("train.npy (deleted)"), found["decode"]["mapped"]
        assert found["decode"]["left_behind"] == []
    assert [r["decode"]["decoded"] for r in ranks] == [2, 0]  # train and val, by local rank 0 only
    assert ranks[0]["decode"]["train_sum"] == ranks[1]["decode"]["train_sum"]
