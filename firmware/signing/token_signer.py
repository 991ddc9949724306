"""pyHanko's Signer backed by the box's token: the bridge between CMS assembly and PKCS#11.

pyHanko builds the signed attributes and the CMS structure; this class only turns the bytes it
wants signed into a digest and hands that to the token, so the key never leaves the token and
pyHanko never sees a PKCS#11 object.
"""

from __future__ import annotations

import hashlib

from asn1crypto import algos, x509
from pyhanko.sign.signers.pdf_cms import Signer
from pyhanko_certvalidator.registry import SimpleCertificateStore

from hsm import DIGEST_SIZES, SignatureScheme, Token

from .clock import ClockWatch


def _scheme_for(certificate: x509.Certificate, prefer_pss: bool) -> SignatureScheme:
    algorithm = certificate.public_key.algorithm
    if algorithm == "ec":
        return SignatureScheme.ECDSA
    if algorithm == "rsa":
        return SignatureScheme.RSA_PSS if prefer_pss else SignatureScheme.RSA_PKCS1V15
    raise ValueError(f"unsupported key algorithm {algorithm!r} in the signing certificate")


def _signature_size(certificate: x509.Certificate) -> int:
    """Upper bound of a signature's length, for pyHanko's dry runs that size the PDF hole."""
    key = certificate.public_key
    bits: int = key.bit_size
    if key.algorithm == "rsa":
        return bits // 8
    # DER ECDSA: SEQUENCE of two INTEGERs, each up to one byte longer than the field size.
    field_bytes = (bits + 7) // 8
    return 2 * (field_bytes + 3) + 3


class TokenSigner(Signer):
    def __init__(
        self,
        token: Token,
        key_label: str,
        chain: list[x509.Certificate],
        prefer_pss: bool = False,
        clock: ClockWatch | None = None,
    ) -> None:
        super().__init__(
            prefer_pss=prefer_pss,
            signing_cert=chain[0],
            # pyHanko-certvalidator leaves from_certs unannotated
            cert_registry=SimpleCertificateStore.from_certs(chain),  # type: ignore[no-untyped-call]
        )
        self._token = token
        self._key_label = key_label
        self._scheme = _scheme_for(chain[0], prefer_pss)
        self._clock = clock

    @property
    def signing_cert(self) -> x509.Certificate:
        """Never None here, unlike pyHanko's Signer: a TokenSigner is made with its chain."""
        cert = super().signing_cert
        assert cert is not None  # set in __init__
        return cert

    @property
    def key_label(self) -> str:
        return self._key_label

    @property
    def cert_serial(self) -> str:
        """The signing certificate's serial in hex, as the ledger and the API report it."""
        return format(self.signing_cert.serial_number, "x")

    def get_signature_mechanism_for_digest(self, digest_algorithm: str | None) -> algos.SignedDigestAlgorithm:
        """State PSS parameters exactly as the token uses them (salt = digest length)."""
        if self._scheme is not SignatureScheme.RSA_PSS or digest_algorithm is None:
            return super().get_signature_mechanism_for_digest(digest_algorithm)
        hash_algorithm = {"algorithm": digest_algorithm}
        return algos.SignedDigestAlgorithm(
            {
                "algorithm": "rsassa_pss",
                "parameters": algos.RSASSAPSSParams(
                    {
                        "hash_algorithm": hash_algorithm,
                        "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": hash_algorithm},
                        "salt_length": DIGEST_SIZES[digest_algorithm],
                    }
                ),
            }
        )

    def sign_data(self, data: bytes, digest_algorithm: str) -> bytes:
        """Hash ``data`` here and have the token sign the digest; not while the clock is known to be off."""
        if self._clock is not None:
            self._clock.check()
        digest = hashlib.new(digest_algorithm, data).digest()
        return self._token.sign_digest(self._key_label, digest, digest_algorithm, self._scheme)

    async def async_sign_raw(self, data: bytes, digest_algorithm: str, dry_run: bool = False) -> bytes:
        if dry_run:
            return bytes(_signature_size(self.signing_cert))
        return self.sign_data(data, digest_algorithm)
