"""The resume cache: one file per variant under ``--out/.cache``, so an interrupted or repeated audit
recomputes nothing that is already done; and the shared cache (``--cache-dir``, by default in the
user's cache directory), which keeps the work that does not depend on the audited model (the original's
outputs under each scheme, the reference's scores) for every later audit against the same models.

A variant's entry holds everything the model produced for it (the audited model's and the original's
probe outputs, and the weight forensics). Its key hashes every input that can change those outputs:
the tool version, the probe definitions, each model's weight-file hashes and its config, tokenizer and
generation files (``side_files``), each data file's hash, the
scheme with its parameters, and the prompt and backend settings. Change any of them and the entry is
simply not found. Entries are written atomically, so a killed run leaves whole entries or none.

A verdict must not rest on files the run did not compute, and whoever can write to ``--out`` could
edit an entry. So every entry is authenticated: an HMAC-SHA256 over its key and its content under a
secret kept outside ``--out`` (``secret_file()``, created with mode 0600 on first use). An entry that
fails the check, is malformed, or is not a file is ignored with a note and the variant is recomputed;
a cache that cannot be written is noted and the audit goes on. (An explicit ``--resume`` flag was the
alternative; it would still trust whatever sits in ``--out`` once given, and CI reruns would forget it.)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from .. import __version__
from ..probes.base import ProbeOutput, definitions
from ..report.write import to_json_text, write_text_atomic
from .types import AuditConfig, AuditData, VariantRun, Workload


def _key(parts: dict, data: AuditData, cfg: AuditConfig) -> str:
    """The hash of ``parts`` and of every input that shapes any model's outputs in this audit: the tool and
    probe definitions, the data, the prompt and backend settings and the compute device and dtype."""
    parts = {
        **parts,
        "tool": __version__,
        "probes": definitions(),
        "data": {k: getattr(v, "sha256", None) for k, v in vars(data).items()},
        "muse_strict": cfg.muse_strict,
        "backend": cfg.backend,
        "compute": [cfg.device, cfg.dtype],  # bfloat16 compute changes generations
    }
    if cfg.limit is not None:  # the sample depends on the limit and the seed, not on the file hash alone
        parts["sample"] = [cfg.limit, cfg.seed]
    if not cfg.draft:  # the same tokens up to float tolerance; kept apart so --no-draft is a clean comparison
        parts["decoding"] = "plain"
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def variant_key(scheme, ckpt, original, data: AuditData, cfg: AuditConfig) -> str:
    return _key({
        "model": ckpt.file_hashes,
        "model_side_files": ckpt.side_files,  # a different tokenizer or generation config changes the outputs
        **({"adapter": ckpt.adapter["files"]} if getattr(ckpt, "adapter", None) else {}),  # --adapter: merged weights differ
        "original": None if original is None else [original.file_hashes, original.side_files],
        "scheme": {"name": scheme.name, **scheme.params()},
    }, data, cfg)


def original_key(scheme, original, ckpt, work: Workload, data: AuditData, cfg: AuditConfig) -> str:
    """The key of the original's outputs under ``scheme``: they depend on the original, the data, the
    scheme and the settings, never on the audited model's weights, so audits of several unlearned
    models against one original share them (the shared cache, ``--cache-dir``)."""
    return _key({"role": "original", "original": [original.file_hashes, original.side_files], "tokenizer": _tokenizer(ckpt, work),
                 "scheme": {"name": scheme.name, **scheme.params()}}, data, cfg)


def reference_key(reference, ckpt, work: Workload, data: AuditData, cfg: AuditConfig) -> str:
    """The key of the reference model's headline scores (PrivLeak's baseline), shared like the original's."""
    return _key({"role": "reference", "reference": [reference.file_hashes, reference.side_files], "tokenizer": _tokenizer(ckpt, work)},
                data, cfg)


def _tokenizer(ckpt, work: Workload) -> dict:
    """What the audited model's tokenizer contributes to another model's outputs: the token ids of the
    workload it made (every prompt, reference and scored text), and how it decodes generations (its
    vocabulary, merges and decoder, and its decode settings). Not its files as such: a tokenizer saved
    again by transformers gains bookkeeping keys in tokenizer_config.json and tokenizes the same."""
    tok = ckpt.tokenizer
    prepared = json.dumps(work.prepared, sort_keys=True, default=repr)
    return {"workload": hashlib.sha256(prepared.encode()).hexdigest(),
            "vocabulary": {k: v for k, v in ckpt.side_files.items() if k in ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer.model")},
            "decode": [bool(getattr(tok, "clean_up_tokenization_spaces", False)), sorted(tok.all_special_tokens)]}


def shared_dir() -> Path:
    """The default shared cache: ``UNLEARN_AUDIT_CACHE_DIR``, else ``results`` in the user's cache directory."""
    given = os.environ.get("UNLEARN_AUDIT_CACHE_DIR")
    if given:
        return Path(given)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "unlearn-audit" / "results"


def _outs(items: list[dict]) -> tuple[ProbeOutput, ...]:
    return tuple(ProbeOutput(d["probe"], d["split"], d["metric"], tuple(d["values"]), tuple(d["generations"])) for d in items)


def _dicts(outs: list[ProbeOutput]) -> list[dict]:
    return [{"probe": o.probe, "split": o.split, "metric": o.metric, "values": list(o.values),
             "generations": list(o.generations)} for o in outs]


def secret_file() -> Path:
    """Where the resume cache's secret lives: ``UNLEARN_AUDIT_CACHE_SECRET_FILE``, else the user's cache
    directory (never under ``--out``)."""
    given = os.environ.get("UNLEARN_AUDIT_CACHE_SECRET_FILE")
    if given:
        return Path(given)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "unlearn-audit" / "resume-secret"


def _load_secret(path: Path) -> bytes:
    try:
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # a concurrent creator wins; we re-read
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text(encoding="ascii").strip())


class VariantCache:
    def __init__(self, root: Path | None, fresh: bool = False, secret: bytes | None = None) -> None:
        self.root, self.fresh, self._secret = root, fresh, secret
        self.notes: list[str] = []  # what the report must say about entries ignored or not written

    def _mac(self, key: str, content: str) -> str | None:
        if self._secret is None:
            try:
                self._secret = _load_secret(secret_file())
            except (OSError, ValueError) as exc:
                self._note(f"resume cache disabled: its secret {secret_file()} cannot be read or made ({exc})")
                self.root = None
                return None
        return hmac.new(self._secret, key.encode() + b"\0" + content.encode(), hashlib.sha256).hexdigest()

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def get(self, key: str) -> VariantRun | None:
        """A cached variant's run, or None (absent, or ignored with a note)."""
        if self.root is None or self.fresh:
            return None
        path = self.root / f"{key}.json"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:  # a directory, a file under a file, unreadable bytes
            self._note(f"resume cache entry {path} ignored: not a readable file ({type(exc).__name__})")
            return None
        try:
            entry = json.loads(text)
            content, mac = entry["content"], entry["mac"]
            if not isinstance(content, str):
                raise TypeError("content is not a string")
            expected = self._mac(key, content)
            if expected is None:
                return None
            if not isinstance(mac, str) or not hmac.compare_digest(mac, expected):
                self._note(f"resume cache entry {path} ignored: it fails authentication (edited, or made under another secret)")
                return None
            body = json.loads(content)
            nan = float("nan")
            fix = lambda items: [{**d, "values": [nan if v is None else v for v in d["values"]]} for d in items]  # noqa: E731
            return VariantRun(_outs(fix(body["outs"])), _outs(fix(body["orig_outs"])), body["forensics"])
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            self._note(f"resume cache entry {path} ignored: malformed ({type(exc).__name__})")
            return None

    def put(self, key: str, run: VariantRun) -> None:
        if self.root is None:
            return
        content = to_json_text({"outs": _dicts(run.outputs), "orig_outs": _dicts(run.original_outputs), "forensics": run.forensics})
        mac = self._mac(key, content)
        if mac is None:
            return
        try:
            write_text_atomic(self.root / f"{key}.json", to_json_text({"mac": mac, "content": content}))
        except OSError as exc:  # a full disk, or --out/.cache is a file: the audit itself is unaffected
            self._note(f"resume cache not written under {self.root} ({exc.strerror or exc})")
