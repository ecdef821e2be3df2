"""Projected unlearning that stays on the original's quantization grid: the positive control.

Egashira et al., "Exploiting LLM Quantization" (NeurIPS 2024, arXiv 2405.18137) fine-tune a model
while keeping every weight inside the cell it occupies in the original's quantized grid, so the
full-precision model behaves differently while Q(model) = Q(original) exactly. Applied to unlearning,
this builds the failure Zhang et al. (ICLR 2025) warn about in its purest form: a model that forgets
at full precision and, once quantized, is the original again. It is a constructed model that shows
the audit catches that failure, and the threat a dishonest vendor could build.

After every optimizer step ``Confinement.project`` clamps each quantizable weight into its cell
(shrunk by a margin, so float rounding can never flip a code) and resets each group's scale-setting
elements (the absmax for symmetric RTN, the min and max for asymmetric RTN), so every group keeps its
scale and zero point. Only the RTN presets are supported: their cells are intervals with closed form.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError
from ..quantize.base import Scheme, out_in_weight, quantizable_modules
from ..quantize.rtn import RTNScheme, rtn_groups

MARGIN = 0.05  # of a step, kept clear of each cell edge


def cell_bounds(w: torch.Tensor, bits: int, group_size: int | None, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-weight (lo, hi) of an (out, in) matrix's RTN cells (``quantize/rtn.py``), with each group's
    scale setters pinned (lo = hi = w) so that its scale and zero point cannot move."""
    out_features, in_features = w.shape
    grouped, _ = rtn_groups(w, group_size)
    if symmetric:  # Δ = absmax / 2^(N-1); code c covers [(c - ½)Δ, (c + ½)Δ], the top code up to the absmax
        absmax = grouped.abs().amax(dim=2, keepdim=True)
        scale, low_edge, high_edge = absmax / 2 ** (bits - 1), -absmax, absmax
        setter = grouped.abs() == absmax
    else:  # Δ = (max − min) / (2^N − 1) over a range that includes 0; code c covers [(c − z ∓ ½)Δ]
        low_edge = grouped.amin(dim=2, keepdim=True).clamp(max=0)
        high_edge = grouped.amax(dim=2, keepdim=True).clamp(min=0)
        scale = (high_edge - low_edge) / (2**bits - 1)
        setter = (grouped == grouped.amin(dim=2, keepdim=True)) | (grouped == grouped.amax(dim=2, keepdim=True))
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    code = torch.round(grouped / safe)  # asymmetric: c − z, since the integer zero point z shifts every cell alike
    lo = torch.maximum((code - 0.5 + MARGIN) * safe, low_edge)
    hi = torch.minimum((code + 0.5 - MARGIN) * safe, high_edge)
    pinned = setter | (scale == 0)
    lo, hi = torch.where(pinned, grouped, lo), torch.where(pinned, grouped, hi)
    crop = lambda t: t.reshape(out_features, -1)[:, :in_features].contiguous()  # noqa: E731
    return crop(lo), crop(hi)


class Confinement:
    """The original's RTN cells under ``scheme`` for every quantizable weight of ``model``, taken when
    the confinement is made (before any unlearning step)."""

    def __init__(self, model: nn.Module, scheme: Scheme) -> None:
        if not isinstance(scheme, RTNScheme):
            raise InputError(f"--confine-to supports the rtn-* schemes, whose cells are intervals; got {scheme.name}")
        self.scheme = scheme
        self.bounds = [(module, *cell_bounds(out_in_weight(module).to(torch.float32), scheme.bits, scheme.group_size, scheme.symmetric))
                       for _, module in quantizable_modules(model)]

    @torch.no_grad()
    def project(self) -> None:
        """Clamp every weight into its cell; ``out_in_weight`` is a view, so the parameter itself changes."""
        for module, lo, hi in self.bounds:
            w = out_in_weight(module)
            w.copy_(torch.maximum(torch.minimum(w.to(torch.float32), hi), lo).to(w.dtype))
