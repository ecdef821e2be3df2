"""Where the evidence came from, and whether it still describes the files on disk.

Every input is hashed when it is read; at the end of the audit each file is hashed again, and one that
changed (or vanished) is a finding that no policy can turn into PASS or FAIL.
"""

from __future__ import annotations

from pathlib import Path

from ..data import TextSet, concat_sha256, sha256_file
from .types import AuditData


def provenance_notes(models: list, data: AuditData) -> list[str]:
    """What a reader must know about where the evidence came from: pickle weights, sampled sets."""
    notes = [f"{m.role} model {m.path}: pickle weights ({', '.join(m.file_hashes)}) loaded with "
             "torch.load(weights_only=True) because of --allow-pickle" for m in models if m.weights_format == "pickle"]
    for name, ts in vars(data).items():
        if isinstance(ts, TextSet) and ts.records is not None:
            notes.append(f"{name}: {len(ts.texts)} of {ts.records} record(s) in {ts.path} audited (--limit, seeded reservoir sample)")
    return notes


def current_sha256(path: str) -> str | None:
    """A set's sha256 as its file is now, or None when it is gone. A set read from several files (a glob,
    such as MUSE's ``raw/retain*.txt``) hashes their bytes concatenated in name order, as when read."""
    p = Path(path)
    if "*" in p.name and not p.exists():
        files = sorted(p.parent.glob(p.name))
        return concat_sha256(files) if files else None
    return sha256_file(p) if p.is_file() else None


def changed_inputs(data: AuditData, models: list) -> tuple[list[str], list[str]]:
    """Files whose sha256 differs now from when they were read at the start (the report's hashes), and
    notes on inputs that cannot be read twice: a pipe (``--forget <(cat f.jsonl)``) was hashed as it was
    read, and that hash stands."""
    changed, notes = [], []
    for ts in vars(data).values():
        # "-": built in memory (the benchmark script), no file behind it; ``source`` is a record, not a set
        if getattr(ts, "sha256", "-") == "-":
            continue
        p = Path(ts.path)
        if "*" not in p.name and p.exists() and not p.is_file():
            notes.append(f"{ts.path}: not a regular file (a pipe); its sha256 is of the bytes read, which cannot be re-read to check")
            continue
        now = current_sha256(ts.path)
        if now is None:
            changed.append(f"{ts.path} (removed)")
        elif now != ts.sha256:
            changed.append(ts.path)
    for m in models:
        # a merged adapter (--adapter) came from the base's files and the adapter's, not from its temporary copy
        files = m.source_files() if hasattr(m, "source_files") else {Path(m.path) / n: d for n, d in {**m.file_hashes, **m.side_files}.items()}
        for f, digest in files.items():
            if not f.is_file() or sha256_file(f) != digest:
                changed.append(str(f))
    return changed, notes
