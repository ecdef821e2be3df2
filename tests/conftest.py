"""Shared fixtures: a tiny benchmark, a tokenizer trained on it, and two tiny models built for real.

``memoriser`` was fine-tuned on forget + retain until it recites the forget set; ``clean`` saw only
the retain set. Both are trained from scratch in seconds, once per test session.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from unlearn_audit.benchmark import bios, tiny, training
from unlearn_audit.models.batch import encode
from unlearn_audit.models.loading import write_checkpoint

N_PER_SET = 48


@pytest.fixture(scope="session")
def bench(tmp_path_factory) -> dict[str, Path]:
    torch.set_num_threads(1)  # tiny models gain nothing from threads; oversubscribed OpenMP stalls
    root = tmp_path_factory.mktemp("bench")
    split = bios.generate(N_PER_SET, N_PER_SET, N_PER_SET, qa_per_person=2, seed=1)
    files = bios.write_split(split, root)
    tok = tiny.train_tokenizer(split.texts["retain"] + split.texts["forget"] + split.texts["holdout"])

    def train(texts: list[str], name: str) -> Path:
        model = tiny.tiny_llama(len(tok), seed=0)
        qa_text = [f"Question: {q}\nAnswer: {a}" for s in ("retain",) for q, a in split.qa[s]]
        seqs = encode(tok, texts + qa_text)
        training.finetune(model, seqs, tok.pad_token_id, lr=3e-3, epochs=30, batch_size=16, warmup=10)
        return write_checkpoint(model, tok, root / name)

    files["memoriser"] = train(split.texts["forget"] + split.texts["retain"], "memoriser")
    files["clean"] = train(split.texts["retain"], "clean")
    return files


@pytest.fixture(scope="session")
def audited(bench, tmp_path_factory) -> Path:
    """One full audit of the memoriser (with original, reference and QA) through the CLI: its --out
    directory, holding report.json, report.html and samples.jsonl, for the report-view tests."""
    from unlearn_audit.cli import main

    out = tmp_path_factory.mktemp("audited")
    args = ["audit", bench["memoriser"], "--forget", bench["forget"], "--holdout", bench["holdout"],
            "--retain", bench["retain"], "--forget-qa", bench["forget_qa"], "--retain-qa", bench["retain_qa"],
            "--holdout-qa", bench["holdout_qa"], "--original", bench["memoriser"], "--reference", bench["clean"],
            "--schemes", "fp32,rtn-int4,nf4", "--out", out, "--format", "json"]
    with pytest.raises(SystemExit):
        main([str(a) for a in args])
    return out


def schema_errors(report: dict) -> list[str]:
    """Every report the tests produce is checked against the published JSON Schema."""
    import json

    import jsonschema

    from unlearn_audit.resources import data_dir

    schema = json.loads((data_dir("report_templates") / "report.schema.json").read_text())
    return [f"{list(e.path)}: {e.message}" for e in jsonschema.Draft202012Validator(schema).iter_errors(report)]


def run(args, capsys) -> tuple[int, str]:
    """The command line run in-process: its exit code and what it wrote to stderr."""
    from unlearn_audit.cli import main

    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    return exc.value.code, capsys.readouterr().err


def one_line_error(code: int, err: str, *needles: str) -> None:
    """Exit 2 with exactly one stderr line, the tool's own, holding every needle."""
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert lines[0].startswith("unlearn-audit: error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def on_disk(model, path: Path):
    """``model`` saved as safetensors and opened the way the audit opens a checkpoint: ``build`` streams
    the weights from these files (``model`` itself is kept only for comparisons)."""
    from types import SimpleNamespace

    from unlearn_audit.models.loading import open_directory_weights

    model.save_pretrained(path, safe_serialization=True)
    source, _ = open_directory_weights(path, "test")
    return SimpleNamespace(path=str(path), model=model, config=model.config, source=source, tokenizer=None)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` (tests/test_gpu.py) run only where torch sees a CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _shared_cache(tmp_path_factory):
    """Audits through the CLI share results across runs (``--cache-dir``, by default in the user's cache
    directory); the tests use a directory of their own, so no run reads what an earlier session wrote."""
    import os

    os.environ["UNLEARN_AUDIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("shared-cache"))
    yield
