"""The audit pipeline: load, build one variant per scheme, probe it, score, judge, and report.

Zhang et al. (ICLR 2025) show that unlearning with a small learning rate moves weights by less than a
4-bit quantization step, so a quantized "unlearned" model can recite the forget set again. The audit
therefore probes the claimed-unlearned model under every requested scheme, and compares against the
same scheme applied to the original model (retention, the paper's definition) when one is given.
Variants are built one at a time and freed before the next, so memory stays bounded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch

from .cache import VariantCache, variant_key
from .data import QASet, TextSet, load_texts
from .errors import InputError
from .executor import JobContext, LocalExecutor, Skipped
from .models.hf import HFModel
from .models.loading import Checkpoint, load_checkpoint
from .policy import Policy, Result, judge
from .probes import knowmem, mink, verbmem
from .probes.base import definitions
from .quantize.calibration import MAX_TOKENS
from .quantize.registry import DEFAULT_SCHEMES, for_backend, get_scheme
from .report.build import build_report
from .resources import data_dir
from .scoring import index_outputs, score_variant
from .variant import place


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
    verbmem_forget: verbmem.PromptSet | None = None  # VerbMem prompts given with their gt (MUSE's verbmem/forget.json)
    source: dict | None = None  # the directory layout the sets came from (--muse): every file, its sha256 and use


@dataclass(frozen=True)
class AuditConfig:
    schemes: tuple[str, ...] = DEFAULT_SCHEMES
    seed: int = 0
    bootstrap: int = 1000
    batch_size: int = 8
    muse_strict: bool = False
    policy: Policy = field(default_factory=Policy)
    policy_source: str = "tool defaults (README, 'The verdict')"
    device: str = "cpu"  # where variants run; quantization itself always happens in float32 on the CPU
    dtype: str = "float32"  # compute dtype of fake-quantized variants (bfloat16 only on a GPU)
    reference_auc: float | None = None  # PrivLeak's reference AUC when no retrained model is available
    backend: str = "reference"  # or "library": run each preset through its library twin where one runs
    allow_pickle: bool = False  # read pickle-only checkpoints with torch.load(weights_only=True)
    limit: int | None = None  # text sets were sampled to this many records each (seeded reservoir, see data.py)


@dataclass
class _Workload:
    """Everything tokenized once with the audited model's tokenizer, reused by every variant."""

    verbmem: dict[str, list]
    knowmem: dict[str, list]
    mink: dict[str, list]
    zlib: dict[str, list]
    icl_source: str
    notes: list[str]
    calibration: list[list[int]] = field(default_factory=list)
    calibration_source: dict | None = None
    relearn: list[list[int]] = field(default_factory=list)  # for relearn-* (retain set, or --relearn-data)
    relearn_source: dict | None = None
    verbmem_source: str = "each text's first prefix_tokens tokens ([verbmem] in muse.toml), continued"


def resolve_schemes(cfg: AuditConfig) -> list:
    return [for_backend(get_scheme(n), cfg.backend) for n in cfg.schemes]


def _same_tokenizer(a: Checkpoint, b: Checkpoint) -> None:
    if a.tokenizer.get_vocab() != b.tokenizer.get_vocab():
        raise InputError(f"{b.path}: the {b.role} model's tokenizer differs from the audited model's")


def check_sets(data: AuditData) -> list[str]:
    """Refuse a forget set that shares texts with the holdout set (membership inference compares the
    two, so a shared text is both member and non-member); note duplicates within a set."""
    shared = set(data.forget.texts) & set(data.holdout.texts)
    if shared:
        raise InputError(f"{data.holdout.path}: {len(shared)} text(s) also appear in the forget set {data.forget.path}; "
                         "forget and holdout must be disjoint for the membership test")
    notes = []
    for name in ("forget", "holdout", "retain"):
        ts = getattr(data, name)
        if ts is not None and len(set(ts.texts)) < len(ts.texts):
            notes.append(f"{name}: {len(ts.texts) - len(set(ts.texts))} duplicate record(s) in {ts.path}, each scored as given")
    return notes


def _workload(ckpt: Checkpoint, data: AuditData, cfg: AuditConfig, schemes: list) -> _Workload:
    tok, notes = ckpt.tokenizer, check_sets(data)
    vm, prefix, vm_source = {}, None, _Workload.verbmem_source
    if data.verbmem_forget is not None:  # given prompts (MUSE's verbmem/forget.json), used as given
        vm["forget"] = verbmem.prepare_given(tok, data.verbmem_forget.pairs, cfg.muse_strict)
        # The holdout baseline is cut at the given prompts' median length, so both sides are probed alike.
        prefix = int(np.median([len(tok(p, add_special_tokens=False)["input_ids"]) for p, _ in data.verbmem_forget.pairs]))
        vm_source = (f"forget: the {len(vm['forget'])} prompts given in {data.verbmem_forget.path}, as given; "
                     f"holdout: each text's first {prefix} tokens (the given prompts' median length), continued")
    for split, ts in (("forget", data.forget), ("holdout", data.holdout)):
        if split in vm:
            continue
        items, short = verbmem.prepare(tok, ts.texts, cfg.muse_strict, prefix)
        if short:
            notes.append(f"verbmem: {short} {split} text(s) shorter than the prompt were not scored")
        vm[split] = items
    shots = definitions()["knowmem"]["shots"]
    retain_pairs = list(data.retain_qa.pairs) if data.retain_qa else []
    if data.icl is not None:
        icl, icl_source = list(data.icl.pairs), f"icl file {data.icl.path}"
    elif data.retain_icl is not None:
        icl, icl_source = list(data.retain_icl.pairs), f"icl file {data.retain_icl.path}"
    elif retain_pairs:
        icl, retain_pairs = retain_pairs[:shots], retain_pairs[shots:]
        icl_source = f"first {len(icl)} retain QA pairs (excluded from the retain score)"
    else:
        icl, icl_source = [], "none (zero-shot): give --icl or --retain-qa for MUSE's few-shot prompt"
    split_icl = {}  # MUSE prompts each split with its own ICL file (eval.py: forget_qa_icl, retain_qa_icl)
    if data.retain_icl is not None:
        split_icl["retain"] = list(data.retain_icl.pairs)
        icl_source += f"; retain split: icl file {data.retain_icl.path}"
    km = {}
    for split, pairs in (
        ("forget", data.forget_qa.pairs if data.forget_qa else []),
        ("retain", retain_pairs),
        ("holdout", data.holdout_qa.pairs if data.holdout_qa else []),
    ):
        if pairs:
            km[split] = knowmem.prepare(tok, pairs, split_icl.get(split, icl), cfg.muse_strict)
    max_len = getattr(ckpt.model.config, "max_position_embeddings", None)
    mk = {}
    for split, ts in (("forget", data.forget), ("holdout", data.holdout)):
        mk[split], cut = mink.prepare(tok, ts.texts, max_len)
        if cut:
            notes.append(f"mink: {cut} {split} text(s) longer than the context ({max_len}) were truncated")
    zl = {split: mink.zlib_sizes(tok, seqs) for split, seqs in mk.items()}
    work = _Workload(vm, km, mk, zl, icl_source, notes, verbmem_source=vm_source)
    if any(s.calibrated for s in schemes):
        work.calibration, work.calibration_source = calibration_tokens(tok, data.calibration or data.retain,
                                                                       "--calibration" if data.calibration else "retain set")
    if any(s.relearns for s in schemes):
        work.relearn, work.relearn_source = relearn_tokens(tok, data)
    return work


def relearn_tokens(tok, data: AuditData) -> tuple[list[list[int]], dict | None]:
    """The relearning attack's text: --relearn-data, else the retain set; none shares a document with
    the forget set (Hu et al. relearn on public, related text, never on what was unlearned)."""
    texts, source = (data.relearn, "--relearn-data") if data.relearn is not None else (data.retain, "retain set")
    if texts is None:
        return [], None  # each relearn-* variant is then skipped with the reason
    shared = set(texts.texts) & set(data.forget.texts)
    if shared:
        raise InputError(f"{texts.path}: {len(shared)} relearning text(s) also appear in the forget set {data.forget.path}; "
                         "the relearning attack must not train on the forget set")
    seqs = [tok(t)["input_ids"] for t in texts.texts]
    return seqs, {"source": source, "path": texts.path, "sha256": texts.sha256, "sequences": len(seqs)}


def calibration_tokens(tok, texts: TextSet | None, source: str) -> tuple[list[list[int]], dict]:
    """GPTQ/AWQ calibration sequences: the given texts, or the generic text shipped with the tool
    (Zhang et al. note that a general corpus does not target the forget domain; which one was used is
    recorded)."""
    if texts is None:
        texts, source = load_texts(data_dir("probes") / "calibration.jsonl"), "generic text shipped with the tool"
    seqs = [tok(t)["input_ids"] for t in texts.texts]
    return seqs, {"source": source, "path": texts.path, "sha256": texts.sha256, "sequences": len(seqs),
                  "tokens": sum(min(len(s), MAX_TOKENS) for s in seqs)}


def _provenance_notes(models: list[Checkpoint], data: AuditData) -> list[str]:
    """What a reader must know about where the evidence came from: pickle weights, sampled sets."""
    notes = [f"{m.role} model {m.path}: pickle weights ({', '.join(m.file_hashes)}) loaded with "
             "torch.load(weights_only=True) because of --allow-pickle" for m in models if m.weights_format == "pickle"]
    for name, ts in vars(data).items():
        if isinstance(ts, TextSet) and ts.records is not None:
            notes.append(f"{name}: {len(ts.texts)} of {ts.records} record(s) in {ts.path} audited (--limit, seeded reservoir sample)")
    return notes


def _changed_inputs(data: AuditData, models: list[Checkpoint]) -> list[str]:
    """Files whose sha256 differs now from when they were read at the start (the report's hashes)."""
    from pathlib import Path

    from .data import sha256_file
    from .muse_dir import current_sha256

    changed = []
    for ts in vars(data).values():
        # "-": built in memory (the benchmark script), no file behind it; ``source`` is a record, not a set
        if getattr(ts, "sha256", "-") == "-":
            continue
        now = current_sha256(ts.path)
        if now is None:
            changed.append(f"{ts.path} (removed)")
        elif now != ts.sha256:
            changed.append(ts.path)
    for m in models:
        # a merged adapter (--adapter) came from the base's files and the adapter's, not from its temporary copy
        files = m.source_files() if hasattr(m, "source_files") else {Path(m.path) / n: d for n, d in m.file_hashes.items()}
        for f, digest in files.items():
            if not f.is_file() or sha256_file(f) != digest:
                changed.append(str(f))
    return changed


def run_audit(
    model_dir: str,
    data: AuditData,
    cfg: AuditConfig,
    original_dir: str | None = None,
    reference_dir: str | None = None,
    adapter_dir: str | None = None,
    on_step: Callable[[str], None] = lambda s: None,
    cache: VariantCache = VariantCache(None),
    executor=None,
) -> dict:
    """The whole audit of ``model_dir``, with the LoRA adapter ``adapter_dir`` merged in when given.
    ``data`` is an AuditData, or a MUSE directory (muse_dir.MuseCorpus) that the audited model's
    tokenizer turns into one. ``cache`` (the resume cache under ``--out``) returns variants already computed
    with the same inputs and settings; the report lists them in ``config.resumed_variants``.
    ``executor`` runs the variant jobs (executor.py): here one at a time by default, or on Ray."""
    executor = executor or LocalExecutor()
    started, timings = time.time(), {}
    torch.manual_seed(cfg.seed)
    schemes = resolve_schemes(cfg)
    t = time.perf_counter()
    on_step("loading models")
    ckpt = load_checkpoint(model_dir, "audited", allow_pickle=cfg.allow_pickle)
    original = load_checkpoint(original_dir, "original", allow_pickle=cfg.allow_pickle) if original_dir else None
    reference = load_checkpoint(reference_dir, "reference", allow_pickle=cfg.allow_pickle) if reference_dir else None
    if adapter_dir is not None:  # the merged weights are the audited model, and what every scheme quantizes
        from .models.adapter import merge_adapter

        on_step("merging the adapter")
        ckpt = merge_adapter(ckpt, adapter_dir, cfg.allow_pickle)
        model_dir = ckpt.path  # its temporary on-disk copy, for whatever reloads the model from a directory
    for other in (original, reference):
        if other is not None:
            _same_tokenizer(ckpt, other)
    nonfinite = [n for n, p in ckpt.model.named_parameters() if not torch.isfinite(p).all()]
    tok = ckpt.tokenizer
    if not isinstance(data, AuditData):  # a directory layout (--muse, muse_dir.py) whose raw text is cut in tokens
        data = data.audit_data(tok)
    work = _workload(ckpt, data, cfg, schemes)
    work.notes.extend(_provenance_notes([m for m in (ckpt, original, reference) if m is not None], data))
    timings["load_s"] = time.perf_counter() - t

    ref_scores, ref_info = None, {"source": "fixed 0.5 (no --reference given)", "auc": 0.5}
    if cfg.reference_auc is not None:  # a published constant, e.g. MUSE's 0.4772 (NEWS) or 0.5393 (BOOKS)
        ref_scores = (None, None, cfg.reference_auc)
        ref_info = {"source": "--reference-auc (given by the user, not measured)", "auc": cfg.reference_auc}
    headline = f"min_k_{round(definitions()['mink']['headline_k'] * 100)}"
    if reference is not None:
        t = time.perf_counter()
        on_step("scoring the reference model")
        # The driver scores the reference; with a remote executor it may have no GPU of its own.
        here = cfg if cfg.device == "cpu" or torch.cuda.is_available() else replace(cfg, device="cpu", dtype="float32")
        ref_model = HFModel("reference", place(reference.model, here), tok, cfg.batch_size)
        f = mink.scores(ref_model.token_scores(work.mink["forget"]), "forget")
        h = mink.scores(ref_model.token_scores(work.mink["holdout"]), "holdout")
        pick = lambda outs: next(o.values for o in outs if o.metric == headline)  # noqa: E731
        ref_scores = (pick(f), pick(h), None)
        ref_info = {"source": f"reference model {reference.path} (fp32)", "auc": mink.auc(np.array(pick(f)), np.array(pick(h)))}
        timings["reference_s"] = time.perf_counter() - t

    variants, results, samples, evidence, fp32_outs, weights, cached = [], [], [], {}, None, {}, []
    keys = {s.name: variant_key(s, ckpt, original, data, cfg) for s in schemes}
    hits = {s.name: cache.get(keys[s.name]) for s in schemes}
    ctx = JobContext(model_dir, original_dir, ckpt, original, work, cfg, on_step)
    jobs = executor.run([s for s in schemes if hits[s.name] is None], ctx)  # in scheme order
    for scheme in schemes:
        t = time.perf_counter()
        if hits[scheme.name] is not None:
            on_step(f"{scheme.name}: from the resume cache")
            outs, orig_outs, fx = hits[scheme.name]
            cached.append(scheme.name)
        else:
            done = next(jobs)
            if isinstance(done, Skipped):
                variants.append({"name": scheme.name, "scheme": scheme.name, "bits": scheme.bits, "status": "skipped", "reason": done.reason})
                continue
            outs, orig_outs, fx = done
            cache.put(keys[scheme.name], outs, orig_outs, fx)
        if fx is not None:
            weights[scheme.name] = fx
        idx = index_outputs(outs)
        if scheme.name == "fp32":
            fp32_outs = idx
        results += score_variant(scheme.name, idx, index_outputs(orig_outs), fp32_outs, ref_scores, cfg)
        fx = weights.get(scheme.name, {})
        if fx.get("status") == "measured":
            for metric, key, n in (("grid_code_overlap", "code_overlap", "n_weights"), ("grid_scale_changed", "scale_changed", "n_groups"),
                                   ("median_dw_over_step", "median_dw_over_step", "n_weights")):
                results.append(Result(scheme.name, "weights", metric, fx[key], None, None, fx[n]))
        for o in outs:
            samples.append({"variant": scheme.name, "model": "audited", "probe": o.probe, "split": o.split, "metric": o.metric, "values": list(o.values)})
        for o in orig_outs:
            samples.append({"variant": scheme.name, "model": "original", "probe": o.probe, "split": o.split, "metric": o.metric, "values": list(o.values)})
        evidence[scheme.name] = next(o.generations for o in outs if o.probe == "verbmem" and o.split == "forget")
        variants.append({"name": scheme.name, "scheme": scheme.name, "bits": scheme.bits, "status": "built", "reason": ""})
        timings[f"{scheme.name}_s"] = time.perf_counter() - t

    checks, verdict, reason = judge(results, variants, cfg.policy)
    # Findings about the inputs themselves: no policy can turn them into PASS or FAIL (re-judging keeps them).
    findings = []
    changed = _changed_inputs(data, [m for m in (ckpt, original, reference) if m is not None])
    if changed:  # the evidence no longer describes the files on disk
        findings.append(f"input changed during the audit: {', '.join(changed)}")
    if nonfinite:  # the checkpoint's outputs mean nothing
        findings.append(f"the audited model's weights contain NaN or Inf in {len(nonfinite)} tensor(s) "
                        f"({', '.join(nonfinite[:3])}{', …' if len(nonfinite) > 3 else ''}); its outputs are not meaningful")
    if findings:
        verdict, reason = "INCONCLUSIVE", findings[0]
        work.notes.extend(findings)
    report = build_report(
        ckpt=ckpt, original=original, reference=reference, data=data, cfg=cfg, schemes=schemes,
        work=work, ref_info=ref_info, variants=variants, results=results, checks=checks,
        verdict=verdict, reason=reason, samples=samples, evidence=evidence, timings=timings, started=started,
        forensics=weights,
    )
    report["findings"] = findings
    report["run"]["resumed_variants"] = cached  # read from the resume cache, not recomputed
    report["run"]["executor"] = executor.describe()
    return report
