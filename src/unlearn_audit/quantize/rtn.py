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

The tool writes the dequantized weights back into an fp32 model ("fake quantization"), so plain
transformers runs the variant on CPU and the weights are exactly what a real int kernel would use.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from .base import GridCodes, Scheme, fake_quantize

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
        params = self.scales if self.zeros is None else torch.stack([self.scales, self.zeros.to(torch.float32)], -1)
        return GridCodes(self.codes, params.reshape(self.scales.numel(), -1), self._expand(self.scales))


def rtn_groups(weight: torch.Tensor, group_size: int | None) -> tuple[torch.Tensor, int]:
    """(out, n_groups, g) view of an (out, in) matrix; a short last group is zero-padded (see above)."""
    w = weight.detach().to(torch.float32)
    out_features, in_features = w.shape
    g = in_features if group_size is None else group_size
    n_groups = -(-in_features // g)
    padded = torch.zeros(out_features, n_groups * g, dtype=torch.float32)
    padded[:, :in_features] = w
    return padded.view(out_features, n_groups, g), g


def rtn_codes(weight: torch.Tensor, bits: int, group_size: int | None = 128, symmetric: bool = True) -> RTNCodes:
    """Quantize an (out, in) matrix with RTN; returns codes and scales (and zero points if asymmetric).

    Symmetric is Eq. 2. Asymmetric follows PyTorch's affine convention (torchao's ``MappingType.ASYMMETRIC``):
    the group's range is widened to include 0, Δ = (max - min) / (2^N - 1), the zero point
    z = -round(min / Δ) is an integer, and codes are clamp(round(w / Δ) + z, 0, 2^N - 1). A padded
    short group is unaffected, because the range already includes 0.
    """
    if not 2 <= bits <= 8:
        raise ValueError(f"RTN bits must be between 2 and 8, got {bits}")
    out_features, in_features = weight.shape
    grouped, g = rtn_groups(weight, group_size)
    if symmetric:
        scales = grouped.abs().amax(dim=2) / 2 ** (bits - 1)
        lo, hi, zeros = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1, None
    else:
        lo_v = grouped.amin(dim=2).clamp(max=0)
        hi_v = grouped.amax(dim=2).clamp(min=0)
        scales = (hi_v - lo_v) / (2**bits - 1)
        lo, hi = 0, 2**bits - 1
    # An all-zero group has Δ = 0; its codes are 0 (or z) whatever the scale, so use 1 to avoid 0/0.
    safe = torch.where(scales == 0, torch.ones_like(scales), scales)
    if not symmetric:
        zeros = torch.clamp(-torch.round(lo_v / safe), lo, hi)
    shift = 0 if zeros is None else zeros.unsqueeze(2)
    codes = torch.clamp(torch.round(grouped / safe.unsqueeze(2)) + shift, lo, hi)
    codes = codes.view(out_features, -1)[:, :in_features].to(torch.int16)
    return RTNCodes(codes, scales, g, None if zeros is None else zeros.to(torch.int16))


def rtn_quantize(weight: torch.Tensor, bits: int, group_size: int | None = 128, symmetric: bool = True) -> torch.Tensor:
    """The dequantized weight Q(w), same shape and dtype as ``weight``."""
    return rtn_codes(weight, bits, group_size, symmetric).dequantize().to(weight.dtype)


class RTNScheme(Scheme):
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

    def build(self, checkpoint, calibration=None):
        model = copy.deepcopy(checkpoint.model)
        fake_quantize(model, lambda w: rtn_quantize(w, self.bits, self.group_size, self.symmetric))
        return model

    def codes(self, weight: torch.Tensor) -> GridCodes:
        return rtn_codes(weight, self.bits, self.group_size, self.symmetric).grid()
