"""The workload: every probe's data tokenized once with the audited model's tokenizer, plus the text
that calibrated (GPTQ, AWQ) and relearning schemes need. Every variant reuses it as is."""

from __future__ import annotations

from ..data import TextSet, load_texts
from ..errors import InputError
from ..probes.registry import PROBES
from ..quantize.calibration import MAX_TOKENS
from ..resources import data_dir
from .types import AuditConfig, AuditData, Workload


def check_sets(data: AuditData) -> list[str]:
    """Refuse a forget set that shares texts with the holdout set (membership inference compares the
    two, so a shared text is both member and non-member); note duplicates within a set."""
    shared = set(data.forget.texts) & set(data.holdout.texts)
    if shared:
        raise InputError(f"{data.holdout.path}: {len(shared)} text(s) also appear in the forget set {data.forget.path}; "
                         "forget and holdout must be disjoint for the membership test")
    notes = []
    for name in ("forget", "holdout", "retain"):
        ts = getattr(data, name)
        if ts is not None and len(set(ts.texts)) < len(ts.texts):
            notes.append(f"{name}: {len(ts.texts) - len(set(ts.texts))} duplicate record(s) in {ts.path}, each scored as given")
    return notes


def build_workload(tokenizer, context_length: int | None, data: AuditData, cfg: AuditConfig, schemes: list,
                   provenance: list[str] = ()) -> Workload:
    """Each registered probe prepares its splits; ``provenance`` notes (pickle weights, sampled sets) follow
    the probes' own notes in the report."""
    notes = check_sets(data)
    prepared, record = {}, {}
    for probe in PROBES.values():
        done = probe.prepare(tokenizer, data, cfg, context_length, notes)
        prepared[probe.name], record = done.items, {**record, **done.record}
    calibration, calibration_source = (), None
    if any(s.calibrated for s in schemes):
        given = "--calibration" if data.calibration else "retain set"
        calibration, calibration_source = calibration_tokens(tokenizer, data.calibration or data.retain, given)
    relearn, relearn_source = ((), None)
    if any(s.relearns for s in schemes):
        relearn, relearn_source = relearn_tokens(tokenizer, data)
    return Workload(prepared, record, tuple(notes) + tuple(provenance), calibration, calibration_source, relearn, relearn_source)


def relearn_tokens(tokenizer, data: AuditData) -> tuple[tuple[tuple[int, ...], ...], dict | None]:
    """The relearning attack's text: --relearn-data, else the retain set; none shares a document with
    the forget set (Hu et al. relearn on public, related text, never on what was unlearned)."""
    texts, source = (data.relearn, "--relearn-data") if data.relearn is not None else (data.retain, "retain set")
    if texts is None:
        return (), None  # each relearn-* variant is then skipped with the reason
    shared = set(texts.texts) & set(data.forget.texts)
    if shared:
        raise InputError(f"{texts.path}: {len(shared)} relearning text(s) also appear in the forget set {data.forget.path}; "
                         "the relearning attack must not train on the forget set")
    seqs = tuple(tuple(tokenizer(t)["input_ids"]) for t in texts.texts)
    return seqs, {"source": source, "path": texts.path, "sha256": texts.sha256, "sequences": len(seqs)}


def calibration_tokens(tokenizer, texts: TextSet | None, source: str) -> tuple[tuple[tuple[int, ...], ...], dict]:
    """GPTQ/AWQ calibration sequences: the given texts, or the generic text shipped with the tool
    (Zhang et al. note that a general corpus does not target the forget domain; which one was used is
    recorded)."""
    if texts is None:
        texts, source = load_texts(data_dir("probes") / "calibration.jsonl"), "generic text shipped with the tool"
    seqs = tuple(tuple(tokenizer(t)["input_ids"]) for t in texts.texts)
    return seqs, {"source": source, "path": texts.path, "sha256": texts.sha256, "sequences": len(seqs),
                  "tokens": sum(min(len(s), MAX_TOKENS) for s in seqs)}
