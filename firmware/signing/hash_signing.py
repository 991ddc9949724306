"""Hash in, detached CMS out: the E-sign API's core. The document never reaches the box.

The client names the hash algorithm and sends the digest; the box builds the signed attributes
(ESS signing-certificate-v2, message digest, content type), has the token sign them, adds the
signature timestamp for B-T and gathers the LTV data for B-LT. The signature is recorded in the
ledger before it is returned, so a released signature is always an accounted one.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

from asn1crypto import cms, x509

from hsm import UnsupportedDigest, check_digest

from ..errors import InvalidRequest
from ..store.ledger import SignatureLedger
from .accounting import Accounting, Signed
from .cms_template import DetachedCmsTemplate
from .levels import Level, Profile
from .revocation import RevocationService, ValidationData
from .timestamps import FallbackTimeStamper, TimestampUnavailable
from .token_signer import TokenSigner

MAX_BATCH = 1000


@dataclass(frozen=True)
class HashSignRequest:
    hash_algorithm: str
    digest: bytes
    level: Level
    profile: Profile


@dataclass(frozen=True)
class HashSignature:
    cms: cms.ContentInfo
    level: Level
    profile: Profile
    validation_data: ValidationData | None


def _tsa_path(tst: cms.SignedData) -> tuple[x509.Certificate, list[x509.Certificate]]:
    sid = tst["signer_infos"][0]["sid"].chosen
    certs = [c.chosen for c in tst["certificates"] if c.name == "certificate"]
    leaf = None
    for cert in certs:
        if cert.issuer == sid["issuer"] and cert.serial_number == sid["serial_number"].native:
            leaf = cert
    if leaf is None:
        raise TimestampUnavailable("the TSA's certificate is not in its timestamp token")
    return leaf, [c for c in certs if c is not leaf]


def _embed_validation_data(content: cms.ContentInfo, data: ValidationData) -> None:
    """CAdES B-LT: certificates and revocation values inside SignedData (RFC 5652/5940)."""
    signed_data = content["content"]
    known = {c.chosen.dump() for c in signed_data["certificates"]}
    certs = list(signed_data["certificates"]) + [
        cms.CertificateChoices(name="certificate", value=c) for c in data.certificates if c.dump() not in known
    ]
    signed_data["certificates"] = certs
    revocation = [cms.RevocationInfoChoice(name="crl", value=c) for c in data.crls] + [
        cms.RevocationInfoChoice(
            name="other",
            value=cms.OtherRevocationInfoFormat(
                {"other_rev_info_format": "ocsp_response", "other_rev_info": o}
            ),
        )
        for o in data.ocsps
    ]
    if revocation:
        signed_data["crls"] = revocation


class HashSigningService:
    def __init__(
        self,
        signer: TokenSigner,
        timestamper: FallbackTimeStamper | None,
        revocation: RevocationService,
        ledger: SignatureLedger,
    ) -> None:
        self._signer = signer
        self._timestamper = timestamper
        self._revocation = revocation
        self._accounting = Accounting(ledger, signer, "hash")
        self._template = DetachedCmsTemplate(signer)

    def sign(self, client_id: str, requests: list[HashSignRequest]) -> list[HashSignature]:
        """Sign every request or none: a batch that fails part-way releases nothing."""
        if not requests or len(requests) > MAX_BATCH:
            raise InvalidRequest(f"a batch holds 1 to {MAX_BATCH} hashes")
        for index, request in enumerate(requests):
            try:
                check_digest(request.digest, request.hash_algorithm)
            except UnsupportedDigest as exc:
                if len(requests) == 1:
                    raise
                raise UnsupportedDigest(f"hashes[{index}]: {exc}") from exc  # which one of the batch
            if request.level is Level.B_LTA:
                raise InvalidRequest("B-LTA needs the whole document; use the PDF endpoint")
        if any(r.level.needs_timestamp for r in requests) and self._timestamper is None:
            raise TimestampUnavailable("no TSA is configured; only B-B is available")
        return self._accounting.run(client_id, len(requests), lambda: self._sign_batch(requests))

    def _sign_batch(self, requests: list[HashSignRequest]) -> tuple[list[HashSignature], list[Signed]]:
        if any(r.level.needs_timestamp for r in requests):
            signatures = asyncio.run(self._sign_all(requests))
        else:  # B-B waits for nobody: no event loop needed
            signatures = [HashSignature(self._sign_b_b(r), r.level, r.profile, None) for r in requests]
        return signatures, [Signed(r.hash_algorithm, r.digest, r.level.value, r.profile.value) for r in requests]

    async def _sign_all(self, requests: list[HashSignRequest]) -> list[HashSignature]:
        """Levels with a timestamp: the TSA round trips of a batch overlap; token work is quick."""
        return list(await asyncio.gather(*(self._sign_one(r) for r in requests)))

    def _signature_value(self, request: HashSignRequest) -> tuple[cms.CMSAttributes, bytes]:
        """The signed attributes for this hash and the token's signature over them."""
        signed_attrs = self._template.signed_attributes(request.digest, request.hash_algorithm, request.profile)
        return signed_attrs, self._signer.sign_data(signed_attrs.dump(), request.hash_algorithm)

    def _sign_b_b(self, request: HashSignRequest) -> cms.ContentInfo:
        return self._template.package(request.hash_algorithm, *self._signature_value(request))

    async def _sign_one(self, request: HashSignRequest) -> HashSignature:
        if not request.level.needs_timestamp:
            return HashSignature(self._sign_b_b(request), request.level, request.profile, None)
        assert self._timestamper is not None  # checked in sign()
        algorithm = request.hash_algorithm
        signed_attrs, signature = self._signature_value(request)
        # RFC 3161 signature timestamp: the TSA signs a hash of the signature value.
        token = await self._timestamper.async_timestamp(hashlib.new(algorithm, signature).digest(), algorithm)
        content = self._template.package(algorithm, signed_attrs, signature, token)
        data = None
        if request.level.needs_revocation_data:
            chain = list(self._signer.cert_registry)
            data = await self._revocation.collect(
                [(self._signer.signing_cert, chain), _tsa_path(token["content"])]
            )
            if request.profile is Profile.CADES:
                _embed_validation_data(content, data)
        return HashSignature(content, request.level, request.profile, data)
