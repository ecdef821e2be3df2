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
from .base import Column, Prepared, Probe, ProbeOutput, Step, definitions, rouge_checks, rouge_l_f1, score_rouge


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


class KnowMem(Probe):
    name = "knowmem"
    paper = "MUSE (Shi et al., 2024) KnowMem; Zhang et al. (ICLR 2025) Eq. 12"
    steps = (Step("forget", "evidence"), Step("retain", "utility"), Step("holdout", "baseline"))
    checks = rouge_checks("knowmem", "KnowMem")
    columns = (Column("forget", "KnowMem forget"), Column("retain", "KnowMem retain"))

    def prepare(self, tokenizer, data, cfg, context_length, notes) -> Prepared:
        """Few-shot pairs: --icl, else MUSE's retain ICL file, else the first ``shots`` retain QA pairs
        (then left out of the retain score, so no question is its own example), else zero-shot. MUSE
        prompts the retain split with its own ICL file (eval.py: forget_qa_icl, retain_qa_icl)."""
        shots = definitions()["knowmem"]["shots"]
        retain_pairs = list(data.retain_qa.pairs) if data.retain_qa else []
        if data.icl is not None:
            icl, source = list(data.icl.pairs), f"icl file {data.icl.path}"
        elif data.retain_icl is not None:
            icl, source = list(data.retain_icl.pairs), f"icl file {data.retain_icl.path}"
        elif retain_pairs:
            icl, retain_pairs = retain_pairs[:shots], retain_pairs[shots:]
            source = f"first {len(icl)} retain QA pairs (excluded from the retain score)"
        else:
            icl, source = [], "none (zero-shot): give --icl or --retain-qa for MUSE's few-shot prompt"
        split_icl = {}
        if data.retain_icl is not None:
            split_icl["retain"] = list(data.retain_icl.pairs)
            source += f"; retain split: icl file {data.retain_icl.path}"
        items = {}
        for split, pairs in (("forget", data.forget_qa.pairs if data.forget_qa else []), ("retain", retain_pairs),
                             ("holdout", data.holdout_qa.pairs if data.holdout_qa else [])):
            if pairs:
                items[split] = prepare(tokenizer, pairs, split_icl.get(split, icl), cfg.muse_strict)
        return Prepared(items, {"knowmem_icl_source": source})

    def run(self, model, tokenizer, items, split) -> list[ProbeOutput]:
        return [run(model, tokenizer, items, split)]

    def score(self, est, outs, orig, fp32, reference) -> None:
        score_rouge(self.name, est, outs, orig, fp32)
