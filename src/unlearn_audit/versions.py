"""Installed versions of the libraries a run used, for the report and the schemes' parameters.

Read from the installed distribution's metadata rather than from ``module.__version__``: it needs no
import of a heavy optional library, and a library that is not installed is simply ``None``.
"""

from __future__ import annotations

from importlib import metadata


def installed_version(dist: str) -> str | None:
    """The version of the installed distribution ``dist`` (its PyPI name, e.g. ``"llama-cpp-python"``),
    or None when it is not installed."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
