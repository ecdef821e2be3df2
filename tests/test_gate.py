"""What a release gate relies on: exit codes it can branch on, and a default gate that never weakens in
silence when one of its schemes cannot run here."""

import json
import sys

import pytest

from unlearn_audit.cli import main
from unlearn_audit.policy import INCONCLUSIVE, PASS, Policy, Variant, judge
from unlearn_audit.probes.base import Result


def run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def _passing(variant: str) -> list[Result]:
    """Results on which every check of ``variant`` passes: a VerbMem gap and a PrivLeak near zero, tight."""
    kw = dict(variant=variant, n=40, p_value=None)
    return [Result(probe="verbmem", metric="forget_minus_holdout", value=0.0, ci_low=-0.01, ci_high=0.01, **kw),
            Result(probe="mink", metric="privleak", value=0.0, ci_low=-1.0, ci_high=1.0, **kw)]


def test_a_default_scheme_that_cannot_run_caps_the_verdict_and_a_chosen_list_does_not():
    variants = [Variant("fp32", None, "built"), Variant("bnb-fp4", 4, "skipped", "bitsandbytes is not installed (pip install 'unlearn-audit[bnb]')")]
    results = _passing("fp32")
    _, verdict, reason = judge(results, variants, Policy(), default_schemes=True)
    assert verdict == INCONCLUSIVE and "bnb-fp4" in reason and "pip install 'unlearn-audit[bnb]'" in reason
    assert judge(results, variants, Policy(), default_schemes=False)[1] == PASS  # --schemes chose the list
    assert judge(results, variants, Policy(required_schemes=("fp32",)), default_schemes=True)[1] == PASS  # the policy decides


def test_an_audit_without_bitsandbytes_is_inconclusive_exit_4_and_a_policy_can_accept_it(bench, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as on a machine without the bnb extra
    out = tmp_path / "r"
    code, _, err = run(["audit", bench["clean"], "--forget", bench["forget"], "--holdout", bench["holdout"], "-o", out, "--quiet"], capsys)
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["schemes_source"] == "default"
    assert [v["name"] for v in report["variants"] if v["status"] == "skipped"] == ["bnb-fp4"]
    assert report["verdict"] == "INCONCLUSIVE" and code == 4, report["verdict_reason"]
    assert "bnb-fp4" in report["verdict_reason"] and "unlearn-audit[bnb]" in report["verdict_reason"]
    assert err.splitlines()[-1].startswith("unlearn-audit: verdict INCONCLUSIVE (exit 4), report in")
    # Re-judged from the JSON alone: still capped under the default policy, PASS under one that names its schemes.
    code, _, _ = run(["report", out / "report.json", "--format", "json"], capsys)
    assert code == 4
    policy = tmp_path / "p.toml"
    policy.write_text('required_schemes = ["fp32", "rtn-int8", "rtn-int4"]\n')
    code, text, _ = run(["report", out / "report.json", "--format", "json", "--policy", policy], capsys)
    assert json.loads(text)["verdict"] == "PASS" and code == 0
    code, _, _ = run(["report", out / "report.json", "--fail-on", "fail"], capsys)
    assert code == 0  # --fail-on fail: INCONCLUSIVE does not fail the gate


@pytest.mark.parametrize("fmt,check", [
    ("markdown", lambda s: s.startswith("### unlearn-audit: **FAIL**")),
    ("junit", lambda s: s.lstrip().startswith("<?xml") and "<testsuites" in s),
])
def test_audit_prints_the_ci_views_on_stdout(bench, tmp_path, capsys, fmt, check):
    code, stdout, err = run(["audit", bench["memoriser"], "--forget", bench["forget"], "--holdout", bench["holdout"],
                             "--schemes", "fp32", "--format", fmt], capsys)
    assert code == 1 and check(stdout), stdout[:200]
    # no --out: the report set lands in ./unlearn-audit-report, and stderr says so
    assert (tmp_path.cwd() / "unlearn-audit-report" / "report.json").is_file()
    assert "unlearn-audit-report" in err


def test_a_log_shows_each_stage_and_variant_on_its_own_line(bench, tmp_path, capsys):
    code, _, err = run(["audit", bench["clean"], "--forget", bench["forget"], "--holdout", bench["holdout"],
                        "--schemes", "fp32,rtn-int8", "-o", tmp_path / "r"], capsys)
    lines = err.splitlines()
    assert any("opening the checkpoints" in line for line in lines)
    variant_lines = [line for line in lines if "done, stage" in line]
    assert [line.split("] ")[1].split(":")[0] for line in variant_lines] == ["fp32", "rtn-int8"], lines
    assert "(1/2 done" in variant_lines[1] and "\x1b" not in err
    code, _, quiet = run(["audit", bench["clean"], "--forget", bench["forget"], "--holdout", bench["holdout"],
                          "--schemes", "fp32,rtn-int8", "-o", tmp_path / "r", "--quiet"], capsys)
    assert not any("done, stage" in line or line.startswith("unlearn-audit: [") for line in quiet.splitlines())
