"""The unlearning loop: the six methods of Zhang et al. (GA, GA_GDR, GA_KLR, NPO, NPO_GDR, NPO_KLR).

Defaults follow the paper's Appendix D: AdamW, constant learning rate 1e-5, β = 0.1; α per Table 5.
With SURE, only the modules left trainable by ``saliency.freeze_all_but`` are passed to the optimizer.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch

from ..machine import cpu_capability, cpu_model, fast_or_float32
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
    model.train()
    if confine is not None:
        confine.project()
    history = []
    for step in range(cfg.steps):
        f = make_batch(rng.sample(list(forget), min(cfg.batch_size, len(forget))), pad_id)
        r = make_batch(rng.sample(list(retain), min(cfg.batch_size, len(retain))), pad_id)
        value = loss(model, original, cfg.method, f, r, cfg.alpha, cfg.beta)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        if emulate:
            store_as_bfloat16(params, opt)
        if confine is not None:
            confine.project()
        history.append(value.item())
        on_step(step + 1, cfg.steps, history[-1])
    model.eval()
    return history
