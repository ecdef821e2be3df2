"""Recovery attacks beyond quantization: weight perturbations that are known to undo unlearning too.

Like a quantizer, each maps the weights to nearby values that may fall back toward the original
model's; the audit treats them as variants and the policy judges them like schemes.

- ``prune-magnitude-{p}``: global unstructured magnitude pruning: the ⌊p·N⌋ weights of smallest |w|
  over all quantized-module weights together are set to zero (ties broken by position, so exactly
  ⌊p·N⌋ are zeroed); ``prune-layer-{p}`` does the same within each module.
- ``noise-{σ}``: Gaussian noise with standard deviation σ times each weight tensor's own standard
  deviation. One draw says little, so the variant is ``draws`` models, one per seed (0, 1, 2), and
  the audit averages each sample's scores over them (``seeded``): every metric is then the expected
  score of a sample under the noise, and the per-sample statistics stay valid.
"""

from __future__ import annotations

import torch

from ..quantize.base import Scheme, out_in_weight, quantizable_modules, write_weight


def _prune_mask(values: torch.Tensor, fraction: float) -> torch.Tensor:
    """True for the ⌊fraction·n⌋ entries of smallest magnitude (exactly that many)."""
    k = int(fraction * values.numel())
    mask = torch.zeros(values.numel(), dtype=torch.bool)
    if k:
        mask[torch.topk(values.abs().reshape(-1), k, largest=False, sorted=False).indices] = True
    return mask.view_as(values)


class MagnitudePrune(Scheme):
    bits = 32

    def __init__(self, percent: int, per_layer: bool = False) -> None:
        self.percent, self.per_layer = percent, per_layer
        self.name = f"prune-{'layer' if per_layer else 'magnitude'}-{percent}"
        self.description = f"unstructured magnitude pruning of {percent}% of the weights ({'per module' if per_layer else 'global'})"

    def params(self) -> dict:
        return {"method": "prune", "fraction": self.percent / 100, "scope": "per module" if self.per_layer else "global",
                "skipped_modules": "lm_head (output embeddings) and embeddings"}

    def apply(self, model, checkpoint, calibration) -> None:
        mods = quantizable_modules(model)
        weights = [out_in_weight(m).to(torch.float32) for _, m in mods]
        if self.per_layer:
            masks = [_prune_mask(w, self.percent / 100) for w in weights]
        else:
            flat = _prune_mask(torch.cat([w.reshape(-1) for w in weights]), self.percent / 100)
            masks = list(torch.split(flat, [w.numel() for w in weights]))
        for (_, m), w, mask in zip(mods, weights, masks):
            write_weight(m, w.masked_fill(mask.view_as(w), 0.0).to(m.weight.dtype))


class GaussianNoise(Scheme):
    bits = 32

    def __init__(self, sigma: float, seed: int = 0, draws: int = 3) -> None:
        self.sigma, self.seed, self.draws = sigma, seed, draws
        self.name = f"noise-{sigma:g}"
        self.description = f"Gaussian weight noise, σ = {sigma:g} × each tensor's std, scores averaged over {draws} seeds"

    def params(self) -> dict:
        return {"method": "noise", "relative_sigma": self.sigma, "seeds": [self.seed + i for i in range(self.draws)],
                "averaging": "each sample's scores are averaged over the seeds' models",
                "skipped_modules": "lm_head (output embeddings) and embeddings"}

    def seeded(self) -> list["GaussianNoise"]:
        """One single-draw scheme per seed; the audit probes each and averages per sample."""
        return [GaussianNoise(self.sigma, self.seed + i, draws=1) for i in range(self.draws)]

    def apply(self, model, checkpoint, calibration) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        for _, m in quantizable_modules(model):
            w = out_in_weight(m).to(torch.float32)
            noise = torch.randn(w.shape, generator=gen).to(w.device) * (self.sigma * float(w.std()))
            write_weight(m, (w + noise).to(m.weight.dtype))
