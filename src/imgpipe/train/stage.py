"""The train stage: fit a registered model on the train split, keep the best epoch by validation.

Training is resumable: after every epoch the full state (model, optimizer, scheduler, RNG
states, best epoch, dvclive history) is saved beside the model file, and a rerun with the same
params and data continues from there, ending with the same metrics as an uninterrupted run.

Training runs at the model's pace: every image is decoded once into a memory-mapped uint8 file
beside the model, and the online augmentations and normalisation run on whole batches on the
device (`imgpipe.feed.batches`). On a CUDA GPU (used when present) batches are gathered one ahead
on a background thread and travel pinned and non-blocking, and the model runs channels_last
under mixed precision (`train.amp`); `train.compile` compiles it on any device.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from dvclive import Live

from imgpipe.core.atomic import scratch_dir, staged_outputs
from imgpipe.core.errors import UserError
from imgpipe.core.notes import Note, say
from imgpipe.core.params import LAUNCH_KEYS, ImageParams, TrainParams
from imgpipe.data.annotations import read_annotations
from imgpipe.data.profile import needs_profile, profile_images, resolve_image
from imgpipe.data.shards import members
from imgpipe.feed.device import resolve_device
from imgpipe.feed.tensors import LabelledImages, load_split, map_split
from imgpipe.models.checkpoint import ModelSpec, write_checkpoint
from imgpipe.models.pretrained import fetch_imagenet_weights
from imgpipe.task.tasks import Task, task_of
from imgpipe.train.distributed import SINGLE, Ranks
from imgpipe.train.fit import Fit, build_model, make_fit, seed_everything
from imgpipe.train.footprint import check_fits, estimate
from imgpipe.train.loop import NotLogged, best_logits, run_epochs, start_or_resume
from imgpipe.train.resume import StateWriter, state_payload


def fingerprint(
    model_name: str, image: ImageParams, params: TrainParams, seed: int, annotations: Path, model_args: dict | None = None
) -> str:
    """Identifies a training run: a saved state resumes only a run with the same fingerprint.
    How many processes train is not part of it (`LAUNCH_KEYS`): it changes the speed only."""
    args = sorted((model_args or {}).items())
    train = {k: v for k, v in asdict(params).items() if k not in LAUNCH_KEYS}
    digest = hashlib.sha256(json.dumps([model_name, args, asdict(image), train, seed]).encode())
    digest.update(Path(annotations).read_bytes())
    return digest.hexdigest()


def resume_dir_for(model_out: Path) -> Path:
    return Path(model_out).parent / f".{Path(model_out).name}.resume"


def train(
    model_name: str,
    image: ImageParams,
    params: TrainParams,
    seed: int,
    annotations: Path,
    images_root: Path,
    model_out: Path,
    metrics_dir: Path,
    model_args: dict | None = None,
    ranks: Ranks = SINGLE,
) -> dict[str, float] | None:
    """Train `model_name` (built with `model_args`) and write the best epoch's model file and dvclive metrics.

    Returns the best epoch's validation metrics; as one of several distributed `ranks`, rank 0
    does that and writes everything, and the other ranks return None.
    """
    seed_everything(seed)
    table = read_annotations(annotations)
    task = task_of(table)
    for split in ("train", "val"):
        if not (table["split"] == split).any():
            raise UserError(f"{annotations}: the {split} split is empty; raise split.{split} or add images")
    task.check_params(params)
    image = resolved_image(image, table, images_root, ranks)
    run_id = fingerprint(model_name, image, params, seed, annotations, model_args)
    same_run_everywhere(ranks, run_id)
    # Pretrained weights expect RGB: grayscale images are read as 3 equal channels.
    channels = 3 if params.pretrained != "none" else image.channels
    check_fits_before_decoding(model_name, model_args or {}, len(task.classes), channels, image.size, params, table, model_out, ranks)
    if params.pretrained == "imagenet" and ranks.local_rank == 0:
        fetch_imagenet_weights(model_name)  # one download per machine; the other ranks read the cache
    ranks.barrier()
    model = build_model(model_name, params, len(task.classes), channels, image.size, model_args)
    train_data, val_data = decode_splits(table, images_root, task, image.size, channels, model_out, ranks)
    task, notes = task.for_training(params, train_data.targets)
    if ranks.main:
        say("train", notes)
    fit = make_fit(model_name, model, params, image.normalize, train_data, task, ranks)
    generator = torch.Generator().manual_seed(seed)
    resume_dir = resume_dir_for(model_out)
    state, fit = start_or_resume(resume_dir, run_id, fit, generator, params, len(train_data.targets))

    live_dir = resume_dir / "live"
    logger = Live(str(live_dir), resume=state.epoch > 0, dvcyaml=None, save_dvc_exp=False) if ranks.main else nullcontext(NotLogged())
    with logger as live, StateWriter(resume_dir) as writer:
        live.log_params({"image": {"size": image.size, "channels": channels}})  # as trained, `auto` resolved
        if (weights := task.class_weights(params, train_data.targets)) is not None:
            live.log_params({"train": {"class_weights": weights}})  # `balanced` resolved

        def checkpoint(fit: Fit) -> None:
            if ranks.main:  # one writer
                writer.save(state_payload(run_id, state, fit, generator))

        fit = run_epochs(fit, params, train_data, val_data, generator, live, state, checkpoint)
        live.summary["best"] = state.best
        if ranks.main:
            task = after_training(fit, params, state, val_data, live)
    if not ranks.main:
        return None

    spec = ModelSpec(model_name, task.classes, image.size, channels, fit.mean, fit.std,
                     model_args=dict(model_args or {}), **task.spec_fields())
    with staged_outputs() as staged:  # the model file and its metrics land together
        write_checkpoint(staged.file(model_out), spec, state.best_state, {"best_epoch": int(state.best["epoch"])})
        shutil.copytree(live_dir, staged.folder(metrics_dir), dirs_exist_ok=True)
    shutil.rmtree(resume_dir)
    return state.best


def after_training(fit: Fit, params: TrainParams, state, val_data: LabelledImages, live) -> Task:
    """The task as the model file stores it: the temperature (`train.calibrate`) and tuned
    thresholds fitted on the best epoch's val logits; the val split's calibration before and
    after goes in the metrics (`calibration`), and the seconds the fit took in a note."""
    logits = best_logits(fit, state, val_data)
    targets = val_data.targets.numpy()
    started = time.perf_counter()
    task, notes = fit.task.after_training(params, logits, val_data.targets)
    took = time.perf_counter() - started
    after = task.calibration(targets, logits.numpy()).scores
    summary = {"val": after}
    if task.temperature:
        before = fit.task.calibration(targets, logits.numpy()).scores
        # the fit's seconds go in the note, not the metrics: a rerun must write the same metrics
        summary |= {"val_before": before, "temperature": temperature_summary(task.temperature)}
        notes.append(Note(f"val ECE {before['ece']:.4f} -> {after['ece']:.4f}, NLL {before['nll']:.4f} -> {after['nll']:.4f} "
                          f"({took:.3f} s)"))
    live.summary["calibration"] = summary
    say("train", notes)
    return task


def temperature_summary(temperature: tuple[float, ...]) -> float | dict[str, float]:
    """The metric of a fitted temperature: itself, or per-label temperatures' spread."""
    if len(temperature) == 1:
        return temperature[0]
    return {"min": min(temperature), "median": float(np.median(temperature)), "max": max(temperature)}


def check_fits_before_decoding(
    model_name: str, model_args: dict, num_classes: int, channels: int, size: int, params: TrainParams, table, model_out: Path,
    ranks: Ranks = SINGLE,
) -> None:
    """Refuse, before minutes of decoding, a run whose share of a batch cannot fit its device (a GPU
    per rank; on the CPU, the machine's ranks share its memory) or whose decoded images cannot fit
    the disk beside `model_out`."""
    batch = math.ceil(params.batch_size / ranks.world)  # each rank's share (`Ranks.share`)
    decoded = int(table["split"].isin(["train", "val"]).sum())
    scratch = next(p for p in (Path(model_out).absolute().parent, *Path(model_out).absolute().parents) if p.exists())
    device = resolve_device(params.device)
    footprint = estimate(model_name, model_args, num_classes, channels, size, batch, decoded)
    if footprint is not None and device.type != "cuda":
        footprint = replace(footprint, activations=footprint.activations * ranks.local_world,
                            weights=footprint.weights * ranks.local_world)
    check_fits(footprint, device, scratch, size)


def resolved_image(image: ImageParams, table, images_root: Path, ranks: Ranks = SINGLE) -> ImageParams:
    """`image` with `auto` resolved from the training originals (`imgpipe.data.profile`), said once."""
    if not needs_profile(image):
        return image
    originals = table[(table["split"] == "train") & (table["transform"] == "original")]
    profile = ranks.from_main(lambda: profile_images(members(originals, images_root)))
    image, said = resolve_image(image, profile)
    if ranks.main:
        for line in said:
            print(f"train: {line}")
    return image


def same_run_everywhere(ranks: Ranks, run_id: str) -> None:
    """Every rank must train the same run: another machine with other params or data would
    silently train something else."""
    ids = ranks.all_objects(run_id)
    for rank, other in enumerate(ids):
        if other != ids[0]:
            raise UserError(f"rank {rank}'s params or annotation file differ from rank 0's; give every machine "
                            "the same commit and data (git pull && dvc pull) and the same params.yaml")


def decode_splits(
    table, images_root: Path, task: Task, size: int, channels: int, model_out: Path, ranks: Ranks = SINGLE,
) -> tuple[LabelledImages, LabelledImages]:
    """The train and val images, decoded once per machine into memory-mapped files.

    Local rank 0 decodes into a scratch folder beside `model_out`; the machine's other ranks wait,
    then map the same files. The folder goes when every rank has mapped it: an unlinked file lives
    until its last map closes, so nothing is left behind and no rank holds the images in its own memory.
    """
    decodes = ranks.local_rank == 0
    with scratch_dir(model_out) if decodes else nullcontext() as pixels:
        pixels = ranks.node_value(pixels)
        if decodes:
            loaded = [load_split(table, s, images_root, task, size, channels, cache_dir=pixels) for s in ("train", "val")]
        ranks.barrier()
        if not decodes:
            loaded = [map_split(table, s, task, pixels) for s in ("train", "val")]
        ranks.barrier()
    return loaded[0], loaded[1]
