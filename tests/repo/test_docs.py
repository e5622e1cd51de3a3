"""The docs still tell the truth: every command and params key that README.md, ARCHITECTURE.md
and docs/*.md show still exists.

A page fails, naming its line and the stale item, when it shows (in a ```bash/sh/console block
or as `inline code`):
- `dvc ...` that DVC's own argument parser rejects: a removed or renamed subcommand or option
  (inline mentions such as `dvc add` may leave out required arguments);
- `python stages/<name>.py --opt` for a missing script or an option its Typer command lacks, or
  `python bench/<name>.py --opt` for a missing script or an option its source does not spell;
- `imgpipe <command> --opt` for a command or option of the `imgpipe` app that is gone;
- `make <target>` for a target the Makefile lacks;
- a params key that is not in params.yaml: `-S key=value`, the keys of a ```yaml block whose top
  level is a params section, an inline `section.key` (sections read from params.yaml; a section
  that is an empty mapping there is free-form); `model=<name>` must name a registered model;
- a ```python example whose imports or calls no longer match the code;
- a relative link to a missing file or heading, or a repository path (`bench/...`, `tests/...`)
  that is gone.
Everything runs in-process: parsing is pure functions over the page text, then the facts are read
from the repository once.
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib
import importlib.util
import inspect
import re
from pathlib import Path
from unittest import mock

import pytest
import typer
import yaml
from support.docs import code_lines, commands, fenced_blocks, pages
from support.imports import LAYERS

REPO = Path(__file__).resolve().parents[2]
FILE_NAME = re.compile(r"\w+\.(?:py|md|ya?ml|json|csv|tsv|txt|pt|pth|png|tar|lock)")
REPO_PATH = re.compile(r"(?:bench|tests|stages|src|\.github|\.dvc/plots)/[\w./-]*")


# --- parsing a page: pure functions of its text ---------------------------------------------


def prose(text: str) -> str:
    """The page with its fenced blocks, fences included, blanked; line numbers kept."""
    lines = text.splitlines()
    for _, first, code in fenced_blocks(text):
        lines[first - 2 : first + len(code)] = [""] * (len(code) + 2)
    return "\n".join(lines)


def inline_code(text: str) -> list[tuple[int, str]]:
    """(line number, code) of every `inline code` span outside fenced blocks."""
    body = prose(text)
    return [(body.count("\n", 0, m.start()) + 1, " ".join(m.group(1).split())) for m in re.finditer(r"`([^`]+)`", body)]


def options(args: list[str]) -> list[str]:
    """The option names among a command's arguments (`--out=x` -> `--out`)."""
    return [a.split("=", 1)[0] for a in args if a.startswith("-") and a != "-" and not a[1:2].isdigit()]


def set_params(argv: list[str]) -> list[str]:
    """The params keys of every `-S key=value` (also `--set-param`, bench's `--set`), without
    Hydra's `+`, `++` or `~` prefix; keys of another params file than params.yaml are left out."""
    keys = []
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag in ("-S", "--set-param", "--set") and "=" in value:
            file, _, key = value.split("=", 1)[0].rpartition(":")
            if file in ("", "params.yaml"):
                keys.append(key.lstrip("+~"))
    return keys


def model_names(code: str) -> list[str]:
    """Model names a command or inline code sets: `model=mlp,cnn` or `model: cnn`."""
    return [name for m in re.finditer(r"(?<![\w./-])model(?:=|: )([\w,]+)", code) for name in m.group(1).split(",")]


def inline_keys(code: str, sections: set[str]) -> list[str]:
    """`section.key` params keys in inline code, e.g. `train.lr` in `train.lr=0.01`."""
    names = "|".join(sorted(map(re.escape, sections)))
    found = re.findall(rf"(?<![\w./-])(?:{names})(?:\.[A-Za-z_]\w*)+", code)
    return [key for key in found if not FILE_NAME.fullmatch(key)]  # `train.py`, `model.pt`


def yaml_keys(code: str, sections: set[str]) -> list[tuple[int, str, yaml.Node]]:
    """(line within the block, dotted key, value node) of every key of a yaml block that looks
    like params.yaml (its top level holds a params section); repeated keys are all kept."""
    try:
        root = yaml.compose(code)
    except yaml.YAMLError:
        return []
    if not isinstance(root, yaml.MappingNode) or not any(k.value in sections for k, _ in root.value):
        return []
    found = []

    def walk(node: yaml.MappingNode, prefix: str) -> None:
        for key, value in node.value:
            found.append((key.start_mark.line, prefix + str(key.value), value))
            if isinstance(value, yaml.MappingNode):
                walk(value, f"{prefix}{key.value}.")

    walk(root, "")
    return found


def anchors(text: str) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces as -."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", prose(text), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every Markdown link outside fenced blocks."""
    body = prose(text)
    return [(body.count("\n", 0, m.start()) + 1, m.group(1)) for m in re.finditer(r"\]\(([^)\s]+)\)", body)]


# --- what exists: read from the repository ---------------------------------------------------


@functools.cache
def params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


@functools.cache
def models() -> frozenset[str]:
    from imgpipe.models.catalog import list_models

    return frozenset(list_models())


@functools.cache
def make_targets() -> frozenset[str]:
    text = (REPO / "Makefile").read_text()
    return frozenset(t for m in re.finditer(r"^([^\s:=#][^:=]*):(?!=)", text, re.MULTILINE) for t in m.group(1).split())


@functools.cache
def dvc_parser() -> argparse.ArgumentParser:
    from dvc.cli.parser import get_main_parser

    return get_main_parser()


class Rejected(Exception):
    """An argparse error, raised instead of printing usage and exiting."""


def _reject(self, message, *args):
    raise Rejected(message)


def dvc_rejects(args: list[str]) -> str | None:
    """DVC's own parser's complaint about `dvc <args>`, or None."""
    from dvc.cli.parser import DvcParser

    args = [a for a in args if a not in ("-h", "--help")]
    with mock.patch.object(argparse.ArgumentParser, "error", _reject), mock.patch.object(DvcParser, "error", _reject):
        try:
            dvc_parser().parse_args(args)
        except Rejected as err:
            return str(err)
    return None


@functools.cache
def typer_options(script: Path) -> frozenset[str] | str:
    """The option names of a stage script's Typer command, or why they cannot be read."""
    spec = importlib.util.spec_from_file_location(f"docs_check_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 - reported as the page's problem
        return f"cannot import it ({type(err).__name__}: {err})"
    command = typer.main.get_command(module.app)
    return frozenset({"--help"} | {o for p in command.params for o in (*p.opts, *p.secondary_opts)})


@functools.cache
def imgpipe_commands() -> dict[str, frozenset[str]]:
    """`imgpipe` subcommand -> its option names."""
    from imgpipe.console import app

    group = typer.main.get_command(app)
    return {
        name: frozenset({"--help"} | {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)})
        for name, cmd in group.commands.items()
    }


# --- the checks -------------------------------------------------------------------------------


def param_problem(key: str) -> str | None:
    """Why `key` (dotted) is not a params.yaml key, or None."""
    node = params()
    for part in key.split("."):
        if isinstance(node, dict) and not node:  # an empty section (model_args: {}) is free-form
            return None
        if not isinstance(node, dict) or part not in node:
            return "not a key of params.yaml"
        node = node[part]
    return None


def script_problems(script: str, args: list[str]) -> list[str]:
    path = REPO / script
    if not path.is_file():
        return [f"{script} does not exist"]
    if path.parent == REPO / "stages":
        known = typer_options(path)
        if isinstance(known, str):
            return [f"{script}: {known}"]
        return [f"{script} has no option {o}" for o in options(args) if o not in known]
    source = path.read_text()
    return [f"{script} has no option {o}" for o in options(args) if o not in ("-h", "--help") and f'"{o}"' not in source]


def command_problems(argv: list[str], inline: bool) -> list[str]:
    """What no longer exists in one command (`argv[0]` is the program)."""
    program, args = argv[0], argv[1:]
    if program == "dvc":
        why = dvc_rejects(args)
        if why and not (inline and why.startswith("the following arguments are required")):
            return [f"dvc rejects it: {why}"]
    elif program == "imgpipe" and args:
        known = imgpipe_commands()
        if args[0] not in known:
            return [f"imgpipe has no command {args[0]}"]
        return [f"imgpipe {args[0]} has no option {o}" for o in options(args[1:]) if o not in known[args[0]]]
    elif program == "make":
        return [f"the Makefile has no target {t}" for t in args if not t.startswith("-") and "=" not in t and t not in make_targets()]
    elif Path(program).name in ("python", "python3") and args and args[0].endswith(".py"):
        return script_problems(args[0], args[1:])
    elif program.endswith(".py") and args:  # `bench/dvc_cost.py --images 50000`
        return script_problems(program, args)
    return []


def shell_problems(code: str, inline: bool, registered: frozenset[str]) -> list[str]:
    """Problems of one shell line or inline code span: its commands, `-S` keys and model names
    (`registered`: the models that exist, and those the page's own example registers)."""
    found = []
    for argv in commands(code):
        found += command_problems(argv, inline)
        found += [f"params key {key}: {why}" for key in set_params(argv) if (why := param_problem(key))]
    found += [f"model {name} is not registered" for name in model_names(code) if name not in registered]
    return found


def python_problems(code: str) -> list[tuple[int, str]]:
    """(line within the block, problem): imports that fail, calls that no longer bind."""
    try:
        tree = ast.parse(code)
    except SyntaxError as err:
        return [(err.lineno or 1, f"not valid Python: {err.msg}")]
    found, names = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            try:
                module = importlib.import_module(node.module)
            except ImportError as err:
                found.append((node.lineno, f"cannot import {node.module}: {err}"))
                continue
            for alias in node.names:
                if hasattr(module, alias.name):
                    names[alias.asname or alias.name] = getattr(module, alias.name)
                else:
                    found.append((node.lineno, f"{node.module} has no {alias.name}"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and callable(names.get(node.func.id)):
            if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
                continue
            try:
                inspect.signature(names[node.func.id]).bind(*node.args, **{k.arg: k.value for k in node.keywords})
            except TypeError as err:
                found.append((node.lineno, f"{ast.unparse(node)}: {err}"))
            except ValueError:  # no signature to check (a builtin)
                pass
    return found


def link_problems(page: Path, text: str) -> list[tuple[int, str, str]]:
    """(line, target, why) of links to a missing file, or to a heading the page lacks."""
    found = []
    for line, target in links(text):
        if re.match(r"[a-z][a-z+]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve()
        if path and not file.exists():
            found.append((line, target, "no such file"))
            continue
        if anchor and (not path or file.suffix == ".md") and anchor not in anchors(file.read_text() if path else text):
            found.append((line, target, f"no heading #{anchor} in {path or 'this page'}"))
    return found


def problems(page: Path, text: str) -> list[str]:
    """Every stale item on a page, as `page:line: item: why`."""
    name = page.relative_to(REPO).as_posix()
    found = []
    registered = models() | set(re.findall(r"register_model\(\s*[\"'](\w+)", text))  # my_net in "Adding a model"
    for line, code in code_lines(text):
        found += [(line, code, why) for why in shell_problems(code, False, registered)]
    sections = set(params())
    for line, code in inline_code(text):
        found += [(line, code, why) for why in shell_problems(code, True, registered)]
        found += [(line, code, f"params key {key}: {why}") for key in inline_keys(code, sections) if (why := param_problem(key))]
        if REPO_PATH.fullmatch(code) and not (REPO / code).exists():
            found.append((line, code, "no such file in the repository"))
    for lang, first, block in fenced_blocks(text):
        code = "\n".join(block)
        if lang in ("yaml", "yml"):
            for offset, key, value in yaml_keys(code, sections):
                if why := param_problem(key):
                    found.append((first + offset, key, why))
                if key == "model" and isinstance(value, yaml.ScalarNode) and value.value not in models():
                    found.append((first + offset, f"model: {value.value}", "not a registered model"))
        elif lang in ("python", "py"):
            found += [(first + offset - 1, "python example", why) for offset, why in python_problems(code)]
    found += link_problems(page, text)
    return list(dict.fromkeys(f"{name}:{line}: `{item}`: {why}" for line, item, why in found))


# --- the tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_page_shows_only_commands_and_params_that_exist(page: Path):
    stale = problems(page, page.read_text())
    assert not stale, "stale docs (fix the page, or the code it describes):\n" + "\n".join(stale)


def test_readme_links_every_docs_page():
    readme = (REPO / "README.md").read_text()
    missing = [p.name for p in sorted((REPO / "docs").glob("*.md")) if f"(docs/{p.name})" not in readme]
    assert not missing, f"README's Documentation list lacks {missing}"


FAKE_PAGE = REPO / "docs" / "fake.md"


def test_the_checker_reports_stale_items():
    """The checker itself: a stale dvc option and a stale params key are both reported, each with
    its page and line, so this test cannot pass by checking nothing."""
    text = "# Fake\n\n```bash\ndvc exp run --no-such-flag\n```\n\nSet `train.no_such_key` first.\n"
    report = problems(FAKE_PAGE, text)
    assert any(p.startswith("docs/fake.md:4: ") and "unrecognized arguments: --no-such-flag" in p for p in report), report
    assert any(p.startswith("docs/fake.md:7: ") and "params key train.no_such_key" in p for p in report), report


@pytest.mark.parametrize(
    ("snippet", "item"),
    [
        ("```bash\ndvc exp run -S model=no_such_model\n```", "model no_such_model is not registered"),
        ("```bash\ndvc exp run -S train.no_such_param=1\n```", "params key train.no_such_param"),
        ("```bash\npython stages/train.py --no-such-option\n```", "has no option --no-such-option"),
        ("```bash\n.venv/bin/python bench/throughput.py --no-such-option\n```", "has no option --no-such-option"),
        ("`imgpipe review --no-such-option`", "has no option --no-such-option"),
        ("`imgpipe no-such-command`", "has no command no-such-command"),
        ("```bash\nmake no-such-target\n```", "no target no-such-target"),
        ("```yaml\ntrain:\n  no_such_yaml_key: 3\n```", "`train.no_such_yaml_key`: not a key"),
        ("```yaml\nmodel: no_such_model\n```", "not a registered model"),
        ('```python\nfrom imgpipe.models.registry import register_model\n\nregister_model("x")\n```', "argument: 'head'"),
        ("```python\nfrom imgpipe.models.registry import no_such_name\n```", "has no no_such_name"),
        ("see `bench/no_such_bench.py`", "`bench/no_such_bench.py`: no such file"),
        ("[gone](no-such-page.md)", "`no-such-page.md`: no such file"),
        ("[here](#no-such-heading)", "no heading #no-such-heading"),
    ],
)
def test_the_checker_reports_each_kind_of_stale_item(snippet: str, item: str):
    report = problems(FAKE_PAGE, f"# Fake\n\n{snippet}\n")
    assert any(item in p for p in report), f"{item!r} not reported; got {report}"


def test_architecture_draws_the_tree_as_it_is():
    """ARCHITECTURE.md's tree: one line per layer package, in the layers' order (the order
    tests/repo/test_layers.py enforces), then the entry-point modules, exactly those on disk."""
    text = (REPO / "ARCHITECTURE.md").read_text()
    tree = next(block for lang, _, block in fenced_blocks(text) if block and block[0] == "src/imgpipe/")
    drawn = [line.split()[0].rstrip("/") for line in tree[1:] if line.split()[0].endswith("/")]
    assert drawn == LAYERS, "ARCHITECTURE.md's tree lists the packages of tests/support/imports.LAYERS in order"
    library = REPO / "src" / "imgpipe"
    assert sorted(drawn) == sorted(p.parent.name for p in library.glob("*/__init__.py"))
    entry = [line for line in tree[1:] if not line.split()[0].endswith("/")]
    assert len(entry) == 1, "one line for the entry points"
    modules = {p.name for p in library.glob("*.py")} - {"__init__.py"}
    assert set(re.findall(r"\w+\.py", entry[0])) == modules
    assert len(tree) <= 14, "the tree stays one screen"
