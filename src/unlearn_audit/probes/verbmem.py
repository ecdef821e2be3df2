"""VerbMem (MUSE; Zhang et al. Eq. 11): can the model continue a forget text verbatim?

The first ``prefix_tokens`` tokens of a text are the prompt; the model continues greedily and the
output is scored against the true continuation with ROUGE-L F1. MUSE generates 128 tokens and truncates
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

from ..models.base import LanguageModel
from .base import ProbeOutput, definitions, rouge_l_f1


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


def _adds_bos(tokenizer) -> bool:
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    return tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id]


def run(model: LanguageModel, tokenizer, items: Sequence[VerbMemItem], split: str) -> ProbeOutput:
    outputs = model.greedy([i.prompt_ids for i in items], [i.max_new_tokens for i in items])
    texts = [tokenizer.decode(o, skip_special_tokens=True, clean_up_tokenization_spaces=False) for o in outputs]
    values = tuple(rouge_l_f1(i.reference, t) for i, t in zip(items, texts))
    return ProbeOutput("verbmem", split, "rougeL_f1", values, tuple(texts))
