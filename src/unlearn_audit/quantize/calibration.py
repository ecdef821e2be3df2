"""Calibration activations for GPTQ and AWQ, one decoder block at a time, in bounded memory.

Both methods need, for every Linear, statistics of its inputs X over calibration text: GPTQ the
Hessian H = 2 XᵀX / n (Frantar et al., Eq. 1), AWQ the mean |x| per input channel (Lin et al.) and the
same XᵀX for its output-error objective. They are gathered block by block (``walk``): forward hooks on
the Linears of one block accumulate the statistics while that block runs alone on the hidden states
the previous block produced, so only one block's statistics are resident at a time and the cost is
linear in depth. Padded positions are
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


def _forward_cut_short(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> None:
    """A forward of the model that a hook may end early with ``_Stop`` once it has what it needs."""
    try:
        model(input_ids=ids, attention_mask=mask, use_cache=False)
    except _Stop:
        pass


def _batches(calibration: list[list[int]], pad_id: int, size: int):
    seqs = [s[:MAX_TOKENS] for s in calibration if len(s) > 1]
    for i in range(0, len(seqs), size):
        yield pad_batch(seqs[i : i + size], pad_id)  # right padding: causal attention keeps real positions exact


def _stats_hooks(model: nn.Module, block: Block, stats: dict[str, "InputStats"], current: dict, stop: bool) -> list:
    """Forward hooks accumulating ``block``'s Linears' input statistics into ``stats``. Linears that read the
    same input tensor (q, k, v; gate, up) form a group; a tensor is recognised by its address, so every
    input seen in a batch is kept alive until the batch ends (``current["alive"]``): a freed activation's
    address can be reused by a later one, which would merge unrelated Linears into one group."""
    modules = dict(model.named_modules())
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
            if stop and name == last:
                raise _Stop
        return fn

    return [modules[n].register_forward_hook(hook(n)) for n in block.names]


def block_stats(model: nn.Module, block: Block, calibration: list[list[int]], pad_id: int,
                batch_size: int = 8) -> dict[str, InputStats]:
    """Input statistics of ``block``'s Linears, with every earlier block as it currently is, from a forward
    of the whole model cut short after the block. Called for every block, that is quadratic in depth:
    ``walk`` is the linear path, and this the fallback for a model whose blocks are not one chain."""
    stats: dict[str, InputStats] = {}
    current = {"mask": None, "seen": {}, "alive": []}
    device = next(model.parameters()).device  # the resident model's: statistics are gathered there
    handles = _stats_hooks(model, block, stats, current, stop=True)
    try:
        with torch.inference_mode():
            for ids, mask in _batches(calibration, pad_id, batch_size):
                ids, mask = ids.to(device), mask.to(device)
                current["mask"], current["seen"], current["alive"] = mask.reshape(-1).bool(), {}, []
                _forward_cut_short(model, ids, mask)
    finally:
        for h in handles:
            h.remove()
        current["alive"].clear()
    return stats


def _chain(model: nn.Module, found: list[Block]) -> list[nn.Module] | None:
    """The block modules when they are the consecutive children ``0..L-1`` of one container (a decoder's
    ``layers``/``h``), which the model runs in that order; else None."""
    modules = dict(model.named_modules())
    parents = {b.prefix.rsplit(".", 1)[0] for b in found}
    if len(parents) != 1 or any(b.prefix not in modules for b in found):
        return None
    parent = parents.pop()
    if [b.prefix for b in found] != [f"{parent}.{i}" for i in range(len(found))]:
        return None
    return [modules[b.prefix] for b in found]


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def walk(model: nn.Module, calibration: list[list[int]], pad_id: int, rerun: bool, batch_size: int = 8):
    """Yield ``(block, stats)`` for every block in order, each block's statistics computed with every
    earlier block as it is when its turn comes, in a number of block forwards linear in depth.

    One forward of the model records, per batch, the arguments each block is called with (its masks and
    position embeddings: a model may give each layer its own mask, sliding-window or full) and the hidden
    states entering the first block. Then each block runs alone on the hidden states the previous one
    produced, with hooks gathering its statistics. The consumer changes the block's weights before asking
    for the next block; with ``rerun`` (GPTQ: later blocks see the quantized prefix) the block is run again
    to produce the next block's inputs, else (AWQ: statistics of the original model) its first outputs
    are used. At 32 layers that is 96 block forwards (64 without ``rerun``), where a forward of the model
    per block, cut after it, costs 528. A model whose blocks are not one chain falls back to ``block_stats``, block by block."""
    found = blocks(model)
    chain = _chain(model, found)
    if chain is None:
        for block in found:
            yield block, block_stats(model, block, calibration, pad_id, batch_size)
        return
    device = next(model.parameters()).device
    batches = [(ids.to(device), mask.to(device)) for ids, mask in _batches(calibration, pad_id, batch_size)]
    calls: list[list] = [[] for _ in chain]  # per block, per batch: (args, kwargs) without the hidden states
    hidden: list[torch.Tensor] = []

    def capture(i: int):
        def fn(module, args, kwargs):
            if i == 0:
                hidden.append(args[0] if args else kwargs["hidden_states"])
            calls[i].append(((None,) + tuple(args[1:]) if args else (), {k: v for k, v in kwargs.items() if k != "hidden_states"}))
            if i == len(chain) - 1:
                raise _Stop  # the last block's arguments are known: nothing after it is needed
        return fn

    handles = [m.register_forward_pre_hook(capture(i), with_kwargs=True) for i, m in enumerate(chain)]
    try:
        with torch.inference_mode():
            for ids, mask in batches:
                _forward_cut_short(model, ids, mask)
    finally:
        for h in handles:
            h.remove()
    if any(len(c) != len(batches) for c in calls) or len(hidden) != len(batches):
        raise RuntimeError("calibration: a decoder block was not called once per batch")

    def run(i: int, b: int) -> torch.Tensor:
        args, kwargs = calls[i][b]
        if args:
            return _first(chain[i](hidden[b], *args[1:], **kwargs))
        return _first(chain[i](hidden_states=hidden[b], **kwargs))

    for i, block in enumerate(found):
        stats: dict[str, InputStats] = {}
        current = {"mask": None, "seen": {}, "alive": []}
        handles = _stats_hooks(model, block, stats, current, stop=False)
        outputs = []
        try:
            with torch.inference_mode():
                for b, (_, mask) in enumerate(batches):
                    current["mask"], current["seen"], current["alive"] = mask.reshape(-1).bool(), {}, []
                    out = run(i, b)
                    if not rerun:
                        outputs.append(out)
        finally:
            for h in handles:
                h.remove()
            current["alive"].clear()
        yield block, stats
        if rerun:
            with torch.inference_mode():
                outputs = [run(i, b) for b in range(len(batches))]
        hidden[:] = outputs


def require(calibration: list[list[int]] | None, method: str) -> None:
    if not calibration:
        raise SchemeUnavailable(f"{method} needs calibration text and none was given")


def pad_id(checkpoint) -> int:
    """The pad id for calibration batches."""
    return checkpoint.tokenizer.pad_token_id if checkpoint.tokenizer.pad_token_id is not None else 0
