"""Progress messages that say how far their stage is, so a terminal can show a bar with an ETA.

The pipeline reports what it is doing through an ``on_step(text)`` callable. A ``Step`` is such a text
that also carries its stage's name and ``done`` of ``total`` units (training steps, variants): callers
that only print or ignore the text see a plain string, and the command line's display (``cli/common.py``
``Steps``) draws a progress bar with the time left for the stage.
"""

from __future__ import annotations


class Step(str):
    """``text``, the ``stage`` it belongs to, and how far that stage is: ``done`` of ``total``."""

    stage: str
    done: int
    total: int

    def __new__(cls, text: str, stage: str, done: int, total: int) -> "Step":
        obj = super().__new__(cls, text)
        obj.stage, obj.done, obj.total = stage, done, total
        return obj
