"""The recipes of README.md and docs/: which pages, their shell blocks, the commands in a line;
read by tests/repo/test_docs.py (they are right) and tests/e2e/test_recipes.py (they run)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


SHELL = {"bash", "sh", "shell", "console"}  # unlabelled blocks are diagrams and output
SEPARATORS = {"&&", "||", ";", "|"}


def fenced_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """(language, line number of the first code line, code lines) of every ``` block."""
    blocks, current = [], None
    for n, line in enumerate(text.splitlines(), 1):
        if current is None and line.lstrip().startswith("```"):
            current = (line.strip()[3:].strip().lower(), n + 1, [])
        elif current is not None and line.strip() == "```":
            blocks.append(current)
            current = None
        elif current is not None:
            current[2].append(line)
    return blocks


def pages() -> list[Path]:
    found = [REPO / "README.md", REPO / "ARCHITECTURE.md", *sorted((REPO / "docs").glob("*.md"))]
    return [page for page in found if page.exists()]


def code_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every shell line in a fenced block; `\\` continuations joined."""
    found = []
    for lang, first, code in fenced_blocks(text):
        if lang not in SHELL:
            continue
        start, joined = None, ""
        for n, line in enumerate(code, first):
            start = n if start is None else start
            joined += " " + line.strip().removeprefix("$ ").removesuffix("\\")
            if not line.rstrip().endswith("\\"):
                found.append((start, joined.strip()))
                start, joined = None, ""
    return found


def commands(line: str) -> list[list[str]]:
    """The commands on a shell line: comments dropped, split at && || ; |, and placeholders
    (`<exp>`, `N`) replaced by `1`, a value any option takes."""
    try:
        tokens = shlex.split(re.sub(r"<[^<>]*>", "1", line), comments=True)
    except ValueError:  # unbalanced quotes: prose, not a command
        return []
    found = [[]]
    for token in tokens:
        if token in SEPARATORS:
            found.append([])
        else:
            found[-1].append("1" if token == "N" else token)
    return [argv for argv in found if argv]
