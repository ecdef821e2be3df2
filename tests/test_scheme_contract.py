"""One contract for every preset in the registry, on a tiny Llama and a tiny GPT-2 (Conv1D weights):
it builds (or says why not), the source model is untouched, the variant generates on CPU, its logits
stay near fp32's, and grid formats put at most 2^bits distinct values in each group."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from unlearn_audit.benchmark import tiny
from unlearn_audit.models.loading import load_checkpoint, write_checkpoint
from unlearn_audit.quantize.base import SchemeUnavailable, out_in_weight, quantizable_modules
from unlearn_audit.quantize.registry import SCHEMES, get_scheme

TEXTS = ["the quick brown fox jumps over the lazy dog", "pack my box with five dozen liquor jugs",
         "how vexingly quick daft zebras jump", "sphinx of black quartz judge my vow"]
# Relative L2 error of the logits against fp32, by bit width: loose bounds that still catch a broken grid.
MAX_LOGIT_ERROR = {2: 1.0, 3: 0.5, 4: 0.3, 5: 0.15, 6: 0.08, 8: 0.03, 32: 0.0}
PERTURBATION_MAX_ERROR = 0.5  # pruning 30% of a random tiny model moves its logits a lot
PERTURBATIONS = ("prune", "noise", "relearn")


def _gpt2(vocab: int) -> GPT2LMHeadModel:
    torch.manual_seed(3)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=64))


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def ckpt(request, tmp_path_factory):
    torch.set_num_threads(1)
    tok = tiny.train_tokenizer(TEXTS * 8, 300)
    model = tiny.tiny_llama(len(tok), hidden=64, layers=2, seed=2) if request.param == "llama" else _gpt2(len(tok))
    return load_checkpoint(write_checkpoint(model, tok, tmp_path_factory.mktemp(request.param) / "m"))


@pytest.fixture(scope="module")
def calibration(ckpt):
    return [ckpt.tokenizer(t)["input_ids"] for t in TEXTS]


def _group_columns(scheme, in_features: int) -> int | None:
    p = scheme.params()
    if p.get("method") in ("rtn", "gptq", "torchao"):
        return in_features if p["group_size"] == "per-channel" else p["group_size"]
    if p.get("method") in ("gguf",):
        return p["block_size"]
    if p.get("method") in ("nf4", "fp4"):
        return p["blocksize"]
    return None  # bitsandbytes keeps packed weights; AWQ divides by per-column scales


@pytest.mark.parametrize("name", list(SCHEMES))
def test_the_registry_describes_each_preset_as_it_builds(name):
    """``schemes`` prints the table's name and description without building anything (no torch import);
    both must be the built scheme's own."""
    scheme = get_scheme(name)
    assert (scheme.name, scheme.description) == (name, SCHEMES[name].description)


@pytest.mark.parametrize("name", list(SCHEMES))
def test_every_preset_keeps_the_contract(ckpt, calibration, name):
    scheme = get_scheme(name)
    assert scheme.name == name and scheme.description and isinstance(scheme.params(), dict)
    before = {k: v.clone() for k, v in ckpt.model.state_dict().items()}
    try:
        model = scheme.build(ckpt, calibration)
    except SchemeUnavailable as exc:
        assert str(exc)
        pytest.skip(f"{name}: {exc}")
    after = ckpt.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "build must not modify the source model"

    ids = torch.tensor([calibration[0]])
    with torch.no_grad():
        ref, got = ckpt.model(ids).logits, model(ids).logits.float()
        out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=ckpt.tokenizer.pad_token_id)
    assert out.shape[1] == ids.shape[1] + 4
    err = float((got - ref).norm() / ref.norm())
    bound = PERTURBATION_MAX_ERROR if scheme.params().get("method") in PERTURBATIONS else MAX_LOGIT_ERROR[scheme.bits]
    assert torch.isfinite(got).all() and err <= bound, err
    if name != "fp32":
        assert err > 0, "a quantized variant must differ from fp32"
    if scheme.params().get("method") in PERTURBATIONS:
        return  # no grid: checked against their own definitions in test_quant_methods and test_attacks

    cols = _group_columns(scheme, 0)
    if cols is None:
        return
    for mod_name, mod in quantizable_modules(model):
        w = out_in_weight(mod)
        g = _group_columns(scheme, w.shape[1])
        flat = w.reshape(-1, g) if scheme.params()["method"] in ("nf4", "fp4") else w
        for start in range(0, flat.shape[1], g):
            chunk = flat[:, start : start + g]
            distinct = max(len(torch.unique(row)) for row in chunk)
            assert distinct <= 2**scheme.bits, (mod_name, distinct)
