"""The resume cache: a repeated audit with the same inputs calls no model and gives the same report;
--fresh (or any changed input) recomputes."""

import pytest

from unlearn_audit.audit import run_audit
from unlearn_audit.data import load_qa, load_texts
from unlearn_audit.models.hf import HFModel
from unlearn_audit.pipeline.cache import VariantCache
from unlearn_audit.pipeline.types import AuditConfig, AuditData


@pytest.fixture
def counting(monkeypatch):
    calls = []
    for name in ("token_scores", "greedy"):
        real = getattr(HFModel, name)

        def wrapper(self, *args, _real=real, _name=name, **kwargs):
            calls.append((self.name, _name))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(HFModel, name, wrapper)
    return calls


def _stable(report):
    return {k: v for k, v in report.items() if k not in ("run", "timings")}


def test_a_repeated_audit_is_read_from_the_cache(bench, tmp_path, counting):
    data = AuditData(forget=load_texts(bench["forget"]), holdout=load_texts(bench["holdout"]), forget_qa=load_qa(bench["forget_qa"]))
    cfg = AuditConfig(schemes=("fp32", "rtn-int4"), bootstrap=200)
    args = (str(bench["clean"]), data, cfg)
    first = run_audit(*args, original_dir=str(bench["memoriser"]), cache=VariantCache(tmp_path / ".cache"))
    assert counting and first["run"]["resumed_variants"] == []
    counting.clear()
    second = run_audit(*args, original_dir=str(bench["memoriser"]), cache=VariantCache(tmp_path / ".cache"))
    assert counting == [] and second["run"]["resumed_variants"] == ["fp32", "rtn-int4"]
    assert _stable(second) == _stable(first)
    fresh = run_audit(*args, original_dir=str(bench["memoriser"]), cache=VariantCache(tmp_path / ".cache", fresh=True))
    assert counting and fresh["run"]["resumed_variants"] == [] and _stable(fresh) == _stable(first)
    counting.clear()
    other = AuditData(forget=data.forget, holdout=load_texts(bench["retain"]), forget_qa=data.forget_qa)  # a changed input
    run_audit(str(bench["clean"]), other, cfg, original_dir=str(bench["memoriser"]), cache=VariantCache(tmp_path / ".cache"))
    assert counting
