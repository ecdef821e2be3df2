"""The explicit scheme registry: a name, and how to build the scheme. Heavy backends import lazily."""

from __future__ import annotations

import difflib
from typing import Callable

from ..errors import InputError
from .awq import AWQScheme
from .base import Scheme
from .bnb import BitsAndBytes
from .codebook import CodebookScheme
from .fp32 import FullPrecision
from .ggml import GGMLScheme
from .gptq import GPTQScheme
from .rtn import RTNScheme

SCHEMES: dict[str, Callable[[], Scheme]] = {
    "fp32": FullPrecision,
    # Round-to-nearest, the paper's Eq. 2 (symmetric) and the affine variant with a zero point.
    **{f"rtn-int{b}": (lambda b=b: RTNScheme(b, 128)) for b in (8, 6, 5, 4, 3, 2)},
    **{f"rtn-int{b}-asym": (lambda b=b: RTNScheme(b, 128, symmetric=False)) for b in (8, 4, 3, 2)},
    "rtn-int8-pc": lambda: RTNScheme(8, None),
    "rtn-int4-pc": lambda: RTNScheme(4, None),
    "rtn-int4-g64": lambda: RTNScheme(4, 64),
    "rtn-int4-g32": lambda: RTNScheme(4, 32),
    # NF4 / FP4, the exact algorithm in torch, and through bitsandbytes itself.
    "nf4": lambda: CodebookScheme("nf4"),
    "fp4": lambda: CodebookScheme("fp4"),
    "bnb-fp4": lambda: BitsAndBytes("fp4"),
    "bnb-nf4": lambda: BitsAndBytes("nf4"),
    "bnb-int8": lambda: BitsAndBytes("int8"),
    # Calibrated methods (calibration: the retain set, or the shipped generic text).
    "gptq-int4": lambda: GPTQScheme(4, 128),
    "gptq-int8": lambda: GPTQScheme(8, 128),
    "awq-int4": lambda: AWQScheme(4, 128),
    # llama.cpp's block formats through gguf.quants.
    **{f"gguf-{k}": (lambda k=k: GGMLScheme(k)) for k in ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1")},
}

DEFAULT_SCHEMES = ("fp32", "rtn-int8", "rtn-int4", "bnb-fp4")


def get_scheme(name: str) -> Scheme:
    if name not in SCHEMES:
        close = difflib.get_close_matches(name, SCHEMES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(SCHEMES)}"
        raise InputError(f"unknown scheme {name!r}{hint}")
    return SCHEMES[name]()


def parse_schemes(spec: str) -> list[Scheme]:
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise InputError("--schemes is empty")
    if len(set(names)) != len(names):
        raise InputError(f"--schemes lists a scheme twice: {spec}")
    return [get_scheme(n) for n in names]
