"""Cost of reading one huge photo: the download stage's check, augment's decode and train's decode
(reduced-size JPEG decoding) against a plain full-size Pillow decode, each in a fresh process.

    .venv/bin/python bench/reader.py [--width 6000 --height 4000]

Prints wall time and the process's peak memory above the import baseline (ru_maxrss).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

CASES = {
    "full decode (Pillow, no draft)": "from PIL import Image; Image.open(p).convert('RGB')",
    "inspect_image (download check)": "from imgpipe.data.readers import inspect_image; inspect_image(p)",
    "open_image max_side=512 (augment)": "from imgpipe.data.readers import open_image; open_image(p, max_side=512)",
    "load_pixels size=64 (train/evaluate/predict)": "from imgpipe.data.readers import load_pixels; load_pixels(p, 64, 3)",
}
PROBE = """
import resource, sys, time
from pathlib import Path
import numpy, PIL.Image, imgpipe.data.readers
p = Path(sys.argv[1])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
{code}
dt = time.perf_counter() - t
print(dt, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=6000)
    parser.add_argument("--height", type=int, default=4000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "photo.jpg"
        rng = np.random.default_rng(0)
        small = rng.integers(0, 255, (args.height // 50, args.width // 50, 3), dtype=np.uint8)
        Image.fromarray(small).resize((args.width, args.height), Image.Resampling.BILINEAR).save(path, quality=90)
        print(f"{args.width}x{args.height} JPEG, {path.stat().st_size / 1e6:.1f} MB on disk")
        for name, code in CASES.items():
            out = subprocess.run(
                [sys.executable, "-c", PROBE.format(code=code), str(path)], capture_output=True, text=True, check=True
            )
            seconds, peak_mib = (float(v) for v in out.stdout.split())
            print(f"{name:46s} {seconds * 1000:7.0f} ms  peak +{peak_mib:6.0f} MiB")


if __name__ == "__main__":
    main()
