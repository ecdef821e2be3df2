"""Bootstrap confidence intervals for the audit's headline numbers.

Percentile bootstrap, seeded, with documents as the resampling unit (the sample that a data owner's
forget set is drawn from). Two-sample statistics resample each set independently; statistics that
compare two models on the *same* documents (retention, recovery, PrivLeak against a reference) resample
document indices once and apply them to both models, which keeps the pairing and narrows the interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.stats import rankdata

CONFIDENCE = 0.95


def auc_batch(forget: np.ndarray, holdout: np.ndarray) -> np.ndarray:
    """AUC for each row of (B, n_forget) and (B, n_holdout) score matrices (used by the bootstrap)."""
    n_f, n_h = forget.shape[1], holdout.shape[1]
    ranks = rankdata(np.concatenate([forget, holdout], axis=1), axis=1)
    u = ranks[:, n_f:].sum(axis=1) - n_h * (n_h + 1) / 2
    return u / (n_f * n_h)


@dataclass(frozen=True)
class Reference:
    """PrivLeak's reference: a retrained model's per-document scores on the same forget and holdout
    documents (paired with the audited model's in the bootstrap), or a fixed AUC (0.5 when nothing else
    is known, or a published constant such as MUSE's 0.4772 for NEWS)."""

    forget: tuple[float, ...] | None = None
    holdout: tuple[float, ...] | None = None
    fixed: float | None = None


@dataclass(frozen=True)
class Estimate:
    value: float
    ci_low: float
    ci_high: float
    n: int


def _interval(samples: np.ndarray) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - CONFIDENCE) / 2
    lo, hi = np.quantile(samples, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _indices(rng: np.random.Generator, n: int, b: int) -> np.ndarray:
    return rng.integers(0, n, size=(b, n))


EMPTY = Estimate(float("nan"), float("nan"), float("nan"), 0)


def mean(values, rng: np.random.Generator, b: int = 1000) -> Estimate:
    x = np.asarray(values, dtype=float)
    if x.size == 0:  # e.g. every text shorter than the VerbMem prompt; reported as null, judged INCONCLUSIVE
        return EMPTY
    boots = x[_indices(rng, len(x), b)].mean(axis=1)
    return Estimate(float(x.mean()), *_interval(boots), n=len(x))


def difference(a, b_values, rng: np.random.Generator, b: int = 1000) -> Estimate:
    """mean(a) − mean(b) for two independent samples (e.g. forget vs holdout documents)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b_values, dtype=float)
    if x.size == 0 or y.size == 0:
        return EMPTY
    boots = x[_indices(rng, len(x), b)].mean(axis=1) - y[_indices(rng, len(y), b)].mean(axis=1)
    return Estimate(float(x.mean() - y.mean()), *_interval(boots), n=min(len(x), len(y)))


def paired(a, b_values, stat: Callable[[np.ndarray, np.ndarray], np.ndarray], rng, b: int = 1000) -> Estimate:
    """``stat(mean a, mean b)`` over the same documents under two models, resampled jointly."""
    x, y = np.asarray(a, dtype=float), np.asarray(b_values, dtype=float)
    if x.size == 0:
        return EMPTY
    idx = _indices(rng, len(x), b)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(stat(np.array(x.mean()), np.array(y.mean())))
        boots = stat(x[idx].mean(axis=1), y[idx].mean(axis=1))
    return Estimate(value, *_interval(boots), n=len(x))


def auc(forget, holdout, rng: np.random.Generator, b: int = 1000, ref: Reference | None = None) -> tuple[Estimate, Estimate | None]:
    """AUC (MUSE direction) and, when a ``Reference`` is given, PrivLeak.

    With a reference model's per-document scores, both AUCs are recomputed on the same resampled
    documents; with only a fixed reference AUC (0.5 or a published constant) it is held constant.
    """
    f, h = np.asarray(forget, dtype=float), np.asarray(holdout, dtype=float)
    fi, hi = _indices(rng, len(f), b), _indices(rng, len(h), b)
    value = float(auc_batch(f[None], h[None])[0])
    boots = auc_batch(f[fi], h[hi])
    est = Estimate(value, *_interval(boots), n=min(len(f), len(h)))
    if ref is None:
        return est, None
    if ref.forget is not None:
        fr, hr = np.asarray(ref.forget, dtype=float), np.asarray(ref.holdout, dtype=float)
        ref_value = float(auc_batch(fr[None], hr[None])[0])
        ref_boots = auc_batch(fr[fi], hr[hi])
    else:
        ref_value, ref_boots = ref.fixed, np.full(b, ref.fixed)
    with np.errstate(divide="ignore", invalid="ignore"):
        leak_boots = (boots - ref_boots) / ref_boots * 100
    # A reference AUC of 0 (a "reference" that recites the forget set) leaves PrivLeak undefined.
    leak = (value - ref_value) / ref_value * 100 if ref_value else float("nan")
    return est, Estimate(float(leak), *_interval(leak_boots), n=est.n)


def paired_permutation_p(a, b_values, rng: np.random.Generator, b: int = 1000) -> float | None:
    """One-sided p-value that mean(a − b) > 0 on the same documents: a sign-flip permutation test
    (under H0 each paired difference is as likely negative as positive). The +1s keep p > 0."""
    d = np.asarray(a, dtype=float) - np.asarray(b_values, dtype=float)
    if d.size == 0:
        return None
    observed = d.mean()
    signs = rng.choice(np.array([-1.0, 1.0]), size=(b, d.size))
    null = (signs * d).mean(axis=1)
    return float((1 + np.sum(null >= observed - 1e-12)) / (b + 1))
