"""Reading a MUSE corpus directory as is (Shi et al., 2024: the layout of muse_bench's ``data/news`` and
``data/books``, and of the ``muse-bench/MUSE-News``/``MUSE-Books`` downloads):

    raw/forget.txt, raw/holdout.txt, raw/retain*.txt   training text, one long text per file
    verbmem/forget.json                                 [{"prompt", "gt"}]: VerbMem's prompts
    knowmem/{forget,retain}_qa.json                     [{"question", "answer"}]
    knowmem/{forget,retain}_qa_icl.json                 the few-shot pairs of each split
    privleak/{forget,holdout}.json                      ["text", ...]: the membership-inference sets

What each part becomes in the audit, after MUSE's own ``eval.py``:

- Min-K% and PrivLeak compare ``privleak/forget.json`` with ``privleak/holdout.json`` (MUSE's
  ``forget_holdout_Min-40%``). ``privleak/retain.json`` feeds only MUSE's forget–retain AUCs, which the
  audit does not compute, so it is not read.
- VerbMem uses ``verbmem/forget.json``'s prompts and ground truths as given. The holdout baseline (MUSE
  has none) cuts each holdout text after the given prompts' median token length, so that both sides
  are probed the same way.
- KnowMem scores ``forget_qa`` with ``forget_qa_icl``'s pairs as the few-shot prefix and ``retain_qa``
  with ``retain_qa_icl``'s: one ICL file per split. The muse_bench repository's older names
  ``retain2_qa.json`` and ``retain2_qa_icl.json`` are read when the new ones are absent.
- The raw files are split the way MUSE's ``baselines/dataset.py`` splits a ``.txt`` for training: the
  whole file is tokenized without special tokens and cut into consecutive chunks of max_len − 1 = 2047
  tokens (max_len is 2048 in MUSE's unlearning scripts, and each row gets a BOS), each decoded back to
  text. MUSE then tops up the last, short chunk with tokens from the start of the file so that every
  training row is full; an audit needs no full rows, and the top-up would repeat the first chunk's
  opening, so the last chunk stays short. ``raw/retain*.txt`` is the retain set (recorded, and the
  default GPTQ/AWQ calibration text); ``raw/forget.txt`` and ``raw/holdout.txt`` are the forget and
  holdout sets where ``privleak/`` is missing (VerbMem cuts its prompts from the forget set, whichever
  it is, where ``verbmem/`` is missing). Cutting needs the audited model's tokenizer, so
  ``read_muse_dir`` checks every file first and ``audit_data`` cuts later.

Every defect is a one-line ``InputError`` naming the file, and, inside a JSON list, the item's index.

The directory often comes from a vendor, so a file in it is read only if it resolves to a regular file
inside it: a link out of it (``privleak/forget.json -> /etc/...``) would put an outside file's text in the
report's evidence, a FIFO would hang the read and ``/dev/zero`` would fill the memory. The one exception
is a Hugging Face cache snapshot (``<repo>/snapshots/<revision>/``), whose files are links to
``<repo>/blobs/<sha256>``: there the cache repo, the nearest ``snapshots`` parent with a ``blobs``
sibling, is the limit instead.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .data import PromptSet, QASet, TextSet, check_text, concat_sha256, read_input
from .errors import InputError, parse
from .pipeline.types import AuditData

CHUNK_TOKENS = 2047  # MUSE's max_len 2048 (baselines/scripts/unlearn_*.sh) less the BOS each row gets
LAYOUT = "a MUSE corpus directory (raw/forget.txt, raw/holdout.txt, and optionally verbmem/, knowmem/, privleak/)"


@dataclass(frozen=True)
class _File:
    rel: str
    path: Path
    sha256: str
    text: str


@dataclass(frozen=True)
class MuseCorpus:
    """A checked MUSE directory: every file it holds that the audit reads, parsed. ``audit_data`` turns it
    into the audit's sets once the audited model's tokenizer is known (the raw text is cut in tokens)."""

    root: Path
    raw_forget: _File
    raw_holdout: _File
    raw_retain: tuple[_File, ...]
    verbmem: PromptSet | None
    forget_qa: QASet | None
    retain_qa: QASet | None
    forget_icl: QASet | None
    retain_icl: QASet | None
    privleak: dict[str, TextSet]  # "forget" and "holdout", or empty
    calibration: TextSet | None = None
    relearn: TextSet | None = None  # --relearn-data, for the relearn-* attacks (default: the retain set)

    def audit_data(self, tokenizer) -> AuditData:
        def chunked(f: _File) -> TextSet:
            return TextSet(path=str(f.path), sha256=f.sha256, texts=split_raw(tokenizer, f.text, f.path))

        if len(self.raw_retain) == 1:
            retain = chunked(self.raw_retain[0])
        elif self.raw_retain:  # several files, one set: the glob names them, the hash covers them in name order
            texts = tuple(t for f in self.raw_retain for t in split_raw(tokenizer, f.text, f.path))
            retain = TextSet(path=str(self.root / "raw" / "retain*.txt"), sha256=concat_sha256([f.path for f in self.raw_retain]), texts=texts)
        else:
            retain = None
        return AuditData(
            forget=self.privleak.get("forget") or chunked(self.raw_forget),
            holdout=self.privleak.get("holdout") or chunked(self.raw_holdout),
            retain=retain,
            forget_qa=self.forget_qa,
            retain_qa=self.retain_qa,
            icl=self.forget_icl,
            retain_icl=self.retain_icl,
            verbmem_forget=self.verbmem,
            calibration=self.calibration,
            relearn=self.relearn,
            source=self.manifest(),
        )

    def manifest(self) -> dict:
        """The directory and every file read from it, with its sha256 and what the audit used it for."""
        pl = bool(self.privleak)
        cut = "" if self.verbmem is not None else ", VerbMem with prompts cut by the tool"  # from the forget set, whichever it is
        uses = {
            self.raw_forget: "checked, not scored (privleak/forget.json replaces it)" if pl else f"forget set (Min-K%{cut})",
            self.raw_holdout: "checked, not scored (privleak/holdout.json replaces it)" if pl else "holdout set (Min-K%, VerbMem baseline)",
        }
        uses.update({f: "retain set (recorded; default GPTQ/AWQ calibration)" for f in self.raw_retain})
        files = {f.rel: {"sha256": f.sha256, "used_for": use} for f, use in uses.items()}
        for s, use in ((self.verbmem, "VerbMem forget prompts, used as given"), (self.forget_qa, "KnowMem forget"),
                       (self.retain_qa, "KnowMem retain (utility)"), (self.forget_icl, "KnowMem few-shot prefix (forget split)"),
                       (self.retain_icl, "KnowMem few-shot prefix (retain split)"),
                       (self.privleak.get("forget"), f"forget set (Min-K%, PrivLeak{cut})"),
                       (self.privleak.get("holdout"), "holdout set (Min-K%, PrivLeak, VerbMem baseline)")):
            if s is not None:
                files[Path(s.path).relative_to(self.root).as_posix()] = {"sha256": s.sha256, "used_for": use}
        return {"format": "MUSE", "path": str(self.root), "raw_chunk_tokens": CHUNK_TOKENS, "files": files}


def read_muse_dir(path: str | Path, calibration: TextSet | None = None) -> MuseCorpus:
    """Check and parse a MUSE corpus directory; nothing is cut yet (see ``MuseCorpus.audit_data``)."""
    root = Path(path)
    if not root.exists():
        raise InputError(f"{root}: MUSE directory not found")
    if not root.is_dir():
        raise InputError(f"{root}: --muse expects {LAYOUT}, not a file")
    safe = _Confined(root)
    raw = root / "raw"
    retain_files = sorted(raw.glob("retain*.txt")) if raw.is_dir() else []
    privleak = {split: _texts(safe(root / "privleak" / f"{split}.json")) for split in ("forget", "holdout")
                if (root / "privleak" / f"{split}.json").exists()}
    if len(privleak) == 1:
        have, lack = ("forget", "holdout") if "forget" in privleak else ("holdout", "forget")
        raise InputError(f"{root / 'privleak' / f'{lack}.json'}: not found, but privleak/{have}.json is; "
                         "the membership test needs both or neither")
    return MuseCorpus(
        root=root,
        raw_forget=_raw(root, "raw/forget.txt", safe),
        raw_holdout=_raw(root, "raw/holdout.txt", safe),
        raw_retain=tuple(_raw(root, f.relative_to(root).as_posix(), safe) for f in retain_files),
        verbmem=_optional(root, ("verbmem/forget.json",), _prompts, safe),
        forget_qa=_optional(root, ("knowmem/forget_qa.json",), _qa, safe),
        retain_qa=_optional(root, ("knowmem/retain_qa.json", "knowmem/retain2_qa.json"), _qa, safe),
        forget_icl=_optional(root, ("knowmem/forget_qa_icl.json",), _qa, safe),
        retain_icl=_optional(root, ("knowmem/retain_qa_icl.json", "knowmem/retain2_qa_icl.json"), _qa, safe),
        privleak=privleak,
        calibration=calibration,
    )


def split_raw(tokenizer, text: str, path: Path | str = "") -> tuple[str, ...]:
    """MUSE's split of a raw ``.txt``: consecutive chunks of ``CHUNK_TOKENS`` tokens, decoded to text."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    chunks = (tokenizer.decode(ids[i : i + CHUNK_TOKENS], skip_special_tokens=True, clean_up_tokenization_spaces=False)
              for i in range(0, len(ids), CHUNK_TOKENS))
    texts = tuple(c for c in chunks if c.strip())
    if not texts:
        raise InputError(f"{path}: no text left after tokenizing")
    return texts


class _Confined:
    """Passes a path on to be read only if it resolves to a regular file inside the MUSE directory, or,
    for a Hugging Face cache snapshot, inside its cache repo (see the module docstring)."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        self.limit = next((p.parent for p in self.root.parents if p.name == "snapshots" and (p.parent / "blobs").is_dir()),
                          self.root)

    def __call__(self, path: Path) -> Path:
        try:
            real = path.resolve()
        except (OSError, RuntimeError):  # a link loop
            raise InputError(f"{path}: a symbolic link loop; refusing to read it") from None
        if not real.is_relative_to(self.limit):
            where = "the MUSE directory" if self.limit == self.root else f"the MUSE directory's cache repo {self.limit}"
            raise InputError(f"{path}: links to {real}, outside {where}; refusing to read it")
        try:
            mode = os.stat(real).st_mode
        except OSError:
            return path  # missing or unreadable: the reader's own one-line error names it
        if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):  # a directory gets the reader's own error
            raise InputError(f"{path}: not a regular file (a FIFO, socket or device); --muse reads only regular files")
        return path


def _optional(root: Path, names: tuple[str, ...], reader, safe: _Confined):
    """The first of ``names`` that exists, read with ``reader``, or None when none does."""
    for name in names:
        if (root / name).exists():
            return reader(safe(root / name))
    return None


def _raw(root: Path, rel: str, safe: _Confined) -> _File:
    path = root / rel
    if not path.exists():
        raise InputError(f"{path}: not found; --muse expects {LAYOUT}")
    text = read_input(safe(path), "raw text")
    if not text.strip():
        raise InputError(f"{path}: empty raw text file")
    # read_input decoded the bytes strictly, so encoding the text again gives exactly the file's bytes.
    return _File(rel, path, hashlib.sha256(text.encode("utf-8")).hexdigest(), text)


def _json_list(path: Path, what: str) -> tuple[list, str]:
    text = read_input(path, "JSON")
    items = parse(text, str(path))
    if not isinstance(items, list):
        raise InputError(f"{path}: expected a JSON list of {what}, got {type(items).__name__}")
    if not items:
        raise InputError(f"{path}: empty list; expected {what}")
    return items, hashlib.sha256(text.encode("utf-8")).hexdigest()


def _string(path: Path, where: str, value, what: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{path}{where}: {what} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise InputError(f"{path}{where}: {what} is empty")
    return check_text(value, f"{path}{where}: {what}")


def _fields(path: Path, items: list, keys: tuple[str, str], what: str) -> tuple[tuple[str, str], ...]:
    out = []
    for i, obj in enumerate(items):
        if not isinstance(obj, dict):
            raise InputError(f"{path}[{i}]: expected an object {what}, got {type(obj).__name__}")
        for key in keys:
            if key not in obj:
                raise InputError(f"{path}[{i}]: missing field {key!r}")
        out.append(tuple(_string(path, f"[{i}]", obj[k], f"field {k!r}") for k in keys))
    return tuple(out)


def _prompts(path: Path) -> PromptSet:
    items, sha = _json_list(path, '{"prompt", "gt"} objects')
    return PromptSet(path=str(path), sha256=sha, pairs=_fields(path, items, ("prompt", "gt"), '{"prompt", "gt"}'))


def _qa(path: Path) -> QASet:
    items, sha = _json_list(path, '{"question", "answer"} objects')
    return QASet(path=str(path), sha256=sha, pairs=_fields(path, items, ("question", "answer"), '{"question", "answer"}'))


def _texts(path: Path) -> TextSet:
    items, sha = _json_list(path, "texts (strings)")
    texts = tuple(_string(path, f"[{i}]", t, "each item") for i, t in enumerate(items))
    return TextSet(path=str(path), sha256=sha, texts=texts)
