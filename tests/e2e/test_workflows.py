"""The GitHub Actions workflows: valid for GitHub, and the review comment kept to one per pull request.

Both workflow files are checked against GitHub's workflow schema (check-jsonschema's vendored copy,
offline). The review workflow's comment step runs as GitHub would run it, in bash, against a
recorded `gh`: a fake first on PATH that plays GitHub's REST API from a list of comments in the
API's own shape, two to a page, and logs every call with the body it sent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.project import BIN, REPO

WORKFLOWS = REPO / ".github/workflows"
MARKER = "<!-- imgpipe-review -->"
BOT = {"login": "github-actions[bot]", "type": "Bot"}  # who GITHUB_TOKEN comments as
PR, GH_REPO = 7, "team/imgpipe"


def load(name: str) -> dict:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads the key `on` as true
    return workflow


# --- GitHub's workflow schema -----------------------------------------------------------------


def check_jsonschema(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, files)],
                          capture_output=True, text=True)  # fmt: skip


def test_workflows_match_githubs_schema():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} >= {"review.yml", "tests.yml"}
    done = check_jsonschema(*files)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_check_rejects_a_broken_workflow(tmp_path: Path):
    workflow = load("tests.yml")
    del workflow["jobs"]["test"]["runs-on"]
    (tmp_path / "broken.yml").write_text(yaml.safe_dump(workflow))
    done = check_jsonschema(tmp_path / "broken.yml")
    assert done.returncode == 1 and "broken.yml" in done.stdout, done.stdout + done.stderr


def test_tests_workflow_runs_make_test():
    workflow = load("tests.yml")
    assert {"push", "pull_request"} <= set(workflow["on"])
    assert workflow["concurrency"]["cancel-in-progress"] is True
    assert "github.ref" in workflow["concurrency"]["group"]
    job = workflow["jobs"]["test"]
    assert job["runs-on"] == "ubuntu-latest"
    python = next(step["with"] for step in job["steps"] if step.get("uses", "").startswith("actions/setup-python@"))
    assert python["python-version"] == "3.11" and python["cache"] == "pip"
    # setup-python fails the job when the cache key's pattern matches no file.
    assert list(REPO.glob(python["cache-dependency-path"])), f"no {python['cache-dependency-path']} in the repository"
    assert job["steps"][-1]["run"] == "make test"
    assert re.search(r"^test:", (REPO / "Makefile").read_text(), re.MULTILINE)


# --- The review comment, against a recorded gh ------------------------------------------------

# The fake `gh`: the subset of `gh api` (and the old `gh pr comment`) that a comment step can use,
# on the comments in $FAKE_GH/comments.json. Anything else fails, as an unrecorded call.
FAKE_GH = r'''
import json, os, re, subprocess, sys
from pathlib import Path

home = Path(os.environ["FAKE_GH"])
state = json.loads((home / "comments.json").read_text())
args = sys.argv[1:]


def fail(message, code=1):
    sys.stderr.write(f"gh: {message}\n")
    sys.exit(code)


def record(**call):
    with open(home / "calls.jsonl", "a") as log:
        log.write(json.dumps({"args": args, **call}) + "\n")


def save():
    (home / "comments.json").write_text(json.dumps(state))


def create(body):
    comment = {"id": max([c["id"] for c in state["comments"]] + [900]) + 1, "user": state["viewer"], "body": body}
    state["comments"].append(comment)
    save()
    return comment


def read_value(value):
    if value == "@-":
        return sys.stdin.read()
    return Path(value[1:]).read_text() if value.startswith("@") else value


if not os.environ.get("GH_TOKEN"):
    fail("To use GitHub CLI in a GitHub Actions workflow, set the GH_TOKEN environment variable.", 4)

if args[:2] == ["pr", "comment"]:  # the old step (a new comment each push), or with --edit-last
    number, flags = args[2], args[3:]
    body_file = flags[flags.index("--body-file") + 1] if "--body-file" in flags else None
    if number != str(state["pr"]) or body_file is None or set(flags) - {"--body-file", body_file, "--edit-last", "--create-if-none"}:
        fail(f"unrecorded call: {args}")
    body = Path(body_file).read_text()
    mine = [c for c in state["comments"] if c["user"] == state["viewer"]]
    if "--edit-last" in flags and mine:  # the viewer's last comment, whichever workflow wrote it
        record(method="PATCH", path=f"repos/{state['repo']}/issues/comments/{mine[-1]['id']}", body=body)
        mine[-1]["body"] = body
        save()
    elif "--edit-last" in flags and "--create-if-none" not in flags:
        fail("no comments found for current user")
    else:
        record(method="POST", path=f"repos/{state['repo']}/issues/{number}/comments", body=body)
        create(body)
    sys.exit(0)

if args[:1] != ["api"]:
    fail(f"unrecorded call: {args}")
endpoint, method, jq, paginate, silent, fields = None, "GET", None, False, False, {}
rest = iter(args[1:])
for arg in rest:
    if arg in ("-X", "--method"):
        method = next(rest)
    elif arg in ("-q", "--jq"):
        jq = next(rest)
    elif arg in ("-F", "--field", "-f", "--raw-field"):
        key, _, value = next(rest).partition("=")
        fields[key] = read_value(value) if arg in ("-F", "--field") else value
    elif arg == "--paginate":
        paginate = True
    elif arg == "--silent":
        silent = True
    elif arg.startswith("-") or endpoint is not None:
        fail(f"unrecorded call: {args}")
    else:
        endpoint = arg
if "{owner}" in endpoint or "{repo}" in endpoint:
    if not os.environ.get("GH_REPO"):
        fail("could not determine the repository: set GH_REPO or run in a clone")
    owner, repo = os.environ["GH_REPO"].split("/")
    endpoint = endpoint.replace("{owner}", owner).replace("{repo}", repo)
path = endpoint.partition("?")[0]
record(method=method, path=path, body=fields.get("body"))


def answer(page):
    if silent:
        return
    if jq is None:
        print(json.dumps(page))
        return
    done = subprocess.run(["jq", "-r", jq], input=json.dumps(page), capture_output=True, text=True)
    if done.returncode:
        fail(done.stderr.strip())
    sys.stdout.write(done.stdout)


base = f"repos/{state['repo']}/issues"
if method == "GET" and path == f"{base}/{state['pr']}/comments" and not fields:
    size, comments = state["page_size"], state["comments"]
    pages = [comments[i:i + size] for i in range(0, len(comments), size)] or [[]]
    for page in pages if paginate else pages[:1]:
        answer(page)
elif method == "POST" and path == f"{base}/{state['pr']}/comments" and set(fields) == {"body"}:
    answer(create(fields["body"]))
elif method == "PATCH" and re.fullmatch(rf"{base}/comments/\d+", path) and set(fields) == {"body"}:
    comment = next((c for c in state["comments"] if c["id"] == int(path.rsplit("/", 1)[1])), None)
    if comment is None:
        fail("Not Found (HTTP 404)")
    comment["body"] = fields["body"]
    save()
    answer(comment)
else:
    fail(f"unrecorded call: {method} {path} {sorted(fields)}")
'''

# Earlier comments on the pull request, as the REST API lists them (fields the step does not
# read left out). 104 is another workflow's: also github-actions[bot], and the last one.
ALICE = {"id": 101, "user": {"login": "alice", "type": "User"}, "body": "Does lr 0.01 help on the photos too?"}
BOB = {"id": 102, "user": {"login": "bob", "type": "User"},
       "body": f"{MARKER}\nbob pasted the report's source to ask about it: is -0.6 points noise?"}  # fmt: skip
OURS = {"id": 103, "user": BOT, "body": f"{MARKER}\n### Is the head better?\n\nthe first push's report"}
COVERAGE = {"id": 104, "user": BOT, "body": "Coverage: 91% (+0.2)"}

REPORT = "### Is the head better?\n\n- **Accuracy** 100.0% → 99.4%: **-0.6 points (-1 image)**; `$PR` \"quoted\"\n"


def comment_step() -> dict:
    steps = yaml.safe_load((WORKFLOWS / "review.yml").read_text())["jobs"]["review"]["steps"]
    return next(step for step in steps if step.get("name") == "Comment on the pull request")


def fake_github(tmp_path: Path, comments: list[dict]) -> Path:
    """A checkout with the repo's .github/ and a fake `gh` holding `comments`."""
    home, checkout = tmp_path / "github", tmp_path / "checkout"
    (home / "bin").mkdir(parents=True)
    gh = home / "bin/gh"
    gh.write_text(f"#!{sys.executable}\n{FAKE_GH}")
    gh.chmod(0o755)
    state = {"repo": GH_REPO, "pr": PR, "page_size": 2, "viewer": BOT, "comments": comments}
    (home / "comments.json").write_text(json.dumps(state))
    shutil.copytree(REPO / ".github", checkout / ".github")
    return home


def push(tmp_path: Path, report: str) -> list[dict]:
    """One run of the comment step after `imgpipe review` wrote `report`; the gh calls it made."""
    home, checkout = tmp_path / "github", tmp_path / "checkout"
    (checkout / "review").mkdir(exist_ok=True)
    (checkout / "review/github.md").write_text(report)
    (home / "calls.jsonl").unlink(missing_ok=True)
    step = comment_step()
    context = {"secrets.GITHUB_TOKEN": "token", "github.repository": GH_REPO, "github.event.pull_request.number": str(PR)}
    env = {key: re.sub(r"\$\{\{\s*([\w.]+)\s*\}\}", lambda m: context[m[1]], str(value)) for key, value in step["env"].items()}
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], cwd=checkout, capture_output=True, text=True,
        env={"PATH": f"{home / 'bin'}{os.pathsep}{os.environ['PATH']}", "FAKE_GH": str(home), **env},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    log = home / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


def comments(tmp_path: Path) -> list[dict]:
    return json.loads((tmp_path / "github/comments.json").read_text())["comments"]


def writes(calls: list[dict]) -> list[tuple[str, str]]:
    return [(call["method"], call["path"]) for call in calls if call["method"] != "GET"]


def assert_posts_the_report(body: str, report: str) -> None:
    assert body.startswith(MARKER + "\n"), body
    assert body.removeprefix(MARKER).strip() == report.strip()


needs_jq = pytest.mark.skipif(shutil.which("jq") is None, reason="the recorded gh runs the step's --jq filter with jq")


@needs_jq
def test_the_first_push_creates_the_comment(tmp_path: Path):
    fake_github(tmp_path, [ALICE, BOB, COVERAGE])
    calls = push(tmp_path, REPORT)
    assert writes(calls) == [("POST", f"repos/{GH_REPO}/issues/{PR}/comments")]
    assert_posts_the_report(calls[-1]["body"], REPORT)
    assert comments(tmp_path)[:3] == [ALICE, BOB, COVERAGE]
    assert comments(tmp_path)[3]["user"] == BOT


@needs_jq
def test_a_later_push_edits_the_comment_and_nothing_else(tmp_path: Path):
    # Ours is on the second page; the last comment as github-actions[bot] is another workflow's.
    fake_github(tmp_path, [ALICE, BOB, OURS, COVERAGE])
    calls = push(tmp_path, REPORT)
    assert writes(calls) == [("PATCH", f"repos/{GH_REPO}/issues/comments/{OURS['id']}")]
    assert_posts_the_report(calls[-1]["body"], REPORT)
    after = comments(tmp_path)
    assert [c["id"] for c in after] == [101, 102, 103, 104]
    assert (after[0], after[1], after[3]) == (ALICE, BOB, COVERAGE)
    assert_posts_the_report(after[2]["body"], REPORT)


@needs_jq
def test_two_pushes_leave_one_comment(tmp_path: Path):
    fake_github(tmp_path, [ALICE])
    first, second = REPORT, REPORT.replace("99.4%", "98.9%")
    assert [method for method, _ in writes(push(tmp_path, first))] == ["POST"]
    assert [method for method, _ in writes(push(tmp_path, second))] == ["PATCH"]
    after = comments(tmp_path)
    assert len(after) == 2 and after[0] == ALICE
    assert_posts_the_report(after[1]["body"], second)
