"""Weight-space forensics: where does quantization erase the unlearning? No data needed.

Zhang et al. (ICLR 2025), Section 5: when unlearning moves a weight by less than the quantization step,
the unlearned and the original weight land in the same grid cell, Q(unlearned) = Q(original) there,
and the forgotten knowledge comes back. For each scheme and each Linear this module measures

- ``code_overlap``: the fraction of weights whose integer code (grid cell) is identical. Codes are
  compared, not dequantized floats: every optimizer step shifts each group's absmax a little, which
  changes every dequantized value in the group even when no code moved;
- ``scale_changed``: the fraction of groups whose scale (or zero point, or minimum) changed at all;
- ``median_dw_over_step``: the median of |ΔW| / Δ, with Δ the original's quantization step. Well below
  0.5 means most updates cannot cross a cell boundary;
- ``changed_same_cell``: among the weights that changed at all, the share whose code did not change;
- ``changed_in_zero_cell``: among the weights that changed at all, the share whose original code is the
  zero cell (``GridCodes.zero``: the code that dequantizes to 0; for GGUF Q4_1/Q5_1, whose grid is
  offset by the block minimum, the code of the grid point nearest 0).

Whatever the grid, and in every measured scheme's block as well as at the top level of ``measure``:

- ``changed_fraction``: the fraction of weights with w_new != w_orig (compared as values, so -0 = +0);
- ``median_abs_w_changed``: the median |w_orig| of those weights. The hypothesis this tests: in pure
  bfloat16 training at lr ≈ 1e-5 an update below about |w| / 512 rounds away, so only weights with
  |w| ≲ 5e-3 move at all, and those sit in the zero or near-zero cells of 4-bit grids;
- ``bf16_representable``, per side (``original``, ``unlearned``): True when every float32 weight has
  the low 16 bits of its float32 pattern zero, i.e. is exactly a bfloat16 value, so the checkpoint
  was probably trained or stored in bfloat16 and only cast up; None when no weight is float32 (a
  bfloat16 file is trivially representable, a float16 one is not the question).

Every fraction is an exact count over the quantizable weights. Medians come from histograms, so memory
stays bounded whatever the model size: |ΔW| / Δ in bins of 0.001 on [0, 8) plus one overflow bin;
|w| in log-spaced bins, 100 per decade on [1e-12, 1e4) (each bin spans a factor 10^0.01, so the
reported bin centre is within 1.2% of the true median), plus one bin below 1e-12 (reported as 0) and
one above (reported as infinity). ``diff`` streams the two checkpoints one tensor at a time from their
safetensors files, and every pass works on slices of ``CHUNK`` rows.
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
LOG_LO, PER_DECADE, N_DECADES = -12, 100, 16  # |w| histogram: 100 bins per decade on [1e-12, 1e4)
W_BINS = PER_DECADE * N_DECADES
TOP = 5
CHUNK = 256  # rows per slice; a multiple of 64
SIDES = ("original", "unlearned")


def _hist_median(hist: torch.Tensor) -> float | None:
    total = int(hist.sum())
    if total == 0:
        return None
    i = int(torch.searchsorted(torch.cumsum(hist, 0), (total + 1) // 2))
    return (i + 0.5) * BIN if i < N_BINS else float("inf")


def _empty_hist() -> torch.Tensor:
    return torch.zeros(N_BINS + 1, dtype=torch.int64)


def _abs_hist(w: torch.Tensor) -> torch.Tensor:
    """Counts of |w| in the log-spaced bins: index 0 below 1e-12 (and 0), 1..W_BINS the decades' bins,
    W_BINS + 1 from 1e4 up (and NaN)."""
    pos = w.abs().log10_().sub_(LOG_LO).mul_(PER_DECADE).floor_()
    pos.nan_to_num_(nan=W_BINS, posinf=W_BINS, neginf=-1).clamp_(-1, W_BINS).add_(1)
    return torch.bincount(pos.long(), minlength=W_BINS + 2).cpu()


def _abs_median(hist: torch.Tensor) -> float | None:
    """The (lower) median of the |w| histogram: the centre of its bin on the log scale."""
    total = int(hist.sum())
    if total == 0:
        return None
    i = int(torch.searchsorted(torch.cumsum(hist, 0), (total + 1) // 2))
    if i == 0:
        return 0.0
    return 10 ** (LOG_LO + (i - 0.5) / PER_DECADE) if i <= W_BINS else float("inf")


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass
class _Tally:
    """One scheme's counts: weights with the same code, groups with changed params, the |ΔW| / Δ
    histogram, and among the weights that changed at all (``moved``) those that kept their code and
    those whose original code is the zero cell (``zero_known`` is False when the scheme has none)."""

    same: int = 0
    weights: int = 0
    changed: int = 0
    groups: int = 0
    moved: int = 0
    moved_same: int = 0
    moved_zero: int = 0
    zero_known: bool = True
    hist: torch.Tensor = field(default_factory=_empty_hist)

    def add(self, other: "_Tally") -> None:
        self.same, self.weights = self.same + other.same, self.weights + other.weights
        self.changed, self.groups = self.changed + other.changed, self.groups + other.groups
        self.moved, self.moved_same = self.moved + other.moved, self.moved_same + other.moved_same
        self.moved_zero += other.moved_zero
        self.zero_known = self.zero_known and other.zero_known
        self.hist += other.hist

    def cells(self) -> dict:
        """Where the changed weights lie on this grid."""
        return {"changed_same_cell": _share(self.moved_same, self.moved),
                "changed_in_zero_cell": _share(self.moved_zero, self.moved) if self.zero_known else None}


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
        codes = a.codes.to(wa.device)  # a grid computed elsewhere (gguf.quants is numpy) comes back on the CPU
        same, moved = codes == b.codes.to(wa.device), wa != wb
        t.same += int(same.sum())
        t.weights += a.codes.numel()
        t.changed += int((a.params.to(wa.device) != b.params.to(wa.device)).any(dim=1).sum())
        t.groups += a.params.shape[0]
        t.moved += int(moved.sum())
        t.moved_same += int(same.logical_and_(moved).sum())
        if a.zero is None:
            t.zero_known = False
        else:
            t.moved_zero += int((codes == a.zero.to(wa.device)).logical_and_(moved).sum())
        del b, same, moved, codes
        step = a.step.to(wa.device)
        live = step > 0
        ratio = (wb - wa).abs_()[live].div_(step[live]).div_(BIN).clamp_(max=N_BINS)
        t.hist += torch.bincount(ratio.long(), minlength=N_BINS + 1).cpu()
    return t


@dataclass
class _Changes:
    """What changed whatever the grid: weights, changed weights, the log |w_orig| histogram of the changed
    ones, and per side (original, unlearned) the float32 weights seen and those not bfloat16-exact."""

    weights: int = 0
    changed: int = 0
    hist: torch.Tensor = field(default_factory=lambda: torch.zeros(W_BINS + 2, dtype=torch.int64))
    f32: list[int] = field(default_factory=lambda: [0, 0])
    not_bf16: list[int] = field(default_factory=lambda: [0, 0])

    def add(self, other: "_Changes") -> None:
        self.weights, self.changed = self.weights + other.weights, self.changed + other.changed
        self.hist += other.hist
        self.f32 = [x + y for x, y in zip(self.f32, other.f32)]
        self.not_bf16 = [x + y for x, y in zip(self.not_bf16, other.not_bf16)]

    def summary(self) -> dict:
        return {"n_changed": self.changed, "changed_fraction": _share(self.changed, self.weights),
                "median_abs_w_changed": _abs_median(self.hist),
                "bf16_representable": {side: (self.not_bf16[i] == 0 if self.f32[i] else None) for i, side in enumerate(SIDES)}}


def _changes(w_orig: torch.Tensor, w_new: torch.Tensor) -> _Changes:
    """The grid-independent pass over one module, in slices of CHUNK rows. A float32 value is exactly a
    bfloat16 value when the low 16 bits of its pattern are zero (bfloat16 is float32's top half)."""
    c = _Changes()
    for r0 in range(0, w_orig.shape[0], CHUNK):
        ra, rb = w_orig[r0 : r0 + CHUNK], w_new[r0 : r0 + CHUNK]
        for i, raw in enumerate((ra, rb)):
            if raw.dtype == torch.float32:
                c.f32[i] += raw.numel()
                c.not_bf16[i] += int(raw.view(torch.int32).bitwise_and(0xFFFF).count_nonzero())
        wa, wb = ra.to(torch.float32), rb.to(device=ra.device, dtype=torch.float32)
        moved = wa != wb
        c.weights += wa.numel()
        c.changed += int(moved.sum())
        c.hist += _abs_hist(wa[moved])
    return c


def measure(pairs: Iterable[tuple[str, torch.Tensor, torch.Tensor]], schemes: list[Scheme]) -> dict:
    """Forensics for (module name, original (out, in), other (out, in)) pairs: the grid-independent
    numbers (``n_weights``, ``n_changed``, ``changed_fraction``, ``median_abs_w_changed``,
    ``bf16_representable``) and ``schemes``, one block per scheme, each measured block repeating them
    (the audit keeps one scheme's block per variant)."""
    tallies = {s.name: _Tally() for s in schemes}
    modules: dict[str, list] = {s.name: [] for s in schemes}
    skipped = {}
    total = _Changes()
    for name, w_orig, w_new in pairs:
        norm = float(w_orig.float().norm())
        rel = float((w_new.float() - w_orig.float()).norm()) / norm if norm > 0 else None
        ch = _changes(w_orig, w_new)
        total.add(ch)
        for s in schemes:
            if s.name in skipped:
                continue
            t = _module(s, w_orig, w_new)
            if t is None:
                skipped[s.name] = NO_CODES
                continue
            tallies[s.name].add(t)
            modules[s.name].append({"module": name, "code_overlap": t.same / t.weights, "scale_changed": t.changed / t.groups,
                                    "median_dw_over_step": _hist_median(t.hist), "relative_change": rel,
                                    "changed_fraction": _share(ch.changed, ch.weights), **t.cells()})
    overall = {"n_weights": total.weights, **total.summary()}
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
            **total.summary(), **t.cells(), "most_changed": [m["module"] for m in ranked[:TOP]], "modules": modules[s.name],
        }
    return {**overall, "schemes": out}


def compare(pairs: Iterable[tuple[str, torch.Tensor, torch.Tensor]], schemes: list[Scheme]) -> dict:
    """``measure``'s per-scheme blocks alone, keyed by scheme name."""
    return measure(pairs, schemes)["schemes"]


def model_pairs(original: torch.nn.Module, other: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """Pairs from two models in memory of the same architecture."""
    mods = dict(quantizable_modules(other))
    for name, mod in quantizable_modules(original):
        yield name, out_in_weight(mod), out_in_weight(mods[name])


NO_CODES = "codes depend on more than the weight (calibration) or are not exposed"


def has_codes(scheme: Scheme) -> bool:
    """Whether ``scheme`` defines grid cells of a weight alone (``Scheme.codes``); GPTQ, AWQ and the
    library quantizers do not, and the audit then streams no checkpoint for them."""
    return type(scheme).codes is not Scheme.codes


def source_pairs(original: WeightSource, other: WeightSource, model: torch.nn.Module,
                 device: torch.device | str | None = None) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """(module, original (out, in), other (out, in)) for every quantizable module of ``model`` (the
    architecture; its weights are not read), streamed from the two checkpoints' files: one tensor of
    each resident at a time, moved to ``device`` (the audit's GPU, where the comparison then runs)."""
    from transformers.pytorch_utils import Conv1D

    for name, mod in quantizable_modules(model):
        wa, wb = original.get(f"{name}.weight"), other.get(f"{name}.weight")
        if device is not None:
            wa, wb = wa.to(device), wb.to(device)
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
    """The ``diff`` command's report: ``measure``'s result (grid-independent numbers and one block per
    scheme) plus read throughput."""
    stats = {"bytes_read": 0}
    t = time.perf_counter()
    result = measure(checkpoint_pairs(Path(original_dir), Path(other_dir), stats), schemes)
    seconds = time.perf_counter() - t
    return {"original": str(original_dir), "other": str(other_dir), **result,
            "bytes_read": stats["bytes_read"], "seconds": round(seconds, 3),
            "gb_per_s": round(stats["bytes_read"] / 1e9 / seconds, 3) if seconds > 0 else None}
