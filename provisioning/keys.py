"""The provisioning key pair: the administrator signs bundles with it, the box trusts only its public half.

The private key stays on the administrator's PC (PKCS#8 PEM, encrypted when a passphrase is
given). The box holds one public key in ``<state>/provisioning/trusted.pub``, put there when the
image is built or by the first enrolment (`esignbox provision enroll`); a bundle signed by any
other key is refused. Ed25519 is the default; ECDSA P-256 (SHA-256) is there for HSM-held or
policy-bound keys.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from firmware.operations import trust
from firmware.store import Database, immediate

from .errors import ProvisioningRefused

ALGORITHMS = ("ed25519", "ecdsa-p256")
_NOT_A_PROVISIONING_KEY = "a provisioning key must be Ed25519 or ECDSA P-256"

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


def generate(algorithm: str = "ed25519") -> PrivateKey:
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unknown provisioning key algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}")


def private_pem(key: PrivateKey, passphrase: bytes | None) -> bytes:
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def public_pem(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private(data: bytes, passphrase: bytes | None) -> PrivateKey:
    key = serialization.load_pem_private_key(data, password=passphrase or None)
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(_NOT_A_PROVISIONING_KEY)
    _checked(key.public_key())  # the curve
    return key


def load_public(data: bytes) -> PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ValueError(f"not a PEM public key: {exc}") from exc
    return _checked(key)


def _checked(key: PublicKeyTypes) -> PublicKey:
    """The key, if it is one a provisioning key can be (Ed25519, ECDSA P-256); ValueError if not."""
    if isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
        _algorithm_of(key)
        return key
    raise ValueError(_NOT_A_PROVISIONING_KEY)


def _algorithm_of(key: PublicKey) -> str:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ecdsa-p256"
    raise ValueError(_NOT_A_PROVISIONING_KEY)


def algorithm(key: PublicKey) -> str:
    return _algorithm_of(key)


def key_id(key: PublicKey) -> str:
    """SHA-256 of the SubjectPublicKeyInfo DER, hex (firmware.operations.trust.key_id): names the key everywhere."""
    return trust.key_id(_spki(key))


def sign(key: PrivateKey, data: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def verify(key: PublicKey, signature: bytes, data: bytes) -> bool:
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


# -- the box side: the one trusted key -------------------------------------------------------------

def trusted_key_path(state_dir: Path) -> Path:
    return trust.trusted_key_path(state_dir)


def trusted_key(state_dir: Path) -> PublicKey:
    path = trusted_key_path(state_dir)
    if not path.exists():
        raise ProvisioningRefused(
            "no-trusted-key", "this box has no provisioning key enrolled (an enrolment stick with the set-up code"
            " on the box's screen, `esignbox provision enroll`, or one built into the image)"
        )
    try:
        return load_public(path.read_bytes())
    except ValueError as exc:
        raise ProvisioningRefused("no-trusted-key", f"{path} is unusable: {exc}") from exc


def _spki(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def record_trust(conn: sqlite3.Connection, key: PublicKey, how: str, actor: str,
                 details: dict[str, object]) -> trust.Trusted:
    """Trust ``key`` in the caller's transaction (firmware.operations.trust); the files follow the commit."""
    return trust.record(conn, public_pem(key), _spki(key), how, actor, details)


def enroll(state_dir: Path, public_key_pem: bytes, replace: bool = False) -> tuple[str, bool]:
    """Trust ``public_key_pem`` for provisioning (an operator with a shell). Returns (key id, changed).

    The first enrolment wins: a different key is refused unless ``replace`` is given. Enrolling
    the same key again is a no-op. Recorded and audited in box.db, then written to trusted.pub.
    """
    key = load_public(public_key_pem)
    path = trusted_key_path(state_dir)
    if path.exists():
        current = load_public(path.read_bytes())
        if key_id(current) == key_id(key):
            return key_id(key), False
        if not replace:
            raise ProvisioningRefused(
                "untrusted-signer",
                f"a different provisioning key ({key_id(current)[:16]}…) is already enrolled; use --replace to change it",
            )
    db = Database(Path(state_dir) / "box.db")
    with immediate(db.connect()) as conn:
        record_trust(conn, key, "operator", "operator", {"replace": replace})
    trust.write_files(Path(state_dir), db)
    return key_id(key), True
