"""Work that does not depend on the audited model is done once: the original's outputs under each scheme
and the reference's scores are kept in the shared cache and reused by later audits (pipeline/cache.py)."""

from __future__ import annotations

import torch

from unlearn_audit.audit import run_audit
from unlearn_audit.data import load_texts
from unlearn_audit.models.hf import HFModel
from unlearn_audit.models.loading import load_checkpoint, write_checkpoint
from unlearn_audit.pipeline import variant
from unlearn_audit.pipeline.cache import VariantCache
from unlearn_audit.pipeline.types import AuditConfig, AuditData


def test_a_second_audit_against_the_same_original_recomputes_none_of_its_results(bench, tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARN_AUDIT_CACHE_SECRET_FILE", str(tmp_path / "secret"))
    other = load_checkpoint(bench["memoriser"])  # a second "unlearned" model of the same original
    with torch.no_grad():
        other.model.model.layers[0].mlp.down_proj.weight.mul_(0.9)
    second = write_checkpoint(other.model, other.tokenizer, tmp_path / "second")
    calls = {"original": 0, "audited": 0, "reference": 0}
    probe_scheme, token_scores = variant.probe_scheme, HFModel.token_scores

    def counted_probe(scheme, source, *args, **kwargs):
        calls[source.role] += 1
        return probe_scheme(scheme, source, *args, **kwargs)

    def counted_scores(self, sequences):
        calls["reference"] += self.name == "reference"
        return token_scores(self, sequences)

    monkeypatch.setattr(variant, "probe_scheme", counted_probe)
    monkeypatch.setattr(HFModel, "token_scores", counted_scores)
    data = AuditData(forget=load_texts(bench["forget"], limit=6), holdout=load_texts(bench["holdout"], limit=6))
    cfg = AuditConfig(schemes=("fp32", "rtn-int4"), bootstrap=100, limit=6)
    shared = VariantCache(tmp_path / "shared")

    def audit(model_dir, cache):
        calls.update(original=0, audited=0, reference=0)
        report = run_audit(str(model_dir), data, cfg, original_dir=str(bench["clean"]), reference_dir=str(bench["clean"]), shared=cache)
        return report, dict(calls)

    first, first_calls = audit(bench["memoriser"], shared)
    again, again_calls = audit(second, shared)
    alone, alone_calls = audit(second, VariantCache(None))  # the same audit computing everything itself
    assert first_calls == {"original": 2, "audited": 2, "reference": 2} == alone_calls
    assert again_calls == {"original": 0, "audited": 2, "reference": 0}
    assert first["run"]["shared_cache"] == {"dir": str(tmp_path / "shared"), "original_results": [], "reference_scores": False}
    assert again["run"]["shared_cache"]["original_results"] == ["fp32", "rtn-int4"]
    assert again["run"]["shared_cache"]["reference_scores"] is True
    assert "shared_cache" not in alone["run"]
    # What came from the cache is what the model computes: the two reports agree on every number.
    assert again["samples"] == alone["samples"]
    assert again["results"] == alone["results"] and again["verdict"] == alone["verdict"]
    assert again["config"]["privleak_reference"] == alone["config"]["privleak_reference"]
