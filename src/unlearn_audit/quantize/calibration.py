"""Calibration activations for GPTQ and AWQ, one decoder block at a time, in bounded memory.

Both methods need, for every Linear, statistics of its inputs X over calibration text: GPTQ the
Hessian H = 2 XᵀX / n (Frantar et al., Eq. 1), AWQ the mean |x| per input channel (Lin et al.) and the
same XᵀX for its output-error objective. They are gathered block by block: forward hooks on the
Linears of one block accumulate the statistics, and the forward pass is cut short right after that
block's last Linear, so only one block's statistics are resident at a time. Padded positions are
excluded. Linears that receive the very same input tensor (q/k/v after one norm; gate/up after another)
are reported as one input group, which is what AWQ's shared scale needs.

Calibration text matters (Zhang et al. argue a general corpus does not target the forget domain): the
audit uses the retain set when one is given and otherwise the generic text shipped in
``probes/calibration.jsonl``, and records which.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from ..models.batch import pad_batch
from .base import SchemeUnavailable, quantizable_modules

MAX_TOKENS = 512  # per calibration sequence
_BLOCK = re.compile(r"^(.*?\.\d+)\.")


@dataclass
class InputStats:
    """Running statistics of one Linear's inputs (rows = tokens, columns = input features)."""

    xtx: torch.Tensor
    abs_sum: torch.Tensor
    n: int = 0
    group: int = -1  # index of the shared-input group within the block

    def hessian(self) -> torch.Tensor:
        return 2 * self.xtx / max(self.n, 1)

    def mean_abs(self) -> torch.Tensor:
        return self.abs_sum / max(self.n, 1)


@dataclass
class Block:
    prefix: str
    names: list[str] = field(default_factory=list)


def blocks(model: nn.Module) -> list[Block]:
    """Quantizable modules grouped by decoder block (``model.layers.3``, ``transformer.h.3``), in order."""
    out: dict[str, Block] = {}
    for name, _ in quantizable_modules(model):
        m = _BLOCK.match(name)
        prefix = m.group(1) if m else name
        out.setdefault(prefix, Block(prefix)).names.append(name)
    return list(out.values())


class _Stop(Exception):
    """Raised by the hook on a block's last Linear: nothing after it is needed."""


def _batches(calibration: list[list[int]], pad_id: int, size: int):
    seqs = [s[:MAX_TOKENS] for s in calibration if len(s) > 1]
    for i in range(0, len(seqs), size):
        yield pad_batch(seqs[i : i + size], pad_id)  # right padding: causal attention keeps real positions exact


def block_stats(model: nn.Module, block: Block, calibration: list[list[int]], pad_id: int,
                batch_size: int = 8) -> dict[str, InputStats]:
    """Input statistics of ``block``'s Linears, with every earlier block as it currently is."""
    modules = dict(model.named_modules())
    stats: dict[str, InputStats] = {}
    # Linears that read the same input tensor (q, k, v; gate, up) form a group; a tensor is recognised by
    # its address, so every input seen in a batch is kept alive until the batch ends: a freed activation's
    # address can be reused by a later one, which would merge unrelated Linears into one group.
    current = {"mask": None, "seen": {}, "alive": []}
    last = block.names[-1]

    def hook(name: str):
        def fn(module, args, output):
            x = args[0]
            key = x.data_ptr()
            current["alive"].append(x)
            group = current["seen"].setdefault(key, len(current["seen"]))
            x = x.reshape(-1, x.shape[-1])[current["mask"]].to(torch.float64)
            st = stats.get(name)
            if st is None:
                st = stats[name] = InputStats(torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device),
                                              torch.zeros(x.shape[1], dtype=torch.float64, device=x.device), group=group)
            st.xtx += x.T @ x
            st.abs_sum += x.abs().sum(0)
            st.n += x.shape[0]
            if name == last:
                raise _Stop
        return fn

    device = next(model.parameters()).device  # the resident model's: statistics are gathered there
    handles = [modules[n].register_forward_hook(hook(n)) for n in block.names]
    try:
        with torch.inference_mode():
            for ids, mask in _batches(calibration, pad_id, batch_size):
                ids, mask = ids.to(device), mask.to(device)
                current["mask"], current["seen"], current["alive"] = mask.reshape(-1).bool(), {}, []
                try:
                    model(input_ids=ids, attention_mask=mask, use_cache=False)
                except _Stop:
                    pass
    finally:
        for h in handles:
            h.remove()
        current["alive"].clear()
    return stats


def require(calibration: list[list[int]] | None, method: str) -> None:
    if not calibration:
        raise SchemeUnavailable(f"{method} needs calibration text and none was given")


def pad_id(checkpoint) -> int:
    """The pad id for calibration batches."""
    return checkpoint.tokenizer.pad_token_id if checkpoint.tokenizer.pad_token_id is not None else 0
