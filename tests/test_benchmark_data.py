"""The built-in benchmark's data."""

from unlearn_audit.benchmark import bios


def test_benchmark_is_deterministic_disjoint_and_varied():
    a, b = bios.generate(10, 10, 10, seed=3), bios.generate(10, 10, 10, seed=3)
    assert a == b
    assert bios.generate(10, 10, 10, seed=4).texts != a.texts
    people = {s: {q.split(" was ")[0] for q, _ in a.qa[s]} for s in a.qa}
    assert not set(a.texts["forget"]) & set(a.texts["holdout"])
    assert not {q for q, _ in a.qa["forget"]} & {q for q, _ in a.qa["holdout"]}
    # the wording varies: sentence order and paraphrases differ between biographies
    second_sentences = {t.split(". ")[1].split()[-1] for t in a.texts["forget"] + a.texts["holdout"]}
    assert len(second_sentences) > 5
    assert all(len(a.qa[s]) == 20 for s in a.qa) and all(people.values())
