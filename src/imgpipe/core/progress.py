"""Progress bars that show on a terminal and stay quiet in logs and CI."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(items: Iterable[T] | None, desc: str, total: int | None = None, leave: bool = False, show: bool = True):
    """Wrap `items` in a tqdm bar (None: a bar to `update` by hand); `disable=None` hides it when
    stderr is not a TTY, `show=False` always (a distributed rank other than 0)."""
    return tqdm(items, desc=desc, total=total, leave=leave, disable=None if show else True, dynamic_ncols=True)
