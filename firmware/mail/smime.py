"""RFC 8551 S/MIME: a MIME entity, signed by the token (multipart/signed), then enveloped to the recipient.

Signing reuses the hash API's CMS machinery (signing/cms_template.py): the digest of the canonical
MIME part goes into the signed attributes (contentType, messageDigest, signingTime, ESS
signing-certificate-v2, CMS algorithm protection, plus sMIMECapabilities), the token signs them,
the template packages a detached SignedData. The signed part is generated once, with CRLF line
ends and only 7-bit transfer encodings (quoted-printable text, base64 attachments), and its bytes
are put into the message verbatim: nothing re-serialises what was signed.

Enveloping: cryptography's PKCS7EnvelopeBuilder only does RSA with PKCS#1 v1.5 key transport, so
the EnvelopedData is assembled here from asn1crypto structures, with the content encrypted by
cryptography (AES-256-CBC, the widest client support) and each RecipientInfo made by pyHanko's
CMS recipient code (the one it uses for PDF public-key encryption): RSAES-OAEP (SHA-256) for RSA
keys, ephemeral-static ECDH (dhSinglePass-stdDH-sha*kdf, AES key wrap) for EC keys.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage, MIMEPart
from email.policy import SMTP
from email.utils import formatdate

from asn1crypto import algos, cms, x509
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pyhanko.pdf_utils.crypt.pubkey import RecipientEncryptionPolicy
from pyhanko.pdf_utils.crypt.pubkey import _recipient_info as pyhanko_recipient_info

from ..signing.cms_template import DetachedCmsTemplate
from ..signing.levels import Profile
from ..signing.token_signer import TokenSigner

DIGEST = "sha256"
MICALG = "sha-256"
_POLICY = SMTP.clone(max_line_length=76)  # CRLF line ends, as RFC 8551 §3.1.1 canonical form wants
# sMIMECapabilities (RFC 8551 §2.5.2): the ciphers to encrypt to the sender with, in preference order. The
# box reads no replies; this is the list mail clients expect, and names what the box itself uses.
_CAPABILITIES = cms.CMSAttribute({"type": "smime_capabilities", "values": [[
    {"capability_id": "2.16.840.1.101.3.4.1.42"},  # aes256-CBC
    {"capability_id": "2.16.840.1.101.3.4.1.2"},  # aes128-CBC
]]})
_OAEP = RecipientEncryptionPolicy(ignore_key_usage=True, prefer_oaep=True)  # usage: the directory checks it


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str  # "application/pdf"
    data: bytes


def mime_entity(text: str | None, html: str | None, attachments: Sequence[Attachment] = ()) -> bytes:
    """The content as one MIME entity in canonical form (CRLF, 7-bit): what gets signed."""
    part = MIMEPart(policy=_POLICY)
    if html is not None:
        if text is not None:
            part.set_content(text, subtype="plain", cte="quoted-printable")
            part.add_alternative(html, subtype="html", cte="quoted-printable")
        else:
            part.set_content(html, subtype="html", cte="quoted-printable")
    else:
        part.set_content(text or "", subtype="plain", cte="quoted-printable")
    for item in attachments:
        maintype, _, subtype = item.content_type.partition("/")
        part.add_attachment(item.data, maintype=maintype, subtype=subtype or "octet-stream",
                            filename=item.filename, cte="base64")
    return part.as_bytes(policy=_POLICY)


def _base64_lines(data: bytes) -> bytes:
    encoded = base64.b64encode(data)
    return b"".join(encoded[i:i + 76] + b"\r\n" for i in range(0, len(encoded), 76))


def _boundary(*parts: bytes) -> str:
    boundary = f"----=_esignbox_{secrets.token_hex(16)}"
    assert not any(boundary.encode() in p for p in parts)  # 128 random bits: never, but it is cheap to know
    return boundary


class SmimeSigner:
    """Signs MIME entities with a token key: the box's signing key today, its own mail key later
    (the seam: whichever TokenSigner is passed in)."""

    def __init__(self, signer: TokenSigner) -> None:
        self._signer = signer
        self._template = DetachedCmsTemplate(signer)

    @property
    def certificate(self) -> x509.Certificate:
        return self._signer.signing_cert

    def signature(self, entity: bytes) -> cms.ContentInfo:
        """Detached CMS SignedData over ``entity`` exactly."""
        digest = hashlib.new(DIGEST, entity).digest()
        attrs = self._template.signed_attributes(digest, DIGEST, Profile.CADES)
        attrs = cms.CMSAttributes([*attrs, _CAPABILITIES])
        return self._template.package(DIGEST, attrs, self._signer.sign_data(attrs.dump(), DIGEST))

    def sign(self, entity: bytes) -> bytes:
        """``entity`` as the first part of a multipart/signed entity (RFC 8551 §3.5.3), byte for byte."""
        signature = self.signature(entity).dump()
        boundary = _boundary(entity)
        lines = (
            f'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg={MICALG};\r\n'
            f' boundary="{boundary}"\r\n'
            "\r\n"
            "This is an S/MIME signed message.\r\n"
            "\r\n"
            f"--{boundary}\r\n"
        ).encode()
        # The CRLF before a delimiter belongs to the delimiter: the signed content is ``entity`` exactly.
        return lines + entity + (
            f"\r\n--{boundary}\r\n"
            'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
            "Content-Transfer-Encoding: base64\r\n"
            'Content-Disposition: attachment; filename="smime.p7s"\r\n'
            "\r\n"
        ).encode() + _base64_lines(signature) + f"\r\n--{boundary}--\r\n".encode()


def envelope(content: bytes, recipients: Sequence[x509.Certificate]) -> cms.ContentInfo:
    """EnvelopedData of ``content`` for ``recipients``: AES-256-CBC, RSA-OAEP or ECDH per key."""
    if not recipients:
        raise ValueError("an envelope needs at least one recipient")
    key, iv = secrets.token_bytes(32), secrets.token_bytes(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(content) + padder.finalize()
    encryptor = Cipher(algorithms.AES256(key), modes.CBC(iv)).encryptor()
    encrypted = encryptor.update(padded) + encryptor.finalize()
    infos: list[cms.RecipientInfo] = [pyhanko_recipient_info(key, cert, _OAEP) for cert in recipients]
    # RFC 5652 §6.1: version 2 as soon as any RecipientInfo is not version 0 (kari is version 3)
    version = "v0" if all(info.name == "ktri" for info in infos) else "v2"
    enveloped = cms.EnvelopedData({
        "version": version,
        "recipient_infos": infos,
        "encrypted_content_info": {
            "content_type": "data",
            "content_encryption_algorithm": algos.EncryptionAlgorithm({"algorithm": "aes256_cbc", "parameters": iv}),
            "encrypted_content": encrypted,
        },
    })
    return cms.ContentInfo({"content_type": "enveloped_data", "content": enveloped})


@dataclass(frozen=True)
class Envelope:
    """The outer headers of a message."""

    sender: str
    recipient: str
    subject: str
    message_id: str  # with its angle brackets


def _headers(head: Envelope) -> EmailMessage:
    message = EmailMessage(policy=_POLICY)
    message["From"] = head.sender
    message["To"] = head.recipient
    message["Subject"] = head.subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = head.message_id
    return message


def encrypted_message(head: Envelope, signed_entity: bytes, recipients: Sequence[x509.Certificate]) -> bytes:
    """The whole message: headers, and ``signed_entity`` enveloped as application/pkcs7-mime (§3.3)."""
    message = _headers(head)
    message.set_content(envelope(signed_entity, recipients).dump(), maintype="application", subtype="pkcs7-mime",
                        params={"smime-type": "enveloped-data", "name": "smime.p7m"},
                        disposition="attachment", filename="smime.p7m", cte="base64")
    return message.as_bytes(policy=_POLICY)


def signed_message(head: Envelope, signed_entity: bytes) -> bytes:
    """The whole message, signed but not encrypted (§3.5.3 clear-signed): the notice for a recipient
    without a certificate. Any client shows the text; an S/MIME client also checks it came from
    the box — and keeps the box's certificate, the first step towards the recipient's own."""
    headers = _headers(head)
    headers["MIME-Version"] = "1.0"
    top = headers.as_bytes(policy=_POLICY).rstrip(b"\r\n") + b"\r\n"
    return top + signed_entity
