"""Loading a checkpoint someone else made, without ever executing it.

Only safetensors weights are read by default (a pickle ``.bin``/``.pt`` can run arbitrary code on
load), and ``trust_remote_code`` is never passed: a config that asks for custom code (``auto_map``) is
refused rather than silently loaded with a built-in class it may not match. Every load passes
``local_files_only=True``, so a typo in a path can never turn into a download.

``allow_pickle=True`` (``--allow-pickle``) reads a checkpoint that has only pickle weights, through
``torch.load(weights_only=True)``: the unpickler then builds tensors and plain containers only, and a
pickle that names any other callable (the ``__reduce__`` trick) is refused before anything runs.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from ..data import sha256_file
from ..errors import InputError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass
class Checkpoint:
    """A loaded causal LM with its tokenizer, and the hashes of the files it came from."""

    path: str
    role: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    file_hashes: dict[str, str] = field(default_factory=dict)
    weights_format: str = "safetensors"  # or "pickle" (only with allow_pickle, read with weights_only=True)

    @property
    def config_summary(self) -> dict:
        c = self.model.config
        return {
            "model_type": c.model_type,
            "architectures": list(c.architectures or []),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "vocab_size": c.vocab_size,
        }


def read_dir_config(path: Path, role: str, kind: str, name: str) -> dict:
    """The JSON object in ``path/name``, or a one-line InputError: no such directory, a file instead of
    one, no config file, unreadable or not an object. Model and adapter directories are checked alike."""
    if not path.exists():
        raise InputError(f"{path}: {role} directory not found")
    if not path.is_dir():
        raise InputError(f"{path}: {role} must be {kind}, not a file")
    config_file = path / name
    if not config_file.is_file():
        raise InputError(f"{path}: no {name}; not {kind}")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise InputError(f"{config_file}: unreadable {role} config ({str(exc) or type(exc).__name__})") from None
    if not isinstance(config, dict):
        raise InputError(f"{config_file}: expected a JSON object")
    return config


def check_directory(path: Path, role: str, allow_pickle: bool = False, pickle_flag: bool = True) -> dict:
    """The directory's config, or a one-line error; ``pickle_flag`` says whether the command offers --allow-pickle."""
    config = read_dir_config(path, role, "a Hugging Face model directory", "config.json")
    config_file = path / "config.json"
    if "auto_map" in config:
        raise InputError(
            f"{config_file}: declares custom code (auto_map); refusing to load it, since that would "
            "execute code shipped with the checkpoint"
        )
    if config.get("model_type") not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise InputError(f"{config_file}: model_type {config.get('model_type')!r} is not a causal language model")
    if not list(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles and not allow_pickle:
            hint = ", or pass --allow-pickle to read them with torch.load(weights_only=True)" if pickle_flag else ""
            raise InputError(
                f"{path}: only pickle weights ({', '.join(pickles)}); they can execute code when loaded. "
                f"Convert them to safetensors first{hint}"
            )
        if pickles:
            return config
        raise InputError(f"{path}: no .safetensors weight files")
    return config


def load_checkpoint(path: str | Path, role: str = "model", device: str = "cpu", allow_pickle: bool = False) -> Checkpoint:
    """Load a local causal-LM directory (safetensors only unless ``allow_pickle``, no remote code) in float32.
    Safetensors are preferred whenever a directory has them, flag or not."""
    p = Path(path)
    check_directory(p, role, allow_pickle)
    pickled = not list(p.glob("*.safetensors"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(p, local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # transformers raises many types for a missing/broken tokenizer
        raise InputError(f"{p}: cannot load the tokenizer ({_first_line(exc)})") from None
    try:
        AutoConfig.from_pretrained(p, local_files_only=True, trust_remote_code=False)
        # weights_only=True is transformers' default (5.x) for .bin files; it is passed anyway so that the
        # safety of --allow-pickle never rests on a library default.
        with warnings.catch_warnings():  # torch warns on stderr about pickle protocols it did not write
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            model = AutoModelForCausalLM.from_pretrained(
                p, local_files_only=True, trust_remote_code=False, use_safetensors=not pickled, weights_only=True,
                dtype=torch.float32,
            ).to(device)
    except pickle.UnpicklingError as exc:  # weights_only refused a global: the file asks to run code
        raise InputError(f"{p}: refusing the pickle weights: {refused_global(exc)}; weights_only loading accepts "
                         "tensors and plain containers only") from None
    # What a corrupt, truncated or mismatched checkpoint raises; anything else is a bug and propagates
    # (the CLI exits 3 on it). Checked against truncated, garbled and mis-sized files:
    # - SafetensorError: a safetensors file whose header or data is cut, garbled or inconsistent;
    # - OSError: a weight file or shard named by the index is missing, not a file, or unreadable;
    # - RuntimeError: tensors whose shapes do not fit config.json, and torch's reader on a corrupt pickle
    #   archive (--allow-pickle);
    # - ValueError: a config value transformers refuses when it builds the model (it covers the
    #   JSON and Unicode decoding errors of a broken index file too);
    # - EOFError: a pickle file that ends early (--allow-pickle).
    # KeyError and TypeError stay out: a few broken configs raise them too, but so does a bug in our code.
    except (SafetensorError, OSError, RuntimeError, ValueError, EOFError) as exc:
        raise InputError(f"{p}: cannot load the model weights ({_first_line(exc)})") from None
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:  # token ids past the embedding would index out of range (fewer is normal padding)
        raise InputError(f"{p}: the tokenizer has {len(tokenizer)} tokens but the model's embedding has only {rows} rows; "
                         "they do not belong together")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    weights = [f for f in sorted(p.iterdir()) if f.suffix in PICKLE_SUFFIXES] if pickled else sorted(p.glob("*.safetensors"))
    hashes = {f.name: sha256_file(f) for f in weights}
    return Checkpoint(path=str(p), role=role, model=model, tokenizer=tokenizer, file_hashes=hashes,
                      weights_format="pickle" if pickled else "safetensors")


def write_checkpoint(model, tokenizer, out: Path, extra: dict[str, str] | None = None) -> Path:
    """Save a model, its tokenizer and any extra text files as one HF directory, atomically: everything is
    written into a temporary sibling that is renamed to ``out`` only once complete, so an interrupted run
    never leaves a half-written checkpoint."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def refused_global(exc: BaseException) -> str:
    """What torch's weights-only unpickler refused, e.g. "it references exec", from its long message."""
    match = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
    if match:
        return f"it references {match.group(1)}, which is not a tensor type"
    inner = exc.__context__ if isinstance(exc.__context__, pickle.UnpicklingError) else None
    return f"not a plain tensor file ({_first_line(inner)})" if inner is not None else "not a plain tensor file"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
