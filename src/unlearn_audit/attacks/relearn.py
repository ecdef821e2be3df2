"""The relearning attack (Hu et al., ICLR 2025, "Jogging the memory of unlearned LLMs through targeted
relearning"): a few fine-tuning steps on a small amount of *public, related* text, never the forget set
itself, can bring back knowledge that unlearning only hid. If the audited model regains the forget set
after ``steps`` optimizer steps on the retain set (or ``--relearn-data``), the forgetting was shallow.

``relearn-{steps}``: AdamW, constant learning rate ``lr`` (default 1e-5, the small rates of the relearning
literature), ``batch_size`` sequences per step drawn in a seeded shuffled order and cycled, next-token
cross-entropy. The audit passes the relearning text's token ids (cut to 256 tokens) and records its
source and sha256; it refuses relearning text that shares a document with the forget set.
"""

from __future__ import annotations

import random

import torch

from ..models.batch import make_batch
from ..quantize.base import Scheme, SchemeUnavailable
from ..remediate.losses import cross_entropy

MAX_TOKENS = 256


class Relearn(Scheme):
    bits = 32
    relearns = True  # ``build`` gets the relearning text (retain set or --relearn-data) as token ids

    def __init__(self, steps: int, lr: float = 1e-5, batch_size: int = 4, seed: int = 0) -> None:
        self.steps, self.lr, self.batch_size, self.seed = steps, lr, batch_size, seed
        self.name = f"relearn-{steps}"
        self.description = f"relearning attack: {steps} AdamW steps at lr {lr:g} on public in-domain text (retain or --relearn-data)"

    def params(self) -> dict:
        return {"method": "relearn", "steps": self.steps, "lr": self.lr, "batch_size": self.batch_size, "seed": self.seed,
                "optimizer": "AdamW, constant lr, no weight decay", "max_tokens": MAX_TOKENS,
                "master_weights": "float32: a model computed in bfloat16 or float16 is stepped through a float32 copy "
                                  "of its weights, as mixed-precision training does"}

    def check(self, checkpoint, calibration) -> None:
        if not any(len(s) > 1 for s in calibration or []):
            raise SchemeUnavailable("relearning needs public in-domain text: give --retain or --relearn-data")

    def apply(self, model, checkpoint, calibration) -> None:
        """Fine-tune ``model`` in place. Its weights may be bfloat16 (the resident model of a bfloat16
        audit): AdamW on them directly would round a 1e-5 step away (half a bfloat16 ulp of a weight of
        0.02 is 6e-5), and the attack would look like it failed when it never moved. So low-precision
        weights are stepped through float32 masters and rounded back after each step. Whatever happens,
        even an out-of-memory error, the model leaves frozen, with no gradients or optimizer state."""
        seqs = [s[:MAX_TOKENS] for s in calibration if len(s) > 1]
        params = list(model.parameters())
        masters = [p if p.dtype == torch.float32 else p.detach().float().requires_grad_(True) for p in params]
        pad = checkpoint.tokenizer.pad_token_id
        rng, order = random.Random(self.seed), []
        try:
            for p in params:  # the audited copy may be frozen; its trainable twin is not
                p.requires_grad_(True)
            with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.enable_grad():
                torch.manual_seed(self.seed)
                opt = torch.optim.AdamW(masters, lr=self.lr, weight_decay=0.0)
                model.train()
                for _ in range(self.steps):
                    batch = []
                    while len(batch) < min(self.batch_size, len(seqs)):
                        if not order:
                            order = list(range(len(seqs)))
                            rng.shuffle(order)
                        batch.append(seqs[order.pop()])
                    loss = cross_entropy(model, make_batch(batch, pad))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    del loss
                    _step(opt, params, masters)
        finally:
            model.eval()
            for p in params:
                p.grad = None
                p.requires_grad_(False)
            masters.clear()  # and the optimizer's state with ``opt``, on the way out of this frame


@torch.no_grad()
def _step(opt: torch.optim.Optimizer, params: list, masters: list) -> None:
    """One AdamW step on the masters, with the model's gradients; a low-precision weight is then its
    master rounded (a float32 weight is its own master)."""
    for p, m in zip(params, masters):
        if m is not p:
            m.grad, p.grad = (p.grad.float() if p.grad is not None else None), None
    opt.step()
    for p, m in zip(params, masters):
        if m is not p:
            p.copy_(m)
