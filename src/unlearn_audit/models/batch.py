"""Token ids to padded tensors: the one pad-and-mask builder behind scoring, generation, calibration and
training, and ``encode``, which produces the ids that training and unlearning feed it.

Scoring, calibration and training pad on the right: under causal attention a real position never sees
the padding after it, so its logits are exactly those of the unpadded sequence. Greedy generation pads
on the left, so every prompt ends where the new tokens start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


def pad_batch(
    seqs: Sequence[Sequence[int]], pad_id: int, left: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both ``(len(seqs), longest)`` long tensors; the mask is 1 on real
    tokens and 0 on the ``pad_id`` filler, which goes after each sequence, or before it when ``left``."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        span = slice(width - len(s), width) if left else slice(0, len(s))
        ids[row, span] = torch.tensor(s)
        mask[row, span] = 1
    return ids, mask


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor  # -100 where padded


def make_batch(seqs: Sequence[Sequence[int]], pad_id: int) -> Batch:
    """A right-padded training batch whose labels are the ids, with -100 (cross-entropy's ignore_index)
    on padding so that filler never counts towards a loss."""
    ids, mask = pad_batch(seqs, pad_id)
    return Batch(ids, mask, ids.masked_fill(mask == 0, -100))


def encode(tokenizer, texts: Sequence[str], max_length: int = 256) -> list[list[int]]:
    """Token ids per text with the EOS appended, so a model learns where a document ends."""
    out = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=True)["input_ids"][: max_length - 1]
        out.append(ids + [tokenizer.eos_token_id])
    return out
