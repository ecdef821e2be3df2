"""Forget losses and retain regularizers (Zhang et al., Appendix B; open-unlearning's definitions).

* GA: gradient ascent on the forget set's next-token cross-entropy, L = −CE(forget).
* NPO (Zhang et al., 2024) with the frozen original as reference, on *sequence* log-likelihoods:
  L = −(2/β) · E[log σ(−β · (log p_θ(x) − log p_ref(x)))]. MUSE's implementation subtracts raw logits,
  which ignores the softmax denominator; this uses real log-likelihoods. At θ = ref, L = (2/β)·log 2.
* GDR: + α · CE(retain).
* KLR: + α · KL(p_θ(·|x) ‖ p_original(·|x)) on retain inputs, per token, with proper log-softmax
  distributions (MUSE applies ``kl_div`` to unnormalised logits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.batch import Batch


def _logits(model, b: Batch) -> torch.Tensor:
    """Next-token logits of a teacher-forced batch. No KV cache: nothing decodes after this forward, and
    a config's ``use_cache: true`` would hold every layer's keys and values until it returns; under
    ``no_grad`` (the frozen reference's and original's forwards) nothing else keeps them."""
    device = next(model.parameters()).device
    ids, mask = b.input_ids.to(device), b.attention_mask.to(device)
    return model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()


def cross_entropy(model, b: Batch) -> torch.Tensor:
    """Mean next-token cross-entropy over the batch's real tokens (what HF's ``labels=`` loss computes)."""
    logits = _logits(model, b)
    labels = b.labels[:, 1:].reshape(-1).to(logits.device)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels, ignore_index=-100)


def sequence_logprob(model, b: Batch) -> torch.Tensor:
    """log p(x) per sequence: the sum of its next-token log-probs."""
    logp = torch.log_softmax(_logits(model, b), dim=-1)
    target = b.labels[:, 1:].to(logp.device)
    picked = logp.gather(-1, target.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return (picked * (target != -100)).sum(dim=1)


def ga_loss(model, forget: Batch) -> torch.Tensor:
    return -cross_entropy(model, forget)


def npo_loss(model, ref_model, forget: Batch, beta: float = 0.1) -> torch.Tensor:
    with torch.no_grad():
        ref = sequence_logprob(ref_model, forget)
    ratio = sequence_logprob(model, forget) - ref
    return -(2.0 / beta) * F.logsigmoid(-beta * ratio).mean()


def kl_to_original(model, original, retain: Batch) -> torch.Tensor:
    """Mean over real tokens of KL(p_θ(·|x) ‖ p_original(·|x))."""
    logp = torch.log_softmax(_logits(model, retain), dim=-1)
    with torch.no_grad():
        logq = torch.log_softmax(_logits(original, retain), dim=-1)
    per_token = (logp.exp() * (logp - logq)).sum(-1)
    real = (retain.labels[:, 1:] != -100).float().to(per_token.device)
    return (per_token * real).sum() / real.sum()
