"""Attesting a report: read it once, hash those bytes, build the Statement, sign, write the envelope."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import InputError
from . import ENVELOPE_NAME, dsse
from .keys import Key
from .statement import build_statement


def attest(report_json: Path, key: Key) -> tuple[Path, dict]:
    """Write ``report.intoto.json`` beside ``report_json``, atomically (a temporary sibling renamed into
    place: a failure leaves the previous envelope or none, never half of one). Returns its path and the
    Statement it carries."""
    from ..data import read_input
    from ..report.load import load_report
    from ..report.write import write_text_atomic

    report_json = Path(report_json)
    text = read_input(report_json, "report")
    report = load_report(report_json, text)  # a file that is not a valid report is refused, not attested
    statement = build_statement(report, hashlib.sha256(text.encode("utf-8")).hexdigest(), report_json.name, str(report_json))
    target = report_json.parent / ENVELOPE_NAME
    try:
        write_text_atomic(target, json.dumps(dsse.sign(statement, key), indent=2) + "\n")
    except OSError as exc:
        raise InputError(f"{target}: cannot write the attestation ({exc.strerror or exc})") from None
    return target, statement
