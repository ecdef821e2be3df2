"""Errors the CLI turns into a one-line message and an exit code (see the README's exit-code table)."""

from __future__ import annotations


class InputError(Exception):
    """Bad input or usage: a file, a flag or a model directory the tool cannot accept (exit 2).

    The message is the whole user-facing line, so it names the file (and the line, where it applies).
    """
