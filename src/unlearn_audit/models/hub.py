"""A model named as this field names them: a local directory, or a Hugging Face Hub id with a revision.

lm-eval's ``pretrained=``, open-unlearning's configs and MUSE (``muse-bench/MUSE-news_target``) all name
models by hub id, so every command that takes a model takes ``org/name`` too, with ``--revision`` (a
branch, tag or commit) or an ``@REV`` suffix (``org/name@v1.0``) for the other model arguments.

Resolution goes through huggingface_hub, the local cache first: a snapshot already in the cache
(``$HF_HOME/hub/models--org--name/snapshots/<sha>/``) is used as it is, with no network. Only when it
is missing or lacks a file the loader reads, and downloads are allowed (``HF_HUB_OFFLINE`` as
huggingface_hub defines it), are exactly the files the loader will read downloaded: config, tokenizer
and generation-config files, and the weights ``loading.weight_files`` would choose (the index and the
shards it names, else ``model.safetensors``); never ``*.py``, and pickle weights only with
``--allow-pickle``. The loader then checks and hashes them as any local directory. The resolved commit
sha is recorded beside the revision asked for, so a report names the exact bytes even when ``main``
moves on.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

#: ``namespace/name`` as the Hub spells repo ids (huggingface_hub's validate_repo_id, with a namespace).
REPO_ID = re.compile(r"^(?!.*(--|\.\.))[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(?<!\.git)$")
SAFETENSORS_INDEX, PICKLE_INDEX = "model.safetensors.index.json", "pytorch_model.bin.index.json"
#: Every file beside the weights that the loader reads (loading.SIDE_FILES, and the adapter's config).
SIDE = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
        "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json",
        "adapter_config.json")


@dataclass(frozen=True)
class ModelRef:
    """Where a model's files are on this machine and, for a hub id, which repo and commit they are.
    It is a path-like (``os.fspath``, ``str``), so it goes wherever a model directory goes."""

    path: Path
    repo_id: str | None = None
    revision: str | None = None  # as asked: a branch, tag or commit (None: the repo's default branch)
    commit: str | None = None  # the commit sha it resolved to

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def resolve(self) -> Path:  # as Path.resolve, for the checks that compare outputs with inputs
        return self.path.resolve()

    def provenance(self) -> dict | None:
        """The report's ``hub`` block: the repo id, the revision asked for, the commit it resolved to."""
        if self.repo_id is None:
            return None
        return {"repo_id": self.repo_id, "revision": self.revision or "main", "commit": self.commit}


def split_revision(name: str) -> tuple[str, str | None]:
    """``org/name@REV`` -> (``org/name``, ``REV``); anything else unchanged, with no revision."""
    head, at, rev = str(name).rpartition("@")
    if at and REPO_ID.match(head) and rev:
        return head, rev
    return str(name), None


def is_hub_id(name: str) -> bool:
    return bool(REPO_ID.match(str(name)))


def resolve(name: str | os.PathLike, revision: str | None, role: str, flag: str, allow_pickle: bool = False,
            adapter: bool = False) -> ModelRef:
    """A local directory as it is; an existing path always wins over a hub id of the same spelling, as in
    transformers. ``flag`` names the option in messages (``MODEL_DIR``, ``--original``)."""
    if isinstance(name, ModelRef):
        return name
    text, suffix = split_revision(os.fspath(name))
    if revision is not None and suffix is not None and revision != suffix:
        raise InputError(f"{flag}: {name} names revision {suffix}, and --revision says {revision}; give one")
    revision = revision or suffix
    local = Path(text).expanduser()
    if local.exists() or not is_hub_id(text):
        if revision is not None:
            raise InputError(f"{flag}: a revision ({revision}) applies to a Hugging Face Hub id (org/name), and {text} is a local path")
        return ModelRef(local)
    return _from_hub(text, revision, role, flag, allow_pickle, adapter)


def downloads_allowed() -> bool:
    """What huggingface_hub itself decides from ``HF_HUB_OFFLINE`` (read when it is imported)."""
    from huggingface_hub import constants

    return not constants.HF_HUB_OFFLINE


def _from_hub(repo: str, revision: str | None, role: str, flag: str, allow_pickle: bool, adapter: bool) -> ModelRef:
    from huggingface_hub import try_to_load_from_cache

    at = f"{repo}@{revision}" if revision else repo
    # The cache's own lookup (refs/<branch or tag> -> commit, or the commit itself), with no network: the
    # config's cached copy lies in the snapshot the revision names.
    try:
        hit = try_to_load_from_cache(repo, "adapter_config.json" if adapter else "config.json", revision=revision)
    except (OSError, ValueError):
        hit = None
    path = Path(hit).parent if isinstance(hit, str) else None
    if path is not None:
        missing = _missing(path, allow_pickle, adapter)
        if not missing:
            return ModelRef(path, repo, revision, path.name)
        if not downloads_allowed():
            raise InputError(f"{flag}: {at}: the cached snapshot {path} lacks {missing}, and downloads are off (HF_HUB_OFFLINE); "
                             f"{_fetch_hint(repo, revision)}")
    elif not downloads_allowed():
        raise InputError(f"{flag}: {at} is neither a local directory nor in the Hugging Face cache, and downloads are off "
                         f"(HF_HUB_OFFLINE); {_fetch_hint(repo, revision)}")
    return _download(repo, revision, at, flag, allow_pickle, adapter)


def _fetch_hint(repo: str, revision: str | None) -> str:
    rev = f" --revision {revision}" if revision else ""
    return (f"fetch it first with `hf download {repo}{rev} --include '*.json' '*.safetensors' '*.txt' '*.model' '*.jinja'` "
            "on a machine that may download, or unset HF_HUB_OFFLINE")


def _missing(path: Path, allow_pickle: bool, adapter: bool) -> str | None:
    """What the loader needs and the snapshot lacks (None when complete), without loading anything."""
    config = "adapter_config.json" if adapter else "config.json"
    if not (path / config).is_file():
        return config
    if adapter:
        ok = (path / "adapter_model.safetensors").is_file() or (allow_pickle and (path / "adapter_model.bin").is_file())
        return None if ok else "adapter_model.safetensors"
    index = path / SAFETENSORS_INDEX
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # a broken index: the loader says what is wrong with it
        lost = sorted(s for s in shards if isinstance(s, str) and not (path / s).is_file())
        return ", ".join(lost[:3]) if lost else None
    if any(path.glob("*.safetensors")) or (allow_pickle and any(path.glob("*.bin"))):
        return None
    return "the weights (*.safetensors)"


def _download(repo: str, revision: str | None, at: str, flag: str, allow_pickle: bool, adapter: bool) -> ModelRef:
    """The commit ``revision`` names, then exactly the files the loader reads from it."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = HfApi().model_info(repo, revision=revision)
        names = [s.rfilename for s in info.siblings or ()]
        wanted = [n for n in names if n in SIDE]
        if adapter:
            wanted += [n for n in ("adapter_model.safetensors",) + (("adapter_model.bin",) if allow_pickle else ()) if n in names]
        else:
            wanted += _weight_names(repo, info.sha, names, allow_pickle, flag, at, hf_hub_download)
        path = Path(snapshot_download(repo, revision=info.sha, allow_patterns=wanted))
    except RepositoryNotFoundError:
        raise InputError(f"{flag}: {at}: no such model on the Hugging Face Hub (or it is private: log in with `hf auth login`)") from None
    except GatedRepoError:
        raise InputError(f"{flag}: {at}: a gated repo; accept its terms on the Hub and log in with `hf auth login`") from None
    except RevisionNotFoundError:
        raise InputError(f"{flag}: {at}: no such revision (a branch, tag or commit) in {repo}") from None
    except InputError:
        raise
    except Exception as exc:  # HfHubHTTPError, OSError, and the HTTP client's own (a ConnectError when offline)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise InputError(f"{flag}: {at}: cannot download it ({type(exc).__name__}: {first}); {_fetch_hint(repo, revision)}") from None
    return ModelRef(path, repo, revision, info.sha)


def _weight_names(repo, sha, names, allow_pickle, flag, at, hf_hub_download) -> list[str]:
    """The weight files transformers would read, chosen from the repo's file list: the safetensors index
    and its shards, else model.safetensors, else the one top-level *.safetensors; pickle only if allowed."""
    top = [n for n in names if "/" not in n]
    for index in (SAFETENSORS_INDEX,) + ((PICKLE_INDEX,) if allow_pickle else ()):
        if index in top:
            local = hf_hub_download(repo, index, revision=sha)
            try:
                shards = sorted({s for s in json.loads(Path(local).read_text(encoding="utf-8"))["weight_map"].values() if isinstance(s, str)})
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return [index]  # the loader refuses it with the reason
            return [index, *shards]
    safetensors = [n for n in top if n.endswith(".safetensors")]
    if "model.safetensors" in safetensors:
        return ["model.safetensors"]
    if len(safetensors) == 1:
        return safetensors
    if safetensors:
        raise InputError(f"{flag}: {at}: several .safetensors files and no {SAFETENSORS_INDEX} to say which hold the weights")
    if allow_pickle and "pytorch_model.bin" in top:
        return ["pytorch_model.bin"]
    hint = "" if allow_pickle else " (pickle weights are read only with --allow-pickle)"
    raise InputError(f"{flag}: {at}: no safetensors weights on the Hub{hint}")
