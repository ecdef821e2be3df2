"""Which dtype each step computes in, decided by what the CPU computes fast, and bfloat16 storage
emulated in float32 where it does not. Every decision is asserted both ways on any machine, by forcing
the capability probe through ``UNLEARN_AUDIT_FAST_DTYPES``."""

from types import SimpleNamespace

import pytest
import torch

from unlearn_audit.benchmark import tiny
from unlearn_audit.benchmark.scenario import Recipe
from unlearn_audit.machine import FAST_DTYPES_ENV, computes_fast, describe_cpu, fast_or_float32, hardware
from unlearn_audit.pipeline.types import AuditConfig
from unlearn_audit.pipeline.variant import compute_dtype
from unlearn_audit.remediate.unlearn import UnlearnConfig, bf16_compute, store_as_bfloat16, unlearn

TEXTS = ["the quick brown fox jumps over the lazy dog", "pack my box with five dozen liquor jugs",
         "how vexingly quick daft zebras jump", "sphinx of black quartz judge my vow"]


@pytest.fixture(params=[True, False], ids=["bf16-fast", "bf16-slow"])
def fast(request, monkeypatch) -> bool:
    monkeypatch.setenv(FAST_DTYPES_ENV, "bfloat16" if request.param else "")
    return request.param


def test_the_probe_answers_per_dtype_and_the_override_is_read(monkeypatch):
    monkeypatch.setenv(FAST_DTYPES_ENV, "bfloat16")
    assert computes_fast(torch.bfloat16) and computes_fast("bfloat16") and not computes_fast("float16")
    assert computes_fast("float32") and fast_or_float32("bfloat16") == "bfloat16"
    monkeypatch.setenv(FAST_DTYPES_ENV, "float16, bfloat16")
    assert computes_fast("float16") and computes_fast("bfloat16")
    monkeypatch.setenv(FAST_DTYPES_ENV, "none")
    assert not computes_fast("bfloat16") and fast_or_float32(torch.bfloat16) == "float32"
    assert hardware()["fast_dtypes"] == {"bfloat16": False, "float16": False}
    monkeypatch.delenv(FAST_DTYPES_ENV)
    # unforced: the instruction set decides, and the report and the benchmarks name the CPU beside it
    hw = hardware()
    assert hw["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and hw["cpu_model"]
    assert hw["cpu_capability"] in describe_cpu() and hw["fast_dtypes"]["bfloat16"] == computes_fast("bfloat16")
    if hw["cpu_capability"] in ("AVX2", "DEFAULT", "NO AVX"):  # no AVX512 at all: no bfloat16 instructions
        assert not computes_fast("bfloat16")


def test_a_misspelt_override_is_a_one_line_error_before_any_work(monkeypatch, tmp_path, capsys):
    from conftest import one_line_error, run
    from unlearn_audit.errors import InputError

    monkeypatch.setenv(FAST_DTYPES_ENV, "bf16")
    with pytest.raises(InputError, match="unknown dtype 'bf16'"):
        computes_fast("bfloat16")
    code, err = run(["schema"], capsys)  # even a command that computes nothing
    one_line_error(code, err, FAST_DTYPES_ENV, "'bf16'", "bfloat16, float16")
    monkeypatch.setenv(FAST_DTYPES_ENV, " bfloat16 , none,")
    assert computes_fast("bfloat16") and not computes_fast("float16")


def test_audit_dtype_auto_follows_the_probe(fast):
    def ckpt(stored):
        return SimpleNamespace(source=SimpleNamespace(stored_dtype=lambda: stored))

    auto = AuditConfig(dtype="auto")
    assert compute_dtype(auto, ckpt("bfloat16")) == ("bfloat16" if fast else "float32")
    assert compute_dtype(auto, ckpt("float32")) == "float32"
    assert compute_dtype(AuditConfig(dtype="bfloat16"), ckpt("float32")) == "bfloat16"  # asked for: kept


@pytest.mark.parametrize("fp16_fast", [True, False])
def test_a_float16_checkpoint_computes_in_float16_only_where_the_cpu_has_it(monkeypatch, fp16_fast):
    """Llama-2-7b-hf and many fine-tunes are stored in float16. A CPU without AVX512-FP16/AMX-FP16
    computes it far slower than float32 (README), and float32 holds every float16 value exactly."""
    monkeypatch.setenv(FAST_DTYPES_ENV, "float16" if fp16_fast else "bfloat16")
    fp16 = SimpleNamespace(source=SimpleNamespace(stored_dtype=lambda: "float16"))
    assert compute_dtype(AuditConfig(dtype="auto"), fp16) == ("float16" if fp16_fast else "float32")
    assert compute_dtype(AuditConfig(dtype="float16"), SimpleNamespace()) == "float16"  # asked for: kept


def test_the_demo_recipe_resolves_by_the_probe_and_keys_its_cache_on_it(fast, monkeypatch):
    r = Recipe().resolved()
    assert r.finetune_autocast == ("bfloat16" if fast else None)
    assert r.audit_dtype == ("bfloat16" if fast else "float32")
    assert r.paper_compute == ("bfloat16" if fast else "float32") and r.paper_dtype == "bfloat16"
    assert r.resolved() == r
    keys = {s: Recipe().key(s) for s in ("models", "paper", "control")}
    monkeypatch.setenv(FAST_DTYPES_ENV, "" if fast else "bfloat16")  # the other kind of CPU
    other = {s: Recipe().key(s) for s in ("models", "paper", "control")}
    assert all(keys[s] != other[s] for s in keys)  # every stage downstream of the target changes
    assert Recipe(finetune_autocast=None, audit_dtype="float32", paper_compute="float32").key() == \
        Recipe(finetune_autocast=None, audit_dtype="bfloat16", paper_compute="float32").key()  # explicit: as given


def test_the_demo_runs_the_lean_recipe_where_bfloat16_is_slow_and_either_where_asked(fast):
    """A CPU without fast bfloat16 computes every stage in float32; there the full recipe took 43 min on
    two cores, so ``auto`` picks ``LEAN`` (fewer documents, two grids), which keys its own cache."""
    from unlearn_audit.benchmark.scenario import LEAN
    from unlearn_audit.errors import InputError

    auto = Recipe.for_machine("auto", sure_steps=3)
    assert auto.size == ("full" if fast else "lean") and auto.sure_steps == 3
    assert auto == (Recipe(sure_steps=3) if fast else Recipe(**LEAN, sure_steps=3))
    lean, full = Recipe.for_machine("lean"), Recipe.for_machine("full")
    assert (lean.size, full.size, full) == ("lean", "full", Recipe())
    assert lean.n_forget < full.n_forget and set(lean.schemes) < set(full.schemes) and "rtn-int4" in lean.schemes
    assert lean.key() != full.key() and lean.key("paper") != full.key("paper")
    with pytest.raises(InputError, match="--recipe must be auto, full or lean"):
        Recipe.for_machine("small")


def _bf16_values(t: torch.Tensor) -> bool:
    return torch.equal(t, t.to(torch.bfloat16).to(t.dtype))


def test_store_as_bfloat16_rounds_weights_and_moments_as_a_bfloat16_copy_does():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(64, 64))
    opt = torch.optim.AdamW([p], lr=1e-3)
    p.grad = torch.randn_like(p)
    opt.step()
    before = p.detach().clone()
    moments = {k: v.clone() for k, v in opt.state[p].items()}
    store_as_bfloat16([p], opt)
    want = torch.empty(64, 64, dtype=torch.bfloat16)
    want.copy_(before)  # round-to-nearest-even, what a bfloat16 tensor stores
    assert torch.equal(p.detach(), want.float()) and not torch.equal(before, p.detach())
    for k in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(opt.state[p][k], moments[k].bfloat16().float())
    assert torch.equal(opt.state[p]["step"], moments["step"])  # a count, not a stored value


@pytest.fixture(scope="module")
def tiny_setup():
    torch.set_num_threads(1)
    tok = tiny.train_tokenizer(TEXTS * 4, 300)
    seqs = [tok(t)["input_ids"] + [tok.eos_token_id] for t in TEXTS]
    return tok, seqs


def _unlearned(tok, seqs, compute: str, steps: int, lr: float, check_each_step=None):
    model = tiny.tiny_llama(len(tok), hidden=64, layers=2, seed=7)
    model.to(torch.bfloat16).float()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = UnlearnConfig("ga_klr", lr=lr, steps=steps, batch_size=4, train_dtype="bfloat16", bf16_compute=compute)
    original = tiny.tiny_llama(len(tok), hidden=64, layers=2, seed=7)
    on_step = (lambda i, n, v: check_each_step(model)) if check_each_step else (lambda i, n, v: None)
    unlearn(model, seqs, seqs, tok.pad_token_id, cfg, original=original, on_step=on_step)
    return start, {k: v.float() for k, v in model.state_dict().items()}


def test_emulated_bfloat16_stores_bfloat16_values_after_every_step(tiny_setup):
    tok, seqs = tiny_setup
    seen = []

    def check(model):
        assert all(p.dtype == torch.float32 and _bf16_values(p.detach()) for p in model.parameters())
        seen.append(1)

    unlearn_start, after = _unlearned(tok, seqs, "float32", 3, 1e-3, check)
    assert len(seen) == 3 and any(not torch.equal(unlearn_start[k], after[k]) for k in after)


def test_emulated_and_native_bfloat16_absorb_the_same_updates(tiny_setup):
    """At the paper's lr a bfloat16 weight moves only where the update crosses half its ulp: most weights
    of |w| ≳ 512·lr keep their value. The float32 path with bfloat16 storage must absorb the same ones
    as bfloat16 arithmetic does (it rounds once per step, not after every operation inside AdamW)."""
    tok, seqs = tiny_setup
    assert bf16_compute("cpu", "bfloat16") == "bfloat16" and bf16_compute("cpu", "float32") == "float32"
    start, native = _unlearned(tok, seqs, "bfloat16", 2, 1e-5)
    _, emulated = _unlearned(tok, seqs, "float32", 2, 1e-5)
    names = [k for k in start if k.endswith("proj.weight")]
    moved = {path: torch.cat([(w[k] != start[k]).flatten() for k in names]) for path, w in
             (("native", native), ("emulated", emulated))}
    share = {k: v.float().mean().item() for k, v in moved.items()}
    assert 0.05 < share["native"] < 0.8, share  # some weights took the update, most did not
    agree = (moved["native"] == moved["emulated"]).float().mean().item()
    assert agree > 0.995, (agree, share)
    assert abs(share["native"] - share["emulated"]) < 0.005, share


@pytest.mark.parametrize("ampere", [True, False])
def test_on_cuda_the_gpu_decides_not_the_cpu(monkeypatch, ampere):
    """A V100 has no native bfloat16: its audits and bfloat16 unlearning compute in float32 (emulated
    storage), whatever the CPU or the override says; float16 is fast on every GPU."""
    asked = []

    def is_bf16_supported(including_emulation=True):
        asked.append(including_emulation)
        return ampere or including_emulation  # an emulated bfloat16 must not count as fast

    selected = []

    class device:  # torch.cuda.device(i): GPU i is current inside the block
        def __init__(self, index):
            selected.append(index)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "device", device)
    monkeypatch.setenv(FAST_DTYPES_ENV, "" if ampere else "bfloat16")  # the CPU's answer is the other one
    assert computes_fast("bfloat16", "cuda") is ampere and selected == []
    assert computes_fast("bfloat16", "cuda:1") is ampere and selected == [1]  # cuda:N asks GPU N, not the current one
    assert asked and not any(asked)
    assert computes_fast("float16", "cuda") and bf16_compute("cuda:0") == ("bfloat16" if ampere else "float32")
    stored_bf16 = SimpleNamespace(source=SimpleNamespace(stored_dtype=lambda: "bfloat16"))
    assert compute_dtype(AuditConfig(dtype="auto", device="cuda"), stored_bf16) == ("bfloat16" if ampere else "float32")
    stored_fp16 = SimpleNamespace(source=SimpleNamespace(stored_dtype=lambda: "float16"))
    assert compute_dtype(AuditConfig(dtype="auto", device="cuda:1"), stored_fp16) == "float16"  # every GPU computes it
