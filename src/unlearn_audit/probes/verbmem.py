"""VerbMem (MUSE; Zhang et al. Eq. 11): can the model continue a forget text verbatim?

The first ``prefix_tokens`` tokens of a text are the prompt; the model continues greedily and the
output is scored against the true continuation with ROUGE-L F1. Prompts can also be given with their
continuation, as MUSE ships them (``verbmem/forget.json``; ``prepare_given``). MUSE generates 128 tokens and truncates
the reference to its first 128; for a continuation shorter than that we stop generating at the
reference's length, so that text a model adds after the reference ends is not counted against it
(``--muse-strict`` keeps MUSE's fixed 128). The prompt is fed as token ids, never re-tokenized from a
decoded string, so the split point is exactly where the tokenizer put it. Decoding skips special tokens and does not
apply ``clean_up_tokenization_spaces`` (destructive for byte-level BPE; ROUGE's own tokenizer drops the
punctuation it would touch, so scores are unaffected).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..models.base import LanguageModel
from .base import Column, Prepared, Probe, ProbeOutput, Step, definitions, rouge_checks, rouge_l_f1, score_rouge


@dataclass(frozen=True)
class VerbMemItem:
    prompt_ids: tuple[int, ...]
    reference: str
    max_new_tokens: int


def prepare(tokenizer, texts: Sequence[str], muse_strict: bool = False, prefix_tokens: int | None = None):
    spec = definitions()["verbmem"]
    prefix = prefix_tokens or spec["prefix_tokens"]
    limit = spec["max_new_tokens"]
    bos = [tokenizer.bos_token_id] if _adds_bos(tokenizer) else []
    items, too_short = [], 0
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        continuation = ids[prefix : prefix + limit]
        if not continuation:
            too_short += 1
            continue
        reference = tokenizer.decode(continuation, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        budget = limit if muse_strict else len(continuation)
        items.append(VerbMemItem(tuple(bos + ids[:prefix]), reference, budget))
    return items, too_short


def prepare_given(tokenizer, pairs: Sequence[tuple[str, str]], muse_strict: bool = False) -> list[VerbMemItem]:
    """Items from given (prompt, gt) pairs, as MUSE's ``metrics/verbmem.py`` scores them: the prompt is
    tokenized with BOS, and the reference is the gt's first ``max_new_tokens`` tokens. As in ``prepare``,
    generation stops at the reference's length (``--muse-strict``: a fixed 128 new tokens, and the gt is
    cut as MUSE cuts it, with BOS counted among the 128)."""
    limit = definitions()["verbmem"]["max_new_tokens"]
    bos = [tokenizer.bos_token_id] if _adds_bos(tokenizer) else []
    items = []
    for prompt, gt in pairs:
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        gt_ids = (bos if muse_strict else []) + tokenizer(gt, add_special_tokens=False)["input_ids"]
        kept = gt_ids[:limit]
        reference = tokenizer.decode(kept, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        budget = limit if muse_strict else len(kept)
        items.append(VerbMemItem(tuple(bos + ids), reference, budget))
    return items


def _adds_bos(tokenizer) -> bool:
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    return tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id]


def run(model: LanguageModel, tokenizer, items: Sequence[VerbMemItem], split: str) -> ProbeOutput:
    outputs = model.greedy([i.prompt_ids for i in items], [i.max_new_tokens for i in items])
    texts = [tokenizer.decode(o, skip_special_tokens=True, clean_up_tokenization_spaces=False) for o in outputs]
    values = tuple(rouge_l_f1(i.reference, t) for i, t in zip(items, texts))
    return ProbeOutput("verbmem", split, "rougeL_f1", values, tuple(texts))


class VerbMem(Probe):
    name = "verbmem"
    paper = "MUSE (Shi et al., 2024) VerbMem; Zhang et al. (ICLR 2025) Eq. 11"
    steps = (Step("forget", "evidence"), Step("holdout", "baseline"))
    checks = rouge_checks("verbmem", "VerbMem")
    columns = (Column("forget", "VerbMem forget"), Column("holdout", "VerbMem holdout"), Column("retention", "VerbMem retention"))

    def prepare(self, tokenizer, data, cfg, context_length, notes) -> Prepared:
        items, prefix = {}, None
        source = "each text's first prefix_tokens tokens ([verbmem] in muse.toml), continued"
        if data.verbmem_forget is not None:  # given prompts (MUSE's verbmem/forget.json), used as given
            pairs = data.verbmem_forget.pairs
            items["forget"] = prepare_given(tokenizer, pairs, cfg.muse_strict)
            # The holdout baseline is cut at the given prompts' median length, so both sides are probed alike.
            prefix = int(np.median([len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p, _ in pairs]))
            source = (f"forget: the {len(items['forget'])} prompts given in {data.verbmem_forget.path}, as given; "
                      f"holdout: each text's first {prefix} tokens (the given prompts' median length), continued")
        for split, ts in (("forget", data.forget), ("holdout", data.holdout)):
            if split in items:
                continue
            items[split], short = prepare(tokenizer, ts.texts, cfg.muse_strict, prefix)
            if short:
                notes.append(f"verbmem: {short} {split} text(s) shorter than the prompt were not scored")
        if not items["holdout"]:  # every holdout text is shorter than the given prompts: no baseline
            del items["holdout"]
        return Prepared(items, {"verbmem_prompts": source})

    def run(self, model, tokenizer, items, split) -> list[ProbeOutput]:
        return [run(model, tokenizer, items, split)]

    def score(self, est, outs, orig, fp32, reference) -> None:
        score_rouge(self.name, est, outs, orig, fp32)
