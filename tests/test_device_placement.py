"""Device placement by construction, tested on the ``meta`` device: tensors that claim a device and hold no
data. Mixing one with a CPU tensor raises, as a CUDA tensor mixed with a CPU one does, and so does any
call that needs the data on the host (``.item()``, ``.tolist()``, a copy to the CPU), which on a GPU is
a synchronisation. So a function that runs here on meta tensors creates every tensor on its input's
device and waits for no result. (FakeTensorMode's cuda:0 tensors would say the same more literally, but
on torch 2.13's CPU build slicing one raises "PyTorch is not linked with support for cuda devices".)

What cannot run here needs the data by design, once per tensor or per decoding round, never per token
or per weight: the GGUF codes (llama.cpp's numpy), pruning's radix select (a 256-bin histogram per
pass), and greedy decoding (the chosen token ids, once per round). A transformers forward itself reads
its attention mask on the host (whether it is all ones), so the scoring forward is not run here."""

import pytest
import torch

from conftest import on_disk
from unlearn_audit.attacks.perturb import GaussianNoise
from unlearn_audit.benchmark import tiny
from unlearn_audit.models.weights import empty_model, fill
from unlearn_audit.quantize.base import WeightwiseScheme, quantizable_modules
from unlearn_audit.quantize.registry import SCHEMES, get_scheme

WEIGHTWISE = [name for name, make in SCHEMES.items() if isinstance(make(), WeightwiseScheme)]


@pytest.mark.parametrize("name", WEIGHTWISE)
@pytest.mark.parametrize("shape", [(256, 384), (64, 224)])  # 224: a short last group of 128, whole GGUF blocks of 32
def test_every_weightwise_quantizer_stays_on_its_device(name, shape):
    scheme = get_scheme(name)
    w = torch.empty(shape, device="meta")
    q = scheme.quantize_rows(w)
    assert q.device == w.device and q.shape == w.shape and q.dtype == torch.float32
    if name.startswith("gguf-"):
        return  # its codes are llama.cpp's own numpy round trip, on the CPU by design (quantize/ggml.py)
    codes = scheme.codes(w)
    if codes is not None:
        fields = {k: getattr(codes, k) for k in codes.__dataclass_fields__}
        assert all(t.device == w.device for t in fields.values() if torch.is_tensor(t)), fields


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    model = tiny.tiny_llama(120, hidden=64, layers=2, seed=5)
    return on_disk(model, tmp_path_factory.mktemp("stored") / "m")


@pytest.mark.parametrize("name", ["fp32", "rtn-int4", "nf4", "gguf-q4_0"])
def test_fill_streams_into_a_resident_model_on_its_device(stored, name):
    """Weights are read on the CPU from the files and quantized on the resident model's device."""
    resident = empty_model(stored.config, torch.bfloat16, "meta")
    scheme = get_scheme(name)
    filled = fill(resident, stored.source, scheme.quantize_rows if isinstance(scheme, WeightwiseScheme) else None)
    assert len(filled) == len({id(p) for p in resident.parameters()})
    assert all(p.device.type == "meta" and p.dtype == torch.bfloat16 for p in resident.parameters())


def test_noise_is_drawn_reproducibly_and_added_on_the_device(stored):
    resident = empty_model(stored.config, torch.float32, "meta")
    GaussianNoise(0.05, seed=0, draws=1).apply(resident, None, None)
    assert all(m.weight.device.type == "meta" for _, m in quantizable_modules(resident))


def test_forensics_stream_on_the_audit_device_and_only_for_schemes_with_codes(stored):
    from unlearn_audit.quantize import forensics

    with_codes = {n for n in SCHEMES if forensics.has_codes(get_scheme(n))}
    assert {"rtn-int4", "nf4", "gguf-q4_0"} <= with_codes
    assert not with_codes & {"bnb-fp4", "bnb-nf4", "gptq-int4", "awq-int4", "fp32", "prune-magnitude-20"}
    resident = empty_model(stored.config, torch.bfloat16, "meta")
    pairs = list(forensics.source_pairs(stored.source, stored.source, resident, "meta"))
    assert pairs and all(a.device.type == b.device.type == "meta" for _, a, b in pairs)
