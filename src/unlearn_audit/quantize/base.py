"""The scheme contract, and the typed outcome of trying to build a variant.

A scheme either builds a model or raises ``SchemeUnavailable`` with the reason, which the variant job
turns into a typed ``Skipped`` outcome (pipeline/types.py): a missing optional library is a finding in
the report with its reason, never a silent drop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

if TYPE_CHECKING:
    from ..models.loading import Checkpoint


class SchemeUnavailable(Exception):
    """Raised by ``Scheme.build`` when the scheme cannot run here; the message is the reason."""


@dataclass(frozen=True)
class GridCodes:
    """Where one (out, in) weight lands on a scheme's grid: the comparable evidence of Section 5.

    ``codes`` holds each weight's integer cell; ``params`` one row per group (scale, and zero point or
    minimum where the format has one), so a changed group is any differing row; ``step`` is each
    weight's quantization step Δ (for non-uniform grids, the block's absmax times the codebook's mean
    spacing), for |ΔW| / Δ.
    """

    codes: torch.Tensor
    params: torch.Tensor  # (n_groups, k)
    step: torch.Tensor  # float32, same shape as codes


class Scheme(ABC):
    name: str
    bits: int | None
    description: str
    #: True when ``build`` uses calibration text (GPTQ, AWQ); the audit then passes token batches.
    calibrated: bool = False
    #: True when ``build`` takes the relearning text instead (relearn-*): --relearn-data, else retain.
    relearns: bool = False

    def params(self) -> dict:
        """Everything that defines the scheme, recorded in the report's config."""
        return {}

    @abstractmethod
    def build(self, checkpoint: "Checkpoint", calibration: list[list[int]] | None = None) -> nn.Module:
        """A new model holding the quantized weights; ``checkpoint.model`` itself is left untouched.
        ``calibration`` is a list of token-id sequences, used only by calibrated schemes."""

    def seeded(self) -> list["Scheme"]:
        """The schemes whose models are probed and averaged per sample to make this variant: itself, except
        for random perturbations drawn once per seed (weight noise)."""
        return [self]

    def codes(self, weight: torch.Tensor) -> GridCodes | None:
        """The grid cells of one (out, in) weight, for overlap forensics; None where a code is not a
        function of the weight alone (GPTQ and AWQ also depend on calibration activations)."""
        return None


def quantizable_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every nn.Linear and GPT-2 Conv1D except the output head, as in the paper and HF's quantizers."""
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, Conv1D)) and module is not head
    ]


def out_in_weight(module: nn.Module) -> torch.Tensor:
    """The weight as (out, in): Conv1D stores (in, out), so it is transposed."""
    from transformers.pytorch_utils import Conv1D

    return module.weight.detach().t() if isinstance(module, Conv1D) else module.weight.detach()


def write_weight(module: nn.Module, q: torch.Tensor) -> None:
    """Store an (out, in) matrix into a Linear, or transposed into a GPT-2 Conv1D."""
    from transformers.pytorch_utils import Conv1D

    with torch.no_grad():
        module.weight.copy_(q.t() if isinstance(module, Conv1D) else q)


def fake_quantize(model: nn.Module, quantize: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Replace each quantizable weight by its dequantized value Q(w), in place."""
    for _, module in quantizable_modules(model):
        write_weight(module, quantize(out_in_weight(module)))
