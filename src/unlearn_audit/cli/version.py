"""``unlearn-audit --version``: the tool's version, the versions of the libraries that do its numerics,
and the devices it can run on.

Nothing here imports torch or transformers: the versions come from the installed distributions'
metadata and the devices from the CPU's and the NVIDIA driver's own listings (``machine.devices_seen``),
so the answer takes as long as ``--help`` instead of the seconds torch's import takes on a CPU machine.
The price is that the GPU line is the driver's list, not torch's: ``audit --device cuda`` is what asks
torch itself.
"""

from __future__ import annotations

import typer

from .. import __version__
from ..machine import devices_seen
from ..versions import installed_version
from .common import app

#: The libraries whose versions change the numbers an audit reports.
LIBRARIES = ("torch", "transformers", "bitsandbytes")


def version_text() -> str:
    lines = [f"unlearn-audit {__version__}"]
    lines += [f"{dist} {installed_version(dist) or 'not installed'}" for dist in LIBRARIES]
    lines.append(f"devices: {devices_seen()}")
    return "\n".join(lines)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit(0)


@app.callback()
def options(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print the versions of the tool, torch, transformers and bitsandbytes, and the devices seen."),
) -> None:
    """Has this language model really forgotten? Quantize, probe, and give a verdict with evidence."""
