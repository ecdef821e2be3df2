"""Weight forensics: identical models overlap fully; a constructed perturbation gives the hand count;
the streaming ``diff`` command agrees with the in-memory comparison; the changed weights' cells, zero
cells, median |w| and the bfloat16 finding match hand-built pairs whose answers are known."""

import copy
import json
import math

import pytest
import torch

from unlearn_audit.benchmark import tiny
from unlearn_audit.cli import main
from unlearn_audit.models.loading import write_checkpoint
from unlearn_audit.quantize.base import out_in_weight, quantizable_modules
from unlearn_audit.quantize.forensics import PER_DECADE, compare, measure, model_pairs
from unlearn_audit.quantize.ggml import ggml_grid
from unlearn_audit.quantize.registry import get_scheme
from unlearn_audit.quantize.rtn import rtn_codes
from unlearn_audit.report.view import forensics_notes

GRIDS = ("rtn-int4", "rtn-int4-asym", "rtn-int8", "nf4", "fp4", "gguf-q4_0", "gguf-q5_0", "gguf-q8_0", "gguf-q4_1", "gguf-q5_1")


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
    original, moved, k, a, b = pair
    with pytest.raises(SystemExit) as exc:
        main(["diff", str(a), str(b), "--schemes", "rtn-int4,nf4,gguf-q4_0", "--format", "json", "-o", str(tmp_path / "d")])
    assert exc.value.code == 0
    got = json.loads(capsys.readouterr().out)
    assert json.loads((tmp_path / "d" / "diff.json").read_text()) == got
    expected = compare(model_pairs(original, moved), [get_scheme(n) for n in ("rtn-int4", "nf4", "gguf-q4_0")])
    for name, e in expected.items():
        for key in ("code_overlap", "scale_changed", "changed_same_cell", "changed_in_zero_cell", "changed_fraction"):
            assert got["schemes"][name][key] == pytest.approx(e[key], abs=1e-12)
    total = sum(out_in_weight(m).numel() for _, m in quantizable_modules(original))
    assert got["bytes_read"] == 2 * 4 * total
    # k weights moved by two whole RTN-int4 cells: every one changed, none kept its rtn-int4 cell
    assert got["n_changed"] == k and got["changed_fraction"] == k / total
    assert got["schemes"]["rtn-int4"]["changed_same_cell"] == 0.0
    assert got["bf16_representable"] == {"original": False, "unlearned": False}  # float32 random weights

    with pytest.raises(SystemExit) as exc:
        main(["diff", str(a), str(b), "--schemes", "rtn-int4"])
    table = capsys.readouterr().out
    assert exc.value.code == 0 and "changed weights: same cell" in table and "in zero cell" in table
    assert f"{k / total:.2%} of the quantizable weights changed at all" in table


def test_diff_refuses_a_different_architecture(pair, tmp_path, capsys):
    _, _, _, a, _ = pair
    tok = tiny.train_tokenizer(["the quick brown fox jumps over the lazy dog"] * 8, 300)
    other = write_checkpoint(tiny.tiny_llama(len(tok), hidden=64, layers=1, seed=5), tok, tmp_path / "small")
    with pytest.raises(SystemExit) as exc:
        main(["diff", str(a), str(other)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "shape" in err and len(err.strip().splitlines()) == 1


def _bf16(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float32).to(torch.bfloat16).to(torch.float32)


def _next_bf16(w: torch.Tensor) -> torch.Tensor:
    """Each value moved up by one bfloat16 ulp: the smallest change a pure-bfloat16 update can make."""
    return torch.nextafter(w.to(torch.bfloat16), torch.tensor(math.inf, dtype=torch.bfloat16)).to(torch.float32)


def _within_a_bin(got: float, want: float) -> bool:
    """The log-binned median's promise: the true median lies in the reported bin (half a bin either side)."""
    return abs(math.log10(got) - math.log10(want)) <= 0.5 / PER_DECADE + 1e-9


@pytest.fixture(scope="module")
def cells():
    """A bfloat16-exact (300, 128) matrix whose every block of 32 holds 0.8 and -0.7, so every grid has
    a step near 0.1 and a weight of 0.001 lies in its zero cell (code 0, the asymmetric zero point 7,
    NF4/FP4 index 7, Q4_0 nibble 8, Q4_1's nearest-to-0 code 7). Three known sets of weights change:

    A (column 2 of each block, every row): 0.001 up one bfloat16 ulp — changed, same cell, zero cell;
    B (column 3, every 3rd row): 0.33 -> 0.75 — changed, another cell on every grid, not the zero cell;
    C (column 4, every 5th row): 0.001 -> 0.3 — changed, leaves the zero cell.
    No block's maximum or minimum moves, so no scale changes. 300 rows: two slices of 256."""
    w = torch.full((300, 128), 0.2)
    w[:, 0::32], w[:, 1::32], w[:, 2::32], w[:, 3::32], w[:, 4::32] = 0.8, -0.7, 0.001, 0.33, 0.001
    w = _bf16(w)
    new = w.clone()
    new[:, 2::32] = _next_bf16(w[:, 2::32])
    new[0::3, 3::32] = _bf16(0.75)
    new[0::5, 4::32] = _bf16(0.3)
    return w, new, 300 * 4, 100 * 4, 60 * 4


def test_changed_weights_keep_or_leave_their_cell_and_the_zero_cell_on_every_grid(cells):
    w, new, n_a, n_b, n_c = cells
    changed = n_a + n_b + n_c
    r = measure([("m", w, new)], [get_scheme(n) for n in GRIDS])
    assert r["n_weights"] == w.numel() and r["n_changed"] == changed
    assert r["changed_fraction"] == changed / w.numel()
    assert _within_a_bin(r["median_abs_w_changed"], float(_bf16(0.001)))  # A and C are the majority
    assert r["bf16_representable"] == {"original": True, "unlearned": True}
    for name in GRIDS:
        s = r["schemes"][name]
        assert s["status"] == "measured" and s["scale_changed"] == 0.0, name
        assert s["changed_same_cell"] == n_a / changed, name
        assert s["changed_in_zero_cell"] == (n_a + n_c) / changed, name
        assert s["changed_fraction"] == r["changed_fraction"] and s["n_changed"] == changed
        assert s["modules"][0]["changed_same_cell"] == n_a / changed
    # with B alone, the median |w| of the changed weights is B's 0.33, not A's 0.001
    only_b = w.clone()
    only_b[0::3, 3::32] = _bf16(0.75)
    r = measure([("m", w, only_b)], [get_scheme("nf4")])
    assert _within_a_bin(r["median_abs_w_changed"], float(_bf16(0.33)))
    assert r["schemes"]["nf4"]["changed_same_cell"] == 0.0 and r["schemes"]["nf4"]["changed_in_zero_cell"] == 0.0


def test_nothing_changed_leaves_the_shares_undefined(cells):
    w, _, _, _, _ = cells
    r = measure([("m", w, w.clone())], [get_scheme("rtn-int4")])
    assert r["n_changed"] == 0 and r["changed_fraction"] == 0.0 and r["median_abs_w_changed"] is None
    s = r["schemes"]["rtn-int4"]
    assert s["changed_same_cell"] is None and s["changed_in_zero_cell"] is None


def test_a_zero_weight_lands_in_the_zero_cell_of_every_grid():
    """The definition of ``GridCodes.zero``, checked on every grid: w = 0 (and -0) gets the zero code."""
    torch.manual_seed(3)
    w = torch.randn(64, 128) * 0.02
    w[:, 5::16] = 0.0
    w[1::2, 5::32] = -0.0
    for name in GRIDS:
        g = get_scheme(name).codes(w)
        zero = torch.broadcast_to(g.zero, g.codes.shape)
        assert torch.equal(g.codes[w == 0], zero[w == 0]), name
        assert (g.codes != zero).any(), name  # not every code is the zero code


def test_q4_1_zero_cell_is_the_code_nearest_zero():
    """Q4_1's grid is q·d + m: a block of positive weights has its nearest-to-0 point at code 0, a block
    of negative weights at code 15, a block spanning [-0.1, 0.5] at round(0.1 / 0.04) = 2 or 3."""
    row = torch.cat([torch.linspace(0.1, 0.4, 32), torch.linspace(-0.4, -0.1, 32), torch.linspace(-0.1, 0.5, 32)])
    g, deq = ggml_grid(row.unsqueeze(0), "q4_1")
    zero = torch.broadcast_to(g.zero, g.codes.shape)[0]
    assert zero[:32].unique().tolist() == [0] and zero[32:64].unique().tolist() == [15]
    z = int(zero[64])
    grid_points = deq[0, 64:][g.codes[0, 64:] == z]
    assert z in (2, 3) and grid_points.numel() and grid_points.abs().max() <= 0.02


def test_one_bf16_ulp_on_the_small_weights_alone(cells):
    """The hypothesis in miniature: a bfloat16 model whose weights below 5e-3 moved by one ulp. Counts come
    from whole-matrix codes, independently of the sliced tally."""
    torch.manual_seed(7)
    w = _bf16(torch.randn(320, 256) * 0.02)
    small = w.abs() < 5e-3
    new = torch.where(small, _next_bf16(w), w)
    r = measure([("m", w, new)], [get_scheme("rtn-int4")])
    assert r["n_changed"] == int(small.sum()) and r["changed_fraction"] == int(small.sum()) / w.numel()
    assert _within_a_bin(r["median_abs_w_changed"], float(w[small].abs().median()))
    assert r["median_abs_w_changed"] < 5e-3
    a, b = rtn_codes(w, 4, 128), rtn_codes(new, 4, 128)
    assert r["schemes"]["rtn-int4"]["changed_same_cell"] == float((a.codes == b.codes)[small].double().mean())
    assert r["schemes"]["rtn-int4"]["changed_in_zero_cell"] == float((a.codes == 0)[small].double().mean())


def test_bf16_representable_is_per_side_and_only_for_float32():
    model = tiny.tiny_llama(300, hidden=64, layers=1, seed=2)
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for p in rounded.parameters():
            p.copy_(_bf16(p))
    assert measure(model_pairs(rounded, rounded), [])["bf16_representable"] == {"original": True, "unlearned": True}
    assert measure(model_pairs(model, rounded), [])["bf16_representable"] == {"original": False, "unlearned": True}
    one_off = copy.deepcopy(rounded)
    name, mod = quantizable_modules(one_off)[-1]
    with torch.no_grad():
        mod.weight.view(torch.int32)[3, 7] |= 1  # float32's lowest mantissa bit: one ulp off bfloat16
    r = measure(model_pairs(rounded, one_off), [get_scheme("rtn-int8")])
    assert r["bf16_representable"] == {"original": True, "unlearned": False} and r["n_changed"] == 1
    assert r["schemes"]["rtn-int8"]["bf16_representable"] == r["bf16_representable"]
    w = torch.randn(64, 64, dtype=torch.bfloat16)  # a bfloat16 file: trivially representable, so not reported
    assert measure([("m", w, w)], [])["bf16_representable"] == {"original": None, "unlearned": None}


def test_the_report_view_states_the_changed_weights_and_the_bf16_fact():
    block = {"status": "measured", "changed_fraction": 0.125, "median_abs_w_changed": 0.00213,
             "bf16_representable": {"original": True, "unlearned": False}}
    notes = forensics_notes({"forensics": {"gptq-int4": {"status": "skipped", "reason": "x"}, "rtn-int4": block}})
    assert notes[0] == "12.50% of the quantizable weights changed at all; median |w| of those in the original: 0.00213."
    assert notes[1].startswith("Every float32 weight of the original checkpoint is exactly a bfloat16 value")
    assert forensics_notes({"forensics": {"rtn-int4": {"status": "measured"}}}) == []  # a report from before these fields
