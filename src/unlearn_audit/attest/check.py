"""Checking files against a Statement: the model's files against its subjects, a report against the
sha256 in its predicate. Each finding is one line naming the file; an empty list means all hold."""

from __future__ import annotations

from pathlib import Path

from ..data import sha256_file
from ..errors import InputError
from . import ADAPTER_PREFIX


def _split(statement: dict) -> tuple[dict[str, str | None], dict[str, str | None], list[str]]:
    """The subjects as {name: sha256} for the model and for its adapter, and the names that are not a
    plain file name (a statement could name ``../../etc/passwd``; such a subject is never opened)."""
    model, adapter, bad = {}, {}, []
    for s in statement["subject"]:
        name, digest = s["name"], s["digest"].get("sha256")
        target, plain = (adapter, name[len(ADAPTER_PREFIX):]) if name.startswith(ADAPTER_PREFIX) else (model, name)
        if plain in ("", ".", "..") or any(c in plain for c in "/\\\0"):
            bad.append(name)
        else:
            target[plain] = digest if isinstance(digest, str) else None
    return model, adapter, bad


def _compare(subjects: dict[str, str | None], directory: Path, label: str, prefix: str = "") -> list[str]:
    found = []
    for name, want in sorted(subjects.items()):
        f = directory / name
        if want is None:
            found.append(f"{label}: subject {prefix}{name} has no sha256 digest")
        elif not f.is_file():
            found.append(f"{label}: {prefix}{name} is attested but missing from {directory}")
        elif (got := sha256_file(f)) != want:
            found.append(f"{label}: {prefix}{name} has sha256 {got}, attested {want}")
    return found


def _unattested(directory: Path, attested: set[str]) -> list[str]:
    """Files the loader would read from ``directory`` that no subject names: a new shard index, a
    tokenizer or chat template added after the audit changes the model as much as a swapped weight."""
    from ..models.hub import SIDE
    from ..models.loading import weight_files

    try:
        read = {f.name for f in weight_files(directory, allow_pickle=True, pickle_flag=False).read}
    except InputError as exc:
        return [f"model: the loader cannot choose the weights in {directory} ({exc})"]
    read |= {name for name in SIDE if (directory / name).is_file()}
    return [f"model: {name} in {directory} is read by the loader but not attested" for name in sorted(read - attested)]


def check_model(statement: dict, model_dir: Path, adapter_dir: Path | None = None) -> tuple[list[str], list[str]]:
    """(mismatches, notes): every subject hashed in ``model_dir`` (and ``adapter_dir``), and the files
    the loader would read that are not subjects."""
    model, adapter, bad = _split(statement)
    found = [f"model: subject {name!r} is not a file name inside a model directory" for name in bad]
    found += _compare(model, model_dir, "model") + _unattested(model_dir, set(model))
    notes = []
    if adapter and adapter_dir is None:
        notes.append(f"the attested model has an adapter merged in ({len(adapter)} file(s)); give --adapter DIR to check them")
    elif adapter_dir is not None and not adapter:
        found.append(f"adapter: {adapter_dir} was given, and the attested model has no adapter")
    elif adapter_dir is not None:
        found += _compare(adapter, adapter_dir, "adapter", ADAPTER_PREFIX)
    return found, notes


def check_report(statement: dict, report: Path) -> list[str]:
    """The report file, byte for byte, against the sha256 the predicate attests."""
    want = (statement["predicate"].get("report") or {}).get("sha256")
    if not Path(report).exists():
        raise InputError(f"{report}: report not found")
    if Path(report).is_dir():
        raise InputError(f"{report}: is a directory, not a report.json")
    try:
        got = sha256_file(report)
    except OSError as exc:
        raise InputError(f"{report}: cannot read the report ({exc.strerror or exc})") from None
    if got != want:
        return [f"report: {report} has sha256 {got}, attested {want} (not the report that was attested)"]
    return []
