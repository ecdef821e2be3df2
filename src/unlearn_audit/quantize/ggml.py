"""llama.cpp's legacy GGUF block formats (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) through ``gguf.quants``.

This is how most people run a released model on a laptop, so it is the quantizer an end user really
deploys. ``gguf.quants`` is llama.cpp's own Python package (pure numpy); its Q4_0 and Q8_0 bytes are
identical to llama.cpp's. Each row is cut into blocks of 32 weights along the input dimension:

- Q8_0: d = absmax / 127, codes round(w / d) in [-127, 127];
- Q4_0 / Q5_0: d = (the signed value of largest magnitude) / -8 (or -16), codes in [0, 15] (or [0, 31]);
- Q4_1 / Q5_1: d = (max - min) / 15 (or 31) and the block minimum m, codes in [0, 15] (or [0, 31]);

with d (and m) stored as float16. The integer codes are read back from the quantized bytes through
the library's own dequantization, ``(x - m) / d``, which is exact for these small integers.

Building a variant does not go through numpy: ``ggml_dequantize_torch`` repeats gguf.quants'
quantize-then-dequantize arithmetic operation for operation in float32 torch, on the weight's device
(tests/test_quant_torch.py holds it to gguf.quants bit for bit), so a model on a GPU is quantized there.

llama.cpp's file types also keep some tensors at other types (Q4_0 files store the output layer as
Q6_K); like the paper, these presets quantize every Linear except the output head and leave the head
and embeddings in full precision. The K-quants (Q4_K_M, Q6_K) need llama.cpp itself: see llamacpp.py.
"""

from __future__ import annotations

import numpy as np
import torch

from ..models.weights import empty_model
from ..versions import installed_version
from .base import GridCodes, SchemeUnavailable, WeightwiseScheme, out_in_weight, quantizable_modules

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
    """The quantized bytes, one row of blocks per output row, and the dequantized float32 weight, by
    gguf.quants itself: numpy, so computed on the CPU and returned there whatever the weight's device
    (the forensic codes of ``ggml_grid`` come from here; building a variant uses the torch twin)."""
    import gguf.quants

    qtype = _qtype(kind)
    w = weight.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()  # numpy: CPU only
    raw = gguf.quants.quantize(w, qtype)
    return raw, torch.from_numpy(gguf.quants.dequantize(raw, qtype).reshape(w.shape))


def ggml_grid(weight: torch.Tensor, kind: str) -> tuple[GridCodes, torch.Tensor]:
    """Codes (the stored integers), per-block d (and m), step |d| and the zero cell of one (out, in) matrix.

    The zero cell is the stored code that dequantizes to 0: 0 for Q8_0, the offset 8 or 16 for
    Q4_0/Q5_0. Q4_1/Q5_1 dequantize to q · d + m with m the block minimum, so in general no code gives 0
    exactly; their zero cell is the code of the grid point nearest 0, clip(rint(-m / d), 0, 15 or 31),
    from the stored float16 d and m (the cell a weight of 0 falls in when the block spans 0, as nearly
    every trained block does; the end code when it does not). A block with d = 0 has every code 0."""
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
    if header == 4:
        with np.errstate(divide="ignore", invalid="ignore"):
            nearest = np.where(d == 0, 0, np.clip(np.rint(-m / d), 0, 2 ** TYPES[kind] - 1))
        zero = torch.from_numpy(np.repeat(nearest, BLOCK, axis=1).reshape(out_f, in_f).astype(np.int16))
    else:
        zero = torch.tensor(OFFSET.get(kind, 0), dtype=torch.int16)
    grid = GridCodes(torch.from_numpy(codes.reshape(out_f, in_f).astype(np.int16)), params, step, zero)
    return grid, deq


def _div(x: torch.Tensor, divisor: float) -> torch.Tensor:
    """x / divisor as a true float32 division on any device (CUDA turns division by a Python number into
    a multiplication by its reciprocal, which can differ from numpy's division in the last bit)."""
    return x / torch.full((), divisor, dtype=torch.float32, device=x.device)


def _inverse(d: torch.Tensor) -> torch.Tensor:
    """gguf.quants' ``id = np.where(d == 0, 0, 1 / d)`` in float32."""
    return torch.where(d == 0, 0.0, torch.div(torch.ones_like(d), d))


def _float16(x: torch.Tensor) -> torch.Tensor:
    """The float32 value of x stored as float16 (round to nearest even, like numpy's astype)."""
    return x.to(torch.float16).to(torch.float32)


def ggml_dequantize_torch(weight: torch.Tensor, kind: str) -> torch.Tensor:
    """Q(w) of an (out, in) matrix under Q8_0, Q4_0, Q4_1, Q5_0 or Q5_1: float32, on the weight's device,
    bit for bit ``gguf.quants.dequantize(gguf.quants.quantize(w))``.

    Each step is gguf.quants' (``quantize_blocks`` then ``dequantize_blocks``), in its order and in
    float32: the codes come from the float32 scale d (and minimum), the weights from d (and m)
    rounded to float16; ``1 / d`` is 0 where d is 0; Q8_0 rounds half away from zero with its
    floor(a) + floor(2 (a - floor(a))) formula (not torch.round, which rounds half to even), the others
    truncate x + 0.5 (+ 8 or 16) and clip; Q4_0/Q5_0 take d from the signed value of largest magnitude
    (the first one in the block on a tie, as numpy's argmax) over -8 or -16. An integer code equal to
    zero dequantizes to +0, as numpy's integer codes do. Packing into bytes is skipped: it is lossless.
    The input size must be a multiple of 32.

    The one exception is a block so small that 1 / d overflows float32 (largest |w|, or range, below
    about 4e-37): numpy then casts inf or NaN to an integer code, which C leaves undefined, so there is
    nothing portable to match (such weights do not occur in trained models)."""
    if kind not in TYPES:
        raise ValueError(kind)
    w = weight.detach().to(torch.float32)
    if w.shape[-1] % BLOCK:
        raise ValueError(f"GGUF blocks need input sizes divisible by {BLOCK}, got {w.shape[-1]}")
    blocks = w.reshape(-1, BLOCK)
    if kind == "q8_0":
        d = _div(torch.maximum(blocks.amin(dim=1, keepdim=True).abs(), blocks.amax(dim=1, keepdim=True).abs()), 127.0)
        x = blocks * _inverse(d)
        x.abs_()
        floored = x.floor()
        x.sub_(floored).mul_(2).floor_().add_(floored)  # np_roundf: |q|, rounded half away from zero
        del floored
        # sign(n) * |q|, then + 0.0: an int8 code has no -0 (np.sign(-0.3) * 0 is -0.0 before the cast).
        q = x.copysign_(blocks).add_(0.0)
        return q.mul_(_float16(d)).view(w.shape)
    levels = 2 ** TYPES[kind] - 1  # 15 or 31
    if kind in OFFSET:  # q4_0, q5_0
        offset = OFFSET[kind]
        q = blocks.abs()
        signed_max = blocks.gather(1, q.argmax(dim=1, keepdim=True))
        d = signed_max / -offset  # a power of two: exact on every device
        torch.mul(blocks, _inverse(d), out=q)  # reuses the |w| buffer
        q.add_(offset + 0.5).trunc_().clamp_(0, levels)
        return q.sub_(offset).mul_(_float16(d)).view(w.shape)
    # q4_1, q5_1
    hi = blocks.amax(dim=1, keepdim=True)
    lo = blocks.amin(dim=1, keepdim=True)
    d = _div(hi - lo, float(levels))
    q = blocks - lo
    q.mul_(_inverse(d)).add_(0.5).trunc_().clamp_(0, levels)
    return q.mul_(_float16(d)).add_(_float16(lo)).view(w.shape)


class GGMLScheme(WeightwiseScheme):
    """Fake-quantized GGUF block format over every Linear/Conv1D except lm_head."""

    def __init__(self, kind: str) -> None:
        if kind not in TYPES:
            raise ValueError(kind)
        self.kind, self.bits = kind, TYPES[kind]
        self.name = f"gguf-{kind}"
        self.description = f"llama.cpp GGUF {kind.upper()} (blocks of 32), gguf.quants' arithmetic in torch"

    def params(self) -> dict:
        return {"method": "gguf", "type": self.kind.upper(), "block_size": BLOCK, "library": f"gguf {installed_version('gguf')}",
                "scale_dtype": "float16", "skipped_modules": "lm_head (output embeddings) and embeddings"}

    def check(self, checkpoint, calibration) -> None:
        _qtype(self.kind)
        shape = empty_model(checkpoint.config, device="meta")  # module shapes, no memory
        bad = [n for n, m in quantizable_modules(shape) if out_in_weight(m).shape[1] % BLOCK]
        if bad:
            raise SchemeUnavailable(f"GGUF blocks need input sizes divisible by {BLOCK}; {bad[0]} is not")

    def quantize_rows(self, w: torch.Tensor) -> torch.Tensor:
        return ggml_dequantize_torch(w, self.kind)

    def codes(self, weight: torch.Tensor) -> GridCodes | None:
        if weight.shape[1] % BLOCK:
            return None
        return ggml_grid(weight, self.kind)[0]
