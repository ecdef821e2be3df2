"""The explicit scheme registry: a name, and how to build the scheme. Heavy backends import lazily."""

from __future__ import annotations

import difflib
from typing import Callable

from ..errors import InputError
from .base import Scheme
from .bnb import BitsAndBytes
from .fp32 import FullPrecision
from .rtn import RTNScheme

SCHEMES: dict[str, Callable[[], Scheme]] = {
    "fp32": FullPrecision,
    "rtn-int8": lambda: RTNScheme(8, 128),
    "rtn-int4": lambda: RTNScheme(4, 128),
    "rtn-int8-pc": lambda: RTNScheme(8, None),
    "rtn-int4-pc": lambda: RTNScheme(4, None),
    "rtn-int4-g64": lambda: RTNScheme(4, 64),
    "rtn-int4-g32": lambda: RTNScheme(4, 32),
    "rtn-int3": lambda: RTNScheme(3, 128),
    "bnb-fp4": lambda: BitsAndBytes("fp4"),
    "bnb-nf4": lambda: BitsAndBytes("nf4"),
    "bnb-int8": lambda: BitsAndBytes("int8"),
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
