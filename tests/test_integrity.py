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

from unlearn_audit.audit import run_audit
from unlearn_audit.benchmark import tiny
from unlearn_audit.cli import main
from unlearn_audit.data import load_texts
from unlearn_audit.models.loading import write_checkpoint
from unlearn_audit.pipeline.types import AuditConfig, AuditData


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


def _sets(tmp_path):
    forget, hold = tmp_path / "f.jsonl", tmp_path / "h.jsonl"
    forget.write_text("".join(json.dumps({"text": f"forget document {i} " * 3}) + "\n" for i in range(12)))
    hold.write_text("".join(json.dumps({"text": f"holdout document {i} " * 3}) + "\n" for i in range(12)))
    return forget, hold


def test_a_full_disk_leaves_nothing_half_written(bench, tmp_path, capsys, monkeypatch):
    import errno

    forget, hold = _sets(tmp_path)
    out = tmp_path / "out"
    real_fsync = os.fsync
    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 2:  # the second of the three report files hits a full disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in ["audit", bench["clean"], "--forget", forget, "--holdout", hold, "--schemes", "fp32", "--out", out]])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "No space left on device" in err and "Traceback" not in err
    assert [p.name for p in out.iterdir() if p.name != ".cache"] == []  # no report, no view, no temp file


def test_tokenizer_of_the_original_must_match(bench, tmp_path, capsys):
    forget, hold = _sets(tmp_path)
    tok = tiny.train_tokenizer(["an entirely different corpus for another tokenizer"] * 4, vocab_size=300)
    other = write_checkpoint(tiny.tiny_llama(len(tok), hidden=32, layers=1), tok, tmp_path / "other")
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in ["audit", bench["clean"], "--forget", forget, "--holdout", hold, "--original", other]])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "tokenizer differs" in err and len(err.strip().splitlines()) == 1


def test_a_record_longer_than_the_context_is_truncated_and_said(bench, tmp_path, capsys):
    forget, hold = _sets(tmp_path)
    long = " ".join(f"word{i}" for i in range(3000))
    forget.write_text(forget.read_text() + json.dumps({"text": long}) + "\n")
    with pytest.raises(SystemExit):
        main([str(a) for a in ["audit", bench["clean"], "--forget", forget, "--holdout", hold, "--schemes", "fp32", "--out", tmp_path / "o"]])
    err = capsys.readouterr().err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert any("longer than the context" in n for n in report["config"]["notes"]) and "longer than the context" in err


def test_ctrl_c_during_an_audit_exits_130_without_a_report(bench, tmp_path):
    forget, hold = _sets(tmp_path)
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", "from unlearn_audit.cli import main; main()", "audit", str(bench["memoriser"]), "--forget", str(forget),
           "--holdout", str(hold), "--schemes", ",".join(["fp32"] + [f"rtn-int{b}" for b in (8, 6, 5, 4, 3, 2)]), "--out", str(out)]
    restore = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=restore)
    deadline = time.time() + 120
    while not list((out / ".cache").glob("*.json")) and time.time() < deadline:  # the first variant is done
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    err = proc.stderr.read()
    code = proc.wait(timeout=60)
    assert code == 130 and err.strip().endswith("unlearn-audit: interrupted"), (code, err[-2000:])
    assert not (out / "report.json").exists()


def test_a_data_set_read_from_a_pipe_is_hashed_as_read_not_reported_as_changed(bench, tmp_path, capsys):
    """``--forget <(cat forget.jsonl)``: the pipe cannot be re-read at the end, which is not a change."""
    import threading

    fifo = tmp_path / "forget.fifo"
    os.mkfifo(fifo)
    content = bench["forget"].read_bytes()

    def writer():
        with open(fifo, "wb") as fh:
            fh.write(content)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    args = ["audit", bench["memoriser"], "--forget", fifo, "--holdout", bench["holdout"], "--schemes", "fp32",
            "--out", tmp_path / "out", "--format", "json"]
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    thread.join(timeout=10)
    report = json.loads(capsys.readouterr().out)
    assert exc.value.code == 1 and report["verdict"] == "FAIL" and not report["findings"]
    assert report["inputs"]["forget"]["sha256"] == __import__("hashlib").sha256(content).hexdigest()
    assert any("not a regular file (a pipe)" in n for n in report["config"]["notes"])


def test_a_rename_failing_halfway_leaves_the_previous_report_set(tmp_path, monkeypatch):
    """The three report files are one unit: if the last rename fails, the earlier ones are rolled back."""
    from unlearn_audit.report.write import write_files_atomic

    names = ("samples.jsonl", "report.html", "report.json")
    write_files_atomic({tmp_path / n: f"old {n}" for n in names})
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if str(dst).endswith("report.json") and not str(src).endswith(".previous") and ".tmp" in str(src):
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        write_files_atomic({tmp_path / n: f"new {n}" for n in names})
    monkeypatch.setattr(os, "replace", real_replace)
    assert {n: (tmp_path / n).read_text() for n in names} == {n: f"old {n}" for n in names}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temporary or set-aside file left
    write_files_atomic({tmp_path / n: f"new {n}" for n in names})
    assert {n: (tmp_path / n).read_text() for n in names} == {n: f"new {n}" for n in names}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def test_a_directory_in_place_of_a_report_file_leaves_the_previous_set_and_nothing_else(tmp_path):
    """report.html replaced by a directory: the set stays all old (the write fails before any rename),
    with no file set aside and no temporary file left."""
    from unlearn_audit.report.write import write_files_atomic

    names = ("samples.jsonl", "report.html", "report.json")
    write_files_atomic({tmp_path / n: f"old {n}" for n in names})
    (tmp_path / "report.html").unlink()
    (tmp_path / "report.html").mkdir()
    (tmp_path / "report.html" / "keep.txt").write_text("the user's")
    with pytest.raises(IsADirectoryError):
        write_files_atomic({tmp_path / n: f"new {n}" for n in names})
    assert {n: (tmp_path / n).read_text() for n in ("samples.jsonl", "report.json")} == {n: f"old {n}" for n in ("samples.jsonl", "report.json")}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    assert [p.name for p in (tmp_path / "report.html").iterdir()] == ["keep.txt"]


def test_an_audit_whose_report_file_is_a_directory_is_refused_before_it_runs(bench, tmp_path, capsys):
    """The same through the CLI: exit 2 naming the directory, before any model is opened, the set all old."""
    from conftest import one_line_error, run

    out = tmp_path / "out"
    args = ["audit", bench["clean"], "--forget", bench["forget"], "--holdout", bench["holdout"], "--schemes", "fp32", "--out", out]
    code, _ = run(args, capsys)
    assert code in (0, 1, 4)
    before = {n: (out / n).read_bytes() for n in ("samples.jsonl", "report.json")}
    (out / "report.html").unlink()
    (out / "report.html").mkdir()
    one_line_error(*run(args, capsys), str(out / "report.html"), "directory")
    assert {n: (out / n).read_bytes() for n in before} == before
    assert sorted(p.name for p in out.iterdir() if p.name != ".cache") == ["report.html", "report.json", "samples.jsonl"]
    assert (out / "report.html").is_dir()
