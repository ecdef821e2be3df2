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
    # "auto" is resolved by this CPU's answer; asking for the other choice rebuilds from the target on
    flipped = None if base.resolved().finetune_autocast else "bfloat16"
    assert changed(replace(base, finetune_autocast=flipped)) == set(stages)
    assert changed(replace(base, paper_compute="float32" if base.resolved().paper_compute == "bfloat16" else "bfloat16")) == {"paper"}
    assert changed(replace(base, schemes=("fp32",), audit_batch=4, audit_dtype="float32")) == set()


def test_mixed_precision_finetuning_keeps_float32_weights_and_learns():
    """``autocast=bfloat16`` (the demo's target and reference): the matmuls run in bfloat16, so the
    weights differ from a float32 run's, while the weights stay float32 and the loss falls by more than
    half in both."""
    import torch

    from unlearn_audit.benchmark import tiny, training
    from unlearn_audit.models.batch import encode, make_batch
    from unlearn_audit.remediate.losses import cross_entropy

    texts = ["the quick brown fox jumps over the lazy dog", "pack my box with five dozen liquor jugs"] * 4
    tok = tiny.train_tokenizer(texts, 300)
    seqs = encode(tok, texts)
    runs = {}
    for name, autocast in (("float32", None), ("mixed", torch.bfloat16)):
        model = tiny.tiny_llama(len(tok), hidden=64, layers=2, seed=1)
        with torch.no_grad():
            before = float(cross_entropy(model, make_batch(seqs, tok.pad_token_id)))
        training.finetune(model, seqs, tok.pad_token_id, lr=3e-3, epochs=10, batch_size=4, autocast=autocast)
        with torch.no_grad():
            after = float(cross_entropy(model, make_batch(seqs, tok.pad_token_id)))
        assert all(p.dtype == torch.float32 for p in model.parameters())
        runs[name] = (before, after, torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert runs["float32"][0] == runs["mixed"][0]  # the same start
    assert not torch.equal(runs["float32"][2], runs["mixed"][2])  # bfloat16 matmuls really ran
    for before, after, _ in runs.values():
        assert after < 0.5 * before


def test_the_shipped_tiny_models_were_trained_on_the_split_the_tests_generate():
    """conftest refuses to pair the shipped models with data they were not trained on: the fingerprint
    matches the split generated now, and changes with any one text or QA pair."""
    import json
    from dataclasses import replace

    from conftest import fixtures

    split = fixtures.split()
    shipped = json.loads((fixtures.OUT / "trained_on.json").read_text())["sets"]
    assert fixtures.fingerprint(split) == shipped
    texts = {**split.texts, "holdout": split.texts["holdout"][:-1] + [split.texts["holdout"][-1] + " "]}
    assert fixtures.fingerprint(replace(split, texts=texts))["holdout"] != shipped["holdout"]
    q, a = split.qa["forget"][0]
    qa = {**split.qa, "forget": [(q, a + "x")] + split.qa["forget"][1:]}
    assert fixtures.fingerprint(replace(split, qa=qa))["forget_qa"] != shipped["forget_qa"]
