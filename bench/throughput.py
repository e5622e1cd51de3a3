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
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from photos import make_photos

from imgpipe.data.readers import list_images
from imgpipe.data.tensors import LabelledImages, load_images
from imgpipe.outputs import scratch_dir
from imgpipe.params import load_params
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
    args = parser.parse_args()
    args.photo_size = tuple(int(v) for v in args.photo.lower().split("x"))
    return args


if __name__ == "__main__":
    main()
