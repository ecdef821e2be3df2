"""Writing reports atomically: a reader sees the previous complete file or the new one, never half."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path


def sanitize(obj):
    """NaN and infinity are not JSON; a value that could not be computed is written as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize(v) for v in obj]
    return obj


def to_json_text(obj: dict) -> str:
    return json.dumps(sanitize(obj), indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: dict) -> None:
    write_text_atomic(path, to_json_text(obj))


def samples_text(report: dict) -> str:
    """Per-document values, one JSON line per (variant, model, probe, split, metric), for reanalysis."""
    lines = [json.dumps(sanitize(s), ensure_ascii=False, allow_nan=False) for s in report.get("samples", [])]
    return "".join(line + "\n" for line in lines)


def write_files_atomic(files: dict[Path, str]) -> None:
    """Several files as one unit: all are written to temporary siblings first and renamed only when
    every write succeeded, so a failure (a full disk) leaves the previous set or nothing new."""
    temps: list[tuple[str, Path]] = []
    try:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            temps.append((tmp, path))
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        _swap_in(temps)
    except BaseException:
        for tmp, _ in temps:
            Path(tmp).unlink(missing_ok=True)
        raise


def _swap_in(temps: list[tuple[str, Path]]) -> None:
    """Rename each finished temporary file over its target. If one rename fails, the targets already
    replaced get their previous file back (or are removed when they had none), so a reader never finds a
    new samples.jsonl beside an old report.json; the previous files are kept aside until all succeeded."""
    done: list[tuple[Path, Path | None]] = []  # (target, where its previous version was put aside)
    try:
        for tmp, path in temps:
            aside = None
            if path.exists():
                aside = path.with_name(f".{path.name}.{os.getpid()}.previous")
                os.replace(path, aside)
            done.append((path, aside))
            os.replace(tmp, path)
    except BaseException:
        for path, aside in reversed(done):
            if aside is not None:
                os.replace(aside, path)
            else:
                path.unlink(missing_ok=True)
        raise
    for _, aside in done:
        if aside is not None:
            aside.unlink(missing_ok=True)
