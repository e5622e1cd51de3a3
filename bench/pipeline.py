"""Time each stage of the pipeline on the default data and print the test metrics.

    .venv/bin/python bench/pipeline.py [--model cnn] [-S key=value ...] [--workdir /tmp/imgpipe-bench]

`-S` overrides params.yaml like `dvc exp run -S`, e.g. the multi-label digits:

    .venv/bin/python bench/pipeline.py -S data.source=builtin:multidigit -S image.size=48 \
        -S model=cnn_spatial -S train.epochs=20 -S train.lr=0.003 -S train.scheduler=onecycle

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

from imgpipe.core.layout import EVALUATE_METRICS, METRICS_FILE

REPO = Path(__file__).resolve().parents[1]
STAGES = ("download", "augment", "split", "train", "evaluate", "predict")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="override params.yaml's model")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a params.yaml value (dotted key; the value is read as YAML)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="imgpipe-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    if args.model:
        params["model"] = args.model
    for assignment in args.set:
        set_param(params, assignment)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    print(f"model={params['model']} source={params['data']['source']} epochs={params['train']['epochs']} "
          f"image.size={params['image']['size']} cpus={os.cpu_count()} overrides={' '.join(args.set) or '-'}")
    total = 0.0
    for stage in STAGES:
        start = time.perf_counter()
        subprocess.run([sys.executable, str(REPO / "stages" / f"{stage}.py")], cwd=work, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        total += seconds
        print(f"{stage:<10} {seconds:7.1f} s")
    print(f"{'total':<10} {total:7.1f} s")
    metrics = json.loads((work / EVALUATE_METRICS / METRICS_FILE).read_text())
    print("test " + " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
    if args.workdir is None:
        shutil.rmtree(work)


def set_param(params: dict, assignment: str) -> None:
    """Apply `a.b=value` to nested `params`, the value parsed as YAML (`[10]`, `0.5`, `tune`)."""
    key, sep, value = assignment.partition("=")
    if not sep:
        raise SystemExit(f"-S {assignment!r}: expected KEY=VALUE")
    *parents, name = key.split(".")
    node = params
    for part in parents:
        node = node.setdefault(part, {})
    node[name] = yaml.safe_load(value)


if __name__ == "__main__":
    main()
