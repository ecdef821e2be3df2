"""Weight forensics: identical models overlap fully; a constructed perturbation gives the hand count;
the streaming ``diff`` command agrees with the in-memory comparison."""

import copy
import json

import pytest
import torch

from unlearn_audit.benchmark import tiny
from unlearn_audit.cli import main
from unlearn_audit.models.loading import write_checkpoint
from unlearn_audit.quantize.base import out_in_weight, quantizable_modules
from unlearn_audit.quantize.forensics import compare, model_pairs
from unlearn_audit.quantize.registry import get_scheme
from unlearn_audit.quantize.rtn import rtn_codes


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A tiny Llama and a copy in which k weights of one module moved by exactly two RTN-int4 cells."""
    torch.set_num_threads(1)
    tok = tiny.train_tokenizer(["the quick brown fox jumps over the lazy dog"] * 8, 300)
    original = tiny.tiny_llama(len(tok), hidden=128, layers=1, seed=5)
    moved = copy.deepcopy(original)
    name, mod = quantizable_modules(moved)[0]
    w = out_in_weight(mod)
    c = rtn_codes(w, 4, 128)
    k = 0
    with torch.no_grad():
        for row in range(0, w.shape[0], 4):  # in every 4th row, the smallest weight moves up two cells
            col = int(w[row, :128].abs().argmin())
            mod.weight[row, col] += 2 * c.scales[row, 0]
            k += 1
    root = tmp_path_factory.mktemp("fx")
    return original, moved, k, write_checkpoint(original, tok, root / "a"), write_checkpoint(moved, tok, root / "b")


def test_identical_models_share_every_cell():
    model = tiny.tiny_llama(300, hidden=64, layers=1, seed=1)
    schemes = [get_scheme(n) for n in ("rtn-int4", "rtn-int8-asym", "nf4", "gguf-q4_1", "gptq-int4")]
    out = compare(model_pairs(model, model), schemes)
    for name in ("rtn-int4", "rtn-int8-asym", "nf4", "gguf-q4_1"):
        assert out[name]["code_overlap"] == 1.0 and out[name]["scale_changed"] == 0.0
        assert out[name]["median_dw_over_step"] < 0.001
    assert out["gptq-int4"]["status"] == "skipped" and "calibration" in out["gptq-int4"]["reason"]


def test_a_constructed_perturbation_gives_the_hand_count(pair):
    original, moved, k, _, _ = pair
    total = sum(out_in_weight(m).numel() for _, m in quantizable_modules(original))
    r = compare(model_pairs(original, moved), [get_scheme("rtn-int4")])["rtn-int4"]
    assert r["code_overlap"] == pytest.approx(1 - k / total, abs=1e-12)
    assert r["scale_changed"] == 0.0  # the smallest weight moved; no absmax did
    assert r["most_changed"][0] == quantizable_modules(original)[0][0]
    first = r["modules"][0]
    assert first["code_overlap"] == pytest.approx(1 - k / out_in_weight(quantizable_modules(original)[0][1]).numel())


def test_diff_command_streams_the_same_numbers(pair, tmp_path, capsys):
    original, moved, _, a, b = pair
    with pytest.raises(SystemExit) as exc:
        main(["diff", str(a), str(b), "--schemes", "rtn-int4,nf4,gguf-q4_0", "--format", "json", "--out", str(tmp_path / "d.json")])
    assert exc.value.code == 0
    got = json.loads(capsys.readouterr().out)
    assert json.loads((tmp_path / "d.json").read_text()) == got
    expected = compare(model_pairs(original, moved), [get_scheme(n) for n in ("rtn-int4", "nf4", "gguf-q4_0")])
    for name, e in expected.items():
        assert got["schemes"][name]["code_overlap"] == pytest.approx(e["code_overlap"], abs=1e-12)
        assert got["schemes"][name]["scale_changed"] == pytest.approx(e["scale_changed"], abs=1e-12)
    assert got["bytes_read"] == 2 * 4 * sum(out_in_weight(m).numel() for _, m in quantizable_modules(original))


def test_diff_refuses_a_different_architecture(pair, tmp_path, capsys):
    _, _, _, a, _ = pair
    tok = tiny.train_tokenizer(["the quick brown fox jumps over the lazy dog"] * 8, 300)
    other = write_checkpoint(tiny.tiny_llama(len(tok), hidden=64, layers=1, seed=5), tok, tmp_path / "small")
    with pytest.raises(SystemExit) as exc:
        main(["diff", str(a), str(other)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "shape" in err and len(err.strip().splitlines()) == 1
