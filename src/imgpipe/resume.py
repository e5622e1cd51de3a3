"""The train stage's loop state, saved after every epoch and restored by a rerun with the same
fingerprint; and trimming the dvclive history logged after it."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from imgpipe.outputs import atomic_file

if TYPE_CHECKING:
    from imgpipe.training import Fit

STATE_FILE = "state.pt"


@dataclass
class LoopState:
    """Where the epoch loop is. With the model, optimizer, schedule and RNG states (`save_state`)
    it is everything a run needs to continue exactly; distributed ranks must agree on it."""

    epoch: int = 0  # the last finished epoch
    step: int = 0  # optimisation steps so far (dvclive's step)
    best: dict[str, float] = field(default_factory=dict)  # {"epoch": e, "val/loss": ..., ...} of the best epoch
    best_state: dict[str, torch.Tensor] | None = None  # that epoch's weights, on the CPU
    bad_epochs: int = 0  # epochs since `train.monitor` last improved (early stopping)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # no deep copy of the weights


def save_state(resume_dir: Path, run_id: str, state: LoopState, fit: Fit, generator: torch.Generator) -> None:
    """Everything needed to continue after `state.epoch`, written atomically."""
    payload = {
        **state.as_dict(),
        "fingerprint": run_id,
        "model": fit.model.state_dict(),
        "optimizer": fit.optimizer.state_dict(),
        "schedule": fit.schedule.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if fit.device.type == "cuda" else [],
        "shuffle_rng": generator.get_state(),
        "scaler": fit.scaler.state_dict() if fit.scaler else {},
    }
    with atomic_file(Path(resume_dir) / STATE_FILE) as tmp:
        torch.save(payload, tmp)


def restore_state(resume_dir: Path, run_id: str, fit: Fit, generator: torch.Generator) -> LoopState | None:
    """The loop state of an interrupted run with this fingerprint, with `fit` and `generator`
    put back as they were; None when there is none to resume."""
    payload = load_payload(Path(resume_dir) / STATE_FILE, run_id)
    if payload is None:
        return None
    fit.model.load_state_dict(payload["model"])
    fit.optimizer.load_state_dict(payload["optimizer"])
    fit.schedule.load_state_dict(payload["schedule"])
    torch.set_rng_state(payload["torch_rng"])
    if payload.get("cuda_rng") and fit.device.type == "cuda":
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    generator.set_state(payload["shuffle_rng"])
    if payload.get("scaler") and fit.scaler:
        fit.scaler.load_state_dict(payload["scaler"])
    return LoopState(**{f.name: payload[f.name] for f in fields(LoopState)})


def load_payload(path: Path, run_id: str) -> dict | None:
    """The saved state file's contents when it belongs to this run, else None."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a state file cut short by a crash is no use: start over
        return None
    if not isinstance(payload, dict) or payload.get("fingerprint") != run_id:
        return None
    return payload


def truncate_history(live_dir: Path, step: int) -> None:
    """Drop dvclive rows logged after `step` (the interrupted epoch), so none appear twice.

    Works on the text lines so the kept rows stay byte for byte as dvclive wrote them.
    """
    for tsv in Path(live_dir).glob("plots/metrics/**/*.tsv"):
        header, *rows = tsv.read_text(encoding="utf-8").splitlines(keepends=True)
        column = header.rstrip("\r\n").split("\t").index("step")
        kept = [row for row in rows if int(row.rstrip("\r\n").split("\t")[column]) <= step]
        tsv.write_text("".join([header, *kept]), encoding="utf-8")
