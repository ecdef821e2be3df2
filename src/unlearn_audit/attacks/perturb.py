"""Recovery attacks beyond quantization: weight perturbations that are known to undo unlearning too.

Like a quantizer, each maps the weights to nearby values that may fall back toward the original
model's; the audit treats them as variants and the policy judges them like schemes.

- ``prune-magnitude-{p}``: global unstructured magnitude pruning: the ⌊p·N⌋ weights of smallest |w|
  over all quantized-module weights together are set to zero (ties broken by position, so exactly
  ⌊p·N⌋ are zeroed; bfloat16 weights tie often); ``prune-layer-{p}`` does the same within each module.
  The cut is found by a streaming radix select on the weights' own device (``smallest_magnitudes``).
- ``noise-{σ}``: Gaussian noise with standard deviation σ times each weight tensor's own standard
  deviation. One draw says little, so the variant is ``draws`` models, one per seed (0, 1, 2), and
  the audit averages each sample's scores over them (``seeded``): every metric is then the expected
  score of a sample under the noise, and the per-sample statistics stay valid.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import torch

from ..quantize.base import Scheme, out_in_weight, quantizable_modules, write_weight


def _magnitude_bits(w: torch.Tensor) -> torch.Tensor:
    """|w| in float32 as int32 bit patterns: for non-negative floats their integer order is the value order,
    so selecting by magnitude becomes selecting integers, digit by digit."""
    return w.detach().to(torch.float32).abs().reshape(-1).view(torch.int32)


def smallest_magnitudes(weights: Callable[[], Iterable[torch.Tensor]], k: int) -> tuple[int, int]:
    """The bit pattern of the k-th smallest |w| over every tensor ``weights()`` yields (k ≥ 1), and how
    many of the weights equal to it are among the k smallest. A radix select, 8 bits per pass: four
    passes over the weights, each holding one tensor's 256-bin histogram, so the whole model is never
    concatenated (a float32 copy of every Linear at once is 26 GB at 7B) and every pass runs on the
    weights' own device."""
    prefix, rank = 0, k
    for shift in (24, 16, 8, 0):
        counts = torch.zeros(256, dtype=torch.int64)
        for w in weights():
            bits = _magnitude_bits(w)
            if shift != 24:  # only the weights whose higher digits are those chosen so far
                bits = bits[(bits >> (shift + 8)) == (prefix >> (shift + 8))]
            counts += torch.bincount(((bits >> shift) & 0xFF).long(), minlength=256).cpu()
        cum = counts.cumsum(0)
        digit = int(torch.searchsorted(cum, torch.tensor(rank)))
        rank -= int(cum[digit - 1]) if digit else 0
        prefix |= digit << shift
    return prefix, rank


def prune_masks(weights: Callable[[], Iterable[torch.Tensor]], fraction: float) -> Iterator[torch.Tensor]:
    """For each tensor, True at the weights pruned: exactly ⌊fraction·N⌋ over all of them together, the
    smallest in magnitude, ties at the cut broken by position (tensor order, then flat index), so the
    result does not depend on a sort's tie order. Each mask is made on its tensor's device."""
    total = sum(w.numel() for w in weights())
    k = int(fraction * total)
    cut, ties = smallest_magnitudes(weights, k) if k else (-1, 0)
    for w in weights():
        bits = _magnitude_bits(w)
        mask = bits < cut
        if ties:
            at = (bits == cut).nonzero().squeeze(1)[:ties]  # one host sync per tensor, not per weight
            mask[at] = True
            ties -= at.numel()
        yield mask.view(w.shape)


class MagnitudePrune(Scheme):
    bits = 32

    def __init__(self, percent: int, per_layer: bool = False) -> None:
        self.percent, self.per_layer = percent, per_layer
        self.name = f"prune-{'layer' if per_layer else 'magnitude'}-{percent}"
        self.description = f"unstructured magnitude pruning of {percent}% of the weights ({'per module' if per_layer else 'global'})"

    def params(self) -> dict:
        return {"method": "prune", "fraction": self.percent / 100, "scope": "per module" if self.per_layer else "global",
                "ties": "broken by position (module order, then row-major index)",
                "skipped_modules": "lm_head (output embeddings) and embeddings"}

    def apply(self, model, checkpoint, calibration) -> None:
        mods = [m for _, m in quantizable_modules(model)]
        groups = [[m] for m in mods] if self.per_layer else [mods]
        for group in groups:
            # masks are computed before any weight of the group is written: they read the unpruned weights
            masks = list(prune_masks(lambda g=group: (out_in_weight(m) for m in g), self.percent / 100))
            for m, mask in zip(group, masks):
                w = out_in_weight(m)
                write_weight(m, w.masked_fill(mask, 0.0))


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
            # drawn on the CPU so a seed gives the same noise on every device; the scale stays on the weight's
            # device (no host sync per module), computed as float(w.std()) * sigma was, in double, then cast
            scale = (w.std().double() * self.sigma).float()
            noise = torch.randn(w.shape, generator=gen).to(w.device) * scale
            write_weight(m, (w + noise).to(m.weight.dtype))
