"""Integrity: a byte-identical report for the same inputs and seed, an input changed mid-audit makes the
verdict INCONCLUSIVE, a run killed at any point leaves a whole report or none, and broken checkpoints
are one-line errors."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from unlearn_audit.audit import AuditConfig, AuditData, run_audit
from unlearn_audit.benchmark import tiny
from unlearn_audit.cli import main
from unlearn_audit.data import load_texts
from unlearn_audit.models.loading import write_checkpoint


def _without_run(path):
    report = json.loads(path.read_text())
    return json.dumps({k: v for k, v in report.items() if k not in ("run", "timings")}, sort_keys=True)


def test_same_inputs_and_seed_give_a_byte_identical_report(bench, tmp_path, capsys):
    outs = []
    for name in ("a", "b"):
        args = ["audit", bench["clean"], "--forget", bench["forget"], "--holdout", bench["holdout"], "--schemes", "fp32,rtn-int4",
                "--out", tmp_path / name, "--format", "json", "--fresh"]
        with pytest.raises(SystemExit):
            main([str(a) for a in args])
        capsys.readouterr()
        outs.append(_without_run(tmp_path / name / "report.json"))
    assert outs[0] == outs[1]


def test_an_input_changed_during_the_audit_makes_it_inconclusive(bench, tmp_path):
    forget = tmp_path / "forget.jsonl"
    forget.write_text(bench["forget"].read_text())
    data = AuditData(forget=load_texts(forget), holdout=load_texts(bench["holdout"]))

    def edit_midway(step: str) -> None:
        if step.startswith("rtn-int4"):
            forget.write_text(forget.read_text() + json.dumps({"text": "a line added while the audit ran"}) + "\n")

    report = run_audit(str(bench["clean"]), data, AuditConfig(schemes=("fp32", "rtn-int4"), bootstrap=100), on_step=edit_midway)
    assert report["verdict"] == "INCONCLUSIVE" and "input changed during the audit" in report["verdict_reason"]
    assert str(forget) in report["verdict_reason"]


def test_sigkill_at_any_point_leaves_a_whole_report_or_none(bench, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", "from unlearn_audit.cli import main; main()", "audit", str(bench["clean"]),
           "--forget", str(bench["forget"]), "--holdout", str(bench["holdout"]), "--schemes", "fp32", "--out", str(out), "--fresh"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for delay in (2.0, 6.0, 10.0, 14.0):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (out / "report.json").exists():
            report = json.loads((out / "report.json").read_text())  # whole, never truncated
            assert report["verdict"] in ("PASS", "FAIL", "INCONCLUSIVE")
    leftovers = [p.name for p in out.glob(".report.json.*")] if out.exists() else []
    assert all(name.endswith(".tmp") for name in leftovers)  # at worst an orphaned temp file, never a partial report


def test_broken_checkpoints_are_one_line_errors(tmp_path, capsys):
    tok = tiny.train_tokenizer(["a small corpus for a tokenizer, nothing more"] * 4, vocab_size=300)
    good = tmp_path / "g.jsonl"
    good.write_text("".join(json.dumps({"text": f"document {i}"}) + "\n" for i in range(12)))
    hold = tmp_path / "h.jsonl"
    hold.write_text("".join(json.dumps({"text": f"other {i}"}) + "\n" for i in range(12)))
    truncated = write_checkpoint(tiny.tiny_llama(len(tok), hidden=32, layers=1), tok, tmp_path / "truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    small = write_checkpoint(tiny.tiny_llama(len(tok) - 50, hidden=32, layers=1), tok, tmp_path / "small")
    notok = write_checkpoint(tiny.tiny_llama(len(tok), hidden=32, layers=1), tok, tmp_path / "notok")
    for f in notok.glob("tokenizer*"):
        f.unlink()
    for model, needle in [(truncated, "cannot load the model weights"), (small, "embedding has only"), (notok, "tokenizer")]:
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in ["audit", model, "--forget", good, "--holdout", hold, "--schemes", "fp32"]])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
