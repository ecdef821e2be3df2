"""Unlearning losses against hand computations, SURE's mask, and frozen modules staying bit-identical."""

import copy
import math

import pytest
import torch

from conftest import kv_caches
from unlearn_audit.benchmark import tiny
from unlearn_audit.errors import InputError
from unlearn_audit.models.batch import make_batch
from unlearn_audit.models.loading import load_checkpoint, write_checkpoint
from unlearn_audit.quantize.base import quantizable_modules
from unlearn_audit.remediate import losses, saliency
from unlearn_audit.remediate.unlearn import UnlearnConfig, unlearn

TEXTS = ["the quick brown fox jumps over the lazy dog", "pack my box with five dozen liquor jugs",
         "how vexingly quick daft zebras jump", "sphinx of black quartz judge my vow"]


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    tok = tiny.train_tokenizer(TEXTS * 4, 300)
    model = tiny.tiny_llama(len(tok), hidden=64, layers=2, seed=7)
    seqs = [tok(t)["input_ids"] + [tok.eos_token_id] for t in TEXTS]
    return model, tok, seqs


def test_ga_is_negative_cross_entropy_and_matches_hf_loss(setup):
    model, tok, seqs = setup
    b = make_batch(seqs, tok.pad_token_id)
    hf = model(input_ids=b.input_ids, attention_mask=b.attention_mask, labels=b.labels).loss
    assert losses.cross_entropy(model, b).item() == pytest.approx(hf.item(), rel=1e-5)
    assert losses.ga_loss(model, b).item() == pytest.approx(-hf.item(), rel=1e-5)


def test_sequence_logprob_by_hand(setup):
    model, tok, seqs = setup
    b = make_batch(seqs[:2], tok.pad_token_id)
    got = losses.sequence_logprob(model, b)
    for i, s in enumerate(seqs[:2]):
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([s])).logits[0, :-1], -1)
        expected = lp.gather(-1, torch.tensor(s[1:]).unsqueeze(-1)).sum()
        assert got[i].item() == pytest.approx(expected.item(), rel=1e-4)


def test_npo_at_the_reference_is_two_over_beta_log_two(setup):
    model, tok, seqs = setup
    b = make_batch(seqs, tok.pad_token_id)
    for beta in (0.1, 0.5):
        assert losses.npo_loss(model, model, b, beta).item() == pytest.approx(2 / beta * math.log(2), rel=1e-5)


def test_kl_is_zero_at_the_original_and_positive_elsewhere(setup):
    model, tok, seqs = setup
    b = make_batch(seqs, tok.pad_token_id)
    assert losses.kl_to_original(model, model, b).item() == pytest.approx(0.0, abs=1e-6)
    moved = copy.deepcopy(model)
    with torch.no_grad():
        moved.lm_head.weight.add_(0.05 * torch.randn_like(moved.lm_head.weight))
    assert losses.kl_to_original(moved, model, b).item() > 1e-4


def test_training_losses_build_no_kv_cache(setup):
    """The losses' forwards are teacher-forced and read no KV cache; the frozen model's (no_grad) would
    otherwise hold every layer's keys and values for nothing."""
    model, tok, seqs = setup
    b = make_batch(seqs, tok.pad_token_id)
    assert model.config.use_cache
    with kv_caches(model) as seen:
        losses.cross_entropy(model, b)
        losses.npo_loss(model, model, b)
        losses.kl_to_original(model, model, b)
    assert len(seen) >= 5 and all(cache is None for cache in seen)


def test_mask_selects_exactly_the_modules_above_the_percentile(setup):
    model, tok, seqs = setup
    model = copy.deepcopy(model)
    names = [n for n, _ in quantizable_modules(model)]
    weights = {n: float(i + 1) for i, n in enumerate(names)}  # a constructed gradient: k_i * ones

    def constructed_loss(m, _batch):
        mods = dict(m.named_modules())
        return sum(weights[n] * mods[n].weight.sum() for n in names)

    smap = saliency.saliency_map(model, [None], constructed_loss, percentile=90)
    mods = dict(model.named_modules())
    for n in names:
        assert smap.scores[n] == pytest.approx(weights[n] * math.sqrt(mods[n].weight.numel()), rel=1e-9)
    threshold = float(torch.quantile(torch.tensor(list(smap.scores.values()), dtype=torch.float64), 0.9))
    assert smap.threshold == pytest.approx(threshold)
    assert set(smap.selected) == {n for n in names if smap.scores[n] >= threshold}
    assert 0 < len(smap.selected) < len(names)


def test_sure_leaves_unselected_modules_bit_identical_and_unlearning_works(setup):
    model, tok, seqs = setup
    model = copy.deepcopy(model)
    forget, retain = seqs[:2], seqs[2:]
    fb, rb = make_batch(forget, tok.pad_token_id), make_batch(retain, tok.pad_token_id)
    smap = saliency.saliency_map(model, [fb], losses.ga_loss, percentile=50)
    trainable = saliency.freeze_all_but(model, smap)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        f0, r0 = losses.sequence_logprob(model, fb).sum(), losses.sequence_logprob(model, rb).sum()
    unlearn(model, forget, retain, tok.pad_token_id, UnlearnConfig("ga_gdr", lr=1e-3, steps=5, batch_size=2))
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {f"{n}.weight" for n in trainable}
    with torch.no_grad():
        f1, r1 = losses.sequence_logprob(model, fb).sum(), losses.sequence_logprob(model, rb).sum()
    assert f1 < f0  # the forget set became less likely
    assert (f0 - f1) > (r0 - r1)  # and the retain set lost less


def test_unlearn_command_writes_an_auditable_checkpoint_with_its_record(setup, tmp_path, capsys):
    import json

    from unlearn_audit.cli import main
    from unlearn_audit.data import write_jsonl
    from unlearn_audit.models.loading import load_checkpoint

    model, tok, _ = setup
    src = write_checkpoint(model, tok, tmp_path / "orig")
    write_jsonl(tmp_path / "f.jsonl", [{"text": t} for t in TEXTS[:2]])
    write_jsonl(tmp_path / "r.jsonl", [{"text": t} for t in TEXTS[2:]])
    out = tmp_path / "unlearned"
    args = ["unlearn", src, "--forget", tmp_path / "f.jsonl", "--retain", tmp_path / "r.jsonl", "--method", "npo_klr",
            "--sure", "--saliency-percentile", "90", "--steps", "3", "--batch-size", "2", "--out", out]
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    assert exc.value.code == 0, capsys.readouterr().err
    record = json.loads((out / "unlearning.json").read_text())
    assert record["method"] == "npo_klr" and record["hyperparameters"]["lr"] == 1e-4
    assert len(record["losses"]) == 3 and record["sure"]["selected"]
    assert record["data"]["forget"]["sha256"] and record["seed"] == 0
    unl = load_checkpoint(out).model.state_dict()
    orig = load_checkpoint(src).model.state_dict()
    changed = {k for k in orig if not torch.equal(orig[k], unl[k])}
    assert changed == {f"{n}.weight" for n in record["sure"]["trainable"]}
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args[:-2] + ["--method", "npo_kl", "--out", tmp_path / "x"]])
    assert exc.value.code == 2 and "did you mean 'npo_klr'" in capsys.readouterr().err


def _remediate_inputs(setup, tmp_path):
    """The tiny model as a checkpoint, and forget (f), retain (r) and holdout (h) sets beside it."""
    from unlearn_audit.data import write_jsonl

    model, tok, _ = setup
    docs = [f"{t} number {i}" for i, t in enumerate(TEXTS * 6)]
    for name, rows in (("f", docs[:12]), ("r", docs[12:]), ("h", [d.upper() for d in docs[:12]])):
        write_jsonl(tmp_path / f"{name}.jsonl", [{"text": t} for t in rows])
    return write_checkpoint(model, tok, tmp_path / "orig")


def test_remediate_verify_writes_checkpoint_and_report_and_exits_with_the_audit_code(setup, tmp_path, capsys):
    import json

    from unlearn_audit.cli import main

    src = _remediate_inputs(setup, tmp_path)
    out = tmp_path / "out"
    args = ["remediate", src, "--original", src, "--forget", tmp_path / "f.jsonl", "--retain", tmp_path / "r.jsonl",
            "--holdout", tmp_path / "h.jsonl", "--steps", "2", "--batch-size", "4", "--verify", "--schemes", "fp32",
            "--format", "json", "--out", out]
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    report = json.loads((out / "report.json").read_text())
    assert exc.value.code == {"PASS": 0, "FAIL": 1, "INCONCLUSIVE": 4}[report["verdict"]]
    assert json.loads(capsys.readouterr().out) == report
    assert (out / "model" / "unlearning.json").is_file() and report["inputs"]["model"]["path"] == str(out / "model")


def test_unlearn_bad_options_are_one_line_errors(setup, tmp_path, capsys):
    from unlearn_audit.cli import main
    from unlearn_audit.data import write_jsonl

    model, tok, _ = setup
    src = write_checkpoint(model, tok, tmp_path / "orig")
    write_jsonl(tmp_path / "f.jsonl", [{"text": t} for t in TEXTS])
    base = ["unlearn", src, "--forget", tmp_path / "f.jsonl", "--retain", tmp_path / "f.jsonl"]
    capsys.readouterr()  # writing the checkpoint may have drawn a progress bar on stderr
    for extra, needle in (
        (["--sure", "--saliency-percentile", "150", "--out", tmp_path / "a"], "between 0 and 100"),
        (["--out", src], "already exists"),
        (["--retain", tmp_path / "missing.jsonl", "--out", tmp_path / "b"], "not found"),
        (["--lr", "-1", "--out", tmp_path / "c"], "--lr must be a positive number"),
        (["--method", "npo", "--beta", "0", "--out", tmp_path / "d"], "--beta must be a positive number"),
        (["--alpha", "nan", "--out", tmp_path / "e"], "--alpha must be a non-negative number"),
        (["--preset", "paper-movies", "--out", tmp_path / "f"], "--preset must be one of paper-news, paper-books"),
        (["--train-dtype", "float16", "--out", tmp_path / "g"], "--train-dtype must be float32 or bfloat16"),
        (["--confine-to", "rtn-int9", "--out", tmp_path / "h"], "unknown scheme 'rtn-int9'"),
        (["--grad-accum", "9", "--batch-size", "8", "--out", tmp_path / "i"], "--grad-accum must be between 1 and --batch-size (8)"),
        (["--dtype", "float8", "--out", tmp_path / "j"], "--dtype must be"),
        (["--train-dtype", "bfloat16", "--dtype", "float16", "--out", tmp_path / "k"], "not float16"),
        (["--device", "cuda:1", "--out", tmp_path / "l"], "cuda:1"),
        (["--device", "tpu", "--out", tmp_path / "m"], "--device must be cpu, cuda, cuda:N or auto"),
    ):
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in base + extra])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_remediate_verify_honours_device_policy_and_fail_on(setup, tmp_path, capsys):
    """The re-audit is built like ``audit``'s: --policy, --fail-on and --device reach it."""
    import json

    from unlearn_audit.cli import main

    src = _remediate_inputs(setup, tmp_path)
    undecided = tmp_path / "undecided.toml"
    undecided.write_text("min_documents = 1000\n")  # every check INCONCLUSIVE, whatever the model did
    base = ["remediate", src, "--original", src, "--forget", tmp_path / "f.jsonl", "--retain", tmp_path / "r.jsonl",
            "--holdout", tmp_path / "h.jsonl", "--steps", "1", "--batch-size", "4", "--verify", "--schemes", "fp32",
            "--format", "json", "--policy", undecided, "--device", "cpu"]
    codes = {}
    for fail_on in ("fail", "inconclusive"):
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in base + ["--fail-on", fail_on, "--out", tmp_path / fail_on]])
        codes[fail_on] = exc.value.code
        report = json.loads(capsys.readouterr().out)
        assert report["verdict"] == "INCONCLUSIVE" and report["config"]["policy"]["min_documents"] == 1000
        assert report["config"]["policy_source"] == f"policy file {undecided}" and report["config"]["device"] == "cpu"
    assert codes == {"fail": 0, "inconclusive": 4}
    with pytest.raises(SystemExit) as exc:  # a bad --device is refused before any training
        main([str(a) for a in base[:-1] + ["tpu", "--out", tmp_path / "x"]])
    assert exc.value.code == 2 and "--device must be" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_the_paper_presets_follow_appendix_d():
    from unlearn_audit.remediate.presets import preset_defaults, unlearn_config

    assert preset_defaults(None, "ga_gdr", False) == {"epochs": 5, "alpha": 1.0, "saliency_percentile": 90.0}
    assert preset_defaults("paper-news", "npo_gdr", False) == {"epochs": 10, "alpha": 1.0, "saliency_percentile": 90.0}
    assert preset_defaults("paper-books", "npo_gdr", False) == {"epochs": 5, "alpha": 300.0, "saliency_percentile": 90.0}
    assert preset_defaults("paper-books", "ga_klr", False)["alpha"] == 2.0  # Table 5
    assert preset_defaults("paper-news", "ga_gdr", True) == {"epochs": 10, "alpha": 400.0, "saliency_percentile": 99.0}  # Table 6
    cfg = unlearn_config("npo_klr", None, False, 10, None, 8, 2.0, 0.1, 0, 40, "bfloat16")
    assert (cfg.lr, cfg.steps, cfg.train_dtype) == (1e-5, 50, "bfloat16")
    with pytest.raises(InputError, match="--train-dtype"):
        unlearn_config("ga", None, False, 1, None, 8, 1.0, 0.1, 0, 8, "float16")


@pytest.mark.parametrize("fast", ["bfloat16", ""], ids=["native-bf16", "emulated-bf16"])
def test_bfloat16_unlearning_keeps_model_and_optimizer_in_bfloat16(setup, tmp_path, capsys, monkeypatch, fast):
    """The paper's numerics: no float32 master copy, so the written checkpoint is bfloat16 and the
    unlearning record says so; updates below a weight's bfloat16 spacing round away. Both compute paths,
    whatever this CPU has: bfloat16 arithmetic, and float32 arithmetic with bfloat16 storage."""
    import json

    from unlearn_audit.machine import FAST_DTYPES_ENV

    monkeypatch.setenv(FAST_DTYPES_ENV, fast)
    from safetensors import safe_open

    from unlearn_audit.cli import main

    src = _remediate_inputs(setup, tmp_path)
    out = tmp_path / "bf16"
    args = ["unlearn", src, "--forget", tmp_path / "f.jsonl", "--retain", tmp_path / "r.jsonl", "--method", "ga_gdr",
            "--preset", "paper-news", "--train-dtype", "bfloat16", "--steps", "2", "--batch-size", "4", "--out", out]
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    assert exc.value.code in (0, None), capsys.readouterr().err
    record = json.loads((out / "unlearning.json").read_text())
    assert record["hyperparameters"]["train_dtype"] == "bfloat16" and record["hyperparameters"]["lr"] == 1e-5
    numerics = record["numerics"]
    assert numerics["stored_dtype"] == "bfloat16" and numerics["compute_dtype"] == (fast or "float32")
    assert numerics["cpu_capability"] and numerics["cpu_model"]
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    before = load_checkpoint(src).model.state_dict()
    after = load_checkpoint(out).model.state_dict()
    name = next(k for k in before if k.endswith("q_proj.weight"))
    moved = (before[name].bfloat16().float() != after[name]).float().mean().item()
    assert moved < 0.5  # at lr 1e-5 most bfloat16 weights cannot take the update at all
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args[:-1] + [tmp_path / "x", "--confine-to", "rtn-int4"]])
    assert exc.value.code == 2 and "cannot be combined" in capsys.readouterr().err


def test_the_methods_that_read_the_frozen_original():
    from unlearn_audit.remediate.unlearn import METHODS, needs_original

    assert {m for m in METHODS if needs_original(m)} == {"ga_klr", "npo", "npo_gdr", "npo_klr"}


@pytest.mark.parametrize("method", ["ga_gdr", "npo_klr", "ga"])
def test_gradient_accumulation_gives_the_whole_batchs_step(setup, method):
    """Micro-batches weighted by their share of tokens (GA, GDR, KLR) or sequences (NPO) sum to the whole
    batch's loss and gradient: the weights after three steps agree to float rounding, and the logged
    losses too. Sequences of different lengths make a plain mean of the parts' losses differ."""
    model, tok, seqs = setup
    forget = [seqs[0], seqs[1][:5], seqs[2], seqs[3][:7]]
    retain = [seqs[3], seqs[2][:4], seqs[1]]
    runs = {}
    for parts in (1, 2, 3):
        m, o = copy.deepcopy(model), copy.deepcopy(model)
        cfg = UnlearnConfig(method, lr=1e-3, steps=3, batch_size=4, seed=1, grad_accum=parts)
        runs[parts] = (unlearn(m, forget, retain, tok.pad_token_id, cfg, original=o), m.state_dict())
    for parts in (2, 3):
        assert runs[parts][0] == pytest.approx(runs[1][0], rel=1e-5, abs=1e-6)
        for k, w in runs[1][1].items():
            torch.testing.assert_close(runs[parts][1][k], w, rtol=1e-4, atol=2e-5)  # Adam: 1e-3 a step
    assert any(not torch.equal(runs[1][1][k], v) for k, v in model.state_dict().items())  # it did train


def test_micro_batches_weight_by_tokens_or_sequences():
    from unlearn_audit.remediate.unlearn import micro_batches

    forget, retain = [[1] * 5, [1] * 3, [1] * 9], [[2] * 4, [2] * 2]
    parts = micro_batches("ga_gdr", forget, retain, 2)
    assert [(f, wf, r, wr) for f, wf, r, wr in parts] == [([[1] * 5, [1] * 3], 6 / 14, [[2] * 4], 3 / 4), ([[1] * 9], 8 / 14, [[2] * 2], 1 / 4)]
    npo = micro_batches("npo", forget, retain, 3)
    assert [wf for _, wf, _, _ in npo] == [1 / 3] * 3 and all(r is None for _, _, r, _ in npo)  # no regularizer
    assert micro_batches("ga_klr", forget, retain, 1) == [(forget, 1.0, retain, 1.0)]


def test_unlearn_in_mixed_precision_records_its_arithmetic(setup, tmp_path, capsys):
    """--dtype bfloat16: bfloat16 autocast on float32 master weights; the checkpoint stays float32 and
    unlearning.json says how it was computed, and where."""
    import json

    from unlearn_audit.cli import main
    from unlearn_audit.data import write_jsonl

    model, tok, _ = setup
    src = write_checkpoint(model, tok, tmp_path / "orig")
    write_jsonl(tmp_path / "f.jsonl", [{"text": t} for t in TEXTS[:2]])
    write_jsonl(tmp_path / "r.jsonl", [{"text": t} for t in TEXTS[2:]])
    out = tmp_path / "mixed"
    args = ["unlearn", src, "--forget", tmp_path / "f.jsonl", "--retain", tmp_path / "r.jsonl", "--steps", "2", "--batch-size", "2",
            "--device", "cpu", "--dtype", "bfloat16", "--grad-accum", "2", "--lr", "1e-3", "--out", out]
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    assert exc.value.code == 0, capsys.readouterr().err
    record = json.loads((out / "unlearning.json").read_text())
    assert record["numerics"]["compute_dtype"] == "bfloat16" and record["numerics"]["device"] == "cpu"
    assert record["numerics"]["stored_dtype"] == "float32" and record["hyperparameters"]["grad_accum"] == 2
    assert load_checkpoint(out).model.lm_head.weight.dtype == torch.float32
