"""RTN (paper Eq. 2) on known matrices: groups, per-channel, partial groups, Conv1D, grid overlap."""

import copy

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from conftest import on_disk
from unlearn_audit.quantize.base import quantizable_modules
from unlearn_audit.quantize.forensics import compare, model_pairs
from unlearn_audit.quantize.rtn import RTNScheme, rtn_codes, rtn_groups, rtn_quantize


def test_eq2_per_channel_with_clamp():
    w = torch.tensor([[1.0, -2.0, 0.5, 4.0, 3.0]])
    c = rtn_codes(w, bits=4, group_size=None)
    # Δ = max|w| / 2^(4-1) = 0.5; 4/0.5 = 8 is clamped to 7; 3/0.5 = 6
    assert c.scales.tolist() == [[0.5]]
    assert c.codes.tolist() == [[2, -4, 1, 7, 6]]
    assert rtn_quantize(w, 4, None).tolist() == [[1.0, -2.0, 0.5, 3.5, 3.0]]


def test_groups_and_partial_last_group():
    w = torch.tensor([[1.0, -2.0, 0.5, 4.0, 3.0]])
    c = rtn_codes(w, bits=4, group_size=4)
    # group 1 = [1, -2, 0.5, 4] (Δ 0.5); the remainder group [3] has its own Δ = 3/8
    assert c.scales.tolist() == [[0.5, 0.375]]
    assert c.codes.tolist() == [[2, -4, 1, 7, 7]]
    assert c.dequantize().tolist() == [[1.0, -2.0, 0.5, 3.5, 2.625]]


def test_int8_rounds_half_to_even_and_zero_group_is_zero():
    w = torch.tensor([[1.0, 0.0078125 * 2.5, -1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    c = rtn_codes(w, bits=8, group_size=2)
    # Δ = 1/128; 0.01953125 / Δ = 2.5 -> torch.round gives 2 (half to even)
    assert c.codes[0].tolist() == [127, 2, -128, 0]
    assert rtn_quantize(w, 8, 2)[1].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_error_is_bounded_by_half_a_step():
    torch.manual_seed(0)
    w = torch.randn(16, 576)  # SmolLM2's hidden size: 4 groups of 128 and one of 64
    c = rtn_codes(w, bits=4, group_size=128)
    assert c.scales.shape == (16, 5)
    step = c.scales.repeat_interleave(128, dim=1)[:, :576]
    err = (c.dequantize() - w).abs()
    unclamped = c.codes < 7
    assert torch.all(err[unclamped] <= step[unclamped] / 2 + 1e-7)


def test_conv1d_is_grouped_along_its_input_dimension(tmp_path):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=1, n_head=2, vocab_size=50, n_positions=32))
    model.tie_weights()
    names = [n for n, _ in quantizable_modules(model)]
    assert "lm_head" not in names and "transformer.h.0.attn.c_attn" in names
    conv = dict(model.named_modules())["transformer.h.0.attn.c_attn"]
    expected = rtn_quantize(conv.weight.detach().t(), 4, 32).t()  # (in, out) -> (out, in) and back
    built = RTNScheme(4, 32).build(on_disk(model, tmp_path))
    got = dict(built.named_modules())["transformer.h.0.attn.c_attn"].weight
    assert torch.equal(got, expected)
    assert not torch.equal(conv.weight, got)  # the source model is untouched


def test_grid_overlap_counts_codes_not_floats():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=1, n_head=2, vocab_size=50, n_positions=32))
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for _, m in quantizable_modules(moved):
            m.weight.mul_(1.0001)  # every absmax (scale) shifts, no code does
    overlap = compare(model_pairs(model, moved), [RTNScheme(4, 32)])["rtn-int4-g32"]
    assert overlap["code_overlap"] == pytest.approx(1.0, abs=1e-3)
    assert overlap["scale_changed"] > 0.99
    same = compare(model_pairs(model, model), [RTNScheme(4, 32)])["rtn-int4-g32"]
    assert same["code_overlap"] == 1.0 and same["scale_changed"] == 0.0 and same["median_dw_over_step"] < 0.001


def test_groups_are_a_view_unless_a_short_group_needs_padding():
    w = torch.randn(4, 256)
    grouped, g = rtn_groups(w, 128)
    assert g == 128 and grouped.shape == (4, 2, 128) and grouped.data_ptr() == w.data_ptr()  # no copy
    w = torch.randn(4, 576)
    grouped, _ = rtn_groups(w, 128)
    assert grouped.shape == (4, 5, 128) and torch.equal(grouped[:, 4, 64:], torch.zeros(4, 64))
    assert torch.equal(grouped.reshape(4, -1)[:, :576], w)


def test_fast_quantize_is_the_dequantized_codes_bit_for_bit():
    """rtn_quantize skips the codes (and the padding); its values, signs of zero included, are the codes'."""
    torch.manual_seed(0)
    w = torch.randn(8, 576) * 0.02
    w[0, 512:] = 0.0  # an all-zero short group
    w[1] *= 1e-4
    w[1, 0] = 1.0  # values that round to -0.0 before the int16 cast
    for bits, group_size, symmetric in [(4, 128, True), (4, 128, False), (8, None, True), (2, 64, False), (3, 32, True)]:
        want = rtn_codes(w, bits, group_size, symmetric).dequantize()
        got = rtn_quantize(w, bits, group_size, symmetric)
        assert torch.equal(got.view(torch.int32), want.view(torch.int32)), (bits, group_size, symmetric)
