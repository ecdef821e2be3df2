"""bitsandbytes (the paper's quantizers) on CPU, with the AVX512-BF16 corruption guard.

On AVX512-BF16 CPUs the first forward repacks 4-bit weights and, without the guard, later dequantization
(and every forward after it) uses corrupted weights. The test runs several forwards, then rebuilds an
fp32 model from the dequantized weights: its logits must equal the quantized model's.
"""

import copy

import pytest
import torch

from unlearn_audit.benchmark import tiny
from unlearn_audit.models.loading import load_checkpoint, write_checkpoint
from unlearn_audit.quantize.bnb import BitsAndBytes

bnb = pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    tok = tiny.train_tokenizer(["the quick brown fox jumps over the lazy dog"] * 8, 300)
    path = write_checkpoint(tiny.tiny_llama(len(tok), hidden=128, layers=2, seed=5), tok, tmp_path_factory.mktemp("m") / "m")
    return load_checkpoint(path)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mode", ["fp4", "nf4"])
def test_4bit_logits_match_the_dequantized_weights_after_repeated_forwards(ckpt, mode, dtype):
    """In the resident model's dtype (``into``), as every other variant of the audit computes."""
    q = BitsAndBytes(mode).build(ckpt, into=copy.deepcopy(ckpt.model).to(dtype))
    ids = torch.tensor([[0, 5, 9, 23, 41, 7, 3, 12]])
    with torch.no_grad():
        first = q(ids).logits
        for _ in range(2):
            again = q(ids).logits
    assert first.dtype == dtype and q.model.embed_tokens.weight.dtype == dtype
    assert torch.allclose(first, again)
    rebuilt = copy.deepcopy(ckpt.model).to(dtype)
    modules = dict(rebuilt.named_modules())
    n = 0
    for name, mod in q.named_modules():
        if isinstance(mod, bnb.nn.Linear4bit):
            w = bnb.functional.dequantize_4bit(mod.weight.data, mod.weight.quant_state).float()
            modules[name].weight.data.copy_(w)
            n += 1
    assert n == 2 * 7  # q, k, v, o, gate, up, down per layer; lm_head stays full precision
    with torch.no_grad():
        expected = rebuilt(ids).logits
    # float32 to 1e-4; bfloat16 to a few of its ulps at these logits (|logit| < 1, ulp 2^-8), far below
    # what the 4-bit grid itself moves them (measured 0.18 on this model)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    assert torch.allclose(again, expected, atol=tol), (again - expected).abs().max()
    # and the quantization really happened
    assert (expected.float() - ckpt.model(ids).logits).abs().max() > 5 * tol


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_llm_int8_runs_on_cpu(ckpt, dtype):
    q = BitsAndBytes("int8").build(ckpt, into=copy.deepcopy(ckpt.model).to(dtype))
    ids = torch.tensor([[0, 5, 9, 23, 41]])
    with torch.no_grad():
        out, ref = q(ids).logits, ckpt.model(ids).logits
    assert out.dtype == dtype
    rel = (out.float() - ref).norm() / ref.norm()
    assert 0 < rel < 0.1
