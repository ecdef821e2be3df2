"""One variant job: fill the resident model with a scheme's variant, run every probe on it, and refill.

This is the unit of work an executor (executor.py) runs. There is one model in memory for the whole
audit (models/weights.py): each variant streams the audited checkpoint's weights into it, quantizing
on the way in, and the original's variant is then streamed into the same model. No model is ever
copied. A seeded scheme (weight noise) is several fills whose per-sample scores are averaged; a
relearning scheme gets the relearning text instead of calibration text.
"""

from __future__ import annotations

import gc
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..machine import computes_fast
from ..models.decode import DraftBook
from ..models.hf import BatchSize, HFModel
from ..models.weights import empty_model
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
                on_step, resident, original_outputs: tuple[ProbeOutput, ...] | None = None,
                drafts: DraftBook | None = None, batch: BatchSize | None = None) -> VariantRun:
    """One variant of the audited checkpoint, and the original's under the same scheme (unless its
    outputs are given, from the shared cache), both built in ``resident``, probed, and compared weight by
    weight straight from the two checkpoints' files. ``drafts`` holds earlier variants' greedy outputs,
    which this variant's decoding verifies instead of generating token by token; ``batch`` is the audit's
    batch size, as earlier variants left it (models/hf.BatchSize)."""
    batch = batch or BatchSize(cfg.batch_size)
    on_step(f"{scheme.name}: building and probing")
    decoding: dict[str, dict] = {"audited": {}}
    outs = probe_scheme(scheme, ckpt, ckpt.tokenizer, work, cfg, ROLES, resident, drafts, "audited", decoding["audited"], batch)
    orig_outs: list[ProbeOutput] = []
    fx = None
    if original is not None and original_outputs is not None:
        orig_outs = list(original_outputs)
    elif original is not None:
        on_step(f"{scheme.name}: probing the original")
        try:
            # decoded with the audited model's tokenizer, which tokenized the workload (same vocabulary, checked)
            decoding["original"] = {}
            orig_outs = probe_scheme(scheme, original, ckpt.tokenizer, work, cfg, ORIGINAL_ROLES, resident, drafts, "original",
                                     decoding["original"], batch)
        except SchemeUnavailable:
            pass
    if original is not None and scheme.bits and scheme.bits < 32:
        if forensics.has_codes(scheme):  # on the audit's device: two of the checkpoints' tensors at a time
            where = next(resident.parameters()).device if resident is not None else None
            fx = forensics.compare(forensics.source_pairs(original.source, ckpt.source, resident, where), [scheme])[scheme.name]
        else:  # what measuring would say, without streaming both checkpoints to find it out
            fx = {"status": "skipped", "reason": forensics.NO_CODES}
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return VariantRun(tuple(outs), tuple(orig_outs), fx, {k: v for k, v in decoding.items() if v})


def probe_scheme(scheme: Scheme, source: Checkpoint, tok, work: Workload, cfg: AuditConfig,
                 roles: tuple[str, ...] = ROLES, resident=None, drafts: DraftBook | None = None, role: str = "audited",
                 decoding: dict | None = None, batch: BatchSize | None = None) -> list[ProbeOutput]:
    """Build ``scheme`` on ``source`` (into ``resident`` when given) and probe it. A seeded scheme
    (weight noise) is built once per seed and each sample's scores are averaged over the draws; the
    first draw's generations are the evidence. Greedy decoding verifies ``drafts`` and shares prompt
    prefixes unless ``--no-draft``; its token counts are added to ``decoding``. Every draw starts from
    ``batch`` (``--batch-size``, or what out-of-memory left of it)."""
    text = work.relearn if scheme.relearns else work.calibration
    batch = batch or BatchSize(cfg.batch_size)
    runs = []
    for draw in scheme.seeded():
        built = place(draw.build(source, text, into=resident), cfg)
        model = HFModel(scheme.name, built, tok, batch, drafts=drafts if cfg.draft else None, role=role,
                        share_prefix=cfg.draft)
        runs.append(probe_all(model, tok, work, roles))
        if decoding is not None:
            for k, v in model.decoding.items():
                decoding[k] = decoding.get(k, 0) + v
        del built, model
    if len(runs) == 1:
        return runs[0]
    return [replace(o, values=tuple(float(np.mean(v)) for v in zip(*(r[i].values for r in runs)))) for i, o in enumerate(runs[0])]


def compute_dtype(cfg: AuditConfig, ckpt: Checkpoint) -> str:
    """``--dtype auto``: the dtype the checkpoint is stored in (bfloat16 or float16) where the device
    computes it fast, else float32, the exact path. bfloat16 is fast on a GPU from Ampere on and on a
    CPU with AVX512-BF16/AMX, where it measured about twice as fast as float32 and takes half the memory;
    float16 on every GPU and on a CPU with AMX-FP16 (``machine.computes_fast``). A CPU without those
    instructions computes either tens of times slower than float32, so a float16 checkpoint (Llama-2-7b-hf
    and many fine-tunes) is computed there in float32, which holds every float16 value exactly."""
    if cfg.dtype != "auto":
        return cfg.dtype
    stored = ckpt.source.stored_dtype()
    return stored if stored in ("bfloat16", "float16") and computes_fast(stored, cfg.device) else "float32"


def resident_model(ckpt: Checkpoint, cfg: AuditConfig):
    """The one model of the audit: ``ckpt``'s architecture, empty, in the compute dtype on the device."""
    return empty_model(ckpt.config, getattr(torch, cfg.dtype), cfg.device)


def place(model, cfg: AuditConfig):
    """Move a built variant to the compute device and dtype: a no-op for the resident model, which is
    already there; bitsandbytes variants keep the placement the library gave them."""
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        return model
    if cfg.dtype == "auto":  # not resolved (a caller outside run_audit): the model keeps its own dtype
        return model.to(device=cfg.device)
    return model.to(device=cfg.device, dtype=getattr(torch, cfg.dtype))
