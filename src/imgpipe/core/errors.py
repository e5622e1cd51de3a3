"""User-facing errors: one clear line, no traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (params, data, files): reported as one line, exit code 1."""
