"""Checks that need several ranks, run by tests/train/test_distributed.py under the real torchrun:

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/support/distributed_checks.py OUT PREPARED

Each rank writes what it found to OUT/rank<N>.json; the test asserts on them.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
from torch import nn

from imgpipe.data.annotations import read_annotations
from imgpipe.feed import tensors
from imgpipe.task.tasks import task_of
from imgpipe.train.distributed import worker
from imgpipe.train.stage import decode_splits


def sync_batchnorm_matches_whole_batch(ranks) -> dict:
    """A conv net with batch norm: the gradients averaged over the ranks (as DDP does), with the
    CPU sync batch norm, against the same net on the whole batch in one process."""
    from imgpipe.train.distributed import parallel, sync_batchnorm

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                        nn.Flatten(), nn.Linear(6 * 8 * 8, 3), nn.BatchNorm1d(3))
    whole = copy.deepcopy(net)
    x, y = torch.randn(10, 2, 8, 8), torch.randint(0, 3, (10,))
    nn.functional.cross_entropy(whole(x), y).backward()
    model = sync_batchnorm(net, torch.device("cpu"))
    part = ranks.share(len(y))
    ddp = parallel(model, torch.device("cpu"))  # kept: its hooks average the gradients during backward
    nn.functional.cross_entropy(ddp(x[part]), y[part]).backward()
    grads = max((a.grad - b.grad).abs().max().item() for a, b in zip(model.parameters(), whole.parameters(), strict=True))
    buffers = max((a.float() - b.float()).abs().max().item()
                  for a, b in zip(model.state_dict().values(), whole.state_dict().values(), strict=True))
    return {"grad_diff": grads, "buffer_diff": buffers, "same_keys": list(model.state_dict()) == list(whole.state_dict())}


def gathered_rows(ranks) -> list:
    """Uneven shares (7 rows over the ranks), one rank possibly empty: gathered in rank order."""
    rows = torch.arange(7 * 3, dtype=torch.float32).view(7, 3)[ranks.share(7)]
    return ranks.gather_rows(rows).tolist()


def decoded_once(ranks, prepared: Path) -> dict:
    """decode_splits: only local rank 0 decodes; every rank maps the same file."""
    calls = []
    real = tensors.load_images

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    tensors.load_images = counting
    table = read_annotations(prepared / "data/annotations.csv")
    out = Path(sys.argv[1]) / "scratch" / "model.pt"
    train, val = decode_splits(table, prepared / "data/augmented", task_of(table), 28, 1, out, ranks)
    ranks.barrier()  # every rank past decode_splits: the scratch folder is gone
    left = sorted(p.name for p in out.parent.iterdir()) if out.parent.exists() else []
    return {"decoded": len(calls), "mapped": mapped_file(train.images), "train_sum": int(train.images.sum()),
            "val_rows": len(val.targets), "left_behind": left}


def mapped_file(tensor: torch.Tensor) -> str:
    """The file (from /proc/self/maps) whose mapping holds `tensor`'s memory; "" for anonymous memory."""
    address = tensor.data_ptr()
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            low, high = (int(x, 16) for x in fields[0].split("-"))
            if low <= address < high:
                return fields[5].strip() if len(fields) > 5 else ""
    return ""


def main() -> None:
    out, prepared = Path(sys.argv[1]), Path(sys.argv[2])
    with worker(torch.device("cpu")) as ranks:
        found = {
            "sync_batchnorm": sync_batchnorm_matches_whole_batch(ranks),
            "gathered": gathered_rows(ranks),
            "decode": decoded_once(ranks, prepared),
        }
    (out / f"rank{ranks.rank}.json").write_text(json.dumps(found))


if __name__ == "__main__":
    main()
