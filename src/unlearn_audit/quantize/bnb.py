"""bitsandbytes, the paper's own quantizers: 4-bit FP4/NF4 (blocksize 64) and LLM.int8().

The paper's released code quantizes only through ``BitsAndBytesConfig(load_in_4bit=True)`` (FP4 by
default, compute dtype float32) and ``load_in_8bit=True`` (LLM.int8 with outlier threshold 6.0), so
these presets reproduce its configuration; its "RTN" tables come from this path. Through transformers
the 4-bit blocksize is fixed at 64 (``bnb_4bit_blocksize`` is ignored), which we record rather than hide.
The one departure: the model computes in the audit's dtype (float32 unless ``--dtype`` resolves to
bfloat16), like every other variant, so a difference from the fp32 variant is the grid's alone.

Trap guarded here: on CPUs with AVX512-BF16, bitsandbytes repacks 4-bit weights on the first forward
pass and a missing absmax transpose in the inverse repack then corrupts them; setting
``support_avx512bf16_for_cpu = False`` on every ``Linear4bit`` keeps the weights intact (a test checks
that the logits match a model rebuilt from the dequantized weights after several forwards).

Memory: this is the one variant that is not filled into the audit's resident model. The library loads
and quantizes its own model from the files, beside the resident one, which stays loaded for the
variants after it. The peak is the resident model (2 bytes a parameter in bfloat16, 4 in float32) plus
the library's (about 0.5 byte a parameter at 4 bits, 1 at 8, plus the unquantized embeddings and
``lm_head`` in the compute dtype): about 21 GB at Llama-3-8B in bfloat16 with 4 bits. Running out of
memory there is reported as such (the variant is skipped with "out of GPU memory" and the device cache
emptied), never as "could not quantize".
"""

from __future__ import annotations

import torch

from ..models.hf import out_of_memory
from .base import Scheme, SchemeUnavailable


def _bnb():
    try:
        import bitsandbytes
    except ImportError as exc:
        raise SchemeUnavailable(f"bitsandbytes is not installed (pip install 'unlearn-audit[bnb]'): {exc}")
    return bitsandbytes


class BitsAndBytes(Scheme):
    def __init__(self, mode: str) -> None:
        if mode not in ("fp4", "nf4", "int8"):
            raise ValueError(mode)
        self.mode = mode
        self.name = f"bnb-{mode}"
        self.bits = 8 if mode == "int8" else 4
        self.description = (
            "bitsandbytes LLM.int8() (outlier threshold 6.0), the paper's 8-bit setting"
            if mode == "int8"
            else f"bitsandbytes 4-bit {mode.upper()}, blocksize 64"
            + (" (the paper's 4-bit setting)" if mode == "fp4" else "")
        )

    def params(self) -> dict:
        if self.mode == "int8":
            return {"method": "bitsandbytes", "load_in_8bit": True, "llm_int8_threshold": 6.0}
        return {
            "method": "bitsandbytes",
            "load_in_4bit": True,
            "bnb_4bit_quant_type": self.mode,
            "blocksize": 64,
            "bnb_4bit_compute_dtype": "the audit's compute dtype (the paper's code: float32)",
            "bnb_4bit_use_double_quant": False,
            "skipped_modules": "lm_head",
            "avx512bf16_guard": "support_avx512bf16_for_cpu=False on every Linear4bit",
        }

    def build(self, checkpoint, calibration=None, into=None):
        """bitsandbytes' own model, loaded and quantized by the library from the checkpoint's files;
        ``into`` is left as it is (its Linears are not the library's); the library quantizes on ``into``'s
        device, so on a GPU with its CUDA kernels, and the model computes in ``into``'s dtype."""
        bnb = _bnb()
        first = next(into.parameters()) if into is not None else None
        device = str(first.device) if first is not None else "cpu"
        dtype = first.dtype if first is not None else torch.float32
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        if self.mode == "int8":
            config = BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=6.0)
        else:
            config = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type=self.mode, bnb_4bit_compute_dtype=dtype
            )
        try:
            model = AutoModelForCausalLM.from_pretrained(
                checkpoint.path,
                quantization_config=config,
                device_map=device,
                dtype=dtype,
                local_files_only=True,
                trust_remote_code=False,
                use_safetensors=getattr(checkpoint, "weights_format", "safetensors") == "safetensors",  # pickle: --allow-pickle
                weights_only=True,
            )
        # The ways bitsandbytes turns out unusable on this machine or build. Anything else propagates: the
        # checkpoint itself has already loaded once, so a different error here is a bug, not a skip.
        # - ImportError: transformers' own checks, accelerate missing or bitsandbytes older than it needs;
        # - RuntimeError: no bitsandbytes backend for any device here, a native library that failed to
        #   load (bitsandbytes defers that error to the first call), or an op without a kernel for this
        #   CPU (NotImplementedError), which transformers re-raises as a RuntimeError about the conversion.
        except (ImportError, RuntimeError) as exc:
            if out_of_memory(exc):  # an allocation failure, not a missing backend: the executor's OOM path
                raise
            raise SchemeUnavailable(f"bitsandbytes could not quantize this model here: {exc}") from None
        # - OSError: transformers reloads the directory by its standard file names, and the tool's own loader
        #   also accepts a single safetensors file of another name (models/loading.py), which it cannot find.
        except OSError as exc:
            raise SchemeUnavailable(f"bitsandbytes reloads {checkpoint.path} by transformers' standard weight file "
                                    f"names and could not ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        for module in model.modules():
            if isinstance(module, bnb.nn.Linear4bit):
                module.support_avx512bf16_for_cpu = False
        return model.eval()
