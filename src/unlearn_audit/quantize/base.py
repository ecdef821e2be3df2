"""The scheme contract, and the typed outcome of trying to build a variant.

A scheme either builds a model (``Built``) or says why it cannot (``Skipped``): a missing optional
library is a finding in the report with its reason, never a silent drop.
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
class Skipped:
    scheme: str
    reason: str


class Scheme(ABC):
    name: str
    bits: int | None
    description: str

    def params(self) -> dict:
        """Everything that defines the scheme, recorded in the report's config."""
        return {}

    @abstractmethod
    def build(self, checkpoint: "Checkpoint") -> nn.Module:
        """A new model holding the quantized weights; ``checkpoint.model`` itself is left untouched."""

    def codes(self, weight: torch.Tensor):
        """Integer codes and scales for one (out, in) weight, for grid-cell overlap; None if not exposed."""
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


def fake_quantize(model: nn.Module, quantize: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Replace each quantizable weight by its dequantized value Q(w), in place."""
    from transformers.pytorch_utils import Conv1D

    with torch.no_grad():
        for _, module in quantizable_modules(model):
            q = quantize(out_in_weight(module))
            module.weight.copy_(q.t() if isinstance(module, Conv1D) else q)
