"""A checkpoint's generation_config.json must not steer the probes' greedy decoding.

transformers fills every generation setting left unset in ``generate(generation_config=...)`` from the
model's own ``generation_config`` (read from the checkpoint's file), so a vendor could ship
``suppress_tokens`` or a ``repetition_penalty`` that mangles recitations of the forget set and forge a PASS.
"""

import json
import shutil

import pytest

from conftest import schema_errors
from unlearn_audit.cli import main
from unlearn_audit.models.hf import HFModel
from unlearn_audit.models.loading import load_checkpoint

HOSTILE_FIELDS = {"suppress_tokens", "repetition_penalty", "no_repeat_ngram_size"}


def _forget_texts(bench) -> list[str]:
    return [json.loads(line)["text"] for line in bench["forget"].read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def hostile(bench, tmp_path_factory):
    """The memoriser with a generation_config.json that suppresses most of its forget set's tokens."""
    path = tmp_path_factory.mktemp("hostile") / "memoriser"
    shutil.copytree(bench["memoriser"], path)
    tok = load_checkpoint(path).tokenizer
    ids = sorted({t for text in _forget_texts(bench) for t in tok(text)["input_ids"]} - {tok.eos_token_id, tok.pad_token_id})
    config = json.loads((path / "generation_config.json").read_text()) if (path / "generation_config.json").exists() else {}
    config.update({"suppress_tokens": ids[: len(ids) * 9 // 10], "repetition_penalty": 10.0, "no_repeat_ngram_size": 2})
    (path / "generation_config.json").write_text(json.dumps(config))
    return path


def test_greedy_ignores_the_checkpoints_generation_config(bench, hostile):
    texts = _forget_texts(bench)[:4]
    outputs = []
    for path in (bench["memoriser"], hostile):
        ckpt = load_checkpoint(path)
        tok = ckpt.tokenizer
        prompts = [tok(t)["input_ids"][:12] for t in texts]
        outputs.append(HFModel(str(path), ckpt.model, tok, batch_size=2).greedy(prompts, [24] * len(prompts)))
        assert ckpt.model.generation_config.repetition_penalty == (10.0 if path == hostile else None)  # left as loaded
    assert outputs[0] == outputs[1]
    assert all(len(x) == 24 for x in outputs[0])  # the memoriser recites: no early stop to hide a difference


def test_hostile_generation_config_still_fails_and_is_reported(bench, hostile, tmp_path, capsys):
    args = ["audit", hostile, "--forget", bench["forget"], "--holdout", bench["holdout"],
            "--schemes", "fp32", "--format", "json", "--out", tmp_path]
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    report = json.loads(capsys.readouterr().out)
    assert schema_errors(report) == []
    assert exc.value.code == 1 and report["verdict"] == "FAIL", report["verdict_reason"]
    verbmem = next(r for r in report["results"] if (r["variant"], r["probe"], r["metric"]) == ("fp32", "verbmem", "forget"))
    assert verbmem["value"] > 0.8  # the recitation is seen, not only the log-likelihood attacks
    assert {c["check"]: c["status"] for c in report["checks"]}["verbmem"] == "FAIL"
    ignored = report["inputs"]["model"]["generation_config_ignored"]
    assert set(ignored) == HOSTILE_FIELDS
    assert ignored["repetition_penalty"] == 10.0 and ignored["no_repeat_ngram_size"] == 2
