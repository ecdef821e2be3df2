"""llama.cpp's K-quant file types (Q4_K_M, Q6_K), produced by llama.cpp itself.

These are the files most people download to run a model on a laptop, so they are the quantizer an
end user really deploys. No pure-Python port exists (``gguf.quants`` only dequantizes K-quants), so
the weights go through llama.cpp's own ``llama_model_quantize`` (the ``llama-quantize`` tool, via
llama-cpp-python) and come back through ``gguf.quants.dequantize``:

1. every quantizable Linear/Conv1D weight is written as float32 into a GGUF file, under llama.cpp's
   tensor names (``blk.N.attn_v.weight``, ``blk.N.ffn_down.weight``, ...), because the file type's
   mixture is decided by name: Q4_K_M keeps ``attn_v`` and ``ffn_down`` at Q6_K in some layers and
   a fused ``attn_qkv`` at Q5_K, and uses Q4_K elsewhere; Q6_K uses Q6_K throughout;
2. llama.cpp quantizes the file in a child process, so that an abort inside the C library becomes a
   typed skip of this variant instead of the end of the audit;
3. each tensor is read back with the type llama.cpp chose and dequantized exactly.

A tensor whose rows are not a multiple of 256 (the K-quant super-block) gets llama.cpp's own
fallback type (e.g. Q5_0 or Q8_0), exactly as ``llama-quantize`` would. The file is always written
with the ``llama`` architecture: only the tensor names and the layer count steer the mixture.
Rows are not permuted as llama.cpp's converter does for q/k: quantization works row by row, so
the permutation changes no dequantized value. The output head and embeddings stay in full
precision, as in every other preset (and the paper).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ..versions import installed_version
from .base import Scheme, SchemeUnavailable, out_in_weight, quantizable_modules, write_weight

# llama.cpp's llama_ftype values (include/llama.h).
FTYPES = {"q4_k_m": 15, "q6_k": 18}
BITS = {"q4_k_m": 4, "q6_k": 6}
# Hugging Face module suffixes and the llama.cpp tensor names the quantization mixture keys on.
ROLES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output",
    "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down",
}
INSTALL = ("install unlearn-audit[llamacpp], built with CMAKE_ARGS=\"-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF "
           "-DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF\" (docs/schemes.md, 'GGUF K-quants')")

_QUANTIZE = """
import ctypes, sys
import llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype, params.nthread = int(sys.argv[3]), 1
sys.exit(0 if llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params)) == 0 else 1)
"""


def gguf_names(model) -> dict[str, str]:
    """Module name -> llama.cpp tensor name, for every quantizable module; refuses a model whose layers
    do not map one attention-value tensor each (llama.cpp checks this count and aborts otherwise)."""
    names, layers, values = {}, set(), Counter()
    for name, _ in quantizable_modules(model):
        m = re.search(r"\.(\d+)\.(.+)$", name)
        role = ROLES.get(m.group(2)) if m else None
        if role is None:
            raise SchemeUnavailable(f"no llama.cpp tensor name for module {name}")
        layers.add(int(m.group(1)))
        values[int(m.group(1))] += role in ("attn_v", "attn_qkv")
        names[name] = f"blk.{m.group(1)}.{role}.weight"
    if sorted(layers) != list(range(len(layers))) or any(values[i] != 1 for i in layers):
        raise SchemeUnavailable("llama.cpp needs exactly one attention value tensor per layer")
    return names


def write_f32(model, names: dict[str, str], path: Path) -> None:
    """The quantizable weights as an all-F32 GGUF file with the hyper-parameters llama.cpp reads."""
    import gguf

    c = model.config
    hidden = int(getattr(c, "hidden_size", getattr(c, "n_embd", 0)))
    heads = int(getattr(c, "num_attention_heads", getattr(c, "n_head", 1)))
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(len({n.split(".")[1] for n in names.values()}))
    w.add_context_length(int(getattr(c, "max_position_embeddings", getattr(c, "n_positions", 2048))))
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(int(getattr(c, "intermediate_size", None) or getattr(c, "n_inner", None) or 4 * hidden))
    w.add_head_count(heads)
    w.add_head_count_kv(int(getattr(c, "num_key_value_heads", None) or heads))
    w.add_layer_norm_rms_eps(float(getattr(c, "rms_norm_eps", None) or getattr(c, "layer_norm_epsilon", 1e-5)))
    w.add_vocab_size(int(c.vocab_size))
    w.add_file_type(0)  # all F32
    for name, module in quantizable_modules(model):
        w.add_tensor(names[name], out_in_weight(module).to(device="cpu", dtype=torch.float32).contiguous().numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def quantize_file(src: Path, dst: Path, kind: str) -> None:
    """``llama-quantize src dst TYPE`` in a child process (one thread); a crash there is a typed skip."""
    run = subprocess.run([sys.executable, "-c", _QUANTIZE, str(src), str(dst), str(FTYPES[kind])], capture_output=True, text=True)
    if run.returncode != 0 or not dst.is_file():
        last = (run.stderr.strip().splitlines() or [f"exit code {run.returncode}"])[-1]
        raise SchemeUnavailable(f"llama.cpp could not quantize to {kind.upper()}: {last}")


def llamacpp_quantize(model, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Module name -> dequantized (out, in) float32 weight, and -> the GGML type llama.cpp chose."""
    import gguf

    names = gguf_names(model)
    with tempfile.TemporaryDirectory(prefix="unlearn-audit-gguf-") as tmp:
        src, dst = Path(tmp) / "f32.gguf", Path(tmp) / f"{kind}.gguf"
        write_f32(model, names, src)
        quantize_file(src, dst, kind)
        tensors = {t.name: t for t in gguf.GGUFReader(str(dst)).tensors}
        out, types = {}, {}
        for name, gname in names.items():
            t = tensors[gname]
            deq = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
            out[name] = torch.from_numpy(np.array(deq, dtype=np.float32).reshape(int(t.shape[1]), int(t.shape[0])))
            types[name] = t.tensor_type.name
    return out, types


def available() -> str | None:
    """None when llama-cpp-python is installed, else why not. It is never imported here: its C library
    is only ever loaded in the child process."""
    import importlib.util

    return None if importlib.util.find_spec("llama_cpp") is not None else f"llama-cpp-python is not installed: {INSTALL}"


class LlamaCppScheme(Scheme):
    """A llama.cpp K-quant file type, fake-quantized back into the model."""

    def __init__(self, kind: str) -> None:
        if kind not in FTYPES:
            raise ValueError(kind)
        self.kind, self.bits = kind, BITS[kind]
        self.name = f"gguf-{kind}"
        self.description = f"llama.cpp GGUF {kind.upper()} (K-quants, super-blocks of 256) through llama.cpp itself"

    def params(self) -> dict:
        version = installed_version("llama-cpp-python")
        library = f"llama-cpp-python {version}" if version is not None else None
        return {"method": "gguf-k", "type": self.kind.upper(), "block_size": 256, "library": library,
                "mixture": "chosen per tensor by llama_model_quantize (fallback types where rows are not a multiple of 256)",
                "skipped_modules": "lm_head (output embeddings) and embeddings"}

    def check(self, checkpoint, calibration) -> None:
        reason = available()
        if reason:
            raise SchemeUnavailable(reason)

    def apply(self, model, checkpoint, calibration) -> None:
        weights, _ = llamacpp_quantize(model, self.kind)
        for name, module in quantizable_modules(model):
            write_weight(module, weights[name])
