"""The resume cache: a repeated audit with the same inputs calls no model and gives the same report;
--fresh (or any changed input) recomputes."""

import json

import pytest

from unlearn_audit.audit import run_audit
from unlearn_audit.data import load_qa, load_texts
from unlearn_audit.models.hf import HFModel
from unlearn_audit.pipeline.cache import VariantCache
from unlearn_audit.pipeline.types import AuditConfig, AuditData


@pytest.fixture
def counting(monkeypatch):
    calls = []
    for name in ("token_scores", "greedy"):
        real = getattr(HFModel, name)

        def wrapper(self, *args, _real=real, _name=name, **kwargs):
            calls.append((self.name, _name))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(HFModel, name, wrapper)
    return calls


def _stable(report):
    return {k: v for k, v in report.items() if k not in ("run", "timings")}


def test_a_repeated_audit_is_read_from_the_cache(bench, tmp_path, counting):
    data = AuditData(forget=load_texts(bench["forget"]), holdout=load_texts(bench["holdout"]), forget_qa=load_qa(bench["forget_qa"]))
    cfg = AuditConfig(schemes=("fp32", "rtn-int4"), bootstrap=200)
    args = (str(bench["clean"]), data, cfg)
    first = run_audit(*args, original_dir=str(bench["memoriser"]), cache=VariantCache(tmp_path / ".cache"))
    assert counting and first["run"]["resumed_variants"] == []
    counting.clear()
    second = run_audit(*args, original_dir=str(bench["memoriser"]), cache=VariantCache(tmp_path / ".cache"))
    assert counting == [] and second["run"]["resumed_variants"] == ["fp32", "rtn-int4"]
    assert _stable(second) == _stable(first)
    fresh = run_audit(*args, original_dir=str(bench["memoriser"]), cache=VariantCache(tmp_path / ".cache", fresh=True))
    assert counting and fresh["run"]["resumed_variants"] == [] and _stable(fresh) == _stable(first)
    counting.clear()
    other = AuditData(forget=data.forget, holdout=load_texts(bench["retain"]), forget_qa=data.forget_qa)  # a changed input
    run_audit(str(bench["clean"]), other, cfg, original_dir=str(bench["memoriser"]), cache=VariantCache(tmp_path / ".cache"))
    assert counting


def test_an_edited_cache_entry_is_recomputed_not_trusted(bench, tmp_path, counting, monkeypatch):
    """Whoever can write to --out must not be able to steer the verdict through the resume cache."""
    monkeypatch.setenv("UNLEARN_AUDIT_CACHE_SECRET_FILE", str(tmp_path / "secret"))
    data = AuditData(forget=load_texts(bench["forget"]), holdout=load_texts(bench["holdout"]))
    cfg = AuditConfig(schemes=("fp32",), bootstrap=200)
    first = run_audit(str(bench["memoriser"]), data, cfg, cache=VariantCache(tmp_path / ".cache"))
    assert first["verdict"] == "FAIL" and oct((tmp_path / "secret").stat().st_mode & 0o777) == "0o600"
    [entry] = (tmp_path / ".cache").glob("*.json")
    forged = json.loads(entry.read_text())
    body = json.loads(forged["content"])
    for o in body["outs"]:  # the memoriser now "forgets": forget scores copied from the holdout's
        twin = next((h for h in body["outs"] if (h["probe"], h["metric"]) == (o["probe"], o["metric"]) and h["split"] == "holdout"), None)
        if o["split"] == "forget" and twin is not None:
            o["values"] = twin["values"][: len(o["values"])]
    forged["content"] = json.dumps(body)
    entry.write_text(json.dumps(forged))
    counting.clear()
    cache = VariantCache(tmp_path / ".cache")
    second = run_audit(str(bench["memoriser"]), data, cfg, cache=cache)
    assert counting and second["run"]["resumed_variants"] == [] and second["verdict"] == "FAIL"
    assert second["results"] == first["results"]
    assert any("fails authentication" in n for n in second["config"]["notes"])
    counting.clear()  # the recomputed entry replaced the forged one, so a third run resumes again
    third = run_audit(str(bench["memoriser"]), data, cfg, cache=VariantCache(tmp_path / ".cache"))
    assert counting == [] and third["run"]["resumed_variants"] == ["fp32"]


def test_a_cache_that_is_not_a_directory_or_holds_junk_is_noted_not_a_crash(bench, tmp_path, capsys, monkeypatch):
    from unlearn_audit.cli import main
    from unlearn_audit.report.render import render

    monkeypatch.setenv("UNLEARN_AUDIT_CACHE_SECRET_FILE", str(tmp_path / "secret"))
    base = ["audit", bench["clean"], "--forget", bench["forget"], "--holdout", bench["holdout"], "--schemes", "fp32",
            "--format", "json"]
    out = tmp_path / "a"
    out.mkdir()
    (out / ".cache").write_text("not a directory")
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in [*base, "--out", out]])
    report = json.loads(capsys.readouterr().out)
    assert exc.value.code in (0, 1, 4) and any("resume cache not written" in n for n in report["config"]["notes"])
    good = tmp_path / "b"
    for _ in range(2):  # the second run resumes fp32 from the cache
        with pytest.raises(SystemExit):
            main([str(a) for a in [*base, "--out", good]])
        report = json.loads(capsys.readouterr().out)
    assert report["run"]["resumed_variants"] == ["fp32"]
    for fmt, needle in (("md", "Read from the resume cache"), ("html", "read from the resume cache"),
                        ("junit", 'name="resumed_variants" value="fp32"')):
        assert needle in render(report, fmt), fmt
    [entry] = (good / ".cache").glob("*.json")
    entry.write_text("{broken")
    with pytest.raises(SystemExit):
        main([str(a) for a in [*base, "--out", good]])
    report = json.loads(capsys.readouterr().out)
    assert report["run"]["resumed_variants"] == [] and any("malformed" in n for n in report["config"]["notes"])


def test_files_beside_the_weights_are_hashed_and_key_the_cache(bench, tmp_path, capsys, monkeypatch):
    """A changed tokenizer or generation config with the same weights is a different model to audit."""
    import shutil

    from unlearn_audit.cli import main
    from unlearn_audit.data import sha256_file

    monkeypatch.setenv("UNLEARN_AUDIT_CACHE_SECRET_FILE", str(tmp_path / "secret"))
    model = shutil.copytree(bench["memoriser"], tmp_path / "model")
    args = ["audit", model, "--forget", bench["forget"], "--holdout", bench["holdout"], "--schemes", "fp32",
            "--format", "json", "--out", tmp_path / "out"]
    reports = []
    for change in (None, None, "edit"):
        if change:
            config = json.loads((model / "generation_config.json").read_text())
            (model / "generation_config.json").write_text(json.dumps({**config, "temperature": 0.7}))
        with pytest.raises(SystemExit):
            main([str(a) for a in args])
        reports.append(json.loads(capsys.readouterr().out))
    side = reports[0]["inputs"]["model"]["side_files"]
    assert {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"} <= set(side)
    assert side["tokenizer.json"] == sha256_file(model / "tokenizer.json")
    assert reports[1]["run"]["resumed_variants"] == ["fp32"]  # nothing changed: resumed
    assert reports[2]["run"]["resumed_variants"] == []  # the generation config changed: recomputed
    assert reports[2]["inputs"]["model"]["side_files"]["generation_config.json"] != side["generation_config.json"]
