"""Stage scripts run by hand: --help shows an example that runs the stage as DVC does, and bad
input is one clear line with no traceback. In this process (`stage_in_process`); test_bad_inputs
runs the cases that need a real process."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import typer
from support.project import (
    assert_one_line_error,
    copy_prepared,
    stage_app,
    stage_in_process,
    tiny_overrides,
    write_params,
)

STAGES = ("download", "augment", "split", "train", "evaluate", "export", "predict")


def help_example(help_text: str, name: str) -> list[str]:
    """The options of the example command in a stage's --help (its docstring's `\\b` block)."""
    lines = iter(help_text.splitlines())
    line = next(line for line in lines if line.strip().startswith(f"python stages/{name}.py "))
    command = line.strip()
    while command.endswith("\\"):
        command = command.removesuffix("\\") + next(lines).strip()
    return shlex.split(command)[2:]


@pytest.mark.parametrize("name", STAGES)
def test_help_shows_an_example_that_runs_the_stage_as_with_no_options(name: str, tmp_path: Path):
    """A user copies the example from --help: every option in it exists, and each value is the
    default, so it runs the stage exactly as `python stages/<name>.py` and DVC do."""
    result = stage_in_process(name, "--help", cwd=tmp_path, check=True)
    example = help_example(result.stdout, name)
    assert example, result.stdout
    command = typer.main.get_command(stage_app(name))
    assert command.make_context(name, example).params == command.make_context(name, []).params
    assert all(f"[default: {value}]" in " ".join(result.stdout.split()) for value in example[1::2])


def test_unknown_model_lists_registered_names(prepared_shapes: Path, tmp_path: Path):
    work = copy_prepared(prepared_shapes, tmp_path / "work")
    write_params(work / "params.yaml", {**tiny_overrides(Path("unused")), "model": "resnet9000"})
    result = stage_in_process("train", cwd=work)
    assert_one_line_error(result, "model 'resnet9000'", "cnn", "mlp", "resnet18")
    assert not (work / "models").exists()
    assert not (work / "metrics/train").exists()


def test_split_fractions_must_sum_to_one(prepared_shapes: Path, tmp_path: Path):
    work = copy_prepared(prepared_shapes, tmp_path / "work")
    (work / "data/annotations.csv").unlink()
    write_params(work / "params.yaml", {"split": {"train": 0.7, "val": 0.1, "test": 0.1}})
    result = stage_in_process("split", cwd=work)
    assert_one_line_error(result, "split.train + split.val + split.test", "sum to 1")
    assert not (work / "data/annotations.csv").exists()


def test_predict_on_a_folder_names_classes(ran_shapes: Path, shapes_dir: Path, tmp_path: Path):
    params, out = tmp_path / "params.yaml", tmp_path / "predictions.tsv"
    write_params(params, {**tiny_overrides(shapes_dir), "predict": {"input": str(shapes_dir / "cross")}})
    stage_in_process("predict", "--params", str(params), "--out", str(out), cwd=ran_shapes, check=True)
    rows = out.read_text().splitlines()
    assert rows[0] == "path\tlabel\tprobability"
    assert len(rows) == 1 + 10
    assert all(row.split("\t")[1] in {"circle", "cross", "square"} for row in rows[1:])
