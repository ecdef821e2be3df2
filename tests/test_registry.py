"""Contract tests over the whole scheme registry, and the built-in benchmark's data."""

import pytest
import torch

from unlearn_audit.benchmark import bios, tiny
from unlearn_audit.models.loading import load_checkpoint, write_checkpoint
from unlearn_audit.quantize.base import SchemeUnavailable
from unlearn_audit.quantize.registry import SCHEMES, get_scheme


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.set_num_threads(1)
    tok = tiny.train_tokenizer(["the quick brown fox jumps over the lazy dog"] * 8, 300)
    path = write_checkpoint(tiny.tiny_llama(len(tok), hidden=128, layers=1, seed=2), tok, tmp_path_factory.mktemp("m") / "m")
    return load_checkpoint(path)


@pytest.mark.parametrize("name", list(SCHEMES))
def test_every_scheme_builds_a_working_variant_or_says_why_not(ckpt, name):
    scheme = get_scheme(name)
    assert scheme.name == name and scheme.description and isinstance(scheme.params(), dict)
    try:
        model = scheme.build(ckpt)
    except SchemeUnavailable as exc:
        assert str(exc)
        return
    ids = torch.tensor([[0, 4, 8, 15, 16, 23, 42]])
    with torch.no_grad():
        logits = model(ids).logits
    assert torch.isfinite(logits).all()
    before = ckpt.model.model.layers[0].mlp.up_proj.weight.clone()
    assert torch.equal(ckpt.model.model.layers[0].mlp.up_proj.weight, before)  # the source stays intact


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
