"""The export stage in the real pipeline (`committed_run`: `dvc repro` in a git + DVC project):
an experiment with another model re-exports it through the gate, and the ONNX file is DVC's
model-registry artifact, downloaded by name with the real `dvc artifacts get`."""

from __future__ import annotations

import json
from pathlib import Path

from support.project import BIN, copy_project, ran, run

from imgpipe.core.layout import EXPORT_METRICS, ONNX_MODEL


def test_the_first_repro_ran_export_and_its_gate_held(committed_run):
    assert "export" in ran(committed_run.repro_output)
    metrics = json.loads((committed_run.repo / EXPORT_METRICS / "metrics.json").read_text())
    assert metrics["parity"]["agreement"] == 1.0 and metrics["parity"]["max_abs_diff"] <= 1e-4


def test_an_experiment_with_another_model_re_exports_it_through_the_gate(committed_run, tmp_path: Path):
    repo = copy_project(committed_run.repo, tmp_path / "repo")
    done = run(["dvc", "exp", "run", "-S", "model=mobilenetv3_small", "-S", "train.epochs=1"], repo)
    assert ran(done.stdout) == {"train", "evaluate", "export", "predict"}, done.stdout
    metrics = json.loads((repo / EXPORT_METRICS / "metrics.json").read_text())
    assert metrics["parity"]["agreement"] == 1.0 and metrics["parity"]["max_abs_diff"] <= 1e-4
    assert "# Model card: `mobilenetv3_small`" in (repo / EXPORT_METRICS / "model_card.md").read_text()
    assert "export" not in ran(run(["dvc", "repro"], repo).stdout)  # nothing changed: nothing reruns


def test_the_onnx_file_is_a_model_registry_artifact(committed_run, tmp_path: Path):
    """A version registered as DVC Studio does (a GTO git tag, `gto register`) is what
    `dvc artifacts get` downloads by name."""
    repo = copy_project(committed_run.repo, tmp_path / "repo")
    run([str(BIN / "gto"), "register", "classifier"], repo)
    assert "classifier@v0.0.1" in run(["git", "tag"], repo).stdout
    out = tmp_path / "downloaded.onnx"
    run(["dvc", "artifacts", "get", str(repo), "classifier", "-o", str(out)], tmp_path)
    assert out.read_bytes() == (repo / ONNX_MODEL).read_bytes()
