"""How a digest becomes a PKCS#11 sign call: mechanism, parameters and the bytes to sign.

The box always hashes outside the token and signs the digest ("raw" mechanisms): SoftHSM2 has no
CKM_ECDSA_SHA256, and a client that sends only a hash leaves nothing else to do. So the DER work
that hash-and-sign mechanisms do inside the token (DigestInfo, ECDSA r||s to DER) happens here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from asn1crypto import algos, core
from pkcs11 import MGF, Mechanism
from pkcs11.util.ec import encode_ecdsa_signature


class SignatureScheme(str, enum.Enum):
    RSA_PKCS1V15 = "rsa_pkcs1v15"
    RSA_PSS = "rsa_pss"
    ECDSA = "ecdsa"


DIGEST_SIZES = {"sha256": 32, "sha384": 48, "sha512": 64}

_PSS_PARAMS = {
    "sha256": (Mechanism.SHA256, MGF.SHA256),
    "sha384": (Mechanism.SHA384, MGF.SHA384),
    "sha512": (Mechanism.SHA512, MGF.SHA512),
}


def _digest_info_prefix(hash_algorithm: str) -> bytes:
    """DigestInfo's DER up to the digest: the same for every digest of one algorithm (their length
    is fixed), so it is encoded once instead of for each signature (~50 us of asn1crypto)."""
    size = DIGEST_SIZES[hash_algorithm]
    # PKCS#1 v1.5 requires the explicit NULL parameters; asn1crypto omits them for None.
    info = algos.DigestInfo(
        {"digest_algorithm": {"algorithm": hash_algorithm, "parameters": core.Null()}, "digest": bytes(size)}
    )
    der: bytes = info.dump()
    return der[:-size]


_DIGEST_INFO_PREFIXES = {name: _digest_info_prefix(name) for name in DIGEST_SIZES}


class UnsupportedDigest(ValueError):
    """The hash algorithm is unknown or the digest has the wrong length for it."""


@dataclass(frozen=True)
class SignOperation:
    mechanism: Mechanism
    param: Any
    payload: bytes
    is_ecdsa: bool

    def finish(self, raw_signature: bytes) -> bytes:
        """Turn the token's output into the form CMS and X.509 expect."""
        return encode_ecdsa_signature(raw_signature) if self.is_ecdsa else raw_signature


def check_digest(digest: bytes, hash_algorithm: str) -> None:
    size = DIGEST_SIZES.get(hash_algorithm)
    if size is None:
        raise UnsupportedDigest(f"unsupported hash algorithm {hash_algorithm!r}; use one of {sorted(DIGEST_SIZES)}")
    if len(digest) != size:
        raise UnsupportedDigest(f"a {hash_algorithm} digest is {size} bytes, got {len(digest)}")


def sign_operation(
    scheme: SignatureScheme, hash_algorithm: str, digest: bytes, salt_length: int | None = None
) -> SignOperation:
    """``salt_length`` (PSS only) defaults to the digest length, the usual choice."""
    check_digest(digest, hash_algorithm)
    if scheme is SignatureScheme.RSA_PKCS1V15:
        return SignOperation(Mechanism.RSA_PKCS, None, _DIGEST_INFO_PREFIXES[hash_algorithm] + digest, False)
    if scheme is SignatureScheme.RSA_PSS:
        # python-pkcs11 defaults PSS to SHA-1; always state hash, MGF and salt (= digest length).
        hash_mech, mgf = _PSS_PARAMS[hash_algorithm]
        salt = len(digest) if salt_length is None else salt_length
        return SignOperation(Mechanism.RSA_PKCS_PSS, (hash_mech, mgf, salt), digest, False)
    if scheme is SignatureScheme.ECDSA:
        return SignOperation(Mechanism.ECDSA, None, digest, True)
    raise ValueError(f"unknown signature scheme {scheme!r}")
