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


def test_demo_cache_keys_follow_what_each_stage_depends_on():
    """Changing one scenario's recipe rebuilds that scenario only; changing the data or the fine-tuning
    rebuilds everything; the audit's own settings rebuild nothing."""
    from dataclasses import replace

    from unlearn_audit.benchmark.scenario import Recipe

    base = Recipe()
    stages = ("models", "paper", "control", "sure")
    keys = {s: base.key(s) for s in stages}
    assert len(set(keys.values())) == len(stages)

    def changed(recipe):
        return {s for s in stages if recipe.key(s) != keys[s]}

    assert changed(replace(base, paper_lr=2e-5)) == {"paper"}
    assert changed(replace(base, control_scheme="rtn-int3")) == {"control"}
    assert changed(replace(base, sure_steps=3)) == {"sure"}
    assert changed(replace(base, unlearn_batch=4)) == {"paper", "control", "sure"}
    assert changed(replace(base, n_forget=20)) == set(stages)
    assert changed(replace(base, model_dtype="float32")) == set(stages)
    assert changed(replace(base, schemes=("fp32",), audit_batch=4)) == set()
