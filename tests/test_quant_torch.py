"""The fast torch quantizers against their references, bit for bit (sign of zero included).

RTN's in-place path against the plain Eq. 2 expression, the NF4/FP4 rewrite against the code it replaced,
and the torch GGUF formats against llama.cpp's gguf.quants. Equality is checked on the float32 bit
patterns, so a -0.0 where the reference has +0.0 fails too.
"""

import warnings

import numpy as np
import pytest
import torch

from unlearn_audit.quantize.codebook import CODEBOOKS, CodebookScheme, codebook_grid, codebook_quantize
from unlearn_audit.quantize.ggml import TYPES, GGMLScheme, ggml_dequantize_torch, ggml_roundtrip
from unlearn_audit.quantize.registry import get_scheme
from unlearn_audit.quantize.rtn import RTNScheme, rtn_codes, rtn_quantize


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype == torch.float32 and torch.equal(a.view(torch.int32), b.view(torch.int32))


# --- RTN -------------------------------------------------------------------------------------------


def reference_rtn(w: torch.Tensor, bits: int, group_size: int | None, symmetric: bool) -> torch.Tensor:
    """Eq. 2 (and its affine form) written out plainly: zero-pad to whole groups, per-group absmax (or
    range including 0), round half to even, clamp, integer codes, multiply back."""
    out_f, in_f = w.shape
    g = in_f if group_size is None else group_size
    n = -(-in_f // g)
    x = torch.cat([w, torch.zeros(out_f, n * g - in_f)], dim=1).view(out_f, n, g)
    if symmetric:
        scale = x.abs().amax(dim=2, keepdim=True) / 2 ** (bits - 1)
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        mn, mx = x.amin(dim=2, keepdim=True).clamp(max=0), x.amax(dim=2, keepdim=True).clamp(min=0)
        scale = (mx - mn) / (2**bits - 1)
        lo, hi = 0, 2**bits - 1
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    zero = torch.zeros_like(scale) if symmetric else torch.clamp(-torch.round(mn / safe), lo, hi)
    codes = torch.clamp(torch.round(x / safe) + zero, lo, hi).to(torch.int16)
    deq = (codes.to(torch.float32) - zero.to(torch.int16).to(torch.float32)) * scale
    return deq.view(out_f, -1)[:, :in_f].contiguous()


def rtn_matrix(in_features: int = 576) -> torch.Tensor:
    """Llama-like N(0, 0.02) rows plus every edge the fast path could get wrong."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(24, in_features, generator=g) * 0.02
    w[0] = 0.0  # all-zero groups, including the short last one
    w[1, 512:] = 0.0  # an all-zero short group after non-zero ones
    w[2, :128] = torch.linspace(-1, 1, 128)  # values exactly at -absmax and +absmax
    w[3, :128] = -torch.linspace(-1, 1, 128).flip(0)
    w[4] = torch.randint(-255, 256, (in_features,), generator=g).float() / 256  # on a power-of-two absmax,
    w[4, ::32] = 1.0  # multiples of 1/256 include exact half steps (ties) for every bits and group
    w[5] = -w[4]
    w[6] *= 1e-3  # tiny values that round to -0.0 before the int16 cast
    w[6, ::97] = -1.0
    w[7] = w[7].abs()  # all-positive groups (asymmetric: zero point 0)
    w[8] = -w[8].abs()  # all-negative groups
    w[9] *= 1e4  # large magnitudes
    w[10, 3] = -0.0
    return w


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group_size", [128, 64, 32, None])
def test_rtn_fast_path_is_the_plain_formula_bit_for_bit(group_size, symmetric):
    for in_features in (576, 512):  # 576 = 4 x 128 + 64: a short last group (not for 32 or 64)
        w = rtn_matrix(in_features)
        for bits in range(2, 9):
            want = reference_rtn(w, bits, group_size, symmetric)
            assert bits_equal(rtn_quantize(w, bits, group_size, symmetric), want), (in_features, bits)
            assert bits_equal(rtn_codes(w, bits, group_size, symmetric).dequantize(), want), (in_features, bits)


def test_rtn_grid_holds_ties_and_negative_zeros_so_the_test_above_can_fail():
    """The matrix really exercises the two details a faster formula would most likely lose."""
    w = rtn_matrix()
    x = w[4:6, :128] / (w[4:6, :128].abs().amax(dim=1, keepdim=True) / 8)
    assert not torch.equal(torch.round(x), torch.floor(x + 0.5))  # half to even vs half up
    assert (torch.round(w[6] / (w[6].abs().amax() / 8)).view(torch.int32) == torch.tensor(-0.0).view(torch.int32)).any()


def test_rtn_codes_are_unchanged_and_short_groups_match_padding():
    w = rtn_matrix()
    for bits, group_size, symmetric in [(4, 128, True), (3, 128, False), (8, None, False), (2, 32, True)]:
        c = rtn_codes(w, bits, group_size, symmetric)
        g = w.shape[1] if group_size is None else group_size
        n = -(-w.shape[1] // g)
        x = torch.cat([w, torch.zeros(w.shape[0], n * g - w.shape[1])], 1).view(w.shape[0], n, g)
        if symmetric:
            scale = x.abs().amax(dim=2) / 2 ** (bits - 1)
            assert c.zeros is None
        else:
            mn, mx = x.amin(dim=2).clamp(max=0), x.amax(dim=2).clamp(min=0)
            scale = (mx - mn) / (2**bits - 1)
            safe = torch.where(scale == 0, torch.ones_like(scale), scale)
            assert torch.equal(c.zeros, torch.clamp(-torch.round(mn / safe), 0, 2**bits - 1).to(torch.int16))
        assert bits_equal(c.scales, scale) and c.codes.dtype == torch.int16 and c.codes.shape == w.shape


def test_rtn_keeps_the_input_and_its_dtype():
    w = rtn_matrix(512)
    before = w.clone()
    rtn_quantize(w, 4, 128)
    rtn_codes(w, 4, 128)  # groups are a view of w here: nothing may write into it
    assert torch.equal(w, before)
    half = w.to(torch.bfloat16)
    assert rtn_quantize(half, 4, 128).dtype == torch.bfloat16
    assert torch.equal(rtn_quantize(half, 4, 128), reference_rtn(half.float(), 4, 128, True).to(torch.bfloat16))
    transposed = w.t().contiguous().t()  # a GPT-2 Conv1D weight as models/weights.py passes it
    assert bits_equal(rtn_quantize(transposed, 4, 128), reference_rtn(w, 4, 128, True))


# --- NF4 / FP4 -------------------------------------------------------------------------------------


def reference_codebook(weight: torch.Tensor, kind: str, blocksize: int):
    """codebook_grid as it was before it moved to the weight's device (CPU only, always padded)."""
    code = torch.tensor(CODEBOOKS[kind], dtype=torch.float32)
    w = weight.reshape(-1)
    n = w.numel()
    n_blocks = -(-n // blocksize)
    padded = torch.zeros(n_blocks * blocksize)
    padded[:n] = w
    blocks = padded.view(n_blocks, blocksize)
    absmax = blocks.abs().amax(dim=1)
    scaled = blocks * (1.0 / absmax.clamp(min=1e-38)).unsqueeze(1)
    if n % blocksize:
        scaled[-1] = blocks[-1] / absmax[-1].clamp(min=1e-38)
    idx = torch.bucketize(torch.clamp(scaled, -1, 1), (code[:-1] + code[1:]) / 2)
    deq = (code[idx] * absmax.unsqueeze(1)).reshape(-1)[:n].view_as(weight)
    step = (absmax.unsqueeze(1) * ((code[-1] - code[0]) / (len(code) - 1))).expand(-1, blocksize).reshape(-1)[:n].view_as(weight)
    return idx.reshape(-1)[:n].view_as(weight).to(torch.int16), absmax.unsqueeze(1), step, deq


def midpoint_pair(kind: str) -> tuple[float, float]:
    """(a, x): a block absmax and a value for which x / a is exactly a codebook midpoint (a tie: the
    lower cell) while x * (1 / a) lands one ulp above it (the upper cell)."""
    code = torch.tensor(CODEBOOKS[kind])
    mids = (code[:-1] + code[1:]) / 2
    a = torch.linspace(0.5, 4, 20001)
    for m in mids[mids > 0]:
        x = m * a
        hit = (x / a == m) & (x * (torch.ones_like(a) / a) > m)
        if hit.any():
            i = int(hit.nonzero()[0, 0])
            return float(a[i]), float(x[i])
    raise AssertionError("no such pair")


@pytest.mark.parametrize("kind", ["nf4", "fp4"])
def test_codebook_results_are_unchanged(kind):
    code = torch.tensor(CODEBOOKS[kind])
    for shape, blocksize in (((64, 576), 64), ((100, 70), 64), ((32, 96), 32)):  # (100, 70): a short last block
        w = torch.randn(*shape, generator=torch.Generator().manual_seed(3)) * 0.02
        w[0] = 0.0  # zero blocks
        w[1, :32] = ((code[:-1] + code[1:]) / 2).repeat(3)[:32]  # values on the midpoints (absmax 1 in the block)
        w[1, 0] = 1.0
        if shape == (100, 70):  # full blocks multiply by 1/absmax, the short last one divides (bitsandbytes)
            w[2, :2] = w[99, 46:48] = torch.tensor(midpoint_pair(kind))
        codes, params, step, deq = reference_codebook(w, kind, blocksize)
        if shape == (100, 70):
            assert codes[2, 1] == codes[99, 47] + 1  # the same value, one cell apart: the rule is tested
        grid, got = codebook_grid(w, kind, blocksize)
        assert bits_equal(got, deq) and bits_equal(codebook_quantize(w, kind, blocksize), deq)
        assert torch.equal(grid.codes, codes) and bits_equal(grid.params, params) and bits_equal(grid.step, step)
        assert bits_equal(CodebookScheme(kind, blocksize).quantize_rows(w), deq)


# --- GGUF ------------------------------------------------------------------------------------------


def gguf_reference(w: torch.Tensor, kind: str) -> torch.Tensor:
    with warnings.catch_warnings():  # float16 overflow in the huge-magnitude case, as in numpy itself
        warnings.simplefilter("ignore", RuntimeWarning)
        with np.errstate(all="ignore"):
            return ggml_roundtrip(w, kind)[1]


def gguf_matrices():
    g = torch.Generator().manual_seed(5)
    yield "llama N(0, 0.02)", torch.randn(256, 1024, generator=g) * 0.02
    for scale in (1e-9, 1e-6, 1e-3, 1.0, 300.0, 3e4):  # 1e-9: d underflows float16 to 0
        yield f"scale {scale}", torch.randn(32, 256, generator=g) * scale
    yield "per-row scales 1e-8..1e4", torch.randn(128, 256, generator=g) * torch.logspace(-8, 4, 128).unsqueeze(1)
    w = torch.randn(16, 128, generator=g) * 0.02
    w[0] = 0.0  # d == 0: id is 0 and every code is the offset
    w[1, :32] = 0.0
    w[2, :32] = torch.tensor([0.5, -0.5] * 16)  # a magnitude tie: the first (positive) one sets d
    w[3, :32] = torch.tensor([-0.5, 0.5] * 16)  # ...the first (negative) one
    w[4, :32] = (torch.arange(32) - 16) / 16.0  # exact grid points and x.5 ties after scaling
    w[5, :32] = torch.arange(-16, 16) + 0.5  # Q8_0: d = 127 / 127 = 1, so w / d = w: ties everywhere
    w[5, 0] = 127.0
    w[6] = torch.randint(-16, 16, (128,), generator=g).float() / 8 + 1 / 16  # half-way values everywhere
    w[7, :32] = 1.0  # max == min: d == 0 in Q4_1/Q5_1
    w[8] *= 1e-3
    w[8, 7] = -1.0  # a tiny value that rounds to -0 beside a large one
    yield "zeros, ties, half steps", w
    yield "integers", torch.randint(-40, 40, (32, 128), generator=g).float()


@pytest.mark.parametrize("kind", list(TYPES))
def test_gguf_torch_is_gguf_quants_bit_for_bit(kind):
    for name, w in gguf_matrices():
        assert bits_equal(ggml_dequantize_torch(w, kind), gguf_reference(w, kind)), name
    assert bits_equal(GGMLScheme(kind).quantize_rows(w), gguf_reference(w, kind))


@pytest.mark.parametrize("kind", list(TYPES))
def test_gguf_torch_overflowing_float16_scales_match_too(kind):
    """|w| ~ 1e7 puts d (Q8_0, Q4_0, Q5_0) or m (Q4_1, Q5_1) beyond float16: inf, and inf * 0 = NaN."""
    w = torch.randn(16, 128, generator=torch.Generator().manual_seed(6)) * 1e7
    want, got = gguf_reference(w, kind), ggml_dequantize_torch(w, kind)
    assert torch.equal(want.isnan(), got.isnan()) and torch.equal(want.nan_to_num(), got.nan_to_num())


def test_gguf_test_matrices_hit_the_rules_a_port_could_miss():
    """Rounding half away from zero (Q8_0) and the first signed maximum (Q4_0) decide values here, so a
    port using torch.round, or an amax-based d, would fail the test above."""
    w = dict(gguf_matrices())["zeros, ties, half steps"]
    q8 = gguf_reference(w[5:6, :32], "q8_0")
    assert q8[0, 1:].tolist() == [x + 0.5 if x >= 0 else x - 0.5 for x in w[5, 1:32].tolist()]  # away from 0
    assert not torch.equal(torch.round(w[5:6, :32]), q8)  # half to even would differ
    # [0.5, -0.5, ...]: d = 0.5 / -8, so 0.5 is code 0 (exact) and -0.5 clips to code 15 (-0.4375);
    # [-0.5, 0.5, ...] flips both, because the first of the tied magnitudes sets d.
    assert gguf_reference(w[2:4, :32], "q4_0")[:, :2].tolist() == [[0.5, -0.4375], [-0.5, 0.4375]]


def test_gguf_torch_refuses_partial_blocks():
    with pytest.raises(ValueError, match="divisible by 32"):
        ggml_dequantize_torch(torch.zeros(4, 48), "q4_0")


# --- every weightwise preset keeps tensors on the weight's device ---------------------------------

PRESETS = ["rtn-int8", "rtn-int4", "rtn-int4-asym", "rtn-int4-pc", "rtn-int4-g64", "nf4", "fp4",
           "gguf-q8_0", "gguf-q4_0", "gguf-q4_1", "gguf-q5_0", "gguf-q5_1"]


@pytest.mark.parametrize("name", PRESETS)
def test_quantize_rows_allocates_nothing_on_the_cpu(name):
    """On the meta device every tensor has a shape and no data: a tensor made on the CPU and mixed in
    (the old zero padding) cannot be copied from, so this fails without a GPU."""
    scheme = get_scheme(name)
    q = scheme.quantize_rows(torch.empty(128, 576, device="meta"))
    assert q.device.type == "meta" and q.shape == (128, 576) and q.dtype == torch.float32
    if isinstance(scheme, (RTNScheme, CodebookScheme)):  # GGUF codes are gguf.quants' own: numpy, CPU
        grid = scheme.codes(torch.empty(128, 576, device="meta"))
        assert {grid.codes.device.type, grid.params.device.type, grid.step.device.type} == {"meta"}
