"""--muse: a MUSE corpus directory, built here in MUSE's exact layout from the tiny benchmark, read as is.

The round trip checks that the report names every MUSE file with its sha256, that VerbMem probed exactly
the given prompts, that KnowMem prompted each split with its own ICL file, and that the raw text is cut
the way MUSE's baselines/dataset.py cuts it. Malformed directories are one-line errors (exit 2).
"""

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import schema_errors
from unlearn_audit.cli import main
from unlearn_audit.data import load_qa, load_texts, sha256_file
from unlearn_audit.muse_dir import CHUNK_TOKENS, read_muse_dir, split_raw

ICL_SHOTS = 4


def run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def _prompt_and_gt(text: str) -> dict:
    """MUSE's verbmem items are a passage's opening and its continuation; cut at a space past the middle."""
    cut = text.index(" ", len(text) // 2)
    return {"prompt": text[:cut], "gt": text[cut:]}


@pytest.fixture(scope="module")
def muse(bench, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("muse") / "news"
    texts = {name: list(load_texts(bench[name]).texts) for name in ("forget", "retain", "holdout")}
    qa = {name: [{"question": q, "answer": a} for q, a in load_qa(bench[f"{name}_qa"]).pairs] for name in ("forget", "retain")}
    files = {
        "raw/forget.txt": "\n\n".join(texts["forget"]),
        "raw/retain1.txt": "\n\n".join(texts["retain"][:24]),
        "raw/retain2.txt": "\n\n".join(texts["retain"][24:]),
        "raw/holdout.txt": "\n\n".join(texts["holdout"]),
        "verbmem/forget.json": json.dumps([_prompt_and_gt(t) for t in texts["forget"][:20]], indent=4),
        "knowmem/forget_qa.json": json.dumps(qa["forget"][ICL_SHOTS:], indent=4),
        "knowmem/forget_qa_icl.json": json.dumps(qa["forget"][:ICL_SHOTS], indent=4),
        "knowmem/retain_qa.json": json.dumps(qa["retain"][ICL_SHOTS:], indent=4),
        "knowmem/retain_qa_icl.json": json.dumps(qa["retain"][:ICL_SHOTS], indent=4),
        "privleak/forget.json": json.dumps(texts["forget"], indent=4),
        "privleak/retain.json": json.dumps(texts["retain"], indent=4),
        "privleak/holdout.json": json.dumps(texts["holdout"], indent=4),
    }
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content, encoding="utf-8")
    return root


def test_a_muse_directory_round_trips_through_the_audit(bench, muse, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run(["audit", bench["memoriser"], "--muse", muse, "--schemes", "fp32", "--out", out, "--format", "json"], capsys)
    assert code in (0, 1, 4), err
    report = json.loads((out / "report.json").read_text())
    assert schema_errors(report) == []
    inputs = report["inputs"]

    # Every set names the MUSE file it came from, with that file's sha256 and record count.
    expected = {"forget": ("privleak/forget.json", 48), "holdout": ("privleak/holdout.json", 48), "verbmem_forget": ("verbmem/forget.json", 20),
                "forget_qa": ("knowmem/forget_qa.json", 96 - ICL_SHOTS), "retain_qa": ("knowmem/retain_qa.json", 96 - ICL_SHOTS),
                "icl": ("knowmem/forget_qa_icl.json", ICL_SHOTS), "retain_icl": ("knowmem/retain_qa_icl.json", ICL_SHOTS)}
    for name, (rel, n) in expected.items():
        assert inputs[name] == {"path": str(muse / rel), "sha256": sha256_file(muse / rel), "n": n}, name
    # The two raw retain files are one set: a glob path, and the hash of their bytes in name order.
    both = (muse / "raw/retain1.txt").read_bytes() + (muse / "raw/retain2.txt").read_bytes()
    assert inputs["retain"]["path"] == str(muse / "raw" / "retain*.txt")
    assert inputs["retain"]["sha256"] == hashlib.sha256(both).hexdigest()
    assert inputs["holdout_qa"] is None
    source = report["config"]["data_source"]
    assert source["format"] == "MUSE" and source["path"] == str(muse)
    read = {"raw/forget.txt", "raw/holdout.txt", "raw/retain1.txt", "raw/retain2.txt", "verbmem/forget.json", "knowmem/forget_qa.json",
            "knowmem/forget_qa_icl.json", "knowmem/retain_qa.json", "knowmem/retain_qa_icl.json", "privleak/forget.json", "privleak/holdout.json"}
    assert set(source["files"]) == read  # privleak/retain.json feeds only MUSE's forget-retain AUCs: not read
    for rel, entry in source["files"].items():
        assert entry["sha256"] == sha256_file(muse / rel), rel
    assert "not scored" in source["files"]["raw/forget.txt"]["used_for"]

    # VerbMem probed exactly the given prompts, scored against the given gts.
    given = json.loads((muse / "verbmem/forget.json").read_text())
    vm = [s for s in report["samples"] if s["probe"] == "verbmem" and s["split"] == "forget" and s["model"] == "audited"]
    assert len(vm) == 1 and len(vm[0]["values"]) == len(given)
    for shown, item in zip(report["evidence"], given):
        assert shown["prompt"] == item["prompt"] and shown["reference"] == item["gt"]
    assert "verbmem/forget.json, as given" in report["config"]["verbmem_prompts"]
    fp32 = {(r["probe"], r["metric"]): r for r in report["results"] if r["variant"] == "fp32"}
    assert fp32["verbmem", "forget"]["value"] > 0.8  # the memoriser recites its forget set from MUSE-style prompts

    # KnowMem took its few-shot prefixes from the ICL files, so no retain QA pair was spent on them.
    assert report["config"]["knowmem_icl_source"] == (f"icl file {muse / 'knowmem/forget_qa_icl.json'}; "
                                                      f"retain split: icl file {muse / 'knowmem/retain_qa_icl.json'}")
    assert fp32["knowmem", "retain"]["n"] == 96 - ICL_SHOTS and fp32["knowmem", "forget"]["n"] == 96 - ICL_SHOTS
    assert fp32["mink", "auc"]["n"] == 48


def test_each_split_is_prompted_with_its_own_icl_and_the_holdout_baseline_matches_the_prompts(bench, muse):
    from unlearn_audit.models.loading import load_checkpoint
    from unlearn_audit.pipeline.types import AuditConfig
    from unlearn_audit.pipeline.workload import build_workload

    ckpt = load_checkpoint(bench["memoriser"])
    tok = ckpt.tokenizer
    data = read_muse_dir(muse).audit_data(tok)
    work = build_workload(tok, None, data, AuditConfig(schemes=("fp32",)), []).prepared
    decode = lambda ids: tok.decode(ids, skip_special_tokens=True)  # noqa: E731
    for split in ("forget", "retain"):
        icl = json.loads((muse / f"knowmem/{split}_qa_icl.json").read_text())
        qa = json.loads((muse / f"knowmem/{split}_qa.json").read_text())
        prefix = "".join(f"Question: {p['question']}\nAnswer: {p['answer']}\n\n" for p in icl)
        assert decode(work["knowmem"][split][0].prompt_ids) == prefix + f"Question: {qa[0]['question']}\nAnswer:"
    given = json.loads((muse / "verbmem/forget.json").read_text())
    assert [decode(i.prompt_ids) for i in work["verbmem"]["forget"]] == [g["prompt"] for g in given]
    # MUSE tokenizes each prompt with the tokenizer's special tokens (BOS where it adds one).
    assert [list(i.prompt_ids) for i in work["verbmem"]["forget"]] == [tok(g["prompt"], add_special_tokens=True)["input_ids"] for g in given]
    assert [i.max_new_tokens for i in work["verbmem"]["forget"]] == [len(tok(g["gt"], add_special_tokens=False)["input_ids"]) for g in given]
    bos = len(tok("a", add_special_tokens=True)["input_ids"]) - len(tok("a", add_special_tokens=False)["input_ids"])
    median = int(np.median([len(tok(g["prompt"], add_special_tokens=False)["input_ids"]) for g in given]))
    assert {len(i.prompt_ids) for i in work["verbmem"]["holdout"]} == {bos + median}  # the given prompts' median length


def test_raw_text_is_cut_into_muse_2047_token_chunks(bench, muse):
    from unlearn_audit.models.loading import load_checkpoint

    tok = load_checkpoint(bench["memoriser"]).tokenizer
    text = "\n\n".join(load_texts(bench["retain"]).texts * 8)  # long enough for several chunks
    ids = tok(text, add_special_tokens=False)["input_ids"]
    chunks = split_raw(tok, text)
    assert len(ids) > 2 * CHUNK_TOKENS and len(chunks) == math.ceil(len(ids) / CHUNK_TOKENS)
    assert "".join(chunks) == text  # consecutive and complete: nothing dropped, nothing repeated
    assert len(tok(chunks[-1], add_special_tokens=False)["input_ids"]) == len(ids) % CHUNK_TOKENS  # no top-up from the start
    # Without privleak/, the raw files are the membership sets, cut the same way.
    bare = muse.parent / "bare"
    shutil.copytree(muse, bare)
    shutil.rmtree(bare / "privleak")
    data = read_muse_dir(bare).audit_data(tok)
    assert data.forget.path == str(bare / "raw/forget.txt") and data.forget.texts == split_raw(tok, (bare / "raw/forget.txt").read_text())
    assert data.source["files"]["raw/forget.txt"]["used_for"] == "forget set (Min-K%)"  # VerbMem keeps the given prompts


def _one_line(code, err, *needles):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("break_it, needles", [
    (lambda d: (d / "raw/forget.txt").unlink(), ["raw/forget.txt", "not found"]),
    (lambda d: (d / "knowmem/forget_qa.json").write_text('[{"question": "q", "answer": "a"},\n'), ["knowmem/forget_qa.json:2:", "invalid JSON"]),
    (lambda d: (d / "verbmem/forget.json").write_text('[{"prompt": "p", "gt": "g"}, {"prompt": "p"}]'), ["verbmem/forget.json[1]: missing field 'gt'"]),
    (lambda d: (d / "knowmem/retain_qa_icl.json").write_text('{"question": "q", "answer": "a"}'), ["retain_qa_icl.json", "expected a JSON list"]),
    (lambda d: (d / "privleak/forget.json").write_text('["a", 3]'), ["privleak/forget.json[1]", "must be a string"]),
    (lambda d: (d / "privleak/holdout.json").unlink(), ["privleak/holdout.json", "both or neither"]),
    (lambda d: (d / "raw/holdout.txt").write_bytes(b"caf\xe9"), ["raw/holdout.txt", "not UTF-8"]),
])
def test_a_malformed_muse_directory_is_a_one_line_error(bench, muse, tmp_path, capsys, break_it, needles):
    broken = tmp_path / "news"
    shutil.copytree(muse, broken)
    break_it(broken)
    _one_line(*run(["audit", bench["memoriser"], "--muse", broken, "--schemes", "fp32"], capsys)[::2], *needles)


def test_muse_conflicts_with_the_set_options(bench, muse, tmp_path, capsys):
    _one_line(*run(["audit", bench["memoriser"], "--muse", muse, "--forget", bench["forget"]], capsys)[::2], "--muse reads every set", "drop --forget")
    _one_line(*run(["audit", bench["memoriser"], "--muse", tmp_path / "nowhere"], capsys)[::2], "MUSE directory not found")
    _one_line(*run(["audit", bench["memoriser"], "--muse", muse, "--limit", "5"], capsys)[::2], "--limit", "does not apply to --muse")
    _one_line(*run(["audit", bench["memoriser"], "--holdout", bench["holdout"]], capsys)[::2], "missing option '--forget'")


def _planted(muse: Path, tmp_path: Path) -> Path:
    d = tmp_path / "vendor" / "news"
    shutil.copytree(muse, d)
    return d


@pytest.mark.parametrize("rel, target", [
    ("privleak/forget.json", lambda outside: outside),  # an absolute link
    ("raw/forget.txt", lambda outside: Path("../..") / outside.name),  # a relative one, climbing out
])
def test_a_link_out_of_the_muse_directory_is_refused(bench, muse, tmp_path, capsys, rel, target):
    d = _planted(muse, tmp_path)
    outside = tmp_path / "vendor" / "outside.txt"
    outside.write_text('["a secret that must not reach the report"]', encoding="utf-8")
    (d / rel).unlink()
    (d / rel).symlink_to(target(outside))
    _one_line(*run(["audit", bench["memoriser"], "--muse", d, "--schemes", "fp32"], capsys)[::2], rel, "outside the MUSE directory")


def test_a_fifo_in_the_muse_directory_is_refused_without_hanging(muse, tmp_path):
    import os
    import threading

    from unlearn_audit.errors import InputError

    d = _planted(muse, tmp_path)
    fifo = d / "privleak" / "forget.json"
    fifo.unlink()
    os.mkfifo(fifo)
    errors = []

    def read():
        try:
            read_muse_dir(d)
        except InputError as exc:
            errors.append(str(exc))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # blocked opening the FIFO: give it a writer that closes at once, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(10)
        pytest.fail("reading a FIFO in the MUSE directory hung")
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert "privleak/forget.json" in errors[0] and "not a regular file" in errors[0]


def test_a_hugging_face_cache_snapshot_reads_through_its_blob_links(muse, tmp_path):
    """A snapshot holds links to ../../blobs/<sha>: they leave the MUSE directory but stay in the cache repo."""
    repo = tmp_path / "hub" / "datasets--muse-bench--MUSE-News"
    snapshot = repo / "snapshots" / "abc123"
    (repo / "blobs").mkdir(parents=True)
    for f in sorted(p for p in muse.rglob("*") if p.is_file()):
        rel = f.relative_to(muse)
        blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        blob.write_bytes(f.read_bytes())
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path(*[".."] * (len(rel.parts) + 1)) / "blobs" / blob.name)
    plain, cached = read_muse_dir(muse), read_muse_dir(snapshot)
    assert cached.raw_forget.text == plain.raw_forget.text and cached.raw_holdout.text == plain.raw_holdout.text
    assert [f.text for f in cached.raw_retain] == [f.text for f in plain.raw_retain]
    for name in ("verbmem", "forget_qa", "retain_qa", "forget_icl", "retain_icl"):
        assert getattr(cached, name).pairs == getattr(plain, name).pairs, name
        assert getattr(cached, name).sha256 == getattr(plain, name).sha256, name
    assert {k: v.texts for k, v in cached.privleak.items()} == {k: v.texts for k, v in plain.privleak.items()}
    assert {k: v["sha256"] for k, v in cached.manifest()["files"].items()} == {k: v["sha256"] for k, v in plain.manifest()["files"].items()}

    # The cache repo is the limit: a link out of it is refused like any other.
    outside = tmp_path / "hub" / "outside.json"
    outside.write_text('["a secret"]', encoding="utf-8")
    (snapshot / "privleak" / "holdout.json").unlink()
    (snapshot / "privleak" / "holdout.json").symlink_to(Path("../../../..") / outside.name)
    from unlearn_audit.errors import InputError

    with pytest.raises(InputError, match="privleak/holdout.json.*outside the MUSE directory"):
        read_muse_dir(snapshot)
