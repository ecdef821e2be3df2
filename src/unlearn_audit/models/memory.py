"""How much memory an audit takes, and the batch size that fits (``--batch-size auto``).

The audit holds one resident model (models/weights.py) for its whole run. On top of it, a batch of B
sequences of up to T tokens costs B times the bytes of one row, the largest of:

- **scoring** (Min-K%, the log-likelihoods): a forward with no KV cache (``use_cache=False``), inference
  mode, so one layer's activations at a time: the residual stream and its normed copy, q/k/v and the
  attention output, the MLP's gate, up and product, about ``T × (5·H + 2·H_kv·d + 3·I)`` elements; where
  attention materialises its scores (CPU kernels, eager attention) also ``2 × heads × T²``;
- **greedy decoding** (VerbMem, KnowMem): the KV cache, ``2 × L × H_kv × d × T`` elements, counted as if
  the longest text were all prompt and generation, which over-counts MUSE's 32+128-token prompts on
  purpose.

Each element takes the compute dtype's bytes (2 for bfloat16/float16, 4 for float32). The output head
runs per row on at most ``POSITIONS`` positions (models/hf.py), a constant of ``POSITIONS × V × 4 × 3``
bytes. At Llama-2-7B (H 4096, I 11008, 32 layers, no GQA) in bfloat16 on a GPU, on MUSE's 2048-token
documents, a row is 1.0 GiB (the KV term); at Llama-3-8B (GQA, 8 KV heads) 0.25 GiB. With 80 GB and
the 13.5 GB resident 7B, that is a batch of about 50 for Llama-2-7B.

``auto_batch`` divides what is free once the resident model is loaded (``torch.cuda.mem_get_info`` on a
GPU, ``MemAvailable`` on the CPU), less a fifth kept back for the allocator and the variants' own
temporaries, by that row. On a GPU the estimate only sets the start: a batch that still does not fit
is halved on out-of-memory for the rest of the audit (models/hf.py ``BatchSize``). On the CPU a failed
allocation usually ends the process instead, which is why the estimate is conservative there.
"""

from __future__ import annotations

import torch

from ..errors import InputError

MAX_AUTO_BATCH = 64  # past this, a bigger batch buys little on any device and pads more
HEADROOM = 0.8  # of the free memory, the share a batch may take


def _dims(config) -> dict[str, int]:
    """The shape numbers of a transformers config, GPT-2's names included (its attribute map)."""
    hidden = int(config.hidden_size)
    heads = int(config.num_attention_heads)
    inner = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    return {"H": hidden, "I": int(inner), "heads": heads, "kv": int(kv), "d": int(head_dim),
            "L": int(config.num_hidden_layers), "V": int(config.vocab_size)}


def row_bytes(config, tokens: int, dtype_bytes: int, scores_materialised: bool) -> int:
    """Bytes one row of ``tokens`` tokens adds to a batch (see the module's formula)."""
    d = _dims(config)
    scoring = tokens * (5 * d["H"] + 2 * d["kv"] * d["d"] + 3 * d["I"])
    if scores_materialised:
        scoring += 2 * d["heads"] * tokens * tokens
    decoding = 2 * d["L"] * d["kv"] * d["d"] * tokens
    return max(scoring, decoding) * dtype_bytes


def head_bytes(config) -> int:
    """The output head's per-row temporaries: logits, log-probabilities and probabilities in float32."""
    from .hf import POSITIONS

    return POSITIONS * _dims(config)["V"] * 4 * 3


def free_bytes(device: torch.device) -> int:
    """Memory free on ``device`` now: the GPU's by the driver, the CPU's by the kernel's estimate of what
    can be allocated without swapping."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    raise InputError("--batch-size auto: this system does not say how much memory is available (no MemAvailable in "
                     "/proc/meminfo); give the batch size as a number")


def auto_batch(free: int, row: int, head: int = 0, cap: int = MAX_AUTO_BATCH) -> int:
    """The largest batch whose rows fit in ``HEADROOM`` of ``free`` bytes, between 1 and ``cap``."""
    room = HEADROOM * free - head
    return max(1, min(cap, int(room // row) if row > 0 else cap))
