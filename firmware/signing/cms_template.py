"""Detached CMS for the hash-signing hot path, assembled from parts encoded once per signer.

Why not pyHanko's Signer.async_sign here: it builds every signature from Python values, and
asn1crypto re-encodes such structures on every dump — about 10 ms of CPU per signature, under the
GIL, which capped the API at ~85 B-B signatures/s (profiled: ~80 % of server time). Everything
in the CMS except the message digest, the signature value, the signing time and the timestamp is
the same for every signature of one signer, so those parts are encoded once and reused as loaded
DER (whose dump is a copy). The result is the structure pyHanko makes — ESS signing-certificate-v2,
no signing-time for PAdES — at about 0.3 ms. pyHanko still does all PDF work.
"""

from __future__ import annotations

from datetime import UTC, datetime

from asn1crypto import algos, cms, core
from pyhanko.sign.general import as_signing_certificate_v2

from .levels import Profile
from .token_signer import TokenSigner


def _frozen(value: core.Asn1Value) -> core.Asn1Value:
    """The same value re-loaded from its DER, so later dumps copy bytes instead of re-encoding."""
    return type(value).load(value.dump())


class DetachedCmsTemplate:
    def __init__(self, signer: TokenSigner) -> None:
        cert = signer.signing_cert
        self._signer = signer
        self._sid = _frozen(cms.SignerIdentifier(
            name="issuer_and_serial_number",
            value={"issuer": cert.issuer, "serial_number": cert.serial_number},
        ))
        self._certificates = [
            _frozen(cms.CertificateChoices(name="certificate", value=c)) for c in signer.cert_registry
        ]
        self._content_type = _frozen(cms.CMSAttribute({"type": "content_type", "values": ["data"]}))
        self._by_digest: dict[str, tuple[algos.DigestAlgorithm, algos.SignedDigestAlgorithm, cms.CMSAttribute]] = {}
        self._signing_certificate = _frozen(cms.CMSAttribute({
            "type": "signing_certificate_v2", "values": [as_signing_certificate_v2(cert)]}))

    def _algorithms(self, digest_algorithm: str) -> tuple[algos.DigestAlgorithm, algos.SignedDigestAlgorithm,
                                                           cms.CMSAttribute]:
        cached = self._by_digest.get(digest_algorithm)
        if cached is not None:
            return cached
        digest = _frozen(algos.DigestAlgorithm({"algorithm": digest_algorithm}))
        signature = _frozen(self._signer.get_signature_mechanism_for_digest(digest_algorithm))
        protection = _frozen(cms.CMSAttribute({  # RFC 6211, for stand-alone (CAdES) signatures
            "type": "cms_algorithm_protection",
            "values": [{"digest_algorithm": digest, "signature_algorithm": signature}],
        }))
        self._by_digest[digest_algorithm] = (digest, signature, protection)
        return digest, signature, protection

    def signed_attributes(self, digest: bytes, digest_algorithm: str, profile: Profile) -> cms.CMSAttributes:
        attrs = [
            self._content_type,
            cms.CMSAttribute({"type": "message_digest", "values": [digest]}),
            self._signing_certificate,
        ]
        if profile is Profile.CADES:  # PAdES forbids signing-time (the PDF's /M carries it)
            attrs.append(cms.CMSAttribute({"type": "signing_time", "values": [
                cms.Time(name="utc_time", value=datetime.now(UTC).replace(microsecond=0))]}))
            attrs.append(self._algorithms(digest_algorithm)[2])
        return cms.CMSAttributes(attrs)

    def package(
        self,
        digest_algorithm: str,
        signed_attrs: cms.CMSAttributes,
        signature: bytes,
        timestamp_token: cms.ContentInfo | None = None,
    ) -> cms.ContentInfo:
        digest, signature_algorithm, _ = self._algorithms(digest_algorithm)
        signer_info = {
            "version": "v1", "sid": self._sid, "digest_algorithm": digest, "signed_attrs": signed_attrs,
            "signature_algorithm": signature_algorithm, "signature": signature,
        }
        if timestamp_token is not None:
            signer_info["unsigned_attrs"] = [
                cms.CMSAttribute({"type": "signature_time_stamp_token", "values": [timestamp_token]})
            ]
        signed_data = cms.SignedData({
            "version": "v1",
            "digest_algorithms": [digest],
            "encap_content_info": {"content_type": "data"},
            "certificates": list(self._certificates),
            "signer_infos": [signer_info],
        })
        return cms.ContentInfo({"content_type": "signed_data", "content": signed_data})
