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
import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .. import stats
from ..models.base import LanguageModel, TokenScores
from ..stats import auc_batch
from .base import CheckSpec, Column, Prepared, Probe, ProbeOutput, Step, definitions


def min_k(logprobs: np.ndarray, k: float) -> float:
    n = max(1, math.floor(k * len(logprobs)))
    return float(np.mean(np.sort(logprobs)[:n]))


def auc(forget: np.ndarray, holdout: np.ndarray) -> float:
    """P(holdout statistic > forget statistic) + ½ P(tie): the Mann–Whitney form of ROC AUC."""
    return float(auc_batch(np.asarray(forget)[None, :], np.asarray(holdout)[None, :])[0])


def privleak(auc_value: float, auc_ref: float) -> float:
    return (auc_value - auc_ref) / auc_ref * 100.0


def prepare(tokenizer, texts: Sequence[str], max_length: int | None):
    """Token ids per text (BOS included where the tokenizer adds it); returns ids, how many were cut, and
    how many were too short to score (a text of one token has no next-token log-prob to average)."""
    seqs, truncated, short = [], 0, 0
    for text in texts:
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        if len(ids) < 2:
            short += 1
            continue
        if max_length and len(ids) > max_length:
            ids, truncated = ids[:max_length], truncated + 1
        seqs.append(tuple(ids))
    return seqs, truncated, short


def min_k_plus_plus(t: TokenScores, k: float) -> float:
    """Min-K%++ (Zhang et al., ICLR 2025): z_t = (log p(x_t) − μ_t) / σ_t, with μ_t and σ_t the mean and
    standard deviation of log p(·) under the model's own next-token distribution; the mean of the
    ⌊k·n⌋ lowest z. A token with σ = 0 (a one-hot distribution) gets z = 0."""
    sigma = np.where(t.sigma > 0, t.sigma, 1.0)
    z = np.where(t.sigma > 0, (t.logprobs - t.mu) / sigma, 0.0)
    return min_k(z, k)


def loss(t: TokenScores) -> float:
    """LOSS attack (Yeom et al.): the mean token log-likelihood, i.e. minus the cross-entropy."""
    return float(np.mean(t.logprobs))


def zlib_ratio(t: TokenScores, zlib_bytes: int) -> float:
    """zlib attack (Carlini et al., 2021): cross-entropy over zlib-compressed length, negated so that,
    like every statistic here, higher means "looks more like a member"."""
    return -float(-np.mean(t.logprobs)) / max(zlib_bytes, 1)


def scores(token_scores: Sequence[TokenScores], split: str, zlib_bytes: Sequence[int] | None = None) -> list[ProbeOutput]:
    """Every score-based attack from the same forward pass; no attack runs a pass of its own:
    Min-K% and Min-K%++ for every k, LOSS, and zlib (when the compressed text lengths are given)."""
    ks = definitions()["mink"]["ks"]
    outs = [ProbeOutput("mink", split, f"min_k_{round(k * 100)}", tuple(min_k(t.logprobs, k) for t in token_scores)) for k in ks]
    outs += [ProbeOutput("mink", split, f"min_k_pp_{round(k * 100)}", tuple(min_k_plus_plus(t, k) for t in token_scores)) for k in ks]
    outs.append(ProbeOutput("mink", split, "loss", tuple(loss(t) for t in token_scores)))
    if zlib_bytes is not None:
        outs.append(ProbeOutput("mink", split, "zlib", tuple(zlib_ratio(t, z) for t, z in zip(token_scores, zlib_bytes))))
    return outs


def zlib_sizes(tokenizer, sequences) -> list[int]:
    """Compressed byte length of each scored text (decoded from the ids, so truncation is respected)."""
    return [len(zlib.compress(tokenizer.decode(list(ids), skip_special_tokens=True).encode("utf-8"))) for ids in sequences]


def run(model: LanguageModel, sequences, split: str, zlib_bytes: Sequence[int] | None = None) -> list[ProbeOutput]:
    return scores(model.token_scores(sequences), split, zlib_bytes)


def headline(defs: dict | None = None) -> str:
    """The Min-K% statistic that AUC and PrivLeak are reported for (MUSE's ``forget_holdout_Min-40%``).
    ``defs`` is a report's recorded probe definitions, so a report is read with the k it was made with."""
    return f"min_k_{headline_percent(defs)}"


def headline_percent(defs: dict | None = None) -> int:
    """k of the headline statistic, in percent (40 for MUSE's Min-40%)."""
    return round((defs or definitions())["mink"]["headline_k"] * 100)


@dataclass(frozen=True)
class MinKItems:
    """One split's scored texts: token ids, and each text's zlib-compressed length for the zlib attack."""

    sequences: tuple[tuple[int, ...], ...]
    zlib_bytes: tuple[int, ...]


class MinK(Probe):
    name = "mink"
    paper = "Min-K% Prob (Shi et al., 2024) with MUSE's AUC and PrivLeak; Zhang et al. (ICLR 2025) Eq. 13"
    steps = (Step("forget", "evidence"), Step("holdout", "evidence"))
    checks = (CheckSpec("privleak", "privleak", "privleak_abs_max", True, f"PrivLeak (Min-K% {headline_percent()})", "memorisation",
                        ("auc", "privleak")),)
    columns = (Column("auc", f"AUC (Min-{headline_percent()}%)"), Column("original_auc", "original's AUC"), Column("privleak", "PrivLeak %", 1))

    def prepare(self, tokenizer, data, cfg, context_length, notes) -> Prepared:
        items = {}
        for split, ts in (("forget", data.forget), ("holdout", data.holdout)):
            seqs, cut, short = prepare(tokenizer, ts.texts, context_length)
            if cut:
                notes.append(f"mink: {cut} {split} text(s) longer than the context ({context_length}) were truncated")
            if short:
                notes.append(f"mink: {short} {split} text(s) of fewer than two tokens have nothing to score and were left out")
            items[split] = MinKItems(tuple(seqs), tuple(zlib_sizes(tokenizer, seqs)))
        return Prepared(items)

    def run(self, model, tokenizer, items: MinKItems, split) -> list[ProbeOutput]:
        return run(model, items.sequences, split, items.zlib_bytes)

    def score(self, est, outs, orig, fp32, reference) -> None:
        """AUC for every attack; for the headline statistic also PrivLeak against ``reference`` and the
        original's AUC under the same scheme."""
        top, b = headline(), est.resamples
        for metric in [key[2] for key in outs if key[:2] == ("mink", "forget")]:  # Min-K%, Min-K%++, LOSS, zlib
            f, h = outs.get(("mink", "forget", metric)), outs.get(("mink", "holdout", metric))
            if f is None or h is None:
                continue
            auc_est, leak = stats.auc(f, h, est.rng("auc", metric), b, reference if metric == top else None)
            est.add("mink", f"auc_{metric}", auc_est)
            if metric == top:
                est.add("mink", "auc", auc_est)
                est.add("mink", "privleak", leak)
                if ("mink", "forget", metric) in orig:
                    est.add("mink", "original_auc", stats.auc(orig["mink", "forget", metric], orig["mink", "holdout", metric],
                                                              est.rng("auc", "orig"), b)[0])
