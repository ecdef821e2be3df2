"""Weight-space forensics: how many quantized weights of the unlearned model land in the same grid cell
as the original's (Zhang et al., Section 5: if unlearning moves weights by less than a quantization step,
Q(unlearned) ≈ Q(original) and the forgotten knowledge comes back).

Integer codes are compared, not dequantized floats: every AdamW step moves every weight a little, so each
group's absmax, and with it the scale, shifts slightly; comparing floats would report almost no overlap
even when every code is identical. Groups whose scale changed are counted separately.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Scheme, out_in_weight, quantizable_modules


@dataclass(frozen=True)
class GridOverlap:
    code_overlap: float  # fraction of weights with identical integer codes
    scale_changed: float  # fraction of groups whose scale differs at all
    n_weights: int
    n_groups: int


def grid_overlap(scheme: Scheme, model_a: torch.nn.Module, model_b: torch.nn.Module) -> GridOverlap | None:
    """Overlap of ``scheme``'s codes between two models of the same architecture; None if not exposed."""
    same = total = changed = groups = 0
    mods_b = dict(quantizable_modules(model_b))
    for name, mod_a in quantizable_modules(model_a):
        a = scheme.codes(out_in_weight(mod_a))
        if a is None:
            return None
        b = scheme.codes(out_in_weight(mods_b[name]))
        same += int((a.codes == b.codes).sum())
        total += a.codes.numel()
        changed += int((a.params != b.params).any(dim=1).sum())
        groups += a.params.shape[0]
    if total == 0:
        return None
    return GridOverlap(same / total, changed / groups, total, groups)
