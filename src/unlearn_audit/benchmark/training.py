"""Fine-tuning for the built-in benchmark: injecting the forget set into a target model (MUSE's
f_target, trained on forget + retain) and training the retrained reference (f_retrain, retain only).
Unlearning itself lives in ``remediate.unlearn``.
"""

from __future__ import annotations

import random
from typing import Callable

import torch

from ..models.batch import make_batch
from ..remediate.losses import cross_entropy


def finetune(
    model, seqs: list[list[int]], pad_id: int, *, lr: float, epochs: int, batch_size: int, seed: int = 0,
    warmup: int = 0, autocast: torch.dtype | None = None,
    on_step: Callable[[int, int, float], None] = lambda i, n, loss: None,
) -> None:
    """Plain next-token cross-entropy fine-tuning with AdamW (constant lr after a linear warm-up).

    ``autocast=torch.bfloat16`` is mixed precision as the Hugging Face Trainer's ``bf16=True`` runs it on
    a float32 model: the weights and AdamW state stay float32, the matmuls run in bfloat16. That is 1.6×
    faster per step on a CPU with AVX512-BF16 and tens of times slower on one without, so the demo asks
    for it only where ``machine.computes_fast`` says bfloat16 is fast."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    steps_per_epoch = -(-len(seqs) // batch_size)
    total, step = epochs * steps_per_epoch, 0
    model.train()
    for _ in range(epochs):
        order = list(range(len(seqs)))
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            for group in opt.param_groups:
                group["lr"] = lr * min(1.0, (step + 1) / warmup) if warmup else lr
            with torch.autocast(model.device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
                loss = cross_entropy(model, make_batch([seqs[i] for i in order[start : start + batch_size]], pad_id))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            on_step(step, total, loss.item())
    model.eval()
