"""One resident model, filled from the files: bounded memory, and weights identical to quantizing the
whole float32 matrix at once (models/weights.py)."""

from __future__ import annotations

import gc
import warnings
import weakref

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from conftest import on_disk
from unlearn_audit.benchmark import tiny
from unlearn_audit.models import weights
from unlearn_audit.quantize.base import SchemeUnavailable, WeightwiseScheme, out_in_weight, quantizable_modules
from unlearn_audit.quantize.registry import SCHEMES, get_scheme

WEIGHTWISE = [n for n in SCHEMES if isinstance(get_scheme(n), WeightwiseScheme)]


def _gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(1)
    model = GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=2, n_head=2, vocab_size=300, n_positions=64))
    model.tie_weights()
    return model.eval()


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def saved(request, tmp_path_factory):
    model = tiny.tiny_llama(300, hidden=96, layers=2, seed=3) if request.param == "llama" else _gpt2()
    return on_disk(model, tmp_path_factory.mktemp(request.param))


@pytest.mark.parametrize("name", WEIGHTWISE)
def test_streamed_variant_equals_quantizing_each_whole_matrix(saved, name, monkeypatch):
    """Every weightwise preset, quantized chunk by chunk as the weights stream in (chunks forced small
    and uneven here), gives the weights of quantizing each whole float32 matrix at once; everything
    else is the checkpoint's own value. Both Llama (Linear) and GPT-2 (Conv1D, stored transposed)."""
    scheme = get_scheme(name)
    monkeypatch.setattr(weights, "CHUNK_ELEMENTS", 3 * 64 * 7)  # a few rows per chunk
    resident = weights.empty_model(saved.config)
    try:
        built = scheme.build(saved, into=resident)
    except SchemeUnavailable as exc:
        pytest.skip(str(exc))
    assert built is resident
    whole = dict(quantizable_modules(saved.model))
    for mod_name, mod in quantizable_modules(built):
        expected = scheme.quantize_rows(out_in_weight(whole[mod_name]).to(torch.float32))
        assert torch.equal(out_in_weight(mod), expected), mod_name
    quantized = {f"{n}.weight" for n in whole}
    source = saved.model.state_dict()
    for key, value in built.state_dict().items():
        if key not in quantized:
            assert torch.equal(value, source[key]), key


WHOLE_MODEL = ["gptq-int4", "awq-int4", "prune-magnitude-20", "prune-layer-10", "noise-0.05", "relearn-10",
               "dequant-requant-gptq-int4"]


@pytest.mark.parametrize("name", WHOLE_MODEL)
def test_whole_model_schemes_on_the_filled_model_equal_them_on_the_loaded_one(saved, name):
    """A whole-model scheme applied to the resident model after a streamed fill gives exactly what it
    gives applied to a copy of the loaded float32 model (what building a variant used to do)."""
    import copy

    scheme = get_scheme(name)
    saved.tokenizer = type("T", (), {"pad_token_id": 0})()
    g = torch.Generator().manual_seed(0)
    text = [torch.randint(3, 300, (48,), generator=g).tolist() for _ in range(6)]
    draw = scheme.seeded()[0]
    built = draw.build(saved, text, into=weights.empty_model(saved.config))
    expected = copy.deepcopy(saved.model)
    inner = getattr(draw, "inner", draw)
    inner.apply(expected, saved, text)
    if inner is not draw:  # republished: every parameter through float16
        with torch.no_grad():
            for p in expected.parameters():
                p.copy_(p.to(torch.float16).to(p.dtype))
    for key, value in expected.state_dict().items():
        assert torch.equal(built.state_dict()[key], value), key


def test_bfloat16_resident_holds_the_float32_codes_rounded_once(saved):
    """In bfloat16 compute the codes still come from the float32 weights; only Q(w) is stored rounded."""
    scheme = get_scheme("rtn-int4")
    built = scheme.build(saved, into=weights.empty_model(saved.config, torch.bfloat16))
    whole = dict(quantizable_modules(saved.model))
    for mod_name, mod in quantizable_modules(built):
        expected = scheme.quantize_rows(out_in_weight(whole[mod_name]).to(torch.float32)).to(torch.bfloat16)
        assert mod.weight.dtype == torch.bfloat16 and torch.equal(out_in_weight(mod), expected), mod_name


def test_refilling_undoes_the_previous_variant(saved):
    """A variant that changes every parameter (republished as float16) leaves nothing behind: the next
    fill rewrites every tensor from the files."""
    resident = weights.empty_model(saved.config)
    get_scheme("dequant-requant-gguf-q4_0").build(saved, into=resident)
    get_scheme("fp32").build(saved, into=resident)
    for key, value in saved.model.state_dict().items():
        assert torch.equal(resident.state_dict()[key], value), key


def _live_tensor_bytes() -> int:
    """Bytes of every tensor storage alive in this process, each storage counted once."""
    seen, total = set(), 0
    with warnings.catch_warnings():  # isinstance on some of torch's lazy module attributes warns
        warnings.simplefilter("ignore")
        tensors = [obj for obj in gc.get_objects() if isinstance(obj, torch.Tensor)]
    for obj in tensors:
        if obj.device.type == "cpu" and not obj.is_meta:
            storage = obj.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    return total


def test_audit_with_original_and_reference_holds_one_model(tmp_path, monkeypatch):
    """While every variant is probed, the tensors alive beyond those before the audit stay within one
    float32 model and a margin: not the audited, original and reference models plus a quantized copy
    (four models, what loading each checkpoint and copying each variant held)."""
    from unlearn_audit.audit import run_audit
    from unlearn_audit.data import load_texts, write_jsonl
    from unlearn_audit.pipeline import variant
    from unlearn_audit.pipeline.types import AuditConfig, AuditData

    texts = [f"Record {i}: the quick brown fox number {i} jumps over the lazy dog near the river bank." for i in range(12)]
    tok = tiny.train_tokenizer(texts, vocab_size=400)
    dirs = {}
    for role, seed in (("audited", 0), ("original", 1), ("reference", 2)):
        model = tiny.tiny_llama(len(tok), hidden=256, layers=4, seed=seed)
        dirs[role] = tmp_path / role
        model.save_pretrained(dirs[role], safe_serialization=True)
        tok.save_pretrained(dirs[role])
    one_model = sum(p.numel() for p in model.parameters()) * 4
    del model
    gc.collect()
    before, peak = _live_tensor_bytes(), []
    probe_all = variant.probe_all

    def measured(*args, **kwargs):  # the moment a variant is built and being probed
        peak.append(_live_tensor_bytes() - before)
        return probe_all(*args, **kwargs)

    monkeypatch.setattr(variant, "probe_all", measured)
    write_jsonl(tmp_path / "forget.jsonl", [{"text": t} for t in texts[:6]])
    write_jsonl(tmp_path / "holdout.jsonl", [{"text": t} for t in texts[6:]])
    data = AuditData(forget=load_texts(tmp_path / "forget.jsonl"), holdout=load_texts(tmp_path / "holdout.jsonl"))
    run_audit(str(dirs["audited"]), data, AuditConfig(schemes=("fp32", "rtn-int4", "nf4", "gguf-q4_0"), bootstrap=50),
              original_dir=str(dirs["original"]), reference_dir=str(dirs["reference"]))
    assert len(peak) == 8  # four schemes, each on the audited and the original model
    assert max(peak) < 1.5 * one_model, (max(peak) / one_model, one_model)


def test_a_reference_of_another_architecture_is_freed_after_scoring(bench, tmp_path, monkeypatch):
    """A reference that cannot share the resident model (another width) gets its own model, and that
    model is gone once the reference is scored."""
    from transformers import AutoTokenizer

    from unlearn_audit import audit
    from unlearn_audit.data import load_texts
    from unlearn_audit.pipeline.types import AuditConfig, AuditData

    tok = AutoTokenizer.from_pretrained(bench["clean"])
    tiny.tiny_llama(len(tok), hidden=64, layers=1, seed=5).save_pretrained(tmp_path / "narrow", safe_serialization=True)
    tok.save_pretrained(tmp_path / "narrow")
    made = []
    materialise = audit.materialise

    def tracked(*args, **kwargs):
        model = materialise(*args, **kwargs)
        made.append(weakref.ref(model))
        return model

    monkeypatch.setattr(audit, "materialise", tracked)
    data = AuditData(forget=load_texts(bench["forget"], limit=4), holdout=load_texts(bench["holdout"], limit=4))
    report = audit.run_audit(str(bench["memoriser"]), data, AuditConfig(schemes=("fp32",), bootstrap=50, limit=4),
                             reference_dir=str(tmp_path / "narrow"))
    assert report["config"]["privleak_reference"]["source"].startswith("reference model")
    assert len(made) == 1 and made[0]() is None
