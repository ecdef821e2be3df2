"""End-to-end audits of real tiny models through the CLI: the memoriser must FAIL, the clean model PASS."""

import json

import pytest

from conftest import schema_errors
from unlearn_audit.cli import main

REQUIRED_KEYS = {"schema_version", "tool_version", "verdict", "variants", "results", "checks", "inputs", "config", "timings"}


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def audit_args(bench, model, out, *extra):
    return ["audit", bench[model], "--forget", bench["forget"], "--holdout", bench["holdout"],
            "--forget-qa", bench["forget_qa"], "--retain-qa", bench["retain_qa"],
            "--holdout-qa", bench["holdout_qa"], "--out", out, *extra]


def result(report, variant, probe, metric):
    return next(r for r in report["results"] if (r["variant"], r["probe"], r["metric"]) == (variant, probe, metric))


def test_memoriser_fails(bench, tmp_path, capsys):
    code, stdout, _ = run_cli(audit_args(bench, "memoriser", tmp_path, "--schemes", "fp32,rtn-int8", "--format", "json"), capsys)
    report = json.loads(stdout)
    assert schema_errors(report) == []
    assert code == 1 and report["verdict"] == "FAIL"
    assert REQUIRED_KEYS <= set(report)
    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert report["verdict_reason"].startswith("fails at fp32: verbmem")
    for variant in ("fp32", "rtn-int8"):
        assert result(report, variant, "verbmem", "forget")["value"] > 0.8
        assert result(report, variant, "mink", "auc")["value"] < 0.1
        assert result(report, variant, "mink", "privleak")["value"] < -80
        statuses = {c["check"]: c["status"] for c in report["checks"] if c["variant"] == variant}
        assert statuses["verbmem"] == "FAIL" and statuses["privleak"] == "FAIL"
    gap = result(report, "fp32", "verbmem", "forget_minus_holdout")
    assert gap["ci_low"] <= gap["value"] <= gap["ci_high"] and gap["n"] == 48
    assert report["inputs"]["forget"]["n"] == 48 and len(report["inputs"]["forget"]["sha256"]) == 64
    assert all(len(h) == 64 for h in report["inputs"]["model"]["files"].values())


def test_clean_model_passes(bench, tmp_path, capsys):
    schemes = "fp32,rtn-int4,gptq-int4,awq-int4,gguf-q4_0,nf4"
    code, stdout, _ = run_cli(audit_args(bench, "clean", tmp_path, "--schemes", schemes), capsys)
    report = json.loads((tmp_path / "report.json").read_text())
    assert schema_errors(report) == []
    assert report["verdict"] == "PASS", report["verdict_reason"]
    assert code == 0
    assert "VERDICT: PASS" in stdout
    assert {c["status"] for c in report["checks"]} == {"PASS"}
    assert [v["name"] for v in report["variants"] if v["status"] == "built"] == schemes.split(",")
    calib = report["config"]["calibration"]  # no --retain or --calibration: the shipped generic text
    assert calib["source"].startswith("generic text") and calib["sequences"] == 32 and len(calib["sha256"]) == 64


def test_original_and_reference_give_retention_grid_overlap_and_privleak(bench, tmp_path, capsys):
    args = audit_args(bench, "memoriser", tmp_path, "--schemes", "fp32,rtn-int4", "--format", "json",
                      "--original", bench["memoriser"], "--reference", bench["clean"])
    code, stdout, _ = run_cli(args, capsys)
    report = json.loads(stdout)
    assert schema_errors(report) == []
    assert code == 1
    # the same scheme applied to the same weights: retention is exactly 1 and every code matches
    assert result(report, "rtn-int4", "verbmem", "retention")["value"] == pytest.approx(1.0)
    assert result(report, "rtn-int4", "weights", "grid_code_overlap")["value"] == 1.0
    assert result(report, "rtn-int4", "weights", "grid_scale_changed")["value"] == 0.0
    fx = report["forensics"]["rtn-int4"]  # the per-module block of the weight forensics
    assert fx["code_overlap"] == 1.0 and len(fx["modules"]) == 7 * 2  # q k v o gate up down, 2 layers
    assert all(m["code_overlap"] == 1.0 and m["relative_change"] == 0.0 for m in fx["modules"])
    assert result(report, "rtn-int4", "knowmem", "retain_utility")["value"] == pytest.approx(1.0)
    assert result(report, "rtn-int4", "mink", "original_auc")["value"] == result(report, "rtn-int4", "mink", "auc")["value"]
    ref = report["config"]["privleak_reference"]
    assert ref["source"].startswith("reference model") and 0.25 < ref["auc"] < 0.75
    leak = result(report, "fp32", "mink", "privleak")
    assert leak["value"] == pytest.approx((result(report, "fp32", "mink", "auc")["value"] - ref["auc"]) / ref["auc"] * 100)
    assert report["config"]["knowmem_icl_source"].startswith("first 10 retain QA pairs")


def test_one_forward_pass_per_split_feeds_every_attack(bench, monkeypatch):
    from unlearn_audit.audit import run_audit
    from unlearn_audit.data import load_texts
    from unlearn_audit.models.hf import HFModel
    from unlearn_audit.pipeline.types import AuditConfig, AuditData

    calls = []
    real = HFModel.token_scores

    def counting(self, sequences):
        calls.append((self.name, len(sequences)))
        return real(self, sequences)

    monkeypatch.setattr(HFModel, "token_scores", counting)
    data = AuditData(forget=load_texts(bench["forget"]), holdout=load_texts(bench["holdout"]))
    report = run_audit(str(bench["clean"]), data, AuditConfig(schemes=("fp32", "rtn-int4"), bootstrap=200))
    assert calls == [("fp32", 48), ("fp32", 48), ("rtn-int4", 48), ("rtn-int4", 48)]
    for variant in ("fp32", "rtn-int4"):
        for attack in ("min_k_5", "min_k_40", "min_k_pp_40", "min_k_pp_60", "loss", "zlib"):
            r = result(report, variant, "mink", f"auc_{attack}")
            assert 0.0 <= r["value"] <= 1.0 and r["n"] == 48


def test_the_test_run_audits_on_the_cpu_even_where_cuda_is_available(bench, tmp_path, capsys, monkeypatch):
    """Without --device the tests' commands run on the CPU (tests/conftest.py), whose numbers the golden
    report and the exact comparisons hold; on a GPU machine --device auto would pick CUDA."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine, which the report names
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "a GPU")
    code, stdout, err = run_cli(["audit", bench["memoriser"], "--forget", bench["forget"], "--holdout", bench["holdout"],
                                 "--limit", "4", "--schemes", "fp32", "--out", tmp_path, "--format", "json"], capsys)
    assert code in (0, 1, 4), err
    assert json.loads(stdout)["config"]["device"] == "cpu"
