"""What the audit's stages hand each other: frozen values, validated when they are made.

This module imports nothing from the pipeline, so every stage (workload, variant, executor, scoring,
cache, report) can name these types without importing another stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..data import PromptSet, QASet, TextSet
from ..errors import InputError
from ..policy import Check, Policy, Variant
from ..probes.base import ProbeOutput, Result
from ..quantize.registry import DEFAULT_SCHEMES, get_scheme

if TYPE_CHECKING:
    from ..models.loading import Checkpoint

SEED_MAX = 2**32 - 1  # numpy's and torch's seeds are unsigned 32-bit words


@dataclass(frozen=True)
class AuditData:
    forget: TextSet
    holdout: TextSet
    retain: TextSet | None = None
    forget_qa: QASet | None = None
    retain_qa: QASet | None = None
    holdout_qa: QASet | None = None
    icl: QASet | None = None
    calibration: TextSet | None = None  # for GPTQ/AWQ; default: retain, else the shipped generic text
    relearn: TextSet | None = None  # for relearn-*: public in-domain text; default: retain (never forget)
    retain_icl: QASet | None = None  # few-shot pairs for the retain split only (MUSE's retain_qa_icl.json); default: icl
    verbmem_forget: PromptSet | None = None  # VerbMem prompts given with their gt (MUSE's verbmem/forget.json)
    source: dict | None = None  # the directory layout the sets came from (--muse): every file, its sha256 and use


COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


def is_device(name: str) -> bool:
    """``cpu``, ``cuda`` or ``cuda:N``: the devices the tool places models on."""
    return name in ("cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit())


@dataclass(frozen=True)
class AuditConfig:
    """Every setting of one audit. Values that cannot run are refused here, so the command line, the
    ``remediate --verify`` re-audit, the demo and library callers all get the same one-line errors."""

    schemes: tuple[str, ...] = DEFAULT_SCHEMES
    default_schemes: bool = False  # the schemes are the tool's defaults, not chosen: one that cannot run caps the verdict (policy.judge)
    seed: int = 0
    bootstrap: int = 1000
    batch_size: int | None = 8  # None: --batch-size auto, resolved once the resident model is loaded (models/memory.py)
    muse_strict: bool = False
    policy: Policy = field(default_factory=Policy)
    policy_source: str = "tool defaults (README, 'The verdict')"
    device: str = "cpu"  # where variants run and are quantized (in float32 arithmetic, chunk by chunk)
    dtype: str = "auto"  # compute dtype of the resident model; auto: pipeline/variant.compute_dtype
    reference_auc: float | None = None  # PrivLeak's reference AUC when no retrained model is available
    backend: str = "reference"  # or "library": run each preset through its library twin where one runs
    allow_pickle: bool = False  # read pickle-only checkpoints with torch.load(weights_only=True)
    limit: int | None = None  # text sets were sampled to this many records each (seeded reservoir, see data.py)
    draft: bool = True  # greedy decoding verifies earlier variants' outputs and shares prompt prefixes (models/decode.py)

    def __post_init__(self) -> None:
        if not self.schemes:
            raise InputError("--schemes is empty")
        if len(set(self.schemes)) != len(self.schemes):
            raise InputError(f"--schemes lists a scheme twice: {','.join(self.schemes)}")
        for name in self.schemes:
            get_scheme(name)  # unknown names get a did-you-mean
        if isinstance(self.seed, bool) or not 0 <= self.seed <= SEED_MAX:
            raise InputError(f"--seed must be between 0 and {SEED_MAX}, got {self.seed}")
        if self.bootstrap < 1 or (self.batch_size is not None and self.batch_size < 1):
            raise InputError("--batch-size and the bootstrap resamples must be at least 1")
        if not is_device(self.device):
            raise InputError(f"--device must be cpu, cuda or cuda:N, got {self.device!r}")
        if self.dtype not in ("auto", *COMPUTE_DTYPES):
            raise InputError(f"--dtype must be auto, {', '.join(COMPUTE_DTYPES)}, got {self.dtype!r}")
        if self.reference_auc is not None and not 0 < self.reference_auc < 1:
            raise InputError("--reference-auc must lie strictly between 0 and 1")
        if self.backend not in ("reference", "library"):
            raise InputError(f"--backend must be 'reference' or 'library', got {self.backend!r}")
        if self.limit is not None and self.limit < 1:
            raise InputError(f"--limit must be at least 1, got {self.limit}")


@dataclass(frozen=True)
class Workload:
    """Everything tokenized once with the audited model's tokenizer, reused by every variant.

    ``prepared`` maps each probe's name to its items per split; ``record`` is what the probes wrote about
    how their prompts were made (the report's config); calibration and relearning text serve the
    schemes that take text."""

    prepared: Mapping[str, Mapping[str, Any]]
    record: Mapping[str, str]
    notes: tuple[str, ...]
    calibration: tuple[tuple[int, ...], ...] = ()
    calibration_source: dict | None = None
    relearn: tuple[tuple[int, ...], ...] = ()  # for relearn-* (retain set, or --relearn-data)
    relearn_source: dict | None = None


@dataclass(frozen=True)
class JobContext:
    """What every variant job needs. The opened checkpoints and the one resident model serve the local
    executor; remote executors reopen the checkpoints in the worker from ``model_dir`` / ``original_dir``
    and build their own resident model."""

    model_dir: str
    original_dir: str | None
    ckpt: Checkpoint
    original: Checkpoint | None
    work: Workload
    cfg: AuditConfig
    on_step: Callable[[str], None]
    resident: Any = None  # the model every variant is filled into (models/weights.py)
    # The original's outputs per scheme already in the shared cache (pipeline/cache.py): not recomputed.
    originals: Mapping[str, tuple[ProbeOutput, ...]] = field(default_factory=dict)
    drafts: Any = None  # earlier variants' greedy outputs (models/decode.DraftBook); None under --no-draft
    batch: Any = None  # the batch size the models start from (models/hf.BatchSize), halved on out-of-memory


@dataclass(frozen=True)
class VariantRun:
    """A built variant's probe outputs, the original's under the same scheme (for retention; empty
    without ``--original``), and the weight forensics against the original (None where not measured)."""

    outputs: tuple[ProbeOutput, ...]
    original_outputs: tuple[ProbeOutput, ...]
    forensics: dict | None
    # per model probed here ("audited", "original"): greedy tokens generated, draft tokens offered and
    # accepted (models/decode.py); None for results read from a cache
    decoding: Mapping[str, Mapping[str, int]] | None = None


@dataclass(frozen=True)
class Skipped:
    """A job whose scheme cannot run where it ran, with the reason (a typed outcome, never a drop)."""

    reason: str


@dataclass(frozen=True)
class Failed:
    """A remote job that could not start (a checkpoint its worker could not read); ends the audit in one line."""

    reason: str


JobOutcome = VariantRun | Skipped | Failed


@dataclass(frozen=True)
class AuditResult:
    """Everything report.json is made from, complete before the report is built: no stage edits the
    report afterwards. ``findings`` are facts about the inputs (changed files, NaN weights) that make the
    verdict INCONCLUSIVE under any policy; ``resumed`` names the variants read from the resume cache."""

    ckpt: Checkpoint
    original: Checkpoint | None
    reference: Checkpoint | None
    data: AuditData
    cfg: AuditConfig
    schemes: tuple  # the Scheme objects, in the order audited
    work: Workload
    reference_info: dict
    variants: tuple[Variant, ...]
    results: tuple[Result, ...]
    checks: tuple[Check, ...]
    verdict: str
    reason: str
    samples: tuple[dict, ...]
    evidence: Mapping[str, tuple[str, ...]]
    forensics: Mapping[str, dict]
    findings: tuple[str, ...]
    timings: Mapping[str, float]
    started: float
    resumed: tuple[str, ...]
    executor: dict
    notes: tuple[str, ...] = ()  # about the run itself, e.g. resume-cache entries ignored
    shared: Mapping[str, Any] | None = None  # what came from the shared cache (None: no shared cache)
    decoding: Mapping[str, Any] = field(default_factory=dict)  # per variant computed here: VariantRun.decoding
