"""``--batch-size auto``: the memory formula of models/memory.py, checked against the arithmetic by
hand at real shapes (configs only, no weights), and the audit sizing its batch from it."""

import json

import pytest
from transformers import GPT2Config, LlamaConfig

from conftest import one_line_error, run
from unlearn_audit.models.memory import HEADROOM, auto_batch, row_bytes

LLAMA2_7B = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, vocab_size=32000)
LLAMA3_8B = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                        num_key_value_heads=8, vocab_size=128256)


def test_a_row_at_muse_length_is_the_kv_cache_or_the_layer_activations_whichever_is_larger():
    # Llama-2-7B, bfloat16, 2048 tokens, on a GPU: KV 2·32 layers·32 heads·128·2048 elements of 2 bytes
    assert row_bytes(LLAMA2_7B, 2048, 2, scores_materialised=False) == 2 * 32 * 32 * 128 * 2048 * 2 == 2**30
    # Llama-3-8B: GQA makes the KV cache 4× smaller; the activations 2048·(5·4096 + 2·8·128 + 3·14336) tie with it
    assert row_bytes(LLAMA3_8B, 2048, 2, False) == 2048 * (5 * 4096 + 2 * 8 * 128 + 3 * 14336) * 2 == 2 * 32 * 8 * 128 * 2048 * 2
    # On the CPU attention materialises 2·heads·T² scores, which then dominate at 2048 tokens
    assert row_bytes(LLAMA3_8B, 2048, 4, True) == (2048 * (5 * 4096 + 2 * 8 * 128 + 3 * 14336) + 2 * 32 * 2048**2) * 4
    # GPT-2 names its fields differently and leaves n_inner unset (4·H)
    gpt2 = GPT2Config(n_embd=768, n_layer=12, n_head=12)
    assert row_bytes(gpt2, 1024, 4, False) == max(1024 * (5 * 768 + 2 * 768 + 3 * 3072), 2 * 12 * 768 * 1024) * 4


def test_auto_batch_fills_the_headroom_and_stays_between_one_and_the_cap():
    gib = 2**30
    assert auto_batch(80 * gib, gib) == 64  # 64 rows of 1 GiB fit in 80 % of 80 GiB: the cap
    assert auto_batch(20 * gib, gib) == int(HEADROOM * 20)
    assert auto_batch(20 * gib, gib, head=2 * gib) == int(HEADROOM * 20 - 2)
    assert auto_batch(gib // 2, gib) == 1  # never below one sequence: out-of-memory handling takes it from there


def test_the_audit_sizes_its_batch_and_says_how(bench, tmp_path, capsys):
    args = ["audit", bench["memoriser"], "--forget", bench["forget"], "--holdout", bench["holdout"], "--limit", "4",
            "--schemes", "fp32", "--device", "cpu", "--format", "json", "--quiet"]
    code, _ = run([*args, "--batch-size", "auto", "--out", tmp_path / "auto"], capsys)
    report = json.loads((tmp_path / "auto" / "report.json").read_text())
    size = report["config"]["batch_size"]
    assert code in (0, 1, 4) and isinstance(size, int) and 1 <= size <= 64
    note = next(n for n in report["config"]["notes"] if n.startswith("--batch-size auto:"))
    assert note.startswith(f"--batch-size auto: {size} (") and "GiB free on cpu" in note
    code, _ = run([*args, "--batch-size", "2", "--out", tmp_path / "two"], capsys)
    fixed = json.loads((tmp_path / "two" / "report.json").read_text())
    assert fixed["config"]["batch_size"] == 2 and fixed["results"] == report["results"]  # the batch changes no number


@pytest.mark.parametrize("value", ["0", "-3", "many", ""])
def test_a_bad_batch_size_is_one_line(bench, tmp_path, capsys, value):
    one_line_error(*run(["audit", bench["memoriser"], "--forget", bench["forget"], "--holdout", bench["holdout"],
                         "--batch-size", value, "--out", tmp_path / "r"], capsys), "--batch-size must be a positive integer or auto")


def test_auto_on_a_system_that_does_not_say_its_free_memory_is_one_line(monkeypatch):
    """macOS has no /proc/meminfo: --batch-size auto is then a clear input error, not a crash."""
    import builtins

    import torch

    from unlearn_audit.errors import InputError
    from unlearn_audit.models import memory

    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda path, *a, **k: (_ for _ in ()).throw(FileNotFoundError(path))
                        if path == "/proc/meminfo" else real_open(path, *a, **k))
    with pytest.raises(InputError, match="give the batch size as a number"):
        memory.free_bytes(torch.device("cpu"))
