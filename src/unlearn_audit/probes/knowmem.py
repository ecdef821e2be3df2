"""KnowMem (MUSE; Zhang et al. Eq. 12): does the model still answer questions about the forget set?

Prompt: up to ``shots`` in-context pairs ``"Question: {q}\\nAnswer: {a}\\n\\n"`` followed by the
question. Greedy decoding with ``max_new_tokens=32``; the output is cut at the first of ``"\\n\\n"``,
``"\\nQuestion"`` or ``"Question:"`` and scored against the answer with ROUGE-L F1. The in-context
pairs never come from the set being scored. See ``probes/muse.toml`` for the trailing-space choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..models.base import LanguageModel
from .base import ProbeOutput, definitions, rouge_l_f1


@dataclass(frozen=True)
class KnowMemItem:
    prompt_ids: tuple[int, ...]
    answer: str


def build_prompt(question: str, icl: Sequence[tuple[str, str]], muse_strict: bool = False) -> str:
    spec = definitions()["knowmem"]
    prefix = "".join(spec["example"].format(question=q, answer=a) for q, a in icl[: spec["shots"]])
    query = spec["muse_query"] if muse_strict else spec["query"]
    return prefix + query.format(question=question)


def prepare(tokenizer, pairs: Sequence[tuple[str, str]], icl, muse_strict: bool = False):
    items = []
    for question, answer in pairs:
        ids = tokenizer(build_prompt(question, icl, muse_strict), add_special_tokens=True)["input_ids"]
        items.append(KnowMemItem(tuple(ids), answer))
    return items


def cut_at_stop(text: str) -> str:
    stops = definitions()["knowmem"]["stop_strings"]
    cut = min((text.find(s) for s in stops if s in text), default=len(text))
    return text[:cut].strip()


def run(model: LanguageModel, tokenizer, items: Sequence[KnowMemItem], split: str) -> ProbeOutput:
    spec = definitions()["knowmem"]
    outputs = model.greedy(
        [i.prompt_ids for i in items], [spec["max_new_tokens"]] * len(items), spec["stop_strings"]
    )
    texts = [cut_at_stop(tokenizer.decode(o, skip_special_tokens=True)) for o in outputs]
    values = tuple(rouge_l_f1(i.answer, t) for i, t in zip(items, texts))
    return ProbeOutput("knowmem", split, "rougeL_f1", values, tuple(texts))
