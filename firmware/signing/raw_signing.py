"""Raw signatures over client-supplied digests: the CSC ``signatures/signHash`` primitive.

Unlike hash signing, the box builds no CMS here: the client (a PDF library, a document-workflow
product) has already built the signed attributes and sends their digest; the box returns the bare
signature value. The client names the algorithm as an OID, so this module maps OIDs to the token's
schemes and refuses, with a reason, anything the box's key cannot do exactly as named — a
signature that silently used other parameters than the ones the client embeds would not verify.
Every signature is recorded in the ledger before it is returned.
"""

from __future__ import annotations

from dataclasses import dataclass

from asn1crypto import algos

from hsm import DIGEST_SIZES, SignatureScheme, Token, check_digest

from ..errors import InvalidRequest
from ..store.ledger import SignatureLedger
from .accounting import Accounting, Signed
from .hash_signing import MAX_BATCH
from .token_signer import TokenSigner

RSA_ENCRYPTION = algos.SignedDigestAlgorithmId("rsassa_pkcs1v15").dotted  # hash named separately
RSASSA_PSS = algos.SignedDigestAlgorithmId("rsassa_pss").dotted  # hash named in the parameters

_DIGEST_OIDS = {algos.DigestAlgorithmId(name).dotted: name for name in DIGEST_SIZES}
# signature OIDs that name their hash, per key type
_HASH_NAMING = {
    "rsa": {algos.SignedDigestAlgorithmId(f"{name}_rsa").dotted: name for name in DIGEST_SIZES},
    "ec": {algos.SignedDigestAlgorithmId(f"{name}_ecdsa").dotted: name for name in DIGEST_SIZES},
}
_SCHEMES = {"rsa": SignatureScheme.RSA_PKCS1V15, "ec": SignatureScheme.ECDSA}


@dataclass(frozen=True)
class RawAlgorithm:
    """What the token will do: its scheme, over a digest made with ``hash_algorithm``."""

    scheme: SignatureScheme
    hash_algorithm: str
    salt_length: int | None = None  # RSASSA-PSS only; None: the digest length


def digest_algorithm(oid: str) -> str:
    """The box's name ("sha256", ...) for a hash algorithm OID, or InvalidRequest."""
    name = _DIGEST_OIDS.get(oid)
    if name is None:
        raise InvalidRequest(f"unsupported hash algorithm OID {oid!r}; use one of {', '.join(_DIGEST_OIDS)}")
    return name


def _pss_parameters(params_der: bytes | None, key_bits: int) -> tuple[str, int]:
    """Hash and salt length of RSASSA-PSS parameters the token can honour exactly.

    The token signs PSS with MGF1 over the signature's own hash; any salt length the key size
    allows (RFC 8017: at most emLen - hLen - 2) is fine — pyHanko's CSCSigner asks for the maximum.
    """
    if params_der is None:
        raise InvalidRequest("RSASSA-PSS needs signAlgoParams (DER RSASSA-PSS-params, base64)")
    try:
        params = algos.RSASSAPSSParams.load(params_der).native
    except ValueError as exc:
        raise InvalidRequest("signAlgoParams is not a DER RSASSA-PSS-params structure") from exc
    name = params["hash_algorithm"]["algorithm"]
    if name not in DIGEST_SIZES:
        raise InvalidRequest(f"RSASSA-PSS with {name} is not supported; use one of {', '.join(DIGEST_SIZES)}")
    mgf = params["mask_gen_algorithm"]
    if mgf["algorithm"] != "mgf1" or mgf["parameters"]["algorithm"] != name:
        raise InvalidRequest(f"RSASSA-PSS must use MGF1 with {name}, the signature's own hash")
    largest = (key_bits - 1 + 7) // 8 - DIGEST_SIZES[name] - 2
    if not 0 <= params["salt_length"] <= largest:
        raise InvalidRequest(
            f"RSASSA-PSS salt length must be 0 to {largest} for {name} with this key; got {params['salt_length']}"
        )
    if params["trailer_field"] != "trailer_field_bc":
        raise InvalidRequest("RSASSA-PSS trailer field must be 1")
    return name, params["salt_length"]


def _same_hash(implied: str, hash_oid: str | None) -> str:
    if hash_oid is not None and digest_algorithm(hash_oid) != implied:
        raise InvalidRequest(f"the hash algorithm {hash_oid} contradicts signAlgo, which implies {implied}")
    return implied


class RawSigningService:
    def __init__(self, token: Token, signer: TokenSigner, ledger: SignatureLedger) -> None:
        self._token = token
        self._signer = signer
        self._accounting = Accounting(ledger, signer, "raw")
        self._key_type = signer.signing_cert.public_key.algorithm
        if self._key_type not in _SCHEMES:
            raise ValueError(f"unsupported key algorithm {self._key_type!r} in the signing certificate")

    def supported_algorithms(self) -> list[str]:
        """Signature algorithm OIDs the key can produce, for CSC ``key/algo``."""
        extra = [RSA_ENCRYPTION, RSASSA_PSS] if self._key_type == "rsa" else []
        return [*_HASH_NAMING[self._key_type], *extra]

    def algorithm(self, sign_algo: str, hash_algo: str | None = None, params: bytes | None = None) -> RawAlgorithm:
        """Resolve CSC ``signAlgo`` (+ hash OID, + DER parameters) against the box's key."""
        implied = _HASH_NAMING[self._key_type].get(sign_algo)
        if implied is not None:
            return RawAlgorithm(_SCHEMES[self._key_type], _same_hash(implied, hash_algo))
        if self._key_type == "rsa" and sign_algo == RSA_ENCRYPTION:
            if hash_algo is None:
                raise InvalidRequest(f"signAlgo {RSA_ENCRYPTION} (rsaEncryption) needs the hash algorithm OID")
            return RawAlgorithm(SignatureScheme.RSA_PKCS1V15, digest_algorithm(hash_algo))
        if self._key_type == "rsa" and sign_algo == RSASSA_PSS:
            name, salt = _pss_parameters(params, self._signer.signing_cert.public_key.bit_size)
            return RawAlgorithm(SignatureScheme.RSA_PSS, _same_hash(name, hash_algo), salt)
        raise InvalidRequest(
            f"signAlgo {sign_algo!r} cannot be made with the box's {self._key_type.upper()} key; "
            f"use one of {', '.join(self.supported_algorithms())}"
        )

    def cms_algorithm(self, hash_algorithm: str) -> RawAlgorithm:
        """The algorithm the box's CMS signer uses with this hash (what hash signing produces)."""
        mechanism = self._signer.get_signature_mechanism_for_digest(hash_algorithm)
        params = mechanism["parameters"]
        return self.algorithm(mechanism["algorithm"].dotted, None, params.dump() if params.native is not None else None)

    def check(self, algorithm: RawAlgorithm, digests: list[bytes]) -> None:
        """Refuse a batch the token would refuse, before anything (such as a SAD) is spent on it."""
        if not digests or len(digests) > MAX_BATCH:
            raise InvalidRequest(f"a batch holds 1 to {MAX_BATCH} hashes")
        for digest in digests:
            check_digest(digest, algorithm.hash_algorithm)

    def sign(self, client_id: str, algorithm: RawAlgorithm, digests: list[bytes]) -> list[bytes]:
        """Signature values in the order of ``digests``; all recorded before any is returned."""
        self.check(algorithm, digests)
        return self._accounting.run(client_id, len(digests), lambda: self._sign_digests(algorithm, digests))

    def _sign_digests(self, algorithm: RawAlgorithm, digests: list[bytes]) -> tuple[list[bytes], list[Signed]]:
        label = self._signer.key_label
        signatures = [
            self._token.sign_digest(label, digest, algorithm.hash_algorithm, algorithm.scheme, algorithm.salt_length)
            for digest in digests
        ]
        return signatures, [Signed(algorithm.hash_algorithm, d, "raw", algorithm.scheme.value) for d in digests]
