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

from .models.hf import HFModel
from .probes import knowmem, mink, verbmem
from .probes.base import ProbeOutput
from .quantize import forensics
from .quantize.base import SchemeUnavailable

if TYPE_CHECKING:
    from .audit import AuditConfig, _Workload
    from .models.loading import Checkpoint


def probe_all(model: HFModel, tok, work: _Workload, full: bool) -> list[ProbeOutput]:
    """Run the probes on one variant; ``full=False`` is the original model's subset for retention."""
    outs = [verbmem.run(model, tok, work.verbmem["forget"], "forget")]
    if "forget" in work.knowmem:
        outs.append(knowmem.run(model, tok, work.knowmem["forget"], "forget"))
    for split in ("forget", "holdout"):  # one forward pass each; shows whether Q(original) still knows
        outs += mink.run(model, work.mink[split], split, work.zlib[split])
    if "retain" in work.knowmem:  # utility; the original's too, for the retain-utility ratio
        outs.append(knowmem.run(model, tok, work.knowmem["retain"], "retain"))
    if full:
        if work.verbmem["holdout"]:  # empty when every holdout text is shorter than the given prompts
            outs.append(verbmem.run(model, tok, work.verbmem["holdout"], "holdout"))
        if "holdout" in work.knowmem:
            outs.append(knowmem.run(model, tok, work.knowmem["holdout"], "holdout"))
    return outs


def run_variant(scheme, ckpt, original, tok, work, cfg, on_step):
    """Build one variant (and the original's), probe both, and free them: at most one quantized copy
    beside the loaded models at any time."""
    on_step(f"{scheme.name}: building and probing")
    outs = probe_scheme(scheme, ckpt, tok, work, cfg, full=True)
    orig_outs: list[ProbeOutput] = []
    fx = None
    if original is not None:
        on_step(f"{scheme.name}: probing the original")
        try:
            orig_outs = probe_scheme(scheme, original, tok, work, cfg, full=False)
        except SchemeUnavailable:
            pass
        if scheme.bits and scheme.bits < 32:
            fx = forensics.compare(forensics.model_pairs(original.model, ckpt.model), [scheme])[scheme.name]
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return outs, orig_outs, fx


def probe_scheme(scheme, source: Checkpoint, tok, work: _Workload, cfg: AuditConfig, full: bool) -> list[ProbeOutput]:
    """Build ``scheme`` on ``source`` and probe it. A seeded scheme (weight noise) is built once per seed
    and each sample's scores are averaged over the draws; the first draw's generations are the evidence."""
    text = work.relearn if scheme.relearns else work.calibration
    runs = []
    for draw in scheme.seeded():
        built = place(draw.build(source, text), cfg)
        runs.append(probe_all(HFModel(scheme.name, built, tok, cfg.batch_size), tok, work, full))
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
