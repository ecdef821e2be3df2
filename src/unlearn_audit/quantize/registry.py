"""The explicit scheme registry: each name, what the scheme is, and the class that builds it.

The table is plain data, read without importing torch (seconds on a CPU machine), so ``schemes`` and
every command's help answer at once; a scheme's module, and torch or an optional library with it, is
imported only when the scheme is built (``get_scheme``), as in lm-evaluation-harness's lazy
``name -> "module:attr"`` table. Each description here is the one the built scheme carries
(tests/test_scheme_contract.py checks every one).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    from .base import Scheme


@dataclass(frozen=True)
class Preset:
    """A registered scheme: the class ``target`` (``"module:Class"``, the module relative to this package)
    called with ``args``; an argument that is itself a Preset is built first (a republished quantizer)."""

    target: str
    args: tuple
    description: str

    def __call__(self) -> Scheme:
        module, _, cls = self.target.partition(":")
        return getattr(import_module(module, __package__), cls)(*(a() if isinstance(a, Preset) else a for a in self.args))


def _rtn(bits: int, group_size: int | None = 128, symmetric: bool = True) -> Preset:
    grouping = "per output channel" if group_size is None else f"groups of {group_size}"
    kind = "symmetric absmax (paper Eq. 2)" if symmetric else "asymmetric min/max with zero point"
    return Preset(".rtn:RTNScheme", (bits, group_size, symmetric), f"round-to-nearest int{bits}, {kind}, {grouping}")


def _codebook(kind: str) -> Preset:
    return Preset(".codebook:CodebookScheme", (kind,), f"{kind.upper()} codebook, absmax per block of 64 (reference, no bitsandbytes)")


def _bnb(mode: str) -> Preset:
    what = ("bitsandbytes LLM.int8() (outlier threshold 6.0), the paper's 8-bit setting" if mode == "int8"
            else f"bitsandbytes 4-bit {mode.upper()}, blocksize 64" + (" (the paper's 4-bit setting)" if mode == "fp4" else ""))
    return Preset(".bnb:BitsAndBytes", (mode,), what)


def _gptq(bits: int) -> Preset:
    return Preset(".gptq:GPTQScheme", (bits, 128), f"GPTQ int{bits} (reference, Eq. 2 grid, groups of 128), calibrated")


def _torchao(bits: int, symmetric: bool) -> Preset:
    what = ("torchao int8 weight-only (symmetric per channel, absmax/127.5)" if symmetric
            else f"torchao int{bits} weight-only, asymmetric, groups of 128 (= rtn-int{bits}-asym)")
    return Preset(".ao:TorchAOScheme", (bits, symmetric), what)


def _prune(percent: int, per_layer: bool) -> Preset:
    return Preset("..attacks.perturb:MagnitudePrune", (percent, per_layer),
                  f"unstructured magnitude pruning of {percent}% of the weights ({'per module' if per_layer else 'global'})")


def _republished(name: str, inner: Preset) -> Preset:
    return Preset("..attacks.republish:Republished", (inner,),
                  f"{name} round trip, republished as float16 (every parameter cast to float16)")


def _gguf(kind: str) -> Preset:
    return Preset(".ggml:GGMLScheme", (kind,), f"llama.cpp GGUF {kind.upper()} (blocks of 32), gguf.quants' arithmetic in torch")


SCHEMES: dict[str, Preset] = {
    "fp32": Preset(".fp32:FullPrecision", (), "the checkpoint as given, unquantized (the full-precision baseline)"),
    # Round-to-nearest, the paper's Eq. 2 (symmetric) and the affine variant with a zero point.
    **{f"rtn-int{b}": _rtn(b) for b in (8, 6, 5, 4, 3, 2)},
    **{f"rtn-int{b}-asym": _rtn(b, symmetric=False) for b in (8, 4, 3, 2)},
    "rtn-int8-pc": _rtn(8, None),
    "rtn-int4-pc": _rtn(4, None),
    "rtn-int4-g64": _rtn(4, 64),
    "rtn-int4-g32": _rtn(4, 32),
    # NF4 / FP4, the exact algorithm in torch, and through bitsandbytes itself.
    "nf4": _codebook("nf4"),
    "fp4": _codebook("fp4"),
    "bnb-fp4": _bnb("fp4"),
    "bnb-nf4": _bnb("nf4"),
    "bnb-int8": _bnb("int8"),
    # Calibrated methods (calibration: the retain set, or the shipped generic text).
    "gptq-int4": _gptq(4),
    "gptq-int8": _gptq(8),
    "awq-int4": Preset(".awq:AWQScheme", (4, 128), "AWQ int4 (reference scale search, asymmetric, groups of 128), calibrated"),
    # torchao, the library cross-check for the asymmetric RTN presets.
    **{f"torchao-int{b}-asym": _torchao(b, symmetric=False) for b in (8, 4, 3, 2)},
    "torchao-int8": _torchao(8, symmetric=True),
    # Recovery attacks beyond quantization (attacks/perturb.py): pruning and weight noise.
    **{f"prune-magnitude-{p}": _prune(p, per_layer=False) for p in (10, 20, 30)},
    **{f"prune-layer-{p}": _prune(p, per_layer=True) for p in (10, 20, 30)},
    **{f"noise-{s:g}": Preset("..attacks.perturb:GaussianNoise", (s,),
                              f"Gaussian weight noise, σ = {s:g} × each tensor's std, scores averaged over 3 seeds") for s in (0.01, 0.05)},
    # The relearning attack (attacks/relearn.py): a few steps on public in-domain text, never the forget set.
    **{f"relearn-{n}": Preset("..attacks.relearn:Relearn", (n,), f"relearning attack: {n} AdamW steps at lr 1e-05 on public "
                              "in-domain text (retain or --relearn-data)") for n in (10, 25, 50)},
    # A quantized model republished as fp16 (attacks/republish.py).
    "dequant-requant-gguf-q4_0": _republished("gguf-q4_0", _gguf("q4_0")),
    "dequant-requant-gptq-int4": _republished("gptq-int4", _gptq(4)),
    # llama.cpp's block formats through gguf.quants.
    **{f"gguf-{k}": _gguf(k) for k in ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1")},
    # llama.cpp's K-quant file types through llama.cpp itself (the [llamacpp] extra).
    **{f"gguf-{k}": Preset(".llamacpp:LlamaCppScheme", (k,), f"llama.cpp GGUF {k.upper()} (K-quants, super-blocks of 256) "
                           "through llama.cpp itself") for k in ("q4_k_m", "q6_k")},
}

DEFAULT_SCHEMES = ("fp32", "rtn-int8", "rtn-int4", "bnb-fp4")


# ``--backend library``: the preset that runs the same algorithm through a maintained library.
LIBRARY_TWINS = {
    "nf4": "bnb-nf4", "fp4": "bnb-fp4",
    **{f"rtn-int{b}-asym": f"torchao-int{b}-asym" for b in (8, 4, 3, 2)},
}
# Reference presets with no library that runs on a CPU, and why (docs/schemes.md has the measurements).
NO_LIBRARY = {
    "gptq": "no GPTQ library runs on CPU here: auto-gptq needs CUDA, gptqmodel needs torch>=2.14.1, "
            "llmcompressor pins transformers 5.17",
    "awq": "no AWQ library runs on CPU here: autoawq needs IPEX and transformers<=4.51, llmcompressor's AWQ "
           "needs an accelerator",
}
# The libraries that run each method on a GPU, by import name.
GPU_LIBRARIES = {"gptq": ("gptqmodel", "llmcompressor", "auto_gptq"), "awq": ("awq", "gptqmodel", "llmcompressor")}


def no_library_reason(method: str, device: str = "cpu", installed=None) -> str:
    """Why ``--backend library`` cannot run ``method`` (gptq, awq) here. On a GPU the CPU's reasons do not
    hold: the libraries run there, but each writes its own packed checkpoint format that this audit does
    not read back, so the reason says which are installed and that the reference runs on the same GPU."""
    if not str(device).startswith("cuda"):
        return NO_LIBRARY[method]
    from importlib.util import find_spec

    found = [name for name in GPU_LIBRARIES[method] if (installed or find_spec)(name)]
    label = method.upper()
    have = (f"{', '.join(found)} {'is' if len(found) == 1 else 'are'} installed, but --backend library does not run "
            f"{label} through {'it' if len(found) == 1 else 'them'}: each writes its own packed checkpoint, which this "
            "audit does not read back" if found else
            f"no {label} library is installed here ({', '.join(GPU_LIBRARIES[method])})")
    return f"{have}; --backend reference runs the reference {label} on this GPU"


def get_scheme(name: str) -> Scheme:
    if name not in SCHEMES:
        close = difflib.get_close_matches(name, SCHEMES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(SCHEMES)}"
        raise InputError(f"unknown scheme {name!r}{hint}")
    return SCHEMES[name]()


def for_backend(scheme: Scheme, backend: str, device: str = "cpu") -> Scheme:
    """The scheme to run for ``--backend reference|library`` on ``device``; names already bound to a
    library stay."""
    if backend == "reference" or scheme.name in LIBRARY_TWINS.values():
        return scheme
    if scheme.name in LIBRARY_TWINS:
        return get_scheme(LIBRARY_TWINS[scheme.name])
    method = scheme.params().get("method")
    if method in NO_LIBRARY:
        from .base import NoLibrary

        return NoLibrary(scheme, no_library_reason(method, device))
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
