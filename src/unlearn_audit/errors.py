"""Errors the CLI turns into a one-line message and an exit code (see the README's exit-code table)."""

from __future__ import annotations


class InputError(Exception):
    """Bad input or usage: a file, a flag or a model directory the tool cannot accept (exit 2).

    The message is the whole user-facing line, so it names the file (and the line, where it applies).
    """


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (its type's name where it has none), for a one-line
    report of what went wrong."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def parse(text: str, where: str, fmt: str = "JSON", line: int | None = None):
    """``json.loads`` or ``tomllib.loads`` (``fmt="TOML"``), with every way a hostile file breaks them as
    one ``InputError`` line naming ``where`` (and the line): bad syntax, nesting deep enough to exhaust
    the parser's recursion, and integers longer than Python converts (4300 digits)."""
    import json

    import tomllib

    at = where if line is None else f"{where}:{line}"
    try:
        return json.loads(text) if fmt == "JSON" else tomllib.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{at if line is not None else f'{where}:{exc.lineno}'}: invalid JSON ({exc.msg})") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{at}: invalid TOML ({exc})") from None
    except RecursionError:
        raise InputError(f"{at}: invalid {fmt} (nested too deeply)") from None
    except ValueError as exc:
        raise InputError(f"{at}: invalid {fmt} ({exc})") from None
