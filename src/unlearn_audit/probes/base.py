"""What a probe returns: raw per-sample scores. Turning them into verdicts is the policy's job."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from ..resources import load_toml


@dataclass(frozen=True)
class ProbeOutput:
    """One probe on one split for one model: a score per sample, and the generations as evidence."""

    probe: str
    split: str
    metric: str
    values: tuple[float, ...]
    generations: tuple[str, ...] = ()


def definitions() -> dict:
    """The probe definitions shipped in ``probes/muse.toml``."""
    return load_toml("probes", "muse.toml")


@cache
def rouge_scorer():
    from rouge_score import rouge_scorer as rs

    # MUSE: RougeScorer([...], use_stemmer=False); its headline is rougeL's F-measure.
    return rs.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l_f1(reference: str, prediction: str) -> float:
    """ROUGE-L F1 as MUSE computes it: ``score(target=reference, prediction=output)``."""
    return rouge_scorer().score(reference, prediction)["rougeL"].fmeasure
