"""The one check every certificate passes before the directory keeps it, whichever way it came in
(API, signed mail, console), and again before it is published and at each re-check.

Each check has a name; a refusal raises CertificateRefused naming the one that failed, in this
order: the cheap facts in the certificate first, the network (path validation with OCSP/CRL
through the box's revocation cache) last.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID
from pyhanko_certvalidator import CertificateValidator
from pyhanko_certvalidator.errors import (
    InsufficientRevinfoError,
    PathBuildingError,
    RevokedError,
    ValidationError,
)

from ..signing.revocation import RevocationService, RevocationUnavailable
from .addresses import AddressInvalid, normalise

__all__ = ["CHECKS", "CertificateRefused", "CheckedCertificate", "check_certificate", "check_revocation", "fingerprint"]

# The checks by name, in the order they run (the names refusals carry, and the API shows).
CHECKS = ("address", "email_protection", "encryption_key_usage", "validity", "chain", "revocation")


class CertificateRefused(Exception):
    """The certificate fails the directory's check ``check`` (one of CHECKS); nothing was kept."""

    def __init__(self, message: str, check: str = "") -> None:
        super().__init__(message)
        self.check = check


@dataclass(frozen=True)
class CheckedCertificate:
    """A certificate that passed every check, with the path that proved it (leaf excluded)."""

    address: str
    der: bytes
    chain: tuple[bytes, ...]  # intermediates up to and including the trust root, DER
    fingerprint: str  # SHA-256 of the DER, hex
    not_before: datetime
    not_after: datetime


def fingerprint(der: bytes) -> str:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return digest.finalize().hex()


def _refuse(check: str, reason: str) -> CertificateRefused:
    return CertificateRefused(f"refused by check {check!r}: {reason}", check)


def check_certificate(
    address: str, der: bytes, chain: Sequence[bytes], revocation: RevocationService, now: datetime | None = None,
) -> CheckedCertificate:
    """Run every check on ``der`` (with the submitter's ``chain`` as path candidates) for the
    normalised ``address``; raises CertificateRefused, or RevocationUnavailable when revocation
    status cannot be had (the certificate may be fine: try again later)."""
    now = now or datetime.now(UTC)
    cert = x509.load_der_x509_certificate(der)
    _check_address(address, cert)
    _check_email_protection(cert)
    _check_encryption_usage(cert)
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        raise _refuse("validity", f"valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} to"
                                  f" {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, not now")
    path = _validate_path(der, chain, revocation)
    return CheckedCertificate(address, der, path, fingerprint(der), cert.not_valid_before_utc, cert.not_valid_after_utc)


def check_revocation(der: bytes, chain: Sequence[bytes], revocation: RevocationService) -> None:
    """Only the path and revocation checks: the re-check of a published certificate."""
    _validate_path(der, chain, revocation)


def _check_address(address: str, cert: x509.Certificate) -> None:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise _refuse("address", "the certificate has no subjectAltName with an rfc822Name") from None
    found = []
    for name in names.get_values_for_type(x509.RFC822Name):
        try:
            found.append(normalise(name))
        except AddressInvalid:
            continue
    if address not in found:
        listed = ", ".join(found) or "none"
        raise _refuse("address", f"no rfc822Name equal to {address} (the certificate names: {listed})")


def _check_email_protection(cert: x509.Certificate) -> None:
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise _refuse("email_protection", "no extended key usage: emailProtection is required") from None
    if ExtendedKeyUsageOID.EMAIL_PROTECTION not in usages:
        raise _refuse("email_protection", "the extended key usage does not include emailProtection")


def _check_encryption_usage(cert: x509.Certificate) -> None:
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise _refuse("encryption_key_usage", "no key usage: keyEncipherment or keyAgreement is required") from None
    if not (usage.key_encipherment or usage.key_agreement):
        raise _refuse("encryption_key_usage", "the key usage allows neither keyEncipherment nor keyAgreement:"
                                              " mail cannot be encrypted to it")


def _validate_path(der: bytes, chain: Sequence[bytes], revocation: RevocationService) -> tuple[bytes, ...]:
    leaf = asn1_x509.Certificate.load(der)
    candidates = [asn1_x509.Certificate.load(item) for item in chain]
    context = revocation.validation_context(candidates)
    validator = CertificateValidator(leaf, intermediate_certs=candidates, validation_context=context)

    async def validate() -> tuple[bytes, ...]:
        # pyHanko-certvalidator leaves it unannotated
        path = await validator.async_validate_usage(key_usage=set())  # type: ignore[no-untyped-call]
        # the path runs from the trust root down: the chain is given issuer first, root last
        return tuple(item.dump() for item in reversed(list(path)) if item.dump() != der)

    try:
        return asyncio.run(validate())
    except RevokedError as exc:
        raise _refuse("revocation", f"the certificate or its issuer is revoked ({exc})") from exc
    except PathBuildingError as exc:
        raise _refuse("chain", f"no path to the directory's trust roots ({exc})") from exc
    except InsufficientRevinfoError as exc:
        raise RevocationUnavailable(f"revocation status of the certificate cannot be established: {exc}") from exc
    except ValidationError as exc:
        raise _refuse("chain", f"the path to the directory's trust roots does not validate ({exc})") from exc
