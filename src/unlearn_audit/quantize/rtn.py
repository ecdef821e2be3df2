"""Round-to-nearest (RTN) weight quantization, exactly as the paper's Eq. 2.

Zhang et al. (ICLR 2025), Eq. 2, after Lin et al.: Q(w) = Δ · Round(w / Δ) with Δ = max|w| / 2^(N-1),
computed per group of weights. The integer code i = Round(w / Δ) lives in [-2^(N-1), 2^(N-1) - 1]
(Section 5), so the single weight equal to +max|w| would round to 2^(N-1) and is clamped to
2^(N-1) - 1: that clamp is part of the definition, not a choice of ours.

Groups run along the input dimension of each output row (the layout of nn.Linear's (out, in) weight;
GPT-2's Conv1D stores (in, out) and is transposed first). When the input size is not a multiple of the
group size (SmolLM2: 576 = 4 × 128 + 64) the last group of each row is the shorter remainder with its
own absmax; this is what zero-padding the row would give, since padding never changes an absmax.
``group_size=None`` means one group per output channel (per-channel quantization).

The tool writes the dequantized weights into the model ("fake quantization"), so plain transformers
runs the variant and the weights are exactly what a real int kernel would use (stored in the compute
dtype, as such a kernel holds them after dequantizing).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import GridCodes, WeightwiseScheme

PARTIAL_GROUP_RULE = (
    "the last group of each row holds the remainder of the input dimension (e.g. 576 = 4 x 128 + 64) "
    "and gets its own absmax scale, identical to zero-padding the row to a whole group"
)


@dataclass(frozen=True)
class RTNCodes:
    """Integer codes, per-group scales and (asymmetric only) zero points of one (out, in) matrix."""

    codes: torch.Tensor  # int16, same shape as the weight
    scales: torch.Tensor  # float32, (out, n_groups)
    group_size: int  # columns per group (the input size when per-channel)
    zeros: torch.Tensor | None = None  # int16, (out, n_groups); None for symmetric

    def _expand(self, t: torch.Tensor) -> torch.Tensor:
        return t.repeat_interleave(self.group_size, dim=1)[:, : self.codes.shape[1]]

    def dequantize(self) -> torch.Tensor:
        codes = self.codes.to(torch.float32)
        if self.zeros is not None:
            codes = codes - self._expand(self.zeros).to(torch.float32)
        return codes * self._expand(self.scales)

    def grid(self) -> GridCodes:
        """The forensic view. The zero cell is code 0 when symmetric (0 · Δ = 0) and the group's zero
        point z when asymmetric ((z - z) · Δ = 0; the range always includes 0, so z is a valid code)."""
        params = self.scales if self.zeros is None else torch.stack([self.scales, self.zeros.to(torch.float32)], -1)
        zero = torch.zeros((), dtype=self.codes.dtype, device=self.codes.device) if self.zeros is None else self._expand(self.zeros)
        return GridCodes(self.codes, params.reshape(self.scales.numel(), -1), self._expand(self.scales), zero)


def rtn_groups(weight: torch.Tensor, group_size: int | None) -> tuple[torch.Tensor, int]:
    """(out, n_groups, g) groups of an (out, in) matrix; a short last group is zero-padded (see above).

    When the input size is a multiple of the group size this is a view of the float32 weight (no
    copy; callers must not write into it); otherwise the padded copy lives on the weight's device."""
    w = weight.detach().to(torch.float32)
    out_features, in_features = w.shape
    g = in_features if group_size is None else group_size
    n_groups = -(-in_features // g)
    if in_features == n_groups * g:
        return w.reshape(out_features, n_groups, g), g
    padded = torch.zeros(out_features, n_groups * g, dtype=torch.float32, device=w.device)
    padded[:, :in_features] = w
    return padded.view(out_features, n_groups, g), g


def _check_bits(bits: int) -> None:
    if not 2 <= bits <= 8:
        raise ValueError(f"RTN bits must be between 2 and 8, got {bits}")


def _group_params(grouped: torch.Tensor, bits: int, symmetric: bool):
    """Per-group (scales, safe, zeros, lo, hi) of (..., g) groups: Eq. 2's Δ (or the affine Δ and
    zero point), Δ with 0 replaced by 1, and the code range. ``zeros`` is float32 and never -0.0.

    The symmetric absmax is max(|min|, |max|) from two reductions instead of |w|.amax(), which would
    write a full-size |w| first: the value is the same, and an all-zero group gets +0 either way.
    (torch.aminmax is one pass, but on CPU several times slower than amin and amax together.)
    A divisor that is not a power of two is a tensor on the weight's device, never a Python number:
    CUDA divides by a CPU scalar as a multiplication by its reciprocal, which can differ in the last
    bit from the division the CPU does; dividing by a power of two is exact either way."""
    if symmetric:
        lo_v, hi_v = grouped.amin(dim=-1), grouped.amax(dim=-1)
        scales = torch.maximum(lo_v.abs(), hi_v.abs()) / 2 ** (bits - 1)
        lo, hi, zeros = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1, None
    else:
        lo_v = grouped.amin(dim=-1).clamp(max=0)
        hi_v = grouped.amax(dim=-1).clamp(min=0)
        scales = (hi_v - lo_v) / torch.full((), 2**bits - 1, dtype=torch.float32, device=grouped.device)
        lo, hi = 0, 2**bits - 1
    # An all-zero group has Δ = 0; its codes are 0 (or z) whatever the scale, so use 1 to avoid 0/0.
    safe = torch.where(scales == 0, torch.ones_like(scales), scales)
    if not symmetric:
        # + 0.0 turns a -0.0 (round of a tiny negative) into +0.0, as the int16 zero point stores it.
        zeros = torch.clamp(-torch.round(lo_v / safe), lo, hi).add_(0.0)
    return scales, safe, zeros, lo, hi


def rtn_codes(weight: torch.Tensor, bits: int, group_size: int | None = 128, symmetric: bool = True) -> RTNCodes:
    """Quantize an (out, in) matrix with RTN; returns codes and scales (and zero points if asymmetric).

    Symmetric is Eq. 2. Asymmetric follows PyTorch's affine convention (torchao's ``MappingType.ASYMMETRIC``):
    the group's range is widened to include 0, Δ = (max - min) / (2^N - 1), the zero point
    z = -round(min / Δ) is an integer, and codes are clamp(round(w / Δ) + z, 0, 2^N - 1). A padded
    short group is unaffected, because the range already includes 0. Every tensor lives on the
    weight's device.
    """
    _check_bits(bits)
    out_features, in_features = weight.shape
    grouped, g = rtn_groups(weight, group_size)
    scales, safe, zeros, lo, hi = _group_params(grouped, bits, symmetric)
    shift = 0 if zeros is None else zeros.unsqueeze(2)
    codes = torch.clamp(torch.round(grouped / safe.unsqueeze(2)) + shift, lo, hi)
    codes = codes.view(out_features, -1)[:, :in_features].to(torch.int16)
    return RTNCodes(codes, scales, g, None if zeros is None else zeros.to(torch.int16))


def _fake_quantize_groups(out: torch.Tensor, grouped: torch.Tensor, bits: int, symmetric: bool) -> None:
    """Write Q(w) of (rows, n, g) groups into ``out`` (same shape, may be a strided view), in place.

    The arithmetic is that of ``rtn_codes(...).dequantize()``, step for step, in one buffer: w / Δ
    (a true division, as there, not a multiplication by 1/Δ, so every tie rounds alike), round half to
    even, + z (+ 0.0 when symmetric: it turns round's -0.0 into the +0.0 an int16 code converts back
    to, so that a zero weight keeps its sign bit too), clamp, - z, times Δ."""
    scales, safe, zeros, lo, hi = _group_params(grouped, bits, symmetric)
    torch.div(grouped, safe.unsqueeze(-1), out=out)
    out.round_().add_(0.0 if zeros is None else zeros.unsqueeze(-1)).clamp_(lo, hi)
    if zeros is not None:
        out.sub_(zeros.unsqueeze(-1))
    out.mul_(scales.unsqueeze(-1))


def rtn_quantize(weight: torch.Tensor, bits: int, group_size: int | None = 128, symmetric: bool = True) -> torch.Tensor:
    """The dequantized weight Q(w) of Eq. 2 (or its asymmetric form), same shape and dtype as ``weight``,
    on its device; bit for bit ``rtn_codes(weight, ...).dequantize()``.

    This is the path every streamed chunk of a model takes (models/weights.py), so it keeps no codes:
    one output buffer is written in place (``_fake_quantize_groups``), the groups are views of the
    weight, and a short last group is quantized on its own rather than zero-padded (its absmax, or its
    range widened to include 0, is the padded group's, so its values are the same)."""
    _check_bits(bits)
    w = weight.detach().to(torch.float32)
    out_features, in_features = w.shape
    g = in_features if group_size is None else group_size
    full = in_features // g * g
    out = torch.empty((out_features, in_features), dtype=torch.float32, device=w.device)
    if full:
        _fake_quantize_groups(out[:, :full].view(out_features, -1, g), w[:, :full].reshape(out_features, -1, g), bits, symmetric)
    if full < in_features:
        _fake_quantize_groups(out[:, full:].unsqueeze(1), w[:, full:].unsqueeze(1), bits, symmetric)
    return out.to(weight.dtype)


class RTNScheme(WeightwiseScheme):
    """Fake-quantized RTN over every Linear/Conv1D except lm_head (see the module docstring)."""

    def __init__(self, bits: int, group_size: int | None = 128, symmetric: bool = True) -> None:
        self.bits = bits
        self.group_size = group_size
        self.symmetric = symmetric
        suffix = "" if group_size == 128 else ("-pc" if group_size is None else f"-g{group_size}")
        self.name = f"rtn-int{bits}{'' if symmetric else '-asym'}{suffix}"
        grouping = "per output channel" if group_size is None else f"groups of {group_size}"
        kind = "symmetric absmax (paper Eq. 2)" if symmetric else "asymmetric min/max with zero point"
        self.description = f"round-to-nearest int{bits}, {kind}, {grouping}"

    def params(self) -> dict:
        scale = (
            "absmax / 2^(bits-1), codes clamped to [-2^(bits-1), 2^(bits-1)-1]" if self.symmetric
            else "(max(w,0) - min(w,0)) / (2^bits - 1), zero point -round(min/scale), codes in [0, 2^bits-1]"
        )
        return {
            "method": "rtn",
            "bits": self.bits,
            "symmetric": self.symmetric,
            "scale": scale,
            "group_size": self.group_size if self.group_size is not None else "per-channel",
            "partial_group": PARTIAL_GROUP_RULE,
            "skipped_modules": "lm_head (output embeddings) and embeddings",
        }

    def quantize_rows(self, w: torch.Tensor) -> torch.Tensor:
        return rtn_quantize(w, self.bits, self.group_size, self.symmetric)

    def codes(self, weight: torch.Tensor) -> GridCodes:
        return rtn_codes(weight, self.bits, self.group_size, self.symmetric).grid()
