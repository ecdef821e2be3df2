"""Writing reports atomically: a reader sees the previous complete file or the new one, never half."""

from __future__ import annotations

import contextlib
import errno
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
    every write succeeded, so a failure (a full disk) leaves the previous set or nothing new. A target
    that is a directory is refused before anything is written: it could be moved aside and the new file
    put in its place, but then never removed (the user's directory is not ours to delete), and the set
    would be new while the command reported a failure."""
    refuse_directories(files)
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
    for _, aside in done:  # the new set is in place: a previous file that will not go is no failure of the write
        if aside is not None:
            with contextlib.suppress(OSError):
                aside.unlink(missing_ok=True)


def refuse_directories(paths) -> None:
    """IsADirectoryError for the first of ``paths`` that is a directory (a link to one is only a link,
    which a rename replaces), before anything is written."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
