"""Loading a checkpoint someone else made, without ever executing it, from exactly the files it hashes.

Only safetensors weights are read by default (a pickle ``.bin``/``.pt`` can run arbitrary code on
load), and ``trust_remote_code`` is never passed: a config or tokenizer config that asks for custom code
(``auto_map``) is refused rather than silently loaded with a built-in class it may not match. Every load
passes ``local_files_only=True``, so a typo in a path can never turn into a download.

The tool, not transformers, decides which weight files are read: ``model.safetensors.index.json`` and
the shards it names (plain file names inside the directory), or the one ``*.safetensors`` file. A stray
or ambiguous weight file is refused, and every file read is hashed into the report, so what the report
certifies is what was audited. The model is built empty from config.json and filled tensor by tensor;
a tensor the model expects and the files lack (or the reverse, or a different shape) is refused, never
left randomly initialised. Names and shapes are compared from the safetensors headers before any
weight is allocated. The audit only opens its checkpoints (``open_checkpoint``: checked and hashed,
no tensor read) and streams their tensors into its one resident model when a step needs them
(models/weights.py); ``load_checkpoint`` fills a model of its own, for training and the other commands.

``allow_pickle=True`` (``--allow-pickle``) reads a checkpoint that has only pickle weights
(``pytorch_model.bin``, or the shards ``pytorch_model.bin.index.json`` names), through
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
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import (
    AutoConfig,
    AutoTokenizer,
    GenerationConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from ..data import sha256_file
from ..errors import InputError, parse
from .hub import ModelRef
from .weights import WeightSource, _pickle_file, empty_model, fill

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_WEIGHTS, PICKLE_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
NAMED = 5  # at most this many tensor names in one error line


@dataclass
class Checkpoint:
    """A checkpoint: its tokenizer, config, the weights to read (``source``) and the hashes of the files it
    came from. ``model`` is the float32 model filled from them (``load_checkpoint``), or None for a
    checkpoint only opened (``open_checkpoint``), whose weights are streamed into a model when needed."""

    path: str
    role: str
    model: PreTrainedModel | None
    tokenizer: PreTrainedTokenizerBase
    file_hashes: dict[str, str] = field(default_factory=dict)
    weights_format: str = "safetensors"  # or "pickle" (only with allow_pickle, read with weights_only=True)
    side_files: dict[str, str] = field(default_factory=dict)  # config, tokenizer, generation config: SIDE_FILES
    config: PretrainedConfig | None = None
    source: WeightSource | None = None
    generation_config: GenerationConfig | None = None
    n_params: int = 0
    ignored_files: tuple[str, ...] = ()  # beside an index and read by no loader (WeightFiles.ignored); never loaded
    hub: dict | None = None  # a hub id's repo, revision asked for and commit (models/hub.py); None for a local directory

    @property
    def config_summary(self) -> dict:
        c = self.config
        return {
            "model_type": c.model_type,
            "architectures": list(c.architectures or []),
            "parameters": self.n_params,
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
        text = config_file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{config_file}: unreadable {role} config (not UTF-8 at byte {exc.start})") from None
    config = parse(text, str(config_file))
    if not isinstance(config, dict):
        raise InputError(f"{config_file}: expected a JSON object")
    return config


@dataclass(frozen=True)
class WeightFiles:
    """The weight files a load reads, as the tool chose them (never transformers): the shards, and the
    index that named them, if any."""

    format: str  # "safetensors" or "pickle"
    shards: tuple[Path, ...]
    index: Path | None = None
    ignored: tuple[str, ...] = ()  # weight-like files beside an index that neither transformers nor vLLM reads

    @property
    def read(self) -> tuple[Path, ...]:
        """Every file the weights are read from; the report hashes exactly these."""
        return ((self.index,) if self.index else ()) + self.shards


def check_directory(path: Path, role: str, allow_pickle: bool = False, pickle_flag: bool = True) -> dict:
    """The directory's config, or a one-line error; ``pickle_flag`` says whether the command offers --allow-pickle.
    Its weight files are chosen and checked as ``load_checkpoint`` would (``weight_files``)."""
    return _inspect(path, role, allow_pickle, pickle_flag)[0]


def _inspect(path: Path, role: str, allow_pickle: bool, pickle_flag: bool) -> tuple[dict, WeightFiles]:
    config = read_dir_config(path, role, "a Hugging Face model directory", "config.json")
    config_file = path / "config.json"
    if "auto_map" in config:
        raise _custom_code(config_file)
    if not isinstance(config.get("model_type"), str) or config["model_type"] not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise InputError(f"{config_file}: model_type {config.get('model_type')!r} is not a causal language model")
    return config, weight_files(path, allow_pickle, pickle_flag)


def _custom_code(config_file: Path) -> InputError:
    return InputError(f"{config_file}: declares custom code (auto_map); refusing to load it, since that would "
                      "execute code shipped with the checkpoint")


def weight_files(path: Path, allow_pickle: bool = False, pickle_flag: bool = True) -> WeightFiles:
    """The files the weights are read from: the shards ``model.safetensors.index.json`` names, or the one
    ``*.safetensors`` file; with ``allow_pickle`` and no safetensors, ``pytorch_model.bin`` (or the shards
    of its index). Safetensors are preferred whenever a directory has them, flag or not.

    Beside an index, a file it does not name is read by no loader (transformers and vLLM both follow the
    index), so it is ignored and listed: Mistral's ``consolidated.safetensors``, in its own format. What
    some loader *would* read differently is refused, since some other tool could then read a file this
    audit did not: ``model.safetensors`` the index does not name (transformers reads it before any
    index), a second ``*.safetensors.index.json``, several ``*.safetensors`` without an index (vLLM reads
    them all)."""
    found = sorted(path.glob("*.safetensors"))
    if (path / SAFETENSORS_INDEX).exists():
        return _indexed(path, "safetensors", SAFETENSORS_INDEX, found)
    if len(found) > 1:
        raise InputError(f"{path}: several .safetensors files ({_names(found)}) and no {SAFETENSORS_INDEX} "
                         "to say which hold the weights")
    if found:
        return WeightFiles("safetensors", (_inside(path, found[0].name, path),))
    pickles = sorted(p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if not pickles:
        raise InputError(f"{path}: no .safetensors weight files")
    if not allow_pickle:
        hint = ", or pass --allow-pickle to read them with torch.load(weights_only=True)" if pickle_flag else ""
        raise InputError(
            f"{path}: only pickle weights ({_names(pickles)}); they can execute code when loaded. "
            f"Convert them to safetensors first{hint}"
        )
    # Other pickle files are not weights (a Trainer's training_args.bin): nothing reads them, nothing hashes them.
    if (path / PICKLE_INDEX).exists():
        return _indexed(path, "pickle", PICKLE_INDEX, [])
    if (path / PICKLE_WEIGHTS).exists():
        return WeightFiles("pickle", (_inside(path, PICKLE_WEIGHTS, path),))
    if len(pickles) == 1:
        return WeightFiles("pickle", (_inside(path, pickles[0].name, path),))
    raise InputError(f"{path}: several pickle files ({_names(pickles)}) and neither {PICKLE_WEIGHTS} nor "
                     f"{PICKLE_INDEX} to say which hold the weights")


def _indexed(path: Path, fmt: str, name: str, present: list[Path]) -> WeightFiles:
    """The shards an index names, each a plain file name inside ``path``; ``present`` are the directory's
    files of that format, every one of which the index must name."""
    index = _inside(path, name, path)
    try:
        text = index.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{index}: not UTF-8") from None
    except OSError as exc:
        raise InputError(f"{index}: unreadable ({exc.strerror or type(exc).__name__})") from None
    data = parse(text, str(index))
    if not isinstance(data, dict):
        raise InputError(f"{index}: expected a JSON object")
    if "weight_map" not in data:
        raise InputError(f"{index}: no weight_map; not a weight index")
    weight_map = data["weight_map"]
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
        raise InputError(f"{index}: weight_map must map tensor names to shard file names")
    shards = tuple(_inside(path, shard, index) for shard in sorted(set(weight_map.values())))
    stray = [f for f in present if f.name not in {s.name for s in shards}]
    read_anyway = [f for f in stray if f.name == "model.safetensors"]  # transformers reads it before the index
    others = sorted(f for f in path.glob("*.safetensors.index.json") if f.name != name) if fmt == "safetensors" else []
    if read_anyway or others:
        raise InputError(f"{path}: {_names(read_anyway + others)} not named by {name}; refusing a directory whose weight "
                         "files are ambiguous")
    return WeightFiles(fmt, shards, index, tuple(f.name for f in stray))


def _inside(path: Path, name: str, named_by: Path) -> Path:
    """``path / name``, where ``name`` must be a plain file name and the file must lie in ``path`` itself:
    no ``..``, no subfolder, no absolute path, no link that leads elsewhere."""
    if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise InputError(f"{named_by}: {name!r} is not a plain file name; weight files must lie inside {path}")
    file = path / name
    try:
        if not file.is_file():
            raise InputError(f"{named_by}: weight file {name!r} is missing or not a file")
        target = file.resolve()
        inside = target.parent in _homes(path)
    except (OSError, RuntimeError) as exc:  # a name too long for the file system; a loop of links
        raise InputError(f"{named_by}: weight file {name!r} is unusable ({_first_line(exc)})") from None
    if not inside:
        raise InputError(f"{named_by}: weight file {name!r} is a link to {target}; weight files must lie inside {path}")
    return file


def _homes(path: Path) -> tuple[Path, ...]:
    """Where a checkpoint's weight files may really lie: the directory itself and, for a Hugging Face
    cache snapshot (``<repo>/snapshots/<revision>/``, whose files are links to ``<repo>/blobs/``), the
    repo's blobs folder. Nowhere else."""
    real = path.resolve()
    blobs = real.parent.parent / "blobs"
    return (real, blobs) if real.parent.name == "snapshots" and blobs.is_dir() else (real,)


def _names(files: list[Path]) -> str:
    return ", ".join(f.name for f in files)


def _few(keys: list[str]) -> str:
    more = f" and {len(keys) - NAMED} more" if len(keys) > NAMED else ""
    return ", ".join(keys[:NAMED]) + more


def _refuse_tokenizer_code(path: Path) -> None:
    """A tokenizer_config.json that declares custom code is refused like config.json's (transformers
    would otherwise fall back to a built-in tokenizer class the checkpoint may not have been made with)."""
    file = path / "tokenizer_config.json"
    if not file.is_file():
        return
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{file}: not UTF-8") from None
    config = parse(text, str(file))
    if isinstance(config, dict) and "auto_map" in config:
        raise _custom_code(file)


# transformers turns config.json into a config and a model through checks that raise whatever each one
# happens to raise: KeyError for an unknown hidden_act or rope_type, StrictDataclassError for a field of the
# wrong type, ValueError for other values it refuses, AttributeError for an unknown dtype ("evil" is not a
# torch attribute), ZeroDivisionError for zero attention heads, TypeError, RuntimeError, OverflowError or an
# assertion when a value reaches a layer's constructor. All of them are bad input, whatever their type: only
# the parsing and the build on the meta device are covered, and the real build comes after the weights were
# checked against that one.
CULPRITS = 100  # at most this many fields are tried one by one to name the one at fault


# Fields that choose what forward() returns, not what it computes. The probes read ``.logits`` and
# ``.last_hidden_state`` from the output object, so a config.json's ``return_dict: false`` (a tuple) would
# crash them and ``output_attentions: true`` keep every attention matrix; the tool sets these, as it sets
# the generation config (models/hf.py).
OUTPUT_FIELDS = {"return_dict": True, "output_attentions": False, "output_hidden_states": False}


def _model_config(path: Path, raw: dict) -> PretrainedConfig:
    """config.json as transformers reads it (with ``OUTPUT_FIELDS`` as the tool needs them), or a one-line
    InputError naming the file and, where removing a single field lets the rest parse, that field and its
    value. ``raw`` is the file's JSON object."""
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        for name, value in OUTPUT_FIELDS.items():
            setattr(config, name, value)
    except Exception as exc:  # see above: every failure here is the file's
        blame = ", ".join(f"{k} {_short_json(raw[k])}" for k in _culprits(raw)[:NAMED])
        what = f"transformers refuses {blame}" if blame else "transformers cannot read it"
        raise InputError(f"{path / 'config.json'}: {what} ({type(exc).__name__}: {_first_line(exc)})") from None
    _check_generic_fields(path / "config.json", config)
    return config


def _check_generic_fields(config_file: Path, config: PretrainedConfig) -> None:
    """Fields that transformers reads at forward or generate time whatever the architecture, and that a
    config class without them keeps unchecked (a Llama config.json may carry ``sliding_window``, which the
    attention masks then read): refused here, not found by a crash halfway through the audit."""
    if getattr(config, "is_encoder_decoder", False) is not False:
        raise InputError(f"{config_file}: is_encoder_decoder is {_short_json(config.is_encoder_decoder)}; a causal language model "
                         "has no encoder")
    window = getattr(config, "sliding_window", None)
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 1):
        raise InputError(f"{config_file}: sliding_window {_short_json(window)} is not a number of tokens (a positive integer, or null)")


def _culprits(raw: dict) -> list[str]:
    """The fields of ``raw`` without which transformers accepts the rest: each is, on its own, why it does
    not. Tried on the config class alone (no file is read), for at most ``CULPRITS`` fields."""
    from transformers import CONFIG_MAPPING

    kind = raw.get("model_type")
    cls = CONFIG_MAPPING[kind] if isinstance(kind, str) and kind in CONFIG_MAPPING else None  # its .get() finds nothing
    if cls is None or not _fails(cls, raw):  # not the same failure outside from_pretrained: say nothing
        return []
    return [k for k in list(raw)[:CULPRITS] if k != "model_type" and not _fails(cls, {f: v for f, v in raw.items() if f != k})]


def _fails(cls, raw: dict) -> bool:
    try:
        cls.from_dict(dict(raw))
    except Exception:
        return True
    return False


def _short_json(value, limit: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _build(path: Path, config: PretrainedConfig) -> PreTrainedModel:
    """The model config.json describes on the meta device (no memory), built as ``weights.empty_model``
    builds the real one, so that both tie the same tensors."""
    try:
        return empty_model(config, device="meta")
    except Exception as exc:  # a value only a layer's constructor refuses (see above)
        raise InputError(f"{path / 'config.json'}: transformers cannot build a model from it ({type(exc).__name__}: "
                         f"{_first_line(exc)})") from None


_BLOCK = re.compile(r"(?:^|\.)(\d+)\.")  # a tensor name's first number: its layer ("model.layers.3.mlp...")


def _check_size(path: Path, config: PretrainedConfig, shapes: dict[str, tuple[int, ...]]) -> None:
    """The config values that set how big the model is, against the tensors the files hold, before anything
    is built: a config.json asking for 5000 layers over a two-layer checkpoint is refused without building
    (or allocating) 5000 layers. Every other size is checked tensor by tensor on the meta device."""
    config_file = path / "config.json"
    layers = getattr(config, "num_hidden_layers", None)
    blocks = {m.group(1) for key in shapes if (m := _BLOCK.search(key))}
    if isinstance(layers, int) and layers > len(blocks):
        raise InputError(f"{config_file}: num_hidden_layers is {layers}, but the weights hold only {len(blocks)} "
                         "numbered layers")
    hidden = getattr(config, "hidden_size", None)
    if isinstance(hidden, int) and all(hidden not in shape for shape in shapes.values()):
        raise InputError(f"{config_file}: hidden_size is {hidden}, but no tensor in the weights has that dimension")


def _plan(path: Path, config: PretrainedConfig, shapes: dict[str, tuple[int, ...]]) -> tuple[dict[str, str], PreTrainedModel]:
    """Which model tensor each checkpoint tensor fills, once the two agree: every tensor of the model is in
    the files (a tied one, such as an lm_head tied to the embedding, through the tensor it is tied to),
    nothing else is, and every shape matches. Anything missing would otherwise stay randomly initialised."""
    if not shapes:
        raise InputError(f"{path}: the weight files hold no tensors")
    _check_size(path, config, shapes)
    skeleton = _build(path, config)
    expected = skeleton.state_dict(keep_vars=True)
    names = {key: key for key in shapes}
    prefix = skeleton.base_model_prefix
    if prefix and not any(key.startswith(f"{prefix}.") for key in shapes):
        # Saved from the bare base model (GPT-2 on the Hub: "h.0.attn...", not "transformer.h.0.attn..."),
        # which from_pretrained accepts too.
        names = {key: f"{prefix}.{key}" if f"{prefix}.{key}" in expected else key for key in shapes}
    # Keys the model itself declares safe to drop (old GPT-2 files carry their attention masks).
    dropped = [re.compile(p) for p in (getattr(skeleton, "_keys_to_ignore_on_load_unexpected", None) or ())]
    unexpected = sorted(k for k, name in names.items() if name not in expected and not any(r.search(k) for r in dropped))
    plan = {k: name for k, name in names.items() if name in expected}
    covered = {id(expected[name]) for name in plan.values()}
    params = {id(t) for t in skeleton.parameters()}
    optional = [re.compile(p) for p in (getattr(skeleton, "_keys_to_ignore_on_load_missing", None) or ())]
    missing, seen = [], set(covered)
    for name, tensor in expected.items():
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        if id(tensor) in params or not any(r.search(name) for r in optional):  # a buffer the model may rebuild
            missing.append(name)
    if missing or unexpected:
        found = [f"missing {_few(missing)}"] * bool(missing) + [f"unexpected {_few(unexpected)}"] * bool(unexpected)
        raise InputError(f"{path}: the weights are not those of the {type(skeleton).__name__} config.json describes: "
                         f"{'; '.join(found)}")
    wrong = [(k, shapes[k], tuple(expected[name].shape)) for k, name in plan.items() if shapes[k] != tuple(expected[name].shape)]
    if wrong:
        key, shape, want = wrong[0]
        more = f" (and {len(wrong) - 1} more tensors)" if len(wrong) > 1 else ""
        raise InputError(f"{path}: tensor {key} has shape {shape}, but config.json makes it {want}{more}")
    return plan, skeleton


def _safetensors_shapes(files: tuple[Path, ...]) -> tuple[dict[str, tuple[int, ...]], dict[str, Path]]:
    """Every tensor's shape, and the file that holds it, from the files' headers alone."""
    shapes: dict[str, tuple[int, ...]] = {}
    where: dict[str, Path] = {}
    for file in files:
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            for key in handle.keys():
                if key in where:
                    raise InputError(f"{file}: tensor {key} is also in {where[key].name}")
                shapes[key], where[key] = tuple(handle.get_slice(key).get_shape()), file
    return shapes, where


def _pickle_shapes(files: tuple[Path, ...]) -> tuple[dict[str, tuple[int, ...]], dict[str, Path]]:
    """Every tensor's shape and shard, reading each pickle shard once with weights_only=True."""
    shapes: dict[str, tuple[int, ...]] = {}
    where: dict[str, Path] = {}
    for file in files:
        state = _pickle_file(file)
        if clash := sorted(state.keys() & shapes.keys()):
            raise InputError(f"{file}: tensors also in another shard: {_few(clash)}")
        shapes.update({k: tuple(v.shape) for k, v in state.items()})
        where.update({k: file for k in state})
        del state
    return shapes, where


def open_weights(path: Path, config: PretrainedConfig, files: WeightFiles) -> tuple[WeightSource, PreTrainedModel]:
    """The checkpoint's weights, checked against config.json by name and shape without reading any
    tensor (only headers; a pickle shard is read once and dropped), and the model on the meta device.
    Errors of a corrupt, truncated or refused file are one line:
    - SafetensorError: a safetensors file whose header is cut, garbled or inconsistent;
    - OSError: a weight file that cannot be read;
    - pickle.UnpicklingError (--allow-pickle): weights_only refused a global, so the file asks to run code;
    - EOFError, RuntimeError (--allow-pickle): a pickle that ends early, a corrupt torch archive.
    Anything else is a bug and propagates (the CLI exits 3 on it)."""
    try:
        shapes, where = (_pickle_shapes if files.format == "pickle" else _safetensors_shapes)(files.shards)
    except pickle.UnpicklingError as exc:
        raise InputError(f"{path}: refusing the pickle weights: {refused_global(exc)}; weights_only loading "
                         "accepts tensors and plain containers only") from None
    except (SafetensorError, OSError, EOFError, RuntimeError) as exc:
        raise InputError(f"{path}: cannot load the model weights ({_first_line(exc)})") from None
    plan, skeleton = _plan(path, config, shapes)
    source = WeightSource(path, files.format, {k: where[k] for k in plan}, plan, {plan[k]: shapes[k] for k in plan})
    return source, skeleton


def _generation_config(path: Path) -> GenerationConfig:
    """The checkpoint's generation_config.json, or what config.json implies, as from_pretrained reads it
    (the probes decode with the tool's own; the report lists what this one asks for)."""
    try:
        try:
            return GenerationConfig.from_pretrained(path, local_files_only=True)
        except OSError:  # no (readable) generation_config.json
            return GenerationConfig.from_pretrained(path, config_file_name="config.json", _from_model_config=True,
                                                    local_files_only=True)
    except Exception as exc:  # as for config.json: whatever its checks raise, the file is at fault
        raise InputError(f"{path}: cannot read the generation config ({_first_line(exc)})") from None


# Files beside the weights that shape what the probes see: the architecture, the tokenization (a permuted
# tokenizer.json changes every score while the weights stay the same), the generation settings the
# report records, and a chat template. Each one present is hashed before it is read.
SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json")


def side_file_hashes(path: Path) -> dict[str, str]:
    return {name: sha256_file(path / name) for name in SIDE_FILES if (path / name).is_file()}


def open_directory_weights(path: str | Path, role: str) -> tuple[WeightSource, PreTrainedModel]:
    """A directory's safetensors weights checked against its config.json, with no tokenizer (``diff``),
    and the architecture on the meta device."""
    p = Path(path)
    raw, files = _inspect(p, role, allow_pickle=False, pickle_flag=False)
    return open_weights(p, _model_config(p, raw), files)


def open_checkpoint(path: str | Path | ModelRef, role: str = "model", allow_pickle: bool = False) -> Checkpoint:
    """A local causal-LM directory (or a hub id already resolved to one, ``hub.ModelRef``, whose repo and
    commit the checkpoint then records), checked and hashed but not loaded: safetensors only unless
    ``allow_pickle``, no remote code, exactly the weight files ``weight_files`` chooses (all of which, and
    the index, are hashed), names and shapes checked against config.json. Its weights are read when a
    model is filled from ``source`` (models/weights.py)."""
    p = Path(path)
    raw, files = _inspect(p, role, allow_pickle, pickle_flag=True)
    side = side_file_hashes(p)  # before they are read, so the end-of-run re-hash sees any edit after this
    _refuse_tokenizer_code(p)
    config = _model_config(p, raw)  # before the tokenizer, which reads config.json too and would word its errors
    try:
        tokenizer = AutoTokenizer.from_pretrained(p, local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # transformers raises many types for a missing/broken tokenizer
        raise InputError(f"{p}: cannot load the tokenizer ({_first_line(exc)})") from None
    source, skeleton = open_weights(p, config, files)
    rows = skeleton.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:  # token ids past the embedding would index out of range (fewer is normal padding)
        raise InputError(f"{p}: the tokenizer has {len(tokenizer)} tokens but the model's embedding has only {rows} rows; "
                         "they do not belong together")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    generation = _generation_config(p) if skeleton.can_generate() else None
    hashes = {f.name: sha256_file(f) for f in files.read}
    return Checkpoint(path=str(p), role=role, model=None, tokenizer=tokenizer, file_hashes=hashes, weights_format=files.format,
                      side_files=side, config=config, source=source, generation_config=generation,
                      n_params=sum(t.numel() for t in skeleton.parameters()), ignored_files=files.ignored,
                      hub=path.provenance() if isinstance(path, ModelRef) else None)


def load_checkpoint(path: str | Path, role: str = "model", device: str = "cpu", allow_pickle: bool = False,
                    dtype: torch.dtype = torch.float32) -> Checkpoint:
    """``open_checkpoint``, with its model built and filled from the weight files (float32 by default, as
    from_pretrained upcasts)."""
    ckpt = open_checkpoint(path, role, allow_pickle)
    ckpt.model = materialise(ckpt, dtype, device)
    return ckpt


def materialise(ckpt: Checkpoint, dtype: torch.dtype = torch.float32, device: str = "cpu") -> PreTrainedModel:
    """A new model holding ``ckpt``'s weights, every parameter filled from its files."""
    model = empty_model(ckpt.config, dtype, device)
    filled = fill(model, ckpt.source)
    left = [name for name, p in model.named_parameters() if id(p) not in filled]
    if left:  # open_weights rules this out; a parameter left as allocated would be garbage, never audit it
        raise RuntimeError(f"{ckpt.path}: parameters not filled from the weights: {_few(left)}")
    if ckpt.generation_config is not None:
        model.generation_config = ckpt.generation_config
    return model


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
