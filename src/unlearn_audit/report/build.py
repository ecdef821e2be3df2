"""Assemble report.json (schema documented in the README; keys are never renamed, only added)."""

from __future__ import annotations

import platform
import sys
import time

from .. import __version__
from ..machine import hardware
from ..pipeline.types import AuditResult
from ..probes.base import definitions
from ..versions import installed_version

SCHEMA_VERSION = "1.8"  # 1.1 added forensics, p_value, check.required, run.hardware, config.policy_sha256
# 1.2 added inputs.adapter, inputs.verbmem_forget, inputs.retain_icl, config.data_source, config.verbmem_prompts
# 1.3 added the forensics blocks' changed_fraction, changed_same_cell, changed_in_zero_cell, median_abs_w_changed, bf16_representable
# 1.4 added run.decoding (draft tokens offered and accepted per variant)
# 1.5 added run.hardware.cpu_model, cpu_capability and fast_dtypes (what chose --dtype auto)
# 1.6 added inputs.*.hub (repo id, revision, commit of a hub id) and inputs.*.ignored_files
# 1.7 added config.schemes_source ("default": the tool's default schemes, one that could not run caps the verdict)
# 1.8 added inputs.model.signature (audit --model-signature: the OpenSSF model-signing signature verified before the audit)


def _versions() -> dict:
    packages = ("torch", "transformers", "safetensors", "tokenizers", "rouge-score", "numpy", "scipy", "gguf", "bitsandbytes",
                "torchao", "jinja2")
    return {"python": platform.python_version(), **{pkg: installed_version(pkg) for pkg in packages}}


def _dataset(ts) -> dict | None:
    if ts is None:
        return None
    n = len(ts.texts) if hasattr(ts, "texts") else len(ts.pairs)
    out = {"path": ts.path, "sha256": ts.sha256, "n": n}
    if getattr(ts, "records", None) is not None:  # --limit: n of these records were sampled
        out["records_in_file"] = ts.records
    return out


def _model(ckpt) -> dict | None:
    if ckpt is None:
        return None
    out = {"path": ckpt.path, "files": ckpt.file_hashes, "config": ckpt.config_summary}
    if getattr(ckpt, "hub", None):  # a hub id: the repo, the revision asked for, and the commit it resolved to
        out["hub"] = ckpt.hub
    if getattr(ckpt, "ignored_files", ()):  # beside an index, read by no loader: listed, never loaded or hashed
        out["ignored_files"] = list(ckpt.ignored_files)
    if ckpt.side_files:  # config, tokenizer and generation files: they shape the outputs as much as the weights
        out["side_files"] = ckpt.side_files
    if ckpt.weights_format != "safetensors":  # only with --allow-pickle
        out["weights_format"] = f"{ckpt.weights_format} (torch.load weights_only=True)"
    # What the checkpoint's generation config asks of generate(), which the probes ignore (models/hf.py decodes
    # with the tool's own config): its settings beyond what transformers derives from config.json alone (the
    # pad/bos/eos ids every saved checkpoint carries), without transformers' bookkeeping keys.
    from transformers import GenerationConfig

    stock = GenerationConfig.from_model_config(ckpt.config).to_diff_dict()
    generation = ckpt.generation_config.to_diff_dict() if ckpt.generation_config is not None else {}
    asked = {k: v for k, v in sorted(generation.items())
             if k != "transformers_version" and not k.startswith("_") and (k not in stock or stock[k] != v)}
    if asked:
        out["generation_config_ignored"] = asked
    return out


def _audited(ckpt) -> dict:
    """The audited model; with --adapter, the base directory it was merged from (``ckpt.path`` is then a
    temporary copy of the merged model) and the adapter in ``inputs.adapter``."""
    out = _model(ckpt)
    if getattr(ckpt, "base_path", None):
        out["path"] = ckpt.base_path
    return out


def build_report(r: AuditResult) -> dict:
    """report.json from a finished audit; the order of keys is part of the format (byte-stable reports)."""
    cfg, work, tok = r.cfg, r.work, r.ckpt.tokenizer
    forget_items = work.prepared["verbmem"]["forget"]
    shown = min(3, len(forget_items))
    return {
        "schema_version": SCHEMA_VERSION,
        "tool_version": __version__,
        "verdict": r.verdict,
        "verdict_reason": r.reason,
        "variants": [v.to_dict() for v in r.variants],
        "results": [x.to_dict() for x in r.results],
        "checks": [c.to_dict() for c in r.checks],
        "inputs": {
            "model": _audited(r.ckpt),
            "adapter": getattr(r.ckpt, "adapter", None),
            "original": _model(r.original),
            "reference": _model(r.reference),
            **{name: _dataset(getattr(r.data, name)) for name in
               ("forget", "holdout", "retain", "forget_qa", "retain_qa", "holdout_qa", "icl", "calibration", "retain_icl",
                "verbmem_forget", "relearn")},
        },
        "config": {
            "schemes": {s.name: {"description": s.description, "bits": s.bits, **s.params()} for s in r.schemes},
            "schemes_source": "default" if cfg.default_schemes else "given",
            "backend": cfg.backend,
            "device": cfg.device,
            "dtype": cfg.dtype,
            "seed": cfg.seed,
            "bootstrap_resamples": cfg.bootstrap,
            "confidence": 0.95,
            "batch_size": cfg.batch_size,
            "policy": cfg.policy.to_dict(),
            "policy_sha256": cfg.policy.sha256(),
            "policy_source": cfg.policy_source,
            "probes": definitions(),
            "knowmem_prompt": "literal MUSE query (trailing space)" if cfg.muse_strict
            else "MUSE text with the separating space on the answer side (lm-eval target delimiter)",
            "verbmem_generation": "fixed 128 new tokens (MUSE)" if cfg.muse_strict
            else "new tokens capped at the reference continuation's length (at most 128)",
            "knowmem_icl_source": work.record["knowmem_icl_source"],
            "verbmem_prompts": work.record["verbmem_prompts"],
            "data_source": r.data.source,  # --muse: the directory and every file read from it
            "calibration": work.calibration_source,
            "relearn": work.relearn_source,  # the relearning attack's text (relearn-* schemes): source and sha256
            "privleak_reference": r.reference_info,
            **({"limit": {"records_per_text_set": cfg.limit, "sampling": "seeded reservoir sample (Algorithm R, random.Random(seed)), "
                          "uniform over the file's records, kept in file order; forget, holdout and retain only"}}
               if cfg.limit is not None else {}),
            "notes": [*work.notes, *r.notes, *r.findings],
        },
        # Weight-space forensics against --original, per scheme (Section 5): codes, scales, |ΔW|/Δ per module.
        "forensics": dict(r.forensics),
        "timings": {k: round(v, 3) for k, v in r.timings.items()},
        "run": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.started)),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "duration_s": round(time.time() - r.started, 3),
            "argv": sys.argv,
            "platform": platform.platform(),
            "hardware": hardware(),
            "versions": _versions(),
            "resumed_variants": list(r.resumed),  # read from the resume cache, not recomputed
            **({"shared_cache": dict(r.shared)} if r.shared is not None else {}),  # the original's/reference's, reused
            # greedy decoding per variant computed in this run: tokens generated, draft tokens offered and accepted
            "decoding": {"draft": cfg.draft, "variants": {k: dict(v) for k, v in r.decoding.items()}},
            "executor": r.executor,
        },
        "evidence": [
            {
                "prompt": tok.decode(forget_items[i].prompt_ids, skip_special_tokens=True),
                "reference": forget_items[i].reference,
                "outputs": {v: gens[i] for v, gens in r.evidence.items()},
            }
            for i in range(shown)
        ],
        "samples": list(r.samples),
        "findings": list(r.findings),
    }
