"""Every bench script still imports against the library, and nothing but it and bench/common.py.
The suite never runs a bench (they print numbers for people to read, and take minutes), but a
rename in src/imgpipe that breaks one fails here, in milliseconds, instead of when someone next
runs it; so does a function bench/throughput.py's profile names that is no longer there."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


SCRIPTS = sorted(path for path in BENCH.glob("*.py") if path.name != "common.py")  # common: what they share


def load(script: Path, monkeypatch):
    """`script` as a module, with bench/ on sys.path as `python bench/<name>.py` puts it (benches
    import their neighbours: common, photos)."""
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # as __main__ is: dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_bench_imports_and_has_a_main(script: Path, monkeypatch):
    assert callable(load(script, monkeypatch).main)


@pytest.mark.parametrize("script", sorted(BENCH.glob("*.py")), ids=lambda path: path.name)
def test_bench_stands_on_the_library_not_on_tests(script: Path):
    """bench/ imports imgpipe and its neighbours (common, photos), never a module of tests/, which
    may change shape with no bench in mind; nor does it name the tests folder in code."""
    tree = ast.parse(script.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    of_tests = {"tests", "support", "helpers", "conftest"} | {p.stem for p in (BENCH.parent / "tests").rglob("*.py")}
    assert not imported & (of_tests - {path.stem for path in BENCH.glob("*.py")})
    assert "tests" not in {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)}


def test_every_profiled_part_is_a_function_in_the_code(monkeypatch):
    """`--e2e-profile` finds each part by (file, name): a function that moves or is renamed would
    read 0 s there, so it fails here, and the bench stops before it runs if it is missing."""
    bench = load(BENCH / "throughput.py", monkeypatch)
    assert bench.missing_parts() == []
    planted = (
        (1, "gone", [((bench.LOOP, "no_such_function"), (bench.LOOP, "run_epochs"))]),
        (1, "moved", [(("imgpipe/train/no_such_file.py", "train_step"), None)]),
        (1, "caller gone", [((bench.LOOP, "train_step"), (bench.STAGE, "no_such_caller"))]),
    )
    assert bench.missing_parts(parts=bench.PARTS + planted) == [
        "imgpipe/train/loop.py:no_such_function", "imgpipe/train/no_such_file.py:train_step",
        "imgpipe/train/stage.py:no_such_caller",
    ]


def test_end_to_end_breakdown_reads_each_callers_share_from_cprofile(monkeypatch):
    """bench/throughput.py --e2e-profile times a part where its parent calls it: pstats keeps each
    caller's share of a function's cumulative time, so a function called from two places (dvclive's
    log_metric, per batch and per epoch) splits between two parts."""
    bench = load(BENCH / "throughput.py", monkeypatch)
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
