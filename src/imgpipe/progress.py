"""Progress bars that show on a terminal and stay quiet in logs and CI."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(items: Iterable[T] | None, desc: str, total: int | None = None, leave: bool = False):
    """Wrap `items` in a tqdm bar (None: a bar to `update` by hand); `disable=None` hides it when
    stderr is not a TTY."""
    return tqdm(items, desc=desc, total=total, leave=leave, disable=None, dynamic_ncols=True)
