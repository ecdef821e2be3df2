"""``attest`` and ``verify``: a signed in-toto attestation of a finished audit, and its check (attest/)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import ENV, REVISION_HELP, InputError, app, model_ref, say

KEY_HELP = "PEM private key (PKCS#8) to sign with: Ed25519 or ECDSA P-256/P-384 (the attest extra; see docs/attestation.md)."


def load_signing_key(path: Path):
    """The private key, read before any work so that a wrong key costs nothing (``audit --attest-key``)."""
    from ..attest.keys import load_private_key

    return load_private_key(path)


def write_attestation(report_json: Path, key) -> Path:
    """report.intoto.json beside ``report_json``, with one line on stderr saying what was signed."""
    from ..attest.sign import attest

    path, statement = attest(report_json, key)
    say(f"wrote {path}: {len(statement['subject'])} model file(s) and the report attested, verdict {statement['predicate']['verdict']}, "
        f"signed with {key.scheme} key {key.keyid[:16]}")
    return path


@app.command("attest")
def attest_command(
    report_json: Path = typer.Argument(..., metavar="REPORT_JSON", help="A report.json written by `audit`."),
    key: Path = typer.Option(..., "--key", envvar=ENV("attest-key"), help=KEY_HELP),
) -> None:
    """Sign a finished audit: write report.intoto.json (an in-toto Statement in a DSSE envelope) beside REPORT_JSON.

    Exit codes: 0 written, 2 bad input (a missing or invalid report or key, or the cryptography package missing).
    """
    write_attestation(report_json, load_signing_key(key))


@app.command("verify")
def verify_command(
    envelope: Path = typer.Argument(..., metavar="ATTESTATION", help="A report.intoto.json written by `attest` or `audit --attest-key`."),
    key: Path = typer.Option(..., "--key", envvar=ENV("verify-key"), help="PEM public key of the signer (openssl pkey -in KEY -pubout)."),
    model: Optional[Path] = typer.Option(None, "--model", help="The model to check against the attested files: a local directory, or a Hub id "
                                         "(org/name; see --revision). Not given: the model is not checked."),
    revision: Optional[str] = typer.Option(None, help=REVISION_HELP),
    adapter: Optional[Path] = typer.Option(None, help="The LoRA adapter directory, when the attested audit merged one (--adapter)."),
    report: Optional[Path] = typer.Option(None, help="The report.json to check (default: the one beside ATTESTATION, when there is one)."),
) -> None:
    """Check an attestation: its signature, the model's files against its subjects, and the report against its hash.

    Prints one line per mismatch. Exit codes: 0 all hold, 1 a mismatch, 2 bad input (a missing file, not PEM, not an envelope).
    """
    import sys

    from ..attest import dsse
    from ..attest.check import check_model, check_report
    from ..attest.keys import load_public_key

    public = load_public_key(key)
    envelope_doc, statement = dsse.read(envelope)
    model_dir = model_ref(model, "--model", "attested", revision)
    adapter_dir = model_ref(adapter, "--adapter", "adapter", adapter=True)
    for flag, ref in (("--model", model_dir), ("--adapter", adapter_dir)):
        if ref is not None and not ref.path.is_dir():
            raise InputError(f"{flag} {ref.path}: not a directory")
    if report is None:  # the attested report's name beside the envelope, where attest wrote it (a plain name only)
        name = str((statement["predicate"].get("report") or {}).get("name") or "report.json")
        beside = envelope.parent / name
        report = beside if name not in (".", "..") and not any(c in name for c in "/\\\0") and beside.is_file() else None
    found, notes = [], []
    if not dsse.signed_by(envelope_doc, public):
        keyids = ", ".join(str(s.get("keyid", "?"))[:16] for s in envelope_doc["signatures"])
        found.append(f"signature: no signature in {envelope} verifies with {key} (its key id {public.keyid[:16]}; the envelope names {keyids})")
    if report is not None:
        found += check_report(statement, report)
    else:
        notes.append("report not checked (give --report report.json)")
    if model_dir is not None:
        model_found, model_notes = check_model(statement, model_dir.path, adapter_dir.path if adapter_dir is not None else None)
        found, notes = found + model_found, notes + model_notes
    else:
        notes.append("model files not checked (give --model DIR or a Hub id)")
    for line in found:
        sys.stdout.write(line + "\n")
    for note in notes:
        say(f"note: {note}")
    predicate = statement["predicate"]
    if found:
        say(f"verify: {len(found)} mismatch(es); the attestation does not hold (exit 1)")
        raise typer.Exit(1)
    checked = ["signature"] + (["report"] if report is not None else []) + ([f"{len(statement['subject'])} model file(s)"] if model_dir is not None else [])
    say(f"verified {', '.join(checked)}: verdict {predicate.get('verdict')} attested by key {public.keyid[:16]}")
