"""torchao weight-only quantization, the library cross-check for the tool's own RTN.

``torchao-int{2,3,4,8}-asym`` run ``IntxWeightOnlyConfig`` (asymmetric, groups of 128): their
dequantized weights are bit-identical to ``rtn-int{N}-asym`` (a test checks it). ``torchao-int8`` runs
``Int8WeightOnlyConfig`` (symmetric, per channel), whose scale is absmax / 127.5 rather than Eq. 2's
absmax / 128: a different grid, which is why the paper's symmetric presets are the tool's own code.

Each Linear (and GPT-2 Conv1D, transposed) is quantized by torchao on its own (an input size that is
not a multiple of 128, such as SmolLM2's 576, is zero-padded first, because torchao refuses a short
last group; padding with zeros changes no group's range), then its dequantized
weight is written into the model, so the variant runs through plain transformers.
torchao's int4 *packed* layout does not run on CPU here (it needs CUDA or the ``mslk`` package).
"""

from __future__ import annotations

import torch
from torch import nn

from ..versions import installed_version
from .base import SchemeUnavailable, WeightwiseScheme


def ao_config(bits: int, symmetric: bool):
    try:
        from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig
        from torchao.quantization.granularity import PerGroup
        from torchao.quantization.quant_primitives import MappingType
    except ImportError as exc:
        raise SchemeUnavailable(f"torchao is not installed (pip install 'unlearn-audit[torchao]'): {exc}")
    if symmetric:
        return Int8WeightOnlyConfig()
    return IntxWeightOnlyConfig(weight_dtype=getattr(torch, f"int{bits}"), granularity=PerGroup(128),
                                mapping_type=MappingType.ASYMMETRIC)


def torchao_dequantized(weight: torch.Tensor, config) -> torch.Tensor:
    from torchao.quantization import quantize_

    out_f, in_f = weight.shape
    padded = -(-in_f // 128) * 128  # torchao refuses a short last group; zero columns change no range
    lin = nn.Linear(padded, out_f, bias=False, device=weight.device)  # built where the weight is
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[:, :in_f] = weight.to(torch.float32)
    quantize_(nn.Sequential(lin), config)
    return lin.weight.dequantize()[:, :in_f].to(weight.dtype)


class TorchAOScheme(WeightwiseScheme):
    def __init__(self, bits: int, symmetric: bool) -> None:
        self.bits, self.symmetric = bits, symmetric
        self.name = "torchao-int8" if symmetric else f"torchao-int{bits}-asym"
        self.description = ("torchao int8 weight-only (symmetric per channel, absmax/127.5)" if symmetric
                            else f"torchao int{bits} weight-only, asymmetric, groups of 128 (= rtn-int{bits}-asym)")

    def params(self) -> dict:
        return {"method": "torchao", "bits": self.bits, "symmetric": self.symmetric,
                "group_size": "per-channel" if self.symmetric else 128, "library": f"torchao {installed_version('torchao')}",
                "skipped_modules": "lm_head (output embeddings) and embeddings"}

    def check(self, checkpoint, calibration) -> None:
        ao_config(self.bits, self.symmetric)

    def quantize_rows(self, w: torch.Tensor) -> torch.Tensor:
        return torchao_dequantized(w, ao_config(self.bits, self.symmetric))
