"""The probe contract, and what probes produce: per-sample scores and the estimates made from them.

A probe (VerbMem, KnowMem, Min-K%) turns a model into numbers in three steps, each a method below:
``prepare`` tokenizes its data once per audit, ``run`` asks one variant the narrow model interface's
two questions (``token_scores``, ``greedy``) and returns per-sample ``ProbeOutput``s, and ``score``
turns a variant's outputs into ``Result``s with bootstrap intervals. Turning those into verdicts is the
policy's job (``policy.py``): a probe only declares which of its results the policy checks, and which
the report shows. The registry (``probes/registry.py``) lists the probes in the order they run.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .. import stats
from ..resources import load_toml

if TYPE_CHECKING:
    from ..data import TextSet
    from ..models.base import LanguageModel

#: Per-sample values of one model, keyed (probe, split, metric).
Outputs = Mapping[tuple[str, str, str], Sequence[float]]


@dataclass(frozen=True)
class ProbeOutput:
    """One probe on one split for one model: a score per sample, and the generations as evidence."""

    probe: str
    split: str
    metric: str
    values: tuple[float, ...]
    generations: tuple[str, ...] = ()


@dataclass(frozen=True)
class Result:
    """One estimate of one variant: a point value, its 95% bootstrap interval, and the documents behind it."""

    variant: str
    probe: str
    metric: str
    value: float
    ci_low: float | None
    ci_high: float | None
    n: int
    p_value: float | None = None  # one-sided, where a test applies (recovery vs fp32)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Result":
        nan = float("nan")
        num = lambda x: nan if x is None else x  # noqa: E731  JSON null is a value that could not be computed
        return cls(d["variant"], d["probe"], d["metric"], num(d["value"]), num(d["ci_low"]), num(d["ci_high"]),
                   d["n"], d.get("p_value"))


@dataclass(frozen=True)
class Step:
    """One split a probe runs on. ``role`` orders a variant's work and says who needs it:
    "evidence" (the forget set and its membership contrast) and "utility" (retain) run on the original
    model too, for retention; "baseline" (holdout QA and continuations) runs on the audited model only."""

    split: str
    role: str


ROLES = ("evidence", "utility", "baseline")


@dataclass(frozen=True)
class CheckSpec:
    """A result the policy checks: ``policy_field`` names the tolerance in ``Policy``. ``kind`` orders the
    report's checks: memorisation at each precision first, then quantization recovery, then retention.
    ``marks`` are the metrics whose cells the report marks when the check fails."""

    name: str
    metric: str
    policy_field: str
    two_sided: bool
    label: str
    kind: str
    marks: tuple[str, ...] = ()


KINDS = ("memorisation", "recovery", "retention")


@dataclass(frozen=True)
class Column:
    """A headline number the report's summary table shows, with its printed precision."""

    metric: str
    label: str
    digits: int = 3


@dataclass
class Estimates:
    """Collects one variant's results. Every result draws its bootstrap from its own seeded stream (keyed
    by the variant, probe and name), so one result's interval never depends on the order of others."""

    variant: str
    seed: int
    resamples: int
    results: list[Result] = field(default_factory=list)

    def rng(self, *key: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, zlib.crc32("/".join((self.variant, *key)).encode())])

    def add(self, probe: str, metric: str, est: stats.Estimate, p_value: float | None = None) -> None:
        self.results.append(Result(self.variant, probe, metric, est.value, est.ci_low, est.ci_high, est.n, p_value))


class Probe(ABC):
    """A probe: its name, the paper that defines it, the splits it runs on, and the three steps."""

    name: str
    paper: str
    steps: tuple[Step, ...]
    checks: tuple[CheckSpec, ...] = ()
    columns: tuple[Column, ...] = ()

    @abstractmethod
    def prepare(self, tokenizer, data, cfg, context_length: int | None, notes: list[str]) -> Prepared:
        """Tokenize this probe's inputs once per audit (``data`` is the AuditData, ``cfg`` the AuditConfig).
        Splits without data are left out; anything a reader must know goes into ``notes``."""

    @abstractmethod
    def run(self, model: LanguageModel, tokenizer, items: Any, split: str) -> list[ProbeOutput]:
        """Probe one model on one prepared split."""

    @abstractmethod
    def score(self, est: Estimates, outs: Outputs, orig: Outputs, fp32: Outputs | None, reference: stats.Reference) -> None:
        """Add this probe's results for one variant to ``est``: its outputs, the original's under the same
        scheme (empty without ``--original``), the fp32 variant's (None for fp32 itself) and PrivLeak's
        reference."""


@dataclass(frozen=True)
class Prepared:
    """A probe's tokenized inputs per split, and what the report records about how they were made."""

    items: Mapping[str, Any]
    record: Mapping[str, str] = field(default_factory=dict)


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


def score_rouge(probe: str, est: Estimates, outs: Outputs, orig: Outputs, fp32: Outputs | None) -> None:
    """The estimates VerbMem and KnowMem share (Zhang et al. Sec. 4): each split's mean ROUGE-L, the
    forget − holdout gap, the original's forget score and retention M(Q(unlearned)) / M(Q(original)) on
    the same documents, and recovery against fp32 with a paired sign-flip permutation p-value."""
    b, key = est.resamples, lambda split: (probe, split, "rougeL_f1")
    for split in ("forget", "holdout", "retain"):
        if key(split) in outs:
            est.add(probe, split, stats.mean(outs[key(split)], est.rng(probe, split), b))
    if key("forget") in outs and key("holdout") in outs:
        est.add(probe, "forget_minus_holdout", stats.difference(outs[key("forget")], outs[key("holdout")], est.rng(probe, "gap"), b))
    if key("forget") in orig:
        est.add(probe, "original_forget", stats.mean(orig[key("forget")], est.rng(probe, "orig"), b))
        ratio = lambda x, y: x / y  # noqa: E731  retention = M(Q(unlearned)) / M(Q(original))
        est.add(probe, "retention", stats.paired(outs[key("forget")], orig[key("forget")], ratio, est.rng(probe, "ret"), b))
    if probe == "knowmem" and key("retain") in orig and key("retain") in outs:
        # Table 3's utility: retain KnowMem kept relative to the original under the same scheme.
        est.add(probe, "retain_utility", stats.paired(outs[key("retain")], orig[key("retain")], lambda x, y: x / y, est.rng(probe, "utility"), b))
    if fp32 is not None and key("forget") in fp32:
        p = stats.paired_permutation_p(outs[key("forget")], fp32[key("forget")], est.rng(probe, "perm"), b)
        diff = lambda x, y: x - y  # noqa: E731
        est.add(probe, "recovery_vs_fp32", stats.paired(outs[key("forget")], fp32[key("forget")], diff, est.rng(probe, "rec"), b), p)


def rouge_checks(probe: str, label: str) -> tuple[CheckSpec, ...]:
    """The three checks of a ROUGE-scored probe; their tolerances are ``{probe}_gap_max`` and so on."""
    return (
        CheckSpec(probe, "forget_minus_holdout", f"{probe}_gap_max", False, f"{label} forget − holdout", "memorisation",
                  ("forget", "holdout", "forget_minus_holdout")),
        CheckSpec(f"{probe}_recovery", "recovery_vs_fp32", f"{probe}_recovery_max", False, f"{label} quantized − fp32", "recovery",
                  ("recovery_vs_fp32",)),
        CheckSpec(f"{probe}_retention", "retention", f"{probe}_retention_max", False, f"{label} retention", "retention"),
    )


def texts_of(ts: TextSet | None) -> tuple[str, ...]:
    return () if ts is None else ts.texts
