"""The paper's unlearning settings as defaults: what ``unlearn`` and ``remediate`` run when a knob is
not given (Zhang et al., ICLR 2025, Appendix D and Table 6)."""

from __future__ import annotations

import difflib
import math

from ..errors import InputError
from .unlearn import METHODS, UnlearnConfig, training_autocast

LR = 1e-5  # MUSE's and the paper's constant learning rate (Appendix D)
SURE_LR = 1e-4  # SURE unlearns only the salient modules, with a larger rate (Table 6)
TRAIN_DTYPES = ("float32", "bfloat16")
COMPUTE = ("float32", "bfloat16", "float16", "auto")  # --dtype: the arithmetic, whatever the storage

# The paper's settings (Appendix D.1): 10 epochs on NEWS, 5 on BOOKS, and Table 5's retain weight α
# per method; methods without a regularizer (GA, NPO) take none.
PAPER = {
    "paper-news": {"epochs": 10, "alpha": {"ga_gdr": 1.0, "ga_klr": 1.0, "npo_gdr": 1.0, "npo_klr": 1.0}},
    "paper-books": {"epochs": 5, "alpha": {"ga_gdr": 100.0, "ga_klr": 2.0, "npo_gdr": 300.0, "npo_klr": 2.0}},
}
# With SURE (Table 6): lr 1e-4, and α and the saliency percentile γ per method.
PAPER_SURE = {"ga_gdr": (400.0, 99.0), "ga_klr": (20.0, 90.0), "npo_gdr": (300.0, 99.0), "npo_klr": (20.0, 90.0)}


def preset_defaults(preset: str | None, method: str, sure: bool) -> dict:
    """Epochs, α and γ (``saliency_percentile``) for ``--preset``; the tool's own defaults without one.
    A flag given on the command line overrides its preset value."""
    if preset is None:
        return {"epochs": 5, "alpha": 1.0, "saliency_percentile": 90.0}
    if preset not in PAPER:
        raise InputError(f"--preset must be one of {', '.join(PAPER)}, got {preset!r}")
    alpha = PAPER[preset]["alpha"].get(method, 1.0)
    percentile = 90.0
    if sure and method in PAPER_SURE:
        alpha, percentile = PAPER_SURE[method]
    return {"epochs": PAPER[preset]["epochs"], "alpha": alpha, "saliency_percentile": percentile}


def unlearn_config(method: str, lr: float | None, sure: bool, epochs: int, steps: int | None, batch_size: int,
                   alpha: float, beta: float, seed: int, n_forget: int, train_dtype: str = "float32", dtype: str = "auto",
                   device: str = "cpu", grad_accum: int = 1) -> UnlearnConfig:
    """An UnlearnConfig from the command line's knobs: ``steps`` defaults to ``epochs`` passes over the
    forget set, ``lr`` to the paper's rate for the method (1e-5, or 1e-4 with SURE). α = 1 is Table 5's
    NEWS value. ``dtype`` (--dtype) is the arithmetic: with float32 storage, the autocast dtype
    (``training_autocast``); with bfloat16 storage, bfloat16 arithmetic or float32 on bfloat16 values
    (``bf16_compute``). Values that cannot train are refused here."""
    if method not in METHODS:
        close = difflib.get_close_matches(method, METHODS, n=1)
        raise InputError(f"unknown method {method!r}" + (f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(METHODS)}"))
    if steps is None:
        steps = epochs * -(-n_forget // batch_size)
    lr = lr if lr is not None else (SURE_LR if sure else LR)
    for name, value in (("--lr", lr), ("--beta", beta)):
        if not math.isfinite(value) or value <= 0:
            raise InputError(f"{name} must be a positive number, got {value}")
    if not math.isfinite(alpha) or alpha < 0:
        raise InputError(f"--alpha must be a non-negative number, got {alpha}")
    if train_dtype not in TRAIN_DTYPES:
        raise InputError(f"--train-dtype must be float32 or bfloat16, got {train_dtype!r}")
    if dtype not in COMPUTE:
        raise InputError(f"--dtype must be {', '.join(COMPUTE)}, got {dtype!r}")
    if train_dtype == "bfloat16" and dtype == "float16":
        raise InputError("--train-dtype bfloat16 computes in bfloat16 or float32 (--dtype auto, bfloat16 or float32), not float16")
    if isinstance(grad_accum, bool) or not 1 <= grad_accum <= batch_size:
        raise InputError(f"--grad-accum must be between 1 and --batch-size ({batch_size}), got {grad_accum}")
    return UnlearnConfig(method, lr=lr, steps=steps, batch_size=batch_size, alpha=alpha, beta=beta, seed=seed,
                         train_dtype=train_dtype, bf16_compute=dtype if train_dtype == "bfloat16" else "auto",
                         autocast=training_autocast(dtype, device) if train_dtype == "float32" else None, grad_accum=grad_accum)
