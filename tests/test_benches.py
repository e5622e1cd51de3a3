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
