"""Reference AWQ (Lin et al., MLSys 2024): activation-aware scales, then group-wise RTN.

Written out in torch because the AWQ libraries do not run here on CPU (autoawq needs IPEX and an old
transformers; llmcompressor's AWQ needs an accelerator). The steps follow the reference code:

- for every set of Linears that read the same input (q/k/v, gate/up, o, down; in GPT-2 each Linear),
  s_x = mean |x| per input channel over the calibration tokens;
- for α on the grid 0, 1/20, ..., 19/20: s = s_x^α, normalised by sqrt(max(s) · min(s)); each Linear
  of the set is quantized as Q(W · diag(s)) · diag(1/s), and the loss is the set's output error
  Σ ‖X Wᵀ − X Ŵᵀ‖², computed exactly from XᵀX;
- the α with the smallest loss wins (α = 0 gives s = 1, which is plain RTN, so the search can never
  do worse than RTN on this objective).

The grid is asymmetric with a zero point, groups of 128 (AWQ's default; ``rtn-int4-asym``'s grid).
Two documented simplifications: the loss is each Linear's own output error, not the output of the
whole attention or MLP block, and the weight-clipping search (``auto_clip``) is not run. AWQ folds 1/s
into the preceding norm or Linear; here Q(W·s)/s is written into the Linear itself, which gives the
same outputs without touching other weights (so a per-Linear diff against the original is meaningful
for the quantized weights but not comparable with a real AWQ checkpoint's stored tensors).
"""

from __future__ import annotations

import torch

from .base import Scheme, out_in_weight, quantizable_modules, write_weight
from .calibration import pad_id, require, walk
from .rtn import rtn_quantize

N_GRID = 20


def _loss(W: torch.Tensor, Wq: torch.Tensor, xtx: torch.Tensor) -> float:
    d = (W - Wq).to(torch.float64)
    return float(torch.einsum("oi,ij,oj->", d, xtx, d))


def awq_search(weights: list[torch.Tensor], xtx: torch.Tensor, mean_abs: torch.Tensor, bits: int,
               group_size: int | None = 128) -> tuple[torch.Tensor, float, list[float]]:
    """The best per-channel scale for Linears sharing one input; returns (s, α, loss per α)."""
    sx = mean_abs.to(torch.float32).clamp(min=1e-8)
    best, losses = None, []
    for i in range(N_GRID):
        alpha = i / N_GRID
        s = sx.pow(alpha)
        s = s / (s.max() * s.min()).sqrt()
        loss = 0.0
        for W in weights:
            Wq = rtn_quantize(W * s, bits, group_size, symmetric=False) / s
            loss += _loss(W, Wq, xtx)
        losses.append(loss)
        if best is None or loss < best[2]:
            best = (s, alpha, loss)
    return best[0], best[1], losses


class AWQScheme(Scheme):
    """Reference AWQ over every Linear/Conv1D except lm_head."""

    calibrated = True

    def __init__(self, bits: int = 4, group_size: int | None = 128) -> None:
        self.bits, self.group_size = bits, group_size
        self.name = f"awq-int{bits}" + ("" if group_size == 128 else f"-g{group_size}")
        self.description = f"AWQ int{bits} (reference scale search, asymmetric, groups of {group_size}), calibrated"

    def params(self) -> dict:
        return {"method": "awq", "bits": self.bits, "group_size": self.group_size, "grid": "asymmetric with zero point",
                "alpha_grid": [i / N_GRID for i in range(N_GRID)], "objective": "each Linear's output error",
                "clip_search": False, "folding": "Q(W·s)/s written into the Linear",
                "skipped_modules": "lm_head (output embeddings) and embeddings"}

    def check(self, checkpoint, calibration) -> None:
        require(calibration, "AWQ")

    def apply(self, model, checkpoint, calibration) -> None:
        pad, modules = pad_id(checkpoint), dict(quantizable_modules(model))
        # AWQ searches scales on the full-precision model (it quantizes only at the end), so all statistics
        # come from the original, block by block, before any weight is replaced.
        plan = []
        for block, stats in walk(model, calibration, pad, rerun=False):
            groups: dict[int, list[str]] = {}
            for name in block.names:
                if name in stats:
                    groups.setdefault(stats[name].group, []).append(name)
            for names in groups.values():
                st = stats[names[0]]
                ws = [out_in_weight(modules[n]).to(torch.float32) for n in names]
                s, _, _ = awq_search(ws, st.xtx, st.mean_abs(), self.bits, self.group_size)
                plan += [(n, s) for n in names]
            plan += [(n, None) for n in block.names if n not in stats]
        for name, s in plan:
            mod = modules[name]
            W = out_in_weight(mod).to(torch.float32)
            q = rtn_quantize(W if s is None else W * s, self.bits, self.group_size, symmetric=False)
            write_weight(mod, q if s is None else q / s)
