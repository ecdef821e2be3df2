"""One variant job: build a scheme's model from a checkpoint, run every probe on it, and free it.

This is the unit of work an executor (executor.py) runs. Variants are built one at a time and freed
before the next, so at most one quantized copy sits beside the loaded models. A seeded scheme (weight
noise) is several models whose per-sample scores are averaged; a relearning scheme gets the relearning
text instead of calibration text.
"""

from __future__ import annotations

import gc
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..models.hf import HFModel
from ..probes.base import ROLES, ProbeOutput
from ..probes.registry import plan
from ..quantize import forensics
from ..quantize.base import Scheme, SchemeUnavailable
from .types import AuditConfig, VariantRun, Workload

if TYPE_CHECKING:
    from ..models.loading import Checkpoint

#: What the original model is probed on under each scheme: the forget-set evidence (for retention) and
#: utility (for the retain-utility ratio); the holdout baselines are the audited model's alone.
ORIGINAL_ROLES = ("evidence", "utility")


def probe_all(model: HFModel, tok, work: Workload, roles: tuple[str, ...] = ROLES) -> list[ProbeOutput]:
    """Run every registered probe on one variant, for the splits it prepared whose role is in ``roles``."""
    outs = []
    for probe, step in plan(roles):
        items = work.prepared[probe.name]
        if step.split in items:
            outs += probe.run(model, tok, items[step.split], step.split)
    return outs


def run_variant(scheme: Scheme, ckpt: Checkpoint, original: Checkpoint | None, work: Workload, cfg: AuditConfig,
                on_step) -> VariantRun:
    """Build one variant (and the original's), probe both, and free them: at most one quantized copy
    beside the loaded models at any time."""
    on_step(f"{scheme.name}: building and probing")
    outs = probe_scheme(scheme, ckpt, ckpt.tokenizer, work, cfg, ROLES)
    orig_outs: list[ProbeOutput] = []
    fx = None
    if original is not None:
        on_step(f"{scheme.name}: probing the original")
        try:
            # decoded with the audited model's tokenizer, which tokenized the workload (same vocabulary, checked)
            orig_outs = probe_scheme(scheme, original, ckpt.tokenizer, work, cfg, ORIGINAL_ROLES)
        except SchemeUnavailable:
            pass
        if scheme.bits and scheme.bits < 32:
            fx = forensics.compare(forensics.model_pairs(original.model, ckpt.model), [scheme])[scheme.name]
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return VariantRun(tuple(outs), tuple(orig_outs), fx)


def probe_scheme(scheme: Scheme, source: Checkpoint, tok, work: Workload, cfg: AuditConfig,
                 roles: tuple[str, ...] = ROLES) -> list[ProbeOutput]:
    """Build ``scheme`` on ``source`` and probe it. A seeded scheme (weight noise) is built once per seed
    and each sample's scores are averaged over the draws; the first draw's generations are the evidence."""
    text = work.relearn if scheme.relearns else work.calibration
    runs = []
    for draw in scheme.seeded():
        built = place(draw.build(source, text), cfg)
        runs.append(probe_all(HFModel(scheme.name, built, tok, cfg.batch_size), tok, work, roles))
        del built
    if len(runs) == 1:
        return runs[0]
    return [replace(o, values=tuple(float(np.mean(v)) for v in zip(*(r[i].values for r in runs)))) for i, o in enumerate(runs[0])]


def place(model, cfg: AuditConfig):
    """Move a built variant to the compute device and dtype. Dequantized weights are cast after
    quantization, so bfloat16 compute never changes which grid cell a weight fell in; bitsandbytes
    variants keep the placement the library gave them."""
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        return model
    return model.to(device=cfg.device, dtype=getattr(torch, cfg.dtype))
