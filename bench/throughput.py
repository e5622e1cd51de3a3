"""Training throughput: the model's compute limit, our train loop, and the usual ImageFolder loop.

    .venv/bin/python bench/throughput.py --make 2000 --model resnet18 --size 64 --channels 3 \\
        --crop-padding 4 --flip
    .venv/bin/python bench/throughput.py --data DIR --model cnn --size 32

Prints, side by side in one run (rounds interleaved, so load on the machine hits all three alike):
  (a) compute: training images/s on random tensors already on the device (the model's limit);
  (b) pipeline: images/s of imgpipe's real train loop (`training.train_one_epoch`) on the dataset:
      memory-mapped decoded images, batch gathering, online augmentation, normalisation, the step;
  (c) naive: torchvision ImageFolder + PIL + Resize + ToTensor (+ Normalize) through a DataLoader,
      decoding every JPEG every epoch, with no augmentation (which favours it);
then b/a, b/c, the one-time decode of (b), and peak resident memory while (b) ran, split into
process memory (anonymous) and pages of the memory-mapped image file (the kernel can drop those).

Same model, batch size, optimizer (params.yaml's), loss and device for all three; every timing
comes after a warm-up epoch. `--make N` writes N JPEGs of realistic photo content (bench/photos.py)
under --work first. On CUDA the model runs as the train stage runs it (channels_last, AMP).

`--end-to-end` then adds (d), the train stage as a user waits for it, on the same images:

    .venv/bin/python bench/throughput.py --make 1000 --model resnet18 --size 64 --rounds 0 --end-to-end \
        --e2e-repeats 5 --e2e-profile [--code before=/tmp/before --code after=.]

It makes a git + DVC project under --work per `--code` tree (default: this repository), from the
tree's dvc.yaml, stages/ and src/ (run from there, on PYTHONPATH) and this repository's params.yaml
with the photos as data.source, no stored variants (augment.rotations [], shear 0) and split
0.8/0.1/0.1; `dvc repro split` runs the data stages once. Then, in --e2e-repeats interleaved
rounds, it times `dvc repro --force -s train` with train.epochs 1 and 4 in each tree, from DVC's
start to its end; (T4 - T1) / 3 is a stage epoch without its one-time costs (start-up, decoding,
the model file, DVC's own work). After every stage run it times one compute-only epoch in this
process: the epoch's train steps (`train_step`, same model, batch sizes and optimizer) on random
tensors already on the device, plus validation's forward passes (`predict_logits`) over as many
images. It prints each tree's seconds per epoch, `end-to-end ratio = compute / stage`, each tree's
per-epoch ratio to the first tree's (round by round), and the load average. `--e2e-profile`
then runs the train stage's command from dvc.yaml as `python -m cProfile stages/train.py ...`, with
train.epochs 1 and 4 in each tree, and prints each part of an epoch (`PARTS`: train steps, batch
gathering, validation, dvclive, the resume state, ...) as the longer run's seconds beyond the
shorter's, per epoch. Nothing in the stage is patched or wrapped. `--rounds 0` skips (a)-(c).

`--nproc-per-node 1,2` adds (e): `python stages/train.py` as DVC starts it, with each
train.nproc_per_node (torchrun + DistributedDataParallel beyond 1), epochs 1 and 4 in interleaved
rounds: seconds per epoch, training images/s and the speed-up, end to end. On a GPU machine:

    .venv/bin/python bench/throughput.py --make 4000 --model resnet18 --size 64 --rounds 1 \\
        --skip-naive --nproc-per-node 1,2,4
"""

from __future__ import annotations

import argparse
import ast
import cProfile
import dataclasses
import functools
import importlib.util
import os
import pstats
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from common import PROJECT_FILES, REPO
from photos import make_photos
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from imgpipe.core.atomic import scratch_dir
from imgpipe.core.layout import ANNOTATIONS, MODEL, TRAIN_METRICS
from imgpipe.core.params import Params, TrainParams, load_params
from imgpipe.data.annotations import read_annotations
from imgpipe.data.readers import list_images
from imgpipe.feed.inference import predict_logits
from imgpipe.feed.tensors import LabelledImages, load_images
from imgpipe.task.tasks import task_of
from imgpipe.train.fit import Fit, build_model, make_fit, seed_everything
from imgpipe.train.loop import train_one_epoch, train_step


def main() -> None:
    args = parse_args()
    if args.e2e_profile:  # before anything runs: a part that is not there would read 0 s, not fail
        for label, tree in (args.code or {"this tree": REPO}).items():
            if missing := missing_parts(tree / "src"):
                raise SystemExit(f"error: --e2e-profile: bench/throughput.py's PARTS name function(s) not found in "
                                 f"{label} ({tree / 'src'}): {', '.join(missing)}")
    data = args.data or make_photos(args.work / f"photos-{args.make}-{args.photo}", args.make, *args.photo_size)
    classes = sorted(p.name for p in data.iterdir() if p.is_dir())
    paths, labels = [], []
    for k, name in enumerate(classes):
        found = list_images(data / name)
        paths += found
        labels += [k] * len(found)
    train = dataclasses.replace(
        load_params(REPO / "params.yaml").train, batch_size=args.batch_size, crop_padding=args.crop_padding,
        flip=args.flip, device=args.device, amp=not args.no_amp, compile=args.compile,
    )
    seed_everything(0)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    print(f"{len(paths)} images in {len(classes)} classes from {data}; model {args.model} at {args.size} px, "
          f"{args.channels} channel(s), batch {args.batch_size}, optimizer {train.optimizer}, "
          f"online augmentation crop_padding={args.crop_padding} flip={args.flip}, "
          f"{torch.get_num_threads()} torch threads")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.rounds > 0:
        loops(args, data, paths, labels, len(classes), train)
    if args.end_to_end:
        end_to_end(args, data, train)
    if args.nproc_per_node:
        processes(args, data, train)


def loops(args, data: Path, paths: list[Path], labels: list[int], classes: int, train: TrainParams) -> None:
    """(a), (b) and (c) on the images decoded once into a memory-mapped file."""
    with scratch_dir(args.work / "pixels") as cache:
        start = time.perf_counter()
        images = load_images(paths, args.size, args.channels, out=cache / "train.npy")
        decode = time.perf_counter() - start
        print(f"decode once: {len(paths) / decode:.0f} images/s ({decode:.1f} s), memory-mapped file "
              f"{images.numel() / 2**20:.0f} MiB (what holding it in RAM would cost)")
        dataset = LabelledImages(images, torch.tensor(labels))
        model = build_model(args.model, train, classes, args.channels, args.size)
        fit = make_fit(args.model, model, train, True, dataset)
        print(f"device {fit.device}, amp {fit.amp}, channels_last {fit.channels_last}, compile {args.compile}")
        run(args, fit, dataset, data, MemoryWatch(cache / "train.npy"))


def run(args, fit: Fit, dataset: LabelledImages, data: Path, memory: MemoryWatch) -> None:
    n, batch = len(dataset.targets), args.batch_size
    sizes = [min(batch, n - s) for s in range(0, n, batch)]  # one epoch's batch sizes
    generator = torch.Generator().manual_seed(0)

    def pipeline(epochs: int) -> float:
        for _ in range(epochs):
            train_one_epoch(fit, dataset, batch, generator, on_batch=memory.sample)
        memory.sample_mapped()
        return epochs * n

    x = torch.randn(batch, dataset.images.shape[1], args.size, args.size, device=fit.device)
    y = dataset.targets[:batch].to(fit.device)

    def compute(epochs: int) -> float:
        fit.model.train()
        for _ in range(epochs):
            for size in sizes:
                train_step(fit, x[:size], y[:size])
        return epochs * n

    naive_loader = naive(data, args, fit)

    def naive_loop(epochs: int) -> float:
        fit.model.train()
        seen = 0
        for _ in range(epochs):
            for images, targets in naive_loader:
                train_step(fit, images.to(fit.device, non_blocking=True), targets.to(fit.device, non_blocking=True))
                seen += len(targets)
        return seen

    runs = {"a": compute, "b": pipeline} | ({} if args.skip_naive else {"c": naive_loop})
    # warm-up (and, with --compile, compiling); one epoch of (b) also sizes the rounds
    first = timed(fit, pipeline, 1)[0]
    compute(1)
    if "c" in runs:
        warm(naive_loader)
    epochs = args.epochs or max(1, round(args.round_seconds / first))
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(args.rounds):
        for name, fn in runs.items():
            seconds, images = timed(fit, fn, epochs)
            rates[name].append(images / seconds)
        print(f"round {r + 1}: " + "  ".join(f"({k}) {v[-1]:.0f}" for k, v in rates.items()) + " images/s")
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"(a) compute-only : {med['a']:8.1f} images/s")
    print(f"(b) pipeline     : {med['b']:8.1f} images/s")
    if "c" in med:
        print(f"(c) naive loader : {med['c']:8.1f} images/s  (num_workers={args.naive_workers})")
    print(f"b/a = {med['b'] / med['a']:.3f}" + (f"   b/c = {med['b'] / med['c']:.2f}" if "c" in med else ""))
    print(f"peak resident memory of (b): process (anonymous) {memory.peak_anon / 2**20:.0f} MiB, plus "
          f"{memory.peak_file / 2**20:.0f} MiB of the memory-mapped image file in page cache")
    print(f"each round: {epochs} epoch(s) of {n} images per run; figures are medians of {args.rounds} rounds")


def naive(data: Path, args, fit: Fit) -> DataLoader:
    steps = [transforms.Grayscale(1)] if args.channels == 1 else []
    steps += [transforms.Resize((args.size, args.size)), transforms.ToTensor(), transforms.Normalize(fit.mean, fit.std)]
    folder = datasets.ImageFolder(str(data), transform=transforms.Compose(steps))
    return DataLoader(folder, batch_size=args.batch_size, shuffle=True, num_workers=args.naive_workers,
                      pin_memory=fit.device.type == "cuda", persistent_workers=args.naive_workers > 0)


def warm(loader: DataLoader) -> None:
    """A few batches of the naive loop (a whole epoch would double the bench's run time)."""
    it = iter(loader)
    for _ in range(3):
        next(it, None)
    del it


def timed(fit: Fit, fn, epochs: int) -> tuple[float, float]:
    sync(fit)
    start = time.perf_counter()
    images = fn(epochs)
    sync(fit)
    return time.perf_counter() - start, images


def sync(fit: Fit) -> None:
    if fit.device.type == "cuda":
        torch.cuda.synchronize()


class MemoryWatch:
    """Peak resident memory while (b) runs: the process's own (anonymous) memory, sampled after
    every batch, and the resident pages of the memory-mapped image file, read at each round's end."""

    def __init__(self, mapped: Path) -> None:
        self.mapped = str(mapped)
        self.peak_anon = self.peak_file = 0

    def sample(self, loss=None) -> None:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    self.peak_anon = max(self.peak_anon, int(line.split()[1]) * 1024)

    def sample_mapped(self) -> None:
        """Sum of Rss over the mappings of the image file, from /proc/self/smaps."""
        rss, inside = 0, False
        with open("/proc/self/smaps") as smaps:
            for line in smaps:
                head = line.split()
                if head and "-" in head[0] and len(head) >= 5:  # a mapping's first line
                    inside = line.rstrip().endswith(self.mapped)
                elif inside and line.startswith("Rss:"):
                    rss += int(head[1]) * 1024
        self.peak_file = max(self.peak_file, rss)


# --end-to-end: the train stage as DVC runs it

STAGE_EPOCHS = (1, 4)  # train.epochs of the two stage runs; (T4 - T1) / 3 is one epoch without one-time costs
CODE_FILES = ("dvc.yaml", "stages", "src")  # what differs between the trees `--code` compares
# Where a stage epoch goes: the stage's own calls, as cProfile records them on its main thread.
# Each part is a function (the file it is defined in, its name) timed where it is called from its
# parent (cProfile keeps each caller's share of a function's cumulative time), or from anywhere
# for a parent of None; the indent nests parts inside the part above them. A generator's time
# (`batches`) is its resumptions'. `missing_parts` checks that each one is still there.
STAGE, LOOP, BATCHES = "imgpipe/train/stage.py", "imgpipe/train/loop.py", "imgpipe/feed/batches.py"
RESUME, LIVE = "imgpipe/train/resume.py", "dvclive/live.py"
PARTS = (
    (0, "the epoch loop (run_epochs)", [((LOOP, "run_epochs"), None)]),
    (1, "train epoch (train_one_epoch)", [((LOOP, "train_one_epoch"), (LOOP, "run_epochs"))]),
    (2, "train steps (train_step: forward, backward, optimizer)", [((LOOP, "train_step"), (LOOP, "train_one_epoch"))]),
    (2, "batch gathering, online augmentation, normalisation", [
        ((BATCHES, "batches"), None), ((BATCHES, "apply"), (LOOP, "train_one_epoch")),
        (("imgpipe/feed/tensors.py", "to_model_input"), (LOOP, "train_one_epoch"))]),
    (2, "per-batch logging (on_batch: dvclive)", [((LOOP, "on_batch"), (LOOP, "train_one_epoch"))]),
    (1, "validation (validate)", [((LOOP, "validate"), None)]),  # called through torch.no_grad's wrapper
    (1, "dvclive per-epoch metrics and summary", [((LIVE, "log_metric"), (LOOP, "run_epochs")),
                                                  ((LIVE, "make_summary"), (LOOP, "run_epochs"))]),
    (1, "best epoch's weights copied to the CPU (cpu_weights)", [((RESUME, "cpu_weights"), (LOOP, "run_epochs"))]),
    (1, "resume state (checkpoint: state_payload, StateWriter.save)", [((STAGE, "checkpoint"), (LOOP, "run_epochs"))]),
    (2, "copied to the CPU (state_payload)", [((RESUME, "state_payload"), (STAGE, "checkpoint"))]),
    (2, "waiting for the last epoch's write (StateWriter.save)", [((RESUME, "save"), (STAGE, "checkpoint"))]),
)


def end_to_end(args, data: Path, train: TrainParams) -> None:
    """(d): the train stage's seconds per epoch as `dvc repro` runs it, for each `--code` tree,
    against the compute-only seconds of the same epoch, rounds interleaved; then, with
    `--e2e-profile`, where the stage's epochs go (cProfile over `python stages/train.py`)."""
    work = args.work / f"end-to-end-{data.name}"
    start = time.perf_counter()
    projects = prepare_projects(work, data, args, train, args.code or {"this-tree": REPO})
    first = next(iter(projects.values()))
    table = read_annotations(first / ANNOTATIONS)
    counts = table["split"].value_counts()
    n_train, n_val = int(counts.get("train", 0)), int(counts.get("val", 0))
    print(f"\n(d) end to end: `dvc repro --force -s train` in {work}/<tree> ({', '.join(projects)}); the data stages "
          f"(dvc repro split: download, augment with no stored variants, split) took {time.perf_counter() - start:.1f} s: "
          f"train {n_train}, val {n_val}, test {int(counts.get('test', 0))} images")
    compute = ComputeOnly(load_params(first / "params.yaml"), n_train, n_val, len(task_of(table).classes))
    compute.epoch()  # warm-ups: the compute-only model, and each tree's first stage run (page cache, imports)
    for project in projects.values():
        stage_seconds(project, STAGE_EPOCHS[0])
    seconds: dict[tuple[str, int], list[float]] = {(label, e): [] for label in projects for e in STAGE_EPOCHS}
    measured, loads, rounds = [compute.epoch()], [os.getloadavg()[0]], []
    runs = [(label, e) for label in projects for e in STAGE_EPOCHS]
    for r in range(args.e2e_repeats):
        for label, epochs in runs if r % 2 == 0 else runs[::-1]:  # alternate the order: no run always goes first
            seconds[label, epochs].append(stage_seconds(projects[label], epochs))
            measured.append(compute.epoch())
        rounds.append(measured[-len(runs):])
        loads.append(os.getloadavg()[0])
        print(f"round {r + 1}: " + "  ".join(f"{label} T{e} {seconds[label, e][-1]:.2f} s" for label, e in runs)
              + f"; load average {loads[-1]:.2f}")
    if args.e2e_repeats:
        report_end_to_end(seconds, list(projects), measured, rounds, loads)
    if args.e2e_profile:
        for label, project in projects.items():
            profile_stage(label, project, compute)


def prepare_projects(work: Path, data: Path, args, train: TrainParams, trees: dict[str, Path]) -> dict[str, Path]:
    """`work/<label>` for each tree: a git + DVC project with the tree's pipeline and code, the
    same params.yaml (`stage_params`), and the data stages' outputs, made by `dvc repro split` in
    the first and copied to the others (`cp -a`, so outputs stay hard links into each one's cache).
    dvclive wants a commit (its baseline rev): the pipeline and params are committed."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (label, tree), *others = trees.items()
    first = work / label
    copy_files(tree, first, PROJECT_FILES)
    (first / "params.yaml").write_text(yaml.safe_dump(stage_params(data, args, train), sort_keys=False))
    command(["git", "init", "-q"], first)
    command(["git", "add", "-A"], first)
    command(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "pipeline"], first)
    command(["dvc", "repro", "split"], first)
    projects = {label: first}
    for label, tree in others:
        projects[label] = work / label
        command(["cp", "-a", str(first), str(projects[label])], work)
        for name in CODE_FILES:
            shutil.rmtree(projects[label] / name, ignore_errors=True)
            (projects[label] / name).unlink(missing_ok=True)
        copy_files(tree, projects[label], CODE_FILES)
    return projects


def copy_files(tree: Path, dest: Path, names: tuple[str, ...]) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    skip = shutil.ignore_patterns("tmp", "cache", "__pycache__", "config.local", "plots_page.html")
    for name in names:
        if (tree / name).is_dir():
            shutil.copytree(tree / name, dest / name, ignore=skip)
        elif (tree / name).is_file():
            shutil.copy2(tree / name, dest / name)


def stage_params(data: Path, args, train: TrainParams) -> dict:
    """The repo's params.yaml with the photos as `data.source`, no stored variants (the bench's
    images as they are), split 0.8/0.1/0.1, and this bench's model, image and train settings."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"] = args.model
    params["data"]["source"] = str(data)
    params["augment"].update(rotations=[], shear=0, invert=False)
    params["split"].update(train=0.8, val=0.1, test=0.1)
    params["image"].update(size=args.size, channels=args.channels, normalize=True)
    params["train"].update(epochs=STAGE_EPOCHS[0], batch_size=train.batch_size, crop_padding=train.crop_padding,
                           flip=train.flip, device=train.device, amp=train.amp, compile=train.compile)
    return params


def set_epochs(project: Path, epochs: int, name: str = "params.yaml", **train) -> None:
    """`project/<name>`: its params.yaml with train.epochs = `epochs` (and `train` keys)."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"].update(epochs=epochs, **train)
    (project / name).write_text(yaml.safe_dump(params, sort_keys=False))


def stage_env(project: Path) -> dict[str, str]:
    """The stage's environment: this venv's `python` and `dvc` first on PATH, and the project's own
    copy of the code (`src/`) on PYTHONPATH, ahead of the installed imgpipe, so each tree runs its code."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(project / "src"), "DVC_NO_ANALYTICS": "1"}


def command(argv: list[str], cwd: Path) -> None:
    """Run `argv` in `cwd` with `stage_env`; its output is shown only when it fails."""
    done = subprocess.run(argv, cwd=cwd, env=stage_env(cwd if (cwd / "src").is_dir() else REPO), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} in {cwd} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def stage_seconds(project: Path, epochs: int) -> float:
    """Seconds of `dvc repro --force -s train` with train.epochs = `epochs`: what a user waits for,
    from DVC's start to the model file in its cache. Every run starts from scratch: a finished run
    leaves no resume state."""
    set_epochs(project, epochs)
    start = time.perf_counter()
    command(["dvc", "repro", "--force", "-s", "train"], project)
    return time.perf_counter() - start


class ComputeOnly:
    """One stage epoch's compute alone: the train steps of an epoch of `n_train` images (same batch
    sizes) on random tensors already on the device, then validation's forward passes
    (`predict_logits`) over a random uint8 tensor shaped like the val split (on the host, where
    validation's memory-mapped images are). The model is set up as (a) sets it up, from the stage's
    params (build_model, make_fit)."""

    def __init__(self, params: Params, n_train: int, n_val: int, classes: int) -> None:
        size, batch = params.image.size, params.train.batch_size
        channels = 3 if params.train.pretrained != "none" else params.image.channels  # as training.train decides
        images = torch.randint(0, 256, (n_train, channels, size, size), dtype=torch.uint8)
        targets = torch.randint(0, classes, (n_train,))
        model = build_model(params.model, params.train, classes, channels, size, params.model_args)
        self.fit = make_fit(params.model, model, params.train, params.image.normalize, LabelledImages(images, targets))
        self.sizes = [min(batch, n_train - s) for s in range(0, n_train, batch)]
        self.x = torch.randn(batch, channels, size, size, device=self.fit.device)
        self.y = targets[:batch].to(self.fit.device)
        self.val = torch.randint(0, 256, (n_val, channels, size, size), dtype=torch.uint8)

    def epoch(self) -> tuple[float, float]:
        """Seconds of one epoch's train steps, and of its validation passes."""
        return timed(self.fit, self.steps, 1)[0], timed(self.fit, self.validate, 1)[0]

    def steps(self, epochs: int) -> int:
        self.fit.model.train()
        for _ in range(epochs):
            for size in self.sizes:
                train_step(self.fit, self.x[:size], self.y[:size])
        return epochs * sum(self.sizes)

    def validate(self, epochs: int) -> int:
        for _ in range(epochs):
            predict_logits(self.fit.model, self.val, self.fit.mean, self.fit.std)
        return epochs * len(self.val)


def per_epoch(seconds: dict[tuple[str, int], list[float]], label: str) -> list[float]:
    """Each round's (T4 - T1) / 3 for the tree `label`."""
    extra = STAGE_EPOCHS[1] - STAGE_EPOCHS[0]
    return [(long - short) / extra for short, long in zip(*(seconds[label, e] for e in STAGE_EPOCHS), strict=True)]


def report_end_to_end(seconds: dict[tuple[str, int], list[float]], labels: list[str], measured: list[tuple[float, float]],
                      rounds: list[list[tuple[float, float]]], loads: list[float]) -> None:
    """Each tree's seconds per epoch (median of the rounds' (T4 - T1) / 3) against compute-only
    (median of all its epochs; and round by round, against that round's), and each tree against
    the first, round by round."""
    t_short, t_long = (f"T{e}" for e in STAGE_EPOCHS)
    steps, val = (statistics.median(m[i] for m in measured) for i in (0, 1))
    compute = statistics.median(s + v for s, v in measured)
    print("compute-only epochs: " + "  ".join(f"{s + v:.2f}" for s, v in measured) + " s")
    print(f"compute per-epoch : {compute:8.3f} s   (median of {len(measured)}: train steps {steps:.3f} s "
          f"+ val forward {val:.3f} s)")
    epochs = {label: per_epoch(seconds, label) for label in labels}
    for label in labels:
        stage = statistics.median(epochs[label])
        one_time = statistics.median(seconds[label, STAGE_EPOCHS[0]]) - STAGE_EPOCHS[0] * stage
        print(f"{label}: stage per-epoch {stage:.3f} s (({t_long} - {t_short}) / {STAGE_EPOCHS[1] - STAGE_EPOCHS[0]}, "
              f"median of {len(epochs[label])} rounds: {' '.join(f'{e:.2f}' for e in epochs[label])}); one-time cost "
              f"of a run {one_time:.2f} s")
        ratios = [statistics.median(s + v for s, v in r) / e for r, e in zip(rounds, epochs[label], strict=True)]
        print(f"{label}: end-to-end ratio = compute / stage = {compute / stage:.3f} (medians); round by round "
              f"{' '.join(f'{r:.3f}' for r in ratios)}, median {statistics.median(ratios):.3f}")
    base = labels[0]
    for label in labels[1:]:
        ratios = [b / e for b, e in zip(epochs[base], epochs[label], strict=True)]
        print(f"{label} vs {base}: stage per-epoch {base} / {label} = {statistics.median(ratios):.3f} "
              f"(median of the rounds: {' '.join(f'{r:.3f}' for r in ratios)})")
    print(f"load average (1 min) over the rounds {min(loads):.2f} .. {max(loads):.2f} on {os.cpu_count()} cores; a stage "
          f"or the compute-only loop keeps about {torch.get_num_threads()} busy, more means something else ran too")


def profile_stage(label: str, project: Path, compute: ComputeOnly) -> None:
    """Where an epoch of the stage goes: the train stage's command from dvc.yaml, run as
    `python -m cProfile` (nothing in the stage patched or wrapped), with train.epochs 1 and 4;
    each part's seconds in the longer run beyond the shorter's, per epoch. The profiler costs
    something on every Python call, most in the model's forward passes, so it also times
    `compute`'s train steps and validation under cProfile, to compare like with like."""
    argv = shlex.split(yaml.safe_load((project / "dvc.yaml").read_text())["stages"]["train"]["cmd"])
    if argv[0] != "python":
        raise SystemExit(f"{project / 'dvc.yaml'}: the train stage's cmd does not start with python: {argv}")
    seconds, stats = {}, {}
    for epochs in STAGE_EPOCHS:
        set_epochs(project, epochs)
        out = project / f"train-{epochs}.prof"
        start = time.perf_counter()
        command([sys.executable, "-m", "cProfile", "-o", str(out), *argv[1:]], project)
        seconds[epochs] = time.perf_counter() - start
        stats[epochs] = pstats.Stats(str(out)).stats
    extra = STAGE_EPOCHS[1] - STAGE_EPOCHS[0]
    stage = (seconds[STAGE_EPOCHS[1]] - seconds[STAGE_EPOCHS[0]]) / extra
    parts = {name: (part_seconds(stats[STAGE_EPOCHS[1]], calls) - part_seconds(stats[STAGE_EPOCHS[0]], calls)) / extra
             for _, name, calls in PARTS}
    print(f"\n{label}: where a stage epoch goes (`python -m cProfile {' '.join(argv[1:])}`, train.epochs "
          f"{STAGE_EPOCHS[1]} minus {STAGE_EPOCHS[0]}, / {extra}; main thread, wall clock): {stage:.3f} s per epoch "
          f"under the profiler")
    show_parts(0, parts, stage)
    outside = stage - parts[PARTS[0][1]]
    print(f"  {'outside the epoch loop':66}: {outside:7.3f} s  ({outside / stage:6.1%})")
    profiler = cProfile.Profile()
    steps, val = profiler.runcall(compute.epoch)
    print(f"  compute-only under the same profiler: train steps {steps:.3f} s, validation {val:.3f} s per epoch")


def show_parts(i: int, parts: dict[str, float], stage: float) -> None:
    """`PARTS[i]` and, indented below it, its children, then the rest of its time."""
    depth, name, _ = PARTS[i]

    def line(depth: int, text: str, value: float) -> None:
        print(f"  {'  ' * depth}{text:{66 - 2 * depth}}: {value:7.3f} s  ({value / stage:6.1%})")

    line(depth, name, parts[name])
    children = child_parts(i)
    for child in children:
        show_parts(child, parts, stage)
    if children:
        line(depth + 1, "the rest", parts[name] - sum(parts[PARTS[c][1]] for c in children))


def child_parts(i: int) -> list[int]:
    """The indices of `PARTS[i]`'s direct children."""
    depth, found = PARTS[i][0], []
    for j in range(i + 1, len(PARTS)):
        if PARTS[j][0] <= depth:
            break
        if PARTS[j][0] == depth + 1:
            found.append(j)
    return found


def part_seconds(stats: dict, calls: list[tuple[tuple[str, str], tuple[str, str] | None]]) -> float:
    """Cumulative seconds of each (function, caller) of `calls` in pstats' `stats` (keyed by
    (file, line, name), each with (primitive calls, calls, own time, cumulative time, callers)),
    summed; a function is matched by the end of its file's path and its name."""
    total = 0.0
    for function, caller in calls:
        for key, (_, _, _, cumulative, callers) in stats.items():
            if not matches(key, function):
                continue
            if caller is None:
                total += cumulative
            else:
                total += sum(c[3] for where, c in callers.items() if matches(where, caller))
    return total


def matches(key: tuple[str, int, str], function: tuple[str, str]) -> bool:
    path, _, name = key
    return name == function[1] and Path(path).as_posix().endswith(f"/{function[0]}")


def missing_parts(src: Path = REPO / "src", parts=PARTS) -> list[str]:
    """Each function of `parts`, or caller it is timed under, that its file does not define, as
    `file:name`: one that moved or was renamed, which `part_seconds` would count as 0 s. Read
    with `ast`, nothing imported; any def counts: top-level, a method (`StateWriter.save`) or
    nested (`on_batch` in `run_epochs`). imgpipe's files are under `src`, dvclive's where it is
    installed."""
    functions = dict.fromkeys(f for _, _, calls in parts for call in calls for f in call if f is not None)
    return [f"{file}:{name}" for file, name in functions if name not in defined_names(source_file(file, src))]


def source_file(file: str, src: Path) -> Path | None:
    """`file` (`package/module.py`): under `src` for imgpipe, else in the installed package; None
    if that package is not installed."""
    package = file.split("/")[0]
    if package == "imgpipe":
        return src / file
    spec = importlib.util.find_spec(package)
    return Path(spec.submodule_search_locations[0]).parent / file if spec and spec.submodule_search_locations else None


@functools.cache
def defined_names(path: Path | None) -> frozenset[str]:
    """The name of every def in the Python file `path`; none when there is no such file."""
    if path is None or not path.is_file():
        return frozenset()
    tree = ast.parse(path.read_text(), str(path))
    return frozenset(node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef))


# --nproc-per-node: the train stage as DVC runs it, on 1 and on several processes

def processes(args, data: Path, train: TrainParams) -> None:
    """(e): `python stages/train.py` (a new process, as `dvc repro` starts it) with
    train.nproc_per_node each of `args.nproc_per_node` (torchrun + DDP beyond 1), epochs 1 and 4,
    rounds interleaved; seconds per epoch and images per second, end to end."""
    project = args.work / f"processes-{data.name}" / "nproc"
    if not (project / ANNOTATIONS).is_file():
        prepare_projects(project.parent, data, args, train, {project.name: REPO})
    n_train = int((read_annotations(project / ANNOTATIONS)["split"] == "train").sum())
    print(f"\n(e) the train stage (python stages/train.py) on {n_train} training images, per process count; "
          f"train.batch_size {train.batch_size} is the global batch")
    seconds: dict[tuple[int, int], list[float]] = {}
    for _ in range(args.e2e_repeats):
        for nproc in args.nproc_per_node:
            for epochs in STAGE_EPOCHS:
                name = f"procs-{nproc}-{epochs}"
                set_epochs(project, epochs, f"{name}.yaml", nproc_per_node=nproc)
                start = time.perf_counter()
                command([sys.executable, "stages/train.py", "--params", f"{name}.yaml", "--out", str(MODEL.parent / f"{name}.pt"),
                         "--metrics", str(TRAIN_METRICS.parent / name)], project)
                seconds.setdefault((nproc, epochs), []).append(time.perf_counter() - start)
    base = None
    for nproc in args.nproc_per_node:
        short, long = (statistics.median(seconds[nproc, e]) for e in STAGE_EPOCHS)
        epoch = (long - short) / (STAGE_EPOCHS[1] - STAGE_EPOCHS[0])
        base = base or epoch
        print(f"  nproc_per_node {nproc}: {epoch:6.2f} s per epoch ({n_train / epoch:7.1f} training images/s with "
              f"validation), x{base / epoch:.2f} vs {args.nproc_per_node[0]}; a run's start-up and one-time costs "
              f"{short - STAGE_EPOCHS[0] * epoch:.1f} s")
    print(f"  medians of {args.e2e_repeats} rounds; on a CPU the processes share its {os.cpu_count()} cores")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a folder with one sub-folder of images per class")
    parser.add_argument("--make", type=int, default=2000, help="without --data: make this many JPEGs")
    parser.add_argument("--photo", default="500x375", help="--make: the JPEGs' width x height")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "imgpipe-bench")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=3, choices=(1, 3))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--crop-padding", type=int, default=0, help="train.crop_padding for (b)")
    parser.add_argument("--flip", action="store_true", help="train.flip for (b)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--no-amp", action="store_true", help="train.amp false (CUDA)")
    parser.add_argument("--compile", action="store_true", help="train.compile true")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (a)-(c); 0 skips them")
    parser.add_argument("--round-seconds", type=float, default=8.0, help="aim each (b) round at this long")
    parser.add_argument("--epochs", type=int, default=0, help="epochs per round (0: from --round-seconds)")
    parser.add_argument("--naive-workers", type=int, default=0, help="DataLoader workers for (c)")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--end-to-end", action="store_true",
                        help="then (d): `dvc repro --force -s train` with train.epochs 1 and 4 vs compute-only epochs")
    parser.add_argument("--e2e-repeats", type=int, default=3, help="--end-to-end, --nproc-per-node: rounds (median)")
    parser.add_argument("--code", type=code_tree, action="append", default=[], metavar="LABEL=DIR",
                        help="--end-to-end: a tree (DIR with dvc.yaml, stages/, src/) to run the stage of; repeat to "
                             "compare trees in interleaved rounds, the first as the base (default: this repository)")
    parser.add_argument("--e2e-profile", action="store_true",
                        help="--end-to-end: then break a stage epoch down into its calls with cProfile")
    parser.add_argument("--nproc-per-node", type=lambda text: [int(v) for v in text.split(",")], default=[],
                        help="then the train stage as DVC runs it with these process counts, e.g. 1,2 (torchrun + DDP)")
    args = parser.parse_args()
    args.code = dict(args.code)
    args.photo_size = tuple(int(v) for v in args.photo.lower().split("x"))
    return args


def code_tree(text: str) -> tuple[str, Path]:
    label, sep, folder = text.partition("=")
    if not sep or not re.fullmatch(r"[\w.-]+", label) or not (Path(folder) / "src/imgpipe").is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: want LABEL=DIR, DIR holding src/imgpipe, LABEL of letters, digits, . _ -")
    return label, Path(folder).resolve()


if __name__ == "__main__":
    main()
