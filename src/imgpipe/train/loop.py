"""The epoch loop: shuffled batches through `train_step`, validation as the task scores it, the
best epoch and early stopping, resuming an interrupted run (`start_or_resume`)."""

from __future__ import annotations

import functools
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from dvclive import Live
from torch import nn

from imgpipe.core.params import TrainParams
from imgpipe.core.progress import progress
from imgpipe.feed.batches import batches
from imgpipe.feed.inference import predict_logits
from imgpipe.feed.tensors import LabelledImages, to_model_input
from imgpipe.models.pretrained import set_train_mode
from imgpipe.train.fit import NO_SCALING, Fit, in_second_phase, unfrozen
from imgpipe.train.resume import STATE_FILE, LoopState, cpu_weights, load_payload, restore_state, truncate_history


def train_one_epoch(fit: Fit, data: LabelledImages, batch_size: int, generator: torch.Generator, on_batch) -> float:
    """One pass over `data` in a shuffled order; returns the mean training loss.

    Distributed, every rank draws the same order and steps on its share of each batch.
    `on_batch` gets each batch's loss as a 0-d tensor on the device (distributed: this rank's
    part of it, summed over the ranks by `fit.ranks.sum`): reading it (`.item()`) waits for the
    GPU, so callers do that only for the batches they log.
    """
    set_train_mode(fit.model, fit.head, fit.frozen)
    n = len(data.targets)
    order = draw_order(n, generator, fit.sampling)
    total = torch.zeros((), device=fit.device)
    mean, std = (torch.tensor(v, device=fit.device) for v in (fit.mean, fit.std))  # copied once, not per batch
    plan = functools.partial(fit.augment.plan, generator=generator) if fit.augment.active else None
    share = fit.ranks.share if fit.ranks.world > 1 else None
    feed = batches(data.images, data.targets, order, batch_size, fit.device, plan, share=share)
    sizes = (min(batch_size, n - start) for start in range(0, n, batch_size))  # whole batches, over all ranks
    bar = progress(feed, desc="train", total=math.ceil(n / batch_size), show=fit.ranks.main)
    for (images, targets, *drawn), size in zip(bar, sizes, strict=True):
        if drawn:
            images = fit.augment.apply(images, drawn[0])
        part = len(targets) / size  # 1 on a single process
        loss = train_step(fit, to_model_input(images, mean, std), targets, weight=part * fit.ranks.world)
        total += loss * len(targets)
        on_batch(loss if part == 1 else loss * part)
    return fit.ranks.sum(total).item() / n


def draw_order(n: int, generator: torch.Generator, sampling: torch.Tensor | None = None) -> torch.Tensor:
    """An epoch's (n,) image indices: a permutation, or with `sampling` (`train.sampler: balanced`)
    n draws with replacement in proportion to it. Drawn from `generator` on the CPU, so every rank
    draws the same epoch and a resumed run draws what the uninterrupted one did."""
    if sampling is None:
        return torch.randperm(n, generator=generator)
    return torch.multinomial(sampling, n, replacement=True, generator=generator)


def train_step(fit: Fit, x: torch.Tensor, targets: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """One optimisation step on a ready float batch; returns its loss, detached, on the device.

    Distributed, `weight` is this rank's share of the whole batch times the number of ranks:
    DistributedDataParallel averages the ranks' gradients, and weighted so, that average is the
    gradient of the whole batch's mean loss even when the last batch does not split evenly.
    """
    scaler = fit.scaler or NO_SCALING
    if fit.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(fit.device.type, dtype=fit.amp, enabled=fit.amp is not None):
        logits = fit.forward(x)
        # a rank with no images in a short last batch still takes part in the gradient average
        loss = fit.loss_fn(logits, targets) if len(targets) else logits.sum() * 0.0
    fit.model.zero_grad(set_to_none=True)  # all of them: weights outside the optimizer may get some (freeze_epochs)
    scaler.scale(loss if weight == 1.0 else loss * weight).backward()
    if fit.clip_grad_norm > 0:
        scaler.unscale_(fit.optimizer)
        nn.utils.clip_grad_norm_([p for group in fit.optimizer.param_groups for p in group["params"]], fit.clip_grad_norm)
    scaler.step(fit.optimizer)
    scaler.update()
    fit.schedule.after_batch()
    return loss.detach().float()


@torch.no_grad()
def validate(fit: Fit, data: LabelledImages) -> dict[str, float]:
    """`val/loss`, `val/accuracy` and `val/f1_macro` (multi-label: exact-match accuracy, and
    `val/f1_micro` too), as the task decides and scores.

    Distributed, each rank runs its share of the images (no padding, so none counts twice), the
    logits are gathered, and every rank gets rank 0's scores: the same decisions everywhere.
    """
    part = fit.ranks.share(len(data.targets))
    logits = fit.ranks.gather_rows(predict_logits(fit.model, data.images[part], fit.mean, fit.std))

    def scores() -> dict[str, float]:
        loss = fit.loss_fn(logits.to(fit.device), data.targets.to(fit.device)).item()
        found = {"loss": loss, **fit.task.validation_scores(data.targets, logits)}
        return {f"val/{name}": value for name, value in found.items()}

    return fit.ranks.from_main(scores)


def improved(val: dict[str, float], best: dict[str, float], monitor: str, tie_break: bool = True) -> bool:
    """Whether this epoch's `val/...` metrics beat the best so far on `monitor`; ties go to the
    lower validation loss when `tie_break` (choosing the saved epoch), never for early stopping."""
    if not best:
        return True
    sign = -1.0 if monitor == "val/loss" else 1.0
    if not tie_break:
        return sign * val[monitor] > sign * best[monitor]
    return (sign * val[monitor], -val["val/loss"]) > (sign * best[monitor], -best["val/loss"])


class NotLogged:
    """Stands in for dvclive's `Live` on the ranks that do not log (all but rank 0)."""

    def __init__(self) -> None:
        self.step = 0
        self.summary: dict = {}

    def log_metric(self, name: str, value: float) -> None:
        pass

    def make_summary(self) -> None:
        pass

    def log_params(self, params: dict) -> None:
        pass


@torch.no_grad()
def best_logits(fit: Fit, state: LoopState, data: LabelledImages) -> torch.Tensor:
    """The best epoch's logits on `data` (loads its weights into `fit.model`)."""
    fit.model.load_state_dict(state.best_state)
    return predict_logits(fit.model, data.images, fit.mean, fit.std)


def start_or_resume(
    resume_dir: Path, run_id: str, fit: Fit, generator: torch.Generator, params: TrainParams, train_size: int,
) -> tuple[LoopState, Fit]:
    """The loop state and `fit`: restored from an interrupted run with the same fingerprint, else
    fresh. Distributed, rank 0 reads the state file and sends it to every rank."""
    ranks = fit.ranks
    payload = ranks.from_main(lambda: load_payload(resume_dir / STATE_FILE, run_id))
    if payload is None:
        if ranks.main:
            shutil.rmtree(resume_dir, ignore_errors=True)
        return LoopState(), fit
    if in_second_phase(params, payload["epoch"]):  # its optimizer state is the second phase's
        fit = unfrozen(fit, params, train_size)
    state = restore_state(payload, fit, generator)
    if ranks.main:
        truncate_history(resume_dir / "live", state.step)
        print(f"train: resuming after epoch {state.epoch} from {resume_dir}")
    return state, fit


def run_epochs(
    fit: Fit, params: TrainParams, train_data: LabelledImages, val_data: LabelledImages,
    generator: torch.Generator, live: Live, state: LoopState, checkpoint: Callable[[Fit], None],
) -> Fit:
    """The epoch loop from `state.epoch + 1`, with early stopping; updates `state` in place, calls
    `checkpoint` after each epoch, and returns `fit` as the last epoch trained it (`train.freeze_epochs`
    swaps its optimizer)."""

    def on_batch(loss: torch.Tensor) -> None:
        state.step += 1
        if state.step % params.log_every == 0:
            live.step = state.step
            live.log_metric("train/batch_loss", fit.ranks.sum(loss).item())

    say = print if fit.ranks.main else lambda *_: None
    for epoch in range(state.epoch + 1, params.epochs + 1):
        if fit.frozen and in_second_phase(params, epoch):
            fit = unfrozen(fit, params, len(train_data.targets))
            state.bad_epochs = 0  # patience counts from the unfreezing: the head alone may plateau
            say(f"train: epoch {epoch}: unfreezing the backbone after train.freeze_epochs {params.freeze_epochs}; the lr schedule restarts")
        head_only = params.freeze_epochs and epoch <= params.freeze_epochs  # the backbone's turn is still to come
        if params.patience and state.bad_epochs >= params.patience and not head_only:
            say(f"train: early stop, {params.monitor} has not improved for {params.patience} epochs")
            break
        lr = fit.optimizer.param_groups[0]["lr"]
        train_loss = train_one_epoch(fit, train_data, params.batch_size, generator, on_batch)
        val = validate(fit, val_data)
        fit.schedule.after_epoch(val[params.monitor])
        live.step = state.step
        live.log_metric("epoch", epoch)
        live.log_metric("lr", lr)
        live.log_metric("train/loss", train_loss)
        for name, value in val.items():
            live.log_metric(name, value)
        say(f"epoch {epoch}: train/loss {train_loss:.4f} " + " ".join(f"{k} {v:.4f}" for k, v in val.items()))
        state.bad_epochs = 0 if improved(val, state.best, params.monitor, tie_break=False) else state.bad_epochs + 1
        if improved(val, state.best, params.monitor):
            state.best = {"epoch": epoch, **val}
            state.best_state = cpu_weights(fit.model)
        state.epoch = epoch
        live.make_summary()
        checkpoint(fit)
    return fit
