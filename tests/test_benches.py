"""Every bench script still imports against the library. The suite never runs a bench (they print
numbers for people to read, and take minutes), but a rename in src/imgpipe that breaks one fails
here, in milliseconds, instead of when someone next runs it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.parametrize("script", sorted(BENCH.glob("*.py")), ids=lambda path: path.name)
def test_bench_imports_and_has_a_main(script: Path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # benches import their neighbours (photos)
    spec = importlib.util.spec_from_file_location(f"bench_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(module.main)


def test_end_to_end_breakdown_reads_each_callers_share_from_cprofile(monkeypatch):
    """bench/throughput.py --e2e-profile times a part where its parent calls it: pstats keeps each
    caller's share of a function's cumulative time, so a function called from two places (dvclive's
    log_metric, per batch and per epoch) splits between two parts."""
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_throughput_parts", BENCH / "throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    training, live = "/x/src/imgpipe/train/loop.py", "/venv/site-packages/dvclive/live.py"
    run_epochs, on_batch = (training, 441, "run_epochs"), (training, 449, "on_batch")
    stats = {  # pstats' layout: (file, line, name) -> (primitive calls, calls, own s, cumulative s, callers)
        run_epochs: (1, 1, 0.1, 9.0, {}),
        on_batch: (40, 40, 0.01, 0.5, {(training, 102, "train_one_epoch"): (40, 40, 0.01, 0.5)}),
        (live, 500, "log_metric"): (48, 48, 0.2, 0.7, {on_batch: (4, 4, 0.1, 0.4), run_epochs: (44, 44, 0.1, 0.3)}),
        ("/elsewhere/training.py", 1, "run_epochs"): (1, 1, 5.0, 5.0, {}),  # not imgpipe's file: not counted
    }
    assert bench.part_seconds(stats, [(("imgpipe/train/loop.py", "run_epochs"), None)]) == 9.0
    per_epoch = [(("dvclive/live.py", "log_metric"), ("imgpipe/train/loop.py", "run_epochs"))]
    assert bench.part_seconds(stats, per_epoch) == 0.3
    assert bench.child_parts(0) == [i for i, part in enumerate(bench.PARTS) if part[0] == 1]
