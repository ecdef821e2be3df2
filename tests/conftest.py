"""Shared fixtures: a tiny benchmark and two tiny trained models, shipped in ``tests/fixtures/tiny``.

``memoriser`` was fine-tuned on forget + retain until it recites the forget set; ``clean`` saw only
the retain set. They are trained once by ``tests/fixtures/build_tiny.py`` and shipped, so that every CPU
audits the same weights (trained here, their numbers changed between AVX2 and AVX512 machines).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

# No test may reach a model hub: huggingface_hub reads this once, when it is first imported.
os.environ["HF_HUB_OFFLINE"] = "1"

from unlearn_audit.benchmark import bios  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import build_tiny as fixtures  # noqa: E402  (tests/fixtures/build_tiny.py: the recipe and the data's fingerprint)


@pytest.fixture(scope="session")
def bench(tmp_path_factory) -> dict[str, Path]:
    torch.set_num_threads(1)  # tiny models gain nothing from threads; oversubscribed OpenMP stalls
    root = tmp_path_factory.mktemp("bench")
    split = fixtures.split()
    trained_on = json.loads((fixtures.OUT / "trained_on.json").read_text())["sets"]
    assert fixtures.fingerprint(split) == trained_on, (
        "the benchmark generator no longer writes the texts the shipped tiny models were trained on; "
        "rebuild them with: python tests/fixtures/build_tiny.py")
    files = bios.write_split(split, root)
    for name in ("memoriser", "clean"):
        files[name] = Path(shutil.copytree(fixtures.OUT / name, root / name))
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


PROGRESS_LINE = re.compile(r"^unlearn-audit: \[\d+:\d\d:\d\d\] ")


def one_line_error(code: int, err: str, *needles: str, after_progress: bool = False) -> None:
    """Exit 2 with exactly one stderr line, the tool's own, holding every needle. With ``after_progress``
    (a failure found once stages ran, not bad input), a log's plain progress lines may come before it."""
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line]
    if after_progress:
        lines = [line for line in lines if not PROGRESS_LINE.match(line)]
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


@contextmanager
def kv_caches(model):
    """The KV caches that forwards of ``model`` and of its decoder return while the block runs, recorded
    by forward hooks (None for a forward that built none). transformers 5.x names the output ``cache``,
    earlier versions ``past_key_values``."""
    seen: list = []

    def record(module, args, kwargs, out):
        seen.append(out.get("cache", out.get("past_key_values")) if hasattr(out, "get") else None)

    modules = [model] + ([model.base_model] if model.base_model is not model else [])
    hooks = [m.register_forward_hook(record, with_kwargs=True) for m in modules]
    try:
        yield seen
    finally:
        for h in hooks:
            h.remove()


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` (tests/test_gpu.py) run only where torch sees a CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _on_the_cpu():
    """The commands' ``--device auto`` means CUDA wherever torch sees a GPU, but the test run's claims are
    the CPU's: the golden report records ``"device": "cpu"``, and drafts equal ``generate`` token for token
    in float32 on the CPU (on a GPU, and in bfloat16, a near tie may go either way). So every command run
    here defaults to the CPU (``UNLEARN_AUDIT_DEVICE``, which a flag still overrides); tests marked
    ``gpu`` choose their device themselves (``_gpu_tests_choose_their_device``)."""
    before = os.environ.get("UNLEARN_AUDIT_DEVICE")
    os.environ["UNLEARN_AUDIT_DEVICE"] = "cpu"
    yield
    if before is None:
        os.environ.pop("UNLEARN_AUDIT_DEVICE", None)
    else:
        os.environ["UNLEARN_AUDIT_DEVICE"] = before


@pytest.fixture(autouse=True)
def _in_a_scratch_directory(tmp_path_factory, monkeypatch):
    """``audit`` without ``--out`` writes ./unlearn-audit-report: each test runs in a directory of its own,
    so no test writes into the checkout or reads what another left there."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(autouse=True)
def _gpu_tests_choose_their_device(request, monkeypatch):
    if request.node.get_closest_marker("gpu") is not None:
        monkeypatch.delenv("UNLEARN_AUDIT_DEVICE", raising=False)  # --device auto: the GPU


@pytest.fixture(autouse=True, scope="session")
def _shared_cache(tmp_path_factory):
    """Audits through the CLI share results across runs (``--cache-dir``, by default in the user's cache
    directory); the tests use a directory of their own, so no run reads what an earlier session wrote."""
    import os

    os.environ["UNLEARN_AUDIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("shared-cache"))
    yield
