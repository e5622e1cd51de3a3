"""Time each stage of the pipeline on the default data and print the test metrics.

    .venv/bin/python bench/pipeline.py [--model cnn] [--workdir /tmp/imgpipe-bench]

Runs the real stage scripts one after another in a scratch folder (no DVC overhead), so the
numbers are the pipeline's own cost on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = ("download", "augment", "split", "train", "evaluate", "predict")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="override params.yaml's model")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="imgpipe-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    if args.model:
        params["model"] = args.model
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    print(f"model={params['model']} epochs={params['train']['epochs']} image.size={params['image']['size']} cpus={os.cpu_count()}")
    total = 0.0
    for stage in STAGES:
        start = time.perf_counter()
        subprocess.run([sys.executable, str(REPO / "stages" / f"{stage}.py")], cwd=work, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        total += seconds
        print(f"{stage:<10} {seconds:7.1f} s")
    print(f"{'total':<10} {total:7.1f} s")
    metrics = json.loads((work / "metrics/evaluate/metrics.json").read_text())
    print("test " + " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
    if args.workdir is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
