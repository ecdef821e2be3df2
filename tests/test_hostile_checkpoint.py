"""A hostile checkpoint directory: the loader reads exactly the files it hashes, never audits a randomly
initialised model, and turns every malformed file into one line (exit 2).

Each case is a tiny checkpoint written by ``write_checkpoint`` and then edited the way a vendor could:
an index beside a decoy, shards outside the directory, renamed or dropped tensors, a config that asks
for more layers than the weights hold, config values transformers cannot build, tokenizer custom code.
"""

import json
import shutil
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from unlearn_audit.benchmark import tiny
from unlearn_audit.cli import main
from unlearn_audit.data import sha256_file
from unlearn_audit.errors import InputError
from unlearn_audit.models.loading import load_checkpoint, write_checkpoint

INDEX = "model.safetensors.index.json"


@pytest.fixture(scope="module")
def tok():
    return tiny.train_tokenizer(["a small corpus for a tokenizer, nothing more"] * 4, vocab_size=300)


@pytest.fixture(scope="module")
def base(tok, tmp_path_factory):
    """A two-layer Llama with untied embeddings (lm_head.weight is its own tensor)."""
    return write_checkpoint(tiny.tiny_llama(len(tok), hidden=32, layers=2), tok, tmp_path_factory.mktemp("base") / "model")


@pytest.fixture(scope="module")
def other(tok, tmp_path_factory):
    """The same architecture with different weights: what a hostile index would load instead."""
    return write_checkpoint(tiny.tiny_llama(len(tok), seed=1, hidden=32, layers=2), tok, tmp_path_factory.mktemp("other") / "model")


@pytest.fixture
def sets(tmp_path):
    forget, hold = tmp_path / "f.jsonl", tmp_path / "h.jsonl"
    forget.write_text("".join(json.dumps({"text": f"forget document {i}"}) + "\n" for i in range(12)))
    hold.write_text("".join(json.dumps({"text": f"holdout document {i}"}) + "\n" for i in range(12)))
    return forget, hold


def _copy(src, dest):
    shutil.copytree(src, dest)
    return dest


def _weights(path):
    return load_file(path / "model.safetensors")


def _save(tensors, path):
    save_file(tensors, str(path), metadata={"format": "pt"})


def _shard(path, names=("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")):
    """Split model.safetensors into two shards and an index, the layout save_pretrained uses for big models."""
    tensors = _weights(path)
    (path / "model.safetensors").unlink()
    keys = sorted(tensors)
    halves = (keys[: len(keys) // 2], keys[len(keys) // 2 :])
    weight_map = {}
    for name, part in zip(names, halves):
        _save({k: tensors[k] for k in part}, path / name)
        weight_map.update({k: name for k in part})
    (path / INDEX).write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return tensors


def _refused(path, *needles, **kwargs):
    with pytest.raises(InputError) as exc:
        load_checkpoint(path, **kwargs)
    message = str(exc.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    return message


def _one_line_error(args, capsys, *needles):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line]
    assert exc.value.code == 2 and len(lines) == 1, err
    assert lines[0].startswith("unlearn-audit: error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def _same_model(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key
    for (na, ba), (nb, bb) in zip(a.named_buffers(), b.named_buffers()):
        assert na == nb and torch.equal(ba, bb), na


# 1. Read exactly the files that are hashed.


def test_an_index_cannot_load_shards_from_outside_the_directory(base, other, tmp_path):
    """The attack: a decoy model.safetensors (whose hash the report would certify) beside an index whose
    shards live in another directory."""
    evil = tmp_path / "evil"
    evil.mkdir()
    shutil.copy(other / "model.safetensors", evil / "weights.safetensors")
    ckpt = _copy(base, tmp_path / "ckpt")
    weight_map = {k: "../evil/weights.safetensors" for k in _weights(other)}
    (ckpt / INDEX).write_text(json.dumps({"weight_map": weight_map}))
    _refused(ckpt, INDEX, "../evil/weights.safetensors", "inside")
    for name in ("/tmp/x.safetensors", "sub/x.safetensors", ".."):
        (ckpt / INDEX).write_text(json.dumps({"weight_map": {k: name for k in weight_map}}))
        _refused(ckpt, INDEX, repr(name))


def test_a_shard_that_is_a_symlink_out_of_the_directory_is_refused(base, other, tmp_path):
    ckpt = _copy(base, tmp_path / "ckpt")
    _shard(ckpt)
    (ckpt / "model-00002-of-00002.safetensors").unlink()
    (ckpt / "model-00002-of-00002.safetensors").symlink_to(other / "model.safetensors")
    _refused(ckpt, "model-00002-of-00002.safetensors", "inside")


def test_a_sharded_checkpoint_loads_exactly_its_shards_and_hashes_the_index(base, tmp_path):
    ckpt = _copy(base, tmp_path / "ckpt")
    tensors = _shard(ckpt)
    loaded = load_checkpoint(ckpt)
    names = [INDEX, "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert loaded.file_hashes == {name: sha256_file(ckpt / name) for name in names}
    state = loaded.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in tensors.items())


def test_a_stray_safetensors_file_beside_an_index_is_refused(base, other, tmp_path):
    """A decoy model.safetensors the index does not name would be hashed by nobody and read by some tools."""
    ckpt = _copy(base, tmp_path / "ckpt")
    _shard(ckpt)
    shutil.copy(other / "model.safetensors", ckpt / "model.safetensors")
    _refused(ckpt, "model.safetensors", "not named by", INDEX)


def _mistral_layout(base, other, ckpt):
    """Mistral-7B-v0.3 as released: the index and its shards for transformers, and beside them
    consolidated.safetensors (with params.json) in mistral's own tensor names, which no HF loader reads."""
    tensors = _shard(ckpt)
    _save({k.replace("model.layers.", "layers."): v for k, v in _weights(other).items()}, ckpt / "consolidated.safetensors")
    (ckpt / "params.json").write_text(json.dumps({"dim": 32, "n_layers": 2}))
    return tensors


def test_a_mistral_layout_loads_from_its_index_and_lists_the_consolidated_file_as_ignored(base, other, tmp_path):
    from transformers import AutoModelForCausalLM

    ckpt = _copy(base, tmp_path / "ckpt")
    _mistral_layout(base, other, ckpt)
    loaded = load_checkpoint(ckpt)
    assert loaded.ignored_files == ("consolidated.safetensors",)
    assert "consolidated.safetensors" not in loaded.file_hashes and INDEX in loaded.file_hashes
    _same_model(loaded.model, AutoModelForCausalLM.from_pretrained(ckpt, local_files_only=True, dtype=torch.float32))


def test_a_mistral_layout_is_audited_and_the_report_names_what_was_ignored(base, other, sets, tmp_path, capsys):
    ckpt = _copy(base, tmp_path / "ckpt")
    _mistral_layout(base, other, ckpt)
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in ["audit", ckpt, "--forget", sets[0], "--holdout", sets[1], "--schemes", "fp32", "--out", tmp_path / "r",
                               "--format", "json"]])
    assert exc.value.code in (0, 1, 4), capsys.readouterr().err
    model = json.loads((tmp_path / "r" / "report.json").read_text())["inputs"]["model"]
    assert model["ignored_files"] == ["consolidated.safetensors"]
    assert sorted(model["files"]) == sorted([INDEX, "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"])


def test_a_second_safetensors_index_is_refused(base, tmp_path):
    """Two indices: which shards are the model depends on which index a tool reads."""
    ckpt = _copy(base, tmp_path / "ckpt")
    _shard(ckpt)
    shutil.copy(ckpt / INDEX, ckpt / "model.fp16.safetensors.index.json")
    _refused(ckpt, "model.fp16.safetensors.index.json", "not named by", "ambiguous")


def test_several_safetensors_files_without_an_index_are_refused(base, other, tmp_path):
    ckpt = _copy(base, tmp_path / "ckpt")
    shutil.copy(other / "model.safetensors", ckpt / "extra.safetensors")
    _refused(ckpt, "extra.safetensors", "model.safetensors", "no " + INDEX)


def test_a_single_safetensors_file_under_another_name_is_loaded_and_hashed(base, tmp_path):
    ckpt = _copy(base, tmp_path / "ckpt")
    (ckpt / "model.safetensors").rename(ckpt / "weights.safetensors")
    loaded = load_checkpoint(ckpt)
    assert loaded.file_hashes == {"weights.safetensors": sha256_file(ckpt / "weights.safetensors")}


@pytest.mark.parametrize("index, needle", [
    ("{not json", "invalid JSON"),
    ('{"metadata": {}}', "no weight_map"),
    ('{"weight_map": ["a"]}', "weight_map"),
    ('{"weight_map": {"a": 5}}', "weight_map"),
    ("[1]", "expected a JSON object"),
])
def test_a_broken_index_is_a_one_line_error(base, sets, tmp_path, capsys, index, needle):
    ckpt = _copy(base, tmp_path / "ckpt")
    _shard(ckpt)
    (ckpt / INDEX).write_text(index)
    _one_line_error(["audit", ckpt, "--forget", sets[0], "--holdout", sets[1], "--schemes", "fp32"], capsys, INDEX, needle)


def test_a_shard_named_by_the_index_must_exist(base, tmp_path):
    ckpt = _copy(base, tmp_path / "ckpt")
    _shard(ckpt)
    (ckpt / "model-00002-of-00002.safetensors").unlink()
    _refused(ckpt, "model-00002-of-00002.safetensors")


def test_loading_gives_the_parameters_from_pretrained_gives(base, tok, tmp_path):
    """The loader fills the model itself, and must not change a single bit: untied Llama, and GPT-2 whose
    lm_head is tied to the embedding (save_pretrained writes it once), with its Conv1D layers."""
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    gpt2 = write_checkpoint(GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=64)).eval(),
                            tok, tmp_path / "gpt2")
    assert "lm_head.weight" not in _weights(gpt2)
    ids = torch.tensor([[5, 9, 40, 77, 3]])
    for path in (base, gpt2):
        ours = load_checkpoint(path).model
        theirs = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
        _same_model(ours, theirs)
        assert ours.config.to_dict() == theirs.config.to_dict()
        assert ours.generation_config.to_dict() == theirs.generation_config.to_dict()
        assert not ours.training
        with torch.no_grad():
            assert torch.equal(ours(ids).logits, theirs(ids).logits)
    tied = load_checkpoint(gpt2).model
    assert tied.lm_head.weight is tied.get_input_embeddings().weight


# 2. No silent random initialisation.


def test_renamed_tensors_are_refused_not_randomly_initialised(base, tmp_path):
    ckpt = _copy(base, tmp_path / "ckpt")
    _save({k.replace("model.", "backbone."): v for k, v in _weights(ckpt).items()}, ckpt / "model.safetensors")
    message = _refused(ckpt, "missing", "model.embed_tokens.weight", "unexpected", "backbone.")
    assert message.count("backbone.") <= 5  # at most five keys are named


def test_a_safetensors_file_without_tensors_is_refused(base, tmp_path):
    ckpt = _copy(base, tmp_path / "ckpt")
    _save({}, ckpt / "model.safetensors")
    _refused(ckpt, "hold no tensors")


def test_dropped_layers_and_head_are_refused(base, tmp_path):
    ckpt = _copy(base, tmp_path / "ckpt")
    _save({k: v for k, v in _weights(ckpt).items() if "layers.1." not in k}, ckpt / "model.safetensors")
    _refused(ckpt, "layers")
    ckpt = _copy(base, tmp_path / "nohead")
    _save({k: v for k, v in _weights(ckpt).items() if k != "lm_head.weight"}, ckpt / "model.safetensors")
    _refused(ckpt, "missing", "lm_head.weight")


def test_a_tensor_of_the_wrong_shape_is_named(base, tmp_path):
    ckpt = _copy(base, tmp_path / "ckpt")
    tensors = _weights(ckpt)
    tensors["model.layers.0.mlp.up_proj.weight"] = torch.zeros(100, 32)
    _save(tensors, ckpt / "model.safetensors")
    _refused(ckpt, "model.layers.0.mlp.up_proj.weight", "(100, 32)", "(128, 32)")


def test_a_config_with_more_layers_than_the_weights_is_refused(base, tmp_path):
    ckpt = _copy(base, tmp_path / "ckpt")
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    _refused(ckpt, "3", "layers")


def test_a_huge_layer_count_is_refused_before_any_layer_is_built(base, tmp_path, monkeypatch):
    """num_hidden_layers: 5000 must not allocate (or even build on the meta device) 5000 layers."""
    from transformers.models.llama import modeling_llama

    built = []
    init = modeling_llama.LlamaDecoderLayer.__init__

    def counting(self, *args, **kwargs):
        built.append(1)
        init(self, *args, **kwargs)

    monkeypatch.setattr(modeling_llama.LlamaDecoderLayer, "__init__", counting)
    ckpt = _copy(base, tmp_path / "ckpt")
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 5000}))
    start = time.perf_counter()
    _refused(ckpt, "5000", "layers")
    assert not built and time.perf_counter() - start < 10


def test_a_hidden_size_no_tensor_has_is_refused(base, tmp_path):
    ckpt = _copy(base, tmp_path / "ckpt")
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "hidden_size": 4096, "head_dim": 1024}))
    _refused(ckpt, "hidden_size", "4096")


# 3. Config errors are input errors.


@pytest.mark.parametrize("patch, needle", [
    ({"hidden_act": "gelu_from_the_vendor"}, "gelu_from_the_vendor"),
    ({"rope_parameters": {"rope_type": "vendor_rope", "rope_theta": 10000.0}}, "vendor_rope"),
    ({"num_hidden_layers": "two"}, "num_hidden_layers"),
    ({"dtype": "evil"}, 'dtype "evil"'),  # AttributeError inside transformers
    ({"num_attention_heads": 0}, "num_attention_heads 0"),  # ZeroDivisionError inside transformers
    ({"model_type": ["llama"]}, "model_type"),
])
def test_a_config_transformers_cannot_build_is_a_one_line_error(base, sets, tmp_path, capsys, patch, needle):
    ckpt = _copy(base, tmp_path / "ckpt")
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, **patch}))
    _one_line_error(["audit", ckpt, "--forget", sets[0], "--holdout", sets[1], "--schemes", "fp32"], capsys, "config.json", needle)


def test_tokenizer_custom_code_is_refused(base, sets, tmp_path, capsys):
    ckpt = _copy(base, tmp_path / "ckpt")
    config = json.loads((ckpt / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["tokenization_vendor.VendorTokenizer", None]}
    (ckpt / "tokenizer_config.json").write_text(json.dumps(config))
    _one_line_error(["audit", ckpt, "--forget", sets[0], "--holdout", sets[1], "--schemes", "fp32"], capsys,
                    "tokenizer_config.json", "custom code")


# 4. The directory check and the pickle-refusal wording are public (diff and the adapter use them).


def test_the_shared_helpers_are_public(base):
    from unlearn_audit.models import loading

    assert loading.check_directory(base, "model")["model_type"] == "llama"
    assert loading.refused_global(Exception("Unsupported global: GLOBAL builtins.exec was not")) == \
        "it references builtins.exec, which is not a tensor type"
    assert not hasattr(loading, "_check_directory") and not hasattr(loading, "_refused_global")


def _pickled(base, dest, state):
    dest.mkdir()
    for f in base.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, dest / f.name)
    torch.save(state, dest / "pytorch_model.bin")
    return dest


def test_pickle_weights_load_exactly_the_hashed_file_and_are_checked_alike(base, tmp_path):
    tensors = _weights(base)
    ckpt = _pickled(base, tmp_path / "pickled", tensors)
    torch.save({"learning_rate": 1e-3}, ckpt / "training_args.bin")  # read by nothing, so hashed by nothing
    loaded = load_checkpoint(ckpt, allow_pickle=True)
    assert loaded.file_hashes == {"pytorch_model.bin": sha256_file(ckpt / "pytorch_model.bin")}
    assert loaded.weights_format == "pickle"
    _same_model(loaded.model, load_checkpoint(base).model)
    renamed = _pickled(base, tmp_path / "renamed", {k.replace("model.", "backbone."): v for k, v in tensors.items()})
    _refused(renamed, "missing", "unexpected", allow_pickle=True)


def test_a_hugging_face_cache_snapshot_loads_through_its_blob_links(base, tmp_path):
    """``<repo>/snapshots/<rev>/`` holds links to ``<repo>/blobs/<sha>``: the way most checkpoints sit on
    disk. They load, with the same hashes as the plain directory; a link anywhere else is still refused."""
    import hashlib
    import os

    plain = base
    repo = tmp_path / "models--vendor--tiny"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    for f in plain.iterdir():
        blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        blob.write_bytes(f.read_bytes())
        os.symlink(os.path.relpath(blob, snap), snap / f.name)
    a, b = load_checkpoint(plain), load_checkpoint(snap)
    assert a.file_hashes == b.file_hashes
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    outside = tmp_path / "elsewhere.safetensors"
    outside.write_bytes((plain / "model.safetensors").read_bytes())
    (snap / "model.safetensors").unlink()
    os.symlink(outside, snap / "model.safetensors")
    with pytest.raises(InputError, match="is a link to"):
        load_checkpoint(snap)
