"""The small training loops the built-in benchmark needs: fine-tuning (to inject the forget set into a
target model, or to train the retrained reference) and GA_GDR unlearning.

GA_GDR (Zhang et al., Appendix B; MUSE): minimise −CE(forget) + α·CE(retain) with AdamW at a constant,
small learning rate: the utility-preserving regime in which the paper finds that 4-bit quantization
brings the forgotten knowledge back (Section 3.2).
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

import torch


def encode(tokenizer, texts: Sequence[str], max_length: int = 256) -> list[list[int]]:
    """Token ids per text with the EOS appended, so a model learns where a document ends."""
    out = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=True)["input_ids"][: max_length - 1]
        out.append(ids + [tokenizer.eos_token_id])
    return out


def _batch(seqs: Sequence[Sequence[int]], pad_id: int):
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        labels[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask, labels


def _ce(model, seqs, pad_id) -> torch.Tensor:
    ids, mask, labels = _batch(seqs, pad_id)
    return model(input_ids=ids, attention_mask=mask, labels=labels).loss


def finetune(
    model, seqs: list[list[int]], pad_id: int, *, lr: float, epochs: int, batch_size: int, seed: int = 0,
    warmup: int = 0, on_step: Callable[[int, int, float], None] = lambda i, n, loss: None,
) -> None:
    """Plain next-token cross-entropy fine-tuning with AdamW (constant lr after a linear warm-up)."""
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
            loss = _ce(model, [seqs[i] for i in order[start : start + batch_size]], pad_id)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            on_step(step, total, loss.item())
    model.eval()


def unlearn_ga_gdr(
    model, forget: list[list[int]], retain: list[list[int]], pad_id: int, *, lr: float, steps: int,
    batch_size: int, alpha: float = 1.0, seed: int = 0,
    on_step: Callable[[int, int, float], None] = lambda i, n, loss: None,
) -> None:
    """GA_GDR: gradient ascent on forget batches plus α × gradient descent on retain batches."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for step in range(steps):
        f = rng.sample(forget, min(batch_size, len(forget)))
        r = rng.sample(retain, min(batch_size, len(retain)))
        loss = -_ce(model, f, pad_id) + alpha * _ce(model, r, pad_id)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        on_step(step + 1, steps, loss.item())
    model.eval()
