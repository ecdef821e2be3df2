"""The reference quantizers against the math and against the libraries they reimplement."""

import numpy as np
import pytest
import torch

from conftest import on_disk
from unlearn_audit.quantize.awq import awq_search
from unlearn_audit.quantize.codebook import codebook_grid
from unlearn_audit.quantize.ggml import TYPES, ggml_grid, ggml_roundtrip
from unlearn_audit.quantize.gptq import gptq_quantize
from unlearn_audit.quantize.rtn import rtn_codes, rtn_quantize


def _correlated_inputs(n: int, dim: int, seed: int) -> torch.Tensor:
    """Inputs with strongly correlated channels and a few large ones, like transformer activations."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(dim, dim, generator=g) / dim**0.5 + torch.eye(dim)
    x = torch.randn(n, dim, generator=g) @ mix
    x[:, :4] *= 20  # outlier channels
    return x.to(torch.float64)


def test_asymmetric_rtn_by_hand():
    c = rtn_codes(torch.tensor([[-1.0, 0.5, 2.0]]), bits=2, group_size=None, symmetric=False)
    # range [-1, 2] → Δ = 3 / 3 = 1, zero point 1; 0.5 rounds half to even (0), plus 1
    assert c.scales.tolist() == [[1.0]] and c.zeros.tolist() == [[1]]
    assert c.codes.tolist() == [[0, 1, 3]]
    assert c.dequantize().tolist() == [[-1.0, 0.0, 2.0]]
    # a group that is all positive still includes 0 in its range, so 0 stays exactly representable
    c = rtn_codes(torch.tensor([[0.5, 1.0, 1.5]]), bits=2, group_size=None, symmetric=False)
    assert c.zeros.tolist() == [[0]] and c.scales.tolist() == [[0.5]]


@pytest.mark.parametrize("kind", ["nf4", "fp4"])
def test_codebook_reference_is_bit_identical_to_bitsandbytes(kind):
    F = pytest.importorskip("bitsandbytes.functional")
    torch.manual_seed(0)
    for shape in ((256, 576), (100, 70)):  # the second ends in a short block
        w = torch.randn(*shape) * 0.02
        q, state = F.quantize_4bit(w, blocksize=64, quant_type=kind)
        assert torch.equal(F.dequantize_4bit(q, state), codebook_grid(w, kind, 64)[1])


@pytest.mark.parametrize("kind", list(TYPES))
def test_gguf_codes_rebuild_the_weight_and_requantizing_is_bit_exact(kind):
    import gguf.quants
    from gguf.constants import GGMLQuantizationType

    torch.manual_seed(1)
    w = torch.randn(64, 96) * 0.05
    raw, deq = ggml_roundtrip(w, kind)
    grid, _ = ggml_grid(w, kind)
    qtype = GGMLQuantizationType[kind.upper()]
    assert np.array_equal(gguf.quants.quantize(deq.numpy(), qtype), raw)  # Q(Q(w)) has the same bytes
    levels = 2 ** TYPES[kind]
    assert int(grid.codes.min()) >= (-127 if kind == "q8_0" else 0) and int(grid.codes.max()) < levels
    d = grid.params[:, 0:2].numpy().astype(np.uint8).copy().view(np.float16).astype(np.float32)
    m = grid.params[:, 2:4].numpy().astype(np.uint8).copy().view(np.float16).astype(np.float32) if kind.endswith("_1") else 0
    offset = {"q4_0": 8, "q5_0": 16}.get(kind, 0)
    rebuilt = (grid.codes.numpy().reshape(-1, 32) - offset) * d + m
    assert np.allclose(rebuilt.reshape(w.shape), deq.numpy(), atol=1e-7)


def test_gptq_beats_rtn_on_layer_reconstruction():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(48, 256, generator=g, dtype=torch.float64) * 0.05
    x = _correlated_inputs(2048, 256, seed=1)
    h = 2 * x.T @ x / len(x)
    for bits in (3, 4):
        err_rtn = (x @ (w - rtn_quantize(w, bits, 128)).T).norm()
        q = gptq_quantize(w, h, bits, 128)
        err_gptq = (x @ (w - q).T).norm()
        assert err_gptq < 0.8 * err_rtn, (bits, float(err_gptq), float(err_rtn))
        # GPTQ keeps the grid: every group of 128 uses at most 2^bits values
        for start in (0, 128):
            assert max(len(torch.unique(r)) for r in q[:, start : start + 128]) <= 2**bits


def test_gptq_with_identity_hessian_and_no_feedback_is_rtn():
    # H = I makes every error update zero off the diagonal: GPTQ reduces to RTN with group scales.
    w = torch.randn(8, 256, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert torch.allclose(gptq_quantize(w, torch.eye(256, dtype=torch.float64), 4, 128), rtn_quantize(w, 4, 128))


def test_awq_search_never_loses_to_rtn_on_its_objective():
    g = torch.Generator().manual_seed(3)
    x = _correlated_inputs(1024, 128, seed=4)
    weights = [torch.randn(32, 128, generator=g) * 0.05 for _ in range(3)]
    xtx, mean_abs = x.T @ x, x.abs().mean(0)
    s, alpha, losses = awq_search(weights, xtx, mean_abs, bits=4)
    rtn_loss = sum(float(((x @ (w.double() - rtn_quantize(w, 4, 128, symmetric=False).double()).T) ** 2).sum()) for w in weights)
    assert losses[0] == pytest.approx(rtn_loss, rel=1e-6)  # α = 0 is plain RTN
    assert min(losses) <= rtn_loss and losses[int(round(alpha * 20))] == min(losses)
    assert alpha > 0 and min(losses) < 0.9 * rtn_loss  # with outlier channels, scaling helps


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_asymmetric_rtn_is_bit_identical_to_torchao(bits):
    pytest.importorskip("torchao")
    from unlearn_audit.quantize.ao import ao_config, torchao_dequantized

    w = torch.randn(64, 320, generator=torch.Generator().manual_seed(bits)) * 0.03  # 320 = 2 x 128 + 64
    assert torch.equal(torchao_dequantized(w, ao_config(bits, symmetric=False)), rtn_quantize(w, bits, 128, symmetric=False))


def test_library_backend_swaps_in_twins_and_skips_with_a_reason():
    from unlearn_audit.quantize.base import SchemeUnavailable
    from unlearn_audit.quantize.registry import parse_schemes

    got = parse_schemes("fp32,nf4,rtn-int4-asym,rtn-int4,gptq-int4,gguf-q4_0", backend="library")
    assert [s.name for s in got] == ["fp32", "bnb-nf4", "torchao-int4-asym", "rtn-int4", "gptq-int4@library", "gguf-q4_0"]
    with pytest.raises(SchemeUnavailable, match="GPTQ"):
        got[4].build(None)
    assert [s.name for s in parse_schemes("nf4,gptq-int4")] == ["nf4", "gptq-int4"]


@pytest.mark.parametrize("name", ["prune-magnitude-20", "prune-layer-30"])
def test_pruning_zeroes_exactly_the_requested_fraction(name, tmp_path):
    from unlearn_audit.benchmark import tiny
    from unlearn_audit.quantize.base import out_in_weight, quantizable_modules
    from unlearn_audit.quantize.registry import get_scheme

    model = tiny.tiny_llama(300, hidden=64, layers=2, seed=4)
    scheme = get_scheme(name)
    pruned = scheme.build(on_disk(model, tmp_path))
    fraction = scheme.params()["fraction"]
    before = [out_in_weight(m) for _, m in quantizable_modules(model)]
    after = [out_in_weight(m) for _, m in quantizable_modules(pruned)]
    if scheme.per_layer:
        for b, a in zip(before, after):
            assert int((a == 0).sum()) == int(fraction * b.numel())
    else:
        total = sum(b.numel() for b in before)
        assert sum(int((a == 0).sum()) for a in after) == int(fraction * total)
        cut = max(float(b[a == 0].abs().max()) for b, a in zip(before, after) if (a == 0).any())
        kept = min(float(b[a != 0].abs().min()) for b, a in zip(before, after))
        assert cut <= kept  # globally: nothing kept is smaller than anything pruned
    for b, a in zip(before, after):
        assert torch.equal(a[a != 0], b[a != 0])  # the rest is untouched


def test_noise_is_reproducible_by_seed_and_scaled_to_each_tensor(tmp_path):
    from unlearn_audit.attacks.perturb import GaussianNoise
    from unlearn_audit.benchmark import tiny
    from unlearn_audit.quantize.base import out_in_weight, quantizable_modules

    model = tiny.tiny_llama(300, hidden=64, layers=2, seed=4)
    ckpt = on_disk(model, tmp_path)
    a, b, c = GaussianNoise(0.05, 0).build(ckpt), GaussianNoise(0.05, 0).build(ckpt), GaussianNoise(0.05, 1).build(ckpt)
    wa, wb, wc = (out_in_weight(quantizable_modules(m)[0][1]) for m in (a, b, c))
    w = out_in_weight(quantizable_modules(model)[0][1])
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert float((wa - w).std() / w.std()) == pytest.approx(0.05, rel=0.1)


def test_calibration_groups_linears_by_their_shared_input_every_time():
    """q/k/v read one tensor and gate/up another; o_proj and down_proj read their own. Inputs are told
    apart by address, so a freed activation's reused address must never merge two groups (AWQ's scales
    would then vary from run to run)."""
    import torch

    from unlearn_audit.benchmark import tiny
    from unlearn_audit.quantize.calibration import block_stats, blocks

    model = tiny.tiny_llama(300, hidden=64, layers=2, seed=4).eval()
    calibration = [list(torch.randint(3, 300, (n,), generator=torch.Generator().manual_seed(n)).tolist()) for n in range(20, 60, 5)]
    block = blocks(model)[0]
    seen = set()
    for _ in range(20):
        stats = block_stats(model, block, calibration, pad_id=0, batch_size=4)
        groups = {name.rsplit(".", 1)[-1]: st.group for name, st in stats.items()}
        assert groups["q_proj"] == groups["k_proj"] == groups["v_proj"] and groups["gate_proj"] == groups["up_proj"]
        assert len({groups["q_proj"], groups["o_proj"], groups["gate_proj"], groups["down_proj"]}) == 4, groups
        seen.add(tuple(sorted(groups.items())))
    assert len(seen) == 1


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.37, 0.5, 1.0])
def test_prune_masks_match_a_stable_sort_with_ties_broken_by_position(fraction):
    """The streaming radix select against the definition: sort |w| of all tensors together, stably (ties
    in position order), and prune the first ⌊fraction·N⌋. bfloat16-valued weights tie often, zeros and
    negative zeros included."""
    from unlearn_audit.attacks.perturb import prune_masks, smallest_magnitudes

    gen = torch.Generator().manual_seed(3)
    tensors = [torch.randn(shape, generator=gen).to(torch.bfloat16).float() for shape in ((7, 5), (3, 11), (13,), (4, 4))]
    tensors[1][0, :6] = 0.0
    tensors[1][1, :3] = -0.0
    tensors[3][:] = tensors[3][0, 0]  # one tensor of a single repeated value
    flat = torch.cat([t.reshape(-1) for t in tensors])
    k = int(fraction * flat.numel())
    order = torch.sort(flat.abs(), stable=True).indices
    expected = torch.zeros(flat.numel(), dtype=torch.bool)
    expected[order[:k]] = True
    got = torch.cat([m.reshape(-1) for m in prune_masks(lambda: iter(tensors), fraction)])
    assert int(got.sum()) == k and torch.equal(got, expected)
    if k:
        cut, ties = smallest_magnitudes(lambda: iter(tensors), k)
        kth = flat.abs()[order[k - 1]]
        assert torch.tensor([cut], dtype=torch.int32).view(torch.float32).item() == kth.item()
        assert ties == int((flat.abs()[order[:k]] == kth).sum())


def test_gptq_damps_the_hessian_in_place_as_h_plus_lambda_i():
    """λI is added to the diagonal in place (no (in, in) identity, 1.6 GB in float64 at Llama-3-8B's
    14336-wide down_proj); the result is GPTQ with H + λI written out."""
    import unlearn_audit.quantize.gptq as gptq

    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(16, 256, generator=g), torch.randn(512, 256, generator=g)
    h = (x.T @ x).double()
    damped = h + gptq.DAMP * torch.mean(torch.diag(h)) * torch.eye(256, dtype=torch.float64)
    assert torch.equal(gptq.gptq_quantize(w, h, 4), gptq.gptq_quantize(w, damped, 4, damp=0.0))


def _calibration_models():
    from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

    from unlearn_audit.benchmark import tiny

    torch.manual_seed(0)
    # Qwen2 with every other layer on a sliding window: each layer gets its own mask, which the walk
    # must hand to the right layer.
    qwen = Qwen2ForCausalLM(Qwen2Config(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=8,
                                        num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True,
                                        sliding_window=8, max_window_layers=0,
                                        layer_types=["sliding_attention", "full_attention"] * 4))
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=64, n_layer=8, n_head=4, n_positions=128))
    return {"llama": tiny.tiny_llama(300, hidden=64, layers=8, seed=4), "gpt2": gpt2, "qwen2-sliding": qwen}


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2-sliding"])
@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_calibration_walk_is_linear_in_depth_and_equals_a_forward_per_block(arch, method, monkeypatch):
    """GPTQ's block k sees blocks 0..k-1 quantized; a forward of the whole model per block gives exactly
    that, at a cost quadratic in depth (528 block forwards at 32 layers). ``walk`` runs each block alone
    on the previous one's outputs: the quantized weights must be the same, in at most 3L block forwards
    (one pass recording each block's arguments, then each block for its statistics and again quantized)."""
    import copy

    from unlearn_audit.quantize import awq, gptq
    from unlearn_audit.quantize import calibration as cal

    model = _calibration_models()[arch].eval()
    calibration = [list(torch.randint(3, 300, (n,), generator=torch.Generator().manual_seed(n)).tolist()) for n in range(20, 60, 5)]
    ckpt = type("Ckpt", (), {"tokenizer": type("Tok", (), {"pad_token_id": 0})()})()
    scheme = gptq.GPTQScheme(4, 16) if method == "gptq" else awq.AWQScheme(4, 16)

    walked, defined = copy.deepcopy(model), copy.deepcopy(model)
    layers = [m for m in walked.modules() if type(m).__name__ in ("LlamaDecoderLayer", "GPT2Block", "Qwen2DecoderLayer")]
    calls = []
    for layer in layers:
        layer.register_forward_pre_hook(lambda *a: calls.append(1))
    scheme.apply(walked, ckpt, calibration)
    batches = -(-len(calibration) // 8)
    assert len(calls) <= 3 * len(layers) * batches, len(calls)  # a forward per block: L(L+1)/2 = 36 here

    def per_block(model, calibration, pad_id, rerun, batch_size=8):  # the definition: a forward per block
        for block in cal.blocks(model):
            yield block, cal.block_stats(model, block, calibration, pad_id, batch_size)

    monkeypatch.setattr(gptq, "walk", per_block)
    monkeypatch.setattr(awq, "walk", per_block)
    scheme.apply(defined, ckpt, calibration)
    for (name, a), (_, b) in zip(walked.named_parameters(), defined.named_parameters()):
        assert torch.allclose(a, b, rtol=0, atol=1e-6), name
    assert any(not torch.equal(a, b) for a, b in zip(walked.parameters(), model.parameters()))


def test_library_backend_on_a_gpu_gives_the_true_reason_not_the_cpus():
    """On CUDA the CPU's reasons (auto-gptq needs CUDA, ...) are false: the reason says which libraries are
    installed and that the reference runs on the same GPU."""
    from unlearn_audit.quantize.registry import NO_LIBRARY, for_backend, get_scheme, no_library_reason

    assert no_library_reason("gptq", "cpu") == NO_LIBRARY["gptq"]
    assert no_library_reason("gptq", "cuda:1", installed=lambda name: name == "gptqmodel") == (
        "gptqmodel is installed, but --backend library does not run GPTQ through it: each writes its own packed "
        "checkpoint, which this audit does not read back; --backend reference runs the reference GPTQ on this GPU")
    assert no_library_reason("awq", "cuda", installed=lambda name: False) == (
        "no AWQ library is installed here (awq, gptqmodel, llmcompressor); --backend reference runs the reference AWQ on this GPU")
    for name in ("gptq-int4", "awq-int4"):
        on_gpu = for_backend(get_scheme(name), "library", "cuda")
        assert on_gpu.name == f"{name}@library" and "CPU" not in on_gpu.reason and on_gpu.reason.endswith("on this GPU")
        assert for_backend(get_scheme(name), "library", "cpu").reason == NO_LIBRARY[name.split("-")[0]]
