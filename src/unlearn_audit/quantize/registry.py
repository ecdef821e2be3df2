"""The explicit scheme registry: a name, and how to build the scheme. Heavy backends import lazily."""

from __future__ import annotations

import difflib
from typing import Callable

from ..attacks.perturb import GaussianNoise, MagnitudePrune
from ..attacks.relearn import Relearn
from ..attacks.republish import Republished
from ..errors import InputError
from .ao import TorchAOScheme
from .awq import AWQScheme
from .base import Scheme, SchemeUnavailable
from .bnb import BitsAndBytes
from .codebook import CodebookScheme
from .fp32 import FullPrecision
from .ggml import GGMLScheme
from .gptq import GPTQScheme
from .llamacpp import LlamaCppScheme
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
    # torchao, the library cross-check for the asymmetric RTN presets.
    **{f"torchao-int{b}-asym": (lambda b=b: TorchAOScheme(b, symmetric=False)) for b in (8, 4, 3, 2)},
    "torchao-int8": lambda: TorchAOScheme(8, symmetric=True),
    # Recovery attacks beyond quantization (attacks/perturb.py): pruning and weight noise.
    **{f"prune-magnitude-{p}": (lambda p=p: MagnitudePrune(p)) for p in (10, 20, 30)},
    **{f"prune-layer-{p}": (lambda p=p: MagnitudePrune(p, per_layer=True)) for p in (10, 20, 30)},
    **{f"noise-{s:g}": (lambda s=s: GaussianNoise(s)) for s in (0.01, 0.05)},
    # The relearning attack (attacks/relearn.py): a few steps on public in-domain text, never the forget set.
    **{f"relearn-{n}": (lambda n=n: Relearn(n)) for n in (10, 25, 50)},
    # A quantized model republished as fp16 (attacks/republish.py).
    "dequant-requant-gguf-q4_0": lambda: Republished(GGMLScheme("q4_0")),
    "dequant-requant-gptq-int4": lambda: Republished(GPTQScheme(4, 128)),
    # llama.cpp's block formats through gguf.quants.
    **{f"gguf-{k}": (lambda k=k: GGMLScheme(k)) for k in ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1")},
    # llama.cpp's K-quant file types through llama.cpp itself (the [llamacpp] extra).
    **{f"gguf-{k}": (lambda k=k: LlamaCppScheme(k)) for k in ("q4_k_m", "q6_k")},
}

DEFAULT_SCHEMES = ("fp32", "rtn-int8", "rtn-int4", "bnb-fp4")


# ``--backend library``: the preset that runs the same algorithm through a maintained library.
LIBRARY_TWINS = {
    "nf4": "bnb-nf4", "fp4": "bnb-fp4",
    **{f"rtn-int{b}-asym": f"torchao-int{b}-asym" for b in (8, 4, 3, 2)},
}
# Reference presets with no library that runs on this kind of machine, and why.
NO_LIBRARY = {
    "gptq": "no GPTQ library runs on CPU here: auto-gptq needs CUDA, gptqmodel needs torch>=2.14.1, "
            "llmcompressor pins transformers 5.17",
    "awq": "no AWQ library runs on CPU here: autoawq needs IPEX and transformers<=4.51, llmcompressor's AWQ "
           "needs an accelerator",
}


def get_scheme(name: str) -> Scheme:
    if name not in SCHEMES:
        close = difflib.get_close_matches(name, SCHEMES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(SCHEMES)}"
        raise InputError(f"unknown scheme {name!r}{hint}")
    return SCHEMES[name]()


class NoLibrary(Scheme):
    """A reference preset asked for with ``--backend library`` where no library runs: a typed skip."""

    def __init__(self, reference: Scheme, reason: str) -> None:
        self.name, self.bits, self.reason = f"{reference.name}@library", reference.bits, reason
        self.description = f"{reference.name} through a library: {reason}"

    def check(self, checkpoint, calibration) -> None:
        raise SchemeUnavailable(self.reason)


def for_backend(scheme: Scheme, backend: str) -> Scheme:
    """The scheme to run for ``--backend reference|library``; names already bound to a library stay."""
    if backend == "reference" or scheme.name in LIBRARY_TWINS.values():
        return scheme
    if scheme.name in LIBRARY_TWINS:
        return get_scheme(LIBRARY_TWINS[scheme.name])
    method = scheme.params().get("method")
    if method in NO_LIBRARY:
        return NoLibrary(scheme, NO_LIBRARY[method])
    return scheme  # fp32, and formats whose only implementation is already a library (gguf, bnb, torchao)


def parse_schemes(spec: str, backend: str = "reference") -> list[Scheme]:
    if backend not in ("reference", "library"):
        raise InputError(f"--backend must be 'reference' or 'library', got {backend!r}")
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise InputError("--schemes is empty")
    if len(set(names)) != len(names):
        raise InputError(f"--schemes lists a scheme twice: {spec}")
    return [for_backend(get_scheme(n), backend) for n in names]
