"""Min-K% Prob membership inference (Shi et al., 2024) with MUSE's AUC and PrivLeak conventions.

Min-K%(x) = mean of the ⌊k·n⌋ lowest token log-probs of x (at least one token; MUSE's ``int(n·k)``
would average an empty set for very short texts). Higher means "looks more like a member".

AUC follows MUSE's ``forget_holdout_Min-40%``: forget texts are labelled 0, holdout texts 1, and the
statistic is the Min-K% log-likelihood, so AUC = P(a holdout text's Min-K% likelihood exceeds a forget
text's), ties counting one half. A model that still remembers the forget set gives AUC ≈ 0; one that
never saw it gives AUC ≈ its retrained reference (≈ 0.5 when forget and holdout are alike).
PrivLeak = (AUC − AUC_ref) / AUC_ref × 100 (MUSE; Zhang et al. Eq. 13 — their Section 4.1 prints
AUC(f_unlearn) in the denominator, a typo: Eq. 13 and MUSE's code divide by the retrained model's AUC):
≈ −100 for a memorising model, 0 for a perfect unlearner, positive for over-unlearning.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.stats import rankdata

from ..models.base import LanguageModel, TokenScores
from .base import ProbeOutput, definitions


def min_k(logprobs: np.ndarray, k: float) -> float:
    n = max(1, math.floor(k * len(logprobs)))
    return float(np.mean(np.sort(logprobs)[:n]))


def auc(forget: np.ndarray, holdout: np.ndarray) -> float:
    """P(holdout statistic > forget statistic) + ½ P(tie): the Mann–Whitney form of ROC AUC."""
    return float(auc_batch(np.asarray(forget)[None, :], np.asarray(holdout)[None, :])[0])


def auc_batch(forget: np.ndarray, holdout: np.ndarray) -> np.ndarray:
    """AUC for each row of (B, n_forget) and (B, n_holdout) score matrices (used by the bootstrap)."""
    n_f, n_h = forget.shape[1], holdout.shape[1]
    ranks = rankdata(np.concatenate([forget, holdout], axis=1), axis=1)
    u = ranks[:, n_f:].sum(axis=1) - n_h * (n_h + 1) / 2
    return u / (n_f * n_h)


def privleak(auc_value: float, auc_ref: float) -> float:
    return (auc_value - auc_ref) / auc_ref * 100.0


def prepare(tokenizer, texts: Sequence[str], max_length: int | None):
    """Token ids per text (BOS included where the tokenizer adds it); returns ids and how many were cut."""
    seqs, truncated = [], 0
    for text in texts:
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        if max_length and len(ids) > max_length:
            ids, truncated = ids[:max_length], truncated + 1
        seqs.append(tuple(ids))
    return seqs, truncated


def scores(token_scores: Sequence[TokenScores], split: str) -> list[ProbeOutput]:
    """Every Min-K% from the same forward pass; no attack runs a pass of its own."""
    ks = definitions()["mink"]["ks"]
    return [
        ProbeOutput("mink", split, f"min_k_{round(k * 100)}", tuple(min_k(t.logprobs, k) for t in token_scores))
        for k in ks
    ]


def run(model: LanguageModel, sequences, split: str) -> list[ProbeOutput]:
    return scores(model.token_scores(sequences), split)
