"""Scores of one variant: per-sample probe outputs in, point estimates with bootstrap intervals out.

Kept apart from the verdict (policy.py), which only reads these numbers. Every result draws its
bootstrap from its own seeded stream, so one result's interval never depends on the order of others.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

import numpy as np

from . import stats
from .policy import Result
from .probes.base import ProbeOutput, definitions

if TYPE_CHECKING:
    from .audit import AuditConfig


def _rng(seed: int, *key: str) -> np.random.Generator:
    """A bootstrap stream per result, so one result's interval never depends on the order of others."""
    return np.random.default_rng([seed, zlib.crc32("/".join(key).encode())])


def score_variant(variant: str, outs: dict, orig: dict, fp32: dict | None, ref_scores, cfg: AuditConfig) -> list[Result]:
    b, seed, res = cfg.bootstrap, cfg.seed, []

    def add(probe: str, metric: str, est: stats.Estimate, p_value: float | None = None) -> None:
        res.append(Result(variant, probe, metric, est.value, est.ci_low, est.ci_high, est.n, p_value))

    for probe in ("verbmem", "knowmem"):
        for split in ("forget", "holdout", "retain"):
            if (probe, split) in outs:
                add(probe, split, stats.mean(outs[probe, split], _rng(seed, variant, probe, split), b))
        if (probe, "forget") in outs and (probe, "holdout") in outs:
            rng = _rng(seed, variant, probe, "gap")
            add(probe, "forget_minus_holdout", stats.difference(outs[probe, "forget"], outs[probe, "holdout"], rng, b))
        if (probe, "forget") in orig:
            add(probe, "original_forget", stats.mean(orig[probe, "forget"], _rng(seed, variant, probe, "orig"), b))
            ratio = lambda x, y: x / y  # noqa: E731  retention = M(Q(unlearned)) / M(Q(original))
            add(probe, "retention", stats.paired(outs[probe, "forget"], orig[probe, "forget"], ratio, _rng(seed, variant, probe, "ret"), b))
        if probe == "knowmem" and ("knowmem", "retain") in orig and ("knowmem", "retain") in outs:
            # Table 3's utility: retain KnowMem kept relative to the original under the same scheme.
            rng = _rng(seed, variant, probe, "utility")
            add(probe, "retain_utility", stats.paired(outs[probe, "retain"], orig[probe, "retain"], lambda x, y: x / y, rng, b))
        if fp32 is not None and variant != "fp32" and (probe, "forget") in fp32:
            diff = lambda x, y: x - y  # noqa: E731
            rng = _rng(seed, variant, probe, "rec")
            p = stats.paired_permutation_p(outs[probe, "forget"], fp32[probe, "forget"], _rng(seed, variant, probe, "perm"), b)
            add(probe, "recovery_vs_fp32", stats.paired(outs[probe, "forget"], fp32[probe, "forget"], diff, rng, b), p)
    headline = f"min_k_{round(definitions()['mink']['headline_k'] * 100)}"
    attacks = [key[2] for key in outs if key[:2] == ("mink", "forget")]  # Min-K%, Min-K%++, LOSS, zlib
    for metric in attacks:
        f, h = outs.get(("mink", "forget", metric)), outs.get(("mink", "holdout", metric))
        if f is None or h is None:
            continue
        ref = None
        if metric == headline:
            ref = ref_scores if ref_scores is not None else (None, None, 0.5)
        est, leak = stats.auc(f, h, _rng(seed, variant, "auc", metric), b, ref)
        add("mink", f"auc_{metric}", est)
        if metric == headline:
            add("mink", "auc", est)
            add("mink", "privleak", leak)
            if ("mink", "forget", metric) in orig:
                rng = _rng(seed, variant, "auc", "orig")
                add("mink", "original_auc", stats.auc(orig["mink", "forget", metric], orig["mink", "holdout", metric], rng, b)[0])
    return res


def index_outputs(outs: list[ProbeOutput]) -> dict:
    """Per-sample values keyed (probe, split), or (probe, split, metric) for the Min-K% family."""
    return {((o.probe, o.split) if o.probe != "mink" else (o.probe, o.split, o.metric)): o.values for o in outs}
