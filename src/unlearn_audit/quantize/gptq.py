"""Reference GPTQ (Frantar et al., ICLR 2023), written out in torch because no GPTQ library runs on CPU
here (auto-gptq needs CUDA; gptqmodel needs a newer torch; llmcompressor pins another transformers).

The algorithm is the authors' reference code, step by step:

- H = 2 XᵀX / n from calibration inputs; dead inputs (H_jj = 0) get H_jj = 1 and a zero weight column;
  damping λ = 0.01 · mean(diag H) is added to the diagonal;
- the upper Cholesky factor U of H⁻¹ drives the updates; columns are processed in lazy blocks of 128;
- column j is rounded to the grid, its error e = (w_j − q_j) / U_jj is pushed onto the columns still
  to come (w_k −= e · U_jk), and each lazy block's accumulated error is pushed onto the rest at once;
- with groups, a group's scale is taken when its first column is reached, from the weights as updated
  so far (the reference reads them from the not-yet-refreshed outer matrix inside a lazy block, and so
  does this one); without groups, one scale per row is fixed before the first column;
- no act-order, and blocks are quantized in order, each seeing the already quantized blocks before it
  (calibration inputs of block k are computed with blocks 0..k-1 quantized).

The grid is the paper's Eq. 2 (symmetric absmax, the same as ``rtn-int*``), so gptq-int4 and rtn-int4
differ only by GPTQ's error feedback. ``torch.set_flush_denormal(True)`` is on while it runs:
denormal arithmetic made CPU GPTQ about 25× slower with identical results.
"""

from __future__ import annotations

import torch

from .base import Scheme, out_in_weight, quantizable_modules, write_weight
from .calibration import pad_id, require, walk
from .rtn import rtn_codes

LAZY_BLOCK = 128
DAMP = 0.01


def _scale(w: torch.Tensor, bits: int) -> torch.Tensor:
    return rtn_codes(w, bits, None).scales  # (rows, 1): Eq. 2's Δ over the given columns


def _round(w: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    return torch.clamp(torch.round(w / safe), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1) * scale


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, bits: int, group_size: int | None = 128,
                  damp: float = DAMP, lazy_block: int = LAZY_BLOCK) -> torch.Tensor:
    """GPTQ's dequantized weight for one (out, in) matrix, given its input Hessian (in, in)."""
    W = weight.detach().to(torch.float64).clone()
    H = hessian.detach().to(torch.float64).clone()
    cols = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H.diagonal().add_(damp * torch.mean(torch.diag(H)))  # λI in place: a float64 eye is 1.6 GB at 14336 columns
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Q = torch.zeros_like(W)
    scale = _scale(W, bits) if group_size is None else None
    for i1 in range(0, cols, lazy_block):
        i2 = min(i1 + lazy_block, cols)
        W1, Err1, U1 = W[:, i1:i2].clone(), torch.zeros_like(W[:, i1:i2]), U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            if group_size is not None and (i1 + i) % group_size == 0:
                scale = _scale(W[:, i1 + i : i1 + i + group_size], bits)
            w = W1[:, i]
            q = _round(w.unsqueeze(1), scale, bits).squeeze(1)
            Q[:, i1 + i] = q
            err = (w - q) / U1[i, i]
            W1[:, i:] -= err.unsqueeze(1) @ U1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return Q.to(weight.dtype)


class GPTQScheme(Scheme):
    """Reference GPTQ over every Linear/Conv1D except lm_head, block by block."""

    calibrated = True

    def __init__(self, bits: int, group_size: int | None = 128) -> None:
        self.bits, self.group_size = bits, group_size
        self.name = f"gptq-int{bits}" + ("" if group_size == 128 else ("-pc" if group_size is None else f"-g{group_size}"))
        grouping = "per channel" if group_size is None else f"groups of {group_size}"
        self.description = f"GPTQ int{bits} (reference, Eq. 2 grid, {grouping}), calibrated"

    def params(self) -> dict:
        return {"method": "gptq", "bits": self.bits, "group_size": self.group_size or "per-channel",
                "grid": "symmetric absmax (paper Eq. 2), as rtn-int*", "damp": DAMP, "lazy_block": LAZY_BLOCK,
                "act_order": False, "sequential": "block by block on the already quantized prefix",
                "skipped_modules": "lm_head (output embeddings) and embeddings"}

    def check(self, checkpoint, calibration) -> None:
        require(calibration, "GPTQ")

    def apply(self, model, checkpoint, calibration) -> None:
        pad, modules = pad_id(checkpoint), dict(quantizable_modules(model))
        torch.set_flush_denormal(True)
        try:
            for block, stats in walk(model, calibration, pad, rerun=True):  # the next block sees this one quantized
                for name in block.names:
                    mod = modules[name]
                    if name not in stats:  # never reached by the forward pass: plain RTN is all one can do
                        q = rtn_codes(out_in_weight(mod), self.bits, self.group_size).dequantize()
                    else:
                        q = gptq_quantize(out_in_weight(mod), stats[name].hessian(), self.bits, self.group_size)
                    write_weight(mod, q)
        finally:
            torch.set_flush_denormal(False)
