"""NaN never reaches a verdict: non-finite scores, non-finite weights in any model, an undefined PrivLeak
and texts too short to score are findings or notes, never a PASS decided on whatever was left."""

import json

import pytest
import torch

from unlearn_audit.cli import main
from unlearn_audit.data import write_jsonl
from unlearn_audit.models.loading import load_checkpoint, write_checkpoint


def _audit(args, out, capsys) -> tuple[int, dict]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in [*args, "--schemes", "fp32", "--format", "json", "--out", out]])
    capsys.readouterr()
    return exc.value.code, json.loads((out / "report.json").read_text())


def test_an_overflowing_model_is_inconclusive_with_the_count(bench, tmp_path, capsys):
    """Finite weights whose activations overflow (as a LoRA with an overflowed scale does): every score is
    NaN. The bootstrap used to drop the NaN resamples and decide on none."""
    ckpt = load_checkpoint(bench["memoriser"])
    with torch.no_grad():
        ckpt.model.model.norm.weight.fill_(3e38)  # finite, but hidden × 3e38 overflows float32
    assert all(torch.isfinite(p).all() for p in ckpt.model.parameters())
    model = write_checkpoint(ckpt.model, ckpt.tokenizer, tmp_path / "overflow")
    code, report = _audit(["audit", model, "--forget", bench["forget"], "--holdout", bench["holdout"]], tmp_path / "out", capsys)
    assert code == 4 and report["verdict"] == "INCONCLUSIVE"
    assert "non-finite per-document score" in report["verdict_reason"] and "fp32: the audited model gave" in report["verdict_reason"]
    assert report["findings"] and report["findings"][0] == report["verdict_reason"]


def test_a_reference_that_recites_the_forget_set_leaves_privleak_undefined_not_a_crash(bench, tmp_path, capsys):
    code, report = _audit(["audit", bench["clean"], "--forget", bench["forget"], "--holdout", bench["holdout"],
                           "--reference", bench["memoriser"]], tmp_path / "out", capsys)
    assert report["config"]["privleak_reference"]["auc"] == 0.0
    privleak = next(c for c in report["checks"] if c["check"] == "privleak")
    assert privleak["status"] == "INCONCLUSIVE" and code == {"FAIL": 1, "INCONCLUSIVE": 4}[report["verdict"]]


def test_nan_weights_in_the_reference_are_a_finding(bench, tmp_path, capsys):
    ckpt = load_checkpoint(bench["clean"])
    with torch.no_grad():
        next(iter(ckpt.model.parameters()))[0, 0] = float("nan")
    broken = write_checkpoint(ckpt.model, ckpt.tokenizer, tmp_path / "nan-reference")
    code, report = _audit(["audit", bench["clean"], "--forget", bench["forget"], "--holdout", bench["holdout"],
                           "--reference", broken], tmp_path / "out", capsys)
    assert code == 4 and report["verdict"] == "INCONCLUSIVE"
    assert any(f.startswith("the reference model's weights contain NaN") for f in report["findings"])


def test_texts_too_short_to_score_are_left_out_with_a_note(bench, tmp_path, capsys, recwarn):
    forget = [json.loads(line)["text"] for line in bench["forget"].read_text().splitlines()]
    write_jsonl(tmp_path / "forget.jsonl", [{"text": t} for t in forget] + [{"text": "a"}])
    code, report = _audit(["audit", bench["memoriser"], "--forget", tmp_path / "forget.jsonl", "--holdout", bench["holdout"]],
                          tmp_path / "out", capsys)
    assert any("fewer than two tokens" in n for n in report["config"]["notes"])
    auc = next(r for r in report["results"] if r["metric"] == "auc")
    assert auc["n"] == len(forget) and auc["value"] is not None and not report["findings"]
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning) and "empty slice" in str(w.message)]
