"""A checkpoint's weights, read from its files one tensor at a time, and the one model they fill.

An audit of a 7B checkpoint cannot hold several float32 copies of it: the audited model, the original,
the reference and a quantized copy would need about 100 GiB. So the audit keeps one model resident (the
"skeleton", built empty from config.json in the compute dtype, on the compute device) and fills it from
the files of whichever checkpoint a step needs, tensor by tensor, quantizing each Linear's weight on
the way in (``fill``). Nothing reads a whole checkpoint into memory: a ``WeightSource`` opens a file
for each tensor it reads and closes it again, because pages of a mapping that stays open count as
resident and would grow to the whole checkpoint.

The quantizer arithmetic is float32, on the compute device, in chunks of whole rows (a multiple of the
scheme's block, so no block straddles two chunks): its codes are those of quantizing the whole float32
matrix at once. Only the result is stored in the compute dtype, as a dequantizing kernel would hold it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from ..errors import InputError

#: Elements per quantization chunk (16 MiB of float32): temporaries stay a small multiple of this,
#: which keeps them out of the page-fault regime of whole-matrix temporaries.
CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class WeightSource:
    """Where each model tensor of one checkpoint lies: ``plan`` maps a file's tensor key to the model's
    tensor name (validated against config.json when the checkpoint was opened), ``where`` each key to
    the file that holds it. ``shapes`` are the model tensors' shapes, from the files' headers."""

    path: Path
    format: str  # "safetensors" or "pickle"
    where: Mapping[str, Path]
    plan: Mapping[str, str]
    shapes: Mapping[str, tuple[int, ...]]
    stats: dict = field(default_factory=lambda: {"bytes_read": 0}, compare=False)

    def keys_for(self, name: str) -> list[str]:
        return [k for k, n in self.plan.items() if n == name]

    def get(self, name: str) -> torch.Tensor:
        """One model tensor, read from its file; the file is closed again before this returns."""
        return self._read(self.keys_for(name)[0])

    def _read(self, key: str) -> torch.Tensor:
        if self.format == "pickle":
            return _pickle_file(self.where[key])[key]
        try:
            with safe_open(str(self.where[key]), framework="pt", device="cpu") as handle:
                tensor = handle.get_tensor(key)
        except (SafetensorError, OSError) as exc:
            raise InputError(f"{self.path}: cannot read tensor {key} ({_first_line(exc)})") from None
        self.stats["bytes_read"] += tensor.numel() * tensor.element_size()
        return tensor

    def tensors(self) -> Iterator[tuple[str, str, torch.Tensor]]:
        """(file key, model name, tensor) for every planned tensor, one resident at a time (a pickle
        shard is read whole: torch.load has no per-tensor access)."""
        if self.format == "pickle":
            for file in sorted(set(self.where.values())):
                state = _pickle_file(file)
                for key in [k for k in state if k in self.plan]:
                    yield key, self.plan[key], state.pop(key)
            return
        for key, name in self.plan.items():
            yield key, name, self._read(key)  # by key: a tied tensor stored twice is checked against both

    def stored_dtype(self) -> str:
        """The dtype holding most of the checkpoint's elements ("bfloat16", "float32", ...), from the
        safetensors headers (a pickle shard is read)."""
        share: dict[str, int] = {}
        names = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64"}
        for file in sorted(set(self.where.values())):
            if self.format == "pickle":
                dtypes = {k: str(t.dtype).removeprefix("torch.") for k, t in _pickle_file(file).items() if k in self.plan}
            else:
                with safe_open(str(file), framework="pt", device="cpu") as handle:
                    dtypes = {k: names.get(handle.get_slice(k).get_dtype(), "other") for k in handle.keys() if k in self.plan}
            for key, dtype in dtypes.items():
                n = 1
                for d in self.shapes[self.plan[key]]:
                    n *= d
                share[dtype] = share.get(dtype, 0) + n
        return max(share, key=share.get) if share else "float32"

    def nonfinite(self) -> list[str]:
        """Model tensors holding NaN or Inf, streamed, and each checked in chunks: ``isfinite`` of a whole
        embedding (Llama-3's is 394M values) would allocate gigabytes of temporaries at once."""
        return [name for _, name, t in self.tensors() if t.is_floating_point() and not _finite(t)]


def _finite(t: torch.Tensor) -> bool:
    flat = t.reshape(-1)
    return all(bool(torch.isfinite(flat[i : i + CHUNK_ELEMENTS]).all()) for i in range(0, flat.numel(), CHUNK_ELEMENTS))


def _pickle_file(file: Path) -> dict[str, torch.Tensor]:
    """One pickle shard through torch.load(weights_only=True): tensors and plain containers only."""
    with warnings.catch_warnings():  # torch warns on stderr about pickle protocols it did not write
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        # weights_only=True is torch's default; it is passed anyway so that the safety of --allow-pickle
        # never rests on a library default.
        state = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise InputError(f"{file}: not a mapping of tensor names to tensors")
    return state


def empty_model(config, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> nn.Module:
    """The model config.json describes, allocated on ``device`` in ``dtype`` and not initialised: every
    parameter is about to be filled from a checkpoint's files. Tied tensors are tied as from_pretrained
    ties them (``no_init_weights`` skips that, hence ``tie_weights``)."""
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    with torch.device(device), no_init_weights():
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=False, dtype=dtype)
    model.tie_weights()
    return model.eval()


def quantizable_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every nn.Linear and GPT-2 Conv1D except the output head, as in the paper and HF's quantizers."""
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, Conv1D)) and module is not head
    ]


Quantize = Callable[[torch.Tensor], torch.Tensor]


def fill(model: nn.Module, source: WeightSource, quantize: Quantize | None = None, row_block: int = 1) -> set[int]:
    """Copy every tensor of ``source`` into ``model``, cast to the model's dtype and device; with
    ``quantize``, each quantizable weight passes through it first, as (out, in) float32 rows on the
    model's device, ``row_block`` rows or a multiple at a time. Returns the ids of the tensors filled.
    A tensor stored under two tied names must hold the same values under both."""
    from transformers.pytorch_utils import Conv1D

    targets = model.state_dict(keep_vars=True)
    linear = {f"{n}.weight": isinstance(m, Conv1D) for n, m in quantizable_modules(model)} if quantize else {}
    filled: dict[int, str] = {}
    with torch.no_grad():
        try:
            for key, name, value in source.tensors():
                target = targets[name]
                if id(target) in filled:
                    if not torch.equal(target, value.to(device=target.device, dtype=target.dtype)):
                        raise InputError(f"{source.path}: {key} and {filled[id(target)]} are one tied tensor in this "
                                         "model, but the weights hold different values")
                    continue
                if name in linear:
                    _quantize_into(target, value, quantize, row_block, transposed=linear[name])
                else:
                    target.copy_(value)
                filled[id(target)] = key
        except (SafetensorError, OSError) as exc:
            raise InputError(f"{source.path}: cannot load the model weights ({_first_line(exc)})") from None
    return set(filled)


def _quantize_into(target: torch.Tensor, value: torch.Tensor, quantize: Quantize, row_block: int, transposed: bool) -> None:
    """Q(value) into ``target``, chunk by chunk of (out, in) rows; GPT-2's Conv1D stores (in, out)."""
    src, dst = (value.t(), target.t()) if transposed else (value, target)
    rows = max(row_block, CHUNK_ELEMENTS // max(src.shape[1], 1) // row_block * row_block)
    for r0 in range(0, src.shape[0], rows):
        dst[r0 : r0 + rows].copy_(quantize(src[r0 : r0 + rows].to(device=target.device, dtype=torch.float32)))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
