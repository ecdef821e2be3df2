"""Draft-and-verify decoding and the shared prefix (models/decode.py) give the plain path's tokens, with
fewer model calls: every preset on the tiny Llama, several on GPT-2, and adversarial drafts."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from conftest import on_disk
from unlearn_audit.benchmark import tiny
from unlearn_audit.data import load_qa, load_texts
from unlearn_audit.models.decode import MIN_SHARED, DraftBook, shared_prefix
from unlearn_audit.models.hf import HFModel
from unlearn_audit.models.loading import load_checkpoint
from unlearn_audit.pipeline.types import AuditConfig, AuditData
from unlearn_audit.pipeline.workload import build_workload
from unlearn_audit.probes.base import definitions
from unlearn_audit.quantize.base import SchemeUnavailable
from unlearn_audit.quantize.registry import SCHEMES, get_scheme

PER_CALL = 8  # prompts of each split kept (the first ones), so that 48 presets decode in about a minute


def _requests(work) -> list[tuple[list, list, tuple]]:
    """The greedy calls an audit makes: VerbMem per split (budgets per text), KnowMem per split (32
    tokens, stop strings)."""
    spec = definitions()["knowmem"]
    calls = [([i.prompt_ids for i in items[:PER_CALL]], [i.max_new_tokens for i in items[:PER_CALL]], ())
             for items in work.prepared["verbmem"].values()]
    calls += [([i.prompt_ids for i in items[:PER_CALL]], [spec["max_new_tokens"]] * PER_CALL, tuple(spec["stop_strings"]))
              for items in work.prepared["knowmem"].values()]
    return calls


def _decode(model, tok, calls, batch_size: int = 8, **kw) -> tuple[list[list[list[int]]], dict]:
    hf = HFModel("m", model, tok, batch_size=batch_size, **kw)
    return [hf.greedy(p, b, s) for p, b, s in calls], hf.decoding


def assert_same_tokens(got, expected, what: str) -> None:
    """Fails on the first differing token, naming the call, the row and the position."""
    for c, (g_call, e_call) in enumerate(zip(got, expected)):
        for r, (g, e) in enumerate(zip(g_call, e_call)):
            j = next((j for j, (a, b) in enumerate(zip(g, e)) if a != b), None)
            assert j is None and len(g) == len(e), (
                f"{what}: call {c}, row {r}: first difference at token {j if j is not None else min(len(g), len(e))} "
                f"(drafted {g[:40]} vs plain {e[:40]})")


@pytest.fixture(scope="module")
def llama(bench):
    ckpt = load_checkpoint(bench["memoriser"])
    data = AuditData(forget=load_texts(bench["forget"]), holdout=load_texts(bench["holdout"]), retain=load_texts(bench["retain"]),
                     forget_qa=load_qa(bench["forget_qa"]), retain_qa=load_qa(bench["retain_qa"]), holdout_qa=load_qa(bench["holdout_qa"]))
    work = build_workload(ckpt.tokenizer, None, data, AuditConfig(), [get_scheme("gptq-int4")])
    fp32 = ckpt.model
    calls = _requests(work)
    book = DraftBook()
    plain, _ = _decode(fp32, ckpt.tokenizer, calls)
    drafted, _ = _decode(fp32, ckpt.tokenizer, calls, drafts=book, share_prefix=True)  # fills the book with fp32's outputs
    assert_same_tokens(drafted, plain, "fp32")
    return ckpt, work, calls, book


@pytest.mark.parametrize("name", [n for n in SCHEMES if n != "fp32"])
def test_every_preset_decodes_the_same_tokens_from_fp32_drafts(llama, name):
    """Each preset's greedy outputs, drafted from fp32's and on the shared few-shot prefix, are its own
    plain greedy outputs for every VerbMem and KnowMem prompt of the memoriser's audit."""
    ckpt, work, calls, book = llama
    try:
        model = get_scheme(name).build(ckpt, work.calibration).eval()
    except SchemeUnavailable as exc:
        pytest.skip(str(exc))
    mine = DraftBook()
    for key in [(tuple(p), b, s) for ps, bs, s in calls for p, b in zip(ps, bs)]:
        mine.put("audited", key, book.get("audited", key))
    plain, _ = _decode(model, ckpt.tokenizer, calls)
    drafted, counts = _decode(model, ckpt.tokenizer, calls, drafts=mine, share_prefix=True)
    assert_same_tokens(drafted, plain, name)
    assert counts["generated"] == sum(len(x) for call in plain for x in call)
    if name == "bnb-int8":  # LLM.int8()'s numbers depend on the other tokens of a pass: decoded the plain way
        assert counts["drafted"] == 0
    else:
        assert counts["drafted"] > 0 and 0 <= counts["accepted"] <= counts["drafted"]


def test_the_fewshot_prefix_is_shared_and_drafts_of_the_same_variant_are_all_accepted(llama):
    """KnowMem's prompts share their few-shot examples (encoded once per call); a variant verifying its
    own outputs accepts every draft token and needs a handful of forward passes per batch instead of one
    per token."""
    ckpt, work, calls, book = llama
    knowmem = [p for p, _, s in calls if s]
    assert all(shared_prefix(p) >= MIN_SHARED for p in knowmem)
    model = ckpt.model
    forwards = []
    hook = model.model.register_forward_hook(lambda *a: forwards.append(1))
    try:
        plain, _ = _decode(model, ckpt.tokenizer, calls)
        n_plain = len(forwards)
        forwards.clear()
        again, counts = _decode(model, ckpt.tokenizer, calls, drafts=book, share_prefix=True)
    finally:
        hook.remove()
    assert_same_tokens(again, plain, "self-draft")
    assert counts["accepted"] == counts["drafted"] > 0
    assert len(forwards) * 4 < n_plain, (len(forwards), n_plain)


@pytest.mark.parametrize("kind", ["random", "shifted", "truncated"])
def test_wrong_drafts_never_change_the_output(llama, kind):
    """Drafts that are random tokens, another prompt's output, or a cut-short output are verified and
    rejected where wrong: the tokens are the plain path's all the same."""
    ckpt, work, calls, book = llama
    rng = random.Random(0)
    wrong = DraftBook()
    keys = [(tuple(p), b, s) for ps, bs, s in calls for p, b in zip(ps, bs)]
    for i, key in enumerate(keys):
        own = book.get("audited", key)
        draft = {"random": [rng.randrange(len(ckpt.tokenizer)) for _ in range(key[1])],
                 "shifted": book.get("audited", keys[(i + 1) % len(keys)]),
                 "truncated": own[: len(own) // 2] + [rng.randrange(len(ckpt.tokenizer))]}[kind]
        wrong.put("audited", key, draft)
    model = get_scheme("rtn-int4").build(ckpt).eval()
    plain, _ = _decode(model, ckpt.tokenizer, calls)
    drafted, counts = _decode(model, ckpt.tokenizer, calls, drafts=wrong, share_prefix=True)
    assert_same_tokens(drafted, plain, kind)
    assert counts["accepted"] < counts["drafted"]


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """A GPT-2 (learned absolute positions, Conv1D) trained briefly so its greedy outputs are not noise."""
    texts = ["the quick brown fox jumps over the lazy dog and runs away", "pack my box with five dozen liquor jugs today"] * 8
    tok = tiny.train_tokenizer(texts, 300)
    torch.manual_seed(5)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_positions=64))
    from unlearn_audit.benchmark import training
    from unlearn_audit.models.batch import encode

    training.finetune(model, encode(tok, texts), tok.pad_token_id, lr=3e-3, epochs=5, batch_size=8, warmup=2)
    return on_disk(model.eval(), tmp_path_factory.mktemp("gpt2")), tok


@pytest.mark.parametrize("name", ["rtn-int8", "rtn-int4", "nf4", "gguf-q4_0"])
def test_gpt2_decodes_the_same_tokens(gpt2, name):
    """GPT-2's positions come from explicit position ids: the masked draft columns must not shift them,
    and prompt + budget up to the 64-position context must fit (the plain path caps each budget there)."""
    saved, tok = gpt2
    prompts = [tok(t)["input_ids"] for t in ["the quick brown", "pack my box with", "the lazy dog and", "five dozen"]]
    prefix = tok("the quick brown fox jumps over the lazy dog and runs away")["input_ids"]
    prompts += [prefix + p for p in prompts]  # a shared prefix for half of them
    calls = [(prompts, [12, 30, 60, 20, 12, 30, 60, 20], ()), (prompts[4:], [16] * 4, ("dog", "jugs"))]
    book = DraftBook()
    fp32, _ = _decode(saved.model, tok, calls, drafts=book, share_prefix=True)
    again, counts = _decode(saved.model, tok, calls, drafts=book, share_prefix=True)  # whole windows up to the context's end
    assert_same_tokens(again, fp32, "gpt2 fp32 self-draft")
    assert counts["accepted"] == counts["drafted"] > 0
    model = get_scheme(name).build(saved).eval()
    plain, _ = _decode(model, tok, calls)
    drafted, counts = _decode(model, tok, calls, drafts=book, share_prefix=True)
    assert_same_tokens(drafted, plain, f"gpt2 {name}")
    assert counts["drafted"] > 0


def test_the_report_counts_draft_tokens_per_variant(audited):
    """report.json says, per variant and model, how many greedy tokens came from verified drafts. The
    audit's --original is the audited model itself here, so its fp32 variant, drafted from the audited
    model's fp32 outputs, accepts every draft token; the first variant has nothing to draft from."""
    import json

    from conftest import schema_errors

    report = json.loads((audited / "report.json").read_text())
    assert not schema_errors(report)
    decoding = report["run"]["decoding"]
    assert decoding["draft"] is True and list(decoding["variants"]) == ["fp32", "rtn-int4", "nf4"]
    fp32 = decoding["variants"]["fp32"]
    assert fp32["audited"]["drafted"] == 0 and fp32["audited"]["generated"] > 0
    assert fp32["original"]["accepted"] == fp32["original"]["drafted"] > 0
    for name in ("rtn-int4", "nf4"):
        for model in ("audited", "original"):
            counts = decoding["variants"][name][model]
            assert 0 <= counts["accepted"] <= counts["drafted"] and counts["drafted"] > 0, (name, model, counts)


def test_no_draft_gives_the_same_report_numbers(bench, tmp_path, capsys):
    """``--no-draft`` decodes with transformers' generate: every result is the same as with drafts and
    the shared prefix, and the report says no draft was used."""
    import json

    from conftest import run

    reports = []
    for flag in ([], ["--no-draft"]):
        out = tmp_path / ("plain" if flag else "drafted")
        args = ["audit", bench["memoriser"], "--forget", bench["forget"], "--holdout", bench["holdout"], "--retain", bench["retain"],
                "--forget-qa", bench["forget_qa"], "--retain-qa", bench["retain_qa"], "--schemes", "fp32,rtn-int8,rtn-int4",
                "--limit", "16", "--out", out, "--format", "json", "--fresh", *flag]
        run([str(a) for a in args], capsys)
        reports.append(json.loads((out / "report.json").read_text()))
    drafted, plain = reports
    assert drafted["run"]["decoding"]["draft"] is True and plain["run"]["decoding"]["draft"] is False
    assert all(v["audited"]["drafted"] == 0 for v in plain["run"]["decoding"]["variants"].values())
    assert drafted["run"]["decoding"]["variants"]["rtn-int8"]["audited"]["accepted"] > 0
    assert [r for r in drafted["results"]] == [r for r in plain["results"]]
    assert drafted["evidence"] == plain["evidence"]
