"""Locate the data that ships with the tool (probe definitions, benchmark templates, report templates).

The repository keeps them at the top level (``probes/``, ``report_templates/``) so they read as data,
not code; the wheel carries them inside the package (see ``pyproject.toml``). A source checkout that
was not installed falls back to the top-level folders.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import tomllib

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The folder ``name`` ("probes" or "report_templates"), installed or from the checkout."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the packaged data folder {name!r} is missing; reinstall unlearn-audit")


@cache
def load_toml(folder: str, filename: str) -> dict:
    """A TOML file from a data folder, parsed once per process."""
    with open(data_dir(folder) / filename, "rb") as fh:
        return tomllib.load(fh)
