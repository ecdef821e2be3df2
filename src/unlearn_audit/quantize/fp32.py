"""The model as given: the full-precision baseline that every quantized variant is compared to."""

from __future__ import annotations

from .base import Scheme


class FullPrecision(Scheme):
    name = "fp32"
    bits = 32
    description = "the checkpoint as given, unquantized (the full-precision baseline)"
