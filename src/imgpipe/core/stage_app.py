"""Shared glue for the Typer stage scripts in `stages/`."""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import TypeVar

import typer

from imgpipe.core.errors import UserError

F = TypeVar("F", bound=Callable[..., None])


def make_app() -> typer.Typer:
    """A Typer app for one stage; the command's help is the stage script's docstring."""
    return typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so staged outputs are discarded on the way out."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def reports_user_errors(func: F) -> F:
    """Turn a `UserError` into one line on stderr and exit 1; Ctrl-C and SIGTERM exit 130 and
    143 after the staged outputs are discarded (see `imgpipe.core.atomic`)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            return func(*args, **kwargs)
        except UserError as err:
            report(err)
            raise typer.Exit(code=1) from None
        except KeyboardInterrupt as stop:
            if not in_worker():  # the launcher says it once for all ranks
                print("interrupted: outputs left unchanged", file=sys.stderr)
            raise typer.Exit(code=143 if isinstance(stop, Terminated) else 130) from None
        except Exception as err:
            if not in_worker():
                raise
            # A rank's failure: often only that a peer died first. The launcher shows the first
            # failure's traceback (torchrun's error file), not one per rank.
            record_failure(err)
            raise typer.Exit(code=1) from None
        finally:
            if in_worker() and signal.getsignal(signal.SIGTERM) is _raise_terminated:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the launcher's SIGTERM, once this rank is done

    return wrapper  # type: ignore[return-value]


# A distributed training rank (see `imgpipe.train.distributed`) hands its errors to torchrun's launcher
# through the error file the launcher names, so the launcher reports the first one once.
USER_ERROR_KIND = "imgpipe.UserError"


def in_worker() -> bool:
    """Whether this process is a rank started by torchrun, not a command the user or DVC ran."""
    return "TORCHELASTIC_RUN_ID" in os.environ and "LOCAL_RANK" in os.environ


def report(err: UserError) -> None:
    """One line on stderr; in a rank, into the launcher's error file instead."""
    if not _error_file({"message": str(err), "timestamp": int(time.time()), "kind": USER_ERROR_KIND}):
        print(f"error: {err}", file=sys.stderr)


def record_failure(err: Exception) -> None:
    """A rank's unexpected exception, with its traceback, in torchrun's error-file format."""
    callstack = traceback.format_exc()
    message = {"message": f"{type(err).__name__}: {err}", "extraInfo": {"py_callstack": callstack, "timestamp": str(int(time.time()))}}
    if not _error_file({"message": message}):
        print(callstack, file=sys.stderr, end="")


def _error_file(data: dict) -> bool:
    """Write `data` where torchrun's launcher reads a rank's failure; False when it names none."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE") if in_worker() else None
    if path:
        with open(path, "w", encoding="utf-8") as out:
            json.dump(data, out)
    return bool(path)
