"""Detached CMS for the hash-signing hot path, assembled as DER bytes from parts encoded once per signer.

Why not pyHanko's Signer.async_sign here: it builds every signature from Python values, and
asn1crypto re-encodes such structures on every dump — about 10 ms of CPU per signature, under the
GIL, which capped the API at ~85 B-B signatures/s (profiled: ~80 % of server time). Everything
in the CMS except the message digest, the signature value, the signing time and the timestamp is
the same for every signature of one signer, so those parts are encoded once.

The per-signature structure is joined as bytes too (`asn1crypto.parser.emit` writes each tag and
length), not built as asn1crypto values: building them, even around pre-encoded parts, still cost
~0.3 ms per signature — a third of a worker's Python time per B-B request (`make bench --profile`).
The bytes are the DER asn1crypto writes for the same structure — SET OF members in the order of
their encodings — which tests/test_cms_template.py checks; the result is handed out as asn1crypto
values loaded from them, whose dump is a copy. It is the structure pyHanko makes — ESS
signing-certificate-v2, no signing-time for PAdES. pyHanko still does all PDF work.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from asn1crypto import algos, cms, parser
from pyhanko.sign.general import as_signing_certificate_v2

from .levels import Profile
from .token_signer import TokenSigner

_UNIVERSAL, _CONTEXT = 0, 2
_PRIMITIVE, _CONSTRUCTED = 0, 1


def _sequence(*members: bytes) -> bytes:
    return bytes(parser.emit(_UNIVERSAL, _CONSTRUCTED, 16, b"".join(members)))


def _set_of(members: Iterable[bytes]) -> bytes:
    """DER's SET OF: the members in the order of their encodings."""
    return bytes(parser.emit(_UNIVERSAL, _CONSTRUCTED, 17, b"".join(sorted(members))))


def _implicit(tag: int, encoded: bytes) -> bytes:
    """``[tag] IMPLICIT`` over a constructed value's DER: its contents under the context tag."""
    return bytes(parser.emit(_CONTEXT, _CONSTRUCTED, tag, parser.parse(encoded)[4]))


def _attribute(attribute_type: bytes, *values: bytes) -> bytes:
    return _sequence(attribute_type, _set_of(values))


def _octets(value: bytes) -> bytes:
    return bytes(parser.emit(_UNIVERSAL, _PRIMITIVE, 4, value))


_MESSAGE_DIGEST, _SIGNING_TIME, _TIMESTAMP_TOKEN = (
    cms.CMSAttributeType(name).dump() for name in ("message_digest", "signing_time", "signature_time_stamp_token")
)


_VERSION_1 = cms.CMSVersion("v1").dump()
_SIGNED_DATA = cms.ContentType("signed_data").dump()
_ENCAP_DATA = _sequence(cms.ContentType("data").dump())  # detached: no eContent


class DetachedCmsTemplate:
    def __init__(self, signer: TokenSigner) -> None:
        cert = signer.signing_cert
        self._signer = signer
        self._sid = cms.SignerIdentifier(
            name="issuer_and_serial_number",
            value={"issuer": cert.issuer, "serial_number": cert.serial_number},
        ).dump()
        self._certificates = _implicit(0, _set_of(c.dump() for c in signer.cert_registry))
        self._content_type = _attribute(cms.CMSAttributeType("content_type").dump(), cms.ContentType("data").dump())
        self._by_digest: dict[str, tuple[bytes, bytes, bytes]] = {}
        self._signing_certificate = cms.CMSAttribute({
            "type": "signing_certificate_v2", "values": [as_signing_certificate_v2(cert)]}).dump()

    def _algorithms(self, digest_algorithm: str) -> tuple[bytes, bytes, bytes]:
        """The DER of the digest and signature algorithms and of the CMS algorithm protection attribute."""
        cached = self._by_digest.get(digest_algorithm)
        if cached is not None:
            return cached
        digest = algos.DigestAlgorithm({"algorithm": digest_algorithm})
        signature = self._signer.get_signature_mechanism_for_digest(digest_algorithm)
        protection = cms.CMSAttribute({  # RFC 6211, for stand-alone (CAdES) signatures
            "type": "cms_algorithm_protection",
            "values": [{"digest_algorithm": digest, "signature_algorithm": signature}],
        })
        self._by_digest[digest_algorithm] = encoded = (digest.dump(), signature.dump(), protection.dump())
        return encoded

    def signed_attributes(self, digest: bytes, digest_algorithm: str, profile: Profile) -> cms.CMSAttributes:
        attrs = [
            self._content_type,
            _attribute(_MESSAGE_DIGEST, _octets(digest)),
            self._signing_certificate,
        ]
        if profile is Profile.CADES:  # PAdES forbids signing-time (the PDF's /M carries it)
            now = datetime.now(UTC).replace(microsecond=0)
            attrs.append(_attribute(_SIGNING_TIME, cms.Time(name="utc_time", value=now).dump()))
            attrs.append(self._algorithms(digest_algorithm)[2])
        return cms.CMSAttributes.load(_set_of(attrs))

    def package(
        self,
        digest_algorithm: str,
        signed_attrs: cms.CMSAttributes,
        signature: bytes,
        timestamp_token: cms.ContentInfo | None = None,
    ) -> cms.ContentInfo:
        digest, signature_algorithm, _ = self._algorithms(digest_algorithm)
        signer_info = [
            _VERSION_1, self._sid, digest, _implicit(0, signed_attrs.dump()), signature_algorithm,
            _octets(signature),
        ]
        if timestamp_token is not None:
            signer_info.append(_implicit(1, _set_of([_attribute(_TIMESTAMP_TOKEN, timestamp_token.dump())])))
        signed_data = _sequence(
            _VERSION_1, _set_of([digest]), _ENCAP_DATA, self._certificates, _set_of([_sequence(*signer_info)]),
        )
        return cms.ContentInfo.load(_sequence(_SIGNED_DATA, bytes(parser.emit(_CONTEXT, _CONSTRUCTED, 0, signed_data))))
