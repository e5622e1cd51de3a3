"""What library code has to tell the user: it returns `Note`s, and the stage (or command) that
asked prints them under its own name, so a library function never writes to the terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Note:
    """One line for the user; a `warning` goes to stderr."""

    text: str
    warning: bool = False


def say(stage: str, notes: Iterable[Note]) -> None:
    """Print each note as `<stage>: <text>` (stdout) or `<stage>: warning: <text>` (stderr)."""
    for note in notes:
        if note.warning:
            print(f"{stage}: warning: {note.text}", file=sys.stderr)
        else:
            print(f"{stage}: {note.text}")
