"""Reading the audit's data sets: JSONL text sets ``{"text": ...}`` and QA sets ``{"question", "answer"}``.

Every defect names the file and the 1-based line, because the person reading the error is usually
holding someone else's data and needs to find the bad record without a debugger.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, parse


@dataclass(frozen=True)
class TextSet:
    path: str
    sha256: str
    texts: tuple[str, ...]
    records: int | None = None  # records in the file, when ``texts`` is a sample of them (``limit``)


@dataclass(frozen=True)
class QASet:
    path: str
    sha256: str
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class PromptSet:
    """VerbMem prompts given with their true continuation (``gt``), as MUSE ships them in
    ``verbmem/forget.json``; they are used as given, not cut from a text by the tool."""

    path: str
    sha256: str
    pairs: tuple[tuple[str, str], ...]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def concat_sha256(files: list[Path]) -> str:
    """One set read from several files (MUSE's ``raw/retain*.txt``): their bytes hashed in name order."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()


MiB = 1 << 20
MAX_INPUT_BYTES = 1024 * MiB  # read_input's default: a report.json or a MUSE file; far above any real one
MAX_RECORD_BYTES = 8 * MiB  # one JSONL line, or one text: a MUSE document (2047 tokens) is about 10 kB


def _size(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB and n % MiB == 0 else f"{n} bytes"


def _open_input(path: Path, kind: str):
    """An input file opened for binary reading, or a one-line InputError naming it: missing, a directory,
    unreadable, or not a regular file or pipe. A character or block device (``/dev/zero``) or a socket is
    refused before it is opened: it would read forever or hang. A pipe is read (``--forget <(cat f)``),
    but opened without blocking, so a FIFO that no process writes reads as empty instead of hanging."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(f"{path}: {kind} file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read {kind} file ({exc.strerror})") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{path}: is a directory; expected a {kind} file")
    _regular_or_pipe(path, mode, kind)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise InputError(f"{path}: cannot read {kind} file ({exc.strerror})") from None
    try:
        _regular_or_pipe(path, os.fstat(fd).st_mode, kind)  # swapped for a device since the stat above
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)  # a writer may be slow
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _regular_or_pipe(path: Path, mode: int, kind: str) -> None:
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        what = "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file"
        raise InputError(f"{path}: not a regular file ({what}); expected a {kind} file or a pipe")


def read_input(path: Path, kind: str, max_bytes: int = MAX_INPUT_BYTES) -> str:
    """The text of an input file, or a one-line InputError naming it: missing, a directory, unreadable,
    not a regular file or pipe, larger than ``max_bytes``, or not UTF-8. Every whole file the tool reads
    from the user goes through here. The file is read in blocks, so a stream that never ends is refused
    once it passes ``max_bytes`` without being held whole."""
    path = Path(path)
    raw = bytearray()
    with _open_input(path, kind) as fh:
        if os.fstat(fh.fileno()).st_size > max_bytes:  # a regular file says its size up front; a pipe does not
            raise InputError(f"{path}: {kind} file larger than {_size(max_bytes)}, the limit for it; refusing to read it")
        while True:
            try:
                block = fh.read(min(MiB, max_bytes + 1 - len(raw)))
            except OSError as exc:
                raise InputError(f"{path}: cannot read {kind} file ({exc.strerror})") from None
            if not block:
                break
            raw += block
            if len(raw) > max_bytes:
                raise InputError(f"{path}: {kind} file larger than {_size(max_bytes)}, the limit for it; refusing to read it")
        # An empty policy file means the defaults, but an empty pipe is a writer that never came.
        if not raw and stat.S_ISFIFO(os.fstat(fh.fileno()).st_mode):
            raise InputError(f"{path}: empty {kind} input (a pipe that nothing wrote to)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 (bad byte at offset {exc.start})") from None


def check_text(value: str, where: str) -> str:
    """``value`` if it is text the tokenizers accept, else a one-line InputError starting with ``where``
    (e.g. ``"data.jsonl:3: field 'text'"``): JSON's ``"\\ud800"`` escape decodes to a lone surrogate that
    no UTF-8 encoder takes, and a text over ``MAX_RECORD_BYTES`` would be tokenized whole before any
    truncation (a 20 MB record took 4.4 GB)."""
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InputError(f"{where} holds an unpaired surrogate (\\u{ord(value[exc.start]):04x}); "
                         "not valid Unicode text") from None
    if size > MAX_RECORD_BYTES:
        raise InputError(f"{where} is larger than {_size(MAX_RECORD_BYTES)}, the limit for one text")
    return value


def _parse_line(path: Path, lineno: int, line: str):
    return parse(line, str(path), line=lineno)


def _records(path: Path, kind: str, digest) -> Iterator[tuple[int, dict]]:
    """The file's records, streamed one line at a time: memory holds one line, not the file, and every
    byte read also goes into ``digest`` so the file is hashed in the same pass. Lines end at ``\n``
    (JSONL's separator; a ``\r`` before it is JSON whitespace), so a U+2028 inside a string is not a
    line break."""
    kind_name = f"JSONL {kind}"
    offset, lineno, found = 0, 0, False
    with _open_input(path, kind_name) as fh:
        while True:
            try:
                raw = fh.readline(MAX_RECORD_BYTES + 1)  # a line is never read further than the cap
            except OSError as exc:
                raise InputError(f"{path}: cannot read {kind_name} file ({exc.strerror})") from None
            if not raw:
                break
            lineno += 1
            if len(raw) > MAX_RECORD_BYTES and not raw.endswith(b"\n"):
                raise InputError(f"{path}:{lineno}: record larger than {_size(MAX_RECORD_BYTES)}, the limit for one record")
            digest.update(raw)
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raise InputError(f"{path}: starts with a byte-order mark; save it as UTF-8 without BOM")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{path}: not UTF-8 (bad byte at offset {offset + exc.start})") from None
            offset += len(raw)
            if not line.strip():
                continue
            obj = _parse_line(path, lineno, line)
            if not isinstance(obj, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            found = True
            yield lineno, obj
    if not found:
        raise InputError(f"{path}: empty {kind} file (no records)")


def _field(path: Path, lineno: int, obj: dict, key: str, hint: str = "") -> str:
    if key not in obj:
        raise InputError(f"{path}:{lineno}: missing field {key!r}{hint}")
    value = obj[key]
    if not isinstance(value, str):
        raise InputError(f"{path}:{lineno}: field {key!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise InputError(f"{path}:{lineno}: field {key!r} is empty")
    return check_text(value, f"{path}:{lineno}: field {key!r}")


class Reservoir:
    """A uniform sample of ``limit`` items from a stream of unknown length, in one pass and O(limit)
    memory (Vitter's Algorithm R), seeded so the same file and seed always keep the same records.
    The kept items are returned in file order. ``limit=None`` keeps everything."""

    def __init__(self, limit: int | None, seed: int) -> None:
        self.limit, self.rng, self.seen, self.kept = limit, random.Random(seed), 0, []

    def add(self, item) -> None:
        self.seen += 1
        if self.limit is None:
            self.kept.append(item)
        elif len(self.kept) < self.limit:
            self.kept.append((self.seen, item))
        else:  # the i-th item replaces a kept one with probability limit/i
            j = self.rng.randrange(self.seen)
            if j < self.limit:
                self.kept[j] = (self.seen, item)

    def items(self) -> list:
        return self.kept if self.limit is None else [item for _, item in sorted(self.kept, key=lambda k: k[0])]


def load_texts(path: str | Path, limit: int | None = None, seed: int = 0) -> TextSet:
    """A text set, validated and hashed in one streaming pass. With ``limit``, a seeded uniform sample
    of that many records (every record is still validated); ``records`` then says how many there were."""
    p = Path(path)
    digest, sample = hashlib.sha256(), Reservoir(limit, seed)
    for lineno, obj in _records(p, "text set", digest):
        hint = " (this looks like a QA file; text sets hold {\"text\": ...})" if "question" in obj else ""
        sample.add(_field(p, lineno, obj, "text", hint))
    texts = tuple(sample.items())
    return TextSet(path=str(p), sha256=digest.hexdigest(), texts=texts, records=sample.seen if limit is not None else None)


def load_qa(path: str | Path) -> QASet:
    p = Path(path)
    pairs, digest = [], hashlib.sha256()
    for lineno, obj in _records(p, "QA set", digest):
        hint = " (this looks like a text file; QA sets hold {\"question\", \"answer\"})" if "text" in obj else ""
        pairs.append((_field(p, lineno, obj, "question", hint), _field(p, lineno, obj, "answer", hint)))
    return QASet(path=str(p), sha256=digest.hexdigest(), pairs=tuple(pairs))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
