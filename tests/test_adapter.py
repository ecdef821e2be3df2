"""--adapter: a LoRA adapter merged into its base before the audit, checked against W + (α/r)·B·A by hand.

The merge and audit tests need peft (the lora extra) and are skipped without it; the error tests do not.
"""

import gc
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import schema_errors
from unlearn_audit.cli import main
from unlearn_audit.data import load_texts, sha256_file

R, ALPHA, TARGETS = 4, 16, ["q_proj", "v_proj", "down_proj"]


def run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.fixture(scope="module")
def lora(bench, tmp_path_factory) -> Path:
    """A LoRA adapter over the tiny clean model with random, non-zero A and B (peft's init_lora_weights=False)."""
    peft = pytest.importorskip("peft")
    from unlearn_audit.models.loading import load_checkpoint

    torch.manual_seed(0)
    model = peft.get_peft_model(load_checkpoint(bench["clean"]).model,
                                peft.LoraConfig(r=R, lora_alpha=ALPHA, target_modules=TARGETS, init_lora_weights=False))
    out = tmp_path_factory.mktemp("lora") / "adapter"
    model.save_pretrained(out)
    return out


def _merged_by_hand(base_dir: Path, adapter_dir: Path) -> tuple[dict, set]:
    """The base's tensors with W + (α/r)·B·A written into each targeted module, in float64."""
    from safetensors.torch import load_file

    weights = {k: v.double() for k, v in load_file(base_dir / "model.safetensors").items()}
    lora = load_file(adapter_dir / "adapter_model.safetensors")
    targeted = set()
    for key, a in lora.items():
        if ".lora_A." not in key:
            continue
        module = key.removeprefix("base_model.model.").split(".lora_A.")[0]
        b = lora[key.replace(".lora_A.", ".lora_B.")]
        weights[f"{module}.weight"] = weights[f"{module}.weight"] + (ALPHA / R) * (b.double() @ a.double())
        targeted.add(f"{module}.weight")
    return weights, targeted


def test_the_merged_weight_is_w_plus_scaled_ba(bench, lora):
    from safetensors.torch import load_file

    from unlearn_audit.models.adapter import merge_adapter
    from unlearn_audit.models.loading import load_checkpoint

    expected, targeted = _merged_by_hand(bench["clean"], lora)
    assert len(targeted) == 2 * len(TARGETS)  # two layers, three modules each
    base = load_file(bench["clean"] / "model.safetensors")
    assert min((expected[k] - base[k].double()).abs().max() for k in targeted) > 1e-3  # the update is not negligible
    merged = merge_adapter(load_checkpoint(bench["clean"]), lora)
    state = merged.model.state_dict()
    assert set(state) == set(expected)  # no LoRA modules left: a plain model of the base's architecture
    for name, value in expected.items():
        if name in targeted:
            assert (state[name].double() - value).abs().max() < 1e-6, name
        else:
            assert torch.equal(state[name], base[name]), name  # untargeted weights are untouched
    # The on-disk copy, which schemes that reload from a directory (bitsandbytes) quantize, is the merged model.
    on_disk = load_file(Path(merged.path) / "model.safetensors")
    assert all(torch.equal(on_disk[k], state[k]) for k in on_disk)
    loaded = load_checkpoint(bench["clean"])
    assert merged.base_path == str(bench["clean"]) and (merged.file_hashes, merged.side_files) == (loaded.file_hashes, loaded.side_files)
    copy = Path(merged.path)
    del merged, state
    gc.collect()
    assert not copy.exists()  # the temporary copy goes with the checkpoint


def test_an_audit_with_an_adapter_probes_the_merged_model(bench, lora, tmp_path, capsys):
    from unlearn_audit.models.hf import HFModel
    from unlearn_audit.models.loading import load_checkpoint
    from unlearn_audit.probes import mink

    before = set(Path(tempfile.gettempdir()).glob("unlearn-audit-merged-*"))
    out = tmp_path / "out"
    code, _, err = run(["audit", bench["clean"], "--adapter", lora, "--forget", bench["forget"], "--holdout", bench["holdout"],
                        "--schemes", "fp32,rtn-int4", "--out", out, "--format", "json"], capsys)
    assert code in (0, 1, 4), err
    report = json.loads((out / "report.json").read_text())
    assert schema_errors(report) == []
    assert report["inputs"]["model"]["path"] == str(bench["clean"])
    adapter = report["inputs"]["adapter"]
    assert adapter["path"] == str(lora)
    assert adapter["files"] == {name: sha256_file(lora / name) for name in ("adapter_config.json", "adapter_model.safetensors")}
    assert adapter["config"]["r"] == R and adapter["config"]["lora_alpha"] == ALPHA and adapter["config"]["peft_type"] == "LORA"
    assert [v["status"] for v in report["variants"]] == ["built", "built"]

    # The fp32 variant's LOSS scores are those of W + (α/r)·B·A built by hand, not those of the base.
    expected, _ = _merged_by_hand(bench["clean"], lora)
    by_hand, base = load_checkpoint(bench["clean"]), load_checkpoint(bench["clean"])
    by_hand.model.load_state_dict({k: v.float() for k, v in expected.items()})
    seqs, _, _ = mink.prepare(by_hand.tokenizer, load_texts(bench["forget"]).texts, None)
    loss = lambda m: [mink.loss(t) for t in HFModel("x", m.model, m.tokenizer, 8).token_scores(seqs)]  # noqa: E731
    audited = next(s["values"] for s in report["samples"]
                   if (s["variant"], s["model"], s["probe"], s["split"], s["metric"]) == ("fp32", "audited", "mink", "forget", "loss"))
    assert np.allclose(audited, loss(by_hand), atol=1e-5)
    assert not np.allclose(audited, loss(base), atol=1e-2)
    gc.collect()
    assert set(Path(tempfile.gettempdir()).glob("unlearn-audit-merged-*")) <= before  # the merged copy was removed


class _Payload:
    def __reduce__(self):  # what a malicious pickle does: call something when unpickled
        return (print, ("this ran",))


def test_pickle_adapter_weights_follow_the_allow_pickle_policy(bench, lora, tmp_path):
    from safetensors.torch import load_file

    from unlearn_audit.errors import InputError
    from unlearn_audit.models.adapter import check_adapter_dir, merge_adapter
    from unlearn_audit.models.loading import load_checkpoint

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_bytes((lora / "adapter_config.json").read_bytes())
    torch.save(load_file(lora / "adapter_model.safetensors"), pickled / "adapter_model.bin")
    with pytest.raises(InputError, match="only pickle adapter weights.*--allow-pickle"):
        check_adapter_dir(pickled)
    merged = merge_adapter(load_checkpoint(bench["clean"]), pickled, allow_pickle=True)
    reference = merge_adapter(load_checkpoint(bench["clean"]), lora)
    assert all(torch.equal(merged.model.state_dict()[k], v) for k, v in reference.model.state_dict().items())
    assert set(merged.adapter["files"]) == {"adapter_config.json", "adapter_model.bin"}
    assert merged.adapter["weights_format"].startswith("pickle")
    torch.save({"x": _Payload()}, pickled / "adapter_model.bin")
    with pytest.raises(InputError, match="refusing the pickle weights: it references print, which is not a tensor type"):
        merge_adapter(load_checkpoint(bench["clean"]), pickled, allow_pickle=True)


def test_adapter_errors_are_one_line(bench, tmp_path, monkeypatch, capsys):
    base = ["audit", bench["clean"], "--forget", bench["forget"], "--holdout", bench["holdout"], "--schemes", "fp32"]

    def one_line(args, *needles):
        code, _, err = run(args, capsys)
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1, lines
        for needle in needles:
            assert needle in lines[0], lines[0]

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    one_line([*base, "--adapter", tmp_path / "nowhere"], "adapter directory not found")
    one_line([*base, "--adapter", adapter], "no adapter_config.json")
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING"}))
    one_line([*base, "--adapter", adapter], "only LoRA adapters")
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}))
    (adapter / "adapter_model.bin").write_bytes(b"\x80\x04pickle")
    one_line([*base, "--adapter", adapter], "adapter_model.bin", "can execute code")
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "peft", None)  # as if the lora extra were not installed
    one_line([*base, "--adapter", adapter], "install unlearn-audit[lora]")


def test_a_hub_base_and_a_hub_adapter_are_merged_and_both_recorded(bench, lora, tmp_path, capsys, monkeypatch):
    """MODEL and --adapter named by Hub id, read from a cache tree in huggingface_hub's layout."""
    from huggingface_hub import constants

    from test_hub import add_snapshot

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    add_snapshot(cache, "acme/base", "c" * 40, bench["clean"])
    add_snapshot(cache, "acme/lora", "d" * 40, lora, refs=("v1",))
    out = tmp_path / "out"
    code, _, err = run(["audit", "acme/base", "--adapter", "acme/lora@v1", "--forget", bench["forget"], "--holdout", bench["holdout"],
                        "--schemes", "fp32", "--out", out, "--format", "json"], capsys)
    assert code in (0, 1, 4), err
    inputs = json.loads((out / "report.json").read_text())["inputs"]
    assert inputs["model"]["hub"] == {"repo_id": "acme/base", "revision": "main", "commit": "c" * 40}
    assert inputs["adapter"]["hub"] == {"repo_id": "acme/lora", "revision": "v1", "commit": "d" * 40}
    assert inputs["adapter"]["files"]["adapter_model.safetensors"] == sha256_file(lora / "adapter_model.safetensors")
