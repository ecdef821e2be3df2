"""Signed attestations of a finished audit: an in-toto v1 Statement in a DSSE envelope.

``attest`` turns a report.json into ``report.intoto.json`` beside it: the Statement's subjects are the
audited model's files by sha256 (as the report recorded them when they were read), and its predicate
(``PREDICATE_TYPE``) carries the verdict, the policy, the schemes, the data's hashes, the versions and
the report's own sha256. ``verify`` checks the signature, the model's files and the report against it.

- in-toto Statement v1: https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md
- DSSE envelope and its pre-authentication encoding (PAE): https://github.com/secure-systems-lab/dsse

The files: ``keys.py`` (PEM keys, Ed25519 or ECDSA, through ``cryptography``), ``statement.py`` (what
is attested), ``dsse.py`` (the envelope: PAE, signing, reading, checking the signature), ``check.py``
(the model's files and the report against a statement), ``model_signature.py`` (an OpenSSF model-signing
signature on the audited model, checked before the audit).
"""

#: The predicate's type: this project's URI for version 1 of the predicate (docs/attestation.md).
PREDICATE_TYPE = "https://unlearn-audit.dev/attestation/v1"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
#: Written beside the report.json it attests.
ENVELOPE_NAME = "report.intoto.json"
#: Subjects from the adapter merged into the audited model (``audit --adapter``) are named under this prefix.
ADAPTER_PREFIX = "adapter/"
