"""Recipes as tests: every `dvc exp run ... -S ...` that README.md and docs/*.md show in a shell
block runs, with the real `dvc` CLI, in a temporary git + DVC project (`make_project`).

A recipe is found in the pages themselves (test_docs' parsing: fenced shell blocks, `\\`
continuations joined), so an edited or added one is tested without anyone listing it. Inline
mentions (`dvc exp run -S model=mlp` in a sentence) are not recipes: they repeat a block's command
or name a model that only exists in the page's example (`model=my_net`). Two tiers:

- fast (the default suite): the recipe's own `-S` options, then `CUT` appended (one epoch, a few
  images per class) and `DEFAULTS` for the keys the recipe leaves alone (a small image.size);
  recipes that become the same run that way run once (`fast_runs`);
- slow (`-m slow`): the recipe as written, and the figure the page quotes where it quotes one.
  Recipes in `MANUAL` (tens of minutes on a CPU) skip with a reason; docs/development.md lists
  them and IMGPIPE_MANUAL_RECIPES=1 runs them.

What one CPU machine cannot run as written is rewritten, and only that: a multi-machine recipe's
rendezvous endpoint (`gpu-a:29400`, `$head:29400`) becomes 127.0.0.1:<a free port>, where the
head's `dvc exp run` meets the page's own `imgpipe train-worker` command, run in a second copy
of the project; `nproc_per_node` 4 runs 4 gloo processes on the CPU. ImageNet weights
(`train.pretrained=imagenet`) are real state dicts of the right architecture that this module
writes into a temporary TORCH_HOME, so nothing is downloaded. A `--queue` recipe is queued as
written and run by `dvc queue start`, as the pages say next.

Recipes with the same data params share one project whose data stages ran once; each runs in
its workspace (reset to the commit before it) and must rerun only train, evaluate, export and predict.
Per-recipe seconds, wall and CPU, are printed (`-s`; or `--durations=0` for wall only).
"""

from __future__ import annotations

import functools
import json
import math
import os
import resource
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from support.docs import code_lines, commands, pages
from support.project import BIN, command_env, copy_project, free_port, listing, make_project, queue_status, run

REPO = Path(__file__).resolve().parents[2]
TODAY = 21  # recipes the pages show today (23 commands, two shown twice); fewer means the parser broke
CUT = {"train.epochs": "1"}  # appended to every fast run (data.limit too, see `cut`)
DEFAULTS = {"image.size": "28"}  # appended to a fast run whose recipe leaves the key alone
LIMIT = 10  # fast tier: images per class (builtin:digits: 100 sources, 400 with augment's copies)
LIMIT_MULTILABEL = 120  # fast tier, multi-label: images in total (2 per digit group, so every split gets some)
MANUAL = {  # skipped by the slow tier unless IMGPIPE_MANUAL_RECIPES=1; docs/development.md lists them
    "data.source=builtin:multidigit": "about 30 minutes of training on a 2-core CPU (docs/multilabel.md)",
}
EXPECTED = {  # the slow tier's floor where a page quotes a figure for the recipe's data
    "builtin:digit-tags": ("exact_match_accuracy", 0.95),  # docs/multilabel.md: 0.973; measured 0.956
    "builtin:multidigit": ("sequence_accuracy", 0.92),  # docs/multilabel.md: 0.946
}


# --- finding the recipes: pure functions of the pages' text --------------------------------


@dataclass(frozen=True)
class Recipe:
    argv: tuple[str, ...]  # `dvc exp run ...` as the page shows it
    where: tuple[str, ...]  # page:line of each place that shows it
    worker: tuple[str, ...] = ()  # multi-machine: the `imgpipe train-worker` command the page shows next

    @property
    def overrides(self) -> dict[str, str]:
        """`-S key=value` as key -> value, in order (Hydra's `++` kept in the value's key)."""
        found = {}
        for flag, value in zip(self.argv, self.argv[1:], strict=False):
            if flag in ("-S", "--set-param") and "=" in value:
                key, _, val = value.partition("=")
                found[key] = val
        return found

    def get(self, key: str) -> str | None:
        """The value the recipe sets for `key` (with or without `+`/`++`), or None."""
        return next((v for k, v in self.overrides.items() if k.lstrip("+~") == key), None)

    @property
    def queued(self) -> bool:
        return "--queue" in self.argv

    @property
    def name(self) -> str | None:
        """The experiment name of `-n NAME` / `--name NAME`."""
        return next((b for a, b in zip(self.argv, self.argv[1:], strict=False) if a in ("-n", "--name")), None)

    @property
    def nnodes(self) -> int:
        return int(self.get("train.nnodes") or 1)


def is_recipe(argv: list[str]) -> bool:
    return argv[:3] == ["dvc", "exp", "run"] and any(a in ("-S", "--set-param") for a in argv)


def page_recipes(name: str, text: str) -> list[Recipe]:
    """Every recipe a page shows in a shell block; a multi-machine one carries the first
    `imgpipe train-worker` command after it on the page."""
    shown = [(line, argv) for line, code in code_lines(text) for argv in commands(code)]
    found = []
    for line, argv in shown:
        if is_recipe(argv):
            recipe = Recipe(tuple(argv), (f"{name}:{line}",))
            if recipe.nnodes > 1:
                worker = next((w for n, w in shown if n > line and w[:2] == ["imgpipe", "train-worker"]), None)
                assert worker, f"{name}:{line}: a multi-machine recipe without `imgpipe train-worker` after it"
                recipe = Recipe(recipe.argv, recipe.where, tuple(worker))
            found.append(recipe)
    return found


def merged(recipes: list[Recipe]) -> list[Recipe]:
    """One recipe per distinct command, with every place that shows it."""
    by_argv: dict[tuple[str, ...], Recipe] = {}
    for r in recipes:
        seen = by_argv.get(r.argv)
        by_argv[r.argv] = Recipe(r.argv, seen.where + r.where, r.worker) if seen else r
    return list(by_argv.values())


@functools.cache
def all_recipes() -> tuple[Recipe, ...]:
    found = [r for page in pages() for r in page_recipes(page.relative_to(REPO).as_posix(), page.read_text())]
    return tuple(merged(found))


# --- what a run is: the recipe's argv, rewritten for this machine and tier -------------------


@functools.cache
def repo_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


@functools.cache
def data_sections() -> frozenset[str]:
    """The params sections the data stages read (dvc.yaml's own lists): what a shared project fixes."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return frozenset(p for s in ("download", "augment", "split") for p in stages[s]["params"])


def data_overrides(recipe: Recipe) -> dict[str, str]:
    return {k: v for k, v in recipe.overrides.items() if k.lstrip("+~").split(".")[0] in data_sections()}


def data_limit(recipe: Recipe) -> dict[str, str]:
    """The fast tier's `data.limit`: a few images per class, or in total for multi-label data."""
    from imgpipe.data.builtin import BUILTIN_MULTILABEL

    source = recipe.get("data.source") or repo_params()["data"]["source"]
    return {"data.limit": str(LIMIT_MULTILABEL if source in BUILTIN_MULTILABEL else LIMIT)}


def cut(recipe: Recipe) -> dict[str, str]:
    """The fast tier's shrinking overrides: one epoch (one more per frozen epoch, so both phases
    of train.freeze_epochs run) and `data_limit`."""
    epochs = int(CUT["train.epochs"]) + int(recipe.get("train.freeze_epochs") or 0)
    return {**CUT, "train.epochs": str(epochs), **data_limit(recipe)}


def fast_committed(recipe: Recipe) -> dict[str, str]:
    """What the fast tier's shared project commits besides the recipe's data params (so another
    machine's copy has the params the head's experiment trains with)."""
    return {**DEFAULTS, **CUT, **data_limit(recipe)}


def fast_extra(recipe: Recipe) -> dict[str, str]:
    """What the fast tier appends: `cut`, and `DEFAULTS` for keys the recipe does not set."""
    return {**{k: v for k, v in DEFAULTS.items() if recipe.get(k) is None}, **cut(recipe)}


def with_endpoint(argv: tuple[str, ...], endpoint: str) -> list[str]:
    """`argv` with its rendezvous endpoint (`-S train.rdzv_endpoint=...` or `--rdzv-endpoint ...`) replaced."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg.startswith("train.rdzv_endpoint="):
            out[i] = f"train.rdzv_endpoint={endpoint}"
        elif i and out[i - 1] == "--rdzv-endpoint":
            out[i] = endpoint
    return out


def settings(extra: dict[str, str]) -> list[str]:
    return [a for k, v in extra.items() for a in ("-S", f"{k}={v}")]


def queue_size(recipe: Recipe) -> int:
    """How many experiments a queued recipe's comma lists expand to."""
    return math.prod(len(v.split(",")) for v in recipe.overrides.values())


def recipe_id(recipe: Recipe) -> str:
    return recipe.where[0]


def fast_runs(recipes: tuple[Recipe, ...]) -> list[Recipe]:
    """The fast tier's runs: recipes whose run is the same once `fast_extra` is appended (README's
    `-S model=mlp` and `-S model=mlp -S train.epochs=5`) are run once, as the first of them,
    carrying every place that shows one."""
    runs: dict[tuple, Recipe] = {}
    for r in recipes:
        key = (r.queued, r.name, r.worker, tuple(sorted({**r.overrides, **fast_extra(r)}.items())))
        seen = runs.get(key)
        runs[key] = Recipe(seen.argv, seen.where + r.where, seen.worker) if seen else r
    return list(runs.values())


# --- the projects the runs share ---------------------------------------------------------------


@dataclass
class Projects:
    """One git + DVC project per (tier, data params), made on first use: params.yaml is the repo's
    with the recipe's data params and the tier's `committed` params applied, the data stages run,
    and everything committed."""

    root: Path
    made: dict[tuple, Path] = field(default_factory=dict)

    def get(self, tier: str, data: dict[str, str], committed: dict[str, str]) -> Path:
        key = (tier, tuple(sorted(data.items())), tuple(sorted(committed.items())))
        if key not in self.made:
            from dvc.utils.hydra import apply_overrides  # the same parser as `dvc exp run -S`

            started = time.monotonic()
            project = make_project(self.root / f"{tier}-{len(self.made)}", {})
            apply_overrides(project / "params.yaml", [f"{k}={v}" for k, v in {**data, **committed}.items()])
            run(["dvc", "repro", "split"], project)
            run(["git", "add", "-A"], project)
            run(["git", "commit", "-qm", "data stages"], project)
            print(f"\nproject {tier} {data or 'default data'}: data stages in {time.monotonic() - started:.1f} s")
            self.made[key] = project
        project = self.made[key]
        run(["git", "reset", "-q", "--hard"], project)  # the previous recipe's params, lock and metrics gone
        run(["git", "clean", "-qfd"], project)
        return project


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory) -> Iterator[Path]:
    """An empty TORCH_HOME for every command this module runs: only weights written here are there."""
    home = tmp_path_factory.mktemp("torch")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(home))
        yield home / "hub" / "checkpoints"


@pytest.fixture(scope="module")
def projects(tmp_path_factory, torch_home: Path) -> Projects:
    return Projects(tmp_path_factory.mktemp("recipes"))


def provide_imagenet_weights(recipe: Recipe, torch_home: Path) -> Path | None:
    """For a recipe with train.pretrained=imagenet: a real state dict of its model with ImageNet's
    1000 classes, in the torch cache under the name torchvision gives the file."""
    if recipe.get("train.pretrained") != "imagenet":
        return None
    import torch

    from imgpipe.models.catalog import create_model, get_model_entry
    from imgpipe.models.pretrained import imagenet_cache_file

    model = recipe.get("model") or repo_params()["model"]
    path = imagenet_cache_file(get_model_entry(model))
    assert path.parent == torch_home, "TORCH_HOME is not this module's"
    if not path.exists():
        torch.manual_seed(0)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(create_model(model, num_classes=1000, in_channels=3, image_size=224).state_dict(), path)
    return path


# --- running one recipe --------------------------------------------------------------------------


def exp_refs(project: Path) -> set[str]:
    """The refs of saved experiments (not DVC's own `refs/exps/exec/...`)."""
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], project).stdout.split()
    return {ref for ref in refs if not ref.startswith("refs/exps/exec/")}


def start(argv: list[str], cwd: Path, logs: Path) -> subprocess.Popen:
    """`argv` running in `cwd`, its stdout and stderr into files in `logs` (a pipe nobody reads
    while we wait on two processes could fill and stop it)."""
    logs.mkdir(parents=True)
    with (logs / "stdout").open("w") as out, (logs / "stderr").open("w") as err:
        return subprocess.Popen(argv, cwd=cwd, env=command_env(), stdout=out, stderr=err, text=True)


def finish(process: subprocess.Popen, logs: Path, timeout: float) -> str:
    """Wait for `process` (killed after `timeout` s); it exited 0; its stdout."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    out, err = ((logs / name).read_text() for name in ("stdout", "stderr"))
    assert process.returncode == 0, f"{' '.join(process.args)} failed ({process.returncode}):\n{out}\n{err}"
    return out


def wait_listening(port: int, process: subprocess.Popen, timeout: float) -> None:
    """Until something listens on 127.0.0.1:`port` (the head's rendezvous store), or `process` ends."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)


def run_workspace(recipe: Recipe, project: Path, extra: dict[str, str], tmp_path: Path, timeout: float) -> str:
    """`dvc exp run` in the project's workspace; a multi-machine recipe with the page's worker
    command in a copy of the project (the same commit and data, as after `dvc pull`)."""
    argv = [*recipe.argv, *settings(extra)]
    if recipe.nnodes == 1:
        return finish(start(argv, project, tmp_path / "head"), tmp_path / "head", timeout)
    port = free_port()
    endpoint = f"127.0.0.1:{port}"
    other = copy_project(project, tmp_path / "other-machine")
    before = listing(other)
    head = start(with_endpoint(tuple(argv), endpoint), project, tmp_path / "head")
    wait_listening(port, head, timeout)  # the worker joins once the head waits, as the page has it
    worker_argv = with_endpoint(recipe.worker, endpoint)
    worker = start([str(BIN / worker_argv[0]), *worker_argv[1:]], other, tmp_path / "worker")
    deadline = time.monotonic() + timeout
    while head.poll() is None and worker.poll() in (None, 0) and time.monotonic() < deadline:
        time.sleep(0.5)
    if worker.poll() not in (None, 0):  # the head would wait for it until the rendezvous times out
        head.kill()
    joined = finish(worker, tmp_path / "worker", 60)
    out = finish(head, tmp_path / "head", 60)
    assert "joining the run at" in joined, joined
    assert "waiting for" in out, out  # the head waited for the other machine
    assert listing(other) == before, "the other machine wrote files: only the head writes"
    return out


def run_queue(recipe: Recipe, project: Path, extra: dict[str, str], timeout: float) -> dict[str, str]:
    """Queue the recipe as written (plus `extra`), run the queue with `dvc queue start`, wait for
    every task; task -> its `dvc queue logs`."""
    run([*recipe.argv, *settings(extra)], project)
    # The workers outlive `dvc queue start` and hold its stdout: do not wait for that to close.
    subprocess.run(["dvc", "queue", "start"], cwd=project, env=command_env(), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    status, deadline = {}, time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = queue_status(project)
        if len(status) == queue_size(recipe) and all(s in ("Success", "Failed") for s in status.values()):
            break
        time.sleep(2)
    run(["dvc", "queue", "stop", "--kill"], project, check=False)
    logs = {task: run(["dvc", "queue", "logs", task], project, check=False).stdout for task in status}
    assert len(status) == queue_size(recipe) and set(status.values()) == {"Success"}, (status, logs)
    return logs


def landed(project: Path, refs: set[str]) -> dict[str, dict]:
    """Name -> metrics of each experiment in `dvc exp show` whose ref is one of `refs`."""
    names = {ref.rsplit("/", 1)[1] for ref in refs}
    found = {}
    for row in json.loads(run(["dvc", "exp", "show", "--json"], project).stdout):
        for exp in row.get("experiments") or []:
            if exp["name"] in names:
                found[exp["name"]] = {f: m["data"] for f, m in exp["revs"][0]["data"]["metrics"].items()}
    return found


def rates(metrics: dict, prefix: str = "") -> dict[str, object]:
    """Every accuracy, precision, recall and F1 in `metrics`, nested ones (per position) flattened."""
    found = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            found |= rates(value, f"{prefix}{key}.")
        elif key.endswith(("accuracy", "_macro", "_micro")) or prefix.endswith("accuracy."):
            found[prefix + key] = value
    return found


def check_metrics(metrics: dict[str, dict]) -> dict:
    """The evaluate stage's metrics: there, one task's, and every rate a number in [0, 1]; returned."""
    evaluate = metrics.get("metrics/evaluate/metrics.json")
    assert evaluate, f"no evaluate metrics: {sorted(metrics)}"
    assert "metrics/train/metrics.json" in metrics, sorted(metrics)
    assert ("accuracy" in evaluate) != ("exact_match_accuracy" in evaluate), evaluate
    bad = {k: v for k, v in rates(evaluate).items() if not (isinstance(v, float) and 0.0 <= v <= 1.0)}
    assert not bad, f"not a rate in [0, 1]: {bad}"
    return evaluate


def read_metrics(project: Path) -> dict[str, dict]:
    return {f"metrics/{s}/metrics.json": json.loads((project / f"metrics/{s}/metrics.json").read_text())
            for s in ("train", "evaluate") if (project / f"metrics/{s}/metrics.json").exists()}  # fmt: skip


def run_recipe(recipe: Recipe, project: Path, extra: dict[str, str], tmp_path: Path, timeout: float) -> list[dict]:
    """Run the recipe; the evaluate metrics of each experiment it made, checked."""
    before = exp_refs(project)
    if recipe.queued:
        logs = run_queue(recipe, project, extra, timeout)
        for log in logs.values():
            assert "Running stage 'download'" not in log, log  # the data stages came from the cache
        new = landed(project, exp_refs(project) - before)
        assert len(new) == queue_size(recipe), new
        return [check_metrics(metrics) for metrics in new.values()]
    out = run_workspace(recipe, project, extra, tmp_path, timeout)
    assert "Running stage 'download'" not in out and "Running stage 'split'" not in out, out  # the shared data
    refs = exp_refs(project) - before
    assert len(refs) == 1, refs  # the experiment was saved
    if recipe.name:
        assert refs.pop().endswith(f"/{recipe.name}")
    return [check_metrics(read_metrics(project))]


def cpu_seconds() -> float:
    """CPU seconds of this process's finished children and theirs (not the queue's detached workers)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def timed(label: str, started: float, cpu: float) -> None:
    print(f"\n{label}: {time.monotonic() - started:.1f} s, {cpu_seconds() - cpu:.1f} CPU s")


# --- the tests -----------------------------------------------------------------------------------


def test_the_pages_show_the_recipes_there_are_today():
    found = all_recipes()
    print(f"\n{len(found)} recipes:")
    for recipe in found:
        worker = f"  + {' '.join(recipe.worker)}" if recipe.worker else ""
        print(f"  {', '.join(recipe.where)}: {' '.join(recipe.argv)}{worker}")
    assert len(found) >= TODAY, "fewer recipes than the pages showed when this was written: did the parser break?"
    assert any(r.queued for r in found) and any(r.nnodes > 1 for r in found) and any(r.name for r in found)


def test_the_finder_reads_blocks_continuations_queues_names_and_workers():
    page = "\n".join([
        "Inline `dvc exp run -S model=mlp` is prose, not a recipe.",
        "```bash",
        "dvc exp run -S data.source=builtin:digit-tags \\",
        "  -S train.epochs=20    # joined",
        "dvc exp run --queue -S model=mlp,cnn -S train.lr=0.1,0.2",
        "dvc exp run -n try -S ++model_args.width=64",
        "dvc exp show",
        "dvc exp run -S train.nnodes=2 -S train.rdzv_endpoint=gpu-a:29400",
        "```",
        "```bash",
        "imgpipe train-worker --rdzv-endpoint gpu-a:29400 --nnodes 2",
        "```",
        "```",
        "dvc exp run -S model=cnn    # an unlabelled block is output",
        "```",
    ])  # fmt: skip
    tags, queue, named, multi = page_recipes("fake.md", page)
    assert tags.where == ("fake.md:3",)
    assert tags.overrides == {"data.source": "builtin:digit-tags", "train.epochs": "20"}
    assert data_overrides(tags) == {"data.source": "builtin:digit-tags"}
    assert cut(tags)["data.limit"] == str(LIMIT_MULTILABEL) and "image.size" in fast_extra(tags)
    assert queue.queued and queue_size(queue) == 4
    assert named.name == "try" and named.get("model_args.width") == "64"
    assert multi.worker[:2] == ("imgpipe", "train-worker")
    assert with_endpoint(multi.argv, "127.0.0.1:1")[-1] == "train.rdzv_endpoint=127.0.0.1:1"
    assert with_endpoint(multi.worker, "127.0.0.1:1")[3] == "127.0.0.1:1"
    assert merged([tags, tags]) == [Recipe(tags.argv, ("fake.md:3", "fake.md:3"))]
    shorter = Recipe((*tags.argv[:-1], "train.epochs=5"), ("fake.md:9",))  # the same run once cut to 1 epoch
    assert fast_runs((tags, shorter, named)) == [Recipe(tags.argv, ("fake.md:3", "fake.md:9")), named]


def heavy(recipe: Recipe) -> bool:
    """A fast run of 40+ CPU-seconds even on small data, kept for `-m slow`: 4 (or 2 x 4) gloo
    processes, or a whole resnet18 fine-tuned from ImageNet weights. Each path stays in the fast
    tier through a cheaper recipe: 2 processes (distributed.md's Slurm block), the head-only
    fine-tune (models-and-training.md's `train.freeze=backbone`)."""
    return recipe.get("train.nproc_per_node") == "4" or (
        recipe.get("train.pretrained") == "imagenet" and recipe.get("train.freeze") != "backbone"
    )


def fast_params(recipes: tuple[Recipe, ...]) -> list:
    return [pytest.param(r, marks=pytest.mark.slow) if heavy(r) else r for r in fast_runs(recipes)]


@pytest.mark.parametrize("recipe", fast_params(all_recipes()), ids=recipe_id)
def test_recipe_runs_on_small_data(recipe: Recipe, projects: Projects, torch_home: Path, tmp_path: Path):
    """The recipe with `fast_extra` appended: it finishes, saves its experiment(s) with sane
    metrics, and reruns only the model stages of the shared project."""
    started, cpu = time.monotonic(), cpu_seconds()
    extra = fast_extra(recipe)
    project = projects.get("fast", data_overrides(recipe), fast_committed(recipe))
    weights = provide_imagenet_weights(recipe, torch_home)
    for metrics in run_recipe(recipe, project, extra, tmp_path, timeout=300):
        assert metrics  # checked by check_metrics
    if weights:
        assert sorted(torch_home.iterdir()) == [weights]  # nothing downloaded beside it
    timed(f"{', '.join(recipe.where)} ({' '.join(settings(extra))})", started, cpu)


def manual_reason(recipe: Recipe) -> str | None:
    return next((why for setting, why in MANUAL.items() if setting in recipe.argv), None)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", all_recipes(), ids=recipe_id)
def test_recipe_as_written(recipe: Recipe, projects: Projects, torch_home: Path, tmp_path: Path):
    """The recipe as the page shows it, on the whole data; the page's own figure where it gives one."""
    if (why := manual_reason(recipe)) and not os.environ.get("IMGPIPE_MANUAL_RECIPES"):
        pytest.skip(f"manual recipe, {why}; listed in docs/development.md; IMGPIPE_MANUAL_RECIPES=1 runs it")
    started, cpu = time.monotonic(), cpu_seconds()
    project = projects.get("slow", data_overrides(recipe), {})
    provide_imagenet_weights(recipe, torch_home)
    results = run_recipe(recipe, project, {}, tmp_path, timeout=3 * 3600)
    source = recipe.get("data.source") or repo_params()["data"]["source"]
    key, floor = EXPECTED.get(source, ("accuracy", 0.5))  # 10 classes: chance is 0.1
    for metrics in results:
        print(f"\n{recipe_id(recipe)}: {key} {metrics[key]:.4f}; {json.dumps(metrics)}")
        assert metrics[key] >= floor, metrics
    timed(recipe_id(recipe), started, cpu)
