"""The unlearning loop: the six methods of Zhang et al. (GA, GA_GDR, GA_KLR, NPO, NPO_GDR, NPO_KLR).

Defaults follow the paper's Appendix D: AdamW, constant learning rate 1e-5, β = 0.1; α per Table 5.
With SURE, only the modules left trainable by ``saliency.freeze_all_but`` are passed to the optimizer.
"""

from __future__ import annotations

import random
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch

from ..machine import computes_fast, cpu_capability, cpu_model, fast_or_float32
from ..models.batch import make_batch
from .losses import cross_entropy, ga_loss, kl_to_original, npo_loss

METHODS = {
    "ga": ("ga", None),
    "ga_gdr": ("ga", "gdr"),
    "ga_klr": ("ga", "klr"),
    "npo": ("npo", None),
    "npo_gdr": ("npo", "gdr"),
    "npo_klr": ("npo", "klr"),
}


@dataclass(frozen=True)
class UnlearnConfig:
    method: str = "ga_gdr"
    lr: float = 1e-5
    steps: int = 10
    batch_size: int = 8
    alpha: float = 1.0
    beta: float = 0.1
    seed: int = 0
    # "bfloat16": model and AdamW state stored in bfloat16 with no float32 master copy, as the paper's runs
    # had them (MUSE models loaded in bf16, HF Trainer with bf16=True). An update below half a bfloat16 ulp
    # (~|w|/512) then rounds away, so unlearning moves only the smallest weights: the ones 4-bit grids
    # round to zero. Where the device has no fast bfloat16, storage is emulated (``bf16_compute``).
    train_dtype: str = "float32"
    # With train_dtype bfloat16: "auto" (bfloat16 arithmetic where the device computes it fast, else
    # float32 with bfloat16 storage emulated), or either path forced, to compare them (bench/paper_numerics).
    bf16_compute: str = "auto"
    # With train_dtype float32: the matmuls' dtype under autocast (None: float32 throughout; "bfloat16" or
    # "float16": mixed precision on float32 master weights, as the HF Trainer's bf16=True / fp16=True, the
    # latter with loss scaling). ``training_autocast`` resolves --dtype into it.
    autocast: str | None = None
    # Micro-batches per optimizer step: the step's forget and retain batches are split in this many parts,
    # each backpropagated on its own and weighted by its share of the batch's tokens (or sequences, for
    # NPO), so the summed gradient is the whole batch's while only one part's activations are held.
    grad_accum: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


def needs_original(method: str) -> bool:
    """NPO's reference log-likelihoods and KLR's KL term both read the frozen original model."""
    forget_kind, regularizer = METHODS[method]
    return forget_kind == "npo" or regularizer == "klr"


def _device(model) -> str:
    return str(next(model.parameters()).device)


def bf16_compute(device: str, asked: str = "auto") -> str:
    """The arithmetic of ``--train-dtype bfloat16`` on ``device``: ``bfloat16`` where it computes it fast
    (``machine.computes_fast``), else ``float32`` with bfloat16 storage emulated by ``store_as_bfloat16``."""
    if asked not in ("auto", "bfloat16", "float32"):
        raise ValueError(f"bf16_compute must be auto, bfloat16 or float32, got {asked!r}")
    if asked != "auto":
        return asked
    return fast_or_float32("bfloat16", device)


def training_autocast(dtype: str, device: str) -> str | None:
    """``--dtype`` of ``unlearn``/``remediate`` for float32-stored training: the autocast dtype, or None for
    float32 throughout. ``auto`` is bfloat16 mixed precision on a GPU that computes it natively and float32
    on a CPU, so a CPU's training (and the tests') does not depend on its instruction set."""
    if dtype == "auto":
        return "bfloat16" if device.startswith("cuda") and computes_fast("bfloat16", device) else None
    return None if dtype == "float32" else dtype


def bf16_numerics(device: str, asked: str = "auto") -> dict:
    """What ``unlearning.json`` records of a ``--train-dtype bfloat16`` run: the stored dtype, the compute
    path, and the CPU that chose it."""
    compute = bf16_compute(device, asked)
    how = ("bfloat16 matmuls and AdamW arithmetic (the paper's numerics)" if compute == "bfloat16" else
           "float32 matmuls and AdamW arithmetic on bfloat16 values; the weights and the AdamW moments are rounded "
           "to bfloat16 (round-to-nearest-even) after every step, so what is stored is bfloat16 at every step")
    return {"stored_dtype": "bfloat16", "compute_dtype": compute, "compute_path": how, "device": device,
            "cpu_model": cpu_model(), "cpu_capability": cpu_capability()}


@torch.no_grad()
def store_as_bfloat16(params, opt: torch.optim.Optimizer) -> None:
    """bfloat16 storage on a float32 computation: after a step, every weight and every AdamW moment is
    replaced by its bfloat16 rounding, exactly what a bfloat16 tensor's ``copy_`` stores. A weight then
    moves only if its update crossed half a bfloat16 ulp, the absorption the paper's Section 5 turns on
    (a pure bfloat16 step also rounds inside AdamW's arithmetic; the README measures the difference)."""
    for p in params:
        p.copy_(p.to(torch.bfloat16))
        for key, v in opt.state.get(p, {}).items():
            if key != "step" and torch.is_tensor(v) and v.is_floating_point():
                v.copy_(v.to(torch.bfloat16))


def loss(model, original, method: str, forget, retain, alpha: float, beta: float) -> torch.Tensor:
    forget_kind, regularizer = METHODS[method]
    value = ga_loss(model, forget) if forget_kind == "ga" else npo_loss(model, original, forget, beta)
    if regularizer == "gdr":
        value = value + alpha * cross_entropy(model, retain)
    elif regularizer == "klr":
        value = value + alpha * kl_to_original(model, original, retain)
    return value


def unlearn(
    model, forget: Sequence[Sequence[int]], retain: Sequence[Sequence[int]], pad_id: int, cfg: UnlearnConfig,
    original=None, on_step: Callable[[int, int, float], None] = lambda i, n, v: None, confine=None,
) -> list[float]:
    """Run ``cfg.steps`` AdamW steps on the trainable parameters; returns the loss per step. With
    ``confine`` (a ``confine.Confinement``), every step is projected back onto the original's grid cells."""
    if cfg.method not in METHODS:
        raise ValueError(f"unknown method {cfg.method!r}; known: {', '.join(METHODS)}")
    if original is None and needs_original(cfg.method):
        raise ValueError(f"{cfg.method} needs the frozen original model")
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    emulate = cfg.train_dtype == "bfloat16" and bf16_compute(_device(model), cfg.bf16_compute) == "float32"
    if cfg.train_dtype == "bfloat16":
        for m in (model, original):
            if m is not None:  # emulated: the bfloat16 values, held in float32
                m.to(torch.bfloat16).to(torch.float32 if emulate else torch.bfloat16)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    kind = torch.device(_device(model)).type
    mixed = cfg.autocast if cfg.train_dtype == "float32" else None
    scope = (lambda: torch.autocast(kind, dtype=getattr(torch, mixed))) if mixed else nullcontext
    scaler = torch.amp.GradScaler(kind) if mixed == "float16" else None  # float16 gradients underflow unscaled
    model.train()
    if confine is not None:
        confine.project()
    history = []
    for step in range(cfg.steps):
        f = rng.sample(list(forget), min(cfg.batch_size, len(forget)))
        r = rng.sample(list(retain), min(cfg.batch_size, len(retain)))
        opt.zero_grad(set_to_none=True)
        value = 0.0
        for part in micro_batches(cfg.method, f, r, cfg.grad_accum):
            with scope():
                term = part_loss(model, original, cfg, part, pad_id)
            (scaler.scale(term) if scaler else term).backward()
            value += term.item()
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        if emulate:
            store_as_bfloat16(params, opt)
        if confine is not None:
            confine.project()
        history.append(value)
        on_step(step + 1, cfg.steps, history[-1])
    model.eval()
    return history


def micro_batches(method: str, forget: list, retain: list, parts: int) -> list[tuple]:
    """The step's batches in ``parts`` slices: ``(forget_part, forget_weight, retain_part, retain_weight)``.
    A term that is a mean over tokens (cross-entropy, KL) weights a slice by its share of the batch's
    predicted tokens, NPO's mean over sequences by its share of sequences, so the weighted sum of the
    slices' losses is the whole batch's loss. One part is the whole batch with weights 1."""
    if parts <= 1:
        return [(forget, 1.0, retain, 1.0)]
    forget_kind, regularizer = METHODS[method]

    def cut(seqs: list, by_tokens: bool) -> list[tuple[list, float]]:
        size = -(-len(seqs) // parts)
        chunks = [seqs[i : i + size] for i in range(0, len(seqs), size)]
        count = (lambda c: sum(len(s) - 1 for s in c)) if by_tokens else len
        total = max(1, count(seqs))
        return [(c, count(c) / total) for c in chunks]

    fs = cut(forget, forget_kind == "ga")
    rs = cut(retain, True) if regularizer else []
    n = max(len(fs), len(rs))
    pad = lambda xs: xs + [(None, 0.0)] * (n - len(xs))  # noqa: E731
    return [(f, wf, r, wr) for (f, wf), (r, wr) in zip(pad(fs), pad(rs))]


def part_loss(model, original, cfg: UnlearnConfig, part: tuple, pad_id: int) -> torch.Tensor:
    """One micro-batch's weighted share of the step's loss (the whole loss for a single part)."""
    f, wf, r, wr = part
    if wf == 1.0 and wr == 1.0:  # the whole batch: exactly ``loss``
        return loss(model, original, cfg.method, make_batch(f, pad_id), make_batch(r, pad_id), cfg.alpha, cfg.beta)
    forget_kind, regularizer = METHODS[cfg.method]
    value = torch.zeros((), device=_device(model))
    if f:
        b = make_batch(f, pad_id)
        value = value + wf * (ga_loss(model, b) if forget_kind == "ga" else npo_loss(model, original, b, cfg.beta))
    if r and regularizer:
        b = make_batch(r, pad_id)
        value = value + wr * cfg.alpha * (cross_entropy(model, b) if regularizer == "gdr" else kl_to_original(model, original, b))
    return value
