"""Training on several processes and machines with PyTorch's own engine: torchrun's launcher
(`torch.distributed.run`, through its Python API) and `DistributedDataParallel`.

With `train.nproc_per_node` or `train.nnodes` above 1 the train stage does not train itself: it
launches its workers through torchrun, each running the same stage script, which finds itself
under torchrun (`imgpipe.core.stage_app.in_worker`) and trains its share as one rank. Nothing here opens a socket or
manages a process: the launcher starts, watches and stops the workers, the c10d rendezvous
brings the machines together, and the ranks talk through `torch.distributed` collectives.

What stays as on one process (`train.batch_size` is the global batch): every rank draws the same
seeded shuffle and takes its share of each batch (`share`), its loss weighted so that the
averaged gradient is the whole batch's; validation splits the val images without padding and
gathers the logits, so every rank scores the same whole split and takes the same decisions.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from imgpipe.core.errors import UserError
from imgpipe.core.params import TrainParams
from imgpipe.core.stage_app import USER_ERROR_KIND, Terminated, in_worker
from imgpipe.feed.device import resolve_device

T = TypeVar("T")

RDZV_ID = "imgpipe-train"  # the rendezvous every node of a multi-machine run joins
SHUTDOWN_SECONDS = 10  # after the first worker fails, how long the others get to stop before SIGKILL


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes; the defaults are a single process,
    for which every collective below is the identity."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0  # on this machine
    local_world: int = 1
    node: int = 0  # torchrun's GROUP_RANK

    @classmethod
    def from_env(cls) -> Ranks:
        env = os.environ
        return cls(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"]),
                   int(env["LOCAL_WORLD_SIZE"]), int(env.get("GROUP_RANK", 0)))

    @property
    def main(self) -> bool:
        """Rank 0: the only one that prints, logs to dvclive and writes files."""
        return self.rank == 0

    def share(self, n: int) -> slice:
        """This rank's contiguous part of `n` items: sizes differ by at most one, no padding."""
        return slice(self.rank * n // self.world, (self.rank + 1) * n // self.world)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """`value` summed over the ranks (a new tensor; the same one on a single process)."""
        if self.world == 1:
            return value
        total = value.detach().clone().to(_wire_device())
        dist.all_reduce(total)
        return total.to(value.device)

    def gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Every rank's `rows` (a CPU tensor, N_r x ...) concatenated in rank order, on every rank."""
        if self.world == 1:
            return rows
        shapes = self.all_objects(tuple(rows.shape))
        counts = [shape[0] for shape in shapes]
        rows = rows.reshape(len(rows), *max(shapes)[1:])  # a rank with no rows may have no columns either
        padded = torch.zeros((max(counts), *rows.shape[1:]), dtype=rows.dtype, device=_wire_device())
        padded[: len(rows)] = rows
        parts = [torch.empty_like(padded) for _ in counts]
        dist.all_gather(parts, padded)
        return torch.cat([part[:n].cpu() for part, n in zip(parts, counts, strict=True)])

    def all_objects(self, value: T) -> list[T]:
        """Every rank's `value` (picklable), in rank order."""
        if self.world == 1:
            return [value]
        values: list = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def from_main(self, make: Callable[[], T]) -> T:
        """`make()` run on rank 0 and its result sent to every rank."""
        if self.world == 1:
            return make()
        box = [make() if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def node_value(self, value: T | None) -> T:
        """The value local rank 0 of this machine passed (the others pass None)."""
        pairs = self.all_objects((self.node, value if self.local_rank == 0 else None))
        return next(v for node, v in pairs if node == self.node and v is not None)


SINGLE = Ranks()


def _wire_device() -> torch.device:
    """Where collectives take their tensors: NCCL works on GPU memory, gloo on the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


# --- launching -------------------------------------------------------------------------------

def rank_argv(script: str, **options: object) -> list[str]:
    """The command each rank runs: `script --name value ...` (underscores as dashes)."""
    return [script, *(part for name, value in options.items() for part in (f"--{name.replace('_', '-')}", str(value)))]


def run_or_launch(params: TrainParams, argv: list[str], run: Callable[[Ranks], T]) -> T | None:
    """`run(ranks)`: in this process (one process in all), as this rank (started by torchrun),
    or, for several processes, nowhere here: `python argv...` is launched as the ranks (None)."""
    device = resolve_device(params.device)
    if in_worker():
        with worker(device) as ranks:
            return run(ranks)
    plan = plan_launch(params, device)
    if plan.world == 1:
        return run(SINGLE)
    print(f"train: {plan.world} processes ({plan.nnodes} machine(s) x {plan.nproc_per_node}) under torchrun")
    if plan.nnodes > 1:
        print(f"train: waiting for {plan.nnodes - 1} more machine(s) at {plan.rdzv_endpoint}; on each, in a clone at "
              f"this commit with the data pulled, run: imgpipe train-worker --rdzv-endpoint {plan.rdzv_endpoint}")
    launch(plan, argv)
    return None


def join(
    params: TrainParams, argv: list[str], rdzv_endpoint: str | None = None, nnodes: int | None = None,
    nproc_per_node: str | None = None,
) -> None:
    """On a machine other than the head: launch this machine's ranks into the head's run at
    `rdzv_endpoint`; each value left None comes from `params`."""
    nproc = None if nproc_per_node is None else int(nproc_per_node) if nproc_per_node.isdigit() else nproc_per_node
    params = dataclasses.replace(  # checked as params.yaml's values are
        params,
        rdzv_endpoint=rdzv_endpoint or params.rdzv_endpoint,
        nnodes=nnodes or params.nnodes,
        nproc_per_node=params.nproc_per_node if nproc is None else nproc,
    )
    if params.nnodes == 1:
        raise UserError("train.nnodes is 1: there is no multi-machine run to join; "
                        "pass --nnodes as the head's train.nnodes, or use the head's params.yaml")
    plan = plan_launch(params, resolve_device(params.device))
    print(f"train-worker: {plan.nproc_per_node} rank(s) joining the run at {plan.rdzv_endpoint}")
    launch(plan, argv, head=False)


@dataclass(frozen=True)
class Launch:
    """How many processes train: `nproc_per_node` on each of `nnodes` machines."""

    nproc_per_node: int
    nnodes: int = 1
    rdzv_endpoint: str | None = None

    @property
    def world(self) -> int:
        return self.nproc_per_node * self.nnodes


def plan_launch(params: TrainParams, device: torch.device) -> Launch:
    """`train.nproc_per_node` (auto: one per visible GPU, 1 on the CPU), `train.nnodes` and the
    global batch's split, checked before any process starts."""
    nproc = params.nproc_per_node
    if nproc == "auto":
        nproc = torch.cuda.device_count() if device.type == "cuda" else 1
    if device.type == "cuda" and nproc > torch.cuda.device_count():
        raise UserError(f"train.nproc_per_node is {nproc} but torch sees {torch.cuda.device_count()} GPU(s); "
                        "use at most one process per GPU, or auto")
    plan = Launch(nproc, params.nnodes, params.rdzv_endpoint)
    if params.batch_size % plan.world:
        raise UserError(
            f"train.batch_size {params.batch_size} does not divide evenly over {plan.world} processes "
            f"({plan.nnodes} node(s) x {plan.nproc_per_node}); make it a multiple of {plan.world}"
        )
    return plan


def launch(plan: Launch, argv: list[str], head: bool = True) -> None:
    """Run `python argv...` as `plan.world` ranks under torchrun's launcher and wait for them.

    On one machine the rendezvous is standalone (a free port, so two runs can train at once);
    across machines it is the c10d rendezvous at `plan.rdzv_endpoint`, hosted by the head (the
    machine that runs `dvc repro`). A failed rank stops the others; its cause is raised here
    once: a `UserError` a rank reported as it is, anything else as one line naming the rank.
    Ctrl-C and SIGTERM stop every rank and come back as KeyboardInterrupt / `Terminated`.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    several = plan.nnodes > 1
    config = LaunchConfig(
        min_nodes=plan.nnodes,
        max_nodes=plan.nnodes,
        nproc_per_node=plan.nproc_per_node,
        run_id=RDZV_ID if several else str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint=plan.rdzv_endpoint if several else "localhost:0",
        rdzv_configs={"is_host": head} if several else {},
        max_restarts=0,  # a rerun resumes from the last epoch; restarting in place would hide the failure
        monitor_interval=0.5,
        shutdown_timeout=SHUTDOWN_SECONDS,
    )
    quiet_launcher()
    try:
        elastic_launch(config, entrypoint=sys.executable)(*argv)
    except ChildFailedError as failed:
        rank, failure = root_cause(failed)
        if failure.error_file_data.get("kind") == USER_ERROR_KIND:
            raise UserError(failure.message) from None
        message = failure.error_file_data.get("message")
        if isinstance(message, dict):  # a Python exception: its traceback, once
            print(message.get("extraInfo", {}).get("py_callstack", ""), file=sys.stderr, end="")
        how = f"was killed by {failure.signal_name()}" if failure.exitcode < 0 else f"failed with exit code {failure.exitcode}"
        raise UserError(f"train: rank {rank} of {plan.world} (pid {failure.pid}) {how}; the other ranks were stopped "
                        "and the outputs left unchanged; rerun to resume from the last saved epoch") from None
    except SignalException as stop:
        raise (KeyboardInterrupt if stop.sigval == signal.SIGINT else Terminated)() from None


def quiet_launcher() -> None:
    """Silence the launcher's own log lines (each of its modules sets its level): what went wrong
    is reported once, as one line, by `launch`."""
    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.ERROR + 10)


def root_cause(failed):
    """(rank, failure) of a failed launch that explains it: a `UserError` a rank reported, else
    the rank that failed first: killed by a signal, then an exit code, and SIGTERM last, which the
    launcher itself sends to stop the other ranks once one has failed."""

    def order(item):
        rank, failure = item
        told = failure.error_file_data.get("kind") == USER_ERROR_KIND
        return not told, failure.exitcode == -signal.SIGTERM, failure.exitcode >= 0, failure.timestamp, rank

    return min(failed.failures.items(), key=order)


@contextmanager
def worker(device: torch.device) -> Iterator[Ranks]:
    """This rank's process group (NCCL on CUDA, gloo on the CPU), torch threads split among the
    ranks of a machine, and the rank's GPU selected; the group is closed on the way out."""
    ranks = Ranks.from_env()
    if device.type == "cuda":
        torch.cuda.set_device(ranks.local_rank)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ranks.local_world))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield ranks
        dist.barrier()  # the ranks leave together, after rank 0 has written the outputs
    except BaseException:
        # Stopping: the launcher's SIGTERM follows Ctrl-C or a failed peer, and must not cut the
        # teardown below short (a half-closed process group aborts the interpreter at exit).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise
    finally:
        dist.destroy_process_group()


def rank_device(device: torch.device, ranks: Ranks) -> torch.device:
    """`device` for this rank: its own GPU on CUDA."""
    return torch.device("cuda", ranks.local_rank) if device.type == "cuda" and ranks.world > 1 else device


# --- the model -------------------------------------------------------------------------------

def parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` wrapped in DistributedDataParallel (gradients averaged over the ranks)."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


class SumOverRanks(torch.autograd.Function):
    """A tensor summed over the ranks, differentiably: every rank's gradient flows back to every
    rank's input, so the gradient is the sum's over all ranks (as in PyTorch's own SyncBatchNorm)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        total = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return SumOverRanks.apply(grad)


class CpuSyncBatchNorm(_BatchNorm):
    """Batch norm synchronised over the ranks on the CPU (gloo), where PyTorch's `nn.SyncBatchNorm`
    refuses to run: the batch's mean and variance are summed over the ranks with autograd-aware
    all-reduces, so the normalisation, its gradients and the running statistics are those of the
    global batch, as on one process. Same parameters and buffers as `nn.BatchNorm2d`."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {x.dim()}-D)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor(x.numel() // x.shape[1], dtype=x.dtype)
        dist.all_reduce(count)
        mean = SumOverRanks.apply(x.sum(dims)) / count
        centred = x - mean.view(shape)
        var = SumOverRanks.apply(centred.square().sum(dims)) / count  # biased, as batch norm normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean, momentum)
                self.running_var.lerp_(var * count / (count - 1).clamp_min(1), momentum)  # unbiased, as torch keeps it
        y = centred / torch.sqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every batch-norm layer of `model` synchronised over the ranks: `nn.SyncBatchNorm` on GPUs
    (`convert_sync_batchnorm`), `CpuSyncBatchNorm` on the CPU; same weights and buffers."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if isinstance(model, _BatchNorm):
        synced = CpuSyncBatchNorm(model.num_features, model.eps, model.momentum, model.affine, model.track_running_stats)
        synced.load_state_dict(model.state_dict())
        if model.affine:
            synced.weight, synced.bias = model.weight, model.bias
        return synced.train(model.training)
    for name, child in model.named_children():
        model.add_module(name, sync_batchnorm(child, device))
    return model
