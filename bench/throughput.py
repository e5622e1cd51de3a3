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

`--end-to-end` then adds (d), the train stage itself on the same images:

    .venv/bin/python bench/throughput.py --make 1000 --model resnet18 --size 64 --channels 3 \\
        --rounds 1 --skip-naive --end-to-end

The real data stages' functions (download, augment with no stored variants, split 0.8/0.1/0.1)
write data/annotations.csv under --work, from a params.yaml there; then the real `training.train()`
runs as stages/train.py runs it in one process, with train.epochs 1 and then 4, from scratch each
time (after one warm-up run), --e2e-repeats pairs. (T4 - T1) / 3 is the stage's seconds per epoch
without its one-time costs (decoding, building the model, writing the model file). It prints, per
pair and as the median pair: stage per-epoch seconds; compute-only per-epoch seconds (the epoch's
train steps on random tensors on the device plus validation's `predict_logits` over as many
images, measured before the first pair and after every run, median); `end-to-end ratio = compute /
stage`; and where a stage epoch goes, timed by wrapping the stage's own calls for these runs only:
in the epoch loop the train epoch (`train_one_epoch`), validation (`validate`), copying the resume
state to the CPU (`state_payload`), waiting for the previous epoch's state write
(`StateWriter.save`) and everything else, and on the background thread the state write itself
(`resume.save_state`, with the state file's size); then the load average, to judge how quiet the
machine was.

`--nproc-per-node 1,2` adds (e): `python stages/train.py` as DVC starts it, with each
train.nproc_per_node (torchrun + DistributedDataParallel beyond 1), epochs 1 and 4 in interleaved
rounds: seconds per epoch, training images/s and the speed-up, end to end. On a GPU machine:

    .venv/bin/python bench/throughput.py --make 4000 --model resnet18 --size 64 --rounds 1 \\
        --skip-naive --nproc-per-node 1,2,4
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import io
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import torch
import yaml
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from photos import make_photos

from imgpipe import resume, training
from imgpipe.data.annotations import read_annotations
from imgpipe.data.augment import augment_dataset
from imgpipe.data.readers import list_images
from imgpipe.data.sources import LabelOptions, download
from imgpipe.data.split import write_split
from imgpipe.data.tensors import LabelledImages, load_images
from imgpipe.inference import predict_logits
from imgpipe.outputs import scratch_dir
from imgpipe.params import Params, TrainParams, load_params
from imgpipe.task import task_of
from imgpipe.training import Fit, build_model, make_fit, seed_everything, train_one_epoch, train_step

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    args = parse_args()
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
    with scratch_dir(args.work / "pixels") as cache:
        start = time.perf_counter()
        images = load_images(paths, args.size, args.channels, out=cache / "train.npy")
        decode = time.perf_counter() - start
        print(f"decode once: {len(paths) / decode:.0f} images/s ({decode:.1f} s), memory-mapped file "
              f"{images.numel() / 2**20:.0f} MiB (what holding it in RAM would cost)")
        dataset = LabelledImages(images, torch.tensor(labels))
        model = build_model(args.model, train, len(classes), args.channels, args.size)
        fit = make_fit(args.model, model, train, True, dataset)
        print(f"device {fit.device}, amp {fit.amp}, channels_last {fit.channels_last}, compile {args.compile}")
        run(args, fit, dataset, data, MemoryWatch(cache / "train.npy"))
    if args.end_to_end:
        end_to_end(args, data, train)
    if args.nproc_per_node:
        processes(args, data, train)


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


# --end-to-end: the train stage itself

STAGE_EPOCHS = (1, 4)  # train.epochs of the two stage runs; (T4 - T1) / 3 is one epoch without one-time costs
# The stage's calls timed per call, by label: the module or class each is looked up in when it is
# called (so patching that name reaches it), and its name there.
TIMED = {
    "train_one_epoch": (training, "train_one_epoch"),
    "validate": (training, "validate"),
    "state_payload": (training, "state_payload"),  # the resume state copied to the CPU, in the loop
    "StateWriter.save": (resume.StateWriter, "save"),  # waits for the previous write, then starts this one
    "save_state": (resume, "save_state"),  # the write itself, on StateWriter's background thread
}
IN_LOOP = ("train_one_epoch", "validate", "state_payload", "StateWriter.save")  # the epoch loop waits for these
RAW, AUGMENTED, ANNOTATIONS = Path("data/raw"), Path("data/augmented"), Path("data/annotations.csv")  # stage defaults


def end_to_end(args, data: Path, train: TrainParams) -> None:
    """The real train stage on the photos in `data`: its seconds per epoch against the compute-only
    seconds of the same epoch, and where its epochs' time goes."""
    work = args.work / f"end-to-end-{data.name}"
    start = time.perf_counter()
    params = prepare_stage(work, data, args, train)
    table = read_annotations(work / ANNOTATIONS)
    counts = table["split"].value_counts()
    n_train, n_val = int(counts.get("train", 0)), int(counts.get("val", 0))
    print(f"\n(d) end to end: the train stage (training.train) in {work}; data stages (download, augment with "
          f"no variants, split) took {time.perf_counter() - start:.1f} s: train {n_train}, val {n_val}, "
          f"test {int(counts.get('test', 0))} images")
    compute = ComputeOnly(params, n_train, n_val, len(task_of(table).classes))
    compute.epoch()  # warm-ups: the first train() in a process pays one-time costs a later one does not
    stage_run(work, params, STAGE_EPOCHS[0])
    measured = [compute.epoch()]  # interleaved with the stage runs, so load on the machine hits both alike
    pairs = []
    for _ in range(args.e2e_repeats):
        runs = []
        for epochs in STAGE_EPOCHS:
            runs.append(stage_run(work, params, epochs))
            measured.append(compute.epoch())
        pairs.append(StagePair(*runs))
    report_end_to_end(pairs, measured)


def prepare_stage(work: Path, data: Path, args, train: TrainParams) -> Params:
    """`work` as the data stages leave it (their default paths, data/annotations.csv last), run in
    this process through the library functions stages/download.py, augment.py and split.py call,
    with `work/params.yaml` (`stage_params`); returns those params."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "params.yaml").write_text(yaml.safe_dump(stage_params(data, args, train), sort_keys=False))
    p = load_params(work / "params.yaml")
    options = LabelOptions(p.task, p.data.annotations, p.data.image_column, p.data.labels_column)
    download(p.data.source, work / RAW, p.data.sha256, p.data.limit, options, work / "metrics/download",
             max_extract_gb=p.data.max_extract_gb)
    augment_dataset(work / RAW, work / AUGMENTED, p.augment, seed=p.seed)
    write_split(work / AUGMENTED, work / ANNOTATIONS, work / "metrics/split", p.split, seed=p.seed)
    return p


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


class StageRun:
    """One `training.train()` run: its seconds, the seconds of each call of the `TIMED` functions,
    the size of the resume-state file it last wrote, and the best epoch's validation metrics.
    (A plain class: tests/test_benches.py loads this file outside sys.modules, where @dataclass
    cannot resolve its annotations.)"""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls: dict[str, list[float]] = {label: [] for label in TIMED}
        self.state_bytes = 0
        self.best: dict[str, float] = {}


def stage_run(work: Path, params: Params, epochs: int) -> StageRun:
    """`training.train()` as stages/train.py runs it in one process, with train.epochs = `epochs`,
    from scratch (a fresh model file, no resume state), its `TIMED` calls wrapped for this run only."""
    model_out = work / "models" / f"model-{epochs}.pt"
    metrics = work / "metrics" / f"train-{epochs}"
    for path in (training.resume_dir_for(model_out), metrics):
        shutil.rmtree(path, ignore_errors=True)
    model_out.unlink(missing_ok=True)
    run = StageRun()
    with timed_calls(run), contextlib.redirect_stdout(io.StringIO()):  # its per-epoch lines
        start = time.perf_counter()
        run.best = training.train(params.model, params.image, dataclasses.replace(params.train, epochs=epochs),
                                  params.seed, work / ANNOTATIONS, work / AUGMENTED, model_out, metrics,
                                  model_args=params.model_args)
        run.seconds = time.perf_counter() - start  # train() ends on the host (the model file is written)
    return run


@contextlib.contextmanager
def timed_calls(run: StageRun) -> Iterator[None]:
    """Within the block, each of the `TIMED` calls records its seconds in `run`, and `save_state`
    the state file's size too. Each ends on the host (a loss `.item()`, logits or the state copied
    to the CPU, a file written), so no GPU work is left running when its clock stops."""
    with contextlib.ExitStack() as stack:
        for label, (owner, name) in TIMED.items():
            if not hasattr(owner, name):
                continue  # gone from the library: reported as not measured
            wrapped = clocked(getattr(owner, name), run.calls[label])
            if label == "save_state":
                wrapped = sized(wrapped, run)
            stack.enter_context(mock.patch.object(owner, name, wrapped))
        yield


def clocked(fn: Callable, seconds: list[float]) -> Callable:
    """`fn`, appending each call's seconds to `seconds`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    return wrapper


def sized(save_state: Callable, run: StageRun) -> Callable:
    """`save_state(resume_dir, ...)`, recording the size of the file it wrote in `run`."""

    @functools.wraps(save_state)
    def wrapper(resume_dir, *args, **kwargs):
        save_state(resume_dir, *args, **kwargs)
        run.state_bytes = (Path(resume_dir) / resume.STATE_FILE).stat().st_size

    return wrapper


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


class StagePair:
    """A run with train.epochs `STAGE_EPOCHS[0]` and one with `STAGE_EPOCHS[1]`: seconds per epoch of
    the stage, and of each `TIMED` function, from the calls the longer run made beyond the shorter's."""

    def __init__(self, short: StageRun, long: StageRun) -> None:
        self.short, self.long = short, long
        self.extra = STAGE_EPOCHS[1] - STAGE_EPOCHS[0]
        self.stage = (long.seconds - short.seconds) / self.extra
        # a call not made once per epoch (one the library no longer makes) is not measured
        self.parts = {label: (sum(long.calls[label]) - sum(short.calls[label])) / self.extra for label in TIMED
                      if len(long.calls[label]) - len(short.calls[label]) == self.extra}


def report_end_to_end(pairs: list[StagePair], measured: list[tuple[float, float]]) -> None:
    """Stage and compute-only seconds per epoch, their ratio, and the breakdown of the median pair's
    stage epoch."""
    pair = sorted(pairs, key=lambda p: p.stage)[(len(pairs) - 1) // 2]  # the median (the lower of two)
    stage, extra = pair.stage, pair.extra
    t_short, t_long = (f"T{e}" for e in STAGE_EPOCHS)
    steps, val = (statistics.median(m[i] for m in measured) for i in (0, 1))
    compute = statistics.median(s + v for s, v in measured)
    for k, p in enumerate(pairs, 1):
        print(f"stage runs {k} (after a warm-up run): {t_short} {p.short.seconds:.2f} s, "
              f"{t_long} {p.long.seconds:.2f} s -> {p.stage:.2f} s per epoch; best epoch {p.long.best['epoch']}, "
              f"val/accuracy {p.long.best['val/accuracy']:.3f}")
    print("compute-only epochs: " + "  ".join(f"{s + v:.2f}" for s, v in measured) + " s")
    print(f"stage per-epoch   : {stage:8.2f} s   ({t_long} - {t_short}) / {extra}, median of {len(pairs)}; "
          f"one-time cost of a run {pair.short.seconds - STAGE_EPOCHS[0] * stage:.2f} s")
    print(f"compute per-epoch : {compute:8.2f} s   (median of {len(measured)}: train steps {steps:.2f} s "
          f"+ val forward {val:.2f} s)")
    print(f"end-to-end ratio = compute / stage = {compute / stage:.3f}")
    parts = pair.parts
    state_mb = pair.long.state_bytes / 1e6

    def line(label: str, note: str) -> None:
        seconds = f"{parts[label]:8.3f} s  ({note})" if label in parts else "not measured (no such call)"
        print(f"  {label:18}: {seconds}")

    print(f"where a stage epoch goes (that pair: {t_long} run's calls minus {t_short} run's, / {extra}); in the loop:")
    line("train_one_epoch", f"the train epoch; compute-only steps {steps:.3f} s")
    line("validate", f"compute-only forward {val:.3f} s")
    line("state_payload", "the resume state copied to the CPU")
    line("StateWriter.save", "waiting for the previous epoch's state write, starting this one")
    print(f"  {'everything else':18}: {stage - sum(parts.get(k, 0.0) for k in IN_LOOP):8.3f} s  (the rest of the "
          f"epoch loop: dvclive logging, keeping the best weights, the schedule)")
    print(f"  {'stage per-epoch':18}: {stage:8.3f} s  (stage - compute = {stage - compute:.3f} s)")
    print("on StateWriter's background thread, overlapping the next epoch (it takes the CPU from it):")
    line("save_state", f"writing {resume.STATE_FILE}, {state_mb:.1f} MB, "
                       f"{state_mb / max(parts.get('save_state', 0.0), 1e-9):.0f} MB/s")
    print(f"load average (1, 5, 15 min) {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} cores; "
          f"the bench itself keeps about {torch.get_num_threads()} busy, more means something else ran too")


# --nproc-per-node: the train stage as DVC runs it, on 1 and on several processes

def processes(args, data: Path, train: TrainParams) -> None:
    """(e): `python stages/train.py` (a new process, as `dvc repro` starts it) with
    train.nproc_per_node each of `args.nproc_per_node` (torchrun + DDP beyond 1), epochs 1 and 4,
    rounds interleaved; seconds per epoch and images per second, end to end."""
    import subprocess
    import sys

    work = args.work / f"end-to-end-{data.name}"
    params = stage_params(data, args, train)
    if not (work / ANNOTATIONS).is_file():
        prepare_stage(work, data, args, train)
    n_train = int((read_annotations(work / ANNOTATIONS)["split"] == "train").sum())
    print(f"\n(e) the train stage (python stages/train.py) on {n_train} training images, per process count; "
          f"train.batch_size {train.batch_size} is the global batch")
    seconds: dict[tuple[int, int], list[float]] = {}
    for _ in range(args.e2e_repeats):
        for nproc in args.nproc_per_node:
            for epochs in STAGE_EPOCHS:
                name = f"procs-{nproc}-{epochs}"
                params["train"].update(epochs=epochs, nproc_per_node=nproc)
                (work / f"{name}.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
                start = time.perf_counter()
                subprocess.run([sys.executable, str(REPO / "stages/train.py"), "--params", f"{name}.yaml", "--out",
                                f"models/{name}.pt", "--metrics", f"metrics/{name}"], cwd=work, check=True,
                               stdout=subprocess.DEVNULL)
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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--round-seconds", type=float, default=8.0, help="aim each (b) round at this long")
    parser.add_argument("--epochs", type=int, default=0, help="epochs per round (0: from --round-seconds)")
    parser.add_argument("--naive-workers", type=int, default=0, help="DataLoader workers for (c)")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--end-to-end", action="store_true",
                        help="then the train stage itself: data stages, train() with 1 and 4 epochs, vs compute-only")
    parser.add_argument("--e2e-repeats", type=int, default=3, help="--end-to-end: pairs of stage runs (median)")
    parser.add_argument("--nproc-per-node", type=lambda text: [int(v) for v in text.split(",")], default=[],
                        help="then the train stage as DVC runs it with these process counts, e.g. 1,2 (torchrun + DDP)")
    args = parser.parse_args()
    args.photo_size = tuple(int(v) for v in args.photo.lower().split("x"))
    return args


if __name__ == "__main__":
    main()
