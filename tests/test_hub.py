"""Models named by Hub id: ``org/name`` and ``--revision``, resolved from a Hugging Face cache tree laid
out exactly as huggingface_hub lays it out (``models--org--name/refs/main``, ``snapshots/<sha>/`` of
links into ``blobs/``), in a temporary cache. Offline throughout: no test makes a network connection."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import one_line_error, run, schema_errors
from unlearn_audit.data import sha256_file
from unlearn_audit.errors import InputError
from unlearn_audit.models import hub

REPO = "acme/tiny-unlearned"
SHA_A, SHA_B = "a" * 40, "b" * 40


def add_snapshot(cache: Path, repo: str, sha: str, model: Path, refs: tuple[str, ...] = ("main",), skip: tuple[str, ...] = ()) -> Path:
    """``model``'s files as the snapshot ``sha`` of ``repo``: each file a blob named by its hash, linked
    from the snapshot folder with a relative link, as huggingface_hub writes them; ``refs`` point at it."""
    storage = cache / f"models--{repo.replace('/', '--')}"
    snap = storage / "snapshots" / sha
    snap.mkdir(parents=True)
    (storage / "blobs").mkdir(exist_ok=True)
    for f in sorted(model.iterdir()):
        if f.name in skip:
            continue
        data = f.read_bytes()
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / f.name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    for ref in refs:
        (storage / "refs").mkdir(exist_ok=True)
        (storage / "refs" / ref).write_text(sha)
    return snap


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache with downloads off, as huggingface_hub reads both (HF_HUB_CACHE,
    HF_HUB_OFFLINE) when it is imported."""
    from huggingface_hub import constants

    root = tmp_path / "hf" / "hub"
    root.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return root


def _audit(bench, model, out, *extra):
    return ["audit", model, "--forget", bench["forget"], "--holdout", bench["holdout"], "--schemes", "fp32", "--out", out,
            "--format", "json", *extra]


def test_a_hub_id_is_audited_from_the_cache_and_its_commit_recorded(bench, cache, tmp_path, capsys):
    add_snapshot(cache, REPO, SHA_A, bench["clean"])
    add_snapshot(cache, REPO, SHA_B, bench["memoriser"])  # main now points here
    code, err = run(_audit(bench, REPO, tmp_path / "main"), capsys)
    assert code in (0, 1, 4), err
    report = json.loads((tmp_path / "main" / "report.json").read_text())
    model = report["inputs"]["model"]
    assert model["hub"] == {"repo_id": REPO, "revision": "main", "commit": SHA_B}
    assert model["files"] == {"model.safetensors": sha256_file(bench["memoriser"] / "model.safetensors")}
    assert model["path"].endswith(f"snapshots/{SHA_B}")
    assert not schema_errors(report)

    code, err = run(_audit(bench, REPO, tmp_path / "old", "--revision", SHA_A), capsys)
    assert code in (0, 1, 4), err
    model = json.loads((tmp_path / "old" / "report.json").read_text())["inputs"]["model"]
    assert model["hub"] == {"repo_id": REPO, "revision": SHA_A, "commit": SHA_A}
    assert model["files"] == {"model.safetensors": sha256_file(bench["clean"] / "model.safetensors")}


def test_other_model_options_take_an_at_revision(bench, cache, tmp_path, capsys):
    add_snapshot(cache, REPO, SHA_A, bench["memoriser"], refs=("v1",))
    code, err = run(_audit(bench, bench["clean"], tmp_path / "r", "--original", f"{REPO}@v1", "--reference", f"{REPO}@{SHA_A}"), capsys)
    assert code in (0, 1, 4), err
    inputs = json.loads((tmp_path / "r" / "report.json").read_text())["inputs"]
    assert inputs["original"]["hub"] == {"repo_id": REPO, "revision": "v1", "commit": SHA_A}
    assert inputs["reference"]["hub"]["commit"] == SHA_A
    assert "hub" not in inputs["model"]  # a local directory


def test_offline_and_not_cached_is_one_line_naming_the_repo_and_the_fetch(bench, cache, tmp_path, capsys):
    one_line_error(*run(_audit(bench, "acme/never-fetched", tmp_path / "o"), capsys), "acme/never-fetched", "HF_HUB_OFFLINE",
                   "hf download acme/never-fetched")
    one_line_error(*run(_audit(bench, "acme/never-fetched", tmp_path / "o", "--revision", "v2"), capsys), "acme/never-fetched@v2",
                   "--revision v2")
    assert not (tmp_path / "o").exists()


def test_an_unknown_revision_of_a_cached_repo_is_refused(bench, cache, tmp_path, capsys):
    add_snapshot(cache, REPO, SHA_A, bench["memoriser"])
    one_line_error(*run(_audit(bench, REPO, tmp_path / "o", "--revision", SHA_B), capsys), f"{REPO}@{SHA_B}")


def test_a_snapshot_missing_its_weights_is_refused_offline(bench, cache, tmp_path, capsys):
    add_snapshot(cache, REPO, SHA_A, bench["memoriser"], skip=("model.safetensors",))
    one_line_error(*run(_audit(bench, REPO, tmp_path / "o"), capsys), "lacks", "safetensors", "HF_HUB_OFFLINE")


def test_a_revision_needs_a_hub_id(bench, tmp_path, capsys):
    one_line_error(*run(_audit(bench, bench["memoriser"], tmp_path / "o", "--revision", "main"), capsys), "local path")
    one_line_error(*run(_audit(bench, bench["memoriser"], tmp_path / "o", "--original", f"{bench['clean']}@v1"), capsys),
                   "not found")


def test_a_local_directory_wins_over_a_hub_id_of_the_same_spelling(bench, cache, tmp_path, monkeypatch):
    add_snapshot(cache, REPO, SHA_A, bench["clean"])
    (tmp_path / "acme").mkdir()
    os.symlink(bench["memoriser"], tmp_path / REPO)
    monkeypatch.chdir(tmp_path)
    ref = hub.resolve(REPO, None, "audited", "MODEL_DIR")
    assert ref.repo_id is None and ref.path == Path(REPO)


@pytest.mark.parametrize("name, repo, rev", [
    ("org/name@v1.0", "org/name", "v1.0"),
    (f"org/name@{SHA_A}", "org/name", SHA_A),
    ("org/name", "org/name", None),
    ("./dir@x", "./dir@x", None),  # a path, not a hub id
    ("a/b/c@main", "a/b/c@main", None),
])
def test_split_revision(name, repo, rev):
    assert hub.split_revision(name) == (repo, rev)


def test_only_the_files_the_loader_reads_are_chosen_for_download(tmp_path):
    """A Mistral-style repo: the index and its shards, never consolidated.safetensors nor code nor pickles."""
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    names = ["config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
             "consolidated.safetensors", "modeling_evil.py", "pytorch_model.bin", "params.json"]
    fetch = lambda repo, name, revision: str(tmp_path / name)  # noqa: E731  (the index, as hf_hub_download returns it)
    chosen = hub._weight_names(REPO, SHA_A, names, False, "MODEL_DIR", REPO, fetch)
    assert chosen == ["model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert hub._weight_names(REPO, SHA_A, ["config.json", "model.safetensors", "extra.safetensors"], False, "M", REPO, fetch) == [
        "model.safetensors"]
    with pytest.raises(InputError, match="--allow-pickle"):
        hub._weight_names(REPO, SHA_A, ["config.json", "pytorch_model.bin"], False, "M", REPO, fetch)
    assert hub._weight_names(REPO, SHA_A, ["config.json", "pytorch_model.bin"], True, "M", REPO, fetch) == ["pytorch_model.bin"]


def test_the_cli_offline_from_a_fresh_process_reads_hf_home(bench, tmp_path):
    """What a user's shell does: HF_HOME and HF_HUB_OFFLINE=1 in the environment, huggingface_hub reading
    them at import."""
    add_snapshot(tmp_path / "hf" / "hub", REPO, SHA_A, bench["memoriser"])
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    args = [sys.executable, "-c", "from unlearn_audit.cli import main; main()", "quantize", REPO, "--scheme", "rtn-int8",
            "--out", str(tmp_path / "q")]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "q" / "config.json").is_file()
    args[4] = "acme/other"
    args[-1] = str(tmp_path / "q2")
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "acme/other" in done.stderr, done.stderr
