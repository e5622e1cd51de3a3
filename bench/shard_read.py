"""Decoding from tar shards against decoding from one file per image: the same bytes, both layouts.

    .venv/bin/python bench/shard_read.py [--images 2000] [--size 64] [--rounds 3]

Writes `--images` realistic JPEGs (bench/photos.py, 500x375), runs the augment stage's library
code on them with the default params (copies in data/augmented/shards, originals read from the
raw folder), and also unpacks every copy into its own file, as the augment stage used to write
them. Then decodes every image of the manifest into a (N, C, size, size) uint8 tensor with
`imgpipe.feed.tensors.load_images` (what train and evaluate do once per run), from the shards
and from the files, in interleaved rounds, and prints the median seconds of each and the ratio.
The page cache is warm for both (each is read once before timing): this measures the reads and
decodes, not the disk.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from photos import make_photos

from imgpipe.core.params import load_params
from imgpipe.data.augment import augment_dataset
from imgpipe.data.shards import members
from imgpipe.feed.tensors import load_images

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    params = load_params(REPO / "params.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        raw = make_photos(work / "raw", args.images, 500, 375)
        manifest = augment_dataset(raw, work / "augmented", params.augment, params.seed).astype(str)
        in_shards = members(manifest, work / "augmented")
        files = []
        for member, path in zip(in_shards, manifest["path"], strict=True):  # the old layout
            dest = work / "files" / path
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(member.read_bytes())
            files.append(dest)
        shards = sorted((work / "augmented" / "shards").glob("*.tar"))
        print(f"{len(manifest)} images ({args.images} originals + copies), decoded to {args.size} px RGB; "
              f"copies in {len(shards)} shard(s) of {sum(p.stat().st_size for p in shards):,} bytes")
        timings: dict[str, list[float]] = {"shards": [], "one file per image": []}
        sources = {"shards": in_shards, "one file per image": files}
        for name, items in sources.items():  # warm the page cache
            load_images(items, args.size, 3, desc=name)
        for _ in range(args.rounds):
            for name, items in sources.items():
                start = time.perf_counter()
                load_images(items, args.size, 3, desc=name)
                timings[name].append(time.perf_counter() - start)
        for name, times in timings.items():
            print(f"{name:20s} median {statistics.median(times):.2f} s "
                  f"({len(manifest) / statistics.median(times):,.0f} images/s) over {args.rounds} rounds")
        ratio = statistics.median(timings["shards"]) / statistics.median(timings["one file per image"])
        print(f"shards / files time: {ratio:.2f}")


if __name__ == "__main__":
    main()
