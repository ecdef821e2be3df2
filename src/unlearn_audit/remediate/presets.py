"""The paper's unlearning settings as defaults: what ``unlearn`` and ``remediate`` run when a knob is
not given (Zhang et al., ICLR 2025, Appendix D and Table 6)."""

from __future__ import annotations

import difflib
import math

from ..errors import InputError
from .unlearn import METHODS, UnlearnConfig

LR = 1e-5  # MUSE's and the paper's constant learning rate (Appendix D)
SURE_LR = 1e-4  # SURE unlearns only the salient modules, with a larger rate (Table 6)


def unlearn_config(method: str, lr: float | None, sure: bool, epochs: int, steps: int | None, batch_size: int,
                   alpha: float, beta: float, seed: int, n_forget: int) -> UnlearnConfig:
    """An UnlearnConfig from the command line's knobs: ``steps`` defaults to ``epochs`` passes over the
    forget set, ``lr`` to the paper's rate for the method (1e-5, or 1e-4 with SURE). α = 1 is Table 5's
    NEWS value. Values that cannot train are refused here."""
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
    return UnlearnConfig(method, lr=lr, steps=steps, batch_size=batch_size, alpha=alpha, beta=beta, seed=seed)
