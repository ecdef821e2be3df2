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

from .base import Scheme, fake_quantize

PARTIAL_GROUP_RULE = (
    "the last group of each row holds the remainder of the input dimension (e.g. 576 = 4 x 128 + 64) "
    "and gets its own absmax scale, identical to zero-padding the row to a whole group"
)


@dataclass(frozen=True)
class RTNCodes:
    """Integer codes and per-group scales of one (out, in) weight matrix."""

    codes: torch.Tensor  # int16, same shape as the weight
    scales: torch.Tensor  # float32, (out, n_groups)
    group_size: int  # columns per group (the input size when per-channel)

    def dequantize(self) -> torch.Tensor:
        expanded = self.scales.repeat_interleave(self.group_size, dim=1)[:, : self.codes.shape[1]]
        return self.codes.to(torch.float32) * expanded


def rtn_codes(weight: torch.Tensor, bits: int, group_size: int | None = 128) -> RTNCodes:
    """Quantize an (out, in) matrix with symmetric absmax RTN (Eq. 2); returns codes and scales."""
    if not 2 <= bits <= 8:
        raise ValueError(f"RTN bits must be between 2 and 8, got {bits}")
    w = weight.detach().to(torch.float32)
    out_features, in_features = w.shape
    g = in_features if group_size is None else group_size
    n_groups = -(-in_features // g)
    padded = torch.zeros(out_features, n_groups * g, dtype=torch.float32)
    padded[:, :in_features] = w
    grouped = padded.view(out_features, n_groups, g)
    absmax = grouped.abs().amax(dim=2)
    scales = absmax / 2 ** (bits - 1)
    # An all-zero group has Δ = 0; its codes are 0 whatever the scale, so use 1 to avoid 0/0.
    safe = torch.where(scales == 0, torch.ones_like(scales), scales)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    codes = torch.clamp(torch.round(grouped / safe.unsqueeze(2)), lo, hi)
    codes = codes.view(out_features, n_groups * g)[:, :in_features].to(torch.int16)
    return RTNCodes(codes=codes, scales=scales, group_size=g)


def rtn_quantize(weight: torch.Tensor, bits: int, group_size: int | None = 128) -> torch.Tensor:
    """The dequantized weight Q(w) of Eq. 2, same shape and dtype as ``weight``."""
    return rtn_codes(weight, bits, group_size).dequantize().to(weight.dtype)


class RTNScheme(Scheme):
    """Fake-quantized RTN over every Linear/Conv1D except lm_head (see the module docstring)."""

    def __init__(self, bits: int, group_size: int | None = 128) -> None:
        self.bits = bits
        self.group_size = group_size
        suffix = "" if group_size == 128 else ("-pc" if group_size is None else f"-g{group_size}")
        self.name = f"rtn-int{bits}{suffix}"
        grouping = "per output channel" if group_size is None else f"groups of {group_size}"
        self.description = f"round-to-nearest int{bits}, symmetric absmax (paper Eq. 2), {grouping}"

    def params(self) -> dict:
        return {
            "method": "rtn",
            "bits": self.bits,
            "symmetric": True,
            "scale": "absmax / 2^(bits-1), codes clamped to [-2^(bits-1), 2^(bits-1)-1]",
            "group_size": self.group_size if self.group_size is not None else "per-channel",
            "partial_group": PARTIAL_GROUP_RULE,
            "skipped_modules": "lm_head (output embeddings) and embeddings",
        }

    def build(self, checkpoint):
        model = copy.deepcopy(checkpoint.model)
        fake_quantize(model, lambda w: rtn_quantize(w, self.bits, self.group_size))
        return model

    def codes(self, weight: torch.Tensor) -> RTNCodes:
        return rtn_codes(weight, self.bits, self.group_size)
