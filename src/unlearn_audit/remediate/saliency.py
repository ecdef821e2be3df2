"""SURE's module-level saliency map (Zhang et al., Section 6.1, Eq. 4–6).

One gradient of the forget loss at the original weights, over the whole forget set; each module i is
scored s_i = ‖∇θ_i L_forget‖_F; the mask keeps m_i = 1 when s_i ≥ the γ-th percentile of the scores
(γ ∈ {90, 95, 99}); only those modules are then unlearned, with a large learning rate, so their weights
move by more than a quantization step while the rest stay bit-identical. A "module" is one nn.Linear
weight (q/k/v/o/gate/up/down of each layer; the output head is excluded, as in quantization).
``per_layer=True`` scores each transformer layer as one unit instead (the norm over its Linears).

The paper's released code applies its mask in an optimizer hook that Hugging Face's Trainer never calls;
here the non-salient modules are frozen with ``requires_grad=False``, which cannot be bypassed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from ..quantize.base import quantizable_modules


@dataclass(frozen=True)
class SaliencyMap:
    scores: dict[str, float]  # unit name -> ‖∇‖_F
    percentile: float
    threshold: float
    selected: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"percentile": self.percentile, "threshold": self.threshold, "selected": list(self.selected),
                "scores": self.scores}


def _unit(name: str, per_layer: bool) -> str:
    if not per_layer:
        return name
    m = re.search(r"(.*\.(?:layers|h)\.\d+)\.", name)
    return m.group(1) if m else name


def select(scores: dict[str, float], percentile: float) -> tuple[float, tuple[str, ...]]:
    """Eq. 5: keep units with s_i ≥ the γ-th percentile of all scores."""
    threshold = float(np.percentile(np.array(list(scores.values())), percentile))
    return threshold, tuple(k for k, v in scores.items() if v >= threshold)


def saliency_map(
    model, forget_batches: Iterable, loss_fn: Callable, percentile: float = 90.0, per_layer: bool = False
) -> SaliencyMap:
    """Accumulate ∇L_forget over all forget batches at the current weights, then score and select."""
    model.zero_grad(set_to_none=True)
    for batch in forget_batches:
        loss_fn(model, batch).backward()
    squares: dict[str, float] = {}
    for name, module in quantizable_modules(model):
        g = module.weight.grad
        sq = 0.0 if g is None else float(g.double().pow(2).sum())
        unit = _unit(name, per_layer)
        squares[unit] = squares.get(unit, 0.0) + sq
    model.zero_grad(set_to_none=True)
    scores = {k: v**0.5 for k, v in squares.items()}
    threshold, selected = select(scores, percentile)
    return SaliencyMap(scores, percentile, threshold, selected)


def freeze_all_but(model, saliency: SaliencyMap, per_layer: bool = False) -> list[str]:
    """requires_grad=False everywhere except the selected modules' weights; returns the trainable names."""
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = []
    for name, module in quantizable_modules(model):
        if _unit(name, per_layer) in saliency.selected:
            module.weight.requires_grad_(True)
            trainable.append(name)
    return trainable
