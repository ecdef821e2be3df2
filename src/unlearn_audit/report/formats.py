"""The views ``unlearn-audit report`` renders (render.py), named apart from the renderer so that the
command's options are defined without importing it: the renderer imports the probes, and with them
numpy and scipy, which would cost every ``--help`` a second."""

from __future__ import annotations

import enum


class ReportFormat(str, enum.Enum):
    """The views ``unlearn-audit report`` renders."""

    html = "html"
    md = "md"
    junit = "junit"
    json = "json"
    pdf = "pdf"


class Paper(str, enum.Enum):
    """Page sizes of ``report --format pdf``."""

    a4 = "a4"
    letter = "letter"
