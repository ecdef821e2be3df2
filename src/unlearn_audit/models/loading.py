"""Loading a checkpoint someone else made, without ever executing it.

Only safetensors weights are read (a pickle ``.bin``/``.pt`` can run arbitrary code on load), and
``trust_remote_code`` is never passed: a config that asks for custom code (``auto_map``) is refused
rather than silently loaded with a built-in class it may not match. Hub access is disabled, so a
typo in a path can never turn into a download.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES  # noqa: E402

from ..data import sha256_file  # noqa: E402
from ..errors import InputError  # noqa: E402

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass
class Checkpoint:
    """A loaded causal LM with its tokenizer, and the hashes of the files it came from."""

    path: str
    role: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    file_hashes: dict[str, str] = field(default_factory=dict)

    @property
    def config_summary(self) -> dict:
        c = self.model.config
        return {
            "model_type": c.model_type,
            "architectures": list(c.architectures or []),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "vocab_size": c.vocab_size,
        }


def _check_directory(path: Path, role: str) -> dict:
    if not path.exists():
        raise InputError(f"{path}: {role} directory not found")
    if not path.is_dir():
        raise InputError(f"{path}: {role} must be a Hugging Face model directory, not a file")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise InputError(f"{path}: no config.json; not a Hugging Face model directory")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{config_file}: unreadable config ({exc})") from None
    if "auto_map" in config:
        raise InputError(
            f"{config_file}: declares custom code (auto_map); refusing to load it, since that would "
            "execute code shipped with the checkpoint"
        )
    if config.get("model_type") not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise InputError(f"{config_file}: model_type {config.get('model_type')!r} is not a causal language model")
    if not list(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise InputError(
                f"{path}: only pickle weights ({', '.join(pickles)}); they can execute code when loaded. "
                "Convert them to safetensors first"
            )
        raise InputError(f"{path}: no .safetensors weight files")
    return config


def load_checkpoint(path: str | Path, role: str = "model", device: str = "cpu") -> Checkpoint:
    """Load a local causal-LM directory (safetensors only, no remote code) in float32."""
    p = Path(path)
    _check_directory(p, role)
    try:
        tokenizer = AutoTokenizer.from_pretrained(p, local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # transformers raises many types for a missing/broken tokenizer
        raise InputError(f"{p}: cannot load the tokenizer ({_first_line(exc)})") from None
    try:
        AutoConfig.from_pretrained(p, local_files_only=True, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(
            p, local_files_only=True, trust_remote_code=False, use_safetensors=True, dtype=torch.float32
        ).to(device)
    except Exception as exc:
        raise InputError(f"{p}: cannot load the model weights ({_first_line(exc)})") from None
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:  # token ids past the embedding would index out of range (fewer is normal padding)
        raise InputError(f"{p}: the tokenizer has {len(tokenizer)} tokens but the model's embedding has only {rows} rows; "
                         "they do not belong together")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    hashes = {f.name: sha256_file(f) for f in sorted(p.glob("*.safetensors"))}
    return Checkpoint(path=str(p), role=role, model=model, tokenizer=tokenizer, file_hashes=hashes)


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
