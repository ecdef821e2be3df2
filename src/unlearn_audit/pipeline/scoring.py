"""Scores of one variant: per-sample probe outputs in, point estimates with bootstrap intervals out.

Kept apart from the verdict (policy.py), which only reads these numbers. Each registered probe scores
its own outputs (``Probe.score``); the weight forensics against the original become results here too.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .. import stats
from ..probes.base import Estimates, Outputs, ProbeOutput, Result
from ..probes.registry import PROBES
from .types import AuditConfig

# forensics key -> (result metric, the count it is over), as report.json has always named them
_FORENSICS = (("code_overlap", "grid_code_overlap", "n_weights"), ("scale_changed", "grid_scale_changed", "n_groups"),
              ("median_dw_over_step", "median_dw_over_step", "n_weights"))


def index_outputs(outs: Sequence[ProbeOutput]) -> Outputs:
    """Per-sample values keyed (probe, split, metric)."""
    return {(o.probe, o.split, o.metric): o.values for o in outs}


def score_variant(variant: str, outs: Outputs, orig: Outputs, fp32: Outputs | None, reference: stats.Reference,
                  cfg: AuditConfig) -> list[Result]:
    """Every probe's results for ``variant``; ``fp32`` is the fp32 variant's outputs (recovery is measured
    against them), None for fp32 itself or when fp32 was not audited."""
    est = Estimates(variant, cfg.seed, cfg.bootstrap)
    for probe in PROBES.values():
        probe.score(est, outs, orig, fp32, reference)
    return est.results


def forensics_results(variant: str, fx: dict | None) -> list[Result]:
    """The grid-code evidence of Section 5 as results: overlap of codes, changed scales, |ΔW|/Δ."""
    if not fx or fx.get("status") != "measured":
        return []
    return [Result(variant, "weights", metric, fx[key], None, None, fx[n]) for key, metric, n in _FORENSICS]


def nonfinite_scores(variant: str, model: str, outs: Outputs) -> str | None:
    """A finding when any per-document score is NaN or infinite (an overflowing model, an adapter whose
    scale overflowed): a bootstrap would silently drop those documents and decide on the rest."""
    bad = {key: int(np.count_nonzero(~np.isfinite(np.asarray(v, dtype=float)))) for key, v in outs.items()}
    bad = {key: n for key, n in bad.items() if n}
    if not bad:
        return None
    where = ", ".join(f"{p}/{s}/{m}: {n}" for (p, s, m), n in list(bad.items())[:3]) + (", …" if len(bad) > 3 else "")
    return (f"{variant}: the {model} model gave {sum(bad.values())} non-finite per-document score(s) ({where}); "
            "the checks that use them cannot be decided")
