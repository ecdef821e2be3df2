"""Reading the audit's data sets: JSONL text sets ``{"text": ...}`` and QA sets ``{"question", "answer"}``.

Every defect names the file and the 1-based line, because the person reading the error is usually
holding someone else's data and needs to find the bad record without a debugger.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError


@dataclass(frozen=True)
class TextSet:
    path: str
    sha256: str
    texts: tuple[str, ...]


@dataclass(frozen=True)
class QASet:
    path: str
    sha256: str
    pairs: tuple[tuple[str, str], ...]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_input(path: Path, kind: str) -> str:
    """The text of an input file, or a one-line InputError naming it: missing, a directory, unreadable,
    or not UTF-8. Every file the tool reads from the user goes through here."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {kind} file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a directory; expected a {kind} file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read {kind} file ({exc.strerror})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 (bad byte at offset {exc.start})") from None


def _records(path: Path, kind: str) -> list[tuple[int, dict]]:
    text = read_input(path, f"JSONL {kind}")
    if text.startswith("\ufeff"):
        raise InputError(f"{path}: starts with a byte-order mark; save it as UTF-8 without BOM")
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        records.append((lineno, obj))
    if not records:
        raise InputError(f"{path}: empty {kind} file (no records)")
    return records


def _field(path: Path, lineno: int, obj: dict, key: str, hint: str = "") -> str:
    if key not in obj:
        raise InputError(f"{path}:{lineno}: missing field {key!r}{hint}")
    value = obj[key]
    if not isinstance(value, str):
        raise InputError(f"{path}:{lineno}: field {key!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise InputError(f"{path}:{lineno}: field {key!r} is empty")
    return value


def load_texts(path: str | Path) -> TextSet:
    p = Path(path)
    texts = []
    for lineno, obj in _records(p, "text set"):
        hint = " (this looks like a QA file; text sets hold {\"text\": ...})" if "question" in obj else ""
        texts.append(_field(p, lineno, obj, "text", hint))
    return TextSet(path=str(p), sha256=sha256_file(p), texts=tuple(texts))


def load_qa(path: str | Path) -> QASet:
    p = Path(path)
    pairs = []
    for lineno, obj in _records(p, "QA set"):
        hint = " (this looks like a text file; QA sets hold {\"question\", \"answer\"})" if "text" in obj else ""
        pairs.append((_field(p, lineno, obj, "question", hint), _field(p, lineno, obj, "answer", hint)))
    return QASet(path=str(p), sha256=sha256_file(p), pairs=tuple(pairs))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
