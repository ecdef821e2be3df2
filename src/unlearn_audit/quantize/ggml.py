"""llama.cpp's legacy GGUF block formats (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) through ``gguf.quants``.

This is how most people run a released model on a laptop, so it is the quantizer an end user really
deploys. ``gguf.quants`` is llama.cpp's own Python package (pure numpy); its Q4_0 and Q8_0 bytes are
identical to llama.cpp's. Each row is cut into blocks of 32 weights along the input dimension:

- Q8_0: d = absmax / 127, codes round(w / d) in [-127, 127];
- Q4_0 / Q5_0: d = (the signed value of largest magnitude) / -8 (or -16), codes in [0, 15] (or [0, 31]);
- Q4_1 / Q5_1: d = (max - min) / 15 (or 31) and the block minimum m, codes in [0, 15] (or [0, 31]);

with d (and m) stored as float16. The integer codes are read back from the quantized bytes through
the library's own dequantization, ``(x - m) / d``, which is exact for these small integers.

llama.cpp's file types also keep some tensors at other types (Q4_0 files store the output layer as
Q6_K); like the paper, these presets quantize every Linear except the output head and leave the head
and embeddings in full precision. The K-quants (Q4_K_M, Q6_K) need llama.cpp itself: see llamacpp.py.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from ..versions import installed_version
from .base import GridCodes, Scheme, SchemeUnavailable, fake_quantize, out_in_weight, quantizable_modules

TYPES = {"q8_0": 8, "q4_0": 4, "q4_1": 4, "q5_0": 5, "q5_1": 5}
BLOCK = 32
OFFSET = {"q4_0": 8, "q5_0": 16}  # these store q + offset; the others store q itself


def _qtype(kind: str):
    try:
        from gguf.constants import GGMLQuantizationType
    except ImportError as exc:
        raise SchemeUnavailable(f"the gguf package is not installed (pip install gguf): {exc}")
    return GGMLQuantizationType[kind.upper()]


def ggml_roundtrip(weight: torch.Tensor, kind: str) -> tuple[np.ndarray, torch.Tensor]:
    """The quantized bytes, one row of blocks per output row, and the dequantized float32 weight."""
    import gguf.quants

    qtype = _qtype(kind)
    w = weight.detach().to(torch.float32).contiguous().numpy()
    raw = gguf.quants.quantize(w, qtype)
    return raw, torch.from_numpy(gguf.quants.dequantize(raw, qtype).reshape(w.shape))


def ggml_grid(weight: torch.Tensor, kind: str) -> tuple[GridCodes, torch.Tensor]:
    raw, deq = ggml_roundtrip(weight, kind)
    out_f, in_f = weight.shape
    blocks = raw.reshape(out_f * in_f // BLOCK, -1)
    header = 4 if kind.endswith("_1") else 2  # d, or d and m, as float16
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (n_blocks, 1)
    m = blocks[:, 2:4].copy().view(np.float16).astype(np.float32) if header == 4 else np.zeros_like(d)
    x = deq.numpy().reshape(-1, BLOCK)
    with np.errstate(divide="ignore", invalid="ignore"):  # stored nibbles: Q4_0/Q5_0 keep q + 8 / q + 16
        codes = np.where(d == 0, 0, np.rint((x - m) / d)) + OFFSET.get(kind, 0)
    # Compare groups by their stored bytes: any change in d (or m) is a changed group.
    params = torch.from_numpy(blocks[:, :header].astype(np.float32))
    step = torch.from_numpy(np.repeat(np.abs(d), BLOCK, axis=1).reshape(out_f, in_f))
    grid = GridCodes(torch.from_numpy(codes.reshape(out_f, in_f).astype(np.int16)), params, step)
    return grid, deq


class GGMLScheme(Scheme):
    """Fake-quantized GGUF block format over every Linear/Conv1D except lm_head."""

    def __init__(self, kind: str) -> None:
        if kind not in TYPES:
            raise ValueError(kind)
        self.kind, self.bits = kind, TYPES[kind]
        self.name = f"gguf-{kind}"
        self.description = f"llama.cpp GGUF {kind.upper()} (blocks of 32) through gguf.quants"

    def params(self) -> dict:
        return {"method": "gguf", "type": self.kind.upper(), "block_size": BLOCK, "library": f"gguf {installed_version('gguf')}",
                "scale_dtype": "float16", "skipped_modules": "lm_head (output embeddings) and embeddings"}

    def _check(self, model) -> None:
        _qtype(self.kind)
        bad = [n for n, m in quantizable_modules(model) if out_in_weight(m).shape[1] % BLOCK]
        if bad:
            raise SchemeUnavailable(f"GGUF blocks need input sizes divisible by {BLOCK}; {bad[0]} is not")

    def build(self, checkpoint, calibration=None):
        self._check(checkpoint.model)
        model = copy.deepcopy(checkpoint.model)
        fake_quantize(model, lambda w: ggml_roundtrip(w, self.kind)[1].to(w.dtype))
        return model

    def codes(self, weight: torch.Tensor) -> GridCodes | None:
        if weight.shape[1] % BLOCK:
            return None
        return ggml_grid(weight, self.kind)[0]
