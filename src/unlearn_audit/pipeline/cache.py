"""The resume cache: one file per variant under ``--out/.cache``, so an interrupted or repeated audit
recomputes nothing that is already done.

A variant's entry holds everything the model produced for it (the audited model's and the original's
probe outputs, and the weight forensics). Its key hashes every input that can change those outputs:
the tool version, the probe definitions, each model's weight-file hashes, each data file's hash, the
scheme with its parameters, and the prompt and backend settings. Change any of them and the entry is
simply not found. Entries are written atomically, so a killed run leaves whole entries or none.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .. import __version__
from ..probes.base import ProbeOutput, definitions
from ..report.write import to_json_text, write_text_atomic
from .types import AuditConfig, AuditData, VariantRun


def variant_key(scheme, ckpt, original, data: AuditData, cfg: AuditConfig) -> str:
    parts = {
        "tool": __version__,
        "probes": definitions(),
        "model": ckpt.file_hashes,
        **({"adapter": ckpt.adapter["files"]} if getattr(ckpt, "adapter", None) else {}),  # --adapter: merged weights differ
        "original": None if original is None else original.file_hashes,
        "data": {k: getattr(v, "sha256", None) for k, v in vars(data).items()},
        "scheme": {"name": scheme.name, **scheme.params()},
        "muse_strict": cfg.muse_strict,
        "backend": cfg.backend,
        "compute": [cfg.device, cfg.dtype],  # bfloat16 compute changes generations
    }
    if cfg.limit is not None:  # the sample depends on the limit and the seed, not on the file hash alone
        parts["sample"] = [cfg.limit, cfg.seed]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _outs(items: list[dict]) -> tuple[ProbeOutput, ...]:
    return tuple(ProbeOutput(d["probe"], d["split"], d["metric"], tuple(d["values"]), tuple(d["generations"])) for d in items)


def _dicts(outs: list[ProbeOutput]) -> list[dict]:
    return [{"probe": o.probe, "split": o.split, "metric": o.metric, "values": list(o.values),
             "generations": list(o.generations)} for o in outs]


class VariantCache:
    def __init__(self, root: Path | None, fresh: bool = False) -> None:
        self.root, self.fresh = root, fresh

    def get(self, key: str) -> VariantRun | None:
        """A cached variant's run, or None."""
        if self.root is None or self.fresh:
            return None
        path = self.root / f"{key}.json"
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        nan = float("nan")
        fix = lambda items: [{**d, "values": [nan if v is None else v for v in d["values"]]} for d in items]  # noqa: E731
        return VariantRun(_outs(fix(entry["outs"])), _outs(fix(entry["orig_outs"])), entry["forensics"])

    def put(self, key: str, run: VariantRun) -> None:
        if self.root is None:
            return
        entry = {"outs": _dicts(run.outputs), "orig_outs": _dicts(run.original_outputs), "forensics": run.forensics}
        write_text_atomic(self.root / f"{key}.json", to_json_text(entry))
