"""Weight-space forensics: where does quantization erase the unlearning? No data needed.

Zhang et al. (ICLR 2025), Section 5: when unlearning moves a weight by less than the quantization step,
the unlearned and the original weight land in the same grid cell, Q(unlearned) = Q(original) there,
and the forgotten knowledge comes back. For each scheme and each Linear this module measures

- ``code_overlap``: the fraction of weights whose integer code (grid cell) is identical. Codes are
  compared, not dequantized floats: every optimizer step shifts each group's absmax a little, which
  changes every dequantized value in the group even when no code moved;
- ``scale_changed``: the fraction of groups whose scale (or zero point, or minimum) changed at all;
- ``median_dw_over_step``: the median of |ΔW| / Δ, with Δ the original's quantization step. Well below
  0.5 means most updates cannot cross a cell boundary.

Overlaps are exact counts; medians come from a histogram with bins of 0.001 on [0, 8) (plus one
overflow bin), so memory stays bounded whatever the model size. ``diff`` streams the
two checkpoints one tensor at a time from their safetensors files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import torch

from ..models.weights import WeightSource
from .base import Scheme, out_in_weight, quantizable_modules

BIN = 0.001
N_BINS = 8000
TOP = 5
CHUNK = 256  # rows per slice; a multiple of 64


def _hist_median(hist: torch.Tensor) -> float | None:
    total = int(hist.sum())
    if total == 0:
        return None
    i = int(torch.searchsorted(torch.cumsum(hist, 0), (total + 1) // 2))
    return (i + 0.5) * BIN if i < N_BINS else float("inf")


def _empty_hist() -> torch.Tensor:
    return torch.zeros(N_BINS + 1, dtype=torch.int64)


@dataclass
class _Tally:
    same: int = 0
    weights: int = 0
    changed: int = 0
    groups: int = 0
    hist: torch.Tensor = field(default_factory=_empty_hist)

    def add(self, other: "_Tally") -> None:
        self.same, self.weights = self.same + other.same, self.weights + other.weights
        self.changed, self.groups = self.changed + other.changed, self.groups + other.groups
        self.hist += other.hist


def _module(scheme: Scheme, w_orig: torch.Tensor, w_new: torch.Tensor) -> _Tally | None:
    """One module, in slices of CHUNK rows so that temporaries stay a small multiple of one slice.
    CHUNK is a multiple of 64, so flattened NF4/FP4 blocks never straddle two slices."""
    t = _Tally()
    for r0 in range(0, w_orig.shape[0], CHUNK):
        wa, wb = w_orig[r0 : r0 + CHUNK].to(torch.float32), w_new[r0 : r0 + CHUNK].to(device=w_orig.device, dtype=torch.float32)
        a = scheme.codes(wa)
        if a is None:
            return None
        b = scheme.codes(wb)
        t.same += int((a.codes.to(wa.device) == b.codes.to(wa.device)).sum())
        t.weights += a.codes.numel()
        t.changed += int((a.params.to(wa.device) != b.params.to(wa.device)).any(dim=1).sum())
        t.groups += a.params.shape[0]
        del b
        step = a.step.to(wa.device)  # a grid computed elsewhere (gguf.quants is numpy) comes back on the CPU
        live = step > 0
        ratio = (wb - wa).abs_()[live].div_(step[live]).div_(BIN).clamp_(max=N_BINS)
        t.hist += torch.bincount(ratio.long(), minlength=N_BINS + 1).cpu()
    return t


def compare(pairs: Iterable[tuple[str, torch.Tensor, torch.Tensor]], schemes: list[Scheme]) -> dict:
    """Forensics for (module name, original (out, in), other (out, in)) pairs under each scheme."""
    tallies = {s.name: _Tally() for s in schemes}
    modules: dict[str, list] = {s.name: [] for s in schemes}
    skipped = {}
    for name, w_orig, w_new in pairs:
        norm = float(w_orig.float().norm())
        rel = float((w_new.float() - w_orig.float()).norm()) / norm if norm > 0 else None
        for s in schemes:
            if s.name in skipped:
                continue
            t = _module(s, w_orig, w_new)
            if t is None:
                skipped[s.name] = "codes depend on more than the weight (calibration) or are not exposed"
                continue
            tallies[s.name].add(t)
            modules[s.name].append({"module": name, "code_overlap": t.same / t.weights, "scale_changed": t.changed / t.groups,
                                    "median_dw_over_step": _hist_median(t.hist), "relative_change": rel})
    out = {}
    for s in schemes:
        t = tallies[s.name]
        if s.name in skipped or t.weights == 0:
            out[s.name] = {"status": "skipped", "reason": skipped.get(s.name, "no quantizable modules")}
            continue
        ranked = sorted(modules[s.name], key=lambda m: m["code_overlap"])
        out[s.name] = {
            "status": "measured", "code_overlap": t.same / t.weights, "scale_changed": t.changed / t.groups,
            "median_dw_over_step": _hist_median(t.hist), "n_weights": t.weights, "n_groups": t.groups,
            "most_changed": [m["module"] for m in ranked[:TOP]], "modules": modules[s.name],
        }
    return out


def model_pairs(original: torch.nn.Module, other: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """Pairs from two models in memory of the same architecture."""
    mods = dict(quantizable_modules(other))
    for name, mod in quantizable_modules(original):
        yield name, out_in_weight(mod), out_in_weight(mods[name])


def source_pairs(original: WeightSource, other: WeightSource, model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """(module, original (out, in), other (out, in)) for every quantizable module of ``model`` (the
    architecture; its weights are not read), streamed from the two checkpoints' files: one tensor of
    each resident at a time."""
    from transformers.pytorch_utils import Conv1D

    for name, mod in quantizable_modules(model):
        wa, wb = original.get(f"{name}.weight"), other.get(f"{name}.weight")
        if isinstance(mod, Conv1D):
            wa, wb = wa.t(), wb.t()
        yield name, wa, wb


def checkpoint_pairs(original_dir: Path, other_dir: Path, stats: dict) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """Pairs streamed from two checkpoint directories (safetensors only), checked as the audit checks a
    checkpoint; the module list comes from the architecture built on the meta device."""
    from ..errors import InputError
    from ..models.loading import open_directory_weights

    a, skeleton = open_directory_weights(original_dir, "original")
    b, _ = open_directory_weights(other_dir, "unlearned")
    if dict(a.shapes) != dict(b.shapes):
        raise InputError(f"{other_dir}: not the same architecture as {original_dir} (tensor names or shapes differ)")
    for pair in source_pairs(a, b, skeleton):
        yield pair
        stats["bytes_read"] = a.stats["bytes_read"] + b.stats["bytes_read"]


def diff(original_dir: Path, other_dir: Path, schemes: list[Scheme]) -> dict:
    """The ``diff`` command's report: forensics per scheme plus read throughput."""
    stats = {"bytes_read": 0}
    t = time.perf_counter()
    result = compare(checkpoint_pairs(Path(original_dir), Path(other_dir), stats), schemes)
    seconds = time.perf_counter() - t
    return {"original": str(original_dir), "other": str(other_dir), "schemes": result,
            "bytes_read": stats["bytes_read"], "seconds": round(seconds, 3),
            "gb_per_s": round(stats["bytes_read"] / 1e9 / seconds, 3) if seconds > 0 else None}
