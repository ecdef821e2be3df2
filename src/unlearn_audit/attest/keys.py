"""PEM keys for signing and checking attestations, through the ``cryptography`` package (the attest extra).

Ed25519 and ECDSA on P-256 or P-384: the key types DSSE and in-toto tooling verify everywhere
(securesystemslib's ``ed25519``, ``ecdsa-sha2-nistp256`` and ``ecdsa-sha2-nistp384`` schemes; ECDSA
signatures DER-encoded, as those schemes expect). A signature's key id is the sha256 of the public key's
DER SubjectPublicKeyInfo, so anyone holding the public key computes the same id.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, first_line

EXTRA = "install unlearn-audit[attest] (the cryptography package)"


def require_cryptography():
    """The ``cryptography`` package, or a one-line InputError naming the extra that installs it."""
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise InputError(f"attestations need the cryptography package: {EXTRA}") from None


@dataclass(frozen=True)
class Key:
    """A loaded key: the private key (None for a public key alone), the public key, and how it signs."""

    private: object | None
    public: object
    scheme: str  # securesystemslib's name for it: ed25519, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384
    keyid: str

    def sign(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives.asymmetric import ec

        if self.scheme == "ed25519":
            return self.private.sign(data)
        return self.private.sign(data, ec.ECDSA(_hash(self.scheme)))

    def verifies(self, signature: bytes, data: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            if self.scheme == "ed25519":
                self.public.verify(signature, data)
            else:
                self.public.verify(signature, data, ec.ECDSA(_hash(self.scheme)))
        except InvalidSignature:
            return False
        return True


def _hash(scheme: str):
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA384() if scheme.endswith("384") else hashes.SHA256()


def _scheme(public, where: Path) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    if isinstance(public, ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name in ("secp256r1", "secp384r1"):
        return "ecdsa-sha2-nistp256" if public.curve.name == "secp256r1" else "ecdsa-sha2-nistp384"
    kind = f"an ECDSA {public.curve.name} key" if isinstance(public, ec.EllipticCurvePublicKey) else f"a {type(public).__name__.lstrip('_')}"
    raise InputError(f"{where}: {kind}; attestations are signed with Ed25519 or ECDSA P-256/P-384 keys "
                     "(openssl genpkey -algorithm ed25519 -out key.pem)")


def keyid(public) -> str:
    """The sha256 of the public key's DER SubjectPublicKeyInfo, in hex."""
    from cryptography.hazmat.primitives import serialization

    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _read(path: Path, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a {what}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if b"-----BEGIN " not in data:
        raise InputError(f"{path}: not a PEM file (expected a -----BEGIN ...----- block)")
    return data


def load_private_key(path: Path) -> Key:
    """A PEM private key (PKCS#8, as ``openssl genpkey`` writes it) that signs; unencrypted."""
    require_cryptography()
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    data = _read(path, "private key")
    if b"PRIVATE KEY" not in data:
        raise InputError(f"{path}: not a PEM private key (a public key signs nothing; give the private key)")
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # encrypted, and no password was given
        raise InputError(f"{path}: an encrypted private key; decrypt it to a file only you can read "
                         "(openssl pkey -in KEY -out PLAIN.pem) and give that") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InputError(f"{path}: not a usable PEM private key ({first_line(exc)})") from None
    public = private.public_key()
    return Key(private, public, _scheme(public, path), keyid(public))


def load_public_key(path: Path) -> Key:
    """A PEM public key (SubjectPublicKeyInfo, as ``openssl pkey -pubout`` writes it)."""
    require_cryptography()
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    data = _read(path, "public key")
    if b"PRIVATE KEY" in data:
        raise InputError(f"{path}: a private key; verify with its public key (openssl pkey -in KEY -pubout -out PUB.pem)")
    try:
        public = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InputError(f"{path}: not a usable PEM public key ({first_line(exc)})") from None
    return Key(None, public, _scheme(public, path), keyid(public))

