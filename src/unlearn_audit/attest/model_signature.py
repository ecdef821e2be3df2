"""An OpenSSF model-signing signature on the audited model, checked before the audit when asked.

A publisher signs a model directory with the ``model-signing`` package (``model_signing sign key``): a
Sigstore bundle whose DSSE payload lists every file of the directory by sha256, signed with an elliptic
curve key. ``audit --model-signature SIG --model-signature-key PUB`` verifies it with that package before
any work, so an audit never reports on bytes other than the ones the publisher signed: a signature that
does not verify is bad input (exit 2). A verified one is recorded in ``inputs.model.signature``.

Only key-based signatures are checked: they verify offline. A Sigstore (keyless) signature needs the
transparency log and the certificate authority on the network, which an audit does not reach.
https://github.com/sigstore/model-transparency
"""

from __future__ import annotations

from pathlib import Path

from ..data import sha256_file
from ..errors import InputError, first_line
from ..versions import installed_version

EXTRA = "install unlearn-audit[model-signing]"


def _file(path: Path, flag: str, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{flag} {path}: {what} {'is a directory' if path.is_dir() else 'not found'}")
    return path


def verify_model_signature(model, signature: Path, public_key: Path | None) -> dict:
    """Verify ``signature`` over the model directory ``model`` (a ``hub.ModelRef``) with ``public_key``;
    the report's record of it, or a one-line InputError saying why it cannot be accepted."""
    if public_key is None:
        raise InputError("--model-signature needs --model-signature-key PUB.pem: only key-based signatures are verified "
                         "(a Sigstore keyless signature needs the network)")
    if getattr(model, "repo_id", None):
        raise InputError(f"--model-signature: MODEL_DIR {model.repo_id} is a Hub id; a signature covers a whole directory, "
                         "so download the model and give its directory")
    signature, public_key = _file(signature, "--model-signature", "signature"), _file(public_key, "--model-signature-key", "public key")
    try:
        from model_signing import verifying
    except ImportError:
        raise InputError(f"--model-signature needs the model-signing package: {EXTRA}") from None
    try:
        verifying.Config().use_elliptic_key_verifier(public_key=public_key).verify(Path(model.path), signature)
    except Exception as exc:  # the library raises ValueError, KeyError, JSONDecodeError, AttributeError, ... for bad input
        raise InputError(f"MODEL_DIR {model.path}: the model-signing signature {signature} does not verify with {public_key} "
                         f"({type(exc).__name__}: {first_line(exc)})") from None
    return {"file": str(signature), "sha256": sha256_file(signature), "public_key": str(public_key),
            "public_key_sha256": sha256_file(public_key), "verified": True,
            "method": f"OpenSSF model-signing, elliptic-curve key (model-signing {installed_version('model-signing')})"}
