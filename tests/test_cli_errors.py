"""Bad input: one line on stderr naming the file (and line), exit 2, no traceback, no report written."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from conftest import one_line_error, run, schema_errors
from unlearn_audit.benchmark import tiny
from unlearn_audit.cli import main
from unlearn_audit.models.loading import write_checkpoint


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("untrained")
    tok = tiny.train_tokenizer(["a small corpus for a tokenizer, nothing more"] * 4, vocab_size=300)
    return write_checkpoint(tiny.tiny_llama(len(tok), hidden=32, layers=1), tok, root / "model")


@pytest.fixture
def sets(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"text": f"document number {i}"}) + "\n" for i in range(12)))
    return tmp_path, good


@pytest.mark.parametrize(
    "content, needles",
    [
        (None, ["missing.jsonl", "not found"]),
        ("", ["empty"]),
        ('{"text": "ok"}\n{"text": broken}\n', [":2:", "invalid JSON"]),
        ('{"text": "ok"}\n{"txt": "x"}\n', [":2:", "missing field 'text'"]),
        ('{"text": 5}\n', [":1:", "must be a string"]),
        ('{"text": "  "}\n', [":1:", "is empty"]),
        ('{"question": "q", "answer": "a"}\n', [":1:", "looks like a QA file"]),
        ('["a list"]\n', [":1:", "expected a JSON object"]),
        ("\ufeff" + '{"text": "ok"}\n', ["byte-order mark"]),
    ],
)
def test_bad_forget_file(untrained, sets, capsys, content, needles):
    root, good = sets
    bad = root / "missing.jsonl" if content is None else root / "bad.jsonl"
    if content is not None:
        bad.write_text(content, encoding="utf-8")
    out = root / "out"
    code, err = run(["audit", untrained, "--forget", bad, "--holdout", good, "--out", out], capsys)
    one_line_error(code, err, *needles)
    assert not out.exists()


def test_non_utf8_and_directory(untrained, sets, capsys):
    root, good = sets
    (root / "latin1.jsonl").write_bytes('{"text": "caf\xe9"}\n'.encode("latin-1"))
    one_line_error(*run(["audit", untrained, "--forget", root / "latin1.jsonl", "--holdout", good], capsys), "not UTF-8")
    one_line_error(*run(["audit", untrained, "--forget", root, "--holdout", good], capsys), "is a directory")


def test_bad_qa_file_names_the_line(untrained, sets, capsys):
    root, good = sets
    (root / "qa.jsonl").write_text('{"question": "q", "answer": "a"}\n{"question": "q"}\n')
    code, err = run(["audit", untrained, "--forget", good, "--holdout", good, "--forget-qa", root / "qa.jsonl"], capsys)
    one_line_error(code, err, "qa.jsonl:2:", "missing field 'answer'")


def test_model_directory_problems(untrained, sets, capsys, tmp_path):
    _, good = sets
    base = ["--forget", good, "--holdout", good]
    one_line_error(*run(["audit", tmp_path / "nope", *base], capsys), "directory not found")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(*run(["audit", empty, *base], capsys), "no config.json")
    (empty / "config.json").write_text("[1, 2]")  # valid JSON, but not a config
    one_line_error(*run(["audit", empty, *base], capsys), "config.json", "expected a JSON object")
    (empty / "config.json").write_text("[" * 100_000)
    one_line_error(*run(["audit", empty, *base], capsys), "config.json", "invalid JSON (nested too deeply)")

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((untrained / "config.json").read_text())
    torch.save({"w": torch.zeros(1)}, pickled / "pytorch_model.bin")
    one_line_error(*run(["audit", pickled, *base], capsys), "pickle weights", "pytorch_model.bin")
    (pickled / "pytorch_model.bin").unlink()
    one_line_error(*run(["audit", pickled, *base], capsys), "no .safetensors")

    remote = tmp_path / "remote"
    remote.mkdir()
    config = json.loads((untrained / "config.json").read_text())
    (remote / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModelForCausalLM": "x.Y"}}))
    one_line_error(*run(["audit", remote, *base], capsys), "custom code")

    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps({"model_type": "vit"}))
    one_line_error(*run(["audit", encoder, *base], capsys), "not a causal language model")


def test_usage_errors(untrained, sets, capsys):
    _, good = sets
    base = ["audit", untrained, "--forget", good, "--holdout", good]
    one_line_error(*run([*base, "--schemes", "rtn-int8-pcx"], capsys), "did you mean 'rtn-int8-pc'")
    one_line_error(*run([*base, "--format", "xml"], capsys), "--format")
    one_line_error(*run(["audit", untrained, "--forget", good], capsys), "--holdout")
    one_line_error(*run([*base, "--out", good], capsys), "must be a directory")


def test_quantize_writes_a_loadable_checkpoint(untrained, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from unlearn_audit.quantize.rtn import rtn_quantize

    out = tmp_path / "q"
    code, _ = run(["quantize", untrained, "--scheme", "rtn-int4", "--out", out], capsys)
    assert code == 0
    q = AutoModelForCausalLM.from_pretrained(out)
    src = AutoModelForCausalLM.from_pretrained(untrained)
    w = src.model.layers[0].mlp.up_proj.weight
    assert torch.equal(q.model.layers[0].mlp.up_proj.weight, rtn_quantize(w, 4, 128))
    code, err = run(["quantize", untrained, "--scheme", "rtn-int4", "--out", out], capsys)
    one_line_error(code, err, "already exists")


def test_quantize_takes_schemes_like_the_other_commands(untrained, tmp_path, capsys, monkeypatch):
    from transformers import AutoModelForCausalLM

    from unlearn_audit.quantize.rtn import rtn_quantize

    out = tmp_path / "many"
    code, _ = run(["quantize", untrained, "--schemes", "rtn-int8,rtn-int4", "-o", out], capsys)
    assert code == 0 and sorted(p.name for p in out.iterdir()) == ["rtn-int4", "rtn-int8"]
    w = AutoModelForCausalLM.from_pretrained(untrained).model.layers[0].mlp.up_proj.weight
    for bits in (8, 4):
        q = AutoModelForCausalLM.from_pretrained(out / f"rtn-int{bits}")
        assert torch.equal(q.model.layers[0].mlp.up_proj.weight, rtn_quantize(w, bits, 128))
    # a scheme that cannot run, after one was written, leaves no partial output behind
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    code, err = run(["quantize", untrained, "--schemes", "rtn-int8,bnb-fp4", "-o", tmp_path / "half"], capsys)
    assert code == 2 and "bnb-fp4" in err and not (tmp_path / "half").exists(), err


def test_schemes_lists_every_registered_scheme(capsys):
    from unlearn_audit.quantize.registry import SCHEMES

    with pytest.raises(SystemExit) as exc:
        main(["schemes"])
    assert exc.value.code == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == list(SCHEMES)
    assert all(len(line.split(maxsplit=1)) == 2 for line in out)


def test_library_backend_runs_the_twins_and_records_what_it_cannot_run(untrained, sets, capsys, tmp_path):
    root, good = sets
    code, err = run(["audit", untrained, "--forget", good, "--holdout", good, "--schemes", "fp32,bogus"], capsys)
    one_line_error(code, err, "unknown scheme 'bogus'")
    code, err = run(["audit", untrained, "--forget", good, "--holdout", good, "--backend", "lib"], capsys)
    one_line_error(code, err, "--backend must be 'reference' or 'library'")
    out = tmp_path / "lib"
    holdout = root / "holdout.jsonl"
    holdout.write_text("".join(json.dumps({"text": f"another text {i}"}) + "\n" for i in range(12)))
    code, _ = run(["audit", untrained, "--forget", good, "--holdout", holdout, "--schemes", "fp32,nf4,rtn-int4-asym,gptq-int4",
                   "--backend", "library", "--out", out, "--format", "json"], capsys)
    report = json.loads((out / "report.json").read_text())
    assert schema_errors(report) == []
    assert code in (0, 1, 4) and report["config"]["backend"] == "library"
    status = {v["name"]: v["status"] for v in report["variants"]}
    assert status == {"fp32": "built", "bnb-nf4": "built", "torchao-int4-asym": "built", "gptq-int4@library": "skipped"}
    reason = next(v["reason"] for v in report["variants"] if v["status"] == "skipped")
    assert "GPTQ" in reason and "CPU" in reason


def test_device_and_dtype_conflicts_are_one_line_errors(untrained, sets, capsys):
    import torch

    _, good = sets
    base = ["audit", untrained, "--forget", good, "--holdout", good]
    one_line_error(*run([*base, "--dtype", "float8", "--device", "cpu"], capsys), "--dtype must be auto, float32, bfloat16, float16")
    one_line_error(*run([*base, "--device", "tpu"], capsys), "--device must be cpu, cuda, cuda:N or auto")
    if not torch.cuda.is_available():
        one_line_error(*run([*base, "--device", "cuda"], capsys), "no CUDA device")
        one_line_error(*run([*base, "--device", "cuda:1"], capsys), "--device cuda:1", "no CUDA device")


def test_overlapping_sets_are_refused_and_duplicates_noted(untrained, sets, capsys, tmp_path):
    root, good = sets
    holdout = root / "holdout.jsonl"
    holdout.write_text("".join(json.dumps({"text": f"other document {i}"}) + "\n" for i in range(11)) + json.dumps({"text": "document number 3"}) + "\n")
    one_line_error(*run(["audit", untrained, "--forget", good, "--holdout", holdout], capsys), "1 text(s) also appear in the forget set")
    dup = root / "dup.jsonl"
    dup.write_text(good.read_text() + json.dumps({"text": "document number 0"}) + "\n")
    holdout.write_text("".join(json.dumps({"text": f"other document {i}"}) + "\n" for i in range(12)))
    code, err = run(["audit", untrained, "--forget", dup, "--holdout", holdout, "--schemes", "fp32", "--out", tmp_path / "o"], capsys)
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert "note: forget: 1 duplicate record(s)" in err
    assert any("1 duplicate record(s)" in n for n in report["config"]["notes"])


def test_nan_weights_are_a_finding_not_a_verdict(untrained, sets, capsys, tmp_path):
    from unlearn_audit.models.loading import load_checkpoint

    _, good = sets
    ckpt = load_checkpoint(untrained)
    with torch.no_grad():
        ckpt.model.model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")
    broken = write_checkpoint(ckpt.model, ckpt.tokenizer, tmp_path / "nan")
    other = tmp_path / "holdout.jsonl"
    other.write_text("".join(json.dumps({"text": f"another text {i}"}) + "\n" for i in range(12)))
    code, err = run(["audit", broken, "--forget", good, "--holdout", other, "--schemes", "fp32", "--out", tmp_path / "o"], capsys)
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert code == 4 and report["verdict"] == "INCONCLUSIVE"
    assert "NaN or Inf" in report["verdict_reason"] and "mlp.up_proj.weight" in report["verdict_reason"]


def test_reference_auc_is_recorded_and_checked(untrained, sets, capsys, tmp_path):
    root, good = sets
    holdout = root / "holdout.jsonl"
    holdout.write_text("".join(json.dumps({"text": f"another text {i}"}) + "\n" for i in range(12)))
    base = ["audit", untrained, "--forget", good, "--holdout", holdout, "--schemes", "fp32"]
    one_line_error(*run([*base, "--reference-auc", "1.5"], capsys), "strictly between 0 and 1")
    one_line_error(*run([*base, "--reference-auc", "0.5", "--reference", untrained], capsys), "conflict")
    run([*base, "--reference-auc", "0.4772", "--out", tmp_path / "o"], capsys)
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    ref = report["config"]["privleak_reference"]
    assert ref["auc"] == 0.4772 and ref["source"].startswith("--reference-auc")
    auc = next(r for r in report["results"] if r["variant"] == "fp32" and r["metric"] == "auc")["value"]
    leak = next(r for r in report["results"] if r["variant"] == "fp32" and r["metric"] == "privleak")["value"]
    assert leak == pytest.approx((auc - 0.4772) / 0.4772 * 100)


def test_a_finding_survives_rejudging():
    from unlearn_audit.policy import Policy
    from unlearn_audit.report.load import rejudge

    report = {"verdict": "INCONCLUSIVE", "verdict_reason": "x", "variants": [], "results": [], "checks": [],
              "config": {"policy": {}}, "findings": ["input changed during the audit: f.jsonl"]}
    out = rejudge(report, Policy(min_documents=1), "a lenient policy")
    assert out["verdict"] == "INCONCLUSIVE" and out["verdict_reason"].startswith("input changed")
    report["findings"] = []
    assert rejudge(report, Policy(min_documents=1), "a lenient policy")["verdict"] == "INCONCLUSIVE"  # nothing judged


def test_the_new_flags_refuse_wrong_values(untrained, sets, capsys, tmp_path):
    _, good = sets
    base = ["audit", untrained, "--forget", good, "--holdout", good]
    one_line_error(*run([*base, "--fail-on", "sometimes"], capsys), "Invalid value for '--fail-on'", "'fail', 'inconclusive'")
    one_line_error(*run(["demo", "--out", tmp_path / "d", "--sure-lr", "0"], capsys), "--sure-lr must be positive")
    one_line_error(*run(["demo", "--out", tmp_path / "d", "--saliency-percentile", "100"], capsys), "--saliency-percentile")
    one_line_error(*run(["demo", "--out", tmp_path / "d", "--recipe", "small"], capsys), "--recipe must be auto, full or lean")
    one_line_error(*run(["report", good, "--format", "docx"], capsys), "Invalid value for '--format'", "'html', 'md', 'junit', 'json', 'pdf'")
    one_line_error(*run(["report", good, "--format", "pdf", "-o", tmp_path / "r.pdf"], capsys), "invalid JSON")  # no engine advisory before it
    assert not (tmp_path / "r.pdf").exists()
    (tmp_path / "afile").write_text("x")
    one_line_error(*run(["diff", untrained, untrained, "--out", tmp_path / "afile"], capsys), "--out must be a directory")
    one_line_error(*run(["quantize", untrained, "--scheme", "gptq-int4", "--out", tmp_path / "q", "--calibration", tmp_path / "none.jsonl"], capsys),
                   "not found")
    assert not (tmp_path / "d").exists() and not (tmp_path / "q").exists()


def _pickle_checkpoint(source, dest, state_dict):
    """A Hugging Face directory whose only weights are a pickle ``pytorch_model.bin`` (transformers 5
    always saves safetensors, so the pickle is written with torch.save, as older tools did)."""
    dest.mkdir()
    for f in source.iterdir():
        if f.suffix != ".safetensors":
            (dest / f.name).write_bytes(f.read_bytes())
    torch.save(state_dict, dest / "pytorch_model.bin")
    return dest


class _WritesMarker:
    """A pickle payload: unpickling it calls exec, which writes the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pickle code ran')",))


@pytest.mark.parametrize("form", ["torch.save", "raw pickle"])
def test_a_malicious_pickle_never_runs_with_or_without_allow_pickle(untrained, sets, capsys, tmp_path, form):
    import pickle

    from transformers import AutoModelForCausalLM

    root, good = sets
    marker = tmp_path / "marker"
    state = AutoModelForCausalLM.from_pretrained(untrained).state_dict()
    state["lm_head.weight"] = _WritesMarker(marker)
    evil = _pickle_checkpoint(untrained, tmp_path / "evil", {})
    with open(evil / "pytorch_model.bin", "wb") as fh:
        if form == "torch.save":
            torch.save(state, fh)
        else:
            pickle.dump(state, fh, protocol=4)
    out = tmp_path / "out"
    base = ["audit", evil, "--forget", good, "--holdout", good, "--schemes", "fp32", "--out", out]
    one_line_error(*run(base, capsys), "only pickle weights", "pytorch_model.bin", "--allow-pickle")
    one_line_error(*run([*base, "--allow-pickle"], capsys), "refusing the pickle weights")
    if form == "torch.save":  # torch's unpickler names what it refused
        one_line_error(*run([*base, "--allow-pickle"], capsys), "it references exec")
    for command in (["quantize", evil, "--scheme", "rtn-int4", "--out", tmp_path / "q", "--allow-pickle"],
                    ["unlearn", evil, "--forget", good, "--retain", good, "--out", tmp_path / "u", "--allow-pickle"]):
        one_line_error(*run(command, capsys), "refusing the pickle weights")
    code, err = run(["diff", evil, evil], capsys)  # diff reads safetensors only and offers no --allow-pickle
    one_line_error(code, err, "only pickle weights")
    assert "--allow-pickle" not in err
    assert not marker.exists()
    assert not out.exists() and not (tmp_path / "q").exists() and not (tmp_path / "u").exists()


def test_a_pickle_checkpoint_audits_with_allow_pickle_and_its_hash_is_recorded(untrained, sets, capsys, tmp_path):
    import hashlib

    from transformers import AutoModelForCausalLM

    root, good = sets
    holdout = root / "holdout.jsonl"
    holdout.write_text("".join(json.dumps({"text": f"another text {i}"}) + "\n" for i in range(12)))
    pickled = _pickle_checkpoint(untrained, tmp_path / "pickled", AutoModelForCausalLM.from_pretrained(untrained).state_dict())
    reports = {}
    for name, model, extra in (("pickle", pickled, ["--allow-pickle"]), ("safetensors", untrained, [])):
        code, err = run(["audit", model, "--forget", good, "--holdout", holdout, "--schemes", "fp32,rtn-int4", "--out", tmp_path / name,
                         "--fresh", *extra], capsys)
        assert code in (0, 1, 4), err
        reports[name] = json.loads((tmp_path / name / "report.json").read_text())
    report = reports["pickle"]
    assert schema_errors(report) == []
    digest = hashlib.sha256((pickled / "pytorch_model.bin").read_bytes()).hexdigest()
    assert report["inputs"]["model"]["files"] == {"pytorch_model.bin": digest}
    assert report["inputs"]["model"]["weights_format"].startswith("pickle (torch.load weights_only=True)")
    assert any("pickle weights (pytorch_model.bin)" in n and "--allow-pickle" in n for n in report["config"]["notes"])
    assert "weights_format" not in reports["safetensors"]["inputs"]["model"]
    assert report["results"] == reports["safetensors"]["results"]  # the same weights give the same audit


@pytest.mark.parametrize("where", ["under a file", "under /proc"])
def test_an_unwritable_out_is_refused_before_any_work(untrained, sets, capsys, tmp_path, where):
    # Tests run as root, for whom permission bits mean nothing; these two places refuse even root.
    _, good = sets
    blocker = tmp_path / "file.txt"
    blocker.write_text("a regular file\n")
    out = blocker / "sub" if where == "under a file" else Path("/proc/unlearn-audit-out")
    code, err = run(["audit", untrained, "--forget", good, "--holdout", good, "--out", out], capsys)
    one_line_error(code, err, str(out), "--out")
    assert blocker.read_text() == "a regular file\n" and not out.exists()
    code, err = run(["diff", untrained, untrained, "--out", out], capsys)
    one_line_error(code, err, str(out), "--out")
    # A writable --out is checked by writing a probe file, which is removed, and no directory is made early.
    before = sorted(tmp_path.iterdir())
    code, err = run(["audit", tmp_path / "no-model", "--forget", good, "--holdout", good, "--out", tmp_path / "new" / "deeper"], capsys)
    one_line_error(code, err, "directory not found")
    assert sorted(tmp_path.iterdir()) == before


def test_paths_in_the_report_are_written_as_given(untrained, sets, capsys, tmp_path, monkeypatch):
    root, good = sets
    monkeypatch.chdir(root)
    tilde = root / "~"  # a directory literally named "~": the tool must not expand it to $HOME
    tilde.mkdir()
    (tilde / "holdout.jsonl").write_text("".join(json.dumps({"text": f"another text {i}"}) + "\n" for i in range(12)))
    model = os.path.relpath(untrained, root)
    code, err = run(["audit", model, "--forget", "good.jsonl", "--holdout", "~/holdout.jsonl", "--schemes", "fp32", "--out", "out"], capsys)
    assert code in (0, 1, 4), err
    report = json.loads((root / "out" / "report.json").read_text())
    assert report["inputs"]["model"]["path"] == model and not os.path.isabs(model)
    assert report["inputs"]["forget"]["path"] == "good.jsonl"
    assert report["inputs"]["holdout"]["path"] == "~/holdout.jsonl"
    assert str(root) not in json.dumps({k: v for k, v in report.items() if k != "run"})


def test_common_flags_take_their_defaults_from_the_environment(untrained, sets, capsys, monkeypatch):
    _, good = sets
    base = ["audit", untrained, "--forget", good, "--holdout", good]
    monkeypatch.setenv("UNLEARN_AUDIT_SCHEMES", "fp32,bogus")
    one_line_error(*run(base, capsys), "unknown scheme 'bogus'")
    one_line_error(*run([*base, "--schemes", "fp32", "--seed", "-1"], capsys), "--seed must be between 0 and")
    monkeypatch.setenv("UNLEARN_AUDIT_DEVICE", "tpu")
    one_line_error(*run([*base, "--schemes", "fp32"], capsys), "--device must be")
