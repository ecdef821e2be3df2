"""llama.cpp's K-quants (gguf-q4_k_m, gguf-q6_k): the F32 file llama.cpp reads holds exactly the
model's weights under llama.cpp's names, and, where llama-cpp-python is installed, the weights that
come back lie on the Q6_K grid read from llama.cpp's own bytes and follow its per-tensor mixture."""

import importlib.util
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from unlearn_audit.benchmark import tiny
from unlearn_audit.quantize.base import SchemeUnavailable, out_in_weight, quantizable_modules
from unlearn_audit.quantize.llamacpp import gguf_names, llamacpp_quantize, quantize_file, write_f32
from unlearn_audit.quantize.registry import get_scheme

HAVE_LLAMACPP = importlib.util.find_spec("llama_cpp") is not None
needs_llamacpp = pytest.mark.skipif(not HAVE_LLAMACPP, reason="llama-cpp-python is not installed (the [llamacpp] extra)")


@pytest.fixture(scope="module")
def llama():
    torch.set_num_threads(1)
    return tiny.tiny_llama(300, hidden=256, layers=2, seed=4)  # rows of 256: real K-quant super-blocks


def test_names_follow_llama_cpp():
    llama = tiny.tiny_llama(300, hidden=64, layers=2, seed=0)
    names = gguf_names(llama)
    assert names["model.layers.1.self_attn.v_proj"] == "blk.1.attn_v.weight"
    assert names["model.layers.0.mlp.down_proj"] == "blk.0.ffn_down.weight"
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=64, n_layer=2, n_head=4, n_positions=64))
    assert gguf_names(gpt2)["transformer.h.0.attn.c_attn"] == "blk.0.attn_qkv.weight"
    assert len(set(gguf_names(gpt2).values())) == len(quantizable_modules(gpt2))


def test_unknown_layout_is_a_typed_skip():
    model = tiny.tiny_llama(300, hidden=64, layers=2, seed=0)
    model.model.layers[0].self_attn.extra = torch.nn.Linear(64, 64)  # no llama.cpp name for it
    with pytest.raises(SchemeUnavailable, match="no llama.cpp tensor name"):
        gguf_names(model)


def test_f32_file_holds_the_exact_weights():
    import gguf

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=64, n_layer=2, n_head=4, n_positions=64))
    names = gguf_names(gpt2)
    with tempfile.TemporaryDirectory() as tmp:
        write_f32(gpt2, names, Path(tmp) / "f.gguf")
        tensors = {t.name: np.array(t.data) for t in gguf.GGUFReader(str(Path(tmp) / "f.gguf")).tensors}
    for name, module in quantizable_modules(gpt2):  # Conv1D is stored (in, out): the file holds (out, in)
        assert np.array_equal(tensors[names[name]], out_in_weight(module).numpy())


def test_missing_extra_is_a_typed_skip(llama):
    if HAVE_LLAMACPP:
        pytest.skip("llama-cpp-python is installed here")
    from unlearn_audit.models.loading import Checkpoint

    with pytest.raises(SchemeUnavailable, match=r"unlearn-audit\[llamacpp\]"):
        get_scheme("gguf-q6_k").build(Checkpoint("m", "audited", llama, None))


@needs_llamacpp
def test_q6_k_weights_lie_on_llama_cpp_grid(llama):
    """Q6_K super-block: 128 low-nibble bytes, 64 high-bit bytes, 16 int8 scales, float16 d; each weight
    is d · scale[j] · q with q in [-32, 31] (llama.cpp's dequantize_row_q6_K)."""
    import gguf

    names = gguf_names(llama)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "f.gguf", Path(tmp) / "q.gguf"
        write_f32(llama, names, src)
        quantize_file(src, dst, "q6_k")
        raw = {t.name: (t.tensor_type.name, np.array(t.data)) for t in gguf.GGUFReader(str(dst)).tensors}
    weights, types = llamacpp_quantize(llama, "q6_k")
    assert set(types.values()) == {"Q6_K"}
    for name, module in quantizable_modules(llama):
        kind, data = raw[names[name]]
        blocks = data.reshape(-1, 210)
        d = blocks[:, 208:210].copy().view(np.float16).astype(np.float32)
        step = (d * blocks[:, 192:208].copy().view(np.int8).astype(np.float32)).repeat(16, axis=1)  # (n, 256)
        w = weights[name].numpy().reshape(-1, 256)
        q = np.divide(w, step, out=np.zeros_like(w), where=step != 0)
        assert kind == "Q6_K" and np.array_equal(np.rint(q), q) and q.min() >= -32 and q.max() <= 31
        assert np.array_equal(np.rint(q) * step, w)
        err = float((weights[name] - out_in_weight(module)).norm() / out_in_weight(module).norm())
        assert 0 < err < 0.05, (name, err)


@needs_llamacpp
def test_q4_k_m_is_llama_cpps_mixture(llama):
    weights, types = llamacpp_quantize(llama, "q4_k_m")
    assert {types[n] for n in types if "q_proj" in n or "gate_proj" in n} == {"Q4_K"}
    assert "Q6_K" in {types[n] for n in types if "v_proj" in n or "down_proj" in n}  # bumped by use_more_bits
    err6 = llamacpp_quantize(llama, "q6_k")[0]
    for name, module in quantizable_modules(llama):
        w = out_in_weight(module)
        assert float((err6[name] - w).norm()) <= float((weights[name] - w).norm()) + 1e-6


@needs_llamacpp
def test_fallback_types_where_rows_are_short():
    small = tiny.tiny_llama(300, hidden=64, layers=2, seed=0)  # rows of 64: no K-quant super-block fits
    _, types = llamacpp_quantize(small, "q6_k")
    assert types["model.layers.0.self_attn.q_proj"] == "Q8_0" and types["model.layers.0.mlp.down_proj"] == "Q6_K"
