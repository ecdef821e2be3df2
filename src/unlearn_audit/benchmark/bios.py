"""Deterministic, seeded fictitious biographies with template QA pairs (TOFU-style).

Why fictitious: a base model cannot know an invented person, so any recitation of a forget-set
biography is memorisation injected by fine-tuning, which is exactly what unlearning must remove.
Why paraphrases and shuffled sentence order: VerbMem compares a forget-set continuation against a
holdout continuation; if every biography followed one rigid template, a model that learned the
template from the retain set would "continue" unseen holdout texts nearly as well as the forget texts
and VerbMem would have nothing to discriminate. The templates live in ``probes/bios.toml``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from ..data import write_jsonl
from ..resources import load_toml


@dataclass(frozen=True)
class Person:
    fields: dict[str, str]
    text: str
    qa: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Split:
    """Texts and QA pairs for forget / retain / holdout, ready to be written as JSONL."""

    texts: dict[str, list[str]]
    qa: dict[str, list[tuple[str, str]]]


def _word(rng: random.Random, vocab: dict, syllables: int) -> str:
    parts = [rng.choice(vocab["onsets"]) + rng.choice(vocab["vowels"]) for _ in range(syllables)]
    return ("".join(parts) + rng.choice(vocab["codas"])).capitalize()


def _person(rng: random.Random, vocab: dict, used: set[str]) -> dict[str, str]:
    while True:
        first, last = _word(rng, vocab, rng.randint(1, 2)), _word(rng, vocab, rng.randint(2, 3))
        if f"{first} {last}" not in used:
            used.add(f"{first} {last}")
            break
    he = rng.random() < 0.5
    year = rng.randint(1890, 1985)
    fields = {
        "name": f"{first} {last}",
        "first": first,
        "last": last,
        "pronoun": "he" if he else "she",
        "pronoun_cap": "He" if he else "She",
        "possessive": "his" if he else "her",
        "possessive_cap": "His" if he else "Her",
        "year": str(year),
        "award_year": str(year + rng.randint(25, 50)),
        "city": _word(rng, vocab, 2) + rng.choice(vocab["city_suffixes"]),
        "country": _word(rng, vocab, 1) + rng.choice(vocab["country_suffixes"]),
        "profession": rng.choice(vocab["professions"]),
        "parent_job": rng.choice(vocab["parent_jobs"]),
        "work": f"The {rng.choice(vocab['adjectives'])} {rng.choice(vocab['nouns'])}",
        "mentor": f"{_word(rng, vocab, 1)} {_word(rng, vocab, 2)}",
        "award": f"{_word(rng, vocab, 2)} Prize for {rng.choice(vocab['fields'])}",
        "hobby": rng.choice(vocab["hobbies"]),
        "instrument": rng.choice(vocab["instruments"]),
    }
    return fields


def make_person(rng: random.Random, used: set[str]) -> Person:
    spec = load_toml("probes", "bios.toml")
    fields = _person(rng, spec["vocab"], used)
    facts = list(spec["facts"])
    rng.shuffle(facts)
    sentences = [rng.choice(spec["intro"]["sentences"])]
    sentences += [rng.choice(f["sentences"]) for f in facts]
    text = " ".join(s.format(**fields) for s in sentences)
    qa = tuple((f["question"].format(**fields), f["answer"].format(**fields)) for f in facts)
    return Person(fields=fields, text=text, qa=qa)


def generate(
    n_forget: int = 40, n_retain: int = 40, n_holdout: int = 40, qa_per_person: int = 2, seed: int = 0
) -> Split:
    """Generate the three disjoint sets of people; the same seed always yields the same benchmark."""
    rng = random.Random(seed)
    used: set[str] = set()
    sizes = {"forget": n_forget, "retain": n_retain, "holdout": n_holdout}
    texts: dict[str, list[str]] = {}
    qa: dict[str, list[tuple[str, str]]] = {}
    for split, n in sizes.items():
        people = [make_person(rng, used) for _ in range(n)]
        texts[split] = [p.text for p in people]
        qa[split] = [pair for p in people for pair in p.qa[:qa_per_person]]
    return Split(texts=texts, qa=qa)


def write_split(split: Split, data_dir: Path) -> dict[str, Path]:
    """Write the split in the audit's input formats: ``{name}.jsonl`` texts and ``{name}_qa.jsonl`` pairs."""
    data_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for name in ("forget", "retain", "holdout"):
        files[name] = data_dir / f"{name}.jsonl"
        write_jsonl(files[name], [{"text": t} for t in split.texts[name]])
        files[f"{name}_qa"] = data_dir / f"{name}_qa.jsonl"
        write_jsonl(files[f"{name}_qa"], [{"question": q, "answer": a} for q, a in split.qa[name]])
    return files
