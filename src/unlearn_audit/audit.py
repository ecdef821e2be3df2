"""The audit: load, prepare the workload, score the reference, run every variant, judge, and report.

Zhang et al. (ICLR 2025) show that unlearning with a small learning rate moves weights by less than a
4-bit quantization step, so a quantized "unlearned" model can recite the forget set again. The audit
therefore probes the claimed-unlearned model under every requested scheme, and compares against the
same scheme applied to the original model (retention, the paper's definition) when one is given.
One model is resident for the whole audit, built empty in the compute dtype: the reference is streamed
into it and scored first, then every variant of the audited checkpoint and of the original is streamed
into it in turn, quantized on the way in (models/weights.py). So memory is one model plus one tensor,
whatever the number of checkpoints and schemes. Each stage below is one function; the stages live in
``pipeline/``.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, replace
from typing import Callable

import torch

from . import stats
from .errors import InputError, first_line
from .models.decode import DraftBook
from .models.hf import BatchSize, HFModel, context_length, free_device_memory, out_of_memory
from .models.loading import Checkpoint, load_checkpoint, materialise, open_checkpoint
from .models.weights import fill
from .pipeline.cache import VariantCache, original_key, reference_key, variant_key
from .pipeline.executor import LocalExecutor
from .pipeline.provenance import changed_inputs, provenance_notes
from .pipeline.scoring import forensics_results, index_outputs, nonfinite_scores, score_variant
from .pipeline.types import AuditConfig, AuditData, AuditResult, JobContext, Skipped, VariantRun, Workload
from .pipeline.variant import compute_dtype, resident_model
from .pipeline.workload import build_workload
from .policy import INCONCLUSIVE, Variant, judge
from .probes import mink
from .probes.registry import PROBES
from .quantize.registry import for_backend, get_scheme
from .report.build import build_report
from .steps import Step


@dataclass(frozen=True)
class Models:
    """The opened checkpoints and the one resident model. ``model_dir`` is where the audited weights are
    on disk: MODEL_DIR, or the temporary copy of the merged model with ``--adapter``."""

    ckpt: Checkpoint
    original: Checkpoint | None
    reference: Checkpoint | None
    model_dir: str
    resident: object

    def all(self) -> list[Checkpoint]:
        return [m for m in (self.ckpt, self.original, self.reference) if m is not None]


@dataclass(frozen=True)
class Collected:
    """What the variant stage gathered, in scheme order."""

    variants: tuple[Variant, ...]
    results: tuple
    samples: tuple[dict, ...]
    evidence: dict
    forensics: dict
    resumed: tuple[str, ...]
    findings: tuple[str, ...]  # non-finite per-document scores
    shared: tuple[str, ...]  # schemes whose original outputs came from the shared cache
    decoding: dict  # per variant computed in this run: its VariantRun.decoding


def resolve_schemes(cfg: AuditConfig) -> list:
    return [for_backend(get_scheme(n), cfg.backend, cfg.device) for n in cfg.schemes]


def load_models(model_dir: str, original_dir: str | None, reference_dir: str | None, adapter_dir: str | None,
                cfg: AuditConfig, on_step: Callable[[str], None]) -> tuple[Models, AuditConfig]:
    """The opened checkpoints, the resident model, and ``cfg`` with its compute dtype resolved."""
    on_step("opening the checkpoints")
    ckpt = open_checkpoint(model_dir, "audited", allow_pickle=cfg.allow_pickle)
    original = open_checkpoint(original_dir, "original", allow_pickle=cfg.allow_pickle) if original_dir else None
    reference = open_checkpoint(reference_dir, "reference", allow_pickle=cfg.allow_pickle) if reference_dir else None
    if adapter_dir is not None:  # the merged weights are the audited model, and what every scheme quantizes
        from .models.adapter import merge_adapter

        on_step("merging the adapter")
        ckpt = merge_adapter(load_checkpoint(model_dir, "audited", allow_pickle=cfg.allow_pickle), adapter_dir, cfg.allow_pickle)
        ckpt.model, model_dir = None, ckpt.path  # streamed from the merged copy like any checkpoint
    for other in (original, reference):
        if other is not None and ckpt.tokenizer.get_vocab() != other.tokenizer.get_vocab():
            raise InputError(f"{other.path}: the {other.role} model's tokenizer differs from the audited model's")
    if original is not None and dict(original.source.shapes) != dict(ckpt.source.shapes):
        raise InputError(f"{original.path}: the original model's tensors (names or shapes) differ from the audited model's; "
                         "it is not the model this one was unlearned from")
    cfg = replace(cfg, dtype=compute_dtype(cfg, ckpt))  # --dtype auto, from the audited checkpoint's files
    # The driver scores the reference in it; with a remote executor it may have no GPU of its own.
    here = cfg if cfg.device == "cpu" or torch.cuda.is_available() else replace(cfg, device="cpu", dtype="float32")
    return Models(ckpt, original, reference, model_dir, resident_model(ckpt, here)), cfg


def sized_batch(cfg: AuditConfig, models: Models, data: AuditData) -> tuple[AuditConfig, str]:
    """``cfg`` with ``--batch-size auto`` resolved (models/memory.py) from the memory free beside the
    resident model and the longest forget or holdout text, and the report's note saying how."""
    from .models.memory import auto_batch, free_bytes, head_bytes, row_bytes

    p = next(models.resident.parameters())
    config, tok = models.ckpt.config, models.ckpt.tokenizer
    longest = max((len(ids) for ids in tok([*data.forget.texts, *data.holdout.texts])["input_ids"]), default=1)
    tokens = min(longest, context_length(config) or longest)
    materialised = p.device.type != "cuda" or getattr(config, "_attn_implementation", None) == "eager"
    row, free = row_bytes(config, tokens, p.element_size(), materialised), free_bytes(p.device)
    size = auto_batch(free, row, head_bytes(config))
    return replace(cfg, batch_size=size), (
        f"--batch-size auto: {size} ({free / 2**30:.1f} GiB free on {p.device.type} beside the resident model, "
        f"{row / 2**20:.0f} MiB a row at the longest text's {tokens} tokens in {str(p.dtype).removeprefix('torch.')}; "
        "docs/performance.md)")


def as_computed(cfg: AuditConfig, resident) -> AuditConfig:
    """``cfg`` with the device and dtype ``resident`` really computes in, which the cache key and the report
    must name: with a remote executor, the driver may have no GPU and score on its CPU in float32."""
    p = next(resident.parameters())
    device = cfg.device if p.device.type == torch.device(cfg.device).type else p.device.type
    return replace(cfg, device=device, dtype=str(p.dtype).removeprefix("torch."))


def score_reference(models: Models, data: AuditData, work: Workload, cfg: AuditConfig, shared: VariantCache,
                    on_step, batch: BatchSize | None = None) -> tuple[stats.Reference, dict]:
    """PrivLeak's reference: the retrained model's headline Min-K% scores on the same documents (from the
    shared cache when an earlier audit scored them), else a published AUC given by the user, else 0.5.
    It is scored in batches of ``batch``, halved on out-of-memory like a variant's (and kept halved for the
    variants). A reference that does not fit even so ends the audit in one line: unlike a variant, it
    cannot be skipped, as every PrivLeak value is measured against it."""
    if cfg.reference_auc is not None:  # a published constant, e.g. MUSE's 0.4772 (NEWS) or 0.5393 (BOOKS)
        return stats.Reference(fixed=cfg.reference_auc), {"source": "--reference-auc (given by the user, not measured)",
                                                          "auc": cfg.reference_auc}
    if models.reference is None:
        return stats.Reference(fixed=0.5), {"source": "fixed 0.5 (no --reference given)", "auc": 0.5}
    ref, top = models.reference, mink.headline()
    cfg = as_computed(cfg, models.resident)  # a Ray driver without a GPU scores it on its CPU, in float32
    info = {"source": f"reference model {ref.path} ({'fp32' if cfg.dtype == 'float32' else cfg.dtype})"}
    key = reference_key(ref, models.ckpt, work, data, cfg)
    hit = shared.get(key)
    if hit is not None:
        on_step("the reference model's scores: from the shared cache")
        f, h = (o.values for o in hit.outputs)
        return stats.Reference(f, h), {**info, "auc": mink.auc(f, h), "from_shared_cache": True}
    on_step("scoring the reference model")
    resident, model, scored, doing = models.resident, None, None, "loading"
    try:
        if dict(ref.source.shapes) == dict(models.ckpt.source.shapes):
            model = resident  # streamed into the resident model, which every variant refills
            fill(model, ref.source)
        else:  # another architecture: its own model, like the resident one, freed after
            model = materialise(ref, next(resident.parameters()).dtype, next(resident.parameters()).device)
        doing = "scoring"
        scored = HFModel("reference", model, models.ckpt.tokenizer, batch or BatchSize(cfg.batch_size))
        probe, items = PROBES["mink"], work.prepared["mink"]
        outs = tuple(next(o for o in probe.run(scored, models.ckpt.tokenizer, items[split], split) if o.metric == top)
                     for split in ("forget", "holdout"))
    except Exception as exc:
        where = out_of_memory(exc)
        if where is None:
            raise
        failed = (f"out of {where} memory {doing} the reference model {ref.path} ({first_line(exc)}); "
                  "run on a device with more memory (--device), or give a published AUC with --reference-auc instead")
    else:
        failed = None
    del model, scored
    gc.collect()
    if failed is not None:
        free_device_memory()
        raise InputError(failed)
    shared.put(key, VariantRun(outs, (), None))
    f, h = (o.values for o in outs)
    return stats.Reference(f, h), {**info, "auc": mink.auc(f, h)}


def run_variants(schemes: list, models: Models, original_dir: str | None, data: AuditData, work: Workload, cfg: AuditConfig,
                 reference: stats.Reference, cache: VariantCache, shared: VariantCache, executor, on_step,
                 timings: dict, batch: BatchSize | None = None) -> Collected:
    """Every scheme's variant, from the resume cache or an executor job, scored in scheme order. A job
    reuses the original's outputs from the shared cache, and stores those it computed there. Local jobs
    start from ``batch``, the batch size as the reference and earlier variants left it."""
    variants, results, samples, evidence, weights, resumed, fp32, findings, decoding = [], [], [], {}, {}, [], None, [], {}
    keys = {s.name: variant_key(s, models.ckpt, models.original, data, cfg) for s in schemes}
    hits = {s.name: cache.get(keys[s.name]) for s in schemes}
    okeys = {s.name: original_key(s, models.original, models.ckpt, work, data, cfg) for s in schemes} if models.original else {}
    known = {n: run.outputs for n in okeys if hits[n] is None and (run := shared.get(okeys[n])) is not None}
    finished = [0]  # variants collected so far: a job's messages say how far the variant stage is

    def step(text: str) -> None:
        on_step(Step(text, "variants", finished[0], len(schemes)))

    ctx = JobContext(models.model_dir, original_dir, models.ckpt, models.original, work, cfg, step, models.resident, known,
                     DraftBook() if cfg.draft else None, batch or BatchSize(cfg.batch_size))
    jobs = executor.run([s for s in schemes if hits[s.name] is None], ctx)  # in scheme order
    for index, scheme in enumerate(schemes):
        t, finished[0] = time.perf_counter(), index
        run = hits[scheme.name]
        if run is not None:
            step(f"{scheme.name}: from the resume cache")
            resumed.append(scheme.name)
        else:
            run = next(jobs)
            if isinstance(run, Skipped):
                variants.append(Variant(scheme.name, scheme.bits, "skipped", run.reason))
                continue
            cache.put(keys[scheme.name], run)
            if scheme.name in okeys and scheme.name not in known:
                shared.put(okeys[scheme.name], VariantRun(run.original_outputs, (), None))
        if run.forensics is not None:
            weights[scheme.name] = run.forensics
        if run.decoding:
            decoding[scheme.name] = dict(run.decoding)
        outs, orig = index_outputs(run.outputs), index_outputs(run.original_outputs)
        findings += [f for f in (nonfinite_scores(scheme.name, "audited", outs), nonfinite_scores(scheme.name, "original", orig)) if f]
        if scheme.name == "fp32":
            fp32 = outs
        results += score_variant(scheme.name, outs, orig, fp32 if scheme.name != "fp32" else None, reference, cfg)
        results += forensics_results(scheme.name, run.forensics)
        for model, produced in (("audited", run.outputs), ("original", run.original_outputs)):
            samples += [{"variant": scheme.name, "model": model, "probe": o.probe, "split": o.split, "metric": o.metric,
                         "values": list(o.values)} for o in produced]
        evidence[scheme.name] = next(o.generations for o in run.outputs if o.probe == "verbmem" and o.split == "forget")
        variants.append(Variant(scheme.name, scheme.bits, "built"))
        timings[f"{scheme.name}_s"] = time.perf_counter() - t
    return Collected(tuple(variants), tuple(results), tuple(samples), evidence, weights, tuple(resumed), tuple(findings),
                     tuple(known), decoding)


def input_findings(models: Models, data: AuditData, reference: stats.Reference) -> tuple[list[str], list[str]]:
    """Facts about the inputs themselves: no policy can turn them into PASS or FAIL (re-judging keeps them);
    and notes on inputs that could not be re-checked."""
    findings = []
    changed, notes = changed_inputs(data, models.all())
    if changed:  # the evidence no longer describes the files on disk
        findings.append(f"input changed during the audit: {', '.join(changed)}")
    for m in models.all():  # a model with NaN or Inf weights gives outputs (or a baseline) that mean nothing
        nonfinite = m.source.nonfinite()
        if nonfinite:
            findings.append(f"the {m.role} model's weights contain NaN or Inf in {len(nonfinite)} tensor(s) "
                            f"({', '.join(nonfinite[:3])}{', …' if len(nonfinite) > 3 else ''}); its outputs are not meaningful")
    if reference.forget is not None:
        bad = nonfinite_scores("reference", "reference", {("mink", "forget", "ref"): reference.forget, ("mink", "holdout", "ref"): reference.holdout})
        findings += [bad] if bad else []
    return findings, notes


def run_audit(
    model_dir: str,
    data,
    cfg: AuditConfig,
    original_dir: str | None = None,
    reference_dir: str | None = None,
    adapter_dir: str | None = None,
    on_step: Callable[[str], None] = lambda s: None,
    cache: VariantCache = VariantCache(None),
    executor=None,
    shared: VariantCache = VariantCache(None),
) -> dict:
    """The whole audit of ``model_dir``, with the LoRA adapter ``adapter_dir`` merged in when given.
    ``data`` is an AuditData, or a MUSE directory (muse_dir.MuseCorpus) that the audited model's
    tokenizer turns into one. ``cache`` (the resume cache under ``--out``) returns variants already computed
    with the same inputs and settings; the report lists them in ``run.resumed_variants``. ``shared`` (the
    shared cache, ``--cache-dir``) holds the original's and the reference's results of earlier audits
    against the same models; the report lists what came from it in ``run.shared_cache``.
    ``executor`` runs the variant jobs (pipeline/executor.py): here one at a time by default, or on Ray."""
    executor = executor or LocalExecutor()
    started, timings = time.time(), {}
    torch.manual_seed(cfg.seed)
    schemes = resolve_schemes(cfg)
    t = time.perf_counter()
    models, cfg = load_models(model_dir, original_dir, reference_dir, adapter_dir, cfg, on_step)
    tok = models.ckpt.tokenizer
    if not isinstance(data, AuditData):  # a directory layout (--muse, muse_dir.py) whose raw text is cut in tokens
        data = data.audit_data(tok)
    work = build_workload(tok, context_length(models.ckpt.config), data, cfg, schemes, provenance_notes(models.all(), data))
    if cfg.batch_size is None:  # --batch-size auto: sized now that the resident model holds its memory
        cfg, sized = sized_batch(cfg, models, data)
        work = replace(work, notes=(*work.notes, sized))
    timings["load_s"] = time.perf_counter() - t

    t = time.perf_counter()
    batch = BatchSize(cfg.batch_size)  # halved on out-of-memory, and kept so for the rest of the audit
    reference, reference_info = score_reference(models, data, work, cfg, shared, on_step, batch)
    reference_shared = bool(reference_info.pop("from_shared_cache", False))
    if models.reference is not None:
        timings["reference_s"] = time.perf_counter() - t
    if not isinstance(executor, LocalExecutor):  # the jobs run elsewhere, each filling a resident model of its own
        models = replace(models, resident=None)
        gc.collect()
        if torch.cuda.is_available():  # hand the driver's GPU memory back for the workers
            torch.cuda.empty_cache()

    got = run_variants(schemes, models, original_dir, data, work, cfg, reference, cache, shared, executor, on_step, timings,
                       batch)
    checks, verdict, reason = judge(list(got.results), list(got.variants), cfg.policy, cfg.default_schemes)
    findings, notes = input_findings(models, data, reference)
    findings += got.findings
    if findings:
        verdict, reason = INCONCLUSIVE, findings[0]
    return build_report(AuditResult(
        models.ckpt, models.original, models.reference, data, cfg, tuple(schemes), work, reference_info, got.variants,
        got.results, tuple(checks), verdict, reason, got.samples, got.evidence, got.forensics, tuple(findings), timings,
        started, got.resumed, executor.describe(), (*cache.notes, *shared.notes, *notes),
        {"dir": str(shared.root), "original_results": list(got.shared), "reference_scores": reference_shared}
        if shared.root is not None else None,
        got.decoding,
    ))
