"""Hardening of the command line: odd paths, outputs that would overwrite inputs, tampered reports,
short-context models, one-line warnings and leftover merged copies."""

import json
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
import torch

from conftest import one_line_error, run
from unlearn_audit.benchmark import tiny
from unlearn_audit.cli import main
from unlearn_audit.models.loading import write_checkpoint

WEIRD = "a[/]b[bold]"


def audit_args(bench, model, *extra):
    return ["audit", model, "--forget", bench["forget"], "--holdout", bench["holdout"], "--schemes", "fp32", *extra]


@pytest.fixture(scope="module")
def weird_audit(bench, tmp_path_factory):
    """One fp32 audit of the clean model whose --out lies under a directory named with rich markup."""
    out = tmp_path_factory.mktemp("weird") / WEIRD / "out"
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in audit_args(bench, bench["clean"], "--out", out)])
    return exc.value.code, out


# 1. rich markup in paths

def test_markup_in_the_out_path_keeps_the_verdicts_exit_code(weird_audit):
    code, out = weird_audit
    assert code in (0, 1, 4)
    assert (out / "report.json").is_file() and (out / "report.html").is_file()


def test_markup_in_the_report_output_path(weird_audit, tmp_path, capsys):
    code, out = weird_audit
    target = tmp_path / WEIRD / "r[bold].md"
    rcode, err = run(["report", out / "report.json", "--format", "md", "-o", target], capsys)
    assert rcode == code, err
    assert target.is_file() and str(target) in err


# 2. outputs that would overwrite inputs

def test_report_output_equal_to_its_input_is_refused(weird_audit, tmp_path, capsys):
    _, out = weird_audit
    copy = tmp_path / "report.json"
    shutil.copy(out / "report.json", copy)
    before = copy.read_bytes()
    one_line_error(*run(["report", copy, "-o", copy], capsys), "report.json", "input")
    one_line_error(*run(["report", copy, "-o", tmp_path / "." / "report.json"], capsys), "input")
    assert copy.read_bytes() == before


@pytest.mark.parametrize("inside", [".", "sub"])
def test_diff_out_inside_a_compared_checkpoint_is_refused(bench, tmp_path, capsys, inside):
    a, b = tmp_path / "A", tmp_path / "B"
    shutil.copytree(bench["clean"], a)
    shutil.copytree(bench["memoriser"], b)
    before = {p.name: p.read_bytes() for p in b.iterdir()}
    one_line_error(*run(["diff", a, b, "--schemes", "rtn-int8", "--out", b / inside], capsys), "--out", str(b))
    assert {p.name: p.read_bytes() for p in b.iterdir()} == before


def test_audit_out_equal_to_an_input_is_refused(bench, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(bench["clean"], model)
    before = sorted(p.name for p in model.iterdir())
    one_line_error(*run(audit_args(bench, model, "--out", model), capsys), "--out", "MODEL_DIR")
    one_line_error(*run(audit_args(bench, model, "--out", tmp_path / "." / "model"), capsys), "MODEL_DIR")
    one_line_error(*run(audit_args(bench, model, "--reference", bench["clean"], "--out", bench["clean"]), capsys), "--reference")
    one_line_error(*run(audit_args(bench, model, "--out", bench["forget"]), capsys), "--out")
    assert sorted(p.name for p in model.iterdir()) == before


@pytest.fixture
def loop(tmp_path):
    """A loop of symbolic links, a -> b -> a."""
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    return tmp_path / "a"


@pytest.mark.parametrize("command, flag", [
    (lambda bench, loop: audit_args(bench, loop), "MODEL_DIR"),
    (lambda bench, loop: audit_args(bench, bench["clean"], "--reference", loop), "--reference"),
    (lambda bench, loop: ["audit", bench["clean"], "--forget", loop, "--holdout", bench["holdout"]], "--forget"),
    (lambda bench, loop: audit_args(bench, bench["clean"], "--muse", loop), "--muse"),
    (lambda bench, loop: audit_args(bench, bench["clean"], "--out", loop), "--out"),
    (lambda bench, loop: audit_args(bench, bench["clean"], "--out", loop / "inside"), "--out"),
    (lambda bench, loop: audit_args(bench, bench["clean"], "--cache-dir", loop), "--cache-dir"),
    (lambda bench, loop: ["report", bench["forget"], "-o", loop], "--output"),
    (lambda bench, loop: ["diff", bench["clean"], loop], "UNLEARNED_DIR"),
    (lambda bench, loop: ["quantize", loop, "--schemes", "rtn-int8", "-o", loop.parent / "q"], "MODEL_DIR"),
    (lambda bench, loop: ["quantize", bench["clean"], "--schemes", "rtn-int8", "-o", loop], "--out"),
    (lambda bench, loop: ["unlearn", bench["clean"], "--forget", bench["forget"], "--retain", bench["retain"], "-o", loop], "--out"),
], ids=["audit-model", "audit-reference", "audit-forget", "audit-muse", "audit-out", "audit-out-inside", "audit-cache-dir",
        "report-output", "diff-model", "quantize-model", "quantize-out", "unlearn-out"])
def test_a_loop_of_symbolic_links_is_a_one_line_error_wherever_a_path_goes(bench, loop, capsys, command, flag):
    one_line_error(*run(command(bench, loop), capsys), str(loop), flag, "loop of symbolic links")


# 3. tampered report.json

def _drop(key):
    return lambda r: r.pop(key)


def _set(path, value):
    def change(r):
        node = r
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return change


@pytest.mark.parametrize("tamper, needle", [
    (_drop("results"), "results"),
    (_set(["results", 0, "value"], "high"), "results[0].value"),
    (_set(["checks"], {"not": "a list"}), "checks"),
    (lambda r: r["variants"][0].pop("name"), "variants[0]"),
    (_set(["config", "policy"], "strict"), "config.policy"),
    (_set(["run"], []), "run"),
])
@pytest.mark.parametrize("rejudge", [False, True])
def test_a_tampered_report_is_one_line_naming_the_field(weird_audit, tmp_path, capsys, tamper, needle, rejudge):
    _, out = weird_audit
    report = json.loads((out / "report.json").read_text())
    tamper(report)
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    policy = []
    if rejudge:
        (tmp_path / "policy.toml").write_text("")
        policy = ["--policy", tmp_path / "policy.toml"]
    one_line_error(*run(["report", path, "--format", "md", *policy], capsys), str(path), needle)


def test_the_fallback_check_without_jsonschema(weird_audit, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "jsonschema", None)  # import jsonschema now raises ImportError
    _, out = weird_audit
    report = json.loads((out / "report.json").read_text())
    report["results"][0]["value"] = "high"
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    one_line_error(*run(["report", path, "--format", "md"], capsys), "results[0].value")
    path.write_text((out / "report.json").read_text())
    code, err = run(["report", path, "--format", "md"], capsys)
    assert code in (0, 1, 4), err


# 4. a GPT-2 model whose context is shorter than prompt + generation

def test_a_gpt2_with_a_short_context_is_audited(bench, tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    texts = [json.loads(line)["text"] for name in ("forget", "holdout") for line in Path(bench[name]).read_text().splitlines()]
    tok = tiny.train_tokenizer(texts, vocab_size=300)
    torch.manual_seed(0)
    config = GPT2Config(n_positions=64, n_embd=32, n_layer=1, n_head=2, vocab_size=len(tok),
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model_dir = write_checkpoint(GPT2LMHeadModel(config), tok, tmp_path / "gpt2")
    code, err = run(audit_args(bench, model_dir, "--out", tmp_path / "out"), capsys)
    assert code in (0, 1, 4), err
    assert (tmp_path / "out" / "report.json").is_file()


def test_greedy_caps_each_rows_budget_at_the_context(bench):
    from transformers import GPT2Config, GPT2LMHeadModel

    from unlearn_audit.models.hf import HFModel

    tok = tiny.train_tokenizer(["a small corpus for a tokenizer, nothing more"] * 4, vocab_size=300)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_positions=16, n_embd=32, n_layer=1, n_head=2, vocab_size=len(tok)))
    hf = HFModel("gpt2", model, tok, batch_size=4)
    prompts = [[5] * 4, [6] * 12, [7] * 16, [8] * 20]
    out = hf.greedy(prompts, [30, 30, 30, 30])
    assert len(out[0]) <= 12 and len(out[1]) <= 4 and out[2] == [] and out[3] == []


# 5. warnings are one line each

def test_warnings_become_one_prefixed_line(bench, tmp_path, capsys, monkeypatch):
    from unlearn_audit.probes import mink

    real = mink.min_k

    def noisy(logprobs, k):
        warnings.warn("line1\nline2", RuntimeWarning)
        return real(logprobs, k)

    monkeypatch.setattr(mink, "min_k", noisy)
    before = warnings.showwarning
    code, err = run(audit_args(bench, bench["clean"], "--out", tmp_path / "out", "--fresh"), capsys)
    assert code in (0, 1, 4), err
    lines = [line for line in err.splitlines() if line.strip()]
    assert any(line.startswith("unlearn-audit: warning: ") and "line1 line2" in line for line in lines), err
    assert all(line.startswith("unlearn-audit: ") for line in lines), err
    assert warnings.showwarning is before  # main() puts the process's hook back


# 6. leftover merged copies of a killed run

def test_merge_removes_leftovers_of_dead_runs_only(bench, tmp_path, monkeypatch):
    peft = pytest.importorskip("peft")
    import tempfile

    from unlearn_audit.models.adapter import merge_adapter
    from unlearn_audit.models.loading import load_checkpoint

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead_pid = subprocess.Popen(["true"])
    dead_pid.wait()  # reaped: the pid no longer runs
    dead, live = tmp_path / "unlearn-audit-merged-dead", tmp_path / "unlearn-audit-merged-live"
    for d, pid in ((dead, dead_pid.pid), (live, os.getpid())):
        (d / "model").mkdir(parents=True)
        (d / "model" / "model.safetensors").write_bytes(b"x" * 100)
        (d / "pid").write_text(str(pid))
    other = tmp_path / "someone-elses-dir"
    other.mkdir()

    torch.manual_seed(0)
    model = peft.get_peft_model(load_checkpoint(bench["clean"]).model,
                                peft.LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj"], init_lora_weights=False))
    model.save_pretrained(tmp_path / "adapter")
    merged = merge_adapter(load_checkpoint(bench["clean"]), tmp_path / "adapter")
    made = Path(merged.path).parent
    assert made.parent == tmp_path and made.name.startswith("unlearn-audit-merged-")
    assert (made / "pid").read_text().split()[0] == str(os.getpid())
    assert not dead.exists() and live.is_dir() and other.is_dir()


def test_markup_in_reasons_and_names_is_printed_as_text(audited):
    """The console table prints reasons and names from the report: a "[/]" there is text, not markup."""
    import io

    from rich.console import Console

    from unlearn_audit.report.console import render

    report = json.loads((audited / "report.json").read_text())
    payload = "bad [/] close [bold]tag"
    report["verdict_reason"] = payload
    report["checks"][0] = {**report["checks"][0], "status": "FAIL", "reason": payload}
    report["variants"].append({"name": "x[/]", "scheme": "x", "bits": 4, "status": "skipped", "reason": payload})
    buf = io.StringIO()
    render(report, Console(file=buf, width=400))
    assert buf.getvalue().count(payload) >= 3 and "x[/]" in buf.getvalue()
