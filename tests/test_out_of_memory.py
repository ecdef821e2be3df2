"""Running out of memory: a batch that does not fit is halved and retried, and the smaller size is kept for
the rest of the audit; cuBLAS's failed allocations count as out of memory; a variant that does not fit
even one sequence at a time is a typed skip, and a reference that does not fit is one line (exit 2).

A GPU's out-of-memory cannot be provoked on a CPU, so the models here raise the errors CUDA raises, for
batches larger than they "fit" (transformers' own forward runs otherwise). The CPU allocator's failure is
real.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer
from transformers.models.llama.modeling_llama import LlamaModel

from conftest import one_line_error, run
from unlearn_audit.benchmark import tiny
from unlearn_audit.models.hf import HFModel

CUBLAS = ["CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
          "CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`"]


def fits(monkeypatch, rows: int, error=lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")):
    """Every Llama decoder forward of more than ``rows`` sequences raises ``error()``, as a GPU that holds
    only that many would. Returns the list of the batch sizes refused."""
    refused, real = [], LlamaModel.forward

    @functools.wraps(real)  # keeps the signature, which models/decode.py reads
    def forward(self, *args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[0] > rows:
            refused.append(ids.shape[0])
            raise error()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LlamaModel, "forward", forward)
    return refused


def starts(monkeypatch) -> list[tuple[str, int]]:
    """(name, batch size) of every HFModel as it is made: the size each model starts from."""
    made, init = [], HFModel.__init__

    def record(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append((self.name, self.batch_size))

    monkeypatch.setattr(HFModel, "__init__", record)
    return made


def test_a_real_cpu_allocation_failure_is_out_of_memory():
    from unlearn_audit.models.hf import out_of_memory

    with pytest.raises(RuntimeError) as exc:
        torch.empty(2**50)  # 4 PiB: more than any machine's memory and address space
    assert out_of_memory(exc.value) == "CPU"
    assert out_of_memory(MemoryError()) == "CPU"
    assert out_of_memory(torch.OutOfMemoryError("CUDA out of memory")) == "GPU"
    assert [out_of_memory(RuntimeError(m)) for m in CUBLAS] == ["GPU", "GPU"]
    assert out_of_memory(RuntimeError("CUDA error: device-side assert triggered")) is None
    assert out_of_memory(ValueError("out of memory")) is None


@pytest.mark.parametrize("message", CUBLAS)
def test_a_cublas_allocation_failure_halves_the_batch_and_frees_the_cache(message, monkeypatch):
    """cuBLAS allocates its handle outside torch's cache: the cached blocks go back to the driver (so it
    can) and the batch is halved, with the results of batches that fit from the start."""
    tok = tiny.train_tokenizer(["the quick brown fox jumps over the lazy dog"] * 8 + ["pack my box with five dozen jugs"] * 8, 300)
    model = tiny.tiny_llama(len(tok), hidden=64, layers=2, seed=3)
    seqs = [tok(t)["input_ids"] for t in ["the quick brown fox", "pack my box", "dog", "lazy dog jumps", "five dozen jugs"]]
    expected = HFModel("m", model, tok, batch_size=2).token_scores(seqs)
    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    refused = fits(monkeypatch, 2, lambda: RuntimeError(message))
    wrapped = HFModel("m", model, tok, batch_size=8)
    got = wrapped.token_scores(seqs)
    assert refused and wrapped.batch_size == 2 and len(emptied) == len(refused)
    assert all(np.array_equal(a.logprobs, b.logprobs) and np.array_equal(a.sigma, b.sigma) for a, b in zip(got, expected))


def _data(bench, n: int = 8):
    from unlearn_audit.data import load_texts
    from unlearn_audit.pipeline.types import AuditData

    return AuditData(forget=load_texts(bench["forget"], limit=n), holdout=load_texts(bench["holdout"], limit=n))


def _same_results(a: dict, b: dict) -> None:
    for key in ("verdict", "verdict_reason", "variants", "results", "checks"):
        assert a[key] == b[key], key


@pytest.mark.parametrize("reference", [False, True])
def test_the_halved_batch_size_is_kept_for_the_rest_of_the_audit(bench, monkeypatch, reference):
    """The first model to run out of memory halves the batch; the variants after it (and after the
    reference) start from the halved size instead of failing the same batches again, and the report's
    numbers are those of an audit run at that size from the start."""
    from unlearn_audit.audit import run_audit
    from unlearn_audit.pipeline.types import AuditConfig

    ref = {"reference_dir": str(bench["clean"])} if reference else {}
    cfg = AuditConfig(schemes=("fp32", "rtn-int4"), bootstrap=50, limit=8)
    expected = run_audit(str(bench["memoriser"]), _data(bench), replace(cfg, batch_size=2), **ref)
    made, refused = starts(monkeypatch), fits(monkeypatch, 2)
    got = run_audit(str(bench["memoriser"]), _data(bench), cfg, **ref)
    first = "reference" if reference else "fp32"
    assert made[0] == (first, 8) and all(size == 2 for _, size in made[1:]), made
    assert {name for name, _ in made} >= {"fp32", "rtn-int4"}
    assert refused == [8, 4]  # once: every model after the first starts at a size that fits
    _same_results(got, expected)


def test_a_variant_whose_cublas_handle_cannot_be_allocated_is_skipped(bench, monkeypatch):
    """Even one sequence at a time: the variant is a typed skip naming the error, and the audit goes on."""
    from unlearn_audit.audit import run_audit
    from unlearn_audit.pipeline.types import AuditConfig

    made = starts(monkeypatch)
    real = LlamaModel.forward

    @functools.wraps(real)
    def forward(self, *args, **kwargs):
        if made[-1][0] == "rtn-int4":
            raise RuntimeError(CUBLAS[0])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LlamaModel, "forward", forward)
    report = run_audit(str(bench["memoriser"]), _data(bench, 4), AuditConfig(schemes=("rtn-int4", "fp32"), bootstrap=50, limit=4))
    status = {v["name"]: v for v in report["variants"]}
    assert status["fp32"]["status"] == "built" and status["rtn-int4"]["status"] == "skipped"
    assert status["rtn-int4"]["reason"].startswith("out of GPU memory while building or probing this variant")
    assert "CUBLAS_STATUS_ALLOC_FAILED" in status["rtn-int4"]["reason"]


def _audit_args(bench, tmp_path, reference):
    return ["audit", bench["memoriser"], "--forget", bench["forget"], "--holdout", bench["holdout"], "--limit", "4",
            "--schemes", "fp32", "--reference", reference, "--out", tmp_path / "out", "--format", "json"]


def test_a_reference_that_does_not_fit_one_sequence_at_a_time_is_one_line(bench, tmp_path, monkeypatch, capsys):
    made = starts(monkeypatch)
    real = LlamaModel.forward

    @functools.wraps(real)
    def forward(self, *args, **kwargs):
        if made and made[-1][0] == "reference":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LlamaModel, "forward", forward)
    one_line_error(*run(_audit_args(bench, tmp_path, bench["clean"]), capsys),
                   f"out of GPU memory scoring the reference model {bench['clean']} (CUDA out of memory", "--reference-auc", after_progress=True)
    assert made == [("reference", 8)] and not (tmp_path / "out" / "report.json").exists()


def test_a_reference_of_another_architecture_that_does_not_fit_is_one_line(bench, tmp_path, monkeypatch, capsys):
    """It gets a model of its own next to the resident one; out of memory making it is one line too."""
    from unlearn_audit import audit

    tok = AutoTokenizer.from_pretrained(bench["clean"])
    tiny.tiny_llama(len(tok), hidden=64, layers=1, seed=5).save_pretrained(tmp_path / "narrow", safe_serialization=True)
    tok.save_pretrained(tmp_path / "narrow")

    def materialise(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 MiB")

    monkeypatch.setattr(audit, "materialise", materialise)
    one_line_error(*run(_audit_args(bench, tmp_path, tmp_path / "narrow"), capsys),
                   f"out of GPU memory loading the reference model {tmp_path / 'narrow'}", after_progress=True)


@pytest.mark.parametrize("scheme", ["bnb-fp4", "bnb-int8"])
def test_bitsandbytes_running_out_of_memory_is_said_as_such_and_the_cache_emptied(bench, monkeypatch, scheme):
    """bitsandbytes loads a second model beside the resident one; an allocation failure there is a
    skip for lack of memory (the device cache emptied after it), not "could not quantize"."""
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM

    from unlearn_audit.audit import run_audit
    from unlearn_audit.models import hf
    from unlearn_audit.pipeline import executor
    from unlearn_audit.pipeline.types import AuditConfig

    real = AutoModelForCausalLM.from_pretrained.__func__

    def from_pretrained(cls, *args, **kwargs):
        if kwargs.get("quantization_config") is not None:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB")
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(from_pretrained))
    emptied = []
    monkeypatch.setattr(executor, "free_device_memory", lambda: (emptied.append(1), hf.free_device_memory()))
    report = run_audit(str(bench["memoriser"]), _data(bench, 4), AuditConfig(schemes=("fp32", scheme), bootstrap=50, limit=4))
    status = {v["name"]: v for v in report["variants"]}
    assert status["fp32"]["status"] == "built" and status[scheme]["status"] == "skipped"
    assert status[scheme]["reason"] == "out of GPU memory while building or probing this variant (CUDA out of memory. Tried to allocate 1.50 GiB)"
    assert emptied
