"""The DSSE envelope: the signed payload, its type, and the signatures over its PAE.

PAE (pre-authentication encoding, DSSE v1): ``"DSSEv1" SP len(type) SP type SP len(body) SP body``, with
the lengths in ASCII decimal; the signature is over these bytes, never over the JSON around them, so no
canonical JSON is needed. Payload and signatures are standard base64. The crypto is ``cryptography``'s
(keys.py); tests check every envelope with securesystemslib's independent implementation.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

from ..errors import InputError, parse
from . import PAYLOAD_TYPE, PREDICATE_TYPE, STATEMENT_TYPE
from .keys import Key


def pae(payload_type: str, payload: bytes) -> bytes:
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def sign(statement: dict, key: Key) -> dict:
    """The envelope of ``statement`` signed with ``key``."""
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    sig = key.sign(pae(PAYLOAD_TYPE, payload))
    return {"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(payload).decode("ascii"),
            "signatures": [{"keyid": key.keyid, "sig": base64.b64encode(sig).decode("ascii")}]}


def _b64(text, where: str, what: str) -> bytes:
    if not isinstance(text, str):
        raise InputError(f"{where}: not a DSSE envelope ({what} is not a base64 string)")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{where}: not a DSSE envelope ({what} is not valid base64)") from None


def read(path: Path) -> tuple[dict, dict]:
    """The envelope in ``path`` and the in-toto Statement it carries, each checked for shape (not yet for
    its signature); anything else is a one-line InputError."""
    from ..data import read_input

    where = str(path)
    envelope = parse(read_input(path, "attestation"), where)
    if not isinstance(envelope, dict) or not {"payloadType", "payload", "signatures"} <= envelope.keys():
        raise InputError(f"{where}: not a DSSE envelope (expected a JSON object with payloadType, payload and signatures)")
    if envelope["payloadType"] != PAYLOAD_TYPE:
        raise InputError(f"{where}: payloadType {envelope['payloadType']!r}; an in-toto attestation has {PAYLOAD_TYPE}")
    sigs = envelope["signatures"]
    if not isinstance(sigs, list) or not sigs or not all(isinstance(s, dict) and "sig" in s for s in sigs):
        raise InputError(f"{where}: not a DSSE envelope (signatures must be a non-empty list of {{keyid, sig}})")
    for i, s in enumerate(sigs):
        _b64(s["sig"], where, f"signatures[{i}].sig")
    statement = parse(_b64(envelope["payload"], where, "payload").decode("utf-8", "replace"), f"{where} (payload)")
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise InputError(f"{where}: the payload is not an in-toto v1 Statement (_type {STATEMENT_TYPE})")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise InputError(f"{where}: predicateType {statement.get('predicateType')!r}, not an unlearn-audit attestation ({PREDICATE_TYPE})")
    subject, predicate = statement.get("subject"), statement.get("predicate")
    if not isinstance(subject, list) or not all(isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("digest"), dict)
                                                for s in subject) or not isinstance(predicate, dict):
        raise InputError(f"{where}: the Statement's subject or predicate is malformed")
    return envelope, statement


def signed_by(envelope: dict, key: Key) -> bool:
    """Whether a signature in ``envelope`` verifies over the PAE with ``key``. Every signature is tried:
    DSSE's keyid is an unauthenticated hint, so it neither admits nor excludes one."""
    body = pae(envelope["payloadType"], base64.b64decode(envelope["payload"]))
    return any(key.verifies(base64.b64decode(s["sig"]), body) for s in envelope["signatures"])
