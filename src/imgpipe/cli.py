"""Shared glue for the Typer stage scripts in `stages/`."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

import typer

from imgpipe.errors import UserError

F = TypeVar("F", bound=Callable[..., None])


def make_app() -> typer.Typer:
    """A Typer app for one stage; the command's help is the stage script's docstring."""
    return typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


def reports_user_errors(func: F) -> F:
    """Turn a `UserError` (and Ctrl-C) into one line on stderr and a non-zero exit."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            raise typer.Exit(code=1) from None
        except KeyboardInterrupt:
            print("interrupted: outputs left unchanged", file=sys.stderr)
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]
