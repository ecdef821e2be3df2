"""A LoRA adapter merged into its base model, so that the merged weights are what the audit quantizes.

LoRA (Hu et al., 2022) adds a low-rank update to each targeted Linear: W' = W + (α/r)·B·A (α/√r with
rsLoRA). An unlearning run that trains an adapter leaves W untouched, so whether the forgotten text
comes back under quantization depends on where W + ΔW lands on the grid: merging can itself push weights
across grid cells. The adapter is therefore merged first (peft's ``merge_and_unload``) and every scheme
is applied to the merged model, never to the base with the adapter on the side.

Like the checkpoints themselves, an adapter someone else made is read without executing it:
``adapter_model.safetensors`` read with ``safetensors`` directly, no hub access, and no ``megatron_core``
import that a config could name. A pickle ``adapter_model.bin`` is refused unless ``allow_pickle``
(``--allow-pickle``, the same policy as ``loading.py``): then it is read with
``torch.load(weights_only=True)``, which refuses a pickle that names anything but tensors and containers.
"""

from __future__ import annotations

import os
import pickle
import shutil
import socket
import tempfile
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from ..data import sha256_file
from ..errors import InputError
from .hub import ModelRef
from .loading import Checkpoint, open_weights, read_dir_config, refused_global, weight_files, write_checkpoint

WEIGHTS = "adapter_model.safetensors"
PICKLE = "adapter_model.bin"
CONFIG = "adapter_config.json"
MERGED_PREFIX = "unlearn-audit-merged-"  # the temporary merged copies, recognisable to sweep_merged_leftovers
_OWNER = "pid"
_RECORDED = ("peft_type", "r", "lora_alpha", "target_modules", "use_rslora", "use_dora", "modules_to_save", "base_model_name_or_path")


@dataclass
class MergedCheckpoint(Checkpoint):
    """A base checkpoint with an adapter merged in. ``path`` is a temporary copy of the merged model, for
    schemes that load the model from disk (bitsandbytes); it is removed when this object goes away.
    ``base_path`` and ``file_hashes`` describe the base directory, ``adapter`` the adapter directory."""

    base_path: str = ""
    adapter: dict = field(default_factory=dict)

    def source_files(self) -> dict[Path, str]:
        """Every file the merged model came from, with the sha256 it had when read."""
        files = {Path(self.base_path) / name: digest for name, digest in {**self.file_hashes, **self.side_files}.items()}
        files.update({Path(self.adapter["path"]) / name: digest for name, digest in self.adapter["files"].items()})
        return files


def require_peft():
    try:
        import peft
    except ImportError:
        raise InputError("--adapter needs peft: install unlearn-audit[lora]") from None
    return peft


def check_adapter_dir(path: Path, allow_pickle: bool = False) -> dict:
    """The adapter's config, or a one-line InputError naming what is wrong with the directory."""
    config = read_dir_config(path, "adapter", "a PEFT adapter directory", CONFIG)
    config_file = path / CONFIG
    if config.get("peft_type") != "LORA":
        raise InputError(f"{config_file}: peft_type {config.get('peft_type')!r}; only LoRA adapters (LORA) are merged")
    if config.get("megatron_config") is not None:
        raise InputError(f"{config_file}: megatron_config would make peft import {config.get('megatron_core')!r}; refusing it")
    if not (path / WEIGHTS).is_file():
        if (path / PICKLE).is_file() and not allow_pickle:
            raise InputError(f"{path}: only pickle adapter weights ({PICKLE}); they can execute code when loaded. "
                             f"Convert them to {WEIGHTS} first, or pass --allow-pickle to read them with torch.load(weights_only=True)")
        if not (path / PICKLE).is_file():
            raise InputError(f"{path}: no {WEIGHTS}")
    return config


def _weights(path: Path) -> tuple[dict, str]:
    """The adapter's tensors and their file: safetensors when present, else the pickle that
    ``check_adapter_dir`` let through, read with weights_only=True."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if (path / WEIGHTS).is_file():
        try:
            return load_file(path / WEIGHTS, device="cpu"), WEIGHTS
        except (SafetensorError, OSError) as exc:
            raise InputError(f"{path / WEIGHTS}: unreadable safetensors file ({_first_line(exc)})") from None
    try:
        weights = torch.load(path / PICKLE, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused a global: the file asks to run code
        raise InputError(f"{path / PICKLE}: refusing the pickle weights: {refused_global(exc)}; weights_only loading accepts "
                         "tensors and plain containers only") from None
    except Exception as exc:
        raise InputError(f"{path / PICKLE}: unreadable pickle weights ({_first_line(exc)})") from None
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise InputError(f"{path / PICKLE}: expected a dict of tensors")
    return weights, PICKLE


def merge_adapter(base: Checkpoint, adapter_dir: str | Path | ModelRef, allow_pickle: bool = False) -> MergedCheckpoint:
    """Merge the LoRA adapter in ``adapter_dir`` into ``base`` (whose model it modifies in place) and
    return the merged checkpoint, with a temporary on-disk copy of the merged model."""
    sweep_merged_leftovers()
    p = Path(adapter_dir)
    raw_config = check_adapter_dir(p, allow_pickle)
    peft = require_peft()
    try:
        config = peft.LoraConfig.from_pretrained(str(p))
    except Exception as exc:  # peft raises TypeError/ValueError for fields it does not know or accept
        raise InputError(f"{p / CONFIG}: not a LoRA config peft accepts ({_first_line(exc)})") from None
    # The loaded tensors replace A and B (and DoRA's magnitudes); an init such as PiSSA or OLoRA would
    # first rewrite the base weights themselves, so the layers are created with the plain init.
    config.init_lora_weights, config.inference_mode = True, True
    weights, weights_file = _weights(p)
    try:
        with warnings.catch_warnings():  # peft's own deprecation warnings about transformers say nothing about the audit
            warnings.simplefilter("ignore", FutureWarning)
            model = peft.get_peft_model(base.model, config)
        loaded = peft.set_peft_model_state_dict(model, weights)
    except Exception as exc:  # no targeted module, a shape that does not fit the base, ...
        raise InputError(f"{p}: the adapter does not fit the base model {base.path} ({_first_line(exc)})") from None
    if loaded.unexpected_keys:
        raise InputError(f"{p / weights_file}: {len(loaded.unexpected_keys)} tensor(s) match no adapter layer of the base model "
                         f"(e.g. {loaded.unexpected_keys[0]})")
    missing = [k for k in loaded.missing_keys if "lora_" in k]
    if missing:
        raise InputError(f"{p / weights_file}: {len(missing)} adapter tensor(s) missing (e.g. {missing[0]})")
    merged = model.merge_and_unload().eval()
    tmp = Path(tempfile.mkdtemp(prefix=MERGED_PREFIX))
    (tmp / _OWNER).write_text(f"{os.getpid()} {socket.gethostname()}\n", encoding="utf-8")
    write_checkpoint(merged, base.tokenizer, tmp / "model")
    record = {
        "path": str(p),
        "files": {name: sha256_file(p / name) for name in (CONFIG, weights_file)},
        "weights_format": "safetensors" if weights_file == WEIGHTS else "pickle (torch.load weights_only=True, --allow-pickle)",
        "config": {k: raw_config.get(k) for k in _RECORDED},
        "merge": "peft merge_and_unload into the base's float32 weights; every scheme quantizes the merged model",
        **({"hub": adapter_dir.provenance()} if isinstance(adapter_dir, ModelRef) and adapter_dir.repo_id else {}),
    }
    # Every scheme streams the merged weights from this copy (models/weights.py), as from any checkpoint.
    source, _ = open_weights(tmp / "model", base.config, weight_files(tmp / "model"))
    merged_ckpt = MergedCheckpoint(path=str(tmp / "model"), role=base.role, model=merged, tokenizer=base.tokenizer,
                                   file_hashes=dict(base.file_hashes), side_files=dict(base.side_files), config=base.config,
                                   source=source, generation_config=base.generation_config, n_params=base.n_params,
                                   base_path=base.path, adapter=record, hub=base.hub)
    weakref.finalize(merged_ckpt, shutil.rmtree, tmp, True)
    return merged_ckpt


def sweep_merged_leftovers() -> list[Path]:
    """Remove the merged copies (a full float32 model each) that runs killed without cleanup left in the
    temporary directory: a SIGKILL runs no finalizer. A copy is removed only when its pid file names a
    process of this host that no longer runs; one without a pid file may be a run still starting, and one
    from another host (a shared /tmp) is not ours to judge. Returns what was removed."""
    removed = []
    for leftover in Path(tempfile.gettempdir()).glob(MERGED_PREFIX + "*"):
        try:
            owner = (leftover / _OWNER).read_text(encoding="utf-8").split()
            pid = int(owner[0])
        except (OSError, ValueError, IndexError):
            continue
        if len(owner) > 1 and owner[1] != socket.gethostname():
            continue
        if pid != os.getpid() and not _running(pid):
            shutil.rmtree(leftover, ignore_errors=True)
            removed.append(leftover)
    return removed


def _running(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill there terminates the process instead of probing it: keep the copy
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    except OSError:
        return True  # cannot tell: keep the copy
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
