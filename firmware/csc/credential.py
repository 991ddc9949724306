"""The box's one CSC credential: the token key (its label is the credentialID) and its certificate.

``credentials/info`` is what a CSC client builds its signer from (pyHanko takes the signing
certificate, the chain, ``key/algo`` and ``multisign`` from it), so the answer is derived from the
same signer the box signs with rather than configured separately.
"""

from __future__ import annotations

from datetime import UTC, datetime

from asn1crypto import keys
from cryptography import x509 as pyca_x509

from ..api.bodies import b64
from ..errors import InvalidRequest
from ..signing.raw_signing import RawSigningService
from ..signing.token_signer import TokenSigner
from .versions import CscVersion

CERTIFICATE_CHOICES = ("none", "single", "chain")


def _generalized_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%SZ")


class Credential:
    def __init__(self, signer: TokenSigner, raw_signing: RawSigningService, multisign: int) -> None:
        self.id = signer.key_label
        self.multisign = multisign
        self._cert = signer.signing_cert
        self._chain = [self._cert, *(c for c in signer.cert_registry if c != self._cert)]
        self._algorithms = raw_signing.supported_algorithms()

    def check_id(self, credential_id: str) -> None:
        if credential_id != self.id:
            raise InvalidRequest("Invalid parameter credentialID")

    def describe(self, version: CscVersion, certificates: str = "single", cert_info: bool = False) -> dict[str, object]:
        """The ``credentials/info`` answer (also a v2 ``credentialInfos`` entry, without its id)."""
        if certificates not in CERTIFICATE_CHOICES:
            raise InvalidRequest(f"Invalid parameter certificates; use one of {', '.join(CERTIFICATE_CHOICES)}")
        public_key = self._cert.public_key
        key: dict[str, object] = {"status": "enabled", "algo": self._algorithms, "len": public_key.bit_size}
        if public_key.algorithm == "ec":
            key["curve"] = keys.NamedCurve(public_key.curve[1]).dotted
        now = datetime.now(UTC)
        valid = self._cert.not_valid_before <= now <= self._cert.not_valid_after
        cert: dict[str, object] = {"status": "valid" if valid else "expired"}
        if certificates != "none":
            cert["certificates"] = [b64(c.dump()) for c in self._chain[: 1 if certificates == "single" else None]]
        if cert_info:
            parsed = pyca_x509.load_der_x509_certificate(self._cert.dump())
            cert.update(
                issuerDN=parsed.issuer.rfc4514_string(),
                subjectDN=parsed.subject.rfc4514_string(),
                serialNumber=format(self._cert.serial_number, "X"),
                validFrom=_generalized_time(self._cert.not_valid_before),
                validTo=_generalized_time(self._cert.not_valid_after),
            )
        # "explicit": every signature needs a SAD from credentials/authorize, which asks for nothing
        # beyond the access token (no PIN or OTP: the box seals for API clients, not for people).
        auth = (
            {"authMode": "explicit", "PIN": {"presence": "false"}, "OTP": {"presence": "false"}}
            if version.is_v1
            else {"auth": {"mode": "explicit", "objects": []}}
        )
        return {
            "description": f"{self._cert.subject.human_friendly} (token key {self.id!r})",
            "key": key,
            "cert": cert,
            **auth,
            "SCAL": "2",  # every SAD is bound to the hashes it may sign
            "multisign": self.multisign,
            "lang": "en-US",
        }
