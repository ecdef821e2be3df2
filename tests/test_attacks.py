"""Recovery attacks beyond quantization, against their definitions: relearning brings a memoriser's
forget set back after unlearning, without ever training on it; weight noise is averaged per sample
over its seeds; a republished quantized model holds exactly fp16 values of the quantized weights."""

import numpy as np
import pytest
import torch

from unlearn_audit.attacks.relearn import Relearn
from unlearn_audit.data import load_texts
from unlearn_audit.errors import InputError
from unlearn_audit.models.batch import encode, make_batch
from unlearn_audit.models.loading import load_checkpoint
from unlearn_audit.pipeline.types import AuditConfig, AuditData
from unlearn_audit.pipeline.variant import ORIGINAL_ROLES, probe_scheme
from unlearn_audit.pipeline.workload import build_workload, relearn_tokens
from unlearn_audit.quantize.base import SchemeUnavailable, out_in_weight, quantizable_modules
from unlearn_audit.quantize.ggml import ggml_roundtrip
from unlearn_audit.quantize.registry import get_scheme
from unlearn_audit.remediate.losses import cross_entropy
from unlearn_audit.remediate.unlearn import UnlearnConfig, unlearn


def _forget_nll(model, seqs, pad) -> float:
    with torch.no_grad():
        return float(cross_entropy(model, make_batch(seqs, pad)))


def test_relearning_on_retain_text_brings_the_forget_set_back(bench):
    ckpt = load_checkpoint(bench["memoriser"])
    tok, pad = ckpt.tokenizer, ckpt.tokenizer.pad_token_id
    forget, retain = load_texts(bench["forget"]), load_texts(bench["retain"])
    f_ids, r_ids = encode(tok, forget.texts), encode(tok, retain.texts)
    before = _forget_nll(ckpt.model, f_ids, pad)
    unlearn(ckpt.model, f_ids, r_ids, pad, UnlearnConfig(method="ga", lr=5e-4, steps=12, batch_size=16))
    for p in ckpt.model.parameters():
        p.requires_grad_(False)
    unlearned = _forget_nll(ckpt.model, f_ids, pad)
    assert unlearned > 20 * before, (before, unlearned)  # the forget set really was unlearned (NLL 0.03 -> 0.9)

    data = AuditData(forget=forget, holdout=load_texts(bench["holdout"]), retain=retain)
    text, source = relearn_tokens(tok, data)
    assert source["source"] == "retain set" and source["sha256"] == retain.sha256
    relearned = Relearn(steps=10, lr=1e-3, batch_size=8).build(ckpt, text)
    after = _forget_nll(relearned, f_ids, pad)
    assert after < unlearned / 3, (before, unlearned, after)  # never saw the forget set, yet recalls it (-> 0.17)
    assert _forget_nll(ckpt.model, f_ids, pad) == unlearned  # the audited model itself is untouched


def test_relearning_refuses_forget_text_and_needs_data(bench):
    forget = load_texts(bench["forget"])
    data = AuditData(forget=forget, holdout=load_texts(bench["holdout"]), relearn=forget)
    with pytest.raises(InputError, match="must not train on the forget set"):
        relearn_tokens(None, data)
    ckpt = load_checkpoint(bench["clean"])
    with pytest.raises(SchemeUnavailable, match="--relearn-data"):
        get_scheme("relearn-10").build(ckpt, [])
    p = get_scheme("relearn-25").params()
    assert (p["steps"], p["lr"]) == (25, 1e-5)


def test_noise_scores_are_averaged_per_sample_over_seeds(bench):
    ckpt = load_checkpoint(bench["clean"])
    data = AuditData(forget=load_texts(bench["forget"]), holdout=load_texts(bench["holdout"]))
    noise = get_scheme("noise-0.05")
    cfg = AuditConfig(schemes=(noise.name,))
    work = build_workload(ckpt.tokenizer, None, data, cfg, [noise])
    averaged = probe_scheme(noise, ckpt, ckpt.tokenizer, work, cfg, ORIGINAL_ROLES)
    draws = [probe_scheme(d, ckpt, ckpt.tokenizer, work, cfg, ORIGINAL_ROLES) for d in noise.seeded()]
    assert [d.seed for d in noise.seeded()] == [0, 1, 2] == noise.params()["seeds"]
    mink = [i for i, o in enumerate(averaged) if o.probe == "mink"]
    assert mink and not np.allclose(draws[0][mink[0]].values, draws[1][mink[0]].values)  # the seeds differ
    for i, o in enumerate(averaged):
        assert np.allclose(o.values, np.mean([d[i].values for d in draws], axis=0), equal_nan=True)
        assert o.generations == draws[0][i].generations


def test_republished_model_holds_fp16_of_the_quantized_weights(bench):
    ckpt = load_checkpoint(bench["clean"])
    model = get_scheme("dequant-requant-gguf-q4_0").build(ckpt)
    for p in model.parameters():
        assert torch.equal(p, p.half().float())  # every value is what a float16 file holds
    for (_, m), (_, src) in zip(quantizable_modules(model), quantizable_modules(ckpt.model)):
        q = ggml_roundtrip(out_in_weight(src), "q4_0")[1]
        assert torch.equal(out_in_weight(m), q.half().float())
    emb, src_emb = model.get_input_embeddings().weight, ckpt.model.get_input_embeddings().weight
    assert torch.equal(emb, src_emb.half().float()) and not torch.equal(emb, src_emb)


def test_relearn_through_the_cli_records_its_text_and_refuses_the_forget_set(bench, tmp_path, capsys):
    import json

    from unlearn_audit.cli import main

    base = ["audit", str(bench["memoriser"]), "--forget", str(bench["forget"]), "--holdout", str(bench["holdout"]),
            "--schemes", "fp32,relearn-10", "--format", "json"]
    with pytest.raises(SystemExit) as exc:
        main(base + ["--relearn-data", str(bench["forget"]), "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "must not train on the forget set" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad" / "report.json").exists()
    with pytest.raises(SystemExit):
        main(base + ["--relearn-data", str(bench["retain"]), "--out", str(tmp_path / "ok")])
    report = json.loads((tmp_path / "ok" / "report.json").read_text())
    assert report["config"]["relearn"]["source"] == "--relearn-data"
    assert report["config"]["relearn"]["sha256"] == report["inputs"]["relearn"]["sha256"] == load_texts(bench["retain"]).sha256
    assert report["config"]["schemes"]["relearn-10"]["steps"] == 10
    assert [v["status"] for v in report["variants"]] == ["built", "built"]



def _resident(bench, dtype, fail_at=None):
    """The memoriser held in ``dtype``, frozen, as an audit's resident model; ``fail_at``: the forward
    call that raises CUDA's out-of-memory error instead (an OOM cannot be provoked on a CPU)."""
    ckpt = load_checkpoint(bench["memoriser"])
    model = ckpt.model.to(dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    calls = [0]

    def oom(module, args):
        calls[0] += 1
        if calls[0] == fail_at:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    model.register_forward_pre_hook(oom)
    return ckpt, model, encode(ckpt.tokenizer, load_texts(bench["retain"]).texts)


def test_relearning_a_bfloat16_model_moves_it_as_float32_masters_would(bench):
    """At the default lr (1e-5) an AdamW step is below half a bfloat16 ulp of most weights (1.2e-4 at the
    median |w|, 0.032, here): stepped on the bfloat16 weights themselves, 6% of this matrix moved in 20
    steps and the attack looked weaker than it is. Through float32 masters the updates accumulate: over
    a fifth of it moves, each in the direction the float32 run moves it."""
    key = "model.layers.0.mlp.down_proj.weight"
    delta = {}
    for dtype in (torch.bfloat16, torch.float32):
        ckpt, model, text = _resident(bench, dtype)
        before = model.state_dict()[key].clone()
        Relearn(steps=20, lr=1e-5, batch_size=8).apply(model, ckpt, text)
        delta[dtype] = model.state_dict()[key].float() - before.float()
        assert all(p.grad is None and not p.requires_grad for p in model.parameters())  # nothing left attached
    moved = delta[torch.bfloat16] != 0
    assert float(moved.float().mean()) > 0.2
    assert float((delta[torch.bfloat16].sign() == delta[torch.float32].sign())[moved].float().mean()) > 0.99


def test_an_out_of_memory_error_in_relearning_leaves_the_model_frozen_without_gradients(bench):
    ckpt, model, text = _resident(bench, torch.float32, fail_at=3)  # after two steps, gradients exist
    with pytest.raises(torch.OutOfMemoryError):
        Relearn(steps=5, lr=1e-4, batch_size=8).apply(model, ckpt, text)
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())
    assert not model.training
