"""``unlearn`` and ``remediate``: load, (optionally) compute SURE's saliency map, unlearn, and write a
normal Hugging Face checkpoint with ``unlearning.json`` beside it.

The checkpoint is written atomically (``write_checkpoint``), so an interrupted run (Ctrl-C) never leaves
a half-written model at ``--out``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..data import TextSet
from ..errors import InputError
from ..models.batch import encode, make_batch
from ..models.loading import Checkpoint, write_checkpoint
from ..quantize.base import Scheme
from .confine import Confinement
from .losses import ga_loss, npo_loss
from .saliency import freeze_all_but, saliency_map
from .unlearn import UnlearnConfig, bf16_numerics, unlearn


@dataclass(frozen=True)
class SureConfig:
    percentile: float = 90.0
    per_layer: bool = False


def run_unlearning(
    start: Checkpoint, original: Checkpoint | None, forget: TextSet, retain: TextSet, cfg: UnlearnConfig,
    sure: SureConfig | None, out: Path, max_length: int = 2048,
    on_step: Callable[[int, int, float], None] = lambda i, n, v: None, confine_to: Scheme | None = None,
) -> dict:
    """Unlearn ``start`` in place and write it to ``out``; returns the record saved as unlearning.json.
    ``confine_to``: keep every weight in its cell of the starting model's grid under that scheme (the
    positive control, ``confine.py``)."""
    if out.exists():
        raise InputError(f"{out}: already exists; choose a new directory")
    tok, model = start.tokenizer, start.model
    f, r = encode(tok, forget.texts, max_length), encode(tok, retain.texts, max_length)
    frozen_ref = original.model.eval() if original is not None else None
    for p in (frozen_ref.parameters() if frozen_ref is not None else []):
        p.requires_grad_(False)
    smap, trainable = None, None
    if sure is not None:
        # Eq. 4: the gradient of the forget loss at the starting weights, over the whole forget set.
        if cfg.method.startswith("npo"):
            loss_fn = lambda m, b: npo_loss(m, frozen_ref, b, cfg.beta)  # noqa: E731
        else:
            loss_fn = ga_loss
        batches = [make_batch(f[i : i + cfg.batch_size], tok.pad_token_id) for i in range(0, len(f), cfg.batch_size)]
        model.train()
        smap = saliency_map(model, batches, loss_fn, sure.percentile, sure.per_layer)
        trainable = freeze_all_but(model, smap, sure.per_layer)
    confine = Confinement(model, confine_to) if confine_to is not None else None
    history = unlearn(model, f, r, tok.pad_token_id, cfg, original=frozen_ref, on_step=on_step, confine=confine)
    if cfg.train_dtype == "bfloat16":  # stored as it was trained, whichever path computed it
        model.to(torch.bfloat16)
    record = {
        "method": cfg.method,
        "hyperparameters": cfg.to_dict() | {"max_length": max_length, "optimizer": "AdamW (weight_decay 0)",
                                             "schedule": "constant"},
        # bfloat16 storage: computed natively, or in float32 and rounded after every step (remediate/unlearn.py)
        "numerics": bf16_numerics(str(next(model.parameters()).device), cfg.bf16_compute) if cfg.train_dtype == "bfloat16" else
        {"stored_dtype": str(next(model.parameters()).dtype).removeprefix("torch."), "compute_dtype": cfg.autocast or "float32",
         **({"compute_path": f"{cfg.autocast} autocast on float32 master weights and AdamW state"} if cfg.autocast else {}),
         "device": str(next(model.parameters()).device)},
        "sure": None if smap is None else {**smap.to_dict(), "per_layer": sure.per_layer, "trainable": trainable},
        # A constructed model: Q(unlearned) = Q(start) exactly under this scheme, whatever full precision does.
        "confined_to": None if confine_to is None else {"scheme": confine_to.name, **confine_to.params(),
                                                        "construction": "projected onto the start's grid cells after every step "
                                                                        "(Egashira et al., NeurIPS 2024)"},
        "seed": cfg.seed,
        "start_model": _model_record(start),
        "original_model": None if original is None else _model_record(original),
        "data": {"forget": {"path": forget.path, "sha256": forget.sha256},
                 "retain": {"path": retain.path, "sha256": retain.sha256}},
        "losses": history,
    }
    write_checkpoint(model, tok, out, {"unlearning.json": json.dumps(record, indent=2) + "\n"})
    return record


def _model_record(ckpt) -> dict:
    """A model in unlearning.json: its path and file hashes, and for a Hub id its repo, revision and commit."""
    return {"path": ckpt.path, "files": ckpt.file_hashes, **({"hub": ckpt.hub} if getattr(ckpt, "hub", None) else {})}
