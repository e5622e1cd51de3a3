"""Pull-request review end to end: real `git`, `dvc` and `imgpipe review` in temporary repos.

A bare repository stands in for the hosting service. Its main branch holds a committed run;
pull-request branches change the model, only predict's params, params without a rerun, or the
test split. Reviewers and the CI job work in fresh clones, with no DVC cache. The reviewers'
`imgpipe review` runs in this process (`in_process`); the CI job's runs the installed command.
The branches' runs (`repro`) run the stages DVC would run in this process and commit them with
`dvc commit`: the same outputs and dvc.lock as `dvc repro`, without an interpreter per stage
(tests/e2e/test_pipeline_dvc.py runs `dvc repro` itself).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from support.project import (
    BIN,
    REPO,
    assert_one_line_error,
    dvc_json,
    in_process,
    make_project,
    run,
    run_stages,
    tiny_overrides,
)

PNG = b"\x89PNG\r\n\x1a\n"


def set_params(repo: Path, overrides: dict) -> None:
    """Merge `overrides` (one level deep) into the repo's params.yaml."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in overrides.items():
        params[key] = {**params[key], **value} if isinstance(value, dict) else value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def repro(repo: Path) -> list[str]:
    """`dvc repro`, its stages run in this process: on a first run every stage; after that those
    `dvc repro --dry` says changed and, per dvc.lock, every stage downstream of them, in the
    pipeline's order. Then `dvc commit` records their outputs in dvc.lock and the cache as repro
    would."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    # matrix/foreach stages (the cross-validation folds) expand to none with cv off, as here
    order = [name for name, stage in stages.items() if not {"matrix", "foreach"} & stage.keys()]
    if not (repo / "dvc.lock").is_file():  # a dry run cannot plan past a stage that never ran
        return commit_stages(repo, order)
    changed = set(re.findall(r"Running stage '([^']+)'", run(["dvc", "repro", "--dry"], repo).stdout))
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    rerun: list[str] = []
    for name in order:
        deps = [d["path"] for d in lock.get(name, {}).get("deps", [])]
        outs = [o["path"] for s in rerun for o in lock.get(s, {}).get("outs", [])]
        if name in changed or any(d == o or d.startswith(f"{o}/") for d in deps for o in outs):
            rerun.append(name)
    return commit_stages(repo, rerun)


def commit_stages(repo: Path, stages: list[str]) -> list[str]:
    run_stages(repo, tuple(stages))
    run(["dvc", "commit", "-f", "-q"], repo)
    return stages


def branch(repo: Path, name: str, overrides: dict, rerun: bool = True) -> None:
    """A pull-request branch off main: params changed, the pipeline rerun (or not), committed."""
    run(["git", "checkout", "-q", "main"], repo)
    run(["dvc", "checkout", "-q"], repo)  # main's data and model, as its dvc.lock says
    run(["git", "checkout", "-q", "-b", name], repo)
    set_params(repo, overrides)
    if rerun:
        repro(repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", f"{name}: {overrides}"], repo)


@dataclass(frozen=True)
class Hosting:
    origin: Path  # bare repository with main and the pull-request branches
    remote: Path  # a DVC folder remote holding main's data and model
    source: Path


@pytest.fixture(scope="module")
def hosting(tmp_path_factory) -> Hosting:
    from support.datasets import write_shapes_dataset

    root = tmp_path_factory.mktemp("review")
    source = write_shapes_dataset(root / "shapes", per_class=30)
    overrides = {
        **tiny_overrides(source),
        "augment": {"rotations": [], "shear": 0},
        "split": {"train": 0.5, "val": 0.2, "test": 0.3},  # 27 test images: enough for a real test
        "train": {"epochs": 8, "batch_size": 16, "log_every": 1},
    }
    work = make_project(root / "work", overrides)
    run(["git", "branch", "-M", "main"], work)
    repro(work)
    run(["git", "add", "-A"], work)
    run(["git", "commit", "-qm", "main: a run of the pipeline"], work)
    remote = root / "dvc-remote"
    run(["dvc", "remote", "add", "--local", "shared", str(remote)], work)
    run(["dvc", "push", "-q", "-r", "shared"], work)
    branch(work, "dummy", {"model": "dummy"})
    branch(work, "predict", {"predict": {"input": str(source / "circle")}})
    branch(work, "stale", {"train": {"lr": 0.01}}, rerun=False)
    branch(work, "newsplit", {"split": {"train": 0.4, "val": 0.2, "test": 0.4}})
    origin = root / "origin.git"
    run(["git", "clone", "-q", "--bare", str(work), str(origin)], root)
    return Hosting(origin, remote, source)


def clone(hosting: Hosting, dest: Path, branch_name: str) -> Path:
    run(["git", "clone", "-q", "-b", branch_name, str(hosting.origin), str(dest)], dest.parent)
    return dest


def review(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`imgpipe review <args>` in `cwd`, in this process; the CI job tests below run the installed
    `imgpipe` command in a real process."""
    from imgpipe.console import app

    return in_process(app, ["review", *args], cwd, check, "imgpipe")


def test_a_fresh_clone_shows_every_result_without_a_cache(hosting: Hosting, tmp_path: Path):
    repo = clone(hosting, tmp_path / "clone", "dummy")
    assert not (repo / ".dvc/cache").exists()

    metrics = dvc_json(repo, "metrics", "show")[""]
    assert not metrics.get("error")
    shown = metrics["data"]
    evaluate = shown["metrics/evaluate/metrics.json"]["data"]
    assert evaluate["test_images"] == 27 and 0 <= evaluate["accuracy"] <= 1
    assert shown["metrics/train/metrics.json"]["data"]["epoch"] == 8
    assert shown["metrics/split/split.json"]["data"]["images"]["test"] == 27
    assert shown["metrics/download/metrics.json"]["data"]["images"] == 90

    diff = dvc_json(repo, "metrics", "diff", "main")
    accuracy = diff["metrics/evaluate/metrics.json"]["accuracy"]
    assert isinstance(accuracy["old"], float) and isinstance(accuracy["new"], float)
    assert accuracy["old"] > accuracy["new"]
    assert dvc_json(repo, "params", "diff", "main") == {"params.yaml": {"model": {"old": "cnn", "new": "dummy"}}}

    plots = dvc_json(repo, "plots", "diff", "main")
    assert not plots.get("errors"), plots.get("errors")
    confusion = plots["data"]["Confusion matrix (test)"][0]
    assert set(confusion["revisions"]) == {"main", "workspace"}
    assert {row["rev"] for row in confusion["content"]["data"]["values"]} == {"main", "workspace"}

    exp = dvc_json(repo, "exp", "show")
    workspace = exp[0]["data"]
    assert workspace["metrics"]["metrics/evaluate/metrics.json"]["data"]["accuracy"] == evaluate["accuracy"]
    assert not (repo / ".dvc/cache").exists()


def test_review_of_a_worse_model(hosting: Hosting, tmp_path: Path):
    repo = clone(hosting, tmp_path / "clone", "dummy")
    done = review(repo, "--base", "main", "--out", "review/review.md")
    text = (repo / "review/review.md").read_text()
    assert "| `model` | `cnn` | `dummy` |" in text  # `main` is origin/main here, as for DVC
    base_acc, head_acc = (json.loads(run(["git", "show", f"{rev}:metrics/evaluate/metrics.json"], repo).stdout)["accuracy"]
                          for rev in ("origin/main", "dummy"))
    assert head_acc < base_acc
    assert f"**Accuracy** {100 * base_acc:.1f}% → {100 * head_acc:.1f}%" in text
    assert re.search(r"\*\*-\d+\.\d points \(-\d+ images\)\*\*; 95% interval -\d+\.\d to -\d+\.\d; \*\*significant\*\*, p [<=] 0\.0", text), text
    assert re.search(r"- \*\*Balanced accuracy \(macro recall\)\*\* \d+\.\d% → \d+\.\d%: -\d+\.\d points; 95% interval -", text), text
    assert "Classes whose F1 moved beyond noise" in text
    assert "Warning" not in text
    # Every plot DVC defines, both sides, as a real PNG beside the Markdown.
    links = re.findall(r"!\[([^]]+)\]\((review_files/[^)]+\.png)\)", text)
    assert {title for title, _ in links} >= {"Confusion matrix (test)", "Training loss", "Validation accuracy and macro F1",
                                             "Reliability diagram (test)"}
    for _, link in links:
        assert (repo / "review" / link).read_bytes().startswith(PNG)
    assert "review:" in done.stderr
    assert run(["git", "status", "--porcelain", "--", ".", ":!review"], repo).stdout == ""


def test_only_predict_params_changed_means_no_change(hosting: Hosting, tmp_path: Path):
    repo = clone(hosting, tmp_path / "clone", "predict")
    text = review(repo, "--base", "main").stdout
    assert "**No change in test outcomes**: both models predict the same class for each of the 27 test images" in text
    assert "No metric changed." in text
    assert "`predict.input`" in text
    assert "Warning" not in text


def test_edited_params_without_a_rerun_are_stale(hosting: Hosting, tmp_path: Path):
    repo = clone(hosting, tmp_path / "clone", "main")
    # Reviewing another revision (in a temporary git worktree) and the workspace agree.
    by_rev = review(repo, "--base", "main", "--head", "origin/stale").stdout
    assert run(["git", "worktree", "list", "--porcelain"], repo).stdout.count("worktree ") == 1  # removed again
    run(["git", "checkout", "-q", "stale"], repo)
    in_workspace = review(repo, "--base", "main").stdout
    for text in (by_rev, in_workspace):
        assert "**Warning: the head's results are stale.**" in text
        assert "train: params.yaml: train modified" in text
        assert "| `train.lr` | `0.002` | `0.01` |" in text
    failed = review(repo, "--base", "main", "--fail-stale", check=False)
    assert failed.stdout == in_workspace  # the report first, then the verdict
    assert_one_line_error(failed, "the head's committed results are stale (train, export): rerun dvc repro and commit")


def test_a_train_rerun_without_evaluate_is_stale(hosting: Hosting, tmp_path: Path):
    """dvc.lock itself shows it, with no data in the clone: evaluate ran on another model."""
    repo = clone(hosting, tmp_path / "clone", "main")
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    model = next(o for o in lock["stages"]["train"]["outs"] if o["path"] == "models/model.pt")
    model["md5"] = "0" * 32
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    (repo / "metrics/split/split.json").write_text("{}")  # a committed result edited by hand
    text = review(repo, "--base", "main").stdout
    assert "evaluate: ran on a models/model.pt that train has since rewritten" in text
    assert "split: metrics/split/split.json modified" in text
    assert "**Warning: uncommitted results.** `dvc.lock`, `metrics/split/split.json`" in text


def test_broken_files_at_the_head(hosting: Hosting, tmp_path: Path):
    repo = clone(hosting, tmp_path / "clone", "main")
    (repo / "metrics/evaluate/outcomes.json").write_text('{"format": 1, "task": "multiclass"}')
    text = review(repo, "--base", "main").stdout
    assert "- Head: metrics/evaluate/outcomes.json: not an imgpipe outcome record" in text
    for broken, says in (("stages: [download, train]", "is not a DVC pipeline file"), ("stages: {a: [", "is not valid YAML")):
        (repo / "dvc.yaml").write_text(broken)
        assert_one_line_error(review(repo, "--base", "main", check=False), "dvc.yaml at workspace", says)


def test_bad_revisions_and_missing_results(hosting: Hosting, tmp_path: Path):
    repo = clone(hosting, tmp_path / "clone", "dummy")
    for args, option in ((["--base", "no-such-branch"], "--base"), (["--base", "main", "--head", "0" * 40], "--head")):
        assert_one_line_error(
            review(repo, *args, check=False),
            f"{option} '{args[-1]}' is not a commit, branch or tag of this repository; fetch it first",
        )
    # main~1 is the pipeline before any run: nothing committed to compare with.
    text = review(repo, "--base", "origin/main~1").stdout
    assert "**No per-image outcomes to compare.**" in text
    assert "- Base: no metrics/evaluate/outcomes.json committed" in text
    assert "| `metrics/evaluate/metrics.json` | accuracy | – |" in text


def test_a_base_with_another_test_set_is_not_paired(hosting: Hosting, tmp_path: Path):
    repo = clone(hosting, tmp_path / "clone", "newsplit")
    text = review(repo, "--base", "main").stdout
    assert "**The test sets differ**" in text and "no paired test applies" in text
    assert re.search(r"\| head \| 36 \| \d+\.\d% \(\d+\.\d% to \d+\.\d%\) \|", text), text
    assert re.search(r"\| base \| 27 \| \d+\.\d% \(\d+\.\d% to \d+\.\d%\) \|", text), text
    assert "p =" not in text and "p <" not in text
    assert "| `split.test` | `0.3` | `0.4` |" in text


# --- The CI job: .github/workflows/review.yml, run step by step -----------------------------

WORKFLOW = REPO / ".github/workflows/review.yml"
ALWAYS = re.compile(r"^\$\{\{ !cancelled\(\) && hashFiles\('([^']+)'\) != '' \}\}$")
EXPRESSION = re.compile(r"\$\{\{\s*([\w.-]+)\s*\}\}")


@dataclass
class Job:
    failed: str = ""  # the first step that failed
    ran: list[str] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)
    summary: str = ""


def run_review_job(hosting: Hosting, pr_branch: str, workdir: Path, after_checkout=None) -> Job:
    """The workflow's steps, in order, as GitHub runs them. GitHub's own actions are played by
    the test: checkout clones the bare origin with full history at the branch's head;
    setup-python and `make install` are the test's own venv; upload-artifact checks its folder
    and gives a URL; the comment step records the report it would post (no GitHub here;
    tests/e2e/test_workflows.py runs that step against a recorded gh)."""
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["review"]["steps"]
    repo, github_path, summary = workdir / "checkout", workdir / "github_path", workdir / "summary.md"
    pr_head = run(["git", "rev-parse", pr_branch], hosting.origin).stdout.strip()
    context = {"github.event.pull_request.head.sha": pr_head, "github.event.pull_request.number": "7",
               "secrets.GITHUB_TOKEN": "token"}
    job = Job()
    for step in steps:
        name = step.get("name") or step["uses"]
        if "if" in step:
            guard = ALWAYS.match(step["if"])
            assert guard, f"the test cannot evaluate if: {step['if']}"
            if not (repo / guard[1]).is_file():
                continue
        elif job.failed:
            continue
        job.ran.append(name)
        uses = step.get("uses", "")
        if uses.startswith("actions/checkout"):
            assert step["with"]["fetch-depth"] == 0
            run(["git", "clone", "-q", str(hosting.origin), str(repo)], workdir)
            run(["git", "checkout", "-q", "--detach", expand(step["with"]["ref"], context)], repo)
            if after_checkout:
                after_checkout(repo)
        elif uses.startswith("actions/setup-python"):
            assert step["with"]["python-version"] == "3.11"
        elif uses.startswith("actions/upload-artifact"):
            assert (repo / step["with"]["path"]).is_dir()
            context[f"steps.{step['id']}.outputs.artifact-url"] = "https://github.com/team/imgpipe/actions/runs/1/artifacts/2"
        elif "review-comment.sh" in step["run"]:
            body = repo / re.search(r"review-comment\.sh \S+ (\S+)", step["run"])[1]
            job.comments.append(body.read_text())
        else:
            script = step["run"]
            if name == "Install":
                assert script.startswith("make install-s3\n")
                script = script.removeprefix("make install-s3\n")
            env = {key: expand(str(value), context) for key, value in step.get("env", {}).items()}
            done = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=repo, capture_output=True, text=True,
                env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
                     "GITHUB_PATH": str(github_path), "GITHUB_STEP_SUMMARY": str(summary), **env},
            )
            job.logs[name] = done.stdout + done.stderr
            if done.returncode != 0:
                job.failed = name
    job.summary = summary.read_text() if summary.is_file() else ""
    return job


def expand(text: str, context: dict[str, str]) -> str:
    return EXPRESSION.sub(lambda m: context[m[1]], text)


def test_ci_job_posts_the_review(hosting: Hosting, tmp_path: Path):
    job = run_review_job(hosting, "dummy", tmp_path)
    assert not job.failed, job.logs
    assert "No DVC remote configured: skipping dvc pull" in job.logs["Pull the model and predictions"]
    assert len(job.comments) == 1
    comment = job.comments[0]
    assert comment == job.summary
    assert "| `model` | `cnn` | `dummy` |" in comment and "**significant**" in comment
    assert "- [Confusion matrix (test)](https://github.com/team/imgpipe/actions/runs/1/artifacts/2)" in comment
    assert "](review_files/" not in comment  # GitHub cannot show those
    assert len(comment) < 65536  # GitHub's limit for a comment
    assert list((tmp_path / "checkout/review/review_files").glob("*.png"))


def test_ci_job_with_a_remote_fails_on_stale_results_after_posting(hosting: Hosting, tmp_path: Path):
    def configure_remote(repo: Path) -> None:  # as a CI secret would, outside the commit
        run(["dvc", "remote", "add", "--local", "-d", "shared", str(hosting.remote)], repo)

    job = run_review_job(hosting, "stale", tmp_path, after_checkout=configure_remote)
    assert job.failed == "Review against main"
    assert (tmp_path / "checkout/models/model.pt").is_file()  # dvc pull ran
    assert "error: the head's committed results are stale (train, export)" in job.logs["Review against main"]
    assert len(job.comments) == 1 and "**Warning: the head's results are stale.**" in job.comments[0]
    assert "Job summary" in job.ran
