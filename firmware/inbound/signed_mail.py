"""Certificates out of a signed e-mail, the way mail clients share them.

A person who sends the box's directory address a signed message hands over, inside the S/MIME
signature, the certificates their client uses: the signing certificate and, usually, the
encryption certificate (named by the SMIMEEncryptionKeyPreference attribute, RFC 8551 §2.5.3, or
simply included). This module takes such a message apart: it finds the signature
(``multipart/signed`` with a detached CMS signature, or ``application/pkcs7-mime`` signed-data),
checks with pyHanko that the signature is intact and made by the certificate it names, and
returns the sender's address and the certificates that name that address.

Trust, key usage and revocation are not judged here: the directory's checks judge every
certificate, however it arrived, and publishing still needs the proof of mailbox control.
"""

from __future__ import annotations

from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage, MIMEPart
from email.utils import parseaddr
from typing import ClassVar

from asn1crypto import cms, x509
from pyhanko.sign.validation.generic_cms import async_validate_cms_signature, async_validate_detached_cms
from pyhanko.sign.validation.status import SignatureStatus
from pyhanko_certvalidator import ValidationContext

__all__ = ["SignedMail", "UnsignedMail", "read_signed_mail"]

_SIGNATURE_TYPES = ("application/pkcs7-signature", "application/x-pkcs7-signature")
_OPAQUE_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime")
_ENCRYPTION_KEY_PREFERENCE = "1.2.840.113549.1.9.16.2.11"


class UnsignedMail(ValueError):
    """The message is not a signed S/MIME message whose signature holds up; the text says why."""


@dataclass(frozen=True)
class SignedMail:
    sender: str  # the From address, as written
    signer: x509.Certificate
    certificates: list[x509.Certificate]  # those naming the sender, the preferred encryption one first
    chain: list[x509.Certificate]  # every other certificate the signature carried (issuers)


async def read_signed_mail(raw: bytes) -> SignedMail:
    """The sender and certificates of the signed message ``raw`` (as received); raises UnsignedMail."""
    message = message_from_bytes(raw, policy=policy.SMTP)
    assert isinstance(message, EmailMessage)  # policy.SMTP builds EmailMessage objects
    sender = parseaddr(str(message.get("From", "")))[1]
    if not sender:
        raise UnsignedMail("the message has no From address")
    content, signed_data = _signature(message, raw)
    signer = await _check(content, signed_data)
    carried = [c.chosen for c in signed_data["certificates"] or [] if c.name == "certificate"]
    preferred = _preferred_encryption_cert(signed_data, carried)
    naming = [c for c in carried if _names(c, sender)]
    naming.sort(key=lambda c: (c is not preferred, c is signer))  # the preferred one, then others, signer last
    if not naming:
        raise UnsignedMail(f"no certificate in the signature names {sender}")
    return SignedMail(sender, signer, naming, [c for c in carried if c not in naming])


def _signature(message: EmailMessage, raw: bytes) -> tuple[bytes | cms.EncapsulatedContentInfo, cms.SignedData]:
    """The signed content (the first part's bytes exactly as sent, or the encapsulated content)
    and the SignedData."""
    kind = message.get_content_type()
    if kind == "multipart/signed":
        parts = list(message.iter_parts())
        if len(parts) != 2 or parts[1].get_content_type() not in _SIGNATURE_TYPES:
            raise UnsignedMail("multipart/signed without an S/MIME signature part")
        return _first_part_bytes(message, raw), _signed_data(_payload(parts[1]))
    if kind in _OPAQUE_TYPES:
        signed_data = _signed_data(_payload(message))
        return signed_data["encap_content_info"], signed_data
    raise UnsignedMail(f"the message is {kind}, not signed S/MIME (multipart/signed or application/pkcs7-mime)")


def _first_part_bytes(message: EmailMessage, raw: bytes) -> bytes:
    """The first body part of a multipart/signed message as transmitted: what the signature covers
    (RFC 8551 §3.5.3), taken from the raw bytes between the first two boundaries, in CRLF form."""
    boundary = message.get_boundary()
    if not boundary:
        raise UnsignedMail("multipart/signed without a boundary")
    text = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    delimiter = b"\r\n--" + boundary.encode()
    start = text.find(delimiter)
    if start < 0:
        raise UnsignedMail("the signed part's boundary is missing")
    start = text.index(b"\r\n", start + len(delimiter)) + 2
    end = text.find(delimiter, start)
    if end < 0:
        raise UnsignedMail("the signed part is not closed by its boundary")
    return text[start:end]


def _payload(part: MIMEPart) -> bytes:
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes) or not data:
        raise UnsignedMail("the S/MIME part is empty")
    return data


def _signed_data(der: bytes) -> cms.SignedData:
    try:
        info = cms.ContentInfo.load(der)
        if info["content_type"].native != "signed_data":
            raise UnsignedMail(f"the S/MIME part holds {info['content_type'].native}, not signed data")
        signed_data = info["content"]
        _ = signed_data.native  # parse all of it now, not when first used
    except UnsignedMail:
        raise
    except Exception as exc:  # asn1crypto raises ValueError, TypeError, KeyError, …
        raise UnsignedMail(f"the S/MIME signature is not valid CMS: {exc}") from exc
    if len(signed_data["signer_infos"]) != 1:
        raise UnsignedMail("the signature must have exactly one signer")
    return signed_data


async def _check(content: bytes | cms.EncapsulatedContentInfo, signed_data: cms.SignedData) -> x509.Certificate:
    """Integrity and signature value, with pyHanko; trust is the directory's to judge."""
    try:
        status: SignatureStatus
        untrusted = ValidationContext(trust_roots=[])  # no trust decided here, and none from the OS's list
        if isinstance(content, bytes):
            status = await async_validate_detached_cms(content, signed_data, signer_validation_context=untrusted)
        else:  # opaque signed-data: the content is inside the signature
            status = await async_validate_cms_signature(signed_data, validation_context=untrusted)
    except Exception as exc:  # pyHanko raises for unusable structures and algorithms
        raise UnsignedMail(f"the signature cannot be checked: {exc}") from exc
    if not status.intact:
        raise UnsignedMail("the message was changed after it was signed (digest mismatch)")
    if not status.valid:
        raise UnsignedMail("the signature value does not verify with the signer's certificate")
    return status.signing_cert


def _preferred_encryption_cert(signed_data: cms.SignedData, carried: list[x509.Certificate]) -> x509.Certificate | None:
    attrs = signed_data["signer_infos"][0]["signed_attrs"]
    for attr in attrs or []:
        if attr["type"].dotted != _ENCRYPTION_KEY_PREFERENCE:
            continue
        try:
            preference = _EncryptionKeyPreference.load(attr["values"][0].dump())
            wanted = preference.chosen
            if preference.name == "issuer_and_serial_number":
                return next((c for c in carried if c.issuer == wanted["issuer"]
                             and c.serial_number == wanted["serial_number"].native), None)
        except Exception:  # an attribute we cannot read only loses the preference
            return None
    return None


def _names(cert: x509.Certificate, address: str) -> bool:
    """Whether ``cert`` has an rfc822Name equal to ``address`` (case-insensitively: a rough cut here;
    the directory compares normalised addresses)."""
    names = cert.subject_alt_name_value
    if names is None:
        return False
    return any(n.name == "rfc822_name" and n.native.lower() == address.lower() for n in names)


class _EncryptionKeyPreference(cms.Choice):  # type: ignore[misc]  # asn1crypto classes are untyped
    """SMIMEEncryptionKeyPreference (RFC 8551 §2.5.3); only the issuerAndSerialNumber form is used."""

    _alternatives: ClassVar[list[tuple[str, type, dict[str, int]]]] = [
        ("issuer_and_serial_number", cms.IssuerAndSerialNumber, {"implicit": 0}),
        ("receipent_key_id", cms.RecipientKeyIdentifier, {"implicit": 1}),
        ("subject_alt_key_identifier", cms.OctetString, {"implicit": 2}),
    ]
