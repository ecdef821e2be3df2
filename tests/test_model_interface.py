"""The narrow model interface: batching must not change what a probe sees."""

import pytest
import torch

from conftest import kv_caches
from unlearn_audit.benchmark import tiny
from unlearn_audit.models.hf import POSITIONS, HFModel


def _model():
    tok = tiny.train_tokenizer(["the quick brown fox jumps over the lazy dog"] * 8 + ["pack my box with five dozen jugs"] * 8, 300)
    return tiny.tiny_llama(len(tok), hidden=64, layers=2, seed=3), tok


def test_batched_greedy_equals_one_at_a_time():
    model, tok = _model()
    prompts = [tok(t)["input_ids"] for t in ["the quick", "pack my box with five", "lazy", "the quick brown fox jumps"]]
    budgets = [5, 9, 3, 7]
    batched = HFModel("m", model, tok, batch_size=4).greedy(prompts, budgets)
    single = HFModel("m", model, tok, batch_size=1).greedy(prompts, budgets)
    assert batched == single
    assert [len(x) <= b for x, b in zip(batched, budgets)] == [True] * 4


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    _, tok = _model()
    torch.manual_seed(5)
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_positions=128)).eval(), tok


def _falcon():  # a model type outside PLAIN_HEAD: scored through the ordinary full forward
    from transformers import FalconConfig, FalconForCausalLM

    _, tok = _model()
    torch.manual_seed(6)
    return FalconForCausalLM(FalconConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4)).eval(), tok


@pytest.mark.parametrize("build", [_model, _gpt2, _falcon])
def test_token_scores_match_an_unpadded_forward(build):
    """The head runs per row on the batch's hidden states (llama, gpt2) or on full logits (others):
    either way each row equals an unpadded forward of that text alone."""
    model, tok = build()
    long = " ".join(["the quick brown fox jumps over the lazy dog"] * 6)  # more positions than one POSITIONS chunk
    seqs = [tok(t)["input_ids"] for t in ["the quick brown fox", "pack my box", "dog", long]]
    assert len(seqs[-1]) > POSITIONS + 1
    scores = HFModel("m", model, tok, batch_size=3).token_scores(seqs)
    for seq, s in zip(seqs, scores):
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([seq])).logits[0, :-1], -1)
        expected = logp.gather(-1, torch.tensor(seq[1:]).unsqueeze(-1)).squeeze(-1)
        assert len(s.logprobs) == len(seq) - 1
        assert torch.allclose(torch.tensor(s.logprobs, dtype=torch.float32), expected, atol=1e-5)
        # mu and sigma are the moments of log p under p itself (Min-K%++)
        mu = (logp.exp() * logp).sum(-1)
        assert torch.allclose(torch.tensor(s.mu, dtype=torch.float32), mu, atol=1e-5)


@pytest.mark.parametrize("build", [_model, _gpt2, _falcon])
def test_scoring_builds_no_kv_cache(build):
    """Scoring is one teacher-forced forward whose KV cache nothing reads; a config's use_cache (true in
    most checkpoints) must not make it build one, every layer's keys and values held to the end."""
    model, tok = build()
    seqs = [tok(t)["input_ids"] for t in ["the quick brown fox", "pack my box", "dog"]]
    assert model.config.use_cache
    with kv_caches(model) as seen, torch.no_grad():
        model(torch.tensor([seqs[0]]))
    assert seen and seen[-1] is not None  # the hooks see a cache where a plain forward builds one
    with kv_caches(model) as seen:
        HFModel("m", model, tok, batch_size=2).token_scores(seqs)
    assert len(seen) >= 2 and all(cache is None for cache in seen)


def test_out_of_memory_halves_the_batch_and_gives_the_same_results():
    """Fault injection: the model raises torch.OutOfMemoryError for any batch larger than two rows, as a
    GPU would; the wrapper must back off to batches that fit and return exactly what batch size 2 gives."""
    import numpy as np

    model, tok = _model()
    decoder = model.base_model  # every path (scoring on hidden states, full forward, generate) runs it
    real_forward = decoder.forward

    def forward(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real_forward(*args, **kwargs)

    seqs = [tok(t)["input_ids"] for t in ["the quick brown fox", "pack my box", "dog", "lazy dog jumps", "five dozen jugs"]]
    expected = HFModel("m", model, tok, batch_size=2).token_scores(seqs)
    decoder.forward = forward
    wrapped = HFModel("m", model, tok, batch_size=8)
    got = wrapped.token_scores(seqs)
    assert wrapped.batch_size == 2
    assert all(np.array_equal(a.logprobs, b.logprobs) for a, b in zip(got, expected))
    prompts, budgets = seqs[:4], [3, 4, 2, 5]
    assert HFModel("m", model, tok, batch_size=8).greedy(prompts, budgets) == HFModel("m", model, tok, batch_size=1).greedy(prompts, budgets)
    decoder.forward = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("some other failure"))
    try:
        HFModel("m", model, tok, batch_size=8).token_scores(seqs)
    except RuntimeError as exc:
        assert "other failure" in str(exc)  # only out-of-memory is retried
    else:
        raise AssertionError("a non-OOM error must propagate")
