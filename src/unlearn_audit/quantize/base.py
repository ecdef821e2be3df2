"""The scheme contract, and the typed outcome of trying to build a variant.

A scheme either builds a model or raises ``SchemeUnavailable`` with the reason, which the variant job
turns into a typed ``Skipped`` outcome (pipeline/types.py): a missing optional library is a finding in
the report with its reason, never a silent drop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..models.weights import empty_model, fill
from ..models.weights import quantizable_modules as quantizable_modules  # every scheme's module list

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

    ``zero`` is the code of each weight's zero cell, broadcastable to ``codes`` (a 0-d tensor where
    the grid fixes it, one value per weight where it depends on the group): the cell whose dequantized
    value is 0, or, on a grid offset by the block minimum (GGUF Q4_1/Q5_1), the cell of the grid point
    nearest 0. It tells whether the weights unlearning moved sit in the cell that small weights share
    (Section 5's explanation of recovery); None where the scheme does not say.
    """

    codes: torch.Tensor
    params: torch.Tensor  # (n_groups, k)
    step: torch.Tensor  # float32, same shape as codes
    zero: torch.Tensor | None = None  # integer, broadcastable to codes


class Scheme(ABC):
    """How to turn a checkpoint into one variant's model.

    ``build`` fills a model from the checkpoint's files (``into``: the audit's one resident model, else a
    new float32 model) and then lets ``apply`` change it in place: whole-model methods (GPTQ and AWQ,
    which need activations; pruning, noise, relearning) work on the filled model. Schemes whose every
    weight is quantized on its own (``WeightwiseScheme``) quantize on the way in instead, so no
    full-precision copy of a weight is ever kept. No scheme copies a whole model."""

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

    def check(self, checkpoint: "Checkpoint", calibration: list[list[int]] | None) -> None:
        """Raise ``SchemeUnavailable`` when the scheme cannot run here, before any weight is read."""

    def build(self, checkpoint: "Checkpoint", calibration: list[list[int]] | None = None,
              into: nn.Module | None = None) -> nn.Module:
        """The variant's model: ``into`` (or a new float32 model) filled from ``checkpoint.source`` and
        transformed. ``calibration`` is a list of token-id sequences, used only by calibrated schemes."""
        self.check(checkpoint, calibration)
        model = into if into is not None else empty_model(checkpoint.config)
        self.fill(model, checkpoint)
        self.apply(model, checkpoint, calibration)
        return model

    def fill(self, model: nn.Module, checkpoint: "Checkpoint") -> None:
        fill(model, checkpoint.source)

    def apply(self, model: nn.Module, checkpoint: "Checkpoint", calibration: list[list[int]] | None) -> None:
        """Change the filled model in place (whole-model schemes); nothing by default (fp32)."""

    def seeded(self) -> list["Scheme"]:
        """The schemes whose models are probed and averaged per sample to make this variant: itself, except
        for random perturbations drawn once per seed (weight noise)."""
        return [self]

    def codes(self, weight: torch.Tensor) -> GridCodes | None:
        """The grid cells of one (out, in) weight, for overlap forensics; None where a code is not a
        function of the weight alone (GPTQ and AWQ also depend on calibration activations)."""
        return None



class NoLibrary(Scheme):
    """A reference preset asked for with ``--backend library`` where no library runs: a typed skip
    (registry.py ``for_backend``)."""

    def __init__(self, reference: Scheme, reason: str) -> None:
        self.name, self.bits, self.reason = f"{reference.name}@library", reference.bits, reason
        self.description = f"{reference.name} through a library: {reason}"

    def check(self, checkpoint, calibration) -> None:
        raise SchemeUnavailable(self.reason)

class WeightwiseScheme(Scheme):
    """A scheme that maps each quantizable weight to Q(w) on its own, row-block by row-block: the
    weights are quantized as they stream in from the files (models/weights.py), in float32 chunks of
    whole rows; ``row_block`` is the number of rows a chunk must be a multiple of (flattened blocks of
    NF4/FP4 span rows)."""

    row_block: int = 1

    @abstractmethod
    def quantize_rows(self, w: torch.Tensor) -> torch.Tensor:
        """Q(w) for float32 (rows, in) rows of one weight, same shape, float32, on w's device."""

    def fill(self, model: nn.Module, checkpoint: "Checkpoint") -> None:
        fill(model, checkpoint.source, self.quantize_rows, self.row_block)


def out_in_weight(module: nn.Module) -> torch.Tensor:
    """The weight as (out, in): Conv1D stores (in, out), so it is transposed."""
    from transformers.pytorch_utils import Conv1D

    return module.weight.detach().t() if isinstance(module, Conv1D) else module.weight.detach()


def write_weight(module: nn.Module, q: torch.Tensor) -> None:
    """Store an (out, in) matrix into a Linear, or transposed into a GPT-2 Conv1D."""
    from transformers.pytorch_utils import Conv1D

    with torch.no_grad():
        module.weight.copy_(q.t() if isinstance(module, Conv1D) else q)
